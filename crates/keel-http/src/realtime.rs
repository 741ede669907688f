//! Realtime delivery over HTTP: Server-Sent Events streams of committed events (ADR 0040).
//!
//! A stream subscribes to the node's [`EventHub`] first, then, with `Last-Event-ID`, replays
//! what the client missed from the event log, then sends live events: an event both replayed
//! and buffered live is sent once (the replayed ids are remembered), and nothing that reached
//! subscribers after the client's last event is skipped. The replay follows the relay's
//! numbering, the order live subscribers get events in (commit order), not their ids
//! (creation order): an event created before the client's last one but committed after it
//! is replayed, one created after it but delivered before it is not. A resume replays at most an exact number of
//! events; when more are missing the stream ends after them and the client's automatic
//! reconnection resumes from there. Streams are counted against exact caps per node and per
//! shop; a stream whose subscriber falls an exact number of events behind ends with a
//! `slow_consumer` event instead of being buffered without bound.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, future::BoxFuture};
use keel_kernel::{
    TenantId,
    event::{EventId, RecordedEvent},
    hub::{Delivery, EventHub, Subscription},
    page::Page,
};
use time::OffsetDateTime;

use crate::problem::{Problem, ProblemKind};

/// Exact settings of realtime delivery (`KEEL_REALTIME__*`).
#[derive(Debug, Clone, Copy)]
pub struct RealtimeSettings {
    /// Events one subscriber may have waiting; one more and it is cut off.
    pub buffer: usize,
    /// Silence after which a stream sends a heartbeat comment.
    pub heartbeat: Duration,
    /// Realtime connections (SSE streams and GraphQL WebSockets) this node holds at once.
    pub max_connections: usize,
    /// Realtime connections one shop holds on this node at once.
    pub max_connections_per_shop: usize,
    /// Events one resume replays at most; the stream then ends and the client resumes again.
    pub max_replay: usize,
    /// How often a connection's credential is authenticated again (a backstop for
    /// revocations a node did not see, and for keys' rotation overlaps ending).
    pub recheck: Duration,
}

/// Authenticates a connection's credential again: `false` ends the connection (the
/// credential is refused, or names other permissions than at connect).
pub type Recheck = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// The recheck of an admin connection: the same headers must still authenticate as the same
/// principal (tenant, actor, role or scopes).
pub fn recheck_admin(
    state: &crate::AppState,
    headers: &HeaderMap,
    principal: &crate::auth::AdminPrincipal,
) -> Recheck {
    let (state, headers, principal) = (state.clone(), headers.clone(), principal.clone());
    Box::new(move || {
        let (state, headers, principal) = (state.clone(), headers.clone(), principal.clone());
        Box::pin(async move {
            crate::auth::admin_for_gateway(&state, &headers)
                .await
                .is_ok_and(|now| now == principal)
        })
    })
}

/// The recheck of a storefront connection: its publishable key, and its customer token when
/// it has one, still authenticate for the shop.
pub fn recheck_shopper(state: &crate::AppState, headers: &HeaderMap, tenant: TenantId) -> Recheck {
    let (state, headers) = (state.clone(), headers.clone());
    Box::new(move || {
        let (state, headers) = (state.clone(), headers.clone());
        Box::pin(async move {
            let Some(pk) = headers
                .get(crate::auth::PUBLISHABLE_KEY)
                .and_then(|v| v.to_str().ok())
            else {
                return false;
            };
            if state
                .keys
                .authenticate_publishable(pk)
                .await
                .map_or(true, |t| t != tenant)
            {
                return false;
            }
            match crate::auth::bearer_token(&headers) {
                Some(token) => state
                    .auth
                    .authenticate_customer(token, tenant)
                    .await
                    .is_ok(),
                None => true,
            }
        })
    })
}

/// This node's realtime side: the hub and the connections it holds.
#[derive(Debug)]
pub struct Realtime {
    pub hub: Arc<EventHub>,
    pub settings: RealtimeSettings,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Per shop and side (storefront or staff): shoppers cannot crowd out the staff.
    per_shop: HashMap<(TenantId, bool), usize>,
}

impl Realtime {
    pub fn new(settings: RealtimeSettings) -> Self {
        Self {
            hub: Arc::new(EventHub::new(settings.buffer)),
            settings,
            open: Mutex::new(Open::default()),
        }
    }

    /// Realtime connections open on this node.
    pub fn connections(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// Takes a place for one of `tenant`'s connections (`storefront` or staff), within both
    /// caps: 503 `overloaded` when the node is full, 429 `too_many_connections` when the
    /// shop's side is (storefront and staff connections are counted apart).
    pub fn admit(self: &Arc<Self>, tenant: TenantId, storefront: bool) -> Result<Place, Problem> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.settings.max_connections {
            return Err(Problem::new(
                ProblemKind::OVERLOADED,
                format!(
                    "This node holds its limit of {} realtime connections; retry on another node or later.",
                    self.settings.max_connections
                ),
            ));
        }
        let shop = open.per_shop.entry((tenant, storefront)).or_default();
        if *shop >= self.settings.max_connections_per_shop {
            return Err(Problem::new(
                ProblemKind::TOO_MANY_CONNECTIONS,
                format!(
                    "The shop holds its limit of {} realtime connections on this node.",
                    self.settings.max_connections_per_shop
                ),
            ));
        }
        *shop += 1;
        open.total += 1;
        Ok(Place {
            realtime: self.clone(),
            key: (tenant, storefront),
        })
    }
}

