//! The limiter's core: permits, dispatch to waiters, and the timer that
//! dispatches when the gate or pacing allows. Admission, the queue, the
//! gate, pacing and an external pacer's slots are apart (`admit`, `queue`,
//! `gate`, `pacing`, `reserve`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::time::Instant;

use super::config::Config;
use super::exhaust::QuotaState;
use super::gate::Gate;
use super::pacing::Pacing;
use super::queue::{Queue, Ticket, Wakeups};
use super::reserve::Reserved;
use super::Priority;
use crate::error::OverloadReason;
use crate::observe::LimiterEvent;

/// The current instant, read from the clock the first time it is needed
/// (a release with one priority waiting, no gate, no pacing and no adaptive
/// LIFO needs none).
#[derive(Default)]
pub(crate) struct Now(Option<Instant>);

impl Now {
    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

pub(super) struct State {
    pub(super) queue: Queue,
    pub(super) gate: Gate,
    /// The exhausted state and the remaining quota.
    pub(super) quota: QuotaState,
    pub(super) pacing: Option<Pacing>,
    /// What the limiter holds of its external pacer's schedule, if it has
    /// one.
    pub(super) reserved: Option<Reserved>,
    /// Ask the external pacer for a slot at this priority once the lock is
    /// released.
    pub(super) ask: Option<Priority>,
    /// Slots owed to the external pacer beyond the one each dispatch took
    /// on it (its request's [`Cost`](super::Cost) above one), to charge
    /// once the lock is released.
    pub(super) charge: u32,
    /// A timer task is armed to dispatch at this instant.
    timer_at: Option<Instant>,
    /// Wakers and events to deliver once the lock is released.
    pub(super) wake: Wakeups,
    pub(super) events: Vec<LimiterEvent>,
}

pub(crate) struct Limiter {
    pub(crate) config: Config,
    /// Permits handed out. Changed lock-free on the fast path.
    in_flight: AtomicUsize,
    /// Set (under the lock) while anything needs the slow path: waiters in
    /// the queue, a closed gate, pacing. Cleared when none of that remains.
    pub(super) slow: AtomicBool,
    /// Mirrors `State::gate.until().is_some()` (written under the lock), so
    /// that a granted waiter re-checks the gate without taking the lock.
    pub(super) gate_closed: AtomicBool,
    /// Set while `State::quota` is exhausted (written under the lock), so
    /// that a granted waiter checks it without taking the lock.
    pub(super) exhausted: AtomicBool,
    state: Mutex<State>,
    pub(super) me: Weak<Limiter>,
    /// A process-unique id (for gate sharing).
    pub(super) id: u64,
    /// Whether the limiter subscribed to its gate share.
    pub(super) subscribed: AtomicBool,
    /// Whether the share was started from inside the runtime.
    pub(super) started: AtomicBool,
    /// Cuts of the learned rate after a `429` so far: a permit remembers
    /// the count when it was granted, so that a `429` to a request sent
    /// before the last cut does not cut again.
    pub(super) cuts: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        let pacing = config.new_pacing();
        Arc::new_cyclic(|me| Self {
            in_flight: AtomicUsize::new(0),
            slow: AtomicBool::new(pacing.is_some() || config.pacer.is_some()),
            gate_closed: AtomicBool::new(false),
            exhausted: AtomicBool::new(false),
            state: Mutex::new(State {
                queue: Queue::default(),
                gate: Gate::default(),
                quota: QuotaState::default(),
                pacing,
                reserved: config.pacer.as_ref().map(|_| Reserved::default()),
                ask: None,
                charge: 0,
                timer_at: None,
                wake: Wakeups::default(),
                events: Vec::new(),
            }),
            me: me.clone(),
            id: crate::share::next_id(),
            subscribed: AtomicBool::new(false),
            started: AtomicBool::new(config.gate_share.is_none()),
            cuts: AtomicU64::new(0),
            config,
        })
    }

