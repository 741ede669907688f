//! Rate limits as GCRA (the generic cell rate algorithm; ADR 0035): a token bucket written as
//! one stored time per key, its *theoretical arrival time*, and two exact numbers: the
//! emission interval (one request's worth of time, in milliseconds) and the burst (requests
//! admitted at once from a full bucket). Integer milliseconds throughout: no rate is ever a
//! fraction, and a decision is exact.

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
    let tat = tat_ms.map_or(now_ms, |t| t.max(now_ms));
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
    fn zero_is_no_limit_and_the_window_is_whole_seconds() {
        assert_eq!(Limit::new(0, 1), None);
        assert_eq!(Limit::new(1, 0), None);
        assert_eq!(Limit::new(1000, 60).expect("limit").window_s(), 60);
        assert_eq!(Limit::new(3000, 20).expect("limit").window_s(), 60);
        assert_eq!(Limit::new(333, 3).expect("limit").window_s(), 1);
    }
}
