//! Scheduled jobs (issue 25, ADR 0041): housekeeping, unpaid-order expiry, retention and the
//! payment jobs, each on its exact period and each on one node at a time through its lease
//! ([`keel_worker::schedule`]). `keel maintenance prune` runs the maintenance parts once.

use std::sync::Arc;

use anyhow::Context as _;
use keel_kernel::clock::{Clock, SystemClock};

use crate::{Settings, Store, orders_service};

/// The scheduled jobs, by the name their leases and runs are recorded under.
pub const HOUSEKEEPING: &str = "housekeeping";
pub const UNPAID_ORDERS: &str = "unpaid-orders";
pub const RETENTION: &str = "retention";
pub const PAYMENTS: &str = "payments";
pub const JOBS: [&str; 4] = [HOUSEKEEPING, UNPAID_ORDERS, RETENTION, PAYMENTS];

/// Rows removed per batch of a job (it repeats while batches are full).
const BATCH: i64 = 100;

fn full(n: u64) -> bool {
    n >= u64::try_from(BATCH).expect("a positive batch")
}

/// Starts every scheduled job on this node: each runs where its lease is held.
pub fn spawn(
    scheduler: &keel_worker::schedule::Scheduler,
    settings: &Settings,
    store: &Store,
    payments: &keel_payments::service::PaymentsService,
) -> Vec<tokio::task::JoinHandle<()>> {
    let every = settings.maintenance_interval;
    let job = |name: &'static str,
               period: std::time::Duration,
               part: fn(Settings, Store, time::OffsetDateTime) -> Part| {
        let (settings, store) = (settings.clone(), store.clone());
        tokio::spawn(scheduler.clone().run(name, period, move || {
            part(settings.clone(), store.clone(), SystemClock.now())
        }))
    };
    let payments = payments.clone();
    let batch = settings.payments.reconcile_batch;
    vec![
        job(HOUSEKEEPING, every, |s, st, now| {
            Box::pin(async move {
                housekeeping(&s, &st, now)
                    .await
                    .map(|r| r.total())
                    .map_err(|e| format!("{e:#}"))
            })
        }),
        job(UNPAID_ORDERS, every, |s, st, now| {
            Box::pin(async move {
                expire_unpaid(&s, &st, now)
                    .await
                    .map(|r| r.total())
                    .map_err(|e| format!("{e:#}"))
            })
        }),
        job(RETENTION, every, |s, st, now| {
            Box::pin(async move {
                retention(&s, &st, now)
                    .await
                    .map(|r| r.total())
                    .map_err(|e| format!("{e:#}"))
            })
        }),
        tokio::spawn(scheduler.clone().run(
            PAYMENTS,
            settings.payments.reconcile_interval,
            move || {
                let payments = payments.clone();
                async move { Ok(payments_pass(&payments, batch).await) }
            },
        )),
    ]
}

/// One job's work, boxed so that the jobs share one spawner.
type Part = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send>>;

/// One pass of the payment jobs: reconciliation, then refund retries, each repeating while
/// its batches are full; failures are logged and tried again next pass.
pub async fn payments_pass(payments: &keel_payments::service::PaymentsService, batch: i64) -> u64 {
    let full = |n: u64| n >= u64::try_from(batch).unwrap_or(u64::MAX);
    let mut done = 0;
    loop {
        match payments.reconcile(batch).await {
            Ok(r) => {
                done += r.checked;
                if r.checked > 0 {
                    tracing::info!(
                        checked = r.checked,
                        settled = r.settled,
                        "payment reconciliation pass"
                    );
                }
                if !full(r.checked) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "payment reconciliation failed");
                break;
            }
        }
    }
    loop {
        match payments.retry_refunds(batch).await {
            Ok(r) => {
                done += r.refunds_tried;
                if r.refunds_tried > 0 {
                    tracing::info!(
                        tried = r.refunds_tried,
                        settled = r.refunds_settled,
                        "refund retry pass"
                    );
                }
                if !full(r.refunds_tried) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "refund retries failed");
                break;
            }
        }
    }
    done
}
/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaintenanceReport {
    pub login_attempts: u64,
    pub idempotency_keys: u64,
    pub expired_orders: u64,
    /// Relayed events and processed-event rows past `KEEL_EVENT_RETENTION_S`.
    pub events: u64,
    /// Webhook messages (with their attempts) finished longer ago than
    /// `KEEL_WEBHOOKS__RETENTION_S`.
    pub webhook_messages: u64,
    /// Carts idle longer than `KEEL_CART_IDLE_TTL_S`.
    pub carts: u64,
    /// Records of job runs older than `KEEL_EVENT_RETENTION_S`.
    pub job_runs: u64,
}

