//! Passwords: the policy a new password must meet, and argon2id hashing.
//!
//! argon2id with m = 19456 KiB, t = 2, p = 1 and a fresh 16-byte salt per hash (docs/architecture.md, "Tenancy and access",
//! OWASP's baseline). Hashing costs tens of milliseconds of CPU and 19 MiB: callers run it
//! through [`PasswordHasher::run`], on a blocking thread under an exact concurrency bound. When an account does not exist, [`PasswordHasher::verify_dummy`] spends the same
//! work so response timing does not reveal which emails exist.

use std::{
    cell::RefCell,
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use tokio::sync::Semaphore;

/// Limits of the password policy: exact values.
pub const MIN_CHARS: usize = 12;
pub const MAX_BYTES: usize = 1024;
/// Lowest acceptable zxcvbn score (0-4): 3 means more than 10^8 guesses to crack.
pub const MIN_SCORE: u8 = 3;

/// Why a new password was refused. Never includes the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("must not contain the email address or the shop's name")]
    ContainsIdentity,
    #[error("is too easy to guess; use a longer passphrase")]
    TooWeak,
}

/// A password that passed the policy. Its `Debug` never shows it.
pub struct NewPassword(String);

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

impl NewPassword {
    /// Checks `raw` against the policy, for an account with `email` in a shop called `shop`.
    pub fn parse(raw: &str, email: &str, shop: &str) -> Result<Self, PasswordPolicyError> {
        if raw.len() > MAX_BYTES {
            return Err(PasswordPolicyError::TooLong);
        }
        if raw.chars().count() < MIN_CHARS {
            return Err(PasswordPolicyError::TooShort);
        }
        let lower = raw.to_lowercase();
        let local = email.split('@').next().unwrap_or_default().to_lowercase();
        let identity = [email.to_lowercase(), local, shop.to_lowercase()];
        // Fragments shorter than 4 characters ("al", "acme" is 4) would refuse too much.
        if identity
            .iter()
            .any(|part| part.chars().count() >= 4 && lower.contains(part.as_str()))
        {
            return Err(PasswordPolicyError::ContainsIdentity);
        }
        let inputs: Vec<&str> = identity.iter().map(String::as_str).collect();
        if u8::from(zxcvbn::zxcvbn(raw, &inputs).score()) < MIN_SCORE {
            return Err(PasswordPolicyError::TooWeak);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A stored password hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash(String);

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredHash(<redacted>)")
    }
}

impl StoredHash {
    /// Wraps a hash read from storage; refuses anything that is not a PHC string.
    pub fn from_stored(s: String) -> Result<Self, String> {
        PasswordHash::new(&s).map_err(|e| e.to_string())?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why hashing failed (only a broken RNG or parameters; never the password's fault).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// argon2id with Keel's fixed parameters, behind an exact concurrency bound.
///
/// Each hash or verification takes 19 MiB and about 15 ms of a core. Unbounded, a few hundred
/// parallel unauthenticated requests (sign-ups with a public publishable key, logins for
/// unknown accounts) would take gigabytes and every core (issue 19, finding 4). So password
/// work runs through [`PasswordHasher::run`]: on `concurrency` threads of its own; a request
/// that cannot get a place within `queue_wait` is refused with [`HashRunError::Busy`] (503
/// `overloaded` with `Retry-After`) instead of waiting longer.
///
/// Its own threads rather than tokio's blocking pool: the allocator keeps a freed 19 MiB block
/// in the arena of the thread that freed it, and the blocking pool spreads work over many
/// threads (so many arenas), which left hundreds of MiB resident after a burst even with the
/// bound. A fixed set of threads reuses its blocks. Clones share the bound and the threads.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    params: Params,
    gate: Arc<Gate>,
}

/// Password work handed to a password thread.
type Job = Box<dyn FnOnce() + Send>;

struct Gate {
    places: Arc<Semaphore>,
    concurrency: usize,
    queue_wait: Duration,
    /// Password jobs one client address may have running or waiting at once (its key, see
    /// `keel_kernel::net::client_key`), so a single address can never hold every place.
    per_address: usize,
    holders: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// The password threads' queue, started on first use (never longer than `concurrency`:
    /// a job is queued only with a place).
    jobs: OnceLock<Result<std::sync::mpsc::Sender<Job>, String>>,
}

impl Gate {
    fn jobs(&self) -> Result<&std::sync::mpsc::Sender<Job>, HashRunError> {
        self.jobs
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let rx = Arc::new(std::sync::Mutex::new(rx));
                for i in 0..self.concurrency {
                    let rx = rx.clone();
                    std::thread::Builder::new()
                        .name(format!("keel-password-{i}"))
                        .spawn(move || {
                            loop {
                                let job = {
                                    let queue = rx
                                        .lock()
                                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                                    queue.recv()
                                };
                                // Every hasher is gone: the thread ends.
                                let Ok(job) = job else { return };
                                // A panicking job must not take the thread (and a place) along.
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                        })
                        .map_err(|e| e.to_string())?;
                }
                Ok(tx)
            })
            .as_ref()
            .map_err(|e| HashRunError::Failed(format!("cannot start password threads: {e}")))
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PasswordHasher(argon2id m=19456 t=2 p=1, {} at once, {} ms queue)",
            self.gate.concurrency,
            self.gate.queue_wait.as_millis()
        )
    }
}

/// The defaults of `KEEL_AUTH__HASH_CONCURRENCY` and `KEEL_AUTH__HASH_QUEUE_WAIT_MS`.
pub const DEFAULT_HASH_CONCURRENCY: usize = 2;
pub const DEFAULT_HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::bounded(DEFAULT_HASH_CONCURRENCY, 1, DEFAULT_HASH_QUEUE_WAIT)
    }
}

