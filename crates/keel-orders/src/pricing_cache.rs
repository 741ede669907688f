//! The pricing inputs of cart answers as this node last read them (ADR 0021).
//!
//! Every cart answer is priced with the shop's setup (settings, the address's tax rate, the
//! chosen shipping option, the promotion): one read per answer, five or six per order, the
//! same few records for every cart of a shop. This keeps what a lookup found for an exact
//! time, by tenant and lookup. Two rules keep it honest:
//!
//! - **Read-your-writes on this node.** Every setup write through this node's service moves
//!   the generation (after the write, before it answers); an entry is served only while the
//!   generation it was read under is current, and that generation is taken *before* the read,
//!   so a read that raced a write is never served as current.
//! - **Checkout never uses it.** The order's totals are priced from a fresh read (as its unit
//!   prices are), so what is charged is the setup at the moment of checkout on every node; a
//!   change made through another node shows in that node's cart answers within the time.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use keel_kernel::{TenantId, health::StoreCounter};
use time::{Duration, OffsetDateTime};

use crate::ports::{PricingLookup, PricingRecords};

/// At most this many lookups are kept per node; past it the cache starts afresh. A lookup is
/// made of the cart's address, shipping option and promotion code as the shop's own records
/// matched or not, so the bound is about the shops served and their setups, not a ceiling
/// shoppers can push the node's memory past.
const ENTRIES: usize = 10_000;

#[derive(Debug)]
struct Entry {
    found: PricingRecords,
    read_at: OffsetDateTime,
    generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct PricingCache {
    ttl: Duration,
    generation: AtomicU64,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// By tenant, then by lookup: a hit borrows the cart's lookup rather than building a key (the
/// lookup's strings) on every cart answer.
#[derive(Debug, Default)]
struct Entries {
    by_tenant: HashMap<TenantId, HashMap<PricingLookup, Entry>>,
    len: usize,
}

/// The generation a read was started under: what [`PricingCache::put`] stores it with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadTicket(u64);

impl PricingCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }

    fn enabled(&self) -> bool {
        self.ttl.is_positive()
    }

