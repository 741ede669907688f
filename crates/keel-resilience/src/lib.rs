//! Keel's resilience kit for calls to other services (ADR 0033): per dependency a circuit
//! breaker, retries on an exact list of delays (idempotent operations only), a total timeout
//! per attempt, and a bulkhead that bounds the calls in flight and how long a caller queues.
//! Every number is an exact configured value (docs/architecture.md, "Exact values").
//!
//! [`Dependency::call`] runs one operation through all four. The operation classifies its
//! own failures ([`Failure`]): timeouts, refused or reset connections, 5xx and 429 count
//! against the dependency and may be retried; any other answer (a 4xx) means the dependency
//! is healthy and the request was wrong, so it is neither retried nor counted.
#![forbid(unsafe_code)]

mod breaker;
mod call;

pub use breaker::{Admission, Breaker, CircuitState};
pub use call::{CallError, Dependency, Failure, Policy, Snapshot};
