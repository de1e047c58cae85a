use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::limiter::{Config, Limiter, LimiterEvent, Pacing, PriorityLimitHandle};
use super::shared::Pacer;
use super::PriorityLimit;
use crate::retry_after::Clock;
use crate::share::PauseShare;

/// Applies [`PriorityLimit`] to services. Every service made by one layer
/// shares one limiter (permits, queue, gate, pacing);
/// [`handle`](Self::handle) reaches it.
///
/// Configure first, then take handles and make services: each builder
/// method starts a fresh limiter with the new settings.
///
/// Defaults: a queue of 1024 served first come first served within a
/// priority, no maximum queue wait, aging by one priority level per 30 s
/// waited, no pacing, gate hints up to 180 s.
#[derive(Clone)]
pub struct PriorityLimitLayer {
    limiter: Arc<Limiter>,
}

impl PriorityLimitLayer {
    /// At most `max_concurrency` requests in flight (at least 1).
    pub fn new(max_concurrency: usize) -> Self {
        Self {
            limiter: Limiter::new(Config::new(max_concurrency)),
        }
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.limiter.config.clone();
        change(&mut config);
        Self {
            limiter: Limiter::new(config),
        }
    }

    /// At most `max` requests wait; 0 means none wait (no permit: shed).
    pub fn max_queue(self, max: usize) -> Self {
        self.with(|c| c.max_queue = max)
    }

    /// Shed a request that waited this long with
    /// [`OverloadReason::QueueTimeout`](crate::error::OverloadReason::QueueTimeout).
    pub fn max_queue_wait(self, wait: Duration) -> Self {
        self.with(|c| c.max_queue_wait = Some(wait))
    }

    /// Promote a waiting request by one priority level per `step` waited,
    /// so low priority never starves. `None` disables aging.
    pub fn aging(self, step: Option<Duration>) -> Self {
        self.with(|c| c.aging = step.filter(|s| !s.is_zero()))
    }

    /// Send at most `requests` per `per`, evenly spaced (a bucket of 1), to
    /// stay under a known vendor limit (Genesys: 300 per 60 s) instead of
    /// discovering it by 429s. `requests == 0` turns pacing off.
    pub fn pacing(self, requests: u32, per: Duration) -> Self {
        self.with(|c| {
            c.pacer = None;
            c.pacing = (requests > 0).then(|| Pacing::Smooth {
                interval: per / requests,
                burst: 1,
            });
        })
    }

    /// Learn the rate from the server: when a response carries
    /// `inin-ratelimit-allowed: N` (Genesys Cloud's per-token allowance,
    /// 300 by default but changeable per organisation), smooth
    /// [`pacing`](Self::pacing) becomes `N` requests per window. The window
    /// is the one the headers imply: the longest `inin-ratelimit-reset`
    /// seen (the seconds left in the current window), at most `window`
    /// (Genesys: 60 s, the window its per-token limits count in). The
    /// configured rate applies until the first such response. No effect
    /// without smooth pacing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// let layer = PriorityLimitLayer::new(16)
    ///     .pacing(300, Duration::from_secs(60))
    ///     .learn_pacing(Duration::from_secs(60));
    /// assert_eq!(layer.handle().pacing_interval(), Some(Duration::from_millis(200)));
    /// ```
    pub fn learn_pacing(self, window: Duration) -> Self {
        self.with(|c| c.learn_pacing = (!window.is_zero()).then_some(window))
    }

    /// Send at most `requests` in any `per` (a sliding window), each as soon
    /// as that allows: a whole allowance may go at once.
    ///
    /// For a vendor that counts requests in fixed windows (100 a second, 300
    /// a minute): no fixed window of length `per`, whatever its alignment,
    /// ever sees more than `requests`, yet a burst of waiting requests goes
    /// out at once instead of one every `per / requests` as with
    /// [`pacing`](Self::pacing). The limiter keeps the times of the last
    /// `requests` dispatches. `requests == 0` turns pacing off.
    pub fn pacing_window(self, requests: u32, per: Duration) -> Self {
        self.with(|c| {
            c.pacer = None;
            c.pacing = (requests > 0).then_some(Pacing::Window { requests, per });
        })
    }