    pub(crate) fn get(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
        now: OffsetDateTime,
    ) -> Option<PricingRecords> {
        if !self.enabled() {
            return None;
        }
        let current = self.generation.load(Ordering::Acquire);
        let found = {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            entries
                .by_tenant
                .get(&tenant)
                .and_then(|shop| shop.get(lookup))
                .filter(|e| e.generation == current && now < e.read_at + self.ttl)
                .map(|e| e.found.clone())
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// For `/metrics`.
    pub(crate) fn counters(&self) -> Vec<StoreCounter> {
        vec![
            StoreCounter {
                name: "keel_pricing_cache_hits_total",
                help: "Cart answers priced with this node's read of the pricing setup.",
                value: self.hits.load(Ordering::Relaxed),
            },
            StoreCounter {
                name: "keel_pricing_cache_misses_total",
                help: "Cart answers that read the pricing setup (none kept, expired or dropped by a setup write).",
                value: self.misses.load(Ordering::Relaxed),
            },
        ]
    }

    /// Taken before reading the store.
    pub(crate) fn ticket(&self) -> ReadTicket {
        ReadTicket(self.generation.load(Ordering::Acquire))
    }

    pub(crate) fn put(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
        found: &PricingRecords,
        ticket: ReadTicket,
        read_at: OffsetDateTime,
    ) {
        if !self.enabled() || ticket.0 != self.generation.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let known = entries
            .by_tenant
            .get(&tenant)
            .is_some_and(|shop| shop.contains_key(lookup));
        if !known && entries.len >= ENTRIES {
            *entries = Entries::default();
        }
        let entry = Entry {
            found: found.clone(),
            read_at,
            generation: ticket.0,
        };
        if entries
            .by_tenant
            .entry(tenant)
            .or_default()
            .insert(lookup.clone(), entry)
            .is_none()
        {
            entries.len += 1;
        }
    }

    /// A setup write through this node finished: nothing read before it is served again.
    /// One generation for every tenant: setup writes are rare next to cart answers, and a
    /// shop whose entries are dropped by another shop's write only reads again.
    pub(crate) fn invalidate(&self) {
        if !self.enabled() {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        *self.entries.lock().unwrap_or_else(PoisonError::into_inner) = Entries::default();
    }

    /// A setup write through another node (ADR 0041): the shop's entries go, and no read
    /// started before now is stored (the generation moves); other shops keep theirs.
    pub(crate) fn forget_tenant(&self, tenant: TenantId) {
        if !self.enabled() {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gone) = entries.by_tenant.remove(&tenant) {
            entries.len -= gone.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn lookup(code: &str) -> PricingLookup {
        PricingLookup {
            tax_region: Some("US/NY".into()),
            tax_country: Some("US".into()),
            shipping_option: None,
            promotion_code: Some(code.into()),
        }
    }

    fn found(prices_include_tax: bool) -> PricingRecords {
        PricingRecords {
            settings: crate::ports::PricingSettings { prices_include_tax },
            records: Vec::new(),
        }
    }

    #[test]
    fn an_entry_is_served_for_exactly_its_time_and_only_to_its_tenant_and_lookup() {
        let cache = PricingCache::new(Duration::milliseconds(1_000));
        let (shop, other) = (TenantId::new(), TenantId::new());
        let t0 = datetime!(2026-11-21 12:00 UTC);
        let ticket = cache.ticket();
        cache.put(shop, &lookup("A"), &found(true), ticket, t0);
        assert_eq!(cache.get(shop, &lookup("A"), t0), Some(found(true)));
        let last = t0 + Duration::milliseconds(1_000) - Duration::microseconds(1);
        assert_eq!(cache.get(shop, &lookup("A"), last), Some(found(true)));
        assert_eq!(
            cache.get(shop, &lookup("A"), t0 + Duration::milliseconds(1_000)),
            None,
            "not at the end of its time"
        );
        assert_eq!(cache.get(other, &lookup("A"), t0), None, "another tenant");
        assert_eq!(cache.get(shop, &lookup("B"), t0), None, "another lookup");
    }

    #[test]
    fn a_write_drops_what_was_read_and_what_was_being_read_before_it() {
        let cache = PricingCache::new(Duration::milliseconds(1_000));
        let shop = TenantId::new();
        let t0 = datetime!(2026-11-21 12:00 UTC);
        cache.put(shop, &lookup("A"), &found(false), cache.ticket(), t0);
        let racing = cache.ticket();
        cache.invalidate();
        assert_eq!(
            cache.get(shop, &lookup("A"), t0),
            None,
            "read before the write"
        );
        cache.put(shop, &lookup("A"), &found(false), racing, t0);
        assert_eq!(
            cache.get(shop, &lookup("A"), t0),
            None,
            "a read started before the write is not stored as current"
        );
        cache.put(shop, &lookup("A"), &found(true), cache.ticket(), t0);
        assert_eq!(cache.get(shop, &lookup("A"), t0), Some(found(true)));
    }

    #[test]
    fn past_its_bound_the_cache_starts_afresh() {
        let cache = PricingCache::new(Duration::milliseconds(1_000));
        let (shop, other) = (TenantId::new(), TenantId::new());
        let t0 = datetime!(2026-11-21 12:00 UTC);
        for i in 0..ENTRIES {
            let tenant = if i % 2 == 0 { shop } else { other };
            cache.put(
                tenant,
                &lookup(&i.to_string()),
                &found(true),
                cache.ticket(),
                t0,
            );
        }
        cache.put(shop, &lookup("0"), &found(false), cache.ticket(), t0);
        assert_eq!(
            cache.get(other, &lookup("1"), t0),
            Some(found(true)),
            "a known lookup read again replaces its entry"
        );
        assert_eq!(cache.get(shop, &lookup("0"), t0), Some(found(false)));
        cache.put(shop, &lookup("new"), &found(true), cache.ticket(), t0);
        assert_eq!(
            cache.get(other, &lookup("1"), t0),
            None,
            "the bound was passed"
        );
        assert_eq!(cache.get(shop, &lookup("new"), t0), Some(found(true)));
    }

    #[test]
    fn a_zero_time_keeps_nothing() {
        let cache = PricingCache::new(Duration::ZERO);
        let shop = TenantId::new();
        let t0 = datetime!(2026-11-21 12:00 UTC);
        cache.put(shop, &lookup("A"), &found(true), cache.ticket(), t0);
        assert_eq!(cache.get(shop, &lookup("A"), t0), None);
    }
}
