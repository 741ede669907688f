//! Limit state: this node's memory, or Redis shared by every node.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const SHARDS: usize = 16;

/// One shard's arrival times, locked.
type ShardGuard<'a> = std::sync::MutexGuard<'a, HashMap<Key, i64>>;

/// A limit's key: its parts hashed (SHA-256, the first 16 bytes), so a key's size is fixed
/// whatever a client sends, no publishable key or token is kept as it came, and a key costs
/// no allocation.
pub type Key = [u8; 16];

/// Arrival times by key, in memory: a fixed number of shards, each with an exact share of
/// the key budget. A full shard forgets keys whose time has passed (they are as good as new)
/// and, if none has, the one that would refill first.
#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Vec<Mutex<HashMap<Key, i64>>>,
    pub(super) caps: Vec<usize>,
    hasher: RandomState,
}

impl MemoryLimiter {
    pub fn new(keys: usize) -> Self {
        // The budget split exactly: the first `keys % SHARDS` shards hold one key more.
        let caps = (0..SHARDS)
            .map(|i| keys / SHARDS + usize::from(i < keys % SHARDS))
            .collect();
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            caps,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &Key) -> usize {
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    /// Decides one request for `key` at `now_ms`.
    pub fn check(&self, key: Key, limit: Limit, now_ms: i64) -> Decision {
        self.check_all(&[(key, limit)], now_ms)[0]
    }

    /// Decides one request held to several limits, all or nothing: every key is charged only
    /// when every limit admits it (a refused request takes nothing from any of them). The
    /// shards involved are locked together, in index order, so concurrent requests cannot
    /// interleave between the decision and the charge.
    pub fn check_all(&self, keys: &[(Key, Limit)], now_ms: i64) -> Vec<Decision> {
        let mut shards: Vec<usize> = keys.iter().map(|(k, _)| self.shard(k)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: Vec<(usize, ShardGuard<'_>)> = shards
            .iter()
            .map(|&i| {
                (
                    i,
                    self.shards[i]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                )
            })
            .collect();
        let mut decisions = Vec::with_capacity(keys.len());
        let mut next = Vec::with_capacity(keys.len());
        for (key, limit) in keys {
            let shard = self.shard(key);
            let map = &guards
                .iter()
                .find(|(i, _)| *i == shard)
                .expect("every key's shard is locked")
                .1;
            let (d, tat) = decide(*limit, map.get(key).copied(), now_ms);
            decisions.push(d);
            next.push((shard, *key, tat));
        }
        if decisions.iter().all(|d| d.allowed) {
            for (shard, key, tat) in next {
                let cap = self.caps[shard];
                let map = &mut guards
                    .iter_mut()
                    .find(|(i, _)| *i == shard)
                    .expect("every key's shard is locked")
                    .1;
                if !map.contains_key(&key) && map.len() >= cap {
                    map.retain(|_, t| *t > now_ms);
                    if map.len() >= cap
                        && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
                    {
                        map.remove(&oldest);
                    }
                }
                if cap > 0 {
                    map.insert(key, tat);
                }
            }
        }
        decisions
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// GCRA in one Redis script over every limit of a request, on Redis's clock (one clock for
/// every node): the same decision as `keel_kernel::ratelimit::decide` for each key, all
/// charged only when all admit (a refused request takes nothing), each key expiring when its
/// bucket is full again. One round trip per request.
/// Integers only (Lua numbers are exact below 2^53; milliseconds since 1970 are ~2^41).
pub(super) const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local nexts = {}
local refused = false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * (tonumber(ARGV[2 * i]) - 1)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  if tat > now + interval * tonumber(ARGV[2 * i]) then tat = now + interval * tonumber(ARGV[2 * i]) end
  local ahead = tat - now
  if ahead > tolerance then
    refused = true
    table.insert(out, 0); table.insert(out, 0); table.insert(out, ahead); table.insert(out, ahead - tolerance)
  else
    local nxt = tat + interval
    local ahead2 = nxt - now
    local remaining = 0
    if ahead2 <= tolerance then remaining = math.floor((tolerance - ahead2) / interval) + 1 end
    nexts[i] = {nxt, ahead2}
    table.insert(out, 1); table.insert(out, remaining); table.insert(out, ahead2); table.insert(out, 0)
  end
end
if not refused then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], nexts[i][1], 'PX', nexts[i][2])
  end
end
return out
";

/// Limit state shared by every node through Redis.
pub struct RedisLimits {
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    pub(super) errors: AtomicU64,
    failing: AtomicBool,
    /// Until when (ms since 1970) decisions skip Redis after a failure.
    skip_until_ms: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Connects (within one second), else keeps trying in the background: a node starts,
    /// and answers, while Redis is away; until it connects every decision is this node's.
    pub async fn start(url: &str, timeout: Duration) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("KEEL_REDIS_URL: {e}"))?;
        let limits = Arc::new(Self {
            conn: tokio::sync::OnceCell::new(),
            script: redis::Script::new(GCRA_LUA),
            timeout,
            errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            skip_until_ms: std::sync::atomic::AtomicI64::new(0),
        });
        let connect = {
            let limits = limits.clone();
            move || {
                let (client, limits) = (client.clone(), limits.clone());
                async move {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(1)))
                        .set_response_timeout(Some(limits.timeout));
                    match redis::aio::ConnectionManager::new_with_config(client, config).await {
                        Ok(manager) => {
                            let _ = limits.conn.set(manager);
                            tracing::info!("rate limits shared through Redis");
                            true
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Redis is not reachable: rate limits are this node's until it is");
                            false
                        }
                    }
                }
            }
        };
        if !connect().await {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if connect().await {
                        return;
                    }
                }
            });
        }
        Ok(limits)
    }

    /// The shared decisions, or `None` when Redis did not answer in time, or failed less
    /// than `timeout × 20` ago (the caller decides in memory; a Redis that does not answer is
    /// not waited for on every request).
    pub(super) async fn check_all(
        &self,
        keys: &[(Key, Limit)],
        now_ms: i64,
    ) -> Option<Vec<Decision>> {
        if now_ms < self.skip_until_ms.load(Ordering::Acquire) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let answer = match self.conn.get() {
            Some(conn) => {
                let mut conn = conn.clone();
                let mut call = self.script.prepare_invoke();
                for (key, limit) in keys {
                    call.key(redis_key(key));
                    call.arg(limit.interval_ms()).arg(limit.burst());
                }
                tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let decisions: Option<Vec<Decision>> = answer.and_then(|v| {
            (v.len() == 4 * keys.len()).then(|| {
                v.chunks(4)
                    .map(|c| Decision {
                        allowed: c[0] == 1,
                        remaining: u32::try_from(c[1]).unwrap_or(0),
                        reset_ms: u64::try_from(c[2]).unwrap_or(0),
                        retry_after_ms: u64::try_from(c[3]).unwrap_or(0),
                    })
                    .collect()
            })
        });
        if let Some(d) = decisions {
            if self.failing.swap(false, Ordering::AcqRel) {
                tracing::info!("Redis answers again: rate limits are shared again");
            }
            return Some(d);
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let pause = i64::try_from(self.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(REDIS_PAUSE_TIMEOUTS);
        self.skip_until_ms
            .store(now_ms.saturating_add(pause), Ordering::Release);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                "Redis did not answer a rate-limit decision in time: this node decides alone until it does"
            );
        }
        None
    }
}

/// After Redis fails a decision, it is passed over for this many timeouts' worth of time
/// (20 × 50 ms = 1 s by default): a Redis that does not answer costs one timeout per second,
/// not one per request.
pub(super) const REDIS_PAUSE_TIMEOUTS: i64 = 20;

/// A key as Redis stores it: `keel:rl:` and the key in hex.
pub(super) fn redis_key(key: &Key) -> String {
    let mut s = String::with_capacity(8 + 32);
    s.push_str("keel:rl:");
    for b in key {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}
