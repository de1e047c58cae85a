//! The rate gate: closed by a server hint (or by another limiter sharing
//! it), held while a shared gate's current state is not known yet, reopened
//! by a timer.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::limiter::{Limiter, Now, State};
use crate::observe::LimiterEvent;
use crate::retry_after::HintSource;
use crate::share::{Pausable, PauseTarget};

/// When the gate reopens.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Gate {
    /// Closed by a server hint (here or elsewhere) until then.
    paused: Option<Instant>,
    /// Held until then (at most) while the share finds out whether a pause
    /// is running elsewhere.
    held: Option<Instant>,
    /// The header of the hint behind `paused`, if it was seen here (`None`
    /// when a limiter sharing the gate closed it).
    source: Option<HintSource>,
}

impl Gate {
    /// When the gate reopens, if it is closed.
    pub(super) fn until(&self) -> Option<Instant> {
        match (self.paused, self.held) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The header of the server hint that closed it here, if one did.
    pub(super) fn source(&self) -> Option<HintSource> {
        self.paused.and(self.source)
    }

    /// Whether it is closed at `now`.
    pub(super) fn is_closed(&self, now: &mut Now) -> bool {
        self.until().is_some_and(|until| now.get() < until)
    }
}

impl Limiter {
    /// Close the gate for `wait` after a server hint, and tell the limiters
    /// sharing the gate; whether it closed (or stayed closed longer).
    pub(crate) fn close_gate(&self, wait: Duration, source: HintSource) -> bool {
        let closed = self.close_gate_with(wait, Some(source));
        if closed {
            if let Some(share) = &self.config.gate_share {
                share.announce(self.id, wait);
            }
        }
        closed
    }

    /// Close the gate until `now + wait` (never shortening it).
    fn close_gate_with(&self, wait: Duration, source: Option<HintSource>) -> bool {
        // A hint past the bound (a daily cap) is not pacing: it is the
        // exhausted state's (`exhaust`), not the gate's.
        if wait > self.config.max_gate {
            return false;
        }
        let Some(until) = Instant::now().checked_add(wait) else {
            return false;
        };
        let mut state = self.lock();
        if state.gate.paused.is_some_and(|current| current >= until) {
            return false;
        }
        state.gate.paused = Some(until);
        state.gate.source = source;
        self.gate_changed(&mut state);
        if self.config.on_event.is_some() {
            state.events.push(match source {
                Some(source) => LimiterEvent::GateClosed { for_: wait, source },
                None => LimiterEvent::GateClosedElsewhere { for_: wait },
            });
        }
        // every waiter looks again: one whose deadline comes before the
        // gate opens is refused now (`ResponseFuture`), not at its deadline
        let waiters = state.queue.wakers();
        self.unlock(state);
        waiters.into_iter().for_each(Waker::wake);
        true
    }

    /// After the gate closed further: mirror it, take the slow path, and
    /// arm the timer that reopens it (which also takes the limiter off the
    /// slow path).
    fn gate_changed(&self, state: &mut State) {
        let until = state.gate.until();
        self.gate_closed.store(until.is_some(), Ordering::SeqCst);
        self.slow.store(true, Ordering::SeqCst);
        if let Some(until) = until {
            self.arm_timer(state, until);
        }
    }

    /// Open the gate now (a hold too).
    pub(super) fn open(&self, state: &mut State) {
        state.gate = Gate::default();
        self.gate_closed.store(false, Ordering::SeqCst);
    }

    /// Open the gate if its time has passed; whether it did.
    pub(super) fn reopen_if_due(&self, state: &mut State, now: &mut Now) -> bool {
        match state.gate.until() {
            Some(until) if now.get() >= until => {
                self.open(state);
                true
            }
            _ => false,
        }
    }

    /// When the rate gate reopens, if it is closed now. Lock-free while the
    /// gate is open.
    pub(crate) fn gate_closed_until(&self) -> Option<Instant> {
        if !self.gate_closed.load(Ordering::SeqCst) {
            return None;
        }
        let until = self.lock().gate.until()?;
        (Instant::now() < until).then_some(until)
    }

    /// Subscribe to the gate share (when the layer makes its first
    /// service), so that a pause running elsewhere, or announced from now
    /// on, closes this gate before any request of this limiter goes.
    pub(super) fn subscribe_to_share(&self) {
        let Some(share) = &self.config.gate_share else {
            return;
        };
        if !self.subscribed.swap(true, Ordering::AcqRel) {
            let me: Weak<dyn Pausable> = self.me.clone();
            share.subscribe(PauseTarget::new(me, self.id));
        }
    }

    /// On the first request, inside the runtime: let the share start what
    /// it could not start when the limiter subscribed (outside a runtime).
    #[cold]
    pub(super) fn start_share(&self) {
        self.subscribe_to_share();
        if !self.started.swap(true, Ordering::AcqRel) {
            if let Some(share) = &self.config.gate_share {
                share.start();
            }
        }
    }
}

impl Pausable for Limiter {
    /// Another limiter saw a hint: close this gate too.
    fn pause_from_share(&self, pause: Duration) {
        self.close_gate_with(pause, None);
    }

    /// Another limiter saw a daily cap: exhausted too, until the same time.
    fn exhaust_from_share(&self, wait: Duration) {
        self.exhaust_with(wait, None);
    }

    /// Hold the gate for at most `at_most`, until the share knows whether a
    /// pause runs elsewhere.
    fn hold_for_share(&self, at_most: Duration) {
        let Some(until) = Instant::now().checked_add(at_most) else {
            return;
        };
        let mut state = self.lock();
        if state.gate.held.is_some_and(|held| held >= until) {
            return;
        }
        state.gate.held = Some(until);
        self.gate_changed(&mut state);
        self.unlock(state);
    }

    /// The share knows now: end the hold (a pause it delivered stays).
    fn release_from_share(&self) {
        let mut state = self.lock();
        if state.gate.held.take().is_none() {
            drop(state);
            return;
        }
        let mut now = Now::default();
        if !state.gate.is_closed(&mut now) {
            self.open(&mut state);
        }
        self.dispatch(&mut state, &mut now, false);
        self.unlock(state);
    }
}
