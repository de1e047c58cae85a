//! The circuit breaker's events: its state changes and why.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::event::Fields;

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
    /// [`reset`](crate::breaker::CircuitBreakerHandle::reset).
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

/// A state change of the breaker (`breaker.transition`: `from`, `to`,
/// `reason`).
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
    /// [`CircuitBreakerHandle::isolate`](crate::breaker::CircuitBreakerHandle::isolate) was called.
    Isolated,
    /// [`CircuitBreakerHandle::reset`](crate::breaker::CircuitBreakerHandle::reset) was called.
    Reset,
    /// Another breaker sharing this one's state (see
    /// [`CircuitBreakerLayer::share_state`](crate::breaker::CircuitBreakerLayer::share_state))
    /// tripped.
    Shared,
}

impl BreakerEvent {
    /// The event's name: `breaker.transition`.
    pub fn name(&self) -> &'static str {
        "breaker.transition"
    }
}

impl Serialize for BreakerEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields::start(serializer, self.name())?
            .field("from", self.from.as_str())?
            .field("to", self.to.as_str())?
            .field("reason", self.reason.as_str())?
            .end()
    }
}

impl TransitionReason {
    /// A short stable name: `consecutive_failures`, `failure_rate`,
    /// `probe_failed`, `open_elapsed`, `probes_succeeded`, `isolated`,
    /// `reset`, `shared`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransitionReason::ConsecutiveFailures => "consecutive_failures",
            TransitionReason::FailureRate => "failure_rate",
            TransitionReason::ProbeFailed => "probe_failed",
            TransitionReason::OpenElapsed => "open_elapsed",
            TransitionReason::ProbesSucceeded => "probes_succeeded",
            TransitionReason::Isolated => "isolated",
            TransitionReason::Reset => "reset",
            TransitionReason::Shared => "shared",
        }
    }
}
