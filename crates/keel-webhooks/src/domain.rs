//! Webhook endpoints, messages and attempts, and the delivery policy (exact schedule,
//! bounded jitter, disabling).

use keel_kernel::{TenantId, define_id};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

define_id!(
    /// A webhook endpoint of a tenant.
    EndpointId,
    "whe"
);
define_id!(
    /// One event to deliver to one endpoint; its id is the `webhook-id`, stable across retries.
    MessageId,
    "msg"
);
define_id!(
    /// One delivery attempt.
    AttemptId,
    "wha"
);

/// A signing secret as stored: sealed under the master key, with its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// Base64 of the sealed key bytes.
    pub sealed: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set when a rotation replaced it: it keeps signing until then.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// What an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The shop's event stream (`webhooks:manage`): events as recorded, never a secret.
    Webhook,
    /// The shop's own mail system (`settings:manage`, one per shop): account notifications
    /// that carry one-time secrets (password resets, invitations). Their bodies are sealed at
    /// rest, dropped once delivered or given up, and never listed; events never fan out here.
    Account,
}

impl Channel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Account => "account",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Webhook, Self::Account]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub channel: Channel,
    pub url: String,
    pub description: String,
    /// Event types it receives: exact (`order.paid`) or prefixes (`order.*`); empty = all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secrets: Vec<StoredSecret>,
    /// Since when every attempt failed (cleared by a success).
    pub failing_since: Option<OffsetDateTime>,
    /// Attempts failed in a row (cleared by a success): the circuit opens at the policy's
    /// exact count.
    pub consecutive_failures: i64,
    /// The circuit is open until then: no message of the endpoint is claimed (their retry
    /// schedules are not spent); after it, one probe at a time until a success closes it.
    pub paused_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// A webhook message given up (its retries spent, or the receiver gone): for the shop's
/// realtime subscribers (`webhookDeliveryFailed`), never itself delivered to webhook
/// endpoints, so that a failing endpoint's failures cannot feed it new messages.
pub const MESSAGE_FAILED: &str = "webhook_message.failed";

impl Endpoint {
    /// Whether the endpoint wants events of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        if event_type == MESSAGE_FAILED {
            return false;
        }
        self.event_types.is_empty()
            || self.event_types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => t == event_type,
            })
    }

    /// The secrets that sign at `now`.
    pub fn live_secrets(&self, now: OffsetDateTime) -> impl Iterator<Item = &StoredSecret> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|e| now < e))
    }
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Delivering,
    Delivered,
    Failed,
}

impl MessageStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivering => "delivering",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Delivering,
            Self::Delivered,
            Self::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub endpoint_id: EndpointId,
    pub event_id: keel_kernel::event::EventId,
    pub event_type: String,
    /// The body exactly as sent (so every attempt signs the same bytes).
    pub body: String,
    pub status: MessageStatus,
    pub attempts: i64,
    pub next_attempt_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub tenant_id: TenantId,
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    pub attempted_at: OffsetDateTime,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// At most [`RESPONSE_BODY_MAX`] bytes of the response.
    pub response_body: Option<String>,
}

/// How much of a response body is kept: exactly 1024 bytes.
pub const RESPONSE_BODY_MAX: usize = 1024;

/// Cuts a response body at exactly [`RESPONSE_BODY_MAX`] bytes (lossy UTF-8 after the cut).
pub fn cut_body(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(RESPONSE_BODY_MAX)]).into_owned()
}

impl Endpoint {
    /// How many deliveries the endpoint may have in flight at `now`: none while its circuit is
    /// open, one probe when it is half-open (paused time over, failures not yet cleared), else
    /// the policy's exact number.
    pub fn slots(&self, policy: &DeliveryPolicy, now: OffsetDateTime) -> i64 {
        if !self.enabled || self.paused_until.is_some_and(|p| now < p) {
            0
        } else if self.consecutive_failures >= policy.circuit_failures {
            1
        } else {
            policy.max_in_flight
        }
    }
}

/// The exact delivery policy, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Delays after the immediate attempt: attempt n+1 waits `schedule[n]`.
    pub schedule: Vec<Duration>,
    /// Upper bound of the random delay added to each scheduled retry.
    pub jitter: Duration,
    pub timeout: Duration,
    /// An endpoint failing without any success for this long is disabled.
    pub disable_after: Duration,
    /// Concurrent deliveries per endpoint.
    pub max_in_flight: i64,
    /// Attempts failed in a row (errors, timeouts, non-2xx) after which the endpoint's circuit
    /// opens.
    pub circuit_failures: i64,
    /// How long an open circuit pauses the endpoint before one probe is sent.
    pub circuit_pause: Duration,
    /// Deliveries one shop may have in flight at once, over all its endpoints (and nodes):
    /// many endpoints must not let one shop take every slot.
    pub shop_max_in_flight: i64,
}

