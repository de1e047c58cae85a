//! The waiting room: three FIFO queues (one per priority, in one `arena`),
//! the mailbox each waiter is granted or evicted through, and the ticket a
//! queued request holds.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::arena::Arena;
use super::limiter::{Limiter, Now, Permit};
use super::Priority;
use crate::error::{OverloadReason, Overloaded, QuotaExhausted};

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
/// Refused (every state from here on): evicted or timed out.
const EVICTED: u8 = 2;
/// Refused: shed by the quota reserve.
const RESERVE_SHED: u8 = 3;
/// Refused: the quota is exhausted.
const EXHAUSTED: u8 = 4;

/// Why a waiter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Shed by the quota reserve.
    Reserve,
    /// The quota is exhausted.
    Exhausted,
}

/// A queued request's mailbox: the limiter grants or evicts through it.
pub(crate) struct Slot {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// Granted by the dispatch that reopened the rate gate.
    after_gate: AtomicBool,
}

impl Slot {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: AtomicU8::new(WAITING),
            waker: Mutex::new(None),
            after_gate: AtomicBool::new(false),
        })
    }

    fn settle(&self, state: u8) -> Option<Waker> {
        self.state.store(state, Ordering::Release);
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Grant a permit; the waker to wake once the lock is released.
    pub(super) fn grant(&self, after_gate: bool) -> Option<Waker> {
        self.after_gate.store(after_gate, Ordering::Relaxed);
        self.settle(GRANTED)
    }

    /// Whether the slot is still waiting (neither granted nor evicted).
    pub(super) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Whether the slot was refused (evicted, timed out, shed by the
    /// reserve, or failed on an exhausted quota).
    pub(super) fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) >= EVICTED
    }

    #[cfg(test)]
    pub(super) fn is_granted(&self) -> bool {
        self.state.load(Ordering::Acquire) == GRANTED
    }
}

/// Wakers collected under the lock, woken once it is released. Most
/// dispatches grant one waiter: that one is kept without allocating.
#[derive(Default)]
pub(super) struct Wakeups {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakeups {
    pub(super) fn push(&mut self, waker: Waker) {
        match self.first {
            None => self.first = Some(waker),
            Some(_) => self.rest.push(waker),
        }
    }

    /// Take the wakers (the common single one without allocating).
    pub(super) fn take(&mut self) -> (Option<Waker>, Vec<Waker>) {
        (self.first.take(), std::mem::take(&mut self.rest))
    }
}

/// One waiter.
pub(super) struct Entry {
    /// Its arrival order (across priorities).
    seq: u64,
    pub(super) priority: Priority,
    /// Set when aging, a maximum queue wait or adaptive LIFO needs it.
    enqueued_at: Option<Instant>,
    /// Its cost in pacing slots.
    cost: u32,
    pub(super) slot: Arc<Slot>,
}

impl Entry {
    /// The level it stands at: its priority, raised by one per aging step
    /// waited (at most to high).
    fn level(&self, aging: Option<Duration>, now: &mut Now) -> u8 {
        let mut level = self.priority.index() as u8;
        if let (Some(aging), Some(at)) = (aging, self.enqueued_at) {
            let waited = now.get().saturating_duration_since(at);
            if waited >= aging.saturating_mul(2) {
                level += 2;
            } else if waited >= aging {
                level += 1;
            }
        }
        level.min(2)
    }
}

/// The waiters, one FIFO per priority. A waiter that gives up leaves in
/// O(1) by its key, wherever it stands.
#[derive(Default)]
pub(super) struct Queue {
    queues: Arena<Entry, 3>,
    seq: u64,
}

impl Queue {
    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    /// How many wait, by priority: `[low, normal, high]`.
    pub(super) fn lens(&self) -> [usize; 3] {
        [0, 1, 2].map(|index| self.queues.list_len(index))
    }

    /// Queue a waiter; its key, to [`remove`](Self::remove) it by.
    pub(super) fn push(
        &mut self,
        priority: Priority,
        enqueued_at: Option<Instant>,
        slot: Arc<Slot>,
        cost: u32,
    ) -> u64 {
        self.seq += 1;
        let entry = Entry {
            seq: self.seq,
            priority,
            enqueued_at,
            cost,
            slot,
        };
        self.queues.push_back(priority.index(), entry)
    }

    /// Take out the newest waiter of a priority lower than `priority`, the
    /// lowest first (to make room for a request of `priority`).
    pub(super) fn evict_below(&mut self, priority: Priority) -> Option<Entry> {
        let lower = (0..3)
            .map(Priority::from_index)
            .take_while(|p| *p < priority)
            .find(|p| self.queues.list_len(p.index()) > 0)?;
        self.queues.pop_back(lower.index())
    }

