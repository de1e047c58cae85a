//! The limiter's settings.

use std::sync::Arc;
use std::time::Duration;

use super::pacing::{Pacing, PacingSpec};
use super::shared::Pacer;
use crate::hint::{Clock, SystemClock};
use crate::observe::LimiterEvent;
use crate::share::PauseShare;

pub(crate) type EventHandler = Arc<dyn Fn(&LimiterEvent) + Send + Sync>;

/// Limiter settings (see [`PriorityLimitLayer`](super::PriorityLimitLayer)).
/// Each is a field of its own, so that the builder methods can be called in
/// any order.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue: usize,
    pub(crate) max_queue_wait: Option<Duration>,
    pub(crate) aging: Option<Duration>,
    /// Built-in pacing.
    pub(crate) pacing: Option<PacingSpec>,
    /// Smooth pacing's burst (at least 1), whenever pacing is set.
    pub(crate) pacing_burst: u32,
    /// Adaptive LIFO: serve the newest waiter of a priority first once its
    /// oldest has waited this long.
    pub(crate) lifo_after: Option<Duration>,
    /// The longest server hint that closes the gate.
    pub(crate) max_gate: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_event: Option<EventHandler>,
    /// A pacer outside the limiter (replaces `pacing`).
    pub(crate) pacer: Option<Arc<dyn Pacer>>,
    /// Where gate closures are shared with other limiters.
    pub(crate) gate_share: Option<Arc<dyn PauseShare>>,
    /// Re-pace smooth pacing to `inin-ratelimit-allowed` per this window.
    pub(crate) learn_pacing: Option<Duration>,
}

impl Config {
    pub(crate) fn new(max_concurrency: usize) -> Self {
        Self {
            max_concurrency: max_concurrency.max(1),
            max_queue: 1024,
            max_queue_wait: None,
            aging: Some(Duration::from_secs(30)),
            pacing: None,
            pacing_burst: 1,
            lifo_after: None,
            max_gate: Duration::from_secs(180),
            clock: Arc::new(SystemClock),
            on_event: None,
            pacer: None,
            gate_share: None,
            learn_pacing: None,
        }
    }

    /// The built-in pacing schedule these settings describe.
    pub(crate) fn new_pacing(&self) -> Option<Pacing> {
        self.pacing
            .map(|spec| Pacing::new(spec, self.pacing_burst, self.learn_pacing))
    }

    /// Whether learning the rate from the server can change anything.
    pub(crate) fn learns_pacing(&self) -> bool {
        self.learn_pacing.is_some() && matches!(self.pacing, Some(PacingSpec::Smooth { .. }))
    }
}