/// Why password work did not run.
#[derive(Debug, thiserror::Error)]
pub enum HashRunError {
    /// Every place was taken for the whole queue wait.
    #[error("password work is at its concurrency bound; retry in {retry_after_seconds} s")]
    Busy { retry_after_seconds: i64 },
    #[error("password task failed: {0}")]
    Failed(String),
}

thread_local! {
    /// This thread's argon2 working memory, allocated once and reused by every hash and
    /// verification the thread runs. Allocating 19 MiB per hash (as `Argon2::hash_password`
    /// does, with 64-byte alignment) left freed blocks the allocator could not reuse for the
    /// next aligned request: 40 hashes on two threads reached 370 MiB resident.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `blocks` blocks of this thread's argon2 memory.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            *memory = vec![Block::default(); blocks];
        }
        f(&mut memory[..blocks])
    })
}

/// The length of the hashes Keel stores (argon2's default output).
const OUTPUT_LEN: usize = 32;
impl PasswordHasher {
    /// A hasher running at most `concurrency` hashes at once (at least one), each waiting at
    /// most `queue_wait` for its place, and at most `per_address` (at least one) running or
    /// waiting for any one client address.
    pub fn bounded(concurrency: usize, per_address: usize, queue_wait: Duration) -> Self {
        let params = Params::new(19_456, 2, 1, None).expect("constant argon2 parameters are valid");
        let concurrency = concurrency.max(1);
        Self {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            params,
            gate: Arc::new(Gate {
                places: Arc::new(Semaphore::new(concurrency)),
                concurrency,
                queue_wait,
                per_address: per_address.max(1),
                holders: std::sync::Mutex::default(),
                jobs: OnceLock::new(),
            }),
        }
    }

