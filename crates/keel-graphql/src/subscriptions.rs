//! Subscriptions: committed events from the node's hub, filtered per subscriber; a
//! subscriber that falls the exact buffer behind is cut off and its WebSocket closed with
//! 4410 (`slow consumer`) instead of being buffered without bound.

use std::sync::Arc;

use async_graphql::Context;
use futures_util::Stream;
use keel_http::{AppState, problem::ProblemKind};
use keel_kernel::{
    TenantId,
    event::RecordedEvent,
    hub::{Delivery, Subscription},
};

use crate::{access::AdminViewer, errors::coded, types::Event};

/// The close code of a subscriber cut off at its buffer.
pub const SLOW_CONSUMER: u16 = crate::ws::close::SLOW_CONSUMER;

/// One WebSocket connection's way to close itself from a subscription.
#[derive(Debug, Clone)]
pub struct Closer(pub Arc<tokio::sync::watch::Sender<Option<(u16, &'static str)>>>);

impl Closer {
    pub fn close(&self, code: u16, reason: &'static str) {
        self.0.send_replace(Some((code, reason)));
    }
}

/// `order.placed` exact, or `order.*` a prefix: checked like REST's `?type=`.
pub fn type_prefix(t: &str) -> async_graphql::Result<&str> {
    let prefix = t.strip_suffix('*').unwrap_or(t);
    let valid = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if valid {
        Ok(prefix)
    } else {
        Err(coded(
            ProblemKind::BAD_REQUEST,
            "An event type is exact (`order.paid`) or a prefix ending in `*` (`order.*`).",
        ))
    }
}

/// Event types wanted: exact ones and prefixes (`*` kept to tell them apart).
pub fn types(types: Vec<String>) -> async_graphql::Result<Vec<String>> {
    for t in &types {
        type_prefix(t)?;
    }
    Ok(types)
}

/// Whether `event_type` is one of `wanted` (all when empty).
pub fn matches(wanted: &[String], event_type: &str) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| match w.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => w == event_type,
        })
}

/// Events of `tenant` passing `filter`, from now on, as GraphQL events.
pub fn stream<F: Fn(&RecordedEvent) -> bool + Send + Sync + 'static>(
    ctx: &Context<'_>,
    tenant: TenantId,
    filter: F,
) -> async_graphql::Result<impl Stream<Item = Event> + use<F>> {
    let state = ctx.data::<AppState>()?;
    let subscription = state.realtime.hub.subscribe(tenant, Box::new(filter));
    let closer = ctx.data_opt::<Closer>().cloned();
    Ok(futures_util::stream::unfold(
        (subscription, closer),
        |(mut sub, closer): (Subscription, Option<Closer>)| async move {
            match sub.recv().await? {
                Delivery::Event(e) => Some((Event::from(e.as_ref()), (sub, closer))),
                Delivery::SlowConsumer => {
                    if let Some(c) = &closer {
                        c.close(SLOW_CONSUMER, "slow consumer");
                    }
                    None
                }
            }
        },
    ))
}

/// The admin caller's shop's events passing `filter`.
pub fn admin<F: Fn(&RecordedEvent) -> bool + Send + Sync + 'static>(
    ctx: &Context<'_>,
    filter: F,
) -> async_graphql::Result<impl Stream<Item = Event> + use<F>> {
    let tenant = ctx.data::<AdminViewer>()?.0.tenant_id;
    stream(ctx, tenant, filter)
}

/// Live presence: who views or edits a resource, kept in this node's memory with an exact
/// time without a heartbeat after which an entry is gone.
pub mod presence {
    use std::{
        collections::HashMap,
        sync::{Mutex, PoisonError},
        time::{Duration, Instant},
    };

    use async_graphql::{Context, ID, SimpleObject};
    use futures_util::Stream;
    use keel_http::{auth::AdminActor, problem::ProblemKind};
    use keel_kernel::TenantId;
    use tokio::sync::watch;

    use crate::{admin::parts, errors::coded};

    /// One staff member (or key) on a resource.
    #[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
    pub struct Present {
        /// `usr_…` (or `key_…` for a secret key).
        pub user_id: ID,
        /// The staff member's email (a key's id).
        pub display_name: String,
        /// `viewing` or `editing`.
        pub mode: String,
    }

    struct Entry {
        present: Present,
        until: Instant,
    }

    type Key = (TenantId, String);
    /// Who is on a resource, and the channel its watchers follow.
    type Room = (HashMap<String, Entry>, watch::Sender<u64>);

    /// The node's presence: per resource, who and until when, and a channel its watchers
    /// follow; at most an exact number of resources per shop.
    pub struct Presence {
        ttl: Duration,
        rooms_per_shop: usize,
        rooms: Mutex<HashMap<Key, Room>>,
    }

