//! Delivery claims and attempts.
//!
//! A claim takes due messages for the delivery workers, fairly among the endpoints and within
//! each endpoint's and each shop's limit of deliveries in flight, and marks them delivering
//! until a lock time. An attempt is recorded with its message's new state and the endpoint's
//! circuit, and may claim the endpoint's next message in the same transaction (a refill).
//!
//! PostgreSQL claims on several nodes at once: a claim locks what it counts and takes (the
//! endpoint rows, the messages, the shop's advisory lock), skipping whatever another holds,
//! and never waits for a lock. On SQLite every claim runs on the single writer, one after the
//! other; its statements name the indexes they read (`INDEXED BY`).

use std::collections::{HashMap, hash_map::Entry};

use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_webhooks::{
    domain::{Attempt, DeliveryPolicy, Endpoint, EndpointId, Message, fair_claims},
    ports::{AttemptOutcome, Refill},
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SHOP_CLAIM_LOCK, shop_key};
use crate::{
    args,
    exec::{Dialect, Exec, decode, pick},
    rows::{
        ReadRow,
        webhooks::{endpoint_from_row, message_from_row},
    },
    store::tenants::insert_events,
};

/// PostgreSQL: the due messages of endpoint `$2` of shop `$1` at `$3` among its `$5` oldest
/// candidates (pending and due, or delivering with a lapsed claim), each kind read in order
/// from its own index; the caller orders, limits and locks. The ids are an uncorrelated
/// `ARRAY(...)`, computed once: as an `IN` subquery, the generic plan of the prepared
/// statement scanned every pending message of the shop and ran the subquery for each (50 ms
/// with 4,000 waiting). The due condition is checked again on the rows as locked.
macro_rules! due_sql {
    () => {
        "SELECT * FROM webhook_messages WHERE tenant_id = $1 AND id = ANY(ARRAY(SELECT id FROM ( \
           (SELECT id, next_attempt_at FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT $5) \
           UNION ALL (SELECT id, next_attempt_at FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' AND locked_until <= $3 \
             ORDER BY next_attempt_at, id LIMIT $5)) d ORDER BY next_attempt_at, id LIMIT $5)) \
         AND ((status = 'pending' AND next_attempt_at <= $3) OR (status = 'delivering' AND locked_until <= $3))"
    };
}

/// The enabled endpoints with something due at `$1` (their id pairs), the one whose oldest
/// due message waited longest first. Pending messages are found by skipping through
/// `webhook_messages_pending` one endpoint at a time (a recursive probe of the next
/// `(shop, endpoint)` after the last), so a claim reads one index entry per endpoint with
/// pending messages, whatever their backlogs and however many endpoints have none; lapsed
/// claims come from the index of deliveries in flight. PostgreSQL probes with a lateral
/// subquery; SQLite, which has none, joins on the `rowid` its probe finds.
const WAITING_POSTGRES: &str = "WITH RECURSIVE pending(tenant_id, endpoint_id, due_at) AS ( \
       (SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages WHERE status = 'pending' \
         ORDER BY tenant_id, endpoint_id, next_attempt_at LIMIT 1) \
       UNION ALL \
       SELECT n.tenant_id, n.endpoint_id, n.next_attempt_at FROM pending p CROSS JOIN LATERAL ( \
         SELECT m.tenant_id, m.endpoint_id, m.next_attempt_at FROM webhook_messages m \
         WHERE m.status = 'pending' AND (m.tenant_id, m.endpoint_id) > (p.tenant_id, p.endpoint_id) \
         ORDER BY m.tenant_id, m.endpoint_id, m.next_attempt_at LIMIT 1) n), \
     due AS ( \
       SELECT tenant_id, endpoint_id, due_at FROM pending WHERE due_at <= $1 \
       UNION ALL SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages \
         WHERE status = 'delivering' AND locked_until <= $1) \
     SELECT e.tenant_id, e.id FROM due d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
     WHERE e.enabled AND (e.paused_until IS NULL OR e.paused_until <= $1) \
     GROUP BY e.tenant_id, e.id ORDER BY min(d.due_at), e.id";

