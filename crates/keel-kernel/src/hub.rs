//! The node's event hub: committed events fanned out to this node's realtime subscribers (SSE
//! streams, GraphQL subscriptions), ADR 0040.
//!
//! The hub is fed only with events that left the outbox (the relay in process, or the node's
//! tail of the bus in cluster mode), so a subscriber never sees uncommitted work. Each
//! subscriber has its own bounded channel of an exact size: a subscriber that falls that far
//! behind is cut off ([`Delivery::SlowConsumer`]) instead of being buffered without bound,
//! and the others keep receiving. Events reach a subscriber in the order the hub is fed,
//! which is outbox order.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::mpsc;

use crate::{TenantId, event::RecordedEvent};

/// Which of its tenant's events a subscriber wants.
pub type Filter = Box<dyn Fn(&RecordedEvent) -> bool + Send + Sync>;

struct Tap {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<Arc<RecordedEvent>>,
    overflowed: Arc<AtomicBool>,
}

/// This node's subscribers, by tenant.
pub struct EventHub {
    taps: RwLock<HashMap<TenantId, Vec<Tap>>>,
    next_id: AtomicU64,
    /// Events a subscriber may have waiting before it is cut off.
    buffer: usize,
    count: AtomicUsize,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("buffer", &self.buffer)
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event(Arc<RecordedEvent>),
    /// The subscriber fell `buffer` events behind and was cut off; nothing more comes.
    SlowConsumer,
}

impl EventHub {
    /// A hub whose subscribers may each have exactly `buffer` events waiting (at least 1).
    pub fn new(buffer: usize) -> Self {
        Self {
            taps: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            buffer: buffer.max(1),
            count: AtomicUsize::new(0),
        }
    }

    /// Subscribers on this node now.
    pub fn subscribers(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Nobody listens: the relay need not keep the events it relays.
    pub fn is_idle(&self) -> bool {
        self.subscribers() == 0
    }

    /// Subscribes to `tenant`'s events that pass `filter`, from now on.
    pub fn subscribe(self: &Arc<Self>, tenant: TenantId, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.taps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant)
            .or_default()
            .push(Tap {
                id,
                filter,
                tx,
                overflowed: overflowed.clone(),
            });
        self.count.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx,
            overflowed,
            hub: self.clone(),
            tenant,
            id,
        }
    }

    /// Hands committed events, in outbox order, to the subscribers that want them. Never
    /// waits: a subscriber whose buffer is full is cut off.
    pub fn publish(&self, events: &[RecordedEvent]) {
        if self.is_idle() {
            return;
        }
        let mut cut = Vec::new();
        {
            let taps = self
                .taps
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for event in events {
                let Some(taps) = taps.get(&event.tenant_id) else {
                    continue;
                };
                let mut shared: Option<Arc<RecordedEvent>> = None;
                for tap in taps {
                    if tap.overflowed.load(Ordering::Relaxed) || !(tap.filter)(event) {
                        continue;
                    }
                    let e = shared
                        .get_or_insert_with(|| Arc::new(event.clone()))
                        .clone();
                    match tap.tx.try_send(e) {
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tap.overflowed.store(true, Ordering::Relaxed);
                            cut.push((event.tenant_id, tap.id));
                        }
                    }
                }
            }
        }
        for (tenant, id) in cut {
            // Dropping the tap's sender ends the subscriber's stream at once.
            self.remove(tenant, id);
        }
    }

    /// Cuts off every subscriber (each gets [`Delivery::SlowConsumer`]): the feed may have
    /// lost events, and they resume from the event log.
    pub fn cut_all(&self) {
        let mut taps = self
            .taps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tap in taps.values().flatten() {
            tap.overflowed.store(true, Ordering::Relaxed);
        }
        let gone: usize = taps.values().map(Vec::len).sum();
        taps.clear();
        self.count.fetch_sub(gone, Ordering::Relaxed);
    }

    fn remove(&self, tenant: TenantId, id: u64) {
        let mut taps = self
            .taps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = taps.get_mut(&tenant) {
            let before = list.len();
            list.retain(|t| t.id != id);
            if list.len() < before {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                taps.remove(&tenant);
            }
        }
    }
}

