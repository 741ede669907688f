//! One dependency's calls: the bulkhead, the breaker, the timeout and the retries, in that
//! order around each attempt.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Semaphore, time::Instant};

use crate::breaker::{Admission, Breaker, CircuitState};

/// A dependency's exact limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that open the circuit.
    pub failures_to_open: u32,
    /// How long an open circuit refuses calls.
    pub open_for: Duration,
    /// Calls let through a half-open circuit.
    pub half_open_probes: u32,
    /// The waits before each retry, in order; their count is the number of retries.
    pub retry_delays: Vec<Duration>,
    /// Each wait is lengthened by a random amount up to this bound (never more), so callers
    /// that failed together do not retry together.
    pub retry_jitter: Duration,
    /// How long an attempt may take in all, connecting included.
    pub attempt_timeout: Duration,
    /// Calls in flight at once.
    pub max_concurrent: u32,
    /// How long a call waits for a slot before failing fast.
    pub queue_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
            retry_delays: vec![
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2),
            ],
            retry_jitter: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(10),
            max_concurrent: 16,
            queue_wait: Duration::from_secs(1),
        }
    }
}

/// How an attempt failed, as the operation classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the attempt's time (set by [`Dependency::call`] itself).
    Timeout,
    /// The connection could not be made, or broke.
    Connect(String),
    /// A 5xx answer.
    Server(u16),
    /// 429: the dependency asks us to slow down, perhaps saying for how long. Retried, but
    /// not held against the dependency: a limit is per account (one shop's), not an outage,
    /// and one shop's traffic must not open the circuit every shop shares.
    TooMany { retry_after: Option<Duration> },
    /// The same request (same idempotency key) is still running at the dependency: retried
    /// so the answer is waited for, not held against the dependency (concurrent callers of
    /// one request would otherwise open the circuit for everyone).
    InFlight,
    /// Any other answer that is not a success: our request was wrong. Never retried, and
    /// not held against the dependency.
    Rejected(u16),
}

impl Failure {
    /// Whether the failure may pass (retried for idempotent operations).
    pub fn transient(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }

    /// Whether the failure says the dependency is unwell (counted by the breaker): no answer,
    /// or a 5xx.
    pub fn unwell(&self) -> bool {
        matches!(self, Self::Timeout | Self::Connect(_) | Self::Server(_))
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The circuit is open: nothing was sent.
    Open { retry_after: Duration },
    /// Every slot stayed taken for the queue wait: nothing was sent.
    Busy,
    /// The last attempt's failure (after the retries an idempotent operation is allowed).
    Failed(Failure),
}

impl CallError {
    /// Whether nothing reached the dependency (safe to tell the caller to come back).
    pub fn unsent(&self) -> bool {
        matches!(self, Self::Open { .. } | Self::Busy)
    }
}

/// What `/metrics` shows of a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: &'static str,
    pub state: CircuitState,
    pub transitions: u64,
    pub refused: u64,
    pub busy: u64,
}

/// One dependency (a payment provider, webhook receivers, ...): cheap to clone, shared.
#[derive(Debug, Clone)]
pub struct Dependency {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    policy: Policy,
    breaker: Mutex<Breaker>,
    slots: Semaphore,
    refused: AtomicU64,
    busy: AtomicU64,
}

