//! The limiter's side of an external [`Pacer`]: it holds at most one
//! reservation at a time, asked at the priority of its best waiter, and its
//! dispatch hands the slot to whichever waiter is best when the slot comes
//! due. Waiters never hold slots, so a request of higher priority arriving
//! meanwhile goes first, and a waiter that gives up loses nothing.
//!
//! The pacer is asked outside the limiter's lock (see
//! [`Limiter::unlock`]): at once when its answer is ready at once
//! ([`LocalPacer`](super::LocalPacer)), else in a task of its own (Redis),
//! which holds the limiter weakly and tells it the answer.

use std::sync::Weak;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::limiter::{Limiter, Now, State};
use super::shared::Reservation;
use super::Priority;
use crate::observe::LimiterEvent;

/// What the limiter holds of its external pacer's schedule.
#[derive(Debug, Default)]
pub(super) struct Reserved {
    /// A slot the pacer granted: a dispatch may go from then on.
    slot: Option<Instant>,
    /// The pacer is being asked.
    asking: bool,
    /// The pacer deferred the last question, asked at this priority: not
    /// asked again at it (or lower) before then.
    deferred: Option<(Instant, Priority)>,
}

impl Reserved {
    /// Whether nothing is held or asked of the pacer.
    pub(super) fn is_empty(&self) -> bool {
        self.slot.is_none() && !self.asking
    }
}

impl Limiter {
    /// Whether a dispatch may go now on the external pacer's schedule; if
    /// so, its slot is taken. If not, a timer or a question to the pacer is
    /// arranged, for the best waiter. `true` without an external pacer.
    pub(super) fn take_reserved(&self, state: &mut State, now: &mut Now) -> bool {
        let Some(reserved) = state.reserved.as_mut() else {
            return true;
        };
        if let Some(at) = reserved.slot {
            if at <= now.get() {
                reserved.slot = None;
                return true;
            }
            self.arm_timer(state, at);
            return false;
        }
        if reserved.asking {
            return false;
        }
        let (aging, lifo_after) = (self.config.aging, self.config.lifo_after);
        let Some(priority) = state.queue.best_level(aging, lifo_after, now) else {
            return false;
        };
        // deferred, unless a higher priority waits now
        if let Some((at, below)) = reserved.deferred {
            if at > now.get() && priority <= below {
                self.arm_timer(state, at);
                return false;
            }
        }
        reserved.asking = true;
        reserved.deferred = None;
        state.ask = Some(priority);
        false
    }

    /// Whether an arrival may go at once: a permit is free and a slot is
    /// due (taken if so). Only for an arrival that finds nobody waiting.
    pub(super) fn take_due_slot(&self, state: &mut State, now: &mut Now) -> bool {
        let due = state
            .reserved
            .as_ref()
            .and_then(|r| r.slot)
            .is_some_and(|at| at <= now.get());
        if due && self.try_acquire() {
            if let Some(reserved) = state.reserved.as_mut() {
                reserved.slot = None;
            }
            return true;
        }
        false
    }

    /// The gate is closed until `until`: a slot due before it reopens is
    /// given up (sending it late would add to the burst at reopening), and
    /// the pacer is asked again when it does.
    pub(super) fn drop_slot_before(&self, state: &mut State, until: Instant) {
        if let Some(reserved) = state.reserved.as_mut() {
            if reserved.slot.is_some_and(|at| at < until) {
                reserved.slot = None;
            }
        }
    }

    /// Ask the pacer for a slot at `priority` (the lock released). The
    /// answer, if ready at once; else a task waits for it.
    pub(super) fn ask_pacer(&self, priority: Priority) -> Option<Reservation> {
        let pacer = self.config.pacer.as_ref()?;
        let mut future = pacer.reserve(priority);
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(reservation) = future.as_mut().poll(&mut cx) {
            return Some(reservation);
        }
        let asking = Asking {
            limiter: self.me.clone(),
            answered: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let mut asking = asking;
                    let reservation = future.await;
                    asking.answered = true;
                    if let Some(limiter) = asking.limiter.upgrade() {
                        let mut state = limiter.lock();
                        limiter.reservation(&mut state, priority, reservation);
                        limiter.unlock(state);
                    }
                });
            }
            // outside a runtime nothing can wait for the answer: `asking`
            // is dropped unanswered, and the next dispatch asks again
            Err(_) => drop(asking),
        }
        None
    }

    /// The pacer answered a question asked at `priority`: keep the slot,
    /// or the time to ask again, and dispatch.
    pub(super) fn reservation(
        &self,
        state: &mut State,
        priority: Priority,
        reservation: Reservation,
    ) {
        let mut now = Now::default();
        let Some(reserved) = state.reserved.as_mut() else {
            return;
        };
        reserved.asking = false;
        match reservation {
            Reservation::Granted(wait) => {
                reserved.slot = Some(now.get().checked_add(wait).unwrap_or_else(far));
            }
            Reservation::Deferred(wait) => {
                let at = now.get().checked_add(wait).unwrap_or_else(far);
                reserved.deferred = Some((at, priority));
                if self.config.on_event.is_some() {
                    let deferred = LimiterEvent::PacerDeferred {
                        priority,
                        for_: wait,
                    };
                    state.events.push(deferred);
                }
            }
        }
        self.dispatch(state, &mut now, false);
    }
}

/// A time too far to represent: about 30 years from now.
fn far() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365 * 30)
}

/// A question to the pacer in flight. Dropped unanswered (its task
/// cancelled, say as its runtime shut down), it lets the limiter ask again.
struct Asking {
    limiter: Weak<Limiter>,
    answered: bool,
}

impl Drop for Asking {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(limiter) = self.limiter.upgrade() {
            let mut state = limiter.lock();
            if let Some(reserved) = state.reserved.as_mut() {
                reserved.asking = false;
            }
            drop(state);
        }
    }
}