/// [`WAITING_POSTGRES`] on SQLite.
const WAITING_SQLITE: &str = "WITH RECURSIVE pending(tenant_id, endpoint_id, due_at) AS ( \
       SELECT * FROM (SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages INDEXED BY webhook_messages_pending \
         WHERE status = 'pending' ORDER BY tenant_id, endpoint_id, next_attempt_at LIMIT 1) \
       UNION ALL \
       SELECT m.tenant_id, m.endpoint_id, m.next_attempt_at FROM pending p JOIN webhook_messages m ON m.rowid = ( \
         SELECT x.rowid FROM webhook_messages x INDEXED BY webhook_messages_pending \
         WHERE x.status = 'pending' AND (x.tenant_id, x.endpoint_id) > (p.tenant_id, p.endpoint_id) \
         ORDER BY x.tenant_id, x.endpoint_id, x.next_attempt_at LIMIT 1)), \
     due AS ( \
       SELECT tenant_id, endpoint_id, due_at FROM pending WHERE due_at <= $1 \
       UNION ALL SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages INDEXED BY webhook_messages_in_flight \
         WHERE status = 'delivering' AND locked_until <= $1) \
     SELECT e.tenant_id, e.id FROM due d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
     WHERE e.enabled = 1 AND (e.paused_until IS NULL OR e.paused_until <= $1) \
     GROUP BY e.tenant_id, e.id ORDER BY min(d.due_at), e.id";

/// The enabled endpoints with something due at `now`, the one waiting longest first (see
/// `WAITING_POSTGRES`). Read without locks: [`claim_waiting`] reads each again.
pub async fn waiting_endpoints<E: Exec>(
    e: &mut E,
    now: OffsetDateTime,
) -> Result<Vec<(TenantId, EndpointId)>, StoreError> {
    let rows = e
        .all(pick::<E>(WAITING_POSTGRES, WAITING_SQLITE), args![now])
        .await?;
    decode(&rows, |r| {
        Ok((
            TenantId::from_uuid(r.uuid("tenant_id")?),
            EndpointId::from_uuid(r.uuid("id")?),
        ))
    })
}

/// Claims up to `cap` (at least 1) due messages in the caller's transaction, which also reads
/// which endpoints wait (PostgreSQL's claim: one transaction).
pub async fn claim_due<E: Exec>(
    e: &mut E,
    now: OffsetDateTime,
    cap: usize,
    lock_until: OffsetDateTime,
    policy: &DeliveryPolicy,
) -> Result<Vec<(Message, Endpoint)>, StoreError> {
    let waiting = waiting_endpoints(e, now).await?;
    claim_waiting(e, &waiting, now, cap, lock_until, policy).await
}

/// Claims up to `cap` due messages of the endpoints `waiting` (as [`waiting_endpoints`]
/// answered), marking them delivering until `lock_until`.
///
/// In that order, the endpoints that get a delivery in the claim's first round (at most
/// `cap`); the fair round robin then shares the rest out among them. Everything is read again
/// here, in the claim's write transaction.
pub async fn claim_waiting<E: Exec>(
    e: &mut E,
    waiting: &[(TenantId, EndpointId)],
    now: OffsetDateTime,
    cap: usize,
    lock_until: OffsetDateTime,
    policy: &DeliveryPolicy,
) -> Result<Vec<(Message, Endpoint)>, StoreError> {
    let mut candidates = Vec::new();
    let mut shop_room: HashMap<TenantId, i64> = HashMap::new();
    let mut shop_left: HashMap<TenantId, i64> = HashMap::new();
    for &(tenant, id) in waiting {
        if candidates.len() >= cap {
            break;
        }
        if let Entry::Vacant(slot) = shop_room.entry(tenant) {
            let room = room_of_shop(e, tenant, now, policy).await?;
            slot.insert(room);
            shop_left.insert(tenant, room);
        }
        let left = shop_left.entry(tenant).or_insert(0);
        if *left <= 0 {
            continue;
        }
        if let Some(candidate) = endpoint_due(e, tenant, id, now, policy).await? {
            *left -= 1;
            candidates.push(candidate);
        }
    }
    let claimed = fair_claims(candidates, shop_room, cap);
    let messages: Vec<&Message> = claimed.iter().map(|(m, _)| m).collect();
    claim(e, &messages, lock_until).await?;
    Ok(claimed)
}

