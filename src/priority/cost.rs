//! A request's cost in pacing slots, and the paced slots a dispatch takes:
//! the built-in schedule's `cost` slots and, when the limiter also has an
//! external pacer (a keyed limiter inside a shared limit), that pacer's
//! slot, both at the same instant, and the `cost - 1` more the pacer is
//! charged once the limiter's lock is released.

use std::fmt;
use std::num::NonZeroU32;

use super::limiter::{Limiter, Now, State};
use crate::error::ConfigError;

/// What a request costs in pacing slots, as a request extension (default
/// 1): a vendor that counts an analytics query as several requests is paced
/// by the units it counts.
///
/// - Smooth [`pacing`](super::PriorityLimitLayer::pacing) lets a request of
///   cost `n` go when the next slot is due and moves the slot after it `n`
///   intervals on, so that on average the units sent keep the rate. Like a
///   burst, one costly request may put up to `n - 1` units ahead of an
///   exact sliding window for a moment; for a vendor that counts units in
///   windows exactly, use [`pacing_window`](super::PriorityLimitLayer::pacing_window).
/// - A sliding window ([`pacing_window`](super::PriorityLimitLayer::pacing_window))
///   lets the request go once `n` entries are free and records `n` entries:
///   no window ever holds more units than the allowance. A cost over the
///   whole allowance takes the whole window.
/// - With an external [`Pacer`](super::Pacer) (a shared or fleet-wide
///   one, or a keyed limit's [`within`](super::keyed::KeyedLimitLayer::within)),
///   the request goes on one slot of the pacer's, and the pacer is then
///   [`charged`](super::Pacer::charge) the `n - 1` more: its schedule moves
///   on as if they had been reserved, so the requests after it wait for
///   them. [`LocalPacer`](super::LocalPacer) and the fleet's Redis pacer
///   do; a pacer of your own that ignores the charge hands out one slot per
///   request, whatever its cost.
///
/// ```
/// use http::Request;
/// use tower_cx::priority::Cost;
///
/// let mut query = Request::new(());
/// query.extensions_mut().insert(Cost::new(3)?);
/// assert_eq!(Cost::of(&query), 3);
/// assert!(Cost::new(0).is_err());
/// # Ok::<(), tower_cx::error::ConfigError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cost(NonZeroU32);

impl Cost {
    /// One slot: what a request without a `Cost` extension costs.
    pub const ONE: Cost = Cost(NonZeroU32::MIN);

    /// A cost of `units` slots; 0 is refused (a request always takes a
    /// slot).
    pub fn new(units: u32) -> Result<Self, ConfigError> {
        NonZeroU32::new(units)
            .map(Cost)
            .ok_or_else(|| ConfigError::new("cost", "a request costs at least one slot"))
    }

    /// The slots it takes.
    pub fn units(self) -> u32 {
        self.0.get()
    }

    /// The cost of `request`: its `Cost` extension's units, else 1.
    pub fn of<B>(request: &http::Request<B>) -> u32 {
        request
            .extensions()
            .get::<Cost>()
            .copied()
            .unwrap_or_default()
            .units()
    }
}

impl Default for Cost {
    fn default() -> Self {
        Cost::ONE
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cost({})", self.0)
    }
}

/// A dispatch of `units` took one slot of the external pacer: the rest
/// are charged to it once the lock is released.
fn owe(state: &mut State, units: u32) {
    state.charge = state.charge.saturating_add(units.saturating_sub(1));
}

impl Limiter {
    /// Whether an arrival costing `units` that finds nobody waiting may go
    /// at once: a permit is free and the pacing allows (its slots taken if
    /// so).
    pub(super) fn admit_paced(&self, state: &mut State, now: &mut Now, units: u32) -> bool {
        let external = state.reserved.is_some();
        match state.pacing.as_mut() {
            None if external => {
                let permitted = self.take_due_slot(state, now);
                if permitted {
                    owe(state, units);
                }
                permitted
            }
            None => self.try_acquire(),
            Some(pacing) => {
                let free = self.in_flight_now() < self.config.max_concurrency;
                if !free || pacing.wait(now.get(), units).is_some() {
                    return false;
                }
                let permitted = if external {
                    self.take_due_slot(state, now)
                } else {
                    self.try_acquire()
                };
                if permitted {
                    if let Some(pacing) = state.pacing.as_mut() {
                        pacing.take(now.get(), units);
                    }
                    if external {
                        owe(state, units);
                    }
                }
                permitted
            }
        }
    }

    /// Whether the best waiter may be dispatched now on the paced
    /// schedules; if so, its slots are taken (the built-in schedule's
    /// `cost` slots, the external pacer's slot and the `cost - 1` more it
    /// is charged). If not, a timer (or a question to the external pacer)
    /// is arranged. The built-in slots are taken only together with the
    /// external one, so that waiting for one never wastes the other.
    pub(super) fn take_paced(&self, state: &mut State, now: &mut Now) -> bool {
        let external = state.reserved.is_some();
        let units = if state.pacing.is_some() || external {
            let (aging, lifo_after) = (self.config.aging, self.config.lifo_after);
            state.queue.best_cost(aging, lifo_after, now)
        } else {
            1
        };
        if let Some(pacing) = state.pacing.as_mut() {
            if let Some(at) = pacing.wait(now.get(), units) {
                self.arm_timer(state, at);
                return false;
            }
        }
        if !self.take_reserved(state, now) {
            return false;
        }
        if let Some(pacing) = state.pacing.as_mut() {
            pacing.take(now.get(), units);
        }
        if external {
            owe(state, units);
        }
        true
    }

    /// Whether the limiter holds nothing a new one would not: nothing in
    /// flight or queued, the gate open, the pacing schedule spent, no
    /// reservation on an external pacer.
    pub(crate) fn is_idle(&self) -> bool {
        let mut now = Now::default();
        let state = self.lock();
        self.in_flight_now() == 0
            && state.queue.len() == 0
            && !state.gate.is_closed(&mut now)
            && state.pacing.as_ref().is_none_or(|p| p.is_spent(now.get()))
            && state.reserved.as_ref().is_none_or(|r| r.is_empty())
    }
}