/// Picks what a claim takes, fairly: `candidates` are endpoints with their oldest due
/// messages (at most their free slots each), `shop_room` how many more deliveries each shop
/// may start. The endpoint waiting longest goes first; every endpoint's first message before
/// any endpoint's second; no shop past its room; at most `cap` in all.
pub fn fair_claims<S: std::hash::BuildHasher>(
    mut candidates: Vec<(Endpoint, Vec<Message>)>,
    mut shop_room: std::collections::HashMap<TenantId, i64, S>,
    cap: usize,
) -> Vec<(Message, Endpoint)> {
    candidates.retain(|(_, due)| !due.is_empty());
    candidates.sort_by_key(|(e, due)| (due[0].next_attempt_at, e.id.as_uuid()));
    let mut claimed = Vec::new();
    let mut round = 0;
    while claimed.len() < cap {
        let mut any = false;
        for (e, due) in &candidates {
            if claimed.len() >= cap {
                break;
            }
            let Some(m) = due.get(round) else { continue };
            let room = shop_room.entry(e.tenant_id).or_insert(0);
            if *room <= 0 {
                continue;
            }
            *room -= 1;
            any = true;
            claimed.push((m.clone(), e.clone()));
        }
        if !any {
            break;
        }
        round += 1;
    }
    claimed
}

/// What an attempt's outcome means for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// The schedule is exhausted.
    Failed,
    /// The receiver answered `410 Gone`: the endpoint is disabled at once.
    Gone,
}

impl DeliveryPolicy {
    /// Decides after attempt number `attempts` (1 = the immediate one) answered `status` (or
    /// failed to connect: `None`), with an optional `Retry-After`. `jitter` is the random part,
    /// already bounded by the caller to `0..=self.jitter`.
    pub fn next(
        &self,
        attempts: i64,
        status: Option<u16>,
        retry_after: Option<Duration>,
        now: OffsetDateTime,
        jitter: Duration,
    ) -> Next {
        match status {
            Some(s) if (200..300).contains(&s) => return Next::Delivered,
            Some(410) => return Next::Gone,
            _ => {}
        }
        let index = usize::try_from(attempts - 1).unwrap_or(usize::MAX);
        let Some(&delay) = self.schedule.get(index) else {
            return Next::Failed;
        };
        // `Retry-After` on 429/503 is honoured, but never beyond the next scheduled delay.
        let wait = match (status, retry_after) {
            (Some(429 | 503), Some(ra)) => ra.min(delay),
            _ => delay + jitter.min(self.jitter),
        };
        Next::RetryAt(now + wait)
    }
}