    /// Evict an entry taken out of the queue; the waker to wake.
    pub(super) fn evicted(entry: &Entry) -> Option<Waker> {
        entry.slot.settle(EVICTED)
    }

    /// Refuse an entry taken out of the queue; the waker to wake.
    pub(super) fn refused(entry: &Entry, refusal: Refusal) -> Option<Waker> {
        entry.slot.settle(match refusal {
            Refusal::Reserve => RESERVE_SHED,
            Refusal::Exhausted => EXHAUSTED,
        })
    }

    /// The wakers of every waiter (to have each look at a change that
    /// concerns them all, such as the rate gate closing).
    pub(super) fn wakers(&self) -> Vec<Waker> {
        let registered = self.queues.values().filter_map(|entry| {
            let waker = entry.slot.waker.lock().unwrap_or_else(|e| e.into_inner());
            waker.clone()
        });
        registered.collect()
    }

    /// Take out the oldest waiter of `priority`.
    pub(super) fn pop_front_of(&mut self, priority: Priority) -> Option<Entry> {
        self.queues.pop_front(priority.index())
    }

    /// Remove the waiter of `priority` under `key`, if it is still queued.
    pub(super) fn remove(&mut self, priority: Priority, key: u64) {
        let entry = self.queues.remove(key);
        debug_assert!(entry.is_none_or(|e| e.priority == priority));
    }

    /// Take out the waiter whose turn it is.
    pub(super) fn pop_best(
        &mut self,
        aging: Option<Duration>,
        lifo_after: Option<Duration>,
        now: &mut Now,
    ) -> Option<Entry> {
        let (index, newest) = self.best(aging, lifo_after, now)?;
        if newest {
            self.queues.pop_back(index)
        } else {
            self.queues.pop_front(index)
        }
    }

    /// The cost in pacing slots of the waiter whose turn it is (1 if none
    /// waits).
    pub(super) fn best_cost(
        &self,
        aging: Option<Duration>,
        lifo_after: Option<Duration>,
        now: &mut Now,
    ) -> u32 {
        let Some((index, newest)) = self.best(aging, lifo_after, now) else {
            return 1;
        };
        let entry = if newest {
            self.queues.back(index)
        } else {
            self.queues.front(index)
        };
        entry.map_or(1, |e| e.cost)
    }

    /// The priority the waiter whose turn it is stands at (aging included:
    /// a queue ages with its oldest waiter).
    pub(super) fn best_level(
        &self,
        aging: Option<Duration>,
        lifo_after: Option<Duration>,
        now: &mut Now,
    ) -> Option<Priority> {
        let (index, _) = self.best(aging, lifo_after, now)?;
        let head = self.queues.front(index)?;
        Some(Priority::from_index(head.level(aging, now).into()))
    }

    /// The queue whose turn it is, and whether its newest waiter goes
    /// (adaptive LIFO) rather than its oldest.
    ///
    /// Between priorities: the highest level after aging (a queue ages with
    /// its oldest waiter), then the earliest arrival. With one priority
    /// waiting, no aging and first-come-first-served order (the usual case)
    /// no clock is read.
    pub(super) fn best(
        &self,
        aging: Option<Duration>,
        lifo_after: Option<Duration>,
        now: &mut Now,
    ) -> Option<(usize, bool)> {
        let mut heads =
            (0..3).filter_map(|index| self.queues.front(index).map(|head| (index, head)));
        let (first, head) = heads.next()?;
        let (index, head) = match heads.next() {
            None => (first, head),
            Some(next) => {
                let mut level = |head: &Entry| head.level(aging, now);
                let key = |level: u8, head: &Entry| (level, std::cmp::Reverse(head.seq));
                let mut best = (key(level(head), head), first, head);
                for (index, head) in std::iter::once(next).chain(heads) {
                    let candidate = key(level(head), head);
                    if candidate > best.0 {
                        best = (candidate, index, head);
                    }
                }
                (best.1, best.2)
            }
        };
        // a standing queue serves its newest waiter first
        let newest = match (lifo_after, head.enqueued_at) {
            (Some(after), Some(at)) => now.get().saturating_duration_since(at) >= after,
            _ => false,
        };
        Some((index, newest))
    }
}

/// A place in the queue. Dropping it leaves the queue (or returns a permit
/// granted to it and never used).
pub(crate) struct Ticket {
    pub(super) limiter: Arc<Limiter>,
    pub(super) slot: Arc<Slot>,
    /// Its key in the queue (what [`Queue::push`] returned).
    pub(super) seq: u64,
    pub(super) priority: Priority,
    pub(super) enqueued_at: Option<Instant>,
    pub(super) used: bool,
}

/// Where a queued request stands.
pub(crate) enum TicketState {
    Waiting,
    Granted(Permit),
    Shed(Overloaded),
    Exhausted(QuotaExhausted),
}

impl Ticket {
    /// Check the ticket, registering `waker` to hear of a change.
    pub(crate) fn poll_state(&mut self, waker: &Waker) -> TicketState {
        if self.slot.is_waiting() {
            let mut registered = self.slot.waker.lock().unwrap_or_else(|e| e.into_inner());
            if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *registered = Some(waker.clone());
            }
        }
        match self.slot.state.load(Ordering::Acquire) {
            GRANTED => {
                self.used = true;
                TicketState::Granted(Permit::handed_over(self.limiter.clone()))
            }
            EVICTED => {
                self.used = true;
                TicketState::Shed(Overloaded::new(OverloadReason::Evicted))
            }
            RESERVE_SHED => {
                self.used = true;
                TicketState::Shed(Overloaded::new(OverloadReason::QuotaReserve))
            }
            EXHAUSTED => {
                self.used = true;
                TicketState::Exhausted(self.limiter.exhausted_error())
            }
            _ => TicketState::Waiting,
        }
    }

