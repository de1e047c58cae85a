//! The server's quota, as the limiter tracks it: the exhausted state (a
//! server hint over `max_gate`, a daily cap: every request fails at once
//! until the hint's time) and the reserve of remaining quota kept for
//! higher priorities (low, then normal, shed as the remaining quota the
//! server advertises runs low).

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::admit::Admission;
use super::limiter::{Limiter, Now, State};
use super::queue::{Queue, Refusal};
use super::Priority;
use crate::error::{OverloadReason, Overloaded, QuotaExhausted};
use crate::hint::{advertised_quota, HintSource};
use crate::observe::LimiterEvent;

/// What the limiter knows of the server's quota.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct QuotaState {
    /// Exhausted until then.
    exhausted: Option<Instant>,
    /// The remaining quota last advertised, less the requests sent since
    /// (kept only with a reserve).
    remaining: Option<Remaining>,
}

#[derive(Debug, Clone, Copy)]
struct Remaining {
    left: u64,
    /// When the server's window resets: the count is stale from then on.
    reset_at: Option<Instant>,
}

impl QuotaState {
    /// Whether admission must take the slow path for it.
    pub(super) fn needs_slow(&self) -> bool {
        self.exhausted.is_some() || self.remaining.is_some()
    }

    /// When the exhausted state ends, if the limiter is in it.
    pub(super) fn exhausted_until(&self) -> Option<Instant> {
        self.exhausted
    }
}

impl Limiter {
    /// Enter the exhausted state for `wait` after a server hint over
    /// `max_gate` seen here, and tell the limiters sharing the gate;
    /// whether it entered it (or it lasts longer now).
    pub(crate) fn exhaust(&self, wait: Duration, source: HintSource) -> bool {
        let entered = self.exhaust_with(wait, Some(source));
        if entered {
            if let Some(share) = &self.config.gate_share {
                share.announce_exhausted(self.id, wait);
            }
        }
        entered
    }

    /// Exhausted until `now + wait` (never shortening it): every waiter
    /// fails now, with [`QuotaExhausted`].
    pub(super) fn exhaust_with(&self, wait: Duration, source: Option<HintSource>) -> bool {
        let Some(until) = Instant::now().checked_add(wait) else {
            return false;
        };
        let mut state = self.lock();
        if state
            .quota
            .exhausted
            .is_some_and(|current| current >= until)
        {
            return false;
        }
        state.quota.exhausted = Some(until);
        self.exhausted.store(true, Ordering::SeqCst);
        self.slow.store(true, Ordering::SeqCst);
        for priority in [Priority::High, Priority::Normal, Priority::Low] {
            while let Some(entry) = state.queue.pop_front_of(priority) {
                if let Some(waker) = Queue::refused(&entry, Refusal::Exhausted) {
                    state.wake.push(waker);
                }
            }
        }
        if self.config.on_event.is_some() {
            state
                .events
                .push(LimiterEvent::QuotaExhausted { for_: wait, source });
        }
        self.unlock(state);
        true
    }

    /// When the exhausted state ends, if the limiter is in it now.
    /// Lock-free while it is not.
    pub(crate) fn exhausted_until(&self) -> Option<Instant> {
        if !self.exhausted.load(Ordering::SeqCst) {
            return None;
        }
        let until = self.lock().quota.exhausted?;
        (Instant::now() < until).then_some(until)
    }

    /// The error for a waiter failed by the exhausted state.
    pub(super) fn exhausted_error(&self) -> QuotaExhausted {
        let until = self.lock().quota.exhausted;
        QuotaExhausted::new(until.unwrap_or_else(Instant::now))
    }

    /// Refuse an arrival at `priority` if the quota is exhausted, or if
    /// the reserve keeps the remaining quota for higher priorities.
    pub(super) fn refuse(
        &self,
        state: &mut State,
        priority: Priority,
        now: &mut Now,
    ) -> Option<Admission> {
        if let Some(until) = state.quota.exhausted {
            if now.get() < until {
                return Some(Admission::Exhausted(QuotaExhausted::new(until)));
            }
            // over: back to normal
            state.quota.exhausted = None;
            self.exhausted.store(false, Ordering::SeqCst);
            self.update_slow(state, now);
        }
        if self.reserve_sheds(state, priority, now) {
            self.shed(state, priority, OverloadReason::QuotaReserve);
            return Some(Admission::Rejected(Overloaded::new(
                OverloadReason::QuotaReserve,
            )));
        }
        None
    }

    /// Whether the reserve sheds `priority` now: the remaining quota is at
    /// most its reserve.
    fn reserve_sheds(&self, state: &mut State, priority: Priority, now: &mut Now) -> bool {
        let Some((low, normal)) = self.config.quota_reserve else {
            return false;
        };
        let reserve = match priority {
            Priority::Low => low,
            Priority::Normal => normal,
            Priority::High => return false,
        };
        let Some(remaining) = state.quota.remaining else {
            return false;
        };
        if remaining.reset_at.is_some_and(|at| now.get() >= at) {
            // the window reset: the count says nothing any more
            state.quota.remaining = None;
            return false;
        }
        reserve > 0 && remaining.left <= u64::from(reserve)
    }

    /// A request was sent: one less remains.
    pub(super) fn spend(&self, state: &mut State, now: &mut Now) {
        if let Some(remaining) = state.quota.remaining.as_mut() {
            remaining.left = remaining.left.saturating_sub(1);
            self.shed_reserved(state, now);
        }
    }

    /// Shed the waiters whose priority the reserve sheds now.
    fn shed_reserved(&self, state: &mut State, now: &mut Now) {
        for priority in [Priority::Low, Priority::Normal] {
            if !self.reserve_sheds(state, priority, now) {
                continue;
            }
            while let Some(entry) = state.queue.pop_front_of(priority) {
                if let Some(waker) = Queue::refused(&entry, Refusal::Reserve) {
                    state.wake.push(waker);
                }
                self.shed(state, priority, OverloadReason::QuotaReserve);
            }
        }
    }

    /// Read the remaining quota a response advertises (with a reserve
    /// only), and shed the waiters the reserve no longer lets through.
    /// (Inlined: every response asks, and only a limiter with a reserve
    /// reads the headers.)
    #[inline]
    pub(crate) fn advertised_remaining(&self, headers: &HeaderMap) {
        if self.config.quota_reserve.is_some() {
            self.read_remaining(headers);
        }
    }

    fn read_remaining(&self, headers: &HeaderMap) {
        let Some(quota) = advertised_quota(headers, self.config.clock.as_ref()) else {
            return;
        };
        let Some(left) = quota.remaining else {
            return;
        };
        let now = Instant::now();
        let reset_at = quota.reset.and_then(|reset| now.checked_add(reset));
        let mut state = self.lock();
        state.quota.remaining = Some(Remaining { left, reset_at });
        self.slow.store(true, Ordering::SeqCst);
        self.shed_reserved(&mut state, &mut Now::default());
        self.unlock(state);
    }
}
