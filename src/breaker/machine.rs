//! The breaker's state machine, shared by every service of one layer and
//! by its handles.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::config::Config;
use super::transition::{advance, close, emit, public_state, trip};
use super::window::Window;
use super::{BreakerCounts, BreakerEvent, BreakerState, TransitionReason};
use crate::backoff::BackoffState;
use crate::error::CircuitOpen;
use crate::share::{Pausable, PauseShare, PauseTarget};

pub(super) enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
    Isolated,
}

pub(super) struct Inner {
    /// The latest settings: a builder method called after a handle was
    /// taken still applies to the breaker that handle watches.
    pub(super) config: Arc<Config>,
    pub(super) phase: Phase,
    pub(super) trips_in_a_row: u32,
    pub(super) open_backoff: BackoffState,
    pub(super) probes_in_flight: u32,
    pub(super) probe_successes: u32,
    /// Which half-open round the probes belong to: a probe from an earlier
    /// round must not touch this round's slots or successes.
    pub(super) round: u64,
    /// The counts but `successes` and `consecutive_failures`, kept in
    /// [`Hot`].
    pub(super) counts: BreakerCounts,
    /// Transitions to report once the lock is released (a callback must
    /// be free to call the handle).
    pub(super) pending: Vec<BreakerEvent>,
    /// A trip to announce to the breakers sharing this one's state, once
    /// the lock is released.
    pub(super) announce: Option<Duration>,
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Closed,
    /// A half-open probe of the given round.
    Probe(u64),
}

/// What an admitted request's outcome says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    /// A failure, with the server's wait hint if the response carried one
    /// (used as the open duration).
    Failure {
        hint: Option<Duration>,
    },
}

/// What a success while closed changes, kept out of the lock so that the
/// commonest outcome takes no lock (see [`Core::record`]). Only the lock
/// holder resets the window's buckets or counts a failure.
pub(super) struct Hot {
    pub(super) successes: AtomicU64,
    /// Failures in a row while closed.
    pub(super) consecutive: AtomicU32,
    pub(super) window: Window,
}

/// The shared state machine. Built once per layer, before any setting:
/// the layer's builder methods update its settings in place.
pub(crate) struct Core {
    closed: AtomicBool,
    hot: Hot,
    inner: Mutex<Inner>,
    me: Weak<Core>,
    /// A process-unique id (for state sharing).
    id: u64,
    subscribed: AtomicBool,
}

/// One service's view of a breaker: the settings the layer had when it
/// made the service (read without a lock on the hot path), and the shared
/// state machine.
pub(crate) struct Breaker {
    pub(crate) config: Arc<Config>,
    pub(crate) core: Arc<Core>,
}

impl Core {
    pub(crate) fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            id: crate::share::next_id(),
            subscribed: AtomicBool::new(false),
            closed: AtomicBool::new(true),
            hot: Hot {
                successes: AtomicU64::new(0),
                consecutive: AtomicU32::new(0),
                window: Window::new(Instant::now(), config.window),
            },
            inner: Mutex::new(Inner {
                config,
                phase: Phase::Closed,
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

    /// Replace the settings (a builder method of the layer).
    pub(crate) fn configure(&self, config: Arc<Config>) {
        let mut inner = self.lock();
        self.hot.window.set_length(config.window);
        inner.config = config;
    }

    /// Release the lock, then report what happened under it; the events
    /// are also returned, for the request that caused them.
    fn unlock(&self, mut inner: MutexGuard<'_, Inner>) -> Vec<BreakerEvent> {
        if inner.pending.is_empty() && inner.announce.is_none() {
            return Vec::new();
        }
        let events = std::mem::take(&mut inner.pending);
        let announce = inner.announce.take();
        // the settings are cloned only when there is something to report
        let config = inner.config.clone();
        drop(inner);
        if let (Some(open_for), Some(share)) = (announce, &config.share) {
            share.announce(self.id, open_for);
        }
        if let Some(handler) = &config.on_event {
            for event in &events {
                handler(event);
            }
        }
        events
    }

    /// Let a request through, or refuse it. Inlined: while closed, this
    /// is a load of the flag; the rest is out of line.
    #[inline]
    pub(crate) fn admit(
        &self,
        share: Option<&Arc<dyn PauseShare>>,
    ) -> (Result<Admission, CircuitOpen>, Vec<BreakerEvent>) {
        if let Some(share) = share {
            self.subscribe(share.as_ref());
        }
        if self.closed.load(Ordering::Acquire) {
            return (Ok(Admission::Closed), Vec::new());
        }
        self.admit_locked()
    }

    #[inline(never)]
    fn admit_locked(&self) -> (Result<Admission, CircuitOpen>, Vec<BreakerEvent>) {
        let now = Instant::now();
        let mut inner = self.lock();
        advance(&mut inner, now);
        let result = match inner.phase {
            Phase::Closed => Ok(Admission::Closed),
            Phase::Open { until } => Err(CircuitOpen::new(Some(until - now))),
            Phase::HalfOpen if inner.probes_in_flight < inner.config.probes => {
                inner.probes_in_flight += 1;
                Ok(Admission::Probe(inner.round))
            }
            Phase::HalfOpen => Err(CircuitOpen::new(Some(inner.config.half_open_retry_in))),
            Phase::Isolated => Err(CircuitOpen::new(None)),
        };
        if result.is_err() {
            inner.counts.rejected += 1;
        }
        (result, self.unlock(inner))
    }

    /// Subscribe to the shared state once. A share may need the runtime
    /// (Redis listens in a task): outside one this waits for the first
    /// request.
    pub(crate) fn subscribe_early(&self, share: &dyn PauseShare) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.subscribe(share);
        }
    }

