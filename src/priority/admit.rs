//! Admission: what an arriving request gets from the limiter (a permit, a
//! place in the queue, or a refusal), the lock-free fast path first.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::limiter::{Limiter, Now, Permit, State};
use super::queue::{Queue, Slot, Ticket};
use super::Priority;
use crate::error::{OverloadReason, Overloaded, QuotaExhausted};
use crate::observe::LimiterEvent;

/// What an arrival gets.
pub(crate) enum Admission {
    Permit(Permit),
    Queued(Ticket),
    Rejected(Overloaded),
    Exhausted(QuotaExhausted),
}

impl Limiter {
    #[cfg(test)]
    pub(crate) fn admit(self: &Arc<Self>, priority: Priority) -> Admission {
        self.admit_costing(priority, 1)
    }

    /// The fast path: a free permit when nothing needs the lock (nobody
    /// waits, the gate is open, no pacing, the gate share started). Small
    /// enough to inline into the service's `call`, so that the usual
    /// request builds no [`Admission`] and takes no lock; `None` sends it
    /// to [`admit_costing`](Self::admit_costing).
    #[inline]
    pub(crate) fn try_permit(self: &Arc<Self>) -> Option<Permit> {
        let fast = self.started.load(Ordering::Relaxed) && !self.slow.load(Ordering::SeqCst);
        (fast && self.try_acquire()).then(|| Permit::new(self.clone()))
    }

    /// Admit a request costing `cost` pacing slots.
    pub(crate) fn admit_costing(self: &Arc<Self>, priority: Priority, cost: u32) -> Admission {
        if !self.started.load(Ordering::Relaxed) {
            self.start_share();
        }
        // Fast path: nobody waits, the gate is open, no pacing.
        if !self.slow.load(Ordering::SeqCst) && self.try_acquire() {
            return Admission::Permit(Permit::new(self.clone()));
        }
        self.admit_slow(priority, cost)
    }

    /// Admission under the lock: a permit if nothing stands in the way, else
    /// a place in the queue (or a refusal).
    fn admit_slow(self: &Arc<Self>, priority: Priority, cost: u32) -> Admission {
        // Without pacing, the slow path nearly always means queueing: make
        // the waiter's mailbox before taking the lock, not while holding it.
        let mut slot = self.config.pacing.is_none().then(Slot::new);
        let mut now = Now::default();
        let mut state = self.lock();
        if let Some(refusal) = self.refuse(&mut state, priority, &mut now) {
            self.unlock(state);
            return refusal;
        }
        if state.queue.len() == 0
            && !state.gate.is_closed(&mut now)
            && self.admit_paced(&mut state, &mut now, cost)
        {
            self.spend(&mut state, &mut now);
            self.unlock(state);
            return Admission::Permit(Permit::new(self.clone()));
        }
        if state.queue.len() >= self.config.max_queue {
            // make room by evicting the newest waiter of a lower priority
            match state.queue.evict_below(priority) {
                Some(entry) => {
                    if let Some(waker) = Queue::evicted(&entry) {
                        state.wake.push(waker);
                    }
                    self.shed(&mut state, entry.priority, OverloadReason::Evicted);
                }
                None => {
                    self.shed(&mut state, priority, OverloadReason::QueueFull);
                    self.unlock(state);
                    return Admission::Rejected(Overloaded::new(OverloadReason::QueueFull));
                }
            }
        }
        let slot = slot.take().unwrap_or_else(Slot::new);
        // the enqueue time matters for aging, the maximum queue wait and
        // adaptive LIFO only
        let enqueued_at = if self.config.aging.is_some()
            || self.config.max_queue_wait.is_some()
            || self.config.lifo_after.is_some()
        {
            Some(now.get())
        } else {
            None
        };
        let seq = state.queue.push(priority, enqueued_at, slot.clone(), cost);
        // From here on releases take the slow path and dispatch; a permit
        // freed just before is picked up by the dispatch below.
        self.slow.store(true, Ordering::SeqCst);
        self.dispatch(&mut state, &mut now, false);
        self.unlock(state);
        Admission::Queued(Ticket {
            limiter: self.clone(),
            slot,
            seq,
            priority,
            enqueued_at,
            used: false,
        })
    }

    pub(super) fn shed(&self, state: &mut State, priority: Priority, reason: OverloadReason) {
        if self.config.on_event.is_some() {
            state.events.push(LimiterEvent::Shed { priority, reason });
        }
    }
}
