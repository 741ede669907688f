//! The circuit breaker's state machine, without clocks or I/O: every method takes `now`, so
//! the tests drive it through exact instants.
//!
//! Closed: calls pass; an exact count of consecutive failures opens it (a success resets the
//! count). Open: calls fail fast for an exact time. Then half-open: an exact number of probes
//! pass; a probe's success closes the circuit, its failure opens it again for the full time.

use std::time::{Duration, Instant};

/// Where the circuit stands, as `/metrics` shows it (`keel_circuit_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The gauge's value.
    pub fn code(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go to the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It may; report its outcome with [`Breaker::record`] (`probe` is passed back).
    Pass { probe: bool },
    /// It may not: the circuit is open (or its probes are all out) for at least this long.
    Refused { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_out: u32 },
}

/// One dependency's circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    probes: u32,
    state: State,
    transitions: u64,
}

impl Breaker {
    /// A closed circuit that opens after `failures_to_open` consecutive failures (at least 1),
    /// stays open for `open_for`, then lets `probes` calls (at least 1) through half-open.
    pub fn new(failures_to_open: u32, open_for: Duration, probes: u32) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            probes: probes.max(1),
            state: State::Closed { failures: 0 },
            transitions: 0,
        }
    }

    /// The state at `now` (an open circuit whose time is up reads half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Transitions so far (closed -> open, open -> half-open, half-open -> closed or open).
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    fn go(&mut self, state: State) {
        self.state = state;
        self.transitions += 1;
    }

    /// Asks to make a call at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        if let State::Open { until } = self.state {
            if now < until {
                return Admission::Refused {
                    retry_after: until - now,
                };
            }
            self.go(State::HalfOpen { probes_out: 0 });
        }
        match &mut self.state {
            State::Closed { .. } => Admission::Pass { probe: false },
            State::HalfOpen { probes_out } if *probes_out < self.probes => {
                *probes_out += 1;
                Admission::Pass { probe: true }
            }
            // Every probe is out: the next answer decides. A caller may try again after the
            // open time at the latest (a failed probe reopens it for that long).
            State::HalfOpen { .. } | State::Open { .. } => Admission::Refused {
                retry_after: self.open_for,
            },
        }
    }

    /// An admitted call that ended without an outcome because its caller went away (a
    /// client that disconnected): it says nothing of the dependency, so it is not counted,
    /// and a probe's place is given back so the next call can probe. (Counting it would let
    /// any client open the circuit every caller shares by hanging up.)
    pub fn release(&mut self, probe: bool) {
        if let State::HalfOpen { probes_out } = &mut self.state
            && probe
        {
            *probes_out = probes_out.saturating_sub(1);
        }
    }

    /// Reports the outcome of an admitted call: `healthy` is false for a failure that counts
    /// against the dependency.
    pub fn record(&mut self, probe: bool, healthy: bool, now: Instant) {
        match (self.state, healthy) {
            (State::Closed { .. }, true) => self.state = State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= self.failures_to_open {
                    self.go(State::Open {
                        until: now + self.open_for,
                    });
                    tracing::warn!(target: "keel_resilience", failures, "circuit opened");
                } else {
                    self.state = State::Closed { failures };
                }
            }
            (State::HalfOpen { .. }, true) if probe => {
                self.go(State::Closed { failures: 0 });
                tracing::info!(target: "keel_resilience", "circuit closed after a probe");
            }
            (State::HalfOpen { .. }, false) if probe => {
                self.go(State::Open {
                    until: now + self.open_for,
                });
                tracing::warn!(target: "keel_resilience", "probe failed: circuit opened again");
            }
            // The answer of a call admitted before the circuit changed: the probes decide.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    #[test]
    fn a_call_abandoned_by_its_caller_is_not_counted_and_gives_its_probe_back() {
        let mut b = breaker();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.admit(t0), Admission::Pass { probe: false });
            b.release(false);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        for _ in 0..5 {
            b.admit(t0);
            b.record(false, false, t0);
        }
        let later = t0 + OPEN_FOR;
        assert_eq!(b.admit(later), Admission::Pass { probe: true });
        assert!(
            matches!(b.admit(later), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.release(true);
        assert_eq!(
            b.admit(later),
            Admission::Pass { probe: true },
            "the probe's place is back"
        );
    }

    fn breaker() -> Breaker {
        Breaker::new(5, OPEN_FOR, 1)
    }

    fn pass(b: &mut Breaker, now: Instant) -> bool {
        match b.admit(now) {
            Admission::Pass { probe } => probe,
            Admission::Refused { .. } => panic!("refused at {now:?}"),
        }
    }

    #[test]
    fn exactly_five_consecutive_failures_open_the_circuit() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..4 {
            let probe = pass(&mut b, t);
            b.record(probe, false, t);
            assert_eq!(b.state(t), CircuitState::Closed);
        }
        let probe = pass(&mut b, t);
        b.record(probe, false, t);
        assert_eq!(b.state(t), CircuitState::Open);
        assert_eq!(
            b.admit(t + Duration::from_millis(1)),
            Admission::Refused {
                retry_after: OPEN_FOR
                    .checked_sub(Duration::from_millis(1))
                    .expect("the open time is longer than a millisecond")
            }
        );
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let t = Instant::now();
        let mut b = breaker();
        for healthy in [false, false, false, false, true, false, false, false, false] {
            let probe = pass(&mut b, t);
            b.record(probe, healthy, t);
        }
        assert_eq!(
            b.state(t),
            CircuitState::Closed,
            "four in a row since the success"
        );
    }

    #[test]
    fn after_the_open_time_one_probe_passes_and_its_success_closes_the_circuit() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            let probe = pass(&mut b, t);
            b.record(probe, false, t);
        }
        let later = t + OPEN_FOR;
        assert!(
            pass(&mut b, later),
            "the first call after the open time is the probe"
        );
        assert!(
            matches!(b.admit(later), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.record(true, true, later);
        assert_eq!(b.state(later), CircuitState::Closed);
        assert!(!pass(&mut b, later));
        assert_eq!(b.transitions(), 3, "closed -> open -> half-open -> closed");
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_the_full_time_again() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..5 {
            let probe = pass(&mut b, t);
            b.record(probe, false, t);
        }
        let later = t + OPEN_FOR;
        let probe = pass(&mut b, later);
        b.record(probe, false, later);
        assert_eq!(b.state(later), CircuitState::Open);
        assert_eq!(
            b.admit(later),
            Admission::Refused {
                retry_after: OPEN_FOR
            }
        );
        assert_eq!(b.state(later + OPEN_FOR), CircuitState::HalfOpen);
    }

    #[test]
    fn an_answer_from_before_the_circuit_opened_does_not_close_it() {
        let t = Instant::now();
        let mut b = breaker();
        let early = pass(&mut b, t);
        for _ in 0..5 {
            let probe = pass(&mut b, t);
            b.record(probe, false, t);
        }
        b.record(early, true, t);
        assert_eq!(b.state(t), CircuitState::Open);
    }
}
