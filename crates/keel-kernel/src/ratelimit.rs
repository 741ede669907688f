//! Rate limits as GCRA (the generic cell rate algorithm; ADR 0035): a token bucket written as
//! one stored time per key, its *theoretical arrival time*, and two exact numbers: the
//! emission interval (one request's worth of time, in milliseconds) and the burst (requests
//! admitted at once from a full bucket). Integer milliseconds throughout: no rate is ever a
//! fraction, and a decision is exact.

/// The longest full span (interval × burst) a limit may have, exclusive: 2^52 ms.
pub const MAX_SPAN_MS: u64 = 1 << 52;

/// A limit: `burst` requests at once, then one more every `interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    interval_ms: u64,
    burst: u32,
}

impl Limit {
    /// A limit, or `None` for a zero interval or burst (a limit that admits nothing is no
    /// limit anyone configures on purpose).
    pub const fn new(interval_ms: u64, burst: u32) -> Option<Self> {
        if interval_ms == 0 || burst == 0 {
            None
        } else {
            Some(Self { interval_ms, burst })
        }
    }

    /// A limit whose full span (interval × burst) stays below [`MAX_SPAN_MS`], so every
    /// arrival time is an exact integer wherever it is computed (Redis's Lua numbers are
    /// doubles, exact below 2^53); `None` otherwise, or for a zero interval or burst.
    pub const fn bounded(interval_ms: u64, burst: u32) -> Option<Self> {
        match interval_ms.checked_mul(burst as u64) {
            Some(span) if span < MAX_SPAN_MS => Self::new(interval_ms, burst),
            _ => None,
        }
    }

    pub const fn interval_ms(self) -> u64 {
        self.interval_ms
    }

    pub const fn burst(self) -> u32 {
        self.burst
    }

    /// The window a `RateLimit-Policy` names: the time an empty bucket takes to refill, in
    /// whole seconds, rounded up.
    pub const fn window_s(self) -> u64 {
        (self.interval_ms.saturating_mul(self.burst as u64)).div_ceil(1000)
    }
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still admitted at once after this one.
    pub remaining: u32,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
    /// Refused: milliseconds until one request is admitted again (0 when allowed).
    pub retry_after_ms: u64,
}

/// Decides a request at `now_ms` for a key whose stored arrival time is `tat_ms` (`None`: no
/// request seen, or forgotten). Answers the decision and the arrival time to store (the same
/// one when refused: a refused request takes nothing).
pub fn decide(limit: Limit, tat_ms: Option<i64>, now_ms: i64) -> (Decision, i64) {
    let interval = i64::try_from(limit.interval_ms).unwrap_or(i64::MAX);
    // How far ahead of now the arrival time may run: burst - 1 requests' worth.
    let tolerance = interval.saturating_mul(i64::from(limit.burst) - 1);
    // A stored time never runs further ahead than this limit's full span: one left by a
    // slower limit (a shop's limit raised since) holds at most one interval more, never the
    // old limit's whole span.
    let span = interval.saturating_mul(i64::from(limit.burst));
    let tat = tat_ms.map_or(now_ms, |t| t.max(now_ms).min(now_ms.saturating_add(span)));
    let ahead = tat - now_ms;
    if ahead > tolerance {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset_ms: u64::try_from(ahead).unwrap_or(0),
            retry_after_ms: u64::try_from(ahead - tolerance).unwrap_or(0),
        };
        return (decision, tat);
    }
    let next = tat.saturating_add(interval);
    let ahead = next - now_ms;
    let remaining = if ahead > tolerance {
        0
    } else {
        (tolerance - ahead) / interval + 1
    };
    let decision = Decision {
        allowed: true,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_ms: u64::try_from(ahead).unwrap_or(0),
        retry_after_ms: 0,
    };
    (decision, next)
}

/// The limits a shop's owner may tighten and an operator may set per shop (the client
/// address's ceiling and the auth limit are the operator's alone: they hold before any shop is
/// known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    StoreRead,
    StoreWrite,
    CartCreate,
    Checkout,
    PromotionAddress,
    PromotionCart,
    AdminRead,
    AdminWrite,
    /// Every storefront request of the shop together, whoever makes it.
    Shop,
}