    /// A limiter with `config` that takes over `previous`'s gate (settings
    /// changed while building: nothing else can have happened yet).
    pub(crate) fn reconfigured(config: Config, previous: &Limiter) -> Arc<Self> {
        let limiter = Self::new(config);
        let gate = previous.lock().gate;
        if gate.until().is_some() {
            let mut state = limiter.lock();
            state.gate = gate;
            limiter.gate_closed.store(true, Ordering::SeqCst);
            limiter.slow.store(true, Ordering::SeqCst);
            drop(state);
        }
        limiter
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Release the lock, then wake and report, charge the external pacer
    /// for costly dispatches, and ask it for a slot if the dispatch wants
    /// one (when its answer is ready at once, take the lock again to
    /// dispatch with it, and so on).
    pub(super) fn unlock<'a>(&'a self, mut state: MutexGuard<'a, State>) {
        loop {
            let (first, rest) = state.wake.take();
            let events = std::mem::take(&mut state.events);
            let ask = state.ask.take();
            let charge = std::mem::take(&mut state.charge);
            drop(state);
            if charge > 0 {
                if let Some(pacer) = &self.config.pacer {
                    pacer.charge(charge);
                }
            }
            if let Some(waker) = first {
                waker.wake();
            }
            for waker in rest {
                waker.wake();
            }
            if let Some(handler) = &self.config.on_event {
                for event in &events {
                    handler(event);
                }
            }
            let Some(priority) = ask else {
                return;
            };
            let Some(reservation) = self.ask_pacer(priority) else {
                return;
            };
            state = self.lock();
            self.reservation(&mut state, priority, reservation);
        }
    }