impl MaintenanceReport {
    /// Rows removed or changed in all.
    pub fn total(&self) -> u64 {
        self.login_attempts
            + self.idempotency_keys
            + self.expired_orders
            + self.events
            + self.webhook_messages
            + self.carts
            + self.job_runs
    }

    fn and(self, o: Self) -> Self {
        Self {
            login_attempts: self.login_attempts + o.login_attempts,
            idempotency_keys: self.idempotency_keys + o.idempotency_keys,
            expired_orders: self.expired_orders + o.expired_orders,
            events: self.events + o.events,
            webhook_messages: self.webhook_messages + o.webhook_messages,
            carts: self.carts + o.carts,
            job_runs: self.job_runs + o.job_runs,
        }
    }
}

/// Repeats `batch` while it fills a batch; answers the rows it changed in all.
async fn drain<F, Fut>(what: &'static str, mut batch: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = batch().await.with_context(|| format!("cannot {what}"))?;
        total += n;
        if !full(n) {
            return Ok(total);
        }
    }
}

/// Login attempts that left the login window, idempotency keys past their time, idle carts
/// and old job run records.
pub async fn housekeeping(
    settings: &Settings,
    store: &Store,
    now: time::OffsetDateTime,
) -> anyhow::Result<MaintenanceReport> {
    let login_attempts = store
        .throttle()
        .prune(now - settings.auth.throttle_horizon())
        .await
        .context("cannot prune login attempts")?;
    let idempotency_keys = store
        .idempotency()
        .purge(now)
        .await
        .context("cannot purge idempotency keys")?;
    let orders = orders_service(
        settings,
        store,
        Arc::new(keel_kernel::clock::ManualClock::new(now)),
    );
    let carts = drain("prune idle carts", || async {
        orders.prune_carts(BATCH).await.map_err(anyhow::Error::msg)
    })
    .await?;
    let job_runs = drain("prune job runs", || async {
        Ok(store
            .leases()
            .prune_runs(now - settings.event_retention, BATCH)
            .await?)
    })
    .await?;
    Ok(MaintenanceReport {
        login_attempts,
        idempotency_keys,
        carts,
        job_runs,
        ..MaintenanceReport::default()
    })
}

/// Cancels unpaid orders whose time ran out, releasing their stock.
pub async fn expire_unpaid(
    settings: &Settings,
    store: &Store,
    now: time::OffsetDateTime,
) -> anyhow::Result<MaintenanceReport> {
    let orders = orders_service(
        settings,
        store,
        Arc::new(keel_kernel::clock::ManualClock::new(now)),
    );
    let expired_orders = drain("expire unpaid orders", || async {
        orders
            .expire_unpaid(BATCH)
            .await
            .map_err(anyhow::Error::msg)
    })
    .await?;
    Ok(MaintenanceReport {
        expired_orders,
        ..MaintenanceReport::default()
    })
}

/// Relayed events and finished webhook messages past their retention.
pub async fn retention(
    settings: &Settings,
    store: &Store,
    now: time::OffsetDateTime,
) -> anyhow::Result<MaintenanceReport> {
    let webhooks = store.webhooks();
    let events = drain("prune relayed events", || async {
        Ok(webhooks
            .prune_events(now - settings.event_retention, BATCH)
            .await?)
    })
    .await?;
    let webhook_messages = drain("prune webhook messages", || async {
        Ok(webhooks
            .prune_messages(now - settings.webhooks.retention, BATCH)
            .await?)
    })
    .await?;
    Ok(MaintenanceReport {
        events,
        webhook_messages,
        ..MaintenanceReport::default()
    })
}

/// One maintenance pass, every part at once: run by `keel maintenance prune` (`serve` runs
/// the parts as separate scheduled jobs).
pub async fn maintenance_pass(
    settings: &Settings,
    store: &Store,
    now: time::OffsetDateTime,
) -> anyhow::Result<MaintenanceReport> {
    Ok(housekeeping(settings, store, now)
        .await?
        .and(expire_unpaid(settings, store, now).await?)
        .and(retention(settings, store, now).await?))
}
