//! Inspection and control of a limiter from outside: the status, the gate
//! by hand, and the cell that keeps a layer's handles on the limiter the
//! layer ends up configured with.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::limiter::Limiter;
use crate::observe::{per_minute, PacingSource};
use crate::retry_after::HintSource;

/// What the limiter holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterStatus {
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Permits free.
    pub available: usize,
    /// Waiting requests by priority: `[low, normal, high]`.
    pub queued: [usize; 3],
    /// Time until the rate gate reopens, if it is closed.
    pub gate_closed_for: Option<Duration>,
    /// While the gate is closed by a server hint this limiter saw (or a
    /// [`close_gate`](PriorityLimitHandle::close_gate) by hand, which
    /// counts as `Retry-After`): the header it came from. `None` while the
    /// gate is open, or closed by a limiter sharing it.
    pub gate_source: Option<HintSource>,
    /// Time until the exhausted state ends, while the limiter is in it (a
    /// server hint over [`max_gate`](super::PriorityLimitLayer::max_gate),
    /// a daily cap, seen here or by a limiter sharing the gate): until then
    /// every request fails at once with
    /// [`QuotaExhausted`](crate::error::QuotaExhausted).
    pub quota_exhausted_for: Option<Duration>,
}

/// The pacing in force: the rate, where it comes from, and the ceiling
/// on learning. See [`PriorityLimitHandle::pacing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingStatus {
    /// The time between dispatches now; `None`: not paced (no rate
    /// configured, or a sliding window, or none learned yet).
    pub interval: Option<Duration>,
    /// Where the rate comes from.
    pub source: PacingSource,
    /// The configured rate, as an interval, when learning may only pace
    /// slower than it ([`learn_rate`](super::PriorityLimitLayer::learn_rate)
    /// with [`pacing`](super::PriorityLimitLayer::pacing)).
    pub ceiling: Option<Duration>,
}

impl PacingStatus {
    /// The rate in force in requests per minute, to a tenth.
    pub fn per_minute(&self) -> Option<f64> {
        self.interval.map(per_minute)
    }
}

/// The limiter a layer stands for, shared by the layer and its handles.
///
/// While the layer is being built (no service made yet, no clone of the
/// layer configured apart), a builder call replaces the limiter here, so
/// that every handle taken so far sees the new settings.
pub(super) struct LimiterCell {
    current: Mutex<Current>,
    /// Layers (clones of one layer) standing for this limiter.
    pub(super) layers: AtomicUsize,
}

pub(super) struct Current {
    pub(super) limiter: Arc<Limiter>,
    /// The layer made a service with this limiter: settings are final.
    pub(super) in_service: bool,
}

impl LimiterCell {
    /// A cell for `layers` layers (0 for a handle taken from a service).
    pub(super) fn new(limiter: Arc<Limiter>, in_service: bool, layers: usize) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(Current {
                limiter,
                in_service,
            }),
            layers: AtomicUsize::new(layers),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn limiter(&self) -> Arc<Limiter> {
        self.lock().limiter.clone()
    }
}

/// A cloneable handle on a limiter's shared state.
///
/// A handle taken from a [`PriorityLimitLayer`](super::PriorityLimitLayer)
/// follows the layer's later builder calls: it observes the limiter the
/// services made by that layer use, whenever it was taken.
#[derive(Clone)]
pub struct PriorityLimitHandle {
    pub(super) cell: Arc<LimiterCell>,
}

impl PriorityLimitHandle {
    /// A handle on a limiter already in service.
    pub(super) fn fixed(limiter: Arc<Limiter>) -> Self {
        Self {
            cell: LimiterCell::new(limiter, true, 0),
        }
    }

    /// The interval between dispatches that smooth pacing keeps now
    /// (learned or configured); `None` without smooth pacing. The same as
    /// [`pacing`](Self::pacing)`().interval`.
    pub fn pacing_interval(&self) -> Option<Duration> {
        self.cell.limiter().pacing_interval()
    }

    /// The pacing in force: its rate, where the rate comes from (configured,
    /// advertised by the server and in which headers, or adapted from
    /// `429`s) and the configured ceiling.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::observe::PacingSource;
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// let layer = PriorityLimitLayer::new(16)
    ///     .learn_rate()
    ///     .pacing(300, Duration::from_secs(60));
    /// let pacing = layer.handle().pacing();
    /// // nothing learned yet: the ceiling paces
    /// assert_eq!(pacing.source, PacingSource::Configured);
    /// assert_eq!(pacing.per_minute(), Some(300.0));
    /// assert_eq!(pacing.ceiling, Some(Duration::from_millis(200)));
    /// ```
    pub fn pacing(&self) -> PacingStatus {
        self.cell.limiter().pacing_status()
    }

    /// In-flight requests, free permits, queue lengths, gate.
    pub fn status(&self) -> LimiterStatus {
        self.cell.limiter().snapshot()
    }

    /// When the exhausted state ends, while the limiter is in it (see
    /// [`LimiterStatus::quota_exhausted_for`]).
    pub fn quota_exhausted_until(&self) -> Option<tokio::time::Instant> {
        self.cell.limiter().exhausted_until()
    }

    /// Close the rate gate for `wait` (as a server hint would).
    pub fn close_gate(&self, wait: Duration) {
        let _ = self.cell.limiter().close_gate(wait, HintSource::RetryAfter);
    }

    /// Reopen the rate gate now and dispatch waiters.
    pub fn open_gate(&self) {
        self.cell.limiter().open_gate();
    }
}

impl fmt::Debug for PriorityLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityLimitHandle")
            .field("status", &self.status())
            .finish()
    }
}
