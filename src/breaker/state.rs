//! The breaker's shared state machine and its handle.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffState, Jitter, SharedRng};
use crate::error::CircuitOpen;
use crate::share::{Pausable, PauseShare, PauseTarget};

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
    /// Isolated by hand: every request fails fast until [`reset`](CircuitBreakerHandle::reset).
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

/// A state change of the breaker.
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
    /// [`CircuitBreakerHandle::isolate`] was called.
    Isolated,
    /// [`CircuitBreakerHandle::reset`] was called.
    Reset,
    /// Another breaker sharing this one's state (see
    /// [`CircuitBreakerLayer::share_state`](super::CircuitBreakerLayer::share_state))
    /// tripped.
    Shared,
}

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
            on_event: None,
            share: None,
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Bucket {
    number: u64,
    total: u32,
    failures: u32,
}

enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
    Isolated,
}

struct Inner {
    phase: Phase,
    consecutive: u32,
    buckets: [Bucket; BUCKETS],
    origin: Instant,
    trips_in_a_row: u32,
    open_backoff: BackoffState,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Which half-open round the probes belong to: a probe from an earlier
    /// round must not touch this round's slots or successes.
    round: u64,
    counts: BreakerCounts,
    /// Transitions to report once the lock is released (a callback must
    /// be free to call the handle).
    pending: Vec<BreakerEvent>,
    /// A trip to announce to the breakers sharing this one's state, once
    /// the lock is released.
    announce: Option<Duration>,
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Closed,
    /// A half-open probe of the given round.
    Probe(u64),
}

pub(crate) struct Breaker {
    pub(crate) config: Config,
    closed: AtomicBool,
    inner: Mutex<Inner>,
    me: Weak<Breaker>,
    /// A process-unique id (for state sharing).
    id: u64,
    subscribed: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            id: crate::share::next_id(),
            subscribed: AtomicBool::new(false),
            config,
            closed: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                buckets: [Bucket::default(); BUCKETS],
                origin: Instant::now(),
                trips_in_a_row: 0,
                open_backoff: BackoffState::default(),
                probes_in_flight: 0,
                probe_successes: 0,
                round: 0,
                counts: BreakerCounts::default(),
                pending: Vec::new(),
                announce: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(
        &self,
        inner: &mut Inner,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
    ) {
        inner.pending.push(BreakerEvent { from, to, reason });
    }

    /// Release the lock, then report what happened under it; the events
    /// are also returned, for the request that caused them.
    fn unlock(&self, mut inner: MutexGuard<'_, Inner>) -> Vec<BreakerEvent> {
        let events = std::mem::take(&mut inner.pending);
        let announce = inner.announce.take();
        drop(inner);
        if let (Some(open_for), Some(share)) = (announce, &self.config.share) {
            share.announce(self.id, open_for);
        }
        if let Some(handler) = &self.config.on_event {
            for event in &events {
                handler(event);
            }
        }
        events
    }

    /// Let a request through, or refuse it.
    pub(crate) fn admit(&self) -> (Result<Admission, CircuitOpen>, Vec<BreakerEvent>) {
        if let Some(share) = &self.config.share {
            self.subscribe(share.as_ref());
        }
        if self.closed.load(Ordering::Acquire) {
            return (Ok(Admission::Closed), Vec::new());
        }
        let now = Instant::now();
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        let result = match inner.phase {
            Phase::Closed => Ok(Admission::Closed),
            Phase::Open { until } => Err(CircuitOpen::new(Some(until - now))),
            Phase::HalfOpen if inner.probes_in_flight < self.config.probes => {
                inner.probes_in_flight += 1;
                Ok(Admission::Probe(inner.round))
            }
            Phase::HalfOpen => Err(CircuitOpen::new(Some(self.config.half_open_retry_in))),
            Phase::Isolated => Err(CircuitOpen::new(None)),
        };
        if result.is_err() {
            inner.counts.rejected += 1;
        }
        (result, self.unlock(inner))
    }