/// The deliveries the shop may still start: its limit less its deliveries in flight on every
/// node. On PostgreSQL the shop's claim lock is only tried (so two nodes never both count a
/// shop below its limit and both claim past it): a shop another node is claiming for waits
/// for the next claim, and no claim ever waits for a lock (so none can deadlock with another).
async fn room_of_shop<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    now: OffsetDateTime,
    policy: &DeliveryPolicy,
) -> Result<i64, StoreError> {
    if !try_lock_shop(e, tenant).await? {
        return Ok(0);
    }
    Ok(policy.shop_max_in_flight - shop_busy(e, tenant, now).await?)
}

/// Takes the shop's claim lock until the transaction ends if nobody holds it; answers whether
/// it did. On SQLite the single writer is that lock.
async fn try_lock_shop<E: Exec>(e: &mut E, tenant: TenantId) -> Result<bool, StoreError> {
    if E::DIALECT == Dialect::Sqlite {
        return Ok(true);
    }
    // `Arg` binds integers as `int8`; the two-key form takes two `int4`s.
    e.one(
        "SELECT pg_try_advisory_xact_lock($1::int4, $2::int4) AS locked",
        args![SHOP_CLAIM_LOCK, shop_key(tenant)],
    )
    .await?
    .flag("locked")
}

/// The endpoint as it is now (a circuit may have opened since the endpoints waiting were
/// read) and its oldest due messages, as many as it has free slots, if it has both. On
/// PostgreSQL its row is locked for the claim (`NO KEY UPDATE`: the relay's foreign-key checks
/// do not keep it out) and skipped when an attempt of the endpoint is recording, another claim
/// or an admin change holds it: nothing else counts the endpoint's deliveries meanwhile.
async fn endpoint_due<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: EndpointId,
    now: OffsetDateTime,
    policy: &DeliveryPolicy,
) -> Result<Option<(Endpoint, Vec<Message>)>, StoreError> {
    let row = e
        .opt(
            pg_lock!(
                E,
                concat!(
                    "SELECT ",
                    endpoint_cols!(),
                    " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND enabled \
                     AND (paused_until IS NULL OR paused_until <= $3)"
                ),
                " FOR NO KEY UPDATE SKIP LOCKED"
            ),
            args![tenant.as_uuid(), id.as_uuid(), now],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let endpoint = endpoint_from_row(&row)?;
    let free = endpoint.slots(policy, now) - busy(e, &endpoint, now).await?;
    if free <= 0 {
        return Ok(None);
    }
    let due = due_of(e, &endpoint, now, free, policy).await?;
    Ok((!due.is_empty()).then_some((endpoint, due)))
}

/// The endpoint's deliveries in flight (claimed, lock not lapsed), on every node.
async fn busy<E: Exec>(
    e: &mut E,
    endpoint: &Endpoint,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    e.one(
        // SQLite is told the index of deliveries in flight.
        pick::<E>(
            "SELECT count(*) AS n FROM webhook_messages WHERE tenant_id = $1 \
             AND endpoint_id = $2 AND status = 'delivering' AND locked_until > $3",
            "SELECT count(*) AS n FROM webhook_messages INDEXED BY webhook_messages_in_flight \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' \
             AND locked_until > $3",
        ),
        args![endpoint.tenant_id.as_uuid(), endpoint.id.as_uuid(), now],
    )
    .await?
    .int("n")
}

/// The shop's deliveries in flight, over all its endpoints and every node.
async fn shop_busy<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    e.one(
        // SQLite is told the index of deliveries in flight.
        pick::<E>(
            "SELECT count(*) AS n FROM webhook_messages WHERE tenant_id = $1 \
             AND status = 'delivering' AND locked_until > $2",
            "SELECT count(*) AS n FROM webhook_messages INDEXED BY webhook_messages_in_flight \
             WHERE tenant_id = $1 AND status = 'delivering' AND locked_until > $2",
        ),
        args![tenant.as_uuid(), now],
    )
    .await?
    .int("n")
}