impl Dependency {
    pub fn new(name: &'static str, policy: Policy) -> Self {
        let breaker = Breaker::new(
            policy.failures_to_open,
            policy.open_for,
            policy.half_open_probes,
        );
        let slots = Semaphore::new(usize::try_from(policy.max_concurrent).unwrap_or(usize::MAX));
        Self {
            inner: Arc::new(Inner {
                name,
                policy,
                breaker: Mutex::new(breaker),
                slots,
                refused: AtomicU64::new(0),
                busy: AtomicU64::new(0),
            }),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub fn snapshot(&self) -> Snapshot {
        let breaker = self.breaker();
        Snapshot {
            name: self.inner.name,
            state: breaker.state(Instant::now().into_std()),
            transitions: breaker.transitions(),
            refused: self.inner.refused.load(Ordering::Relaxed),
            busy: self.inner.busy.load(Ordering::Relaxed),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's methods cannot panic half-way: a poisoned lock holds a whole state.
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of retries. Only an
    /// `idempotent` operation is retried (one whose repeat cannot act twice, such as a POST
    /// with the same `Idempotency-Key`); each attempt takes a slot, asks the breaker and gets
    /// the attempt timeout.
    pub async fn call<T, F, Fut>(&self, idempotent: bool, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = &self.inner.policy;
        let mut retries = policy.retry_delays.iter();
        let mut last: Option<Failure> = None;
        loop {
            let failure = match self.once(&mut attempt).await {
                Ok(value) => return Ok(value),
                Err(CallError::Failed(failure)) => failure,
                // A retry that found the circuit open or no slot: an earlier attempt went out
                // (and may have acted), so the caller hears that attempt's failure, never
                // "nothing was sent".
                Err(unsent) => return Err(last.map_or(unsent, CallError::Failed)),
            };
            let delay = match (idempotent && failure.transient(), retries.next()) {
                (true, Some(delay)) => *delay,
                _ => return Err(CallError::Failed(failure)),
            };
            last = Some(failure.clone());
            let wait = match &failure {
                // Honoured when the dependency names a wait no longer than the longest of
                // ours; a longer one is not waited for.
                Failure::TooMany {
                    retry_after: Some(asked),
                } => {
                    let longest = policy
                        .retry_delays
                        .iter()
                        .max()
                        .copied()
                        .unwrap_or_default();
                    if *asked > longest {
                        return Err(CallError::Failed(failure));
                    }
                    delay.max(*asked)
                }
                _ => delay,
            };
            tokio::time::sleep(wait + jitter(policy.retry_jitter)).await;
        }
    }

    async fn once<T, F, Fut>(&self, attempt: &mut F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = &self.inner.policy;
        let Ok(Ok(_slot)) =
            tokio::time::timeout(policy.queue_wait, self.inner.slots.acquire()).await
        else {
            self.inner.busy.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::Busy);
        };
        let probe = match self.breaker().admit(Instant::now().into_std()) {
            Admission::Pass { probe } => probe,
            Admission::Refused { retry_after } => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::Open { retry_after });
            }
        };
        // Settles the admission even if this future is dropped mid-attempt (the caller went
        // away): an admitted probe that never reported would hold a half-open circuit shut.
        let mut pending = Pending {
            dependency: self,
            probe,
            reported: false,
        };
        let out = match tokio::time::timeout(policy.attempt_timeout, attempt()).await {
            Ok(out) => out,
            Err(_) => Err(Failure::Timeout),
        };
        let healthy = out.as_ref().map_or_else(|f| !f.unwell(), |_| true);
        pending.report(healthy);
        if !healthy {
            tracing::debug!(target: "keel_resilience", dependency = self.inner.name, "attempt failed");
        }
        out.map_err(CallError::Failed)
    }
}

/// An admitted attempt's report to the breaker, made once: on its outcome, or, when the
/// attempt is dropped before it has one (its caller went away), a release that counts for
/// nothing and gives a probe's place back.
struct Pending<'d> {
    dependency: &'d Dependency,
    probe: bool,
    reported: bool,
}

impl Pending<'_> {
    fn report(&mut self, healthy: bool) {
        if !self.reported {
            self.reported = true;
            self.dependency
                .breaker()
                .record(self.probe, healthy, Instant::now().into_std());
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.reported = true;
            self.dependency.breaker().release(self.probe);
        }
    }
}