    /// Subscribe to the shared state once, from inside the runtime.
    #[cold]
    fn subscribe(&self, share: &dyn PauseShare) {
        if !self.subscribed.load(Ordering::Relaxed) && !self.subscribed.swap(true, Ordering::AcqRel)
        {
            let me: Weak<dyn Pausable> = self.me.clone();
            share.subscribe(PauseTarget::new(me, self.id));
        }
    }

    /// Move Open to HalfOpen once its time has come.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if let Phase::Open { until } = inner.phase {
            if now >= until {
                inner.phase = Phase::HalfOpen;
                inner.probes_in_flight = 0;
                inner.probe_successes = 0;
                inner.round += 1;
                self.emit(
                    inner,
                    BreakerState::Open {
                        retry_in: Duration::ZERO,
                    },
                    BreakerState::HalfOpen,
                    TransitionReason::OpenElapsed,
                );
            }
        }
    }

    /// Record the outcome of an admitted request. `hint` is a server's
    /// wait hint on a failed response, used as the open duration.
    pub(crate) fn record(
        &self,
        admission: Admission,
        failure: bool,
        hint: Option<Duration>,
    ) -> Vec<BreakerEvent> {
        let now = Instant::now();
        let mut inner = self.lock();
        if failure {
            inner.counts.failures += 1;
        } else {
            inner.counts.successes += 1;
        }
        match (admission, &inner.phase) {
            (Admission::Closed, Phase::Closed) => {
                inner.consecutive = if failure { inner.consecutive + 1 } else { 0 };
                inner.counts.consecutive_failures = inner.consecutive;
                let window = self.add_to_window(&mut inner, now, failure);
                let rate_exceeded = window.is_some_and(|(total, failures)| {
                    total >= self.config.min_throughput
                        && self.config.failure_ratio > 0.0
                        && f64::from(failures) >= self.config.failure_ratio * f64::from(total)
                });
                if failure && inner.consecutive >= self.config.consecutive_failures {
                    self.trip(&mut inner, now, hint, TransitionReason::ConsecutiveFailures);
                } else if rate_exceeded {
                    self.trip(&mut inner, now, hint, TransitionReason::FailureRate);
                }
            }
            (Admission::Probe(round), Phase::HalfOpen) if round == inner.round => {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                if failure {
                    self.trip(&mut inner, now, hint, TransitionReason::ProbeFailed);
                } else {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= self.config.probe_successes {
                        self.close(
                            &mut inner,
                            BreakerState::HalfOpen,
                            TransitionReason::ProbesSucceeded,
                        );
                    }
                }
            }
            // An outcome from before the last transition: counted, but it
            // does not move the state.
            _ => {}
        }
        self.unlock(inner)
    }

    /// A probe ended without an outcome (its future was dropped).
    pub(crate) fn release_probe(&self, round: u64) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::HalfOpen) && inner.round == round {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    /// Count an outcome in the failure-rate window; for a failure, the
    /// window's `(total, failures)` (a success needs no sum).
    fn add_to_window(&self, inner: &mut Inner, now: Instant, failure: bool) -> Option<(u32, u32)> {
        let bucket_len = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(inner.origin);
        // nanoseconds in a u64 last 584 years: no 128-bit division
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let number = nanos(elapsed) / nanos(bucket_len);
        let slot = &mut inner.buckets[(number % BUCKETS as u64) as usize];
        if slot.number != number {
            *slot = Bucket {
                number,
                total: 0,
                failures: 0,
            };
        }
        slot.total += 1;
        slot.failures += u32::from(failure);
        failure.then(|| {
            inner
                .buckets
                .iter()
                .filter(|b| number.saturating_sub(b.number) < BUCKETS as u64 && b.number <= number)
                .fold((0, 0), |(t, f), b| (t + b.total, f + b.failures))
        })
    }

    fn trip(
        &self,
        inner: &mut Inner,
        now: Instant,
        hint: Option<Duration>,
        reason: TransitionReason,
    ) {
        let from = self.public_state(inner, now);
        inner.trips_in_a_row += 1;
        inner.counts.trips += 1;
        let backoff = self.config.open_backoff.next_delay(
            inner.trips_in_a_row,
            &mut inner.open_backoff,
            &self.config.rng,
        );
        let open_for = hint.unwrap_or(backoff).min(self.config.max_open);
        inner.phase = Phase::Open {
            // a hint too far to represent is as good as forever
            until: now
                .checked_add(open_for)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
        };
        inner.consecutive = 0;
        inner.counts.consecutive_failures = 0;
        inner.buckets = [Bucket::default(); BUCKETS];
        self.closed.store(false, Ordering::Release);
        if reason != TransitionReason::Shared {
            inner.announce = Some(open_for);
        }
        self.emit(
            inner,
            from,
            BreakerState::Open { retry_in: open_for },
            reason,
        );
    }

    fn close(&self, inner: &mut Inner, from: BreakerState, reason: TransitionReason) {
        inner.phase = Phase::Closed;
        inner.consecutive = 0;
        inner.counts.consecutive_failures = 0;
        inner.trips_in_a_row = 0;
        inner.open_backoff = BackoffState::default();
        inner.buckets = [Bucket::default(); BUCKETS];
        inner.probes_in_flight = 0;
        self.closed.store(true, Ordering::Release);
        self.emit(inner, from, BreakerState::Closed, reason);
    }

    fn public_state(&self, inner: &Inner, now: Instant) -> BreakerState {
        match inner.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } => BreakerState::Open {
                retry_in: until.saturating_duration_since(now),
            },
            Phase::HalfOpen => BreakerState::HalfOpen,
            Phase::Isolated => BreakerState::Isolated,
        }
    }
}

