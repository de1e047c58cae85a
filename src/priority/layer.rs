use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::config::Config;
use super::handle::{LimiterCell, PriorityLimitHandle};
use super::limiter::Limiter;
use super::pacing::PacingSpec;
use super::shared::Pacer;
use super::PriorityLimit;
use crate::observe::LimiterEvent;
use crate::retry_after::Clock;
use crate::share::PauseShare;

/// Applies [`PriorityLimit`] to services. Every service made by one layer
/// (and by its clones) shares one limiter (permits, queue, gate, pacing);
/// [`handle`](Self::handle) reaches it.
///
/// Settings do not depend on the order of the builder calls, and a handle
/// taken at any point of building observes the limiter of the built layer.
/// A builder call on a clone of the layer, or after the layer made a
/// service, configures a new limiter (as a new layer would) and leaves the
/// other clones, the services made and their handles as they were.
///
/// Defaults: a queue of 1024 served first come first served within a
/// priority, no maximum queue wait, aging by one priority level per 30 s
/// waited, no pacing, gate hints up to 180 s.
pub struct PriorityLimitLayer {
    cell: Arc<LimiterCell>,
}

impl PriorityLimitLayer {
    /// At most `max_concurrency` requests in flight (at least 1).
    pub fn new(max_concurrency: usize) -> Self {
        Self {
            cell: LimiterCell::new(Limiter::new(Config::new(max_concurrency)), false, 1),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let mut current = self.cell.lock();
        let mut config = current.limiter.config.clone();
        change(&mut config);
        if !current.in_service && self.cell.layers.load(Ordering::SeqCst) == 1 {
            // still building, and this layer alone stands for the limiter:
            // configure it where every handle taken so far looks
            current.limiter = Limiter::reconfigured(config, &current.limiter);
            drop(current);
            return self;
        }
        drop(current);
        self.cell.layers.fetch_sub(1, Ordering::SeqCst);
        self.cell = LimiterCell::new(Limiter::new(config), false, 1);
        self
    }

    /// At most `max` requests wait; 0 means none wait (no permit: shed).
    pub fn max_queue(self, max: usize) -> Self {
        self.with(|c| c.max_queue = max)
    }

    /// Shed a request that waited this long with
    /// [`OverloadReason::QueueTimeout`](crate::error::OverloadReason::QueueTimeout).
    /// Under a [`RetryLayer`](crate::retry::RetryLayer), a request is also
    /// shed so at its retry deadline, with or without this setting; one
    /// whose rate gate is closed until past that deadline (when it arrives,
    /// or when the gate closes while it waits) is shed then, with
    /// [`OverloadReason::GateClosed`](crate::error::OverloadReason::GateClosed).
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
            c.pacing = (requests > 0).then(|| PacingSpec::Smooth {
                interval: per / requests,
            });
        })
    }

    /// Pace to the limit the server advertises, and adapt to `429`s when
    /// it advertises none, so that no rate has to be configured.
    ///
    /// - From the first response that advertises a quota (Genesys
    ///   `inin-ratelimit-allowed`/`-count`/`-reset`, IETF `RateLimit` /
    ///   `RateLimit-Policy`, or `X-RateLimit-Limit`/`-Remaining`/`-Reset`;
    ///   see [`advertised_quota`](crate::hint::advertised_quota)), requests
    ///   are paced to the limit per window (the policy's window, else the
    ///   longest reset seen), and never faster than the requests remaining
    ///   spread over the time left in the current window (counting the
    ///   requests still in flight as spent), so that the window the
    ///   learning starts in is not overrun either. A quota whose window or
    ///   reset is over a day (a daily cap) is not paced to.
    /// - A `429` that advertises no quota cuts the rate to 80 % of the rate
    ///   measured over the last second; it climbs back to that rate in 10 s
    ///   along a CUBIC curve, then probes above it until the next `429`.
    ///   One cut per feedback window: a `429` to a request sent before the
    ///   last cut is ignored.
    /// - A rate set with [`pacing`](Self::pacing) becomes the ceiling:
    ///   learning only ever paces slower. [`initial_rate`](Self::initial_rate)
    ///   instead sets the rate used until something is learned.
    ///
    /// Paced slots still go to the best waiter by priority (with aging), and
    /// after the gate reopens waiters are paced out one by one. With
    /// [`pacing_window`](Self::pacing_window) or a [`pacer`](Self::pacer),
    /// nothing is learned. [`PriorityLimitHandle::pacing`] shows the rate in
    /// force and where it comes from; each change of the advertised rate and
    /// each cut is a [`LimiterEvent::PacingChanged`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::observe::PacingSource;
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// let layer = PriorityLimitLayer::new(16).learn_rate();
    /// // nothing paces until the server says something
    /// assert_eq!(layer.handle().pacing().source, PacingSource::Off);
    /// ```
    pub fn learn_rate(self) -> Self {
        self.with(|c| c.learn_rate = true)
    }

    /// With [`learn_rate`](Self::learn_rate): pace at `requests` per `per`
    /// until the server advertises a quota or answers `429`, then follow
    /// what is learned, faster or slower (unlike [`pacing`](Self::pacing),
    /// which learning never exceeds). No effect without `learn_rate`;
    /// `requests == 0` removes the initial rate.
    pub fn initial_rate(self, requests: u32, per: Duration) -> Self {
        self.with(|c| c.initial_rate = (requests > 0).then(|| per / requests))
    }

    /// Re-pace smooth [`pacing`](Self::pacing) to `inin-ratelimit-allowed`
    /// per window (the longest `inin-ratelimit-reset` seen, at most
    /// `window`), replacing the configured rate, faster or slower. No effect
    /// without smooth pacing, or with [`learn_rate`](Self::learn_rate).
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// use std::time::Duration;
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// let layer = PriorityLimitLayer::new(16)
    ///     .pacing(300, Duration::from_secs(60))
    ///     .learn_pacing(Duration::from_secs(60));
    /// assert_eq!(layer.handle().pacing_interval(), Some(Duration::from_millis(200)));
    /// ```
    #[deprecated(
        note = "use `learn_rate()` (every quota header family, `429`s too; `pacing` is then the ceiling) with `initial_rate(n, per)` for a starting rate the server may raise"
    )]
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
            c.pacing = (requests > 0).then_some(PacingSpec::Window { requests, per });
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
    /// a whole fleet through Redis) instead of the built-in pacing.
    ///
    /// Requests wait in the queue, by priority, for their slot. The limiter
    /// holds at most one reservation at a time: it asks the pacer for a
    /// slot at its best waiter's priority (aging included) once a permit is
    /// free, and when the slot comes due, the best waiter then is sent (a
    /// higher priority arriving meanwhile goes first; a waiter that gives up
    /// leaves the slot to the next). A pacer may defer a priority to keep
    /// the shared schedule's near future for higher ones
    /// ([`LocalPacer`](super::LocalPacer)'s horizons); the limiter then asks
    /// again when told, or at once for a higher priority. A slot that comes
    /// due while the rate gate is closed is given up, and the pacer is asked
    /// again when the gate reopens.
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
    /// [`pacing`](Self::pacing) rate, whether `pacing` is set before or
    /// after (no effect on [`pacing_window`](Self::pacing_window), which
    /// bursts by design, nor without pacing).
    pub fn pacing_burst(self, burst: u32) -> Self {
        self.with(|c| c.pacing_burst = burst.max(1))
    }

    /// The longest server hint that closes the rate gate (default 180 s, as
    /// the Genesys SDKs treat a longer `Retry-After` as a daily cap).
    ///
    /// A longer hint puts the limiter in the exhausted state until the
    /// hint's time: every queued request and every new one fails at once
    /// with [`QuotaExhausted`](crate::error::QuotaExhausted) (which the
    /// retry layer does not retry), and nothing is sent upstream. The
    /// response that carried the hint is returned as it is. With
    /// [`share_gate`](Self::share_gate), every limiter sharing the gate
    /// enters the state until the same time. Each entry is a
    /// [`LimiterEvent::QuotaExhausted`];
    /// [`LimiterStatus::quota_exhausted_for`](super::LimiterStatus::quota_exhausted_for)
    /// shows it.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use http::{Request, Response};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_cx::body::Body;
    /// use tower_cx::error::{BoxError, QuotaExhausted};
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = PriorityLimitLayer::new(4);
    /// let api = layer.layer(service_fn(|_req: Request<Body>| async {
    ///     // the daily cap is reached: come back in an hour
    ///     Ok::<_, BoxError>(Response::builder().status(429).header("retry-after", "3600").body(())?)
    /// }));
    /// let first = api.clone().oneshot(Request::new(Body::empty())).await?;
    /// assert_eq!(first.status(), 429);
    /// let err = api.oneshot(Request::new(Body::empty())).await.unwrap_err();
    /// let exhausted = err.downcast_ref::<QuotaExhausted>().expect("typed");
    /// assert_eq!(exhausted.retry_after(), Duration::from_secs(3600));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_gate(self, max: Duration) -> Self {
        self.with(|c| c.max_gate = max)
    }

    /// Keep the end of the server's quota for higher priorities: while the
    /// remaining quota is at most `low`, low-priority requests are shed;
    /// while it is at most `normal`, normal ones too. High priority is never
    /// shed by the reserve. 0 keeps no reserve for that priority; `low` is
    /// raised to `normal` if below it (low is never let through when
    /// normal is shed).
    ///
    /// The remaining quota is what the last response advertised
    /// (`inin-ratelimit-allowed` less `-count`, `RateLimit`'s `r` or
    /// `remaining`, `X-RateLimit-Remaining`; see
    /// [`advertised_quota`](crate::hint::advertised_quota)), less the
    /// requests sent since. It is forgotten when the advertised window
    /// resets; without a reset time it holds until the next response that
    /// advertises one. Until a response advertises a remaining count, the
    /// reserve sheds nothing.
    ///
    /// A shed request (new, or waiting in the queue when the quota falls)
    /// fails at once with [`Overloaded`](crate::error::Overloaded), reason
    /// [`QuotaReserve`](crate::error::OverloadReason::QuotaReserve), a
    /// [`LimiterEvent::Shed`]: it was not sent, and a retry layer may try
    /// it again later, as any shed request. A request's own priority
    /// counts, not the level aging raised it to.
    ///
    /// ```
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// // the last 50 requests of the window for normal and high, the last
    /// // 10 for high alone
    /// let layer = PriorityLimitLayer::new(16).quota_reserve(50, 10);
    /// # let _ = layer;
    /// ```
    pub fn quota_reserve(self, low: u32, normal: u32) -> Self {
        self.with(|c| {
            c.quota_reserve = (low > 0 || normal > 0).then_some((low.max(normal), normal));
        })
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

    /// A handle on the shared limiter (it follows later builder calls on
    /// this layer).
    pub fn handle(&self) -> PriorityLimitHandle {
        PriorityLimitHandle {
            cell: self.cell.clone(),
        }
    }
}