    /// Subscribe to the shared state once, from inside the runtime.
    fn subscribe(&self, share: &dyn PauseShare) {
        if !self.subscribed.load(Ordering::Relaxed) {
            self.subscribe_cold(share);
        }
    }

    #[cold]
    fn subscribe_cold(&self, share: &dyn PauseShare) {
        if !self.subscribed.swap(true, Ordering::AcqRel) {
            let me: Weak<dyn Pausable> = self.me.clone();
            share.subscribe(PauseTarget::new(me, self.id));
        }
    }

    /// Record the outcome of an admitted request. Inlined: the fast path
    /// is small, the locked path out of line.
    #[inline]
    pub(crate) fn record(&self, admission: Admission, verdict: Verdict) -> Vec<BreakerEvent> {
        if admission == Admission::Closed
            && verdict == Verdict::Success
            && self.record_closed_success()
        {
            return Vec::new();
        }
        self.record_locked(admission, verdict)
    }

    /// The fast path of the commonest outcome, a success while closed: it
    /// cannot trip the breaker, so it takes no lock. It counts the
    /// success, ends the failures in a row and adds to the window's
    /// current bucket; `false` (nothing done) when the breaker is not
    /// closed or the bucket must turn over first.
    ///
    /// Racing a trip, the success lands as if recorded just before it (the
    /// trip zeroes the failures in a row and clears the window anyway) or
    /// just after it (counted, moving nothing): the window a later closed
    /// phase judges by starts empty at its close, as it always did.
    #[inline]
    fn record_closed_success(&self) -> bool {
        if !self.closed.load(Ordering::Acquire) || !self.hot.window.add_success(Instant::now()) {
            return false;
        }
        self.hot.successes.fetch_add(1, Ordering::Relaxed);
        if self.hot.consecutive.load(Ordering::Relaxed) != 0 {
            self.hot.consecutive.store(0, Ordering::Relaxed);
        }
        true
    }

