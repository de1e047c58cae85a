//! The cloneable handle on a breaker: inspect it, isolate it, reset it.

use std::fmt;
use std::sync::Arc;

use super::machine::Core;
use super::{BreakerCounts, BreakerState};

/// A cloneable handle on a breaker's shared state: inspect it, isolate it,
/// reset it.
///
/// A handle taken at any point of building a
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer) watches the breaker
/// the finished layer applies.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) core: Arc<Core>,
}

impl CircuitBreakerHandle {
    /// The current state (an open breaker whose time has come reports, and
    /// becomes, half-open).
    pub fn state(&self) -> BreakerState {
        self.core.state()
    }

    /// The counts so far.
    pub fn counts(&self) -> BreakerCounts {
        self.core.counts()
    }

    /// Refuse every request until [`reset`](Self::reset).
    pub fn isolate(&self) {
        self.core.isolate();
    }

    /// Close the breaker and forget its history.
    pub fn reset(&self) {
        self.core.reset();
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("state", &self.state())
            .field("counts", &self.counts())
            .finish()
    }
}