impl Policy {
    pub const ALL: [Self; 9] = [
        Self::StoreRead,
        Self::StoreWrite,
        Self::CartCreate,
        Self::Checkout,
        Self::PromotionAddress,
        Self::PromotionCart,
        Self::AdminRead,
        Self::AdminWrite,
        Self::Shop,
    ];

    /// The name in headers, configuration, the API and storage.
    pub const fn name(self) -> &'static str {
        match self {
            Self::StoreRead => "store_read",
            Self::StoreWrite => "store_write",
            Self::CartCreate => "cart_create",
            Self::Checkout => "checkout",
            Self::PromotionAddress => "promotion_address",
            Self::PromotionCart => "promotion_cart",
            Self::AdminRead => "admin_read",
            Self::AdminWrite => "admin_write",
            Self::Shop => "shop",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether a shop's owner may set this policy's limit. Staff limits are the operator's
    /// alone: an owner who slowed them could lock every staff member, themselves included,
    /// out of the very route that would undo it.
    pub const fn owner_may_set(self) -> bool {
        !matches!(self, Self::AdminRead | Self::AdminWrite)
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Limit {
    /// Whether this limit admits no more than `ceiling` over any span: no larger burst and
    /// no shorter interval (GCRA admits at most `burst + span / interval` in any span).
    pub const fn within(self, ceiling: Self) -> bool {
        self.burst <= ceiling.burst && self.interval_ms >= ceiling.interval_ms
    }
}

/// Who set a shop's limit: the operator (a ceiling) or the shop's owner (an override within
/// the ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Ceiling,
    Override,
}

impl LimitScope {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ceiling => "ceiling",
            Self::Override => "override",
        }
    }
}

/// One shop's own limits. A ceiling (the operator's) replaces the configured default for
/// the shop; an override (the owner's) applies while it stays within the ceiling; an
/// override above a ceiling lowered later is ignored, never honoured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub ceilings: std::collections::BTreeMap<Policy, Limit>,
    pub overrides: std::collections::BTreeMap<Policy, Limit>,
}

impl TenantLimits {
    /// The ceiling of `policy` for this shop.
    pub fn ceiling(&self, policy: Policy, default: Limit) -> Limit {
        self.ceilings.get(&policy).copied().unwrap_or(default)
    }

    /// The limit that holds for `policy` in this shop.
    pub fn effective(&self, policy: Policy, default: Limit) -> Limit {
        let ceiling = self.ceiling(policy, default);
        self.overrides
            .get(&policy)
            .copied()
            .filter(|o| o.within(ceiling))
            .unwrap_or(ceiling)
    }
}

/// Where shops' limits are kept.
#[async_trait::async_trait]
pub trait TenantLimitStore: Send + Sync + std::fmt::Debug {
    /// The shop's ceilings and overrides (none: the defaults hold).
    async fn tenant_limits(
        &self,
        tenant: crate::TenantId,
    ) -> Result<TenantLimits, crate::StoreError>;