/// The endpoint's oldest due messages (pending and due, or delivering with a lapsed lock), at
/// most `n`: each kind read in order from the endpoint's own index, a bounded number of
/// entries, so neither its own backlog nor the other endpoints' make the read longer.
async fn due_of<E: Exec>(
    e: &mut E,
    endpoint: &Endpoint,
    now: OffsetDateTime,
    n: i64,
    policy: &DeliveryPolicy,
) -> Result<Vec<Message>, StoreError> {
    let (tenant, id) = (endpoint.tenant_id.as_uuid(), endpoint.id.as_uuid());
    let rows = match E::DIALECT {
        // Locked, and the candidates are `n` plus the endpoint's slots: attempts of the
        // endpoint recording at the same time (at most its slots) may each hold the next one
        // locked, and are skipped.
        Dialect::Postgres => {
            e.all(
                concat!(
                    "SELECT ",
                    message_cols!(),
                    " FROM (",
                    due_sql!(),
                    " ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) due \
                     ORDER BY next_attempt_at, id"
                ),
                args![tenant, id, now, n, n.saturating_add(policy.max_in_flight)],
            )
            .await?
        }
        // The single writer: the first `n` are the claim's.
        Dialect::Sqlite => {
            e.all(
                concat!(
                    "SELECT ",
                    message_cols!(),
                    " FROM (SELECT * FROM (SELECT * FROM webhook_messages \
                     INDEXED BY webhook_messages_pending WHERE tenant_id = $1 \
                     AND endpoint_id = $2 AND status = 'pending' AND next_attempt_at <= $3 \
                     ORDER BY next_attempt_at, id LIMIT $4) \
                     UNION ALL SELECT * FROM (SELECT * FROM webhook_messages \
                     INDEXED BY webhook_messages_in_flight WHERE tenant_id = $1 \
                     AND endpoint_id = $2 AND status = 'delivering' AND locked_until <= $3 \
                     ORDER BY next_attempt_at, id LIMIT $4)) \
                     ORDER BY next_attempt_at, id LIMIT $4"
                ),
                args![tenant, id, now, n],
            )
            .await?
        }
    };
    decode(&rows, message_from_row)
}

