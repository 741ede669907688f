//! GraphQL over WebSocket (`graphql-transport-ws`, and the legacy `graphql-ws`), with
//! Keel's connection management (ADR 0040):
//! - the credential is checked at connect (the upgrade's headers, or the `connection_init`
//!   payload's `authorization`, `keel-publishable-key` and `keel-cart-secret`) within an exact
//!   time (4408), a browser's `Origin` must be one the shop allows, and each connection takes
//!   a place within the exact caps per node and per shop (storefront and staff apart, 4429);
//! - only subscriptions run over the socket (queries and mutations go over HTTP, through the
//!   edge's limits), each within the query size and the storefront's persisted-only switch,
//!   at most an exact number at once per connection (4429; a bad message is 4400);
//! - the socket closes when the access token expires (4401), when its session, user or key is
//!   revoked (4403, at once, from the committed security event, and at the latest at the next
//!   recheck of the credential), when a subscriber falls the exact buffer behind (4410), and
//!   when the client misses an exact number of pings in a row (4411) or stops reading.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_graphql::{
    Data, Executor,
    http::{WebSocket as GqlWebSocket, WebSocketProtocols as Protocols, WsMessage},
};
use axum::{
    extract::{
        ConnectInfo,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt as _, StreamExt as _};
use keel_http::{
    AppState,
    auth::{Admin, Customer, Shopper},
    problem::{Problem, ProblemKind},
};
use keel_kernel::{TenantId, event::RecordedEvent, hub::Delivery};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use crate::{Graphql, access, loaders, subscriptions::Closer};

/// Exact settings of WebSocket connections and presence (`KEEL_GRAPHQL__*`).
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// A ping goes out after this long.
    pub ping: Duration,
    /// Pings in a row without a pong after which the connection is closed.
    pub missed_pongs: u32,
    /// How long a presence entry lasts without a heartbeat.
    pub presence_ttl: Duration,
    /// Resources one shop may have presence on at once on this node.
    pub presence_rooms_per_shop: usize,
    /// Subscriptions one connection runs at once.
    pub max_operations: usize,
    /// `connection_init` must come within this long.
    pub init_timeout: Duration,
    /// The largest message a client may send, in bytes (as HTTP bodies).
    pub max_message_bytes: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            ping: Duration::from_secs(15),
            missed_pongs: 2,
            presence_ttl: Duration::from_secs(30),
            presence_rooms_per_shop: 1000,
            max_operations: 50,
            init_timeout: Duration::from_secs(10),
            max_message_bytes: 1_048_576,
        }
    }
}

/// Which schema a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Admin,
    Store,
}

/// Close codes: the protocol's (4400, 4401, 4403, 4408, 4429) and Keel's own.
pub mod close {
    pub const BAD_MESSAGE: u16 = 4400;
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// A refused `connection_init`, or a credential revoked while connected.
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    /// Too many connections of the shop, or operations of the connection.
    pub const TOO_MANY: u16 = 4429;
    pub const SLOW_CONSUMER: u16 = 4410;
    pub const NO_PONG: u16 = 4411;
}

/// What the upgrade request brings to the connection's authentication.
#[derive(Clone)]
struct Upgrade {
    headers: HeaderMap,
    client: Option<ConnectInfo<SocketAddr>>,
}

/// What the connection learned when its credential was checked.
struct Authenticated {
    tenant: TenantId,
    /// The access token's expiry (none for a secret key or a guest).
    until: Option<OffsetDateTime>,
    /// Which committed security events end the connection.
    revoked_by: keel_kernel::hub::Filter,
    /// The credential authenticated again, every `KEEL_REALTIME__RECHECK_MS`.
    recheck: keel_http::realtime::Recheck,
}