impl Pausable for Breaker {
    /// Another breaker tripped: open this one for as long (at most
    /// [`max_open`](crate::breaker::CircuitBreakerLayer::max_open), as for
    /// its own trips: one bad shared message cannot open it for years),
    /// unless it is already open longer or isolated. Its own trip count
    /// does not grow.
    fn pause_from_share(&self, pause: Duration) {
        let pause = pause.min(self.config.max_open);
        let now = Instant::now();
        let Some(until) = now.checked_add(pause) else {
            return;
        };
        let mut inner = self.lock();
        let from = self.public_state(&inner, now);
        match inner.phase {
            Phase::Isolated => {}
            Phase::Open { until: current } if current >= until => {}
            Phase::Open { .. } => inner.phase = Phase::Open { until },
            Phase::Closed | Phase::HalfOpen => {
                inner.phase = Phase::Open { until };
                // probes of a half-open round in flight no longer count
                inner.round += 1;
                inner.probes_in_flight = 0;
                inner.consecutive = 0;
                inner.counts.consecutive_failures = 0;
                self.closed.store(false, Ordering::Release);
                self.emit(
                    &mut inner,
                    from,
                    BreakerState::Open { retry_in: pause },
                    TransitionReason::Shared,
                );
            }
        }
        self.unlock(inner);
    }
}

/// A cloneable handle on a breaker's shared state: inspect it, isolate it,
/// reset it.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    /// The current state (an open breaker whose time has come reports, and
    /// becomes, half-open).
    pub fn state(&self) -> BreakerState {
        let now = Instant::now();
        let mut inner = self.breaker.lock();
        self.breaker.advance(&mut inner, now);
        let state = self.breaker.public_state(&inner, now);
        self.breaker.unlock(inner);
        state
    }

    /// The counts so far.
    pub fn counts(&self) -> BreakerCounts {
        self.breaker.lock().counts
    }

    /// Refuse every request until [`reset`](Self::reset).
    pub fn isolate(&self) {
        let now = Instant::now();
        let mut inner = self.breaker.lock();
        let from = self.breaker.public_state(&inner, now);
        inner.phase = Phase::Isolated;
        self.breaker.closed.store(false, Ordering::Release);
        self.breaker.emit(
            &mut inner,
            from,
            BreakerState::Isolated,
            TransitionReason::Isolated,
        );
        self.breaker.unlock(inner);
    }

    /// Close the breaker and forget its history.
    pub fn reset(&self) {
        let now = Instant::now();
        let mut inner = self.breaker.lock();
        let from = self.breaker.public_state(&inner, now);
        self.breaker
            .close(&mut inner, from, TransitionReason::Reset);
        self.breaker.unlock(inner);
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