    /// Runs password work `f` on a password thread within the bound. The place is held until
    /// the work ends, even when the caller stops waiting (a timed-out request), so the bound
    /// is on work actually running.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> Result<T, HashRunError> {
        self.run_for(None, f).await
    }

    /// [`Self::run`] on behalf of `client`: refused at once when that address already has its
    /// `per_address` jobs running or waiting.
    pub async fn run_for<T: Send + 'static>(
        &self,
        client: Option<std::net::IpAddr>,
        f: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> Result<T, HashRunError> {
        let gate = &self.gate;
        let held = match client {
            Some(addr) => Some(Holder::take(
                gate.clone(),
                keel_kernel::net::client_key(addr),
            )?),
            None => None,
        };
        let place = match tokio::time::timeout(gate.queue_wait, gate.places.clone().acquire_owned())
            .await
        {
            Ok(Ok(place)) => place,
            Ok(Err(e)) => return Err(HashRunError::Failed(e.to_string())),
            Err(_) => {
                return Err(HashRunError::Busy {
                    retry_after_seconds: gate.retry_after_seconds(),
                });
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let job: Job = Box::new(move || {
            let out = f(&this);
            drop(place);
            drop(held);
            let _ = tx.send(out);
        });
        self.gate
            .jobs()?
            .send(job)
            .map_err(|_| HashRunError::Failed("the password threads stopped".into()))?;
        rx.await
            .map_err(|_| HashRunError::Failed("password work panicked".into()))
    }

    /// Places taken now (for tests and metrics).
    pub fn running(&self) -> usize {
        self.gate.concurrency - self.gate.places.available_permits()
    }

    /// Hashes with a fresh random 16-byte salt into a PHC string.
    pub fn hash(&self, password: &NewPassword) -> Result<StoredHash, HashError> {
        let salt = crate::domain::secret::random_bytes::<16>();
        let mut out = [0_u8; OUTPUT_LEN];
        with_memory(self.params.block_count(), |memory| {
            self.argon.hash_password_into_with_memory(
                password.0.as_bytes(),
                &salt,
                &mut out,
                memory,
            )
        })
        .map_err(|e| HashError(e.to_string()))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| HashError(e.to_string()))?,
            salt: Some(Salt::new(&salt).map_err(|e| HashError(e.to_string()))?),
            hash: Some(Output::new(&out).map_err(|e| HashError(e.to_string()))?),
        };
        Ok(StoredHash(phc.to_string()))
    }

    /// True when `candidate` matches (compared in constant time). Any parse or parameter
    /// problem is a mismatch. Hashes stored with other parameters verify with those.
    pub fn verify(&self, candidate: &str, hash: &StoredHash) -> bool {
        if candidate.len() > MAX_BYTES {
            return false;
        }
        let Ok(phc) = PasswordHash::new(&hash.0) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&phc) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = Version::try_from(phc.version.unwrap_or(Version::V0x13.into())) else {
            return false;
        };
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0_u8; expected.len()];
        let computed = with_memory(params.block_count(), |memory| {
            argon.hash_password_into_with_memory(
                candidate.as_bytes(),
                salt.as_ref(),
                &mut out,
                memory,
            )
        });
        computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
    }

    /// Spends the work of one verification against a fixed hash, for unknown accounts.
    pub fn verify_dummy(&self, candidate: &str) {
        static DUMMY: OnceLock<Option<StoredHash>> = OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            let pw = NewPassword("a-dummy-password-nobody-has-4711".to_owned());
            self.hash(&pw).ok()
        });
        if let Some(h) = dummy {
            let _ = self.verify(candidate, h);
        }
    }
}

/// One client address's hold on password work, given back when dropped.
struct Holder {
    gate: Arc<Gate>,
    key: std::net::IpAddr,
}

impl Holder {
    fn take(gate: Arc<Gate>, key: std::net::IpAddr) -> Result<Self, HashRunError> {
        {
            let mut holders = gate
                .holders
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = holders.entry(key).or_insert(0);
            if *held >= gate.per_address {
                return Err(HashRunError::Busy {
                    retry_after_seconds: gate.retry_after_seconds(),
                });
            }
            *held += 1;
        }
        Ok(Self { gate, key })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let mut holders = self
            .gate
            .holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = holders.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                holders.remove(&self.key);
            }
        }
    }
}

