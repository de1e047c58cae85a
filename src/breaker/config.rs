//! The breaker's settings, as the layer's builder methods leave them.

use std::sync::Arc;
use std::time::Duration;

use super::BreakerEvent;
use crate::backoff::{Backoff, Jitter, SharedRng};
use crate::retry_after::{Clock, SystemClock};
use crate::share::PauseShare;

pub(crate) type EventHandler = Arc<dyn Fn(&BreakerEvent) + Send + Sync>;

/// Breaker settings (see [`CircuitBreakerLayer`](super::CircuitBreakerLayer)).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_ratio: f64,
    pub(crate) window: Duration,
    pub(crate) min_throughput: u32,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) open_backoff: Backoff,
    pub(crate) max_open: Duration,
    pub(crate) probes: u32,
    pub(crate) probe_successes: u32,
    pub(crate) half_open_retry_in: Duration,
    pub(crate) count_429: bool,
    pub(crate) rng: SharedRng,
    /// Turns an HTTP-date hint into a delay.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_event: Option<EventHandler>,
    pub(crate) share: Option<Arc<dyn PauseShare>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: Duration::from_secs(30),
            min_throughput: 20,
            slow_call: None,
            open_backoff: Backoff::exponential(Duration::from_secs(5))
                .max_delay(Duration::from_secs(60))
                .jitter(Jitter::Equal),
            max_open: Duration::from_secs(300),
            probes: 1,
            probe_successes: 1,
            half_open_retry_in: Duration::from_secs(1),
            count_429: false,
            rng: SharedRng::from_os(),
            clock: Arc::new(SystemClock),
            on_event: None,
            share: None,
        }
    }
}