/// The upgrade's headers with the `connection_init` payload's credentials over them.
fn credentials(upgrade: &HeaderMap, payload: &serde_json::Value) -> HeaderMap {
    let mut headers = upgrade.clone();
    for name in ["authorization", "keel-publishable-key", "keel-cart-secret"] {
        let value = payload
            .get(name)
            .or_else(|| payload.get(name.to_ascii_uppercase().as_str()))
            .or_else(|| payload.get("headers").and_then(|h| h.get(name)))
            .and_then(|v| v.as_str())
            .and_then(|v| HeaderValue::from_str(v).ok());
        if let Some(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    headers
}

/// A browser's origin must be the admin console's (`KEEL_CORS__ADMIN_ORIGINS`) or, on the
/// storefront, one of the publishable key's; clients that send no `Origin` are not browsers.
async fn origin_allowed(parts: &Parts, state: &AppState, side: Side) -> bool {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true;
    };
    match side {
        Side::Admin => state.cors.admin_allows(origin),
        Side::Store => match parts
            .headers
            .get(keel_http::auth::PUBLISHABLE_KEY)
            .and_then(|v| v.to_str().ok())
        {
            Some(pk) => state
                .keys
                .authenticate_publishable_key(pk)
                .await
                .is_ok_and(|k| k.allowed_origins.iter().any(|o| o.as_str() == origin)),
            None => false,
        },
    }
}

pub async fn upgrade(
    up: WebSocketUpgrade,
    parts: Parts,
    state: AppState,
    g: Arc<Graphql>,
    side: Side,
) -> Response {
    if !origin_allowed(&parts, &state, side).await {
        return Problem::new(
            ProblemKind::FORBIDDEN,
            "This origin may not open a GraphQL WebSocket to this shop.",
        )
        .into_response();
    }
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| p.trim().parse::<Protocols>().ok())
        })
        .unwrap_or(Protocols::GraphQLWS);
    let upgrade = Upgrade {
        client: parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
        headers: parts.headers,
    };
    up.protocols([protocol.sec_websocket_protocol()])
        .max_message_size(g.ws.max_message_bytes)
        .on_upgrade(move |socket| async move {
            match side {
                Side::Admin => {
                    let schema = g.admin.clone();
                    serve(socket, schema, protocol, state, g, upgrade, side).await;
                }
                Side::Store => {
                    let schema = g.store.clone();
                    serve(socket, schema, protocol, state, g, upgrade, side).await;
                }
            }
        })
}

/// Checks the credential and builds the connection's data; tells the connection what it
/// learned.
async fn init(
    payload: serde_json::Value,
    upgrade: Upgrade,
    state: AppState,
    g: Arc<Graphql>,
    side: Side,
    closer: Closer,
    told: oneshot::Sender<Authenticated>,
) -> async_graphql::Result<Data> {
    let headers = credentials(&upgrade.headers, &payload);
    let until = keel_http::realtime::token_expiry(&headers);
    let refused = |p: &Problem| async_graphql::Error::new(p.detail().to_owned());
    let mut data = Data::default();
    let (tenant, revoked_by, recheck): (TenantId, keel_kernel::hub::Filter, _) = match side {
        Side::Admin => {
            let Admin(principal) = crate::extract::<Admin>(headers.clone(), upgrade.client, &state)
                .await
                .map_err(|p| refused(&p))?;
            let tenant = principal.tenant_id;
            let revoked_by = keel_http::realtime::revoked_admin(&principal);
            let recheck = keel_http::realtime::recheck_admin(&state, &headers, &principal);
            data.insert(access::AdminViewer(principal));
            (tenant, revoked_by, recheck)
        }
        Side::Store => {
            let customer = if keel_http::auth::bearer_token(&headers).is_some() {
                Some(
                    crate::extract::<Customer>(headers.clone(), upgrade.client, &state)
                        .await
                        .map_err(|p| refused(&p))?,
                )
            } else {
                None
            };
            let shopper = crate::extract::<Shopper>(headers.clone(), upgrade.client, &state)
                .await
                .map_err(|p| refused(&p))?;
            let tenant = shopper.tenant_id;
            let recheck = keel_http::realtime::recheck_shopper(&state, &headers, tenant);
            data.insert(access::StoreViewer::new(&shopper));
            data.insert(shopper);
            let revoked_by = match customer {
                Some(Customer(c)) => {
                    keel_http::realtime::revoked_customer(c.session_id.to_string())
                }
                // A guest (cart secret) has no session to end.
                None => Box::new(|_: &RecordedEvent| false),
            };
            (tenant, revoked_by, recheck)
        }
    };
    let place = state
        .realtime
        .admit(tenant, side == Side::Store)
        .map_err(|p| {
            closer.close(close::TOO_MANY, "too many connections");
            refused(&p)
        })?;
    data.insert(place);
    // A connection lives long: its loaders batch but remember nothing between reads.
    let (customers, available) = (
        loaders::customers(&state, tenant),
        loaders::available(&state, tenant),
    );
    customers.enable_all_cache(false);
    available.enable_all_cache(false);
    data.insert(customers);
    data.insert(available);
    data.insert(g.presence.clone());
    data.insert(closer);
    data.insert(state);
    let _ = told.send(Authenticated {
        tenant,
        until,
        revoked_by,
        recheck,
    });
    Ok(data)
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// Screens each client message before the protocol runs it: a `subscribe` must be a
/// subscription within the query size (on a persisted-only storefront, a shipped query by
/// hash), and the connection may run at most an exact number at once. A violation closes the
/// connection.
struct Screen {
    g: Arc<Graphql>,
    side: Side,
    active: Arc<Mutex<HashSet<String>>>,
    closer: Closer,
}

impl Screen {
    fn refuse(&self, code: u16, reason: &'static str) -> Option<Vec<u8>> {
        self.closer.close(code, reason);
        None
    }

    fn pass(&self, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let Ok(mut msg) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return self.refuse(close::BAD_MESSAGE, "not a protocol message");
        };
        match msg["type"].as_str() {
            Some("subscribe" | "start") => {}
            Some("complete" | "stop") => {
                if let Some(id) = msg["id"].as_str() {
                    self.active
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(id);
                }
                return Some(bytes);
            }
            _ => return Some(bytes),
        }
        let settings = &self.g.settings;
        let persisted_only = self.side == Side::Store && settings.store_persisted_only;
        let payload = &mut msg["payload"];
        let hash = payload["extensions"]["persistedQuery"]["sha256Hash"]
            .as_str()
            .map(str::to_ascii_lowercase);
        let query = match (payload["query"].as_str(), hash) {
            (Some(_), _) if persisted_only => {
                return self.refuse(close::BAD_MESSAGE, "persisted queries only");
            }
            (Some(q), _) => q.to_owned(),
            // Over the socket, only the operator's shipped queries are known by hash.
            (None, Some(h)) => match settings.persisted.get(&h) {
                Some(q) => q.clone(),
                None => return self.refuse(close::BAD_MESSAGE, "unknown persisted query"),
            },
            (None, None) => return self.refuse(close::BAD_MESSAGE, "no query"),
        };
        if query.len() > settings.max_query_bytes {
            return self.refuse(close::BAD_MESSAGE, "query too large");
        }
        let subscription_only = async_graphql::parser::parse_query(&query).is_ok_and(|doc| {
            doc.operations.iter().all(|(_, op)| {
                op.node.ty == async_graphql::parser::types::OperationType::Subscription
            })
        });
        if !subscription_only {
            return self.refuse(
                close::BAD_MESSAGE,
                "only subscriptions over WebSocket; queries and mutations over HTTP POST",
            );
        }
        let Some(id) = msg["id"].as_str().map(str::to_owned) else {
            return self.refuse(close::BAD_MESSAGE, "no id");
        };
        {
            let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            if active.len() >= self.g.ws.max_operations {
                drop(active);
                return self.refuse(close::TOO_MANY, "too many operations");
            }
            active.insert(id);
        }
        msg["payload"]["query"] = serde_json::Value::String(query);
        serde_json::to_vec(&msg).ok()
    }
}

