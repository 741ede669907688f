//! GraphQL over WebSocket (`graphql-transport-ws`, and the legacy `graphql-ws`), with
//! Keel's connection management (ADR 0040): the credential is checked at connect (the
//! upgrade's headers, or the `connection_init` payload's `authorization`,
//! `keel-publishable-key` and `keel-cart-secret`), a browser's `Origin` must be one the shop
//! allows, each connection takes a place within the exact caps per node and per shop, the
//! socket closes when the access token expires (4401) or its session, user or key is revoked
//! (4403, at once, from the committed security event), a subscriber that falls the exact
//! buffer behind closes it (4408), and a ping goes out at an exact interval: a connection
//! that misses an exact number of pongs in a row is closed (4409).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_graphql::{
    Data, Executor,
    http::{WebSocket as GqlWebSocket, WebSocketProtocols as Protocols, WsMessage},
};
use axum::{
    extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
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
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            ping: Duration::from_secs(15),
            missed_pongs: 2,
            presence_ttl: Duration::from_secs(30),
        }
    }
}

/// Which schema a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Admin,
    Store,
}

/// Close codes beside the protocol's own.
pub mod close {
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// A refused `connection_init`, or a credential revoked while connected.
    pub const FORBIDDEN: u16 = 4403;
    pub const NO_PONG: u16 = 4409;
    pub const TOO_MANY_CONNECTIONS: u16 = 4429;
}

/// What the connection learned when its credential was checked.
struct Authenticated {
    tenant: TenantId,
    /// The access token's expiry (none for a secret key or a guest).
    until: Option<OffsetDateTime>,
    /// Which committed security events end the connection.
    revoked_by: keel_kernel::hub::Filter,
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
    let headers = parts.headers;
    up.protocols([protocol.sec_websocket_protocol()])
        .on_upgrade(move |socket| async move {
            match side {
                Side::Admin => {
                    let schema = g.admin.clone();
                    serve(socket, schema, protocol, state, g, headers, side).await;
                }
                Side::Store => {
                    let schema = g.store.clone();
                    serve(socket, schema, protocol, state, g, headers, side).await;
                }
            }
        })
}

/// Checks the credential and builds the connection's data; tells the connection what it
/// learned.
async fn init(
    payload: serde_json::Value,
    upgrade: HeaderMap,
    state: AppState,
    g: Arc<Graphql>,
    side: Side,
    closer: Closer,
    told: oneshot::Sender<Authenticated>,
) -> async_graphql::Result<Data> {
    let headers = credentials(&upgrade, &payload);
    let until = keel_http::realtime::token_expiry(&headers);
    let refused = |p: &Problem| async_graphql::Error::new(p.detail().to_owned());
    let mut data = Data::default();
    let (tenant, revoked_by): (TenantId, keel_kernel::hub::Filter) = match side {
        Side::Admin => {
            let Admin(principal) = crate::extract::<Admin>(headers, &state)
                .await
                .map_err(|p| refused(&p))?;
            let tenant = principal.tenant_id;
            let revoked_by = keel_http::realtime::revoked_admin(&principal);
            data.insert(access::AdminViewer(principal));
            (tenant, revoked_by)
        }
        Side::Store => {
            let customer = if keel_http::auth::bearer_token(&headers).is_some() {
                Some(
                    crate::extract::<Customer>(headers.clone(), &state)
                        .await
                        .map_err(|p| refused(&p))?,
                )
            } else {
                None
            };
            let shopper = crate::extract::<Shopper>(headers, &state)
                .await
                .map_err(|p| refused(&p))?;
            let tenant = shopper.tenant_id;
            data.insert(access::StoreViewer::new(&shopper));
            data.insert(shopper);
            let revoked_by = match customer {
                Some(Customer(c)) => {
                    keel_http::realtime::revoked_customer(c.session_id.to_string())
                }
                // A guest (cart secret) has no session to end.
                None => Box::new(|_: &RecordedEvent| false),
            };
            (tenant, revoked_by)
        }
    };
    let place = state.realtime.admit(tenant).map_err(|p| {
        closer.close(close::TOO_MANY_CONNECTIONS, "too many connections");
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
    });
    Ok(data)
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

async fn serve<E: Executor>(
    socket: WebSocket,
    schema: E,
    protocol: Protocols,
    state: AppState,
    g: Arc<Graphql>,
    upgrade: HeaderMap,
    side: Side,
) {
    let (sink, stream) = socket.split();
    let (close_tx, close_rx) = watch::channel(None);
    let closer = Closer(Arc::new(close_tx));
    let missed = Arc::new(AtomicU32::new(0));
    let seen_pong = missed.clone();
    let input = stream
        .take_while(|m| std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(move |m| {
            let out = match m {
                Ok(Message::Text(t)) => Some(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => Some(b.to_vec()),
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
        missed,
        close_rx,
        told_rx,
    };
    control.run(sink, messages).await;
}

/// What the connection watches beside the protocol: pongs, the credential's expiry and
/// revocation, and closes asked for by its subscriptions.
struct Control {
    hub: Arc<keel_kernel::hub::EventHub>,
    settings: WsSettings,
    missed: Arc<AtomicU32>,
    close_rx: watch::Receiver<Option<(u16, &'static str)>>,
    told_rx: oneshot::Receiver<Authenticated>,
}

impl Control {
    async fn run(
        mut self,
        mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
        messages: impl futures_util::Stream<Item = WsMessage>,
    ) {
        let mut messages = std::pin::pin!(messages);
        let every = self.settings.ping;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut revocations: Option<keel_kernel::hub::Subscription> = None;
        // Until the credential is known: far away (a year).
        let mut expiry = std::pin::pin!(tokio::time::sleep(Duration::from_hours(8760)));
        let (mut told, mut authenticated) = (false, false);
        let closing = loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(WsMessage::Text(t)) => {
                        if sink.send(Message::Text(t.into())).await.is_err() {
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
                    }
                },
                () = &mut expiry => {
                    break Some(close_frame(close::TOKEN_EXPIRED, "access token expired"));
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
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                },
            }
        };
        if let Some(frame) = closing {
            let _ = sink.send(frame).await;
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