/// One subscriber's stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Arc<RecordedEvent>>,
    overflowed: Arc<AtomicBool>,
    hub: Arc<EventHub>,
    tenant: TenantId,
    id: u64,
}

impl Subscription {
    /// The next event, or [`Delivery::SlowConsumer`] once the subscriber was cut off; `None`
    /// only if the hub dropped the subscription otherwise (it does not).
    pub async fn recv(&mut self) -> Option<Delivery> {
        if self.overflowed.load(Ordering::Relaxed) {
            return Some(Delivery::SlowConsumer);
        }
        match self.rx.recv().await {
            // The buffer was full when the hub cut it off: nothing already waiting is sent,
            // so the subscriber learns at once that it lost events.
            _ if self.overflowed.load(Ordering::Relaxed) => Some(Delivery::SlowConsumer),
            Some(e) => Some(Delivery::Event(e)),
            None => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.tenant, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    fn event(tenant: TenantId, kind: &str) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new(),
            tenant_id: tenant,
            event_type: kind.to_owned(),
            payload: serde_json::json!({}),
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn all() -> Filter {
        Box::new(|_| true)
    }

    #[tokio::test]
    async fn subscribers_get_their_tenants_wanted_events_in_order() {
        let hub = Arc::new(EventHub::new(8));
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut orders = hub.subscribe(a, Box::new(|e| e.event_type.starts_with("order.")));
        let mut other = hub.subscribe(b, all());
        let sent = [
            event(a, "order.placed"),
            event(a, "cart.created"),
            event(b, "order.placed"),
            event(a, "order.paid"),
        ];
        hub.publish(&sent);
        let mut got = Vec::new();
        for _ in 0..2 {
            match orders.recv().await {
                Some(Delivery::Event(e)) => got.push(e.id),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        assert_eq!(got, vec![sent[0].id, sent[3].id]);
        assert_eq!(
            other.recv().await,
            Some(Delivery::Event(Arc::new(sent[2].clone())))
        );
    }

    #[tokio::test]
    async fn cutting_all_off_ends_every_subscriber_and_later_ones_receive() {
        let hub = Arc::new(EventHub::new(8));
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut first = hub.subscribe(a, all());
        let mut second = hub.subscribe(b, all());
        hub.publish(&[event(a, "order.placed")]);
        hub.cut_all();
        assert_eq!(hub.subscribers(), 0);
        // What was waiting is not sent: the subscriber learns at once that it lost events.
        assert_eq!(first.recv().await, Some(Delivery::SlowConsumer));
        assert_eq!(second.recv().await, Some(Delivery::SlowConsumer));
        let mut later = hub.subscribe(a, all());
        let sent = event(a, "order.paid");
        hub.publish(std::slice::from_ref(&sent));
        assert_eq!(later.recv().await, Some(Delivery::Event(Arc::new(sent))));
        drop((first, second));
        assert_eq!(
            hub.subscribers(),
            1,
            "dropping the cut ones counts nothing twice"
        );
    }

    #[tokio::test]
    async fn a_subscriber_at_its_buffer_bound_is_cut_off_and_others_keep_receiving() {
        let hub = Arc::new(EventHub::new(3));
        let t = TenantId::new();
        let mut slow = hub.subscribe(t, all());
        let mut fast = hub.subscribe(t, all());
        for _ in 0..3 {
            hub.publish(&[event(t, "order.placed")]);
            assert!(matches!(fast.recv().await, Some(Delivery::Event(_))));
        }
        assert_eq!(hub.subscribers(), 2, "three waiting events fit the bound");
        hub.publish(&[event(t, "order.paid")]);
        assert_eq!(slow.recv().await, Some(Delivery::SlowConsumer));
        assert_eq!(slow.recv().await, Some(Delivery::SlowConsumer));
        assert!(
            matches!(fast.recv().await, Some(Delivery::Event(e)) if e.event_type == "order.paid")
        );
        assert_eq!(hub.subscribers(), 1);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let hub = Arc::new(EventHub::new(1));
        let t = TenantId::new();
        let s = hub.subscribe(t, all());
        assert!(!hub.is_idle());
        drop(s);
        assert!(hub.is_idle());
        hub.publish(&[event(t, "order.placed")]);
    }
}