    /// Take a permit if one is free, lock-free.
    #[inline]
    pub(super) fn try_acquire(&self) -> bool {
        let max = self.config.max_concurrency;
        let mut current = self.in_flight.load(Ordering::SeqCst);
        while current < max {
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Grant permits to waiters, best first, while capacity, the gate and
    /// pacing allow; arm a timer for when the gate or pacing will allow more.
    ///
    /// With `spare`, the caller hands over a permit it holds (a release):
    /// the first waiter granted takes it as it is, without the permit count
    /// going down and up again; if nobody can take it, it is returned.
    pub(super) fn dispatch(&self, state: &mut State, now: &mut Now, mut spare: bool) {
        // a gate whose time has passed is open, waiters or not
        let reopened = self.reopen_if_due(state, now);
        while state.queue.len() > 0 {
            if let Some(until) = state.gate.until() {
                self.drop_slot_before(state, until);
                self.arm_timer(state, until);
                break;
            }
            // hold a permit for the next waiter: the spare one, or a free one
            if !spare && !self.try_acquire() {
                break;
            }
            spare = true;
            if !self.take_paced(state, now) {
                break;
            }
            let (aging, lifo_after) = (self.config.aging, self.config.lifo_after);
            let Some(entry) = state.queue.pop_best(aging, lifo_after, now) else {
                break;
            };
            spare = false;
            if let Some(waker) = entry.slot.grant(reopened) {
                state.wake.push(waker);
            }
            self.spend(state, now);
        }
        if spare {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.update_slow(state, now);
    }

    /// Leave the slow path once nothing needs it.
    pub(super) fn update_slow(&self, state: &State, now: &mut Now) {
        let slow = state.queue.len() > 0
            || state.pacing.is_some()
            || state.reserved.is_some()
            || state.quota.needs_slow()
            || state.gate.is_closed(now);
        // most calls change nothing: spare the shared cache line a write
        if self.slow.load(Ordering::SeqCst) != slow {
            self.slow.store(slow, Ordering::SeqCst);
        }
    }

    /// Make sure a dispatch runs at `at`, even if no request completes.
    pub(super) fn arm_timer(&self, state: &mut State, at: Instant) {
        // An armed timer that is already due but has not cleared itself may
        // belong to a runtime that is gone: arm a new one then.
        let now = Instant::now();
        if state
            .timer_at
            .is_some_and(|armed| armed <= at && armed > now)
        {
            return;
        }
        // Outside a runtime (a permit dropped after it ended) no timer can
        // run; the next request or release dispatches instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.timer_at = Some(at);
        let me = self.me.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(limiter) = me.upgrade() {
                let mut state = limiter.lock();
                if state.timer_at == Some(at) {
                    state.timer_at = None;
                }
                limiter.dispatch(&mut state, &mut Now::default(), false);
                limiter.unlock(state);
            }
        });
    }

    fn release(&self) {
        if self.slow.load(Ordering::SeqCst) {
            // hand the permit straight to the best waiter, if it may go
            let mut state = self.lock();
            self.dispatch(&mut state, &mut Now::default(), true);
            self.unlock(state);
            return;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // A request may have queued meanwhile, having seen every permit
        // taken: it must not wait for the next release.
        if self.slow.load(Ordering::SeqCst) {
            let mut state = self.lock();
            self.dispatch(&mut state, &mut Now::default(), false);
            self.unlock(state);
        }
    }

    /// A queued request gave up (dropped): leave the queue, or hand back a
    /// permit granted in the meantime.
    pub(super) fn leave(&self, ticket: &Ticket) {
        let mut now = Now::default();
        let mut state = self.lock();
        if ticket.slot.is_waiting() {
            state.queue.remove(ticket.priority, ticket.seq);
            self.update_slow(&state, &mut now);
        } else if !ticket.slot.is_evicted() {
            // the permit it never used goes to the next waiter
            self.dispatch(&mut state, &mut now, true);
        }
        self.unlock(state);
    }

    /// A queued request waited too long: leave the queue and report it,
    /// unless a permit was granted meanwhile; whether it left.
    pub(super) fn time_out(&self, ticket: &Ticket, reason: OverloadReason) -> bool {
        let mut state = self.lock();
        if !ticket.slot.is_waiting() {
            return false;
        }
        state.queue.remove(ticket.priority, ticket.seq);
        ticket.evict();
        self.update_slow(&state, &mut Now::default());
        self.shed(&mut state, ticket.priority, reason);
        self.unlock(state);
        true
    }

    /// In-flight requests, free permits, queue lengths, gate.
    pub(crate) fn snapshot(&self) -> super::LimiterStatus {
        let now = Instant::now();
        let state = self.lock();
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        super::LimiterStatus {
            in_flight,
            available: self.config.max_concurrency.saturating_sub(in_flight),
            queued: state.queue.lens(),
            gate_closed_for: state
                .gate
                .until()
                .map(|until| until.saturating_duration_since(now))
                .filter(|d| !d.is_zero()),
            gate_source: state
                .gate
                .until()
                .filter(|until| *until > now)
                .and_then(|_| state.gate.source()),
            quota_exhausted_for: state
                .quota
                .exhausted_until()
                .map(|until| until.saturating_duration_since(now))
                .filter(|d| !d.is_zero()),
        }
    }

    /// Reopen the rate gate now and dispatch waiters.
    pub(crate) fn open_gate(&self) {
        let mut state = self.lock();
        self.open(&mut state);
        self.dispatch(&mut state, &mut Now::default(), false);
        self.unlock(state);
    }

    /// Requests holding a permit now.
    pub(super) fn in_flight_now(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A concurrency slot, released when dropped.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// The limiter's count of rate cuts when it was granted.
    pub(super) epoch: u64,
}

impl Permit {
    #[inline]
    pub(super) fn new(limiter: Arc<Limiter>) -> Self {
        let epoch = limiter.cuts.load(Ordering::Relaxed);
        Self { limiter, epoch }
    }

    /// A permit a dispatch granted to a waiter (already counted).
    pub(super) fn handed_over(limiter: Arc<Limiter>) -> Self {
        Self::new(limiter)
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::Duration;

    use super::*;
    use crate::priority::admit::Admission;
    use crate::priority::handle::PriorityLimitHandle;
    use crate::priority::queue::TicketState;
    use crate::retry_after::HintSource;

    fn limiter(max: usize) -> Arc<Limiter> {
        Limiter::new(Config::new(max))
    }

    /// Let the limiter's timer task run.
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    fn permit(admission: Admission) -> Permit {
        match admission {
            Admission::Permit(permit) => permit,
            _ => panic!("expected a permit"),
        }
    }

    fn ticket(admission: Admission) -> Ticket {
        match admission {
            Admission::Queued(ticket) => ticket,
            _ => panic!("expected a place in the queue"),
        }
    }

    fn granted(ticket: &mut Ticket) -> Option<Permit> {
        match ticket.poll_state(Waker::noop()) {
            TicketState::Granted(permit) => Some(permit),
            TicketState::Waiting => None,
            TicketState::Shed(overloaded) => panic!("shed: {overloaded}"),
            TicketState::Exhausted(exhausted) => panic!("{exhausted}"),
        }
    }

    fn best(limiter: &Limiter) -> Option<(usize, bool)> {
        let (aging, lifo) = (limiter.config.aging, limiter.config.lifo_after);
        limiter.lock().queue.best(aging, lifo, &mut Now::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_hands_its_permit_to_the_next_waiter() {
        let limiter = limiter(1);
        let first = permit(limiter.admit(Priority::Normal));
        let mut second = ticket(limiter.admit(Priority::Normal));
        assert!(granted(&mut second).is_none());
        drop(first);
        // the permit changed hands: still one in flight, nobody queued
        assert_eq!(limiter.in_flight(), 1);
        let second = granted(&mut second).expect("granted on release");
        assert_eq!(limiter.snapshot().queued, [0, 0, 0]);
        assert!(!limiter.slow.load(Ordering::SeqCst));
        drop(second);
        // nobody left: the permit goes back and the fast path reopens
        assert_eq!(limiter.in_flight(), 0);
        assert!(!limiter.slow.load(Ordering::SeqCst));
        drop(permit(limiter.admit(Priority::Low)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_permit_nobody_may_take_goes_back() {
        let limiter = limiter(1);
        let first = permit(limiter.admit(Priority::Normal));
        let mut waiter = ticket(limiter.admit(Priority::High));
        assert!(limiter.close_gate(Duration::from_secs(2), HintSource::RetryAfter));
        drop(first);
        // the gate is closed: the permit is free again, the waiter waits
        assert_eq!(limiter.in_flight(), 0);
        assert!(granted(&mut waiter).is_none());
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let permit = granted(&mut waiter).expect("granted when the gate reopened");
        assert!(waiter.after_gate());
        assert_eq!(limiter.in_flight(), 1);
        drop(permit);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_granted_permit_never_used_goes_to_the_next_waiter() {
        let limiter = limiter(1);
        let first = permit(limiter.admit(Priority::Normal));
        let second = ticket(limiter.admit(Priority::Normal));
        let mut third = ticket(limiter.admit(Priority::Normal));
        drop(first);
        // granted, then dropped before its task ran
        assert!(second.slot.is_granted());
        drop(second);
        assert_eq!(limiter.in_flight(), 1);
        assert!(granted(&mut third).is_some());
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_flag_follows_the_gate() {
        let limiter = limiter(4);
        assert_eq!(limiter.gate_closed_until(), None);
        assert!(limiter.close_gate(Duration::from_secs(3), HintSource::RetryAfter));
        let until = Instant::now() + Duration::from_secs(3);
        assert_eq!(limiter.gate_closed_until(), Some(until));
        assert!(limiter.gate_closed.load(Ordering::SeqCst));
        PriorityLimitHandle::fixed(limiter.clone()).open_gate();
        assert!(!limiter.gate_closed.load(Ordering::SeqCst));
        assert_eq!(limiter.gate_closed_until(), None);
        // reopened by its timer
        assert!(limiter.close_gate(Duration::from_secs(1), HintSource::RetryAfter));
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(limiter.gate_closed_until(), None);
        assert!(!limiter.gate_closed.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_closes_the_gate_until_released_and_keeps_a_pause_delivered_meanwhile() {
        use crate::share::Pausable;
        let limiter = limiter(4);
        let start = Instant::now();
        limiter.hold_for_share(Duration::from_secs(5));
        assert_eq!(
            limiter.gate_closed_until(),
            Some(start + Duration::from_secs(5))
        );
        let mut waiter = ticket(limiter.admit(Priority::Normal));
        limiter.pause_from_share(Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.release_from_share();
        // the pause (2 s) still runs, the hold (5 s) is gone
        assert_eq!(
            limiter.gate_closed_until(),
            Some(start + Duration::from_secs(2))
        );
        assert!(granted(&mut waiter).is_none());
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert!(granted(&mut waiter).is_some());
        // released with nothing running: open at once
        limiter.hold_for_share(Duration::from_secs(5));
        let mut waiter = ticket(limiter.admit(Priority::Normal));
        limiter.release_from_share();
        assert_eq!(limiter.gate_closed_until(), None);
        assert!(granted(&mut waiter).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn aging_promotes_at_exact_multiples_of_the_step() {
        let mut config = Config::new(1);
        config.aging = Some(Duration::from_secs(10));
        let limiter = Limiter::new(config);
        let busy = permit(limiter.admit(Priority::High));
        let mut low = ticket(limiter.admit(Priority::Low));
        tokio::time::advance(Duration::from_secs(20) - Duration::from_nanos(1)).await;
        let mut high = ticket(limiter.admit(Priority::High));
        let mut normal = ticket(limiter.admit(Priority::Normal));
        // low has waited one step: level normal, behind high
        assert_eq!(best(&limiter), Some((Priority::High.index(), false)));
        tokio::time::advance(Duration::from_nanos(1)).await;
        // two steps: level high, and it came first
        assert_eq!(best(&limiter), Some((Priority::Low.index(), false)));
        drop(busy);
        let permit = granted(&mut low).expect("the aged request goes first");
        assert!(granted(&mut high).is_none() && granted(&mut normal).is_none());
        drop(permit);
        drop(granted(&mut high).expect("then high"));
        assert!(granted(&mut normal).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_serves_its_newest_once_its_oldest_has_waited_the_threshold() {
        let mut config = Config::new(1);
        config.lifo_after = Some(Duration::from_secs(1));
        config.aging = None;
        let limiter = Limiter::new(config);
        let _busy = permit(limiter.admit(Priority::Normal));
        let _first = ticket(limiter.admit(Priority::Normal));
        let _second = ticket(limiter.admit(Priority::Normal));
        assert_eq!(best(&limiter), Some((Priority::Normal.index(), false)));
        tokio::time::advance(Duration::from_secs(1) - Duration::from_nanos(1)).await;
        assert_eq!(best(&limiter), Some((Priority::Normal.index(), false)));
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(best(&limiter), Some((Priority::Normal.index(), true)));
    }
}