async fn serve<E: Executor>(
    socket: WebSocket,
    schema: E,
    protocol: Protocols,
    state: AppState,
    g: Arc<Graphql>,
    upgrade: Upgrade,
    side: Side,
) {
    let (sink, stream) = socket.split();
    let (close_tx, close_rx) = watch::channel(None);
    let closer = Closer(Arc::new(close_tx));
    let missed = Arc::new(AtomicU32::new(0));
    let seen_pong = missed.clone();
    let active = Arc::new(Mutex::new(HashSet::new()));
    let screen = Screen {
        g: g.clone(),
        side,
        active: active.clone(),
        closer: closer.clone(),
    };
    let input = stream
        .take_while(|m| std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(move |m| {
            let out = match m {
                Ok(Message::Text(t)) => screen.pass(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => screen.pass(b.to_vec()),
                Ok(Message::Pong(_)) => {
                    seen_pong.store(0, Ordering::Relaxed);
                    None
                }
                _ => None,
            };
            std::future::ready(out)
        });
    let (told_tx, told_rx) = oneshot::channel();
    let hub = state.realtime.hub.clone();
    let settings = g.ws;
    let recheck_every = state.realtime.settings.recheck;
    let init_closer = closer;
    let on_init = move |payload| {
        init(
            payload,
            upgrade,
            state.clone(),
            g,
            side,
            init_closer,
            told_tx,
        )
    };
    let messages = GqlWebSocket::new(schema, input, protocol).on_connection_init(on_init);
    let control = Control {
        hub,
        settings,
        recheck_every,
        missed,
        active,
        close_rx,
        told_rx,
    };
    control.run(sink, messages).await;
}

/// What the connection watches beside the protocol: the time to authenticate, pongs, the
/// credential's expiry, revocation and recheck, and closes asked for by its subscriptions.
struct Control {
    hub: Arc<keel_kernel::hub::EventHub>,
    settings: WsSettings,
    recheck_every: Duration,
    missed: Arc<AtomicU32>,
    active: Arc<Mutex<HashSet<String>>>,
    close_rx: watch::Receiver<Option<(u16, &'static str)>>,
    told_rx: oneshot::Receiver<Authenticated>,
}

/// A year: "not yet" for timers that a later event sets.
const NOT_YET: Duration = Duration::from_hours(8760);

impl Control {
    /// Sends within the ping interval; a client that stops reading is dropped.
    async fn send(
        &self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        msg: Message,
    ) -> bool {
        matches!(
            tokio::time::timeout(self.settings.ping, sink.send(msg)).await,
            Ok(Ok(()))
        )
    }

    /// A protocol message from the server: an ended operation frees its place.
    fn note_sent(&self, text: &str) {
        if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
            return;
        }
        if let Ok(msg) = serde_json::from_str::<serde_json::Value>(text)
            && let Some(id) = msg["id"].as_str()
        {
            self.active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }

    async fn run(
        mut self,
        mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
        messages: impl futures_util::Stream<Item = WsMessage>,
    ) {
        let mut messages = std::pin::pin!(messages);
        let every = self.settings.ping;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut revocations: Option<keel_kernel::hub::Subscription> = None;
        let mut recheck: Option<keel_http::realtime::Recheck> = None;
        let mut expiry = std::pin::pin!(tokio::time::sleep(NOT_YET));
        let mut init_due = std::pin::pin!(tokio::time::sleep(self.settings.init_timeout));
        let mut recheck_due = std::pin::pin!(tokio::time::sleep(NOT_YET));
        let (mut told, mut authenticated) = (false, false);
        let closing = loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(WsMessage::Text(t)) => {
                        self.note_sent(&t);
                        if !self.send(&mut sink, Message::Text(t.into())).await {
                            return;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => {
                        let asked = *self.close_rx.borrow();
                        break Some(match asked {
                            Some((code, reason)) => close_frame(code, reason),
                            // The protocol's answer to a refused `connection_init` is
                            // 4403 Forbidden (graphql-transport-ws), not a protocol error.
                            None if !authenticated && code == 1002 => close_frame(close::FORBIDDEN, &reason),
                            None => close_frame(code, &reason),
                        });
                    }
                    None => break Some(Message::Close(None)),
                },
                answer = &mut self.told_rx, if !told => {
                    told = true;
                    if let Ok(a) = answer {
                        authenticated = true;
                        if let Some(until) = a.until {
                            let left = Duration::try_from(until - OffsetDateTime::now_utc())
                                .unwrap_or(Duration::ZERO);
                            expiry.as_mut().reset(tokio::time::Instant::now() + left);
                        }
                        revocations = Some(self.hub.subscribe(a.tenant, a.revoked_by));
                        recheck = Some(a.recheck);
                        recheck_due.as_mut().reset(tokio::time::Instant::now() + self.recheck_every);
                    }
                },
                () = &mut init_due, if !told => {
                    break Some(close_frame(close::INIT_TIMEOUT, "connection initialisation timeout"));
                },
                () = &mut expiry => {
                    break Some(close_frame(close::TOKEN_EXPIRED, "access token expired"));
                },
                () = &mut recheck_due => {
                    recheck_due.as_mut().reset(tokio::time::Instant::now() + self.recheck_every);
                    if let Some(check) = &recheck
                        && !check().await
                    {
                        break Some(close_frame(close::FORBIDDEN, "credential no longer accepted"));
                    }
                },
                revoked = next_revocation(revocations.as_mut()) => {
                    if revoked {
                        break Some(close_frame(close::FORBIDDEN, "session revoked"));
                    }
                    revocations = None;
                },
                changed = self.close_rx.changed() => {
                    if changed.is_err() {
                        break None;
                    }
                    let wanted = *self.close_rx.borrow();
                    if let Some((code, reason)) = wanted {
                        break Some(close_frame(code, reason));
                    }
                },
                _ = ping.tick() => {
                    if self.missed.fetch_add(1, Ordering::Relaxed) >= self.settings.missed_pongs {
                        break Some(close_frame(close::NO_PONG, "no pong"));
                    }
                    if !self.send(&mut sink, Message::Ping(Vec::new().into())).await {
                        return;
                    }
                },
            }
        };
        if let Some(frame) = closing {
            let _ = self.send(&mut sink, frame).await;
        }
    }
}

/// `true` when the connection's credential was revoked; `false` if the watch ended.
async fn next_revocation(sub: Option<&mut keel_kernel::hub::Subscription>) -> bool {
    let Some(sub) = sub else {
        return std::future::pending().await;
    };
    match sub.recv().await {
        // A revocation watch cut off for lag may have missed the revocation: close too.
        Some(Delivery::Event(_) | Delivery::SlowConsumer) => true,
        None => false,
    }
}