    /// Adaptive LIFO: once a priority's queue is standing (its oldest waiter
    /// has waited `after`), serve that priority's newest waiter first; first
    /// come, first served again once the queue has drained. Off by default.
    ///
    /// Under sustained overload a first-come-first-served queue makes every
    /// request wait for the whole backlog, so that most callers wait long
    /// (and many have given up by the time their request goes). Newest first
    /// keeps most callers' wait short while the backlog lasts; the oldest
    /// waiters go when the overload passes, or are shed by
    /// [`max_queue_wait`](Self::max_queue_wait). Priorities and aging still
    /// decide which priority goes next (a queue ages with its oldest
    /// waiter). The technique is described in public writing on load
    /// management ("adaptive LIFO", used together with a queue-time bound).
    pub fn adaptive_lifo(self, after: Duration) -> Self {
        self.with(|c| c.lifo_after = Some(after))
    }

    /// Take dispatch slots from `pacer` (shared with other limiters, or with
    /// a whole fleet through Redis) instead of the built-in pacing. Each
    /// request asks the pacer for a slot once it holds a permit, and waits
    /// for it before it is sent.
    pub fn pacer(self, pacer: impl Pacer) -> Self {
        let pacer: Arc<dyn Pacer> = Arc::new(pacer);
        self.with(|c| {
            c.pacing = None;
            c.pacer = Some(pacer);
        })
    }

    /// Share rate-gate closures with other limiters (in this process with
    /// [`LocalPauseShare`](crate::share::LocalPauseShare), or across a fleet
    /// through Redis): a server hint seen by any of them closes every gate.
    pub fn share_gate(self, share: impl PauseShare) -> Self {
        let share: Arc<dyn PauseShare> = Arc::new(share);
        self.with(|c| c.gate_share = Some(share))
    }

    /// Allow bursts of up to `burst` requests at once within the
    /// [`pacing`](Self::pacing) rate (no effect on
    /// [`pacing_window`](Self::pacing_window), which bursts by design).
    pub fn pacing_burst(self, burst: u32) -> Self {
        self.with(|c| {
            if let Some(Pacing::Smooth { interval, .. }) = c.pacing {
                c.pacing = Some(Pacing::Smooth {
                    interval,
                    burst: burst.max(1),
                });
            }
        })
    }

    /// The longest server hint that closes the rate gate (default 180 s). A
    /// longer hint (a daily cap) does not freeze every request: it is left to
    /// the retry layer, which returns such a response at once.
    pub fn max_gate(self, max: Duration) -> Self {
        self.with(|c| c.max_gate = max)
    }

    /// The wall clock used for HTTP-date hints.
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.with(|c| c.clock = clock)
    }

    /// Receive every gate closure and shed request.
    pub fn on_event<F>(self, handler: F) -> Self
    where
        F: Fn(&LimiterEvent) + Send + Sync + 'static,
    {
        self.with(|c| c.on_event = Some(Arc::new(handler)))
    }

    /// A handle on the shared limiter.
    pub fn handle(&self) -> PriorityLimitHandle {
        PriorityLimitHandle {
            limiter: self.limiter.clone(),
        }
    }
}

impl<S> Layer<S> for PriorityLimitLayer {
    type Service = PriorityLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityLimit::from_shared(inner, self.limiter.clone())
    }
}

impl fmt::Debug for PriorityLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityLimitLayer")
            .field("max_concurrency", &self.limiter.config.max_concurrency)
            .field("max_queue", &self.limiter.config.max_queue)
            .field("handle", &self.handle())
            .finish()
    }
}