    /// Sets (`Some`) or removes (`None`) limits of one scope, with the events, in one
    /// transaction.
    async fn set_tenant_limits(
        &self,
        tenant: crate::TenantId,
        scope: LimitScope,
        changes: &[(Policy, Option<Limit>)],
        events: &[crate::event::NewEvent],
    ) -> Result<(), crate::StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limit: Limit, tat: &mut Option<i64>, now: i64) -> Decision {
        let (d, next) = decide(limit, *tat, now);
        *tat = Some(next);
        d
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_burst_at_once_then_one_per_interval() {
        let limit = Limit::new(1000, 10).expect("limit");
        let mut tat = None;
        let admitted: Vec<_> = (0..50).map(|_| run(limit, &mut tat, 0)).collect();
        assert_eq!(admitted.iter().filter(|d| d.allowed).count(), 10);
        assert_eq!(
            admitted
                .iter()
                .take(10)
                .map(|d| d.remaining)
                .collect::<Vec<_>>(),
            [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
        );
        let refused = admitted[10];
        assert_eq!((refused.retry_after_ms, refused.reset_ms), (1000, 10_000));
        // One millisecond early: still refused; exactly at the interval: one more, only one.
        assert!(!run(limit, &mut tat, 999).allowed);
        assert!(run(limit, &mut tat, 1000).allowed);
        assert!(!run(limit, &mut tat, 1000).allowed);
    }

    #[test]
    fn an_idle_key_refills_to_its_burst_and_no_further() {
        let limit = Limit::new(250, 4).expect("limit");
        let mut tat = None;
        for _ in 0..4 {
            assert!(run(limit, &mut tat, 0).allowed);
        }
        let later = 60_000;
        let admitted = (0..10)
            .filter(|_| run(limit, &mut tat, later).allowed)
            .count();
        assert_eq!(admitted, 4, "idle time never banks more than the burst");
    }

    #[test]
    fn over_any_span_no_more_than_burst_plus_span_over_interval_pass() {
        let limit = Limit::new(100, 5).expect("limit");
        let mut tat = None;
        let mut passed = 0_i64;
        // A request every 7 ms for 10 s.
        for now in (0..10_000).step_by(7) {
            if run(limit, &mut tat, now).allowed {
                passed += 1;
            }
        }
        assert!(passed <= 5 + 10_000 / 100, "{passed}");
        assert!(passed >= 10_000 / 100, "{passed}");
    }

    #[test]
    fn an_override_holds_only_within_its_ceiling() {
        let default = Limit::new(1000, 60).expect("limit");
        let mut t = TenantLimits::default();
        assert_eq!(t.effective(Policy::Checkout, default), default);
        let tighter = Limit::new(2000, 10).expect("limit");
        t.overrides.insert(Policy::Checkout, tighter);
        assert_eq!(t.effective(Policy::Checkout, default), tighter);
        // A larger burst, or a shorter interval, is not within: the ceiling holds.
        for above in [Limit::new(2000, 61), Limit::new(999, 10)] {
            t.overrides.insert(Policy::Checkout, above.expect("limit"));
            assert_eq!(t.effective(Policy::Checkout, default), default);
        }
        // The operator's ceiling replaces the default, and an override stays within it.
        let raised = Limit::new(100, 600).expect("limit");
        t.ceilings.insert(Policy::Checkout, raised);
        assert_eq!(
            t.effective(Policy::Checkout, default),
            Limit::new(999, 10).expect("limit")
        );
        t.overrides.clear();
        assert_eq!(t.effective(Policy::Checkout, default), raised);
        assert_eq!(
            t.effective(Policy::Shop, default),
            default,
            "other policies keep theirs"
        );
    }

    #[test]
    fn a_time_left_by_a_slower_limit_holds_one_interval_at_most() {
        let slow = Limit::new(1 << 40, 1).expect("limit");
        let mut tat = None;
        assert!(run(slow, &mut tat, 0).allowed);
        assert!(!run(slow, &mut tat, 1_000).allowed);
        let raised = Limit::new(1_000, 5).expect("limit");
        assert!(!run(raised, &mut tat, 1_000).allowed, "one interval first");
        assert!(run(raised, &mut tat, 2_000).allowed);
    }

    #[test]
    fn every_policy_reads_back_by_its_name() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
        assert_eq!(Policy::parse("client"), None, "the operator's alone");
    }

    #[test]
    fn zero_is_no_limit_and_the_window_is_whole_seconds() {
        assert_eq!(Limit::new(0, 1), None);
        assert_eq!(Limit::new(1, 0), None);
        assert_eq!(Limit::new(1000, 60).expect("limit").window_s(), 60);
        assert_eq!(Limit::new(3000, 20).expect("limit").window_s(), 60);
        assert_eq!(Limit::new(333, 3).expect("limit").window_s(), 1);
    }
}
