//! Time as a port: services ask a [`Clock`], tests pin it with [`ManualClock`].

use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// A source of the current time. Every timestamp Keel stores comes from one.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in UTC, truncated to whole microseconds (the finest precision both databases
    /// store, so a value read back equals the value written).
    fn now(&self) -> OffsetDateTime;
}

/// Truncates to whole microseconds, in UTC.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000)
        .expect("a nanosecond value rounded down stays in range")
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to; for tests of expiry and ordering.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to microseconds).
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Mutex::new(truncate_to_micros(start)),
        }
    }

    /// Moves the clock forward by an exact duration.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = truncate_to_micros(*now + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn truncation_drops_sub_microsecond_digits() {
        let t = datetime!(2026-11-21 10:00:00.123_456_789 UTC);
        assert_eq!(
            truncate_to_micros(t),
            datetime!(2026-11-21 10:00:00.123_456 UTC)
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
        assert_eq!(c.now(), datetime!(2026-01-01 0:00 UTC));
        c.advance(Duration::seconds(900));
        assert_eq!(c.now(), datetime!(2026-01-01 0:15 UTC));
    }
}