/// A random wait in `0..=bound`, to the millisecond.
fn jitter(bound: Duration) -> Duration {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    // Without the OS's randomness the retries still wait their exact delays.
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from_le_bytes(bytes) % (ms + 1))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn quick() -> Policy {
        Policy {
            failures_to_open: 5,
            open_for: Duration::from_mins(1),
            half_open_probes: 1,
            retry_delays: vec![Duration::from_millis(1), Duration::from_millis(2)],
            retry_jitter: Duration::ZERO,
            attempt_timeout: Duration::from_secs(2),
            max_concurrent: 2,
            queue_wait: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn an_idempotent_call_is_retried_after_a_server_error_and_succeeds_once() {
        let dep = Dependency::new("test", quick());
        let attempts = AtomicU32::new(0);
        let out = dep
            .call(true, || async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failure::Server(500)),
                    _ => Ok("done"),
                }
            })
            .await;
        assert_eq!(out, Ok("done"));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_call_that_is_not_idempotent_is_never_retried() {
        let dep = Dependency::new("test", quick());
        let attempts = AtomicU32::new(0);
        let out: Result<(), _> = dep
            .call(false, || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Server(503))
            })
            .await;
        assert_eq!(out, Err(CallError::Failed(Failure::Server(503))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rejected_request_is_neither_retried_nor_counted_against_the_dependency() {
        let dep = Dependency::new("test", quick());
        let attempts = AtomicU32::new(0);
        for _ in 0..10 {
            let out: Result<(), _> = dep
                .call(true, || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Err(Failure::Rejected(402))
                })
                .await;
            assert_eq!(out, Err(CallError::Failed(Failure::Rejected(402))));
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 10, "one attempt each");
        assert_eq!(dep.snapshot().state, CircuitState::Closed);
    }

    #[tokio::test]
    async fn retries_stop_after_the_delay_list_and_the_circuit_counts_every_attempt() {
        let dep = Dependency::new("test", quick());
        let attempts = AtomicU32::new(0);
        let fail = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Failure::Connect("reset".into()))
        };
        let out = dep.call(true, fail).await;
        assert_eq!(
            out,
            Err(CallError::Failed(Failure::Connect("reset".into())))
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            3,
            "the first try and two retries"
        );
        // Two more failures make five in a row: open. This call's own retry finds it open,
        // after its attempts went out: it answers their failure.
        let out = dep.call(true, fail).await;
        assert_eq!(
            out,
            Err(CallError::Failed(Failure::Connect("reset".into())))
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        assert_eq!(dep.snapshot().state, CircuitState::Open);
        // The next call sends nothing at all.
        let out = dep.call(true, fail).await;
        assert!(matches!(out, Err(CallError::Open { .. })), "{out:?}");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            5,
            "the sixth never went out"
        );
        assert_eq!(dep.snapshot().refused, 2);
    }

    #[tokio::test]
    async fn a_429_is_retried_after_the_wait_it_names_unless_that_is_longer_than_ours() {
        let dep = Dependency::new("test", quick());
        let attempts = AtomicU32::new(0);
        let out = dep
            .call(true, || async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failure::TooMany {
                        retry_after: Some(Duration::from_millis(2)),
                    }),
                    _ => Ok(()),
                }
            })
            .await;
        assert_eq!(out, Ok(()));
        let too_long = Failure::TooMany {
            retry_after: Some(Duration::from_mins(1)),
        };
        let out: Result<(), _> = dep.call(true, || async { Err(too_long.clone()) }).await;
        assert_eq!(out, Err(CallError::Failed(too_long.clone())));
    }

    #[tokio::test]
    async fn limits_and_requests_in_flight_never_open_the_circuit_every_caller_shares() {
        let dep = Dependency::new("test", quick());
        for failure in [Failure::TooMany { retry_after: None }, Failure::InFlight] {
            for _ in 0..10 {
                let out: Result<(), _> = dep.call(false, || async { Err(failure.clone()) }).await;
                assert_eq!(out, Err(CallError::Failed(failure.clone())));
            }
        }
        assert_eq!(dep.snapshot().state, CircuitState::Closed);
        // While 5xx answers open it as before.
        for _ in 0..5 {
            let _: Result<(), _> = dep
                .call(false, || async { Err(Failure::Server(500)) })
                .await;
        }
        assert_eq!(dep.snapshot().state, CircuitState::Open);
    }

    #[tokio::test]
    async fn an_attempt_past_its_time_is_a_timeout() {
        let dep = Dependency::new(
            "test",
            Policy {
                attempt_timeout: Duration::from_millis(10),
                retry_delays: Vec::new(),
                ..quick()
            },
        );
        let out: Result<(), _> = dep
            .call(true, std::future::pending::<Result<(), Failure>>)
            .await;
        assert_eq!(out, Err(CallError::Failed(Failure::Timeout)));
    }

    #[tokio::test]
    async fn the_bulkhead_holds_its_exact_count_in_flight_and_the_rest_fail_fast() {
        let dep = Dependency::new("test", quick());
        let gate = Arc::new(tokio::sync::Notify::new());
        let in_flight = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let mut calls = Vec::new();
        for _ in 0..6 {
            let (dep, gate, in_flight, peak) =
                (dep.clone(), gate.clone(), in_flight.clone(), peak.clone());
            calls.push(tokio::spawn(async move {
                dep.call(true, || {
                    let (gate, in_flight, peak) = (gate.clone(), in_flight.clone(), peak.clone());
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        gate.notified().await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Failure>(())
                    }
                })
                .await
            }));
        }
        // The four that found no slot give up after the queue wait (the two in flight wait
        // for the gate, which opens only after that).
        let mut busy = 0;
        while busy < 4 {
            busy = dep.snapshot().busy;
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        let mut outcomes = Vec::new();
        for c in calls {
            outcomes.push(c.await.expect("task"));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2);
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Err(CallError::Busy))
                .count(),
            4
        );
    }

    #[tokio::test]
    async fn callers_that_go_away_never_open_the_circuit() {
        let dep = Dependency::new("test", quick());
        for _ in 0..10 {
            let call = dep.call(true, std::future::pending::<Result<(), Failure>>);
            assert!(
                tokio::time::timeout(Duration::from_millis(5), call)
                    .await
                    .is_err()
            );
        }
        assert_eq!(dep.snapshot().state, CircuitState::Closed);
    }

    #[tokio::test]
    async fn a_probe_whose_caller_goes_away_gives_its_place_back_and_the_circuit_recovers() {
        let dep = Dependency::new(
            "test",
            Policy {
                failures_to_open: 1,
                open_for: Duration::ZERO,
                retry_delays: Vec::new(),
                ..quick()
            },
        );
        let out: Result<(), _> = dep.call(true, || async { Err(Failure::Server(500)) }).await;
        assert_eq!(out, Err(CallError::Failed(Failure::Server(500))));
        // The probe is admitted, then its caller drops it before any answer.
        let probe = dep.call(true, std::future::pending::<Result<(), Failure>>);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), probe)
                .await
                .is_err(),
            "still waiting when dropped"
        );
        let out = dep.call(true, || async { Ok::<_, Failure>(()) }).await;
        assert_eq!(
            out,
            Ok(()),
            "a new probe is let through and closes the circuit"
        );
        assert_eq!(dep.snapshot().state, CircuitState::Closed);
    }

    #[tokio::test]
    async fn after_an_attempt_went_out_the_caller_never_hears_nothing_was_sent() {
        let dep = Dependency::new(
            "test",
            Policy {
                failures_to_open: 1,
                ..quick()
            },
        );
        let out: Result<(), _> = dep.call(true, || async { Err(Failure::Server(500)) }).await;
        assert_eq!(
            out,
            Err(CallError::Failed(Failure::Server(500))),
            "the retry found the circuit open, after the first attempt went out"
        );
        assert!(!out.expect_err("failed").unsent());
    }

    #[test]
    fn jitter_never_exceeds_its_bound() {
        let bound = Duration::from_millis(7);
        for _ in 0..1_000 {
            assert!(jitter(bound) <= bound);
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