/// One open realtime connection; dropping it frees its place.
#[derive(Debug)]
pub struct Place {
    realtime: Arc<Realtime>,
    key: (TenantId, bool),
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self
            .realtime
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_shop.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_shop.remove(&self.key);
            }
        }
    }
}

/// `exp` of the request's JWT access token (already verified by the authentication that
/// accepted it): a realtime connection ends then. `None` for secret keys.
pub fn token_expiry(headers: &HeaderMap) -> Option<OffsetDateTime> {
    use base64::Engine as _;
    let token = crate::auth::bearer_token(headers)?;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_i64()?;
    OffsetDateTime::from_unix_timestamp(exp).ok()
}

/// Whether a committed event ends the session `session` (logout, revocation, a reused refresh
/// token's family).
fn session_ended(e: &RecordedEvent, session: &str) -> bool {
    matches!(
        e.event_type.as_str(),
        "security.logout" | "security.session_revoked" | "security.refresh_token_reused"
    ) && e.payload["session_id"].as_str() == Some(session)
}

/// The committed security events that end an admin caller's realtime connections: its
/// session's end, its user disabled or its password changed; a key's revocation.
pub fn revoked_admin(principal: &crate::auth::AdminPrincipal) -> keel_kernel::hub::Filter {
    match &principal.actor {
        crate::auth::AdminActor::Staff(s) => {
            let (session, user) = (s.session_id.to_string(), s.user_id.to_string());
            Box::new(move |e| {
                session_ended(e, &session)
                    || (matches!(
                        e.event_type.as_str(),
                        "security.user_disabled"
                            | "security.password_changed"
                            | "security.password_reset"
                            // Permissions are taken at connect: a new role reconnects.
                            | "security.role_changed"
                    ) && e.payload["user_id"].as_str() == Some(user.as_str()))
            })
        }
        crate::auth::AdminActor::Key(k) => {
            let key = k.key_id.to_string();
            Box::new(move |e| {
                matches!(
                    e.event_type.as_str(),
                    "security.api_key_revoked" | "security.api_key_rotated"
                ) && e.payload["key_id"].as_str() == Some(key.as_str())
            })
        }
    }
}

/// The committed security events that end a customer session's realtime connections.
pub fn revoked_customer(session: String) -> keel_kernel::hub::Filter {
    Box::new(move |e| session_ended(e, &session))
}

/// The `Last-Event-ID` a reconnecting client sends: an event id, or 400.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<EventId>, Problem> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<EventId>().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::BAD_REQUEST,
                "`Last-Event-ID` must be the `id` of an event this stream sent (`evt_…`).",
            )
        })
}

/// Reads a page of the events after one, in the order they reached live subscribers
/// ([`keel_kernel::event::EventLog::replay`]).
pub type Replay =
    Box<dyn Fn(EventId) -> BoxFuture<'static, Result<Page<RecordedEvent>, Problem>> + Send + Sync>;

/// How an event is shown on a stream.
pub type Render = fn(&RecordedEvent) -> serde_json::Value;

/// A stream's parts, gathered by its handler once the caller is authorised.
pub struct StreamSpec {
    pub place: Place,
    pub subscription: Subscription,
    /// With `Last-Event-ID`: the last event the client has, and how to read what followed.
    pub resume: Option<(EventId, Replay)>,
    pub render: Render,
    /// When the stream must end: the credential's expiry.
    pub until: Option<OffsetDateTime>,
    /// The credential's revocation, as committed security events.
    pub revoked: Option<Subscription>,
    /// The credential authenticated again every `recheck` interval.
    pub recheck: Option<Recheck>,
}

impl std::fmt::Debug for StreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSpec")
            .field("place", &self.place)
            .field("resume_after", &self.resume.as_ref().map(|(id, _)| id))
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Replay { after: EventId, sent: usize },
    Live,
    Done,
}

struct State {
    spec: StreamSpec,
    phase: Phase,
    /// Replayed ids, so that an event also buffered live is not sent twice (at most
    /// `max_replay` of them).
    replayed: HashSet<EventId>,
    queue: std::collections::VecDeque<Event>,
    max_replay: usize,
    recheck_every: Duration,
    next_recheck: tokio::time::Instant,
}

fn sse_event(e: &RecordedEvent, render: Render) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.event_type.as_str())
        .data(render(e).to_string())
}

/// The JSON of an event on the admin stream (as `GET /v1/admin/events` shows it).
pub fn full_event(e: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_string(),
        "type": e.event_type,
        "occurred_at": e.occurred_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "data": e.payload,
    })
}