impl Gate {
    /// Whole seconds of the queue wait, rounded up, at least one.
    fn retry_after_seconds(&self) -> i64 {
        let ms = i64::try_from(self.queue_wait.as_millis()).unwrap_or(i64::MAX);
        ((ms + 999) / 1_000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "correct horse battery staple 1916";

    #[test]
    fn policy_bounds_are_exact() {
        assert_eq!(
            NewPassword::parse("short1!A", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            NewPassword::parse(&"x".repeat(1_025), "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooLong)
        );
        assert!(NewPassword::parse(STRONG, "alice@shop.test", "Acme").is_ok());
    }

    #[test]
    fn weak_and_identity_passwords_are_refused() {
        assert_eq!(
            NewPassword::parse("password1234", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooWeak)
        );
        assert_eq!(
            NewPassword::parse("aaaaaaaaaaaa", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooWeak)
        );
        assert_eq!(
            NewPassword::parse("xq-Alice-vb7-ridge-hollow", "alice@shop.test", "Acme").err(),
            Some(PasswordPolicyError::ContainsIdentity)
        );
        assert_eq!(
            NewPassword::parse("wild acmecorp meadow 88", "bob@shop.test", "AcmeCorp").err(),
            Some(PasswordPolicyError::ContainsIdentity)
        );
    }

    #[test]
    fn hashes_are_argon2id_with_the_fixed_parameters_and_verify() {
        let hasher = PasswordHasher::default();
        let pw = NewPassword::parse(STRONG, "alice@shop.test", "Acme").expect("strong");
        let h = hasher.hash(&pw).expect("hash");
        assert!(
            h.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            h.as_str()
        );
        assert!(hasher.verify(STRONG, &h));
        assert!(!hasher.verify("correct horse battery staple 1917", &h));
        let again = hasher.hash(&pw).expect("hash");
        assert_ne!(h, again, "a fresh salt per hash");
        assert!(StoredHash::from_stored("not a hash".into()).is_err());
        assert!(!format!("{pw:?} {h:?}").contains("horse"));
    }

    #[test]
    fn hashes_made_by_the_argon2_library_itself_verify_and_ours_verify_there() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(19_456, 2, 1, None).expect("params");
        let library = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let theirs = library
            .hash_password_with_salt(STRONG.as_bytes(), b"sixteen-byte-slt")
            .expect("hash")
            .to_string();
        let hasher = PasswordHasher::default();
        assert!(hasher.verify(STRONG, &StoredHash(theirs.clone())));
        assert!(!hasher.verify("something else entirely", &StoredHash(theirs)));
        let pw = NewPassword::parse(STRONG, "alice@shop.test", "Acme").expect("strong");
        let ours = hasher.hash(&pw).expect("hash");
        assert!(
            library
                .verify_password(STRONG.as_bytes(), ours.as_str())
                .is_ok()
        );
    }

    /// The process's peak resident memory, in KiB (each test runs in its own process).
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    #[tokio::test]
    async fn a_burst_of_hashes_holds_one_working_memory_per_password_thread() {
        let hasher = PasswordHasher::bounded(2, 1, Duration::from_mins(1));
        let runs = (0..40).map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run(|h| {
                        let pw = NewPassword(STRONG.to_owned());
                        h.hash(&pw).is_ok()
                    })
                    .await
            })
        });
        for run in runs.collect::<Vec<_>>() {
            assert!(matches!(run.await, Ok(Ok(true))));
        }
        // Two threads, 19 MiB each, plus the test process: far from 40 x 19 MiB.
        let peak = peak_rss_kib();
        assert!(peak < 80 * 1024, "peak RSS {peak} KiB");
    }

    #[tokio::test]
    async fn one_address_never_holds_more_than_its_share_of_password_work() {
        let hasher = PasswordHasher::bounded(2, 1, Duration::from_mins(1));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let ip: std::net::IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let first = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run_for(Some(ip), move |_| hold_rx.recv().is_ok())
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while hasher.running() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first job runs");
        // The same /64 is refused at once; another address takes the free place.
        let same: std::net::IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        assert!(matches!(
            hasher.run_for(Some(same), |_| ()).await,
            Err(HashRunError::Busy { .. })
        ));
        let other: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(
            hasher
                .run_for(Some(other), |_| 1)
                .await
                .is_ok_and(|v| v == 1)
        );
        hold_tx.send(()).expect("release");
        assert!(matches!(first.await, Ok(Ok(true))));
        assert!(
            hasher
                .run_for(Some(same), |_| 2)
                .await
                .is_ok_and(|v| v == 2)
        );
    }

    #[tokio::test]
    async fn work_waiting_past_the_queue_bound_is_refused_and_places_are_held_to_the_end() {
        let hasher = PasswordHasher::bounded(1, 1, Duration::from_millis(20));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move |_| hold_rx.recv().is_ok()).await })
        };
        // Wait until the first job holds the only place (the bound, not a pause).
        tokio::time::timeout(Duration::from_secs(10), async {
            while hasher.running() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first job runs");
        let refused = hasher.run(|_| ()).await;
        assert!(
            matches!(
                refused,
                Err(HashRunError::Busy {
                    retry_after_seconds: 1
                })
            ),
            "{refused:?}"
        );
        hold_tx.send(()).expect("release");
        assert!(matches!(busy.await, Ok(Ok(true))));
        assert!(hasher.run(|_| 7).await.is_ok_and(|v| v == 7));
    }
}