    /// Whether the grant came when the rate gate reopened.
    pub(crate) fn after_gate(&self) -> bool {
        self.slot.after_gate.load(Ordering::Relaxed)
    }

    /// When this request stops waiting, if a maximum queue wait is set.
    pub(crate) fn give_up_at(&self) -> Option<Instant> {
        self.limiter
            .config
            .max_queue_wait
            .zip(self.enqueued_at)
            .and_then(|(wait, at)| at.checked_add(wait))
    }

    /// Leave the queue after waiting too long; a permit granted meanwhile
    /// wins.
    pub(crate) fn time_out(&mut self) -> TicketState {
        self.leave_shed(Overloaded::new(OverloadReason::QueueTimeout))
    }

    /// When the rate gate opens, while it is closed.
    pub(crate) fn gate_closed_until(&self) -> Option<Instant> {
        self.limiter.gate_closed_until()
    }

    /// Leave the queue because the rate gate opens only at `until`, past
    /// the request's deadline; a permit granted meanwhile wins.
    pub(crate) fn gate_past_deadline(&mut self, until: Instant) -> TicketState {
        let retry_in = until.saturating_duration_since(Instant::now());
        self.leave_shed(Overloaded::gate_closed(retry_in))
    }

    /// Leave the queue shed with `overloaded`, unless the ticket was settled
    /// meanwhile.
    fn leave_shed(&mut self, overloaded: Overloaded) -> TicketState {
        if self.limiter.time_out(self, overloaded.reason()) {
            self.used = true;
            return TicketState::Shed(overloaded);
        }
        self.poll_state(Waker::noop())
    }

    /// Mark the slot evicted (under the limiter's lock, while it waits).
    pub(super) fn evict(&self) {
        self.slot.state.store(EVICTED, Ordering::Release);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.limiter.leave(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_leave_in_any_order_and_the_rest_keep_priority_then_arrival_order() {
        let mut queue = Queue::default();
        // waiter i has priority i % 3
        let waiters: Vec<(Priority, u64, Arc<Slot>)> = (0..300)
            .map(|i| {
                let (priority, slot) = (Priority::from_index(i % 3), Slot::new());
                (priority, queue.push(priority, None, slot.clone(), 1), slot)
            })
            .collect();
        // all but every fifth leave, in a scattered order (twice: no effect)
        for i in (0..300).map(|i| i * 7 % 300).filter(|i| i % 5 != 0) {
            let (priority, key, _) = &waiters[i];
            queue.remove(*priority, *key);
            queue.remove(*priority, *key);
        }
        assert_eq!((queue.len(), queue.lens()), (60, [20, 20, 20]));
        let position = |entry: &Entry| {
            waiters
                .iter()
                .position(|(_, _, slot)| Arc::ptr_eq(slot, &entry.slot))
        };
        // full: the newest low waiter makes room for a high one
        let evicted = queue.evict_below(Priority::High).expect("a low waiter");
        assert_eq!(position(&evicted), Some(285));
        let mut order = Vec::new();
        while let Some(entry) = queue.pop_best(None, None, &mut Now::default()) {
            order.push(position(&entry).expect("a waiter of this queue"));
        }
        let stayed = |p: usize| (0..300).filter(move |i| i % 5 == 0 && i % 3 == p && *i != 285);
        let expected: Vec<usize> = stayed(2).chain(stayed(1)).chain(stayed(0)).collect();
        assert_eq!(order, expected);
        assert_eq!((queue.len(), queue.lens()), (0, [0, 0, 0]));
    }
}