fn closing(reason: &str, detail: &str) -> Event {
    Event::default()
        .event(reason)
        .data(serde_json::json!({ "code": reason, "detail": detail }).to_string())
}

impl State {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Replay { after, sent } => {
                    if let Some(closing) = self.replay_page(after, sent).await {
                        return Some(closing);
                    }
                }
                Phase::Live => return self.live().await,
            }
        }
    }

    /// Queues the next page of missed events; answers a closing event if the log failed.
    async fn replay_page(&mut self, mut after: EventId, mut sent: usize) -> Option<Event> {
        let Some((_, replay)) = &self.spec.resume else {
            self.phase = Phase::Live;
            return None;
        };
        let page = match replay(after).await {
            Ok(page) => page,
            Err(problem) => {
                tracing::warn!(problem = ?problem.kind(), "a stream's resume could not read the event log");
                self.phase = Phase::Done;
                return Some(closing(
                    "replay_failed",
                    "The event log could not be read; reconnect to resume.",
                ));
            }
        };
        for e in page.items {
            if sent == self.max_replay {
                // The client reconnects and resumes after the last one sent.
                self.phase = Phase::Done;
                return None;
            }
            sent += 1;
            after = e.id;
            self.replayed.insert(e.id);
            self.queue.push_back(sse_event(&e, self.spec.render));
        }
        self.phase = if page.next_cursor.is_none() {
            Phase::Live
        } else {
            Phase::Replay { after, sent }
        };
        None
    }

    /// The next live event, or the event that closes the stream.
    async fn live(&mut self) -> Option<Event> {
        loop {
            let until = self.spec.until;
            let expiry = async move {
                match until {
                    Some(until) => {
                        let left = Duration::try_from(until - OffsetDateTime::now_utc())
                            .unwrap_or(Duration::ZERO);
                        tokio::time::sleep(left).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let revocations = self.spec.revoked.as_mut();
            let revoked = async move {
                match revocations {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            let due = self.next_recheck;
            let rechecks = self.spec.recheck.is_some();
            let recheck_due = async move {
                if rechecks {
                    tokio::time::sleep_until(due).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let delivery = tokio::select! {
                d = self.spec.subscription.recv() => d,
                () = recheck_due => {
                    self.next_recheck = tokio::time::Instant::now() + self.recheck_every;
                    let valid = match &self.spec.recheck {
                        Some(check) => check().await,
                        None => true,
                    };
                    if valid {
                        continue;
                    }
                    self.phase = Phase::Done;
                    return Some(closing(
                        "credential_revoked",
                        "The credential is no longer accepted as it was at connect.",
                    ));
                }
                () = expiry => {
                    self.phase = Phase::Done;
                    return Some(closing(
                        "credential_expired",
                        "The access token expired; reconnect with a fresh one.",
                    ));
                }
                d = revoked => {
                    self.phase = Phase::Done;
                    // Cut off with every subscriber (the node's feed may have lost events):
                    // it may have lost a revocation too, so the stream ends either way, and the
                    // client's reconnection authenticates afresh.
                    if d == Some(Delivery::SlowConsumer) {
                        return Some(closing(
                            "slow_consumer",
                            "The stream was cut off and may have missed events; reconnect with Last-Event-ID to resume.",
                        ));
                    }
                    return Some(closing(
                        "credential_revoked",
                        "The session or key was revoked.",
                    ));
                }
            };
            match delivery {
                Some(Delivery::Event(e)) => {
                    if self.replayed.remove(&e.id) {
                        continue;
                    }
                    return Some(sse_event(&e, self.spec.render));
                }
                Some(Delivery::SlowConsumer) => {
                    self.phase = Phase::Done;
                    return Some(closing(
                        "slow_consumer",
                        "The stream fell too far behind and was closed; reconnect with Last-Event-ID to resume.",
                    ));
                }
                None => {
                    self.phase = Phase::Done;
                    return None;
                }
            }
        }
    }
}

fn events(
    spec: StreamSpec,
    settings: &RealtimeSettings,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let phase = match &spec.resume {
        Some((after, _)) => Phase::Replay {
            after: *after,
            sent: 0,
        },
        None => Phase::Live,
    };
    let state = State {
        spec,
        phase,
        replayed: HashSet::new(),
        queue: std::collections::VecDeque::new(),
        max_replay: settings.max_replay,
        recheck_every: settings.recheck,
        next_recheck: tokio::time::Instant::now() + settings.recheck,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(event), state))
    })
}

/// The `text/event-stream` answer for `spec`, with heartbeats after the exact silence.
pub fn respond(spec: StreamSpec, settings: &RealtimeSettings) -> Response {
    let mut res = Sse::new(events(spec, settings))
        .keep_alive(
            KeepAlive::new()
                .interval(settings.heartbeat)
                .text("heartbeat"),
        )
        .into_response();
    // Proxies must not buffer or cache a live stream.
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    res
}