impl PriorityLimitLayer {
    /// Also take a slot from `pacer` for every request, keeping the
    /// built-in pacing (a keyed limiter's own rate inside a shared one).
    pub(crate) fn within(self, pacer: Arc<dyn Pacer>) -> Self {
        self.with(|c| c.pacer = Some(pacer))
    }

    /// The limiter the layer's services share, its settings final (as
    /// when the layer makes a service).
    pub(crate) fn into_limiter(self) -> Arc<Limiter> {
        let limiter = {
            let mut current = self.cell.lock();
            current.in_service = true;
            current.limiter.clone()
        };
        limiter.subscribe_to_share();
        limiter
    }
}

impl Clone for PriorityLimitLayer {
    fn clone(&self) -> Self {
        self.cell.layers.fetch_add(1, Ordering::SeqCst);
        Self {
            cell: self.cell.clone(),
        }
    }
}

impl Drop for PriorityLimitLayer {
    fn drop(&mut self) {
        self.cell.layers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> Layer<S> for PriorityLimitLayer {
    type Service = PriorityLimit<S>;

    /// Makes a service on the layer's limiter. The first one settles the
    /// limiter's settings and subscribes it to its gate share, so that a
    /// pause running elsewhere holds its very first request.
    fn layer(&self, inner: S) -> Self::Service {
        let limiter = {
            let mut current = self.cell.lock();
            current.in_service = true;
            current.limiter.clone()
        };
        limiter.subscribe_to_share();
        PriorityLimit::from_shared(inner, limiter)
    }
}

impl fmt::Debug for PriorityLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limiter = self.cell.limiter();
        f.debug_struct("PriorityLimitLayer")
            .field("max_concurrency", &limiter.config.max_concurrency)
            .field("max_queue", &limiter.config.max_queue)
            .field("handle", &self.handle())
            .finish()
    }
}
