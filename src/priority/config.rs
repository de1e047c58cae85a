//! The limiter's settings.

use std::sync::Arc;
use std::time::Duration;

use super::pacing::{Learn, Pacing, PacingSpec};
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
    /// `learn_pacing(window)` (deprecated): re-pace to
    /// `inin-ratelimit-allowed` per this window.
    pub(crate) learn_pacing: Option<Duration>,
    /// `learn_rate()`: learn the rate from the server.
    pub(crate) learn_rate: bool,
    /// The rate (as an interval) until something is learned.
    pub(crate) initial_rate: Option<Duration>,
    /// `quota_reserve(low, normal)`: the remaining quota at or under which
    /// low, then normal, priority is shed (`low` at least `normal`).
    pub(crate) quota_reserve: Option<(u32, u32)>,
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
            learn_rate: false,
            initial_rate: None,
            quota_reserve: None,
        }
    }

    /// The built-in pacing schedule these settings describe (none with a
    /// pacer outside the limiter).
    pub(crate) fn new_pacing(&self) -> Option<Pacing> {
        // with a pacer, built-in pacing only as a keyed limiter's own rate
        // beside the shared one; with none of its own, learning only tells
        // the pacer the rate it learned
        if self.pacer.is_some() && self.pacing.is_none() {
            return self
                .learn_rate
                .then(|| Pacing::advisory(self.pacing_burst, self.learn_mode()))
                .flatten();
        }
        Pacing::new(self.pacing, self.pacing_burst, self.learn_mode())
    }

    /// How the rate is learned (`learn_rate` wins over the deprecated
    /// `learn_pacing`).
    #[inline]
    pub(crate) fn learn_mode(&self) -> Learn {
        if self.learn_rate {
            Learn::On {
                initial: self.initial_rate,
            }
        } else {
            self.learn_pacing.map_or(Learn::Off, Learn::Legacy)
        }
    }

    /// Whether responses are read to learn the rate.
    #[inline]
    pub(crate) fn learns(&self) -> bool {
        match self.learn_mode() {
            Learn::Off => false,
            Learn::On { .. } => true,
            // the deprecated re-pacing of a configured rate: no pacer
            Learn::Legacy(_) => self.pacer.is_none(),
        }
    }
}
