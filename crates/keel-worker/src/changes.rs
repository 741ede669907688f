//! Cross-node invalidation over core NATS (issue 25, ADR 0041): each node announces its
//! writes on one subject (outside the event stream: nothing is stored or replayed) and drops
//! its copies when another node announces one. Announcing never waits on the bus: a bounded
//! queue feeds one publishing task, and a full queue or a bus that is down loses the
//! announcement, leaving the exact time bounds to apply.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use futures_util::StreamExt as _;
use keel_kernel::{
    changes::{Change, ChangeFeed},
    health::StoreCounter,
};
use serde::{Deserialize, Serialize};

/// Announcements waiting to be published, at most (more are dropped and counted).
pub const QUEUE: usize = 4096;

pub use async_nats::Client as NatsClient;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    change: Change,
}

#[derive(Debug, Default)]
struct Counts {
    announced: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
}

/// This node's side of the change subject.
#[derive(Debug, Clone)]
pub struct NatsChanges {
    node: Arc<str>,
    queue: tokio::sync::mpsc::Sender<Change>,
    counts: Arc<Counts>,
}

impl NatsChanges {
    /// Starts the publishing task (it ends when every clone of the answer is dropped).
    pub fn start(client: async_nats::Client, subject: String, node: Arc<str>) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Change>(QUEUE);
        let counts = Arc::new(Counts::default());
        let (from, tally) = (node.clone(), counts.clone());
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let envelope = Envelope {
                    node: from.to_string(),
                    change,
                };
                let Ok(payload) = serde_json::to_vec(&envelope) else {
                    continue;
                };
                match client.publish(subject.clone(), payload.into()).await {
                    Ok(()) => tally.announced.fetch_add(1, Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot announce a change to the other nodes");
                        tally.dropped.fetch_add(1, Relaxed)
                    }
                };
            }
        });
        Self {
            node,
            queue,
            counts,
        }
    }

    /// Applies every change another node announces, until the subscription ends (the
    /// client resubscribes by itself after a reconnect).
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn listen(
        &self,
        client: &async_nats::Client,
        subject: String,
        apply: impl Fn(Change) + Send,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut sub = client.subscribe(subject).await?;
        while let Some(m) = sub.next().await {
            match serde_json::from_slice::<Envelope>(&m.payload) {
                // Its own writes the node dropped already (a key rotation is a command's, which
                // may run under the node's name: always applied).
                Ok(e) if *e.node == *self.node && e.change != Change::SigningKeys => {}
                Ok(e) => {
                    apply(e.change);
                    self.counts.received.fetch_add(1, Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "unreadable change announcement ignored"),
            }
        }
        Ok(())
    }
}

/// Announces one change and waits until the server has it (a one-shot command such as
/// `keel keys rotate`).
///
/// # Errors
/// When the bus does not take it.
pub async fn announce_once(
    client: &async_nats::Client,
    subject: String,
    node: &str,
    change: Change,
) -> Result<(), String> {
    let payload = serde_json::to_vec(&Envelope {
        node: node.to_owned(),
        change,
    })
    .map_err(|e| e.to_string())?;
    client
        .publish(subject, payload.into())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}

impl ChangeFeed for NatsChanges {
    fn announce(&self, change: Change) {
        if self.queue.try_send(change).is_err() {
            self.counts.dropped.fetch_add(1, Relaxed);
        }
    }

    fn counters(&self) -> Vec<StoreCounter> {
        vec![
            StoreCounter {
                name: "keel_cluster_changes_announced_total",
                help: "Writes this node announced to the other nodes (cache invalidation).",
                value: self.counts.announced.load(Relaxed),
            },
            StoreCounter {
                name: "keel_cluster_changes_dropped_total",
                help: "Announcements lost (queue full or bus down): the exact cache time bounds applied instead.",
                value: self.counts.dropped.load(Relaxed),
            },
            StoreCounter {
                name: "keel_cluster_changes_received_total",
                help: "Other nodes' writes this node applied to its caches.",
                value: self.counts.received.load(Relaxed),
            },
        ]
    }
}
