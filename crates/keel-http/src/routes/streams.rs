//! Server-Sent Events streams of committed events (ADR 0040): the shop's event log live for
//! staff and secret keys, one order's progress for its shopper. `id:` is the event id, and a
//! reconnection with `Last-Event-ID` resumes from the event log without gap or repeat (in the
//! relay's numbering, the order live streams get events in).

use axum::{extract::State, http::HeaderMap, response::Response};
use keel_kernel::{
    TenantId,
    event::{RecordedEvent, ReplayFilter},
    page::Limit,
};
use keel_orders::order::OrderId;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::events::TypeFilter;
use crate::{
    AppState,
    auth::{RequirePermission, Shopper, perm::AuditRead},
    extract::Id,
    problem::{Problem, ProblemBody},
    realtime::{self, Replay, StreamSpec},
};

/// The shop's events as they commit (`audit:read`, like `GET /v1/admin/events`): `id:` is
/// the event id, `event:` its type, `data:` the event as the log shows it. With
/// `Last-Event-ID`, first every event after that one (in the order events reach the stream,
/// which is commit order), then live. A heartbeat
/// comment follows every `KEEL_REALTIME__HEARTBEAT_MS` of silence; a stream that falls
/// `KEEL_REALTIME__BUFFER` events behind ends with a `slow_consumer` event.
#[utoipa::path(get, path = "/v1/admin/events/stream", tag = "events", security(("bearer" = [])),
    params(
        ("type" = Option<String>, Query, description = "exact type, or prefix with `*`: `order.*`"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 429, body = ProblemBody), (status = 503, body = ProblemBody)))]
async fn admin_stream(
    State(state): State<AppState>,
    RequirePermission { principal, .. }: RequirePermission<AuditRead>,
    TypeFilter(prefix): TypeFilter,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let resume_after = realtime::last_event_id(&headers)?;
    let tenant = principal.tenant_id;
    let place = state.realtime.admit(tenant, false)?;
    // Subscribed before anything is read: a revocation committed from now on ends the stream.
    let revoked = state
        .realtime
        .hub
        .subscribe(tenant, realtime::revoked_admin(&principal));
    let wanted = prefix.clone();
    let subscription = state.realtime.hub.subscribe(
        tenant,
        Box::new(move |e| {
            wanted
                .as_deref()
                .is_none_or(|p| e.event_type.starts_with(p))
        }),
    );
    let resume = resume_after.map(|last| {
        let log = state.events.clone();
        let filter = ReplayFilter::Shop {
            type_prefix: prefix,
        };
        let replay: Replay = Box::new(move |after| {
            let (log, filter) = (log.clone(), filter.clone());
            Box::pin(async move { Ok(log.replay(tenant, after, &filter, page_size()).await?) })
        });
        (last, replay)
    });
    Ok(realtime::respond(
        StreamSpec {
            place,
            subscription,
            resume,
            render: realtime::full_event,
            until: realtime::token_expiry(&headers),
            revoked: Some(revoked),
            recheck: Some(realtime::recheck_admin(&state, &headers, &principal)),
        },
        &state.realtime.settings,
    ))
}

/// An event of an order as its shopper sees it: what happened and when, no payload (the
/// order itself is one `GET /v1/store/orders/{id}` away).
fn order_event(e: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_string(),
        "type": e.event_type,
        "occurred_at": super::rfc3339(e.occurred_at),
        "order_id": e.payload.get("order_id"),
    })
}

fn of_order(e: &RecordedEvent, id: &str) -> bool {
    ["order.", "payment.", "refund."]
        .iter()
        .any(|p| e.event_type.starts_with(p))
        && e.payload.get("order_id").and_then(|v| v.as_str()) == Some(id)
}

/// One of the shopper's orders as it progresses (its customer's token, or the cart's
/// secret): `order.*`, `payment.*` and `refund.*` events, each with its type and time. Resumes
/// with `Last-Event-ID` like the admin stream.
#[utoipa::path(get, path = "/v1/store/orders/{id}/stream", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String),
        (status = 404, body = ProblemBody), (status = 429, body = ProblemBody),
        (status = 503, body = ProblemBody)))]
async fn order_stream(
    State(state): State<AppState>,
    shopper: Shopper,
    Id(id): Id<OrderId>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let resume_after = realtime::last_event_id(&headers)?;
    // Another shopper's order, or another shop's: 404, as for the order itself.
    state
        .orders
        .shopper_order(shopper.tenant_id, id, &shopper.access)
        .await?;
    let tenant: TenantId = shopper.tenant_id;
    // A customer's stream ends with its session; a guest's (cart secret) never expires.
    let revoked = match crate::auth::bearer_token(&headers) {
        Some(token) => {
            let customer = state.auth.authenticate_customer(token, tenant).await?;
            Some(state.realtime.hub.subscribe(
                tenant,
                realtime::revoked_customer(customer.session_id.to_string()),
            ))
        }
        None => None,
    };
    let place = state.realtime.admit(tenant, true)?;
    let key = id.to_string();
    let subscription = state
        .realtime
        .hub
        .subscribe(tenant, Box::new(move |e| of_order(e, &key)));
    let resume = resume_after.map(|last| {
        let log = state.events.clone();
        // The order's own events, as the live subscription filters them (`of_order`).
        let filter = ReplayFilter::Order(id.to_string());
        let replay: Replay = Box::new(move |after| {
            let (log, filter) = (log.clone(), filter.clone());
            Box::pin(async move { Ok(log.replay(tenant, after, &filter, page_size()).await?) })
        });
        (last, replay)
    });
    Ok(realtime::respond(
        StreamSpec {
            place,
            subscription,
            resume,
            render: order_event,
            until: realtime::token_expiry(&headers),
            revoked,
            recheck: Some(realtime::recheck_shopper(&state, &headers, tenant)),
        },
        &state.realtime.settings,
    ))
}

/// A resume reads the log a page at a time.
fn page_size() -> Limit {
    Limit::new(Limit::MAX).unwrap_or_default()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_stream))
        .routes(routes!(order_stream))
}