/// Parses a schedule such as `5s,300s,1800s` or `100ms,100ms` (exact, whole units).
pub fn parse_schedule(s: &str) -> Option<Vec<Duration>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some(ms) = p.strip_suffix("ms") {
                ms.parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .map(Duration::milliseconds)
            } else {
                p.strip_suffix('s')?
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .map(Duration::seconds)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            schedule: parse_schedule("5s,300s").expect("schedule"),
            jitter: Duration::milliseconds(1000),
            timeout: Duration::seconds(15),
            disable_after: Duration::seconds(432_000),
            max_in_flight: 4,
            circuit_failures: 5,
            circuit_pause: Duration::seconds(60),
            shop_max_in_flight: 16,
        }
    }

    #[test]
    fn schedules_parse_exactly() {
        assert_eq!(
            parse_schedule("5s,300s,1800s"),
            Some(vec![
                Duration::seconds(5),
                Duration::seconds(300),
                Duration::seconds(1800)
            ])
        );
        assert_eq!(
            parse_schedule("100ms, 2s"),
            Some(vec![Duration::milliseconds(100), Duration::seconds(2)])
        );
        assert_eq!(parse_schedule("5m"), None);
        assert_eq!(parse_schedule("-1s"), None);
    }

    #[test]
    fn outcomes_follow_the_schedule_and_the_receiver() {
        let p = policy();
        let now = OffsetDateTime::UNIX_EPOCH;
        let j = Duration::milliseconds(400);
        assert_eq!(p.next(1, Some(204), None, now, j), Next::Delivered);
        assert_eq!(p.next(1, Some(410), None, now, j), Next::Gone);
        assert_eq!(
            p.next(1, Some(500), None, now, j),
            Next::RetryAt(now + Duration::milliseconds(5400))
        );
        assert_eq!(
            p.next(2, None, None, now, Duration::seconds(9)),
            Next::RetryAt(now + Duration::seconds(301)),
            "jitter is bounded"
        );
        assert_eq!(p.next(3, Some(500), None, now, j), Next::Failed);
        assert_eq!(
            p.next(1, Some(429), Some(Duration::seconds(2)), now, j),
            Next::RetryAt(now + Duration::seconds(2))
        );
        assert_eq!(
            p.next(1, Some(503), Some(Duration::seconds(60)), now, j),
            Next::RetryAt(now + Duration::seconds(5)),
            "never beyond the schedule"
        );
    }

    #[test]
    fn filters_and_bodies() {
        let e = Endpoint {
            event_types: vec!["order.*".into(), "product.created".into()],
            ..endpoint_of(TenantId::new())
        };
        assert!(e.wants("order.paid") && e.wants("product.created"));
        assert!(!e.wants("product.updated") && !e.wants("security.login_failed"));
        assert_eq!(cut_body(&[b'x'; 2000]).len(), 1024);
        assert_eq!(cut_body(b"ok"), "ok");
    }

    fn message(e: &Endpoint, at: OffsetDateTime) -> Message {
        Message {
            id: MessageId::new(),
            tenant_id: e.tenant_id,
            endpoint_id: e.id,
            event_id: keel_kernel::event::EventId::new(),
            event_type: "order.paid".into(),
            body: String::new(),
            status: MessageStatus::Pending,
            attempts: 0,
            next_attempt_at: at,
            created_at: at,
        }
    }

    fn endpoint_of(tenant: TenantId) -> Endpoint {
        Endpoint {
            id: EndpointId::new(),
            tenant_id: tenant,
            channel: Channel::Webhook,
            url: "https://example.com".into(),
            description: String::new(),
            event_types: Vec::new(),
            enabled: true,
            disabled_reason: None,
            secrets: Vec::new(),
            failing_since: None,
            consecutive_failures: 0,
            paused_until: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            version: 1,
        }
    }

    #[test]
    fn claims_go_round_robin_oldest_first_and_no_shop_past_its_room() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let (greedy, quiet) = (TenantId::new(), TenantId::new());
        // The greedy shop has five endpoints with old backlogs; the quiet one a newer message.
        let mut candidates: Vec<(Endpoint, Vec<Message>)> = (0..5)
            .map(|i| {
                let e = endpoint_of(greedy);
                let due = (0..4)
                    .map(|j| message(&e, t0 + Duration::seconds(i * 10 + j)))
                    .collect();
                (e, due)
            })
            .collect();
        let q = endpoint_of(quiet);
        candidates.push((q.clone(), vec![message(&q, t0 + Duration::hours(1))]));
        let room: std::collections::HashMap<TenantId, i64> =
            [(greedy, 6), (quiet, 16)].into_iter().collect();
        let claimed = fair_claims(candidates.clone(), room.clone(), 100);
        let of = |t: TenantId| claimed.iter().filter(|(m, _)| m.tenant_id == t).count();
        assert_eq!(of(greedy), 6, "the greedy shop stops at its room");
        assert_eq!(of(quiet), 1, "the quiet shop is served");
        // With room for only six, each endpoint's first message comes first, oldest first.
        let six = fair_claims(candidates, room, 6);
        let endpoints: std::collections::HashSet<_> =
            six.iter().map(|(m, _)| m.endpoint_id).collect();
        assert_eq!(
            endpoints.len(),
            6,
            "one each: five greedy endpoints and the quiet one"
        );
        assert_eq!(
            six[0].1.id, claimed[0].1.id,
            "the longest-waiting endpoint first"
        );
    }

    #[test]
    fn an_open_circuit_takes_no_delivery_and_a_half_open_one_a_single_probe() {
        let p = policy();
        let now = OffsetDateTime::UNIX_EPOCH + Duration::hours(1);
        let mut e = Endpoint {
            id: EndpointId::new(),
            tenant_id: TenantId::new(),
            channel: Channel::Webhook,
            url: "https://example.com".into(),
            description: String::new(),
            event_types: Vec::new(),
            enabled: true,
            disabled_reason: None,
            secrets: Vec::new(),
            failing_since: None,
            consecutive_failures: 4,
            paused_until: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        assert_eq!(e.slots(&p, now), 4, "four failures in a row: still closed");
        e.consecutive_failures = 5;
        e.paused_until = Some(now + Duration::seconds(60));
        assert_eq!(e.slots(&p, now), 0, "open");
        assert_eq!(e.slots(&p, now + Duration::seconds(59)), 0);
        assert_eq!(
            e.slots(&p, now + Duration::seconds(60)),
            1,
            "half-open: one probe"
        );
        e.enabled = false;
        assert_eq!(e.slots(&p, now + Duration::seconds(60)), 0);
    }
}
