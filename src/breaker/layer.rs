use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::config::Config;
use super::machine::{Breaker, Core};
use super::{BreakerEvent, CircuitBreaker, CircuitBreakerHandle};
use crate::backoff::{Backoff, SharedRng};
use crate::retry_after::Clock;
use crate::share::PauseShare;

/// Applies [`CircuitBreaker`] to services. Every service made by one layer
/// shares one breaker; [`handle`](Self::handle) reaches it.
///
/// Settings do not depend on order: the breaker exists from
/// [`new`](Self::new), builder methods change its settings, and a
/// [`handle`](Self::handle) taken at any point watches it. Clones of a
/// layer share one breaker and its settings; a service keeps the settings
/// its layer had when it was made.
///
/// Defaults: trip on 5 consecutive failures, or a failure ratio of 50 % over
/// 30 s (10 buckets) with at least 20 calls; open 5 s, growing x2 per trip in
/// a row up to 60 s with equal jitter (a server hint on the failing response
/// wins, up to 300 s); 1 half-open probe, 1 success to close; 429 is not a
/// failure.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    config: Arc<Config>,
    core: Arc<Core>,
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::from_config(Config::default())
    }
}

impl CircuitBreakerLayer {
    /// A breaker with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    fn from_config(config: Config) -> Self {
        let config = Arc::new(config);
        Self {
            core: Core::new(config.clone()),
            config,
        }
    }

    /// Change a setting of this breaker (never a fresh breaker: handles
    /// already taken keep watching it).
    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self.core.configure(self.config.clone());
        self
    }

    /// Trip after this many failures in a row (0 disables).
    pub fn consecutive_failures(self, n: u32) -> Self {
        self.with(|c| c.consecutive_failures = if n == 0 { u32::MAX } else { n })
    }

    /// Trip when failures reach `ratio` of at least `min_throughput` calls
    /// within `window` (counted in 10 buckets). A ratio of 0 disables.
    pub fn failure_rate(self, ratio: f64, window: Duration, min_throughput: u32) -> Self {
        self.with(|c| {
            c.failure_ratio = if ratio.is_finite() {
                ratio.clamp(0.0, 1.0)
            } else {
                0.0
            };
            c.window = window;
            c.min_throughput = min_throughput.max(1);
        })
    }

    /// Count a call slower than `threshold` as a failure, whatever its outcome.
    pub fn slow_call(self, threshold: Duration) -> Self {
        self.with(|c| c.slow_call = Some(threshold))
    }

    /// How long the breaker stays open, by trips in a row.
    pub fn open_duration(self, backoff: Backoff) -> Self {
        self.with(|c| c.open_backoff = backoff)
    }

    /// The longest open duration, also for a server hint.
    pub fn max_open(self, max: Duration) -> Self {
        self.with(|c| c.max_open = max)
    }

    /// Probes let through while half-open (at least 1), and successes needed
    /// to close (at least 1).
    pub fn half_open(self, probes: u32, successes_to_close: u32) -> Self {
        self.with(|c| {
            c.probes = probes.max(1);
            c.probe_successes = successes_to_close.max(1);
        })
    }

    /// Whether a 429 counts as a failure (default: no, it is pacing).
    pub fn count_429_as_failure(self, yes: bool) -> Self {
        self.with(|c| c.count_429 = yes)
    }

    /// The random source for the open-duration jitter.
    pub fn rng(self, rng: SharedRng) -> Self {
        self.with(|c| c.rng = rng)
    }

    /// The wall clock that turns an HTTP-date hint (`Retry-After: <date>`
    /// on a failing response) into an open duration; the system clock by
    /// default.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use tower_cx::breaker::CircuitBreakerLayer;
    /// use tower_cx::retry_after::FixedClock;
    ///
    /// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let layer = CircuitBreakerLayer::new().clock(FixedClock::new(now));
    /// # let _ = layer;
    /// ```
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.with(|c| c.clock = clock)
    }

    /// Receive every state change.
    pub fn on_event<F>(self, handler: F) -> Self
    where
        F: Fn(&BreakerEvent) + Send + Sync + 'static,
    {
        self.with(|c| c.on_event = Some(Arc::new(handler)))
    }

    /// Share trips with other breakers (in this process with
    /// [`LocalPauseShare`](crate::share::LocalPauseShare), or across a fleet
    /// through Redis): when one trips, the others open for the same time,
    /// then each probes the upstream on its own.
    ///
    /// Inside a runtime the breaker joins the share at once, so a trip
    /// announced from then on reaches it before its first request; outside
    /// one it joins when it makes a service or with its first request.
    pub fn share_state(self, share: impl PauseShare) -> Self {
        let share: Arc<dyn PauseShare> = Arc::new(share);
        self.core.subscribe_early(share.as_ref());
        self.with(|c| c.share = Some(share))
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            core: self.core.clone(),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        if let Some(share) = &self.config.share {
            self.core.subscribe_early(share.as_ref());
        }
        let breaker = Breaker {
            config: self.config.clone(),
            core: self.core.clone(),
        };
        CircuitBreaker::from_shared(inner, Arc::new(breaker))
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("handle", &self.handle())
            .finish()
    }
}