    #[inline(never)]
    fn record_locked(&self, admission: Admission, verdict: Verdict) -> Vec<BreakerEvent> {
        let mut inner = self.lock();
        // read under the lock: the window's buckets only turn forward
        let now = Instant::now();
        let (failure, hint) = match verdict {
            Verdict::Success => (false, None),
            Verdict::Failure { hint } => (true, hint),
        };
        if failure {
            inner.counts.failures += 1;
        } else {
            self.hot.successes.fetch_add(1, Ordering::Relaxed);
        }
        match (admission, &inner.phase) {
            (Admission::Closed, Phase::Closed) => {
                let consecutive = if failure {
                    let after = |n: u32| Some(n.saturating_add(1));
                    let before = self.hot.consecutive.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        after,
                    );
                    before.map_or(u32::MAX, |n| n.saturating_add(1))
                } else {
                    self.hot.consecutive.store(0, Ordering::Relaxed);
                    0
                };
                let config = &*inner.config;
                let (min, ratio) = (config.min_throughput, config.failure_ratio);
                let trip_after = config.consecutive_failures;
                let window = self.hot.window.add(now, failure);
                let rate_exceeded = window.is_some_and(|(total, failures)| {
                    total >= min && ratio > 0.0 && f64::from(failures) >= ratio * f64::from(total)
                });
                if failure && consecutive >= trip_after {
                    let reason = TransitionReason::ConsecutiveFailures;
                    trip(&mut inner, &self.hot, now, hint, reason);
                } else if rate_exceeded {
                    trip(
                        &mut inner,
                        &self.hot,
                        now,
                        hint,
                        TransitionReason::FailureRate,
                    );
                }
            }
            (Admission::Probe(round), Phase::HalfOpen) if round == inner.round => {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                if failure {
                    trip(
                        &mut inner,
                        &self.hot,
                        now,
                        hint,
                        TransitionReason::ProbeFailed,
                    );
                } else {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= inner.config.probe_successes {
                        close(
                            &mut inner,
                            &self.hot,
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
        self.sync_closed(&inner);
        self.unlock(inner)
    }

    /// A probe ended without an outcome (its future was dropped, or it
    /// was never sent).
    pub(crate) fn release_probe(&self, round: u64) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::HalfOpen) && inner.round == round {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    /// The fast path's flag follows the phase.
    fn sync_closed(&self, inner: &Inner) {
        let closed = matches!(inner.phase, Phase::Closed);
        if self.closed.load(Ordering::Relaxed) != closed {
            self.closed.store(closed, Ordering::Release);
        }
    }

    /// The current state (an open breaker whose time has come reports, and
    /// becomes, half-open).
    pub(crate) fn state(&self) -> BreakerState {
        let now = Instant::now();
        let mut inner = self.lock();
        advance(&mut inner, now);
        let state = public_state(&inner, now);
        self.unlock(inner);
        state
    }

    pub(crate) fn counts(&self) -> BreakerCounts {
        let mut counts = self.lock().counts;
        counts.successes = self.hot.successes.load(Ordering::Relaxed);
        counts.consecutive_failures = self.hot.consecutive.load(Ordering::Relaxed);
        counts
    }

    pub(crate) fn isolate(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let from = public_state(&inner, now);
        inner.phase = Phase::Isolated;
        self.sync_closed(&inner);
        emit(
            &mut inner,
            from,
            BreakerState::Isolated,
            TransitionReason::Isolated,
        );
        self.unlock(inner);
    }

    pub(crate) fn reset(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let from = public_state(&inner, now);
        close(&mut inner, &self.hot, from, TransitionReason::Reset);
        self.sync_closed(&inner);
        self.unlock(inner);
    }
}

impl Pausable for Core {
    /// Another breaker tripped: open this one for as long (at most
    /// [`max_open`](crate::breaker::CircuitBreakerLayer::max_open), as for
    /// its own trips: one bad shared message cannot open it for years),
    /// unless it is already open longer or isolated. Its own trip count
    /// does not grow.
    fn pause_from_share(&self, pause: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let pause = pause.min(inner.config.max_open);
        let Some(until) = now.checked_add(pause) else {
            return;
        };
        let from = public_state(&inner, now);
        match inner.phase {
            Phase::Isolated => {}
            Phase::Open { until: current } if current >= until => {}
            Phase::Open { .. } => inner.phase = Phase::Open { until },
            Phase::Closed | Phase::HalfOpen => {
                inner.phase = Phase::Open { until };
                // probes of a half-open round in flight no longer count
                inner.round += 1;
                inner.probes_in_flight = 0;
                self.hot.consecutive.store(0, Ordering::Relaxed);
                emit(
                    &mut inner,
                    from,
                    BreakerState::Open { retry_in: pause },
                    TransitionReason::Shared,
                );
            }
        }
        self.sync_closed(&inner);
        self.unlock(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Successes recorded from several threads at once, most of them
    /// without the lock, each count exactly once: in the counts and in the
    /// window a failure then sums.
    #[tokio::test(start_paused = true)]
    async fn concurrent_successes_each_count_once() {
        let config = Config {
            consecutive_failures: u32::MAX,
            ..Config::default()
        };
        let core = Core::new(Arc::new(config));
        let runtime = tokio::runtime::Handle::current();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (core, runtime) = (core.clone(), runtime.clone());
                std::thread::spawn(move || {
                    let _paused_clock = runtime.enter();
                    for _ in 0..5_000 {
                        core.record(Admission::Closed, Verdict::Success);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let counts = core.counts();
        assert_eq!((counts.successes, counts.failures), (20_000, 0));
        let _ = core.record(Admission::Closed, Verdict::Failure { hint: None });
        assert_eq!(core.counts().consecutive_failures, 1);
        assert_eq!(core.hot.window.add(Instant::now(), true), Some((20_002, 2)));
        assert_eq!(core.state(), BreakerState::Closed);
    }
}