    impl std::fmt::Debug for Presence {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Presence")
                .field("ttl", &self.ttl)
                .field("rooms_per_shop", &self.rooms_per_shop)
                .finish_non_exhaustive()
        }
    }

    fn full() -> async_graphql::Error {
        coded(
            ProblemKind::RATE_LIMITED,
            "The shop has presence on its limit of resources on this node.",
        )
    }

    impl Presence {
        pub fn new(ttl: Duration, rooms_per_shop: usize) -> Self {
            Self {
                ttl,
                rooms_per_shop,
                rooms: Mutex::new(HashMap::new()),
            }
        }

        /// The room of `key`, made if the shop has room for one more.
        fn room<'r>(
            &self,
            rooms: &'r mut HashMap<Key, Room>,
            key: &Key,
        ) -> async_graphql::Result<&'r mut Room> {
            if !rooms.contains_key(key) {
                let now = Instant::now();
                // Rooms nobody is in or watches go first.
                rooms.retain(|_, (room, tx)| {
                    room.retain(|_, e| e.until > now);
                    !room.is_empty() || tx.receiver_count() > 0
                });
                let shop_rooms = rooms.keys().filter(|(t, _)| *t == key.0).count();
                if shop_rooms >= self.rooms_per_shop {
                    return Err(full());
                }
            }
            Ok(rooms
                .entry(key.clone())
                .or_insert_with(|| (HashMap::new(), watch::channel(0).0)))
        }

        fn change(
            &self,
            key: &Key,
            f: impl FnOnce(&mut HashMap<String, Entry>) -> bool,
        ) -> async_graphql::Result<()> {
            let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
            let (room, tx) = self.room(&mut rooms, key)?;
            let now = Instant::now();
            room.retain(|_, e| e.until > now);
            if f(room) {
                tx.send_modify(|n| *n += 1);
            }
            Ok(())
        }

        /// Who is on `key` now, and the instant the first of them expires.
        fn now(&self, key: &Key) -> (Vec<Present>, Option<Instant>) {
            let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let Some((room, _)) = rooms.get(key) else {
                return (Vec::new(), None);
            };
            let mut live: Vec<&Entry> = room.values().filter(|e| e.until > now).collect();
            live.sort_by(|a, b| a.present.user_id.0.cmp(&b.present.user_id.0));
            let next = live.iter().map(|e| e.until).min();
            (live.into_iter().map(|e| e.present.clone()).collect(), next)
        }

        fn follow(&self, key: &Key) -> async_graphql::Result<watch::Receiver<u64>> {
            let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(self.room(&mut rooms, key)?.1.subscribe())
        }
    }

    /// A product or order of the caller's shop that the caller may read, as a room key.
    async fn resource(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<Key> {
        let well_formed =
            id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let (state, viewer) = parts(ctx)?;
        let tenant = viewer.0.tenant_id;
        let exists =
            if let (true, Ok(p)) = (well_formed, id.parse::<keel_catalog::domain::ProductId>()) {
                state.catalog.get_product(tenant, p).await.is_ok()
            } else if let (true, Ok(o)) = (well_formed, id.parse::<keel_orders::order::OrderId>()) {
                if !crate::access::Field("Query.order").allows(ctx) {
                    return Err(crate::errors::forbidden(
                        "presence on orders (`orders:read`)",
                    ));
                }
                state.orders.order_detail(tenant, o).await.is_ok()
            } else {
                return Err(coded(
                    ProblemKind::BAD_REQUEST,
                    "`resource` is a product or order id (`prod_…`, `ord_…`).",
                ));
            };
        if exists {
            Ok((tenant, id.0.clone()))
        } else {
            Err(crate::errors::not_found())
        }
    }

    /// The caller: its id, and as a display name the part of a staff member's email before
    /// `@` (a key shows its id).
    async fn who(ctx: &Context<'_>) -> async_graphql::Result<(String, String)> {
        let (state, viewer) = parts(ctx)?;
        Ok(match &viewer.0.actor {
            AdminActor::Staff(s) => {
                let user = state
                    .auth
                    .me(s)
                    .await
                    .map_err(|e| crate::errors::from_problem(&e.into()))?;
                let email = user.email.as_str();
                let name = email.split_once('@').map_or(email, |(local, _)| local);
                (s.user_id.to_string(), name.to_owned())
            }
            AdminActor::Key(k) => (k.key_id.to_string(), k.key_id.to_string()),
        })
    }

    pub async fn enter(ctx: &Context<'_>, id: &ID, mode: &str) -> async_graphql::Result<()> {
        if mode != "viewing" && mode != "editing" {
            return Err(coded(
                ProblemKind::BAD_REQUEST,
                "`mode` is `viewing` or `editing`.",
            ));
        }
        let key = resource(ctx, id).await?;
        let presence = ctx.data::<std::sync::Arc<Presence>>()?;
        let (user, name) = who(ctx).await?;
        let until = Instant::now() + presence.ttl;
        let present = Present {
            user_id: ID(user.clone()),
            display_name: name,
            mode: mode.to_owned(),
        };
        presence.change(&key, |room| {
            let changed = room.get(&user).is_none_or(|e| e.present != present);
            room.insert(user, Entry { present, until });
            changed
        })
    }

    pub async fn leave(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<()> {
        let key = resource(ctx, id).await?;
        let presence = ctx.data::<std::sync::Arc<Presence>>()?;
        let (user, _) = who(ctx).await?;
        presence.change(&key, |room| room.remove(&user).is_some())
    }

    /// The list now, then again on every change and every expiry.
    pub async fn watch(
        ctx: &Context<'_>,
        id: &ID,
    ) -> async_graphql::Result<impl Stream<Item = Vec<Present>> + use<>> {
        let key = resource(ctx, id).await?;
        let presence = ctx.data::<std::sync::Arc<Presence>>()?.clone();
        let rx = presence.follow(&key)?;
        Ok(futures_util::stream::unfold(
            (presence, key, rx, None::<Vec<Present>>),
            |(presence, key, mut rx, last)| async move {
                loop {
                    let (list, next) = presence.now(&key);
                    if last.as_ref() != Some(&list) {
                        return Some((list.clone(), (presence, key, rx, Some(list))));
                    }
                    let expiry = async {
                        match next {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        () = expiry => {}
                    }
                }
            },
        ))
    }
}
