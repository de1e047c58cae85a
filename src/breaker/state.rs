//! What the breaker reports: its state, its transitions and why, its counts.

use std::time::Duration;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests fail fast until the probe time.
    Open {
        /// Time left until probes are let through.
        retry_in: Duration,
    },
    /// A few probe requests test the upstream; the rest fail fast.
    HalfOpen,
    /// Isolated by hand: every request fails fast until
    /// [`reset`](super::CircuitBreakerHandle::reset).
    Isolated,
}

impl BreakerState {
    /// A short stable name: `closed`, `open`, `half_open`, `isolated`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Isolated => "isolated",
        }
    }
}

/// A state change of the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerEvent {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// N failures in a row.
    ConsecutiveFailures,
    /// The failure ratio over the window reached the threshold.
    FailureRate,
    /// A half-open probe failed.
    ProbeFailed,
    /// The open duration passed.
    OpenElapsed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// [`CircuitBreakerHandle::isolate`](super::CircuitBreakerHandle::isolate) was called.
    Isolated,
    /// [`CircuitBreakerHandle::reset`](super::CircuitBreakerHandle::reset) was called.
    Reset,
    /// Another breaker sharing this one's state (see
    /// [`CircuitBreakerLayer::share_state`](super::CircuitBreakerLayer::share_state))
    /// tripped.
    Shared,
}

/// Counts kept by the breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Attempts that counted as successes.
    pub successes: u64,
    /// Attempts that counted as failures.
    pub failures: u64,
    /// Requests refused without being sent.
    pub rejected: u64,
    /// Times the breaker opened.
    pub trips: u64,
    /// Failures in a row right now.
    pub consecutive_failures: u32,
}
