//! What the breaker counts.

pub use crate::observe::{BreakerEvent, BreakerState, TransitionReason};

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