/// Marks messages delivering until `lock_until`.
async fn claim<E: Exec>(
    e: &mut E,
    messages: &[&Message],
    lock_until: OffsetDateTime,
) -> Result<(), StoreError> {
    match E::DIALECT {
        // One statement for the whole claim, the keys as arrays.
        Dialect::Postgres => {
            if messages.is_empty() {
                return Ok(());
            }
            let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = messages
                .iter()
                .map(|m| (m.tenant_id.as_uuid(), m.id.as_uuid()))
                .unzip();
            e.run(
                "UPDATE webhook_messages m SET status = 'delivering', locked_until = $3 \
                 FROM unnest($1, $2) AS c (tenant_id, id) \
                 WHERE m.tenant_id = c.tenant_id AND m.id = c.id",
                args![&tenants, &ids, lock_until],
            )
            .await?;
        }
        // In-process statements cost no round trip.
        Dialect::Sqlite => {
            for m in messages {
                e.run(
                    "UPDATE webhook_messages SET status = 'delivering', locked_until = $3 \
                     WHERE tenant_id = $1 AND id = $2",
                    args![m.tenant_id.as_uuid(), m.id.as_uuid(), lock_until],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Records an attempt, its message's new state and the endpoint's circuit, with `events`; with
/// a `refill`, claims the endpoint's next due message in the same transaction and answers it.
pub async fn record_attempt<E: Exec>(
    e: &mut E,
    a: &Attempt,
    outcome: &AttemptOutcome,
    events: &[NewEvent],
    refill: Option<Refill<'_>>,
) -> Result<Option<(Message, Endpoint)>, StoreError> {
    write_attempt(e, a, outcome).await?;
    let changed = count_outcome(e, a, outcome).await?;
    let next = match refill {
        Some(r) => refill_endpoint(e, a, changed, r).await?,
        None => None,
    };
    insert_events(e, events).await?;
    Ok(next)
}

/// The attempt and its message's new state.
async fn write_attempt<E: Exec>(
    e: &mut E,
    a: &Attempt,
    outcome: &AttemptOutcome,
) -> Result<(), StoreError> {
    let (tenant, message) = (a.tenant_id.as_uuid(), a.message_id.as_uuid());
    match E::DIALECT {
        // In one statement: a round trip fewer for every delivery.
        Dialect::Postgres => {
            e.run(
                "WITH attempt AS (INSERT INTO webhook_attempts (tenant_id, id, message_id, \
                 endpoint_id, attempted_at, status_code, latency_ms, error, response_body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) \
                 UPDATE webhook_messages SET status = $10, attempts = attempts + 1, \
                 next_attempt_at = $11, locked_until = NULL, \
                 body = CASE WHEN $12 THEN '' ELSE body END WHERE tenant_id = $1 AND id = $3",
                args![
                    tenant,
                    a.id.as_uuid(),
                    message,
                    a.endpoint_id.as_uuid(),
                    a.attempted_at,
                    a.status_code.map(i64::from),
                    a.latency_ms,
                    a.error.as_deref(),
                    a.response_body.as_deref(),
                    outcome.status.as_str(),
                    outcome.next_attempt_at,
                    outcome.drop_body
                ],
            )
            .await?;
        }
        // SQLite writes nothing inside a `WITH`; in-process statements cost no round trip.
        Dialect::Sqlite => {
            e.run(
                "INSERT INTO webhook_attempts (tenant_id, id, message_id, endpoint_id, \
                 attempted_at, status_code, latency_ms, error, response_body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    tenant,
                    a.id.as_uuid(),
                    message,
                    a.endpoint_id.as_uuid(),
                    a.attempted_at,
                    a.status_code.map(i64::from),
                    a.latency_ms,
                    a.error.as_deref(),
                    a.response_body.as_deref()
                ],
            )
            .await?;
            e.run(
                "UPDATE webhook_messages SET status = $3, attempts = attempts + 1, \
                 next_attempt_at = $4, locked_until = NULL, \
                 body = CASE WHEN $5 THEN '' ELSE body END WHERE tenant_id = $1 AND id = $2",
                args![
                    tenant,
                    message,
                    outcome.status.as_str(),
                    outcome.next_attempt_at,
                    outcome.drop_body
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// Moves the endpoint's circuit by the attempt's outcome; answers the endpoint as changed, or
/// none when the outcome changes nothing. The circuit counts in the row (on PostgreSQL locked
/// by this update until the commit), so concurrent attempts of one endpoint on any node add
/// up. A success that changes nothing (no failures to clear) leaves the row alone: the
/// endpoint's attempts then commit side by side instead of one after another.
async fn count_outcome<E: Exec>(
    e: &mut E,
    a: &Attempt,
    outcome: &AttemptOutcome,
) -> Result<Option<E::Row>, StoreError> {
    e.opt(
        concat!(
            "UPDATE webhook_endpoints SET \
             failing_since = CASE WHEN $3 THEN NULL ELSE COALESCE(failing_since, $4) END, \
             consecutive_failures = CASE WHEN $3 THEN 0 ELSE consecutive_failures + 1 END, \
             paused_until = CASE WHEN $3 THEN NULL \
             WHEN consecutive_failures + 1 >= $6 THEN $7 ELSE paused_until END, \
             enabled = CASE WHEN $5 IS NULL THEN enabled ELSE false END, \
             disabled_reason = COALESCE($5, disabled_reason), \
             version = CASE WHEN $5 IS NULL THEN version ELSE version + 1 END \
             WHERE tenant_id = $1 AND id = $2 AND NOT ($3 AND $5 IS NULL \
             AND consecutive_failures = 0 AND failing_since IS NULL AND paused_until IS NULL) \
             RETURNING ",
            endpoint_cols!()
        ),
        args![
            a.tenant_id.as_uuid(),
            a.endpoint_id.as_uuid(),
            outcome.endpoint_ok,
            a.attempted_at,
            outcome.disable.as_deref(),
            outcome.circuit_failures,
            outcome.open_until
        ],
    )
    .await
}

/// After an attempt: the endpoint's next due message, claimed, if the endpoint (as it is now,
/// circuit included) has a free slot.
///
/// A refill replaces this attempt's message (no longer in flight in this transaction; the
/// worker refills only while its claim had not lapsed) one for one, so it never raises the
/// endpoint's or the shop's count. On PostgreSQL it holds the endpoint row shared, so the
/// endpoint's attempts refill side by side while no claim counts the endpoint and no change to
/// it is half seen; when the row is held otherwise, there is no refill and the next claim
/// serves the endpoint.
async fn refill_endpoint<E: Exec>(
    e: &mut E,
    a: &Attempt,
    changed: Option<E::Row>,
    r: Refill<'_>,
) -> Result<Option<(Message, Endpoint)>, StoreError> {
    let row = if let Some(row) = changed {
        row
    } else {
        let Some(row) = e
            .opt(
                pg_lock!(
                    E,
                    concat!(
                        "SELECT ",
                        endpoint_cols!(),
                        " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
                    ),
                    " FOR SHARE SKIP LOCKED"
                ),
                args![a.tenant_id.as_uuid(), a.endpoint_id.as_uuid()],
            )
            .await?
        else {
            return Ok(None);
        };
        row
    };
    let endpoint = endpoint_from_row(&row)?;
    match E::DIALECT {
        Dialect::Postgres => refill_in_one(e, endpoint, r).await,
        Dialect::Sqlite => refill_in_steps(e, endpoint, r).await,
    }
}

/// PostgreSQL's refill: the counts' check (for limits that shrank: a circuit that opened, a
/// lower configuration), the next due message and its claim, in one statement.
async fn refill_in_one<E: Exec>(
    e: &mut E,
    endpoint: Endpoint,
    r: Refill<'_>,
) -> Result<Option<(Message, Endpoint)>, StoreError> {
    let next = e
        .opt(
            concat!(
                "WITH room AS (SELECT \
                   (SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' AND locked_until > $3) < $6 \
                   AND (SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND status = 'delivering' AND locked_until > $3) < $7 AS free), \
                 next AS (SELECT id AS next_id FROM (",
                due_sql!(),
                " AND (SELECT free FROM room) ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) d) \
                 UPDATE webhook_messages m SET status = 'delivering', locked_until = $4 FROM next \
                 WHERE m.tenant_id = $1 AND m.id = next.next_id RETURNING ",
                message_cols!()
            ),
            args![
                endpoint.tenant_id.as_uuid(),
                endpoint.id.as_uuid(),
                r.now,
                r.lock_until,
                1 + r.policy.max_in_flight,
                endpoint.slots(r.policy, r.now),
                r.policy.shop_max_in_flight
            ],
        )
        .await?;
    match next {
        Some(row) => Ok(Some((message_from_row(&row)?, endpoint))),
        None => Ok(None),
    }
}

/// SQLite's refill: the counts' check (for limits that shrank: a circuit that opened, a lower
/// configuration), then the next due message, claimed (in-process statements cost no round
/// trip).
async fn refill_in_steps<E: Exec>(
    e: &mut E,
    endpoint: Endpoint,
    r: Refill<'_>,
) -> Result<Option<(Message, Endpoint)>, StoreError> {
    let free = endpoint.slots(r.policy, r.now) - busy(e, &endpoint, r.now).await?;
    if free < 1 || shop_busy(e, endpoint.tenant_id, r.now).await? >= r.policy.shop_max_in_flight {
        return Ok(None);
    }
    let Some(m) = due_of(e, &endpoint, r.now, 1, r.policy)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    claim(e, &[&m], r.lock_until).await?;
    Ok(Some((m, endpoint)))
}
