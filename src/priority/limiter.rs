//! The limiter's shared state: permits, the priority queue, the rate gate
//! and pacing.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use super::shared::Pacer;
use super::Priority;
use crate::error::{OverloadReason, Overloaded};
use crate::retry_after::{Clock, HintSource, SystemClock};
use crate::share::{Pausable, PauseShare, PauseTarget};

/// Something the limiter did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterEvent {
    /// A server hint closed the rate gate: nothing is dispatched for `for_`.
    GateClosed {
        /// How long the gate stays closed from now.
        for_: Duration,
        /// The header the hint came from.
        source: HintSource,
    },
    /// Another limiter sharing this one's gate (see
    /// [`PauseShare`](crate::share::PauseShare)) saw a server hint: the gate is closed
    /// for `for_`.
    GateClosedElsewhere {
        /// How long the gate stays closed from now.
        for_: Duration,
    },
    /// A request was shed without being sent.
    Shed {
        /// Its priority.
        priority: Priority,
        /// Why.
        reason: OverloadReason,
    },
}

pub(crate) type EventHandler = Arc<dyn Fn(&LimiterEvent) + Send + Sync>;

/// Limiter settings (see [`PriorityLimitLayer`](super::PriorityLimitLayer)).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue: usize,
    pub(crate) max_queue_wait: Option<Duration>,
    pub(crate) aging: Option<Duration>,
    /// Built-in pacing.
    pub(crate) pacing: Option<Pacing>,
    /// Adaptive LIFO: serve the newest waiter of a priority first once its
    /// oldest has waited this long.
    pub(crate) lifo_after: Option<Duration>,
    /// The longest server hint that closes the gate.
    pub(crate) max_gate: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_event: Option<EventHandler>,
    /// A pacer outside the limiter (replaces `pacing`).
    pub(crate) pacer: Option<Arc<dyn Pacer>>,
    /// Where gate closures are shared with other limiters.
    pub(crate) gate_share: Option<Arc<dyn PauseShare>>,
    /// Re-pace smooth pacing to `inin-ratelimit-allowed` per this window.
    pub(crate) learn_pacing: Option<Duration>,
}

impl Config {
    pub(crate) fn new(max_concurrency: usize) -> Self {
        Self {
            max_concurrency: max_concurrency.max(1),
            max_queue: 1024,
            max_queue_wait: None,
            aging: Some(Duration::from_secs(30)),
            pacing: None,
            lifo_after: None,
            max_gate: Duration::from_secs(180),
            clock: Arc::new(SystemClock),
            on_event: None,
            pacer: None,
            gate_share: None,
            learn_pacing: None,
        }
    }
}

/// How the built-in pacing spaces dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// One dispatch per `interval`, bursts of up to `burst` (GCRA).
    Smooth { interval: Duration, burst: u32 },
    /// At most `requests` dispatches in any `per` (a sliding window).
    Window { requests: u32, per: Duration },
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const EVICTED: u8 = 2;

/// A queued request's mailbox: the limiter grants or evicts through it.
pub(crate) struct Slot {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// Granted by the dispatch that reopened the rate gate.
    after_gate: AtomicBool,
}

impl Slot {
    fn new() -> Arc<Self> {
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
}

/// Wakers collected under the lock, woken once it is released. Most
/// dispatches grant one waiter: that one is kept without allocating.
#[derive(Default)]
struct Wakeups {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakeups {
    fn push(&mut self, waker: Waker) {
        match self.first {
            None => self.first = Some(waker),
            Some(_) => self.rest.push(waker),
        }
    }
}

/// The current instant, read from the clock the first time it is needed
/// (a release with one priority waiting, no gate, no pacing and no adaptive
/// LIFO needs none).
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

struct Entry {
    seq: u64,
    priority: Priority,
    /// Set when aging, a maximum queue wait or adaptive LIFO needs it.
    enqueued_at: Option<Instant>,
    slot: Arc<Slot>,
}

struct State {
    queues: [VecDeque<Entry>; 3],
    queued: usize,
    seq: u64,
    gate_until: Option<Instant>,
    /// Smooth pacing: the theoretical arrival time of the next dispatch
    /// (GCRA).
    pacing_tat: Option<Instant>,
    /// Window pacing: the times of the dispatches in the current window,
    /// oldest first (at most `requests` of them).
    pacing_log: VecDeque<Instant>,
    /// Smooth pacing's interval learned from `inin-ratelimit-allowed`
    /// (replaces the configured one).
    learned_interval: Option<Duration>,
    /// The longest `inin-ratelimit-reset` seen: the window the headers
    /// imply (at most the configured one).
    learned_window: Option<Duration>,
    /// A timer task is armed to dispatch at this instant.
    timer_at: Option<Instant>,
    /// Wakers and events to deliver once the lock is released.
    wake: Wakeups,
    events: Vec<LimiterEvent>,
}

pub(crate) struct Limiter {
    pub(crate) config: Config,
    /// Permits handed out. Changed lock-free on the fast path.
    in_flight: AtomicUsize,
    /// Set (under the lock) while anything needs the slow path: waiters in
    /// the queue, a closed gate, pacing. Cleared when none of that remains.
    slow: AtomicBool,
    /// Mirrors `State::gate_until.is_some()` (written under the lock), so
    /// that a granted waiter re-checks the gate without taking the lock.
    gate_closed: AtomicBool,
    state: Mutex<State>,
    me: Weak<Limiter>,
    /// A process-unique id (for gate sharing).
    id: u64,
    /// Whether the limiter subscribed to its gate share.
    subscribed: AtomicBool,
}

/// What an arrival gets.
pub(crate) enum Admission {
    Permit(Permit),
    Queued(Ticket),
    Rejected(Overloaded),
}

impl Limiter {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            in_flight: AtomicUsize::new(0),
            slow: AtomicBool::new(config.pacing.is_some()),
            gate_closed: AtomicBool::new(false),
            state: Mutex::new(State {
                queues: Default::default(),
                queued: 0,
                seq: 0,
                gate_until: None,
                pacing_tat: None,
                pacing_log: VecDeque::new(),
                learned_interval: None,
                learned_window: None,
                timer_at: None,
                wake: Wakeups::default(),
                events: Vec::new(),
            }),
            me: me.clone(),
            id: crate::share::next_id(),
            subscribed: AtomicBool::new(false),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Release the lock, then wake and report.
    fn unlock(&self, mut state: MutexGuard<'_, State>) {
        let first = state.wake.first.take();
        let rest = std::mem::take(&mut state.wake.rest);
        let events = std::mem::take(&mut state.events);
        drop(state);
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
    }

    /// Take a permit if one is free, lock-free.
    fn try_acquire(&self) -> bool {
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

    pub(crate) fn admit(self: &Arc<Self>, priority: Priority) -> Admission {
        if let Some(share) = &self.config.gate_share {
            self.subscribe(share.as_ref());
        }
        // Fast path: nobody waits, the gate is open, no pacing.
        if !self.slow.load(Ordering::SeqCst) && self.try_acquire() {
            return Admission::Permit(Permit {
                limiter: self.clone(),
            });
        }
        self.admit_slow(priority)
    }

    /// Admission under the lock: a permit if nothing stands in the way, else
    /// a place in the queue (or a refusal).
    fn admit_slow(self: &Arc<Self>, priority: Priority) -> Admission {
        // Without pacing, the slow path nearly always means queueing: make
        // the waiter's mailbox before taking the lock, not while holding it.
        let mut slot = self.config.pacing.is_none().then(Slot::new);
        let mut now = Now::default();
        let mut state = self.lock();
        let gate_open = state.gate_until.is_none_or(|until| now.get() >= until);
        if state.queued == 0 && gate_open {
            let permitted = match self.config.pacing {
                None => self.try_acquire(),
                Some(_) => {
                    self.in_flight.load(Ordering::SeqCst) < self.config.max_concurrency
                        && self.take_pacing(&mut state, now.get())
                        && self.try_acquire()
                }
            };
            if permitted {
                drop(state);
                return Admission::Permit(Permit {
                    limiter: self.clone(),
                });
            }
        }
        if state.queued >= self.config.max_queue {
            // make room by evicting the newest waiter of a lower priority
            let victim = (0..3)
                .map(Priority::from_index)
                .take_while(|p| *p < priority)
                .find(|p| !state.queues[p.index()].is_empty());
            match victim {
                Some(lower) => {
                    if let Some(entry) = state.queues[lower.index()].pop_back() {
                        state.queued -= 1;
                        if let Some(waker) = entry.slot.settle(EVICTED) {
                            state.wake.push(waker);
                        }
                        self.shed(&mut state, entry.priority, OverloadReason::Evicted);
                    }
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
        state.seq += 1;
        let seq = state.seq;
        state.queues[priority.index()].push_back(Entry {
            seq,
            priority,
            enqueued_at,
            slot: slot.clone(),
        });
        state.queued += 1;
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

    fn shed(&self, state: &mut State, priority: Priority, reason: OverloadReason) {
        if self.config.on_event.is_some() {
            state.events.push(LimiterEvent::Shed { priority, reason });
        }
    }

    /// Pace to `allowed` requests per window (see
    /// [`PriorityLimitLayer::learn_pacing`](super::PriorityLimitLayer::learn_pacing)):
    /// the window is the longest `reset` seen, at most the configured one;
    /// smooth pacing's interval becomes `window / allowed`. No effect
    /// without learning, without smooth pacing, or for `allowed == 0`.
    pub(crate) fn learn_allowed(&self, allowed: u32, reset: Option<Duration>) {
        let (Some(window), Some(Pacing::Smooth { .. })) =
            (self.config.learn_pacing, self.config.pacing)
        else {
            return;
        };
        if allowed == 0 {
            return;
        }
        let mut state = self.lock();
        let seen = match (state.learned_window, reset) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let window = seen.map_or(window, |seen| seen.min(window));
        state.learned_window = seen;
        state.learned_interval = Some(window / allowed);
    }

    /// The smooth pacing interval in force (learned, else configured).
    pub(crate) fn pacing_interval(&self) -> Option<Duration> {
        match self.config.pacing {
            Some(Pacing::Smooth { interval, .. }) => {
                Some(self.lock().learned_interval.unwrap_or(interval))
            }
            _ => None,
        }
    }

    /// Whether pacing lets a dispatch through at `now`; takes it if so.
    fn take_pacing(&self, state: &mut State, now: Instant) -> bool {
        match self.config.pacing {
            None => true,
            Some(Pacing::Smooth { interval, burst }) => {
                let interval = state.learned_interval.unwrap_or(interval);
                let tat = state.pacing_tat.unwrap_or(now).max(now);
                let tolerance = interval.saturating_mul(burst.saturating_sub(1));
                if tat.saturating_duration_since(now) > tolerance {
                    return false;
                }
                // an interval too long to represent is as good as forever
                let far = Duration::from_secs(86_400 * 365 * 30);
                state.pacing_tat = Some(tat.checked_add(interval).unwrap_or(tat + far));
                true
            }
            Some(Pacing::Window { requests, per }) => {
                // a dispatch at `s` counts until `s + per` (excluded)
                while let Some(&sent) = state.pacing_log.front() {
                    match sent.checked_add(per) {
                        Some(expires) if expires <= now => state.pacing_log.pop_front(),
                        _ => break,
                    };
                }
                if state.pacing_log.len() >= requests as usize {
                    return false;
                }
                state.pacing_log.push_back(now);
                true
            }
        }
    }

    /// When pacing next lets a dispatch through.
    fn pacing_ready_at(&self, state: &State, now: Instant) -> Instant {
        let at = match self.config.pacing {
            Some(Pacing::Smooth { interval, burst }) => state.pacing_tat.map(|tat| {
                let interval = state.learned_interval.unwrap_or(interval);
                let tolerance = interval.saturating_mul(burst.saturating_sub(1));
                tat.checked_sub(tolerance).unwrap_or(now)
            }),
            Some(Pacing::Window { per, .. }) => {
                // the oldest dispatch of the window leaves it (a window too
                // long to represent: in 30 years)
                let far = Duration::from_secs(86_400 * 365 * 30);
                state
                    .pacing_log
                    .front()
                    .map(|&sent| sent.checked_add(per).unwrap_or(now + far))
            }
            None => None,
        };
        at.unwrap_or(now).max(now)
    }

    /// Grant permits to waiters, best first, while capacity, the gate and
    /// pacing allow; arm a timer for when the gate or pacing will allow more.
    ///
    /// With `spare`, the caller hands over a permit it holds (a release):
    /// the first waiter granted takes it as it is, without the permit count
    /// going down and up again; if nobody can take it, it is returned.
    fn dispatch(&self, state: &mut State, now: &mut Now, mut spare: bool) {
        // a gate whose time has passed is open, waiters or not
        let reopened = match state.gate_until {
            Some(until) if now.get() >= until => {
                self.set_gate(state, None);
                true
            }
            _ => false,
        };
        while state.queued > 0 {
            if let Some(until) = state.gate_until {
                self.arm_timer(state, until);
                break;
            }
            // hold a permit for the next waiter: the spare one, or a free one
            if !spare && !self.try_acquire() {
                break;
            }
            spare = true;
            if self.config.pacing.is_some() && !self.take_pacing(state, now.get()) {
                let at = self.pacing_ready_at(state, now.get());
                self.arm_timer(state, at);
                break;
            }
            let Some((index, newest)) = self.best(state, now) else {
                break;
            };
            let queue = &mut state.queues[index];
            let taken = if newest {
                queue.pop_back()
            } else {
                queue.pop_front()
            };
            let Some(entry) = taken else {
                break;
            };
            spare = false;
            state.queued -= 1;
            entry.slot.after_gate.store(reopened, Ordering::Relaxed);
            if let Some(waker) = entry.slot.settle(GRANTED) {
                state.wake.push(waker);
            }
        }
        if spare {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.update_slow(state, now);
    }

    /// Close the gate until `until`, or open it (`None`).
    fn set_gate(&self, state: &mut State, until: Option<Instant>) {
        state.gate_until = until;
        self.gate_closed.store(until.is_some(), Ordering::SeqCst);
    }

    /// Leave the slow path once nothing needs it.
    fn update_slow(&self, state: &State, now: &mut Now) {
        let slow = state.queued > 0
            || self.config.pacing.is_some()
            || state.gate_until.is_some_and(|until| now.get() < until);
        // most calls change nothing: spare the shared cache line a write
        if self.slow.load(Ordering::SeqCst) != slow {
            self.slow.store(slow, Ordering::SeqCst);
        }
    }

    /// The queue whose turn it is, and whether its newest waiter goes
    /// (adaptive LIFO) rather than its oldest.
    ///
    /// Between priorities: the highest level after aging (a queue ages with
    /// its oldest waiter), then the earliest arrival. With one priority
    /// waiting, no aging and first-come-first-served order (the usual case)
    /// no clock is read.
    fn best(&self, state: &State, now: &mut Now) -> Option<(usize, bool)> {
        let mut heads = state
            .queues
            .iter()
            .enumerate()
            .filter_map(|(index, queue)| queue.front().map(|head| (index, head)));
        let (first, head) = heads.next()?;
        let (index, head) = match heads.next() {
            None => (first, head),
            Some(next) => {
                let aging = self.config.aging;
                let mut level = |head: &Entry| {
                    let mut level = head.priority.index() as u8;
                    if let (Some(aging), Some(at)) = (aging, head.enqueued_at) {
                        let waited = now.get().saturating_duration_since(at);
                        if waited >= aging.saturating_mul(2) {
                            level += 2;
                        } else if waited >= aging {
                            level += 1;
                        }
                    }
                    level.min(2)
                };
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
        let newest = match (self.config.lifo_after, head.enqueued_at) {
            (Some(after), Some(at)) => now.get().saturating_duration_since(at) >= after,
            _ => false,
        };
        Some((index, newest))
    }

    /// Make sure a dispatch runs at `at`, even if no request completes.
    fn arm_timer(&self, state: &mut State, at: Instant) {
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

    /// When the rate gate reopens, if it is closed now. Lock-free while the
    /// gate is open.
    pub(crate) fn gate_closed_until(&self) -> Option<Instant> {
        if !self.gate_closed.load(Ordering::SeqCst) {
            return None;
        }
        let until = self.lock().gate_until?;
        (Instant::now() < until).then_some(until)
    }

    /// Subscribe to the gate share once, from inside the runtime.
    #[cold]
    fn subscribe(&self, share: &dyn PauseShare) {
        if !self.subscribed.load(Ordering::Relaxed) && !self.subscribed.swap(true, Ordering::AcqRel)
        {
            let me: Weak<dyn Pausable> = self.me.clone();
            share.subscribe(PauseTarget::new(me, self.id));
        }
    }

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
        // A hint past the bound (a daily cap) is not pacing: leave it to the
        // retry layer, which returns such a response at once.
        if wait > self.config.max_gate {
            return false;
        }
        let now = Instant::now();
        let Some(until) = now.checked_add(wait) else {
            return false;
        };
        let mut state = self.lock();
        if state.gate_until.is_some_and(|current| current >= until) {
            return false;
        }
        self.set_gate(&mut state, Some(until));
        self.slow.store(true, Ordering::SeqCst);
        if self.config.on_event.is_some() {
            state.events.push(match source {
                Some(source) => LimiterEvent::GateClosed { for_: wait, source },
                None => LimiterEvent::GateClosedElsewhere { for_: wait },
            });
        }
        // the timer also takes the limiter off the slow path when it reopens
        self.arm_timer(&mut state, until);
        self.unlock(state);
        true
    }

    /// A queued request gave up (dropped, timed out): leave the queue, or
    /// hand back a permit granted in the meantime.
    fn leave(&self, ticket: &Ticket) {
        let mut now = Now::default();
        let mut state = self.lock();
        match ticket.slot.state.load(Ordering::Acquire) {
            WAITING => {
                let queue = &mut state.queues[ticket.priority.index()];
                if let Some(position) = queue.iter().position(|e| e.seq == ticket.seq) {
                    queue.remove(position);
                    state.queued -= 1;
                }
                self.update_slow(&state, &mut now);
            }
            // the permit it never used goes to the next waiter
            GRANTED => self.dispatch(&mut state, &mut now, true),
            _ => {}
        }
        self.unlock(state);
    }

    fn snapshot(&self) -> LimiterStatus {
        let now = Instant::now();
        let state = self.lock();
        LimiterStatus {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            available: self
                .config
                .max_concurrency
                .saturating_sub(self.in_flight.load(Ordering::SeqCst)),
            queued: [
                state.queues[0].len(),
                state.queues[1].len(),
                state.queues[2].len(),
            ],
            gate_closed_for: state
                .gate_until
                .map(|until| until.saturating_duration_since(now))
                .filter(|d| !d.is_zero()),
        }
    }
}

/// A concurrency slot, released when dropped.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
}

impl Permit {
    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

/// A place in the queue. Dropping it leaves the queue (or returns a permit
/// granted to it and never used).
pub(crate) struct Ticket {
    limiter: Arc<Limiter>,
    slot: Arc<Slot>,
    seq: u64,
    priority: Priority,
    enqueued_at: Option<Instant>,
    used: bool,
}

/// Where a queued request stands.
pub(crate) enum TicketState {
    Waiting,
    Granted(Permit),
    Shed(Overloaded),
}

impl Ticket {
    /// Check the ticket, registering `waker` to hear of a change.
    pub(crate) fn poll_state(&mut self, waker: &Waker) -> TicketState {
        if self.slot.state.load(Ordering::Acquire) == WAITING {
            let mut registered = self.slot.waker.lock().unwrap_or_else(|e| e.into_inner());
            if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *registered = Some(waker.clone());
            }
        }
        match self.slot.state.load(Ordering::Acquire) {
            GRANTED => {
                self.used = true;
                TicketState::Granted(Permit {
                    limiter: self.limiter.clone(),
                })
            }
            EVICTED => {
                self.used = true;
                TicketState::Shed(Overloaded::new(OverloadReason::Evicted))
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
        let limiter = self.limiter.clone();
        let mut state = limiter.lock();
        if self.slot.state.load(Ordering::Acquire) == WAITING {
            let queue = &mut state.queues[self.priority.index()];
            if let Some(position) = queue.iter().position(|e| e.seq == self.seq) {
                queue.remove(position);
                state.queued -= 1;
            }
            self.slot.state.store(EVICTED, Ordering::Release);
            self.used = true;
            limiter.update_slow(&state, &mut Now::default());
            limiter.shed(&mut state, self.priority, OverloadReason::QueueTimeout);
            limiter.unlock(state);
            return TicketState::Shed(Overloaded::new(OverloadReason::QueueTimeout));
        }
        drop(state);
        self.poll_state(std::task::Waker::noop())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.limiter.leave(self);
        }
    }
}

impl Pausable for Limiter {
    /// Another limiter saw a hint: close this gate too.
    fn pause_from_share(&self, pause: Duration) {
        self.close_gate_with(pause, None);
    }
}

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
}

/// A cloneable handle on a limiter's shared state.
#[derive(Clone)]
pub struct PriorityLimitHandle {
    pub(crate) limiter: Arc<Limiter>,
}

impl PriorityLimitHandle {
    /// The interval between dispatches that smooth pacing keeps now: the
    /// one learned from `inin-ratelimit-allowed` (see
    /// [`learn_pacing`](super::PriorityLimitLayer::learn_pacing)), else the
    /// configured one; `None` without smooth pacing.
    pub fn pacing_interval(&self) -> Option<Duration> {
        self.limiter.pacing_interval()
    }

    /// In-flight requests, free permits, queue lengths, gate.
    pub fn status(&self) -> LimiterStatus {
        self.limiter.snapshot()
    }

    /// Close the rate gate for `wait` (as a server hint would).
    pub fn close_gate(&self, wait: Duration) {
        let _ = self.limiter.close_gate(wait, HintSource::RetryAfter);
    }

    /// Reopen the rate gate now and dispatch waiters.
    pub fn open_gate(&self) {
        let mut state = self.limiter.lock();
        self.limiter.set_gate(&mut state, None);
        self.limiter
            .dispatch(&mut state, &mut Now::default(), false);
        self.limiter.unlock(state);
    }
}

impl fmt::Debug for PriorityLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityLimitHandle")
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_hands_its_permit_to_the_next_waiter() {
        let limiter = limiter(1);
        let first = permit(limiter.admit(Priority::Normal));
        let mut second = ticket(limiter.admit(Priority::Normal));
        assert!(granted(&mut second).is_none());
        drop(first);
        // the permit changed hands: still one in flight, nobody queued
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 1);
        let second = granted(&mut second).expect("granted on release");
        assert_eq!(limiter.snapshot().queued, [0, 0, 0]);
        assert!(!limiter.slow.load(Ordering::SeqCst));
        drop(second);
        // nobody left: the permit goes back and the fast path reopens
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 0);
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
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 0);
        assert!(granted(&mut waiter).is_none());
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let permit = granted(&mut waiter).expect("granted when the gate reopened");
        assert!(waiter.after_gate());
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 1);
        drop(permit);
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_granted_permit_never_used_goes_to_the_next_waiter() {
        let limiter = limiter(1);
        let first = permit(limiter.admit(Priority::Normal));
        let second = ticket(limiter.admit(Priority::Normal));
        let mut third = ticket(limiter.admit(Priority::Normal));
        drop(first);
        // granted, then dropped before its task ran
        assert_eq!(second.slot.state.load(Ordering::Acquire), GRANTED);
        drop(second);
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 1);
        assert!(granted(&mut third).is_some());
        assert_eq!(limiter.in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_flag_follows_the_gate() {
        let limiter = limiter(4);
        assert_eq!(limiter.gate_closed_until(), None);
        assert!(limiter.close_gate(Duration::from_secs(3), HintSource::RetryAfter));
        let until = Instant::now() + Duration::from_secs(3);
        assert_eq!(limiter.gate_closed_until(), Some(until));
        assert!(limiter.gate_closed.load(Ordering::SeqCst));
        PriorityLimitHandle {
            limiter: limiter.clone(),
        }
        .open_gate();
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
    async fn aging_promotes_at_exact_multiples_of_the_step() {
        let mut config = Config::new(1);
        config.aging = Some(Duration::from_secs(10));
        let limiter = Limiter::new(config);
        let busy = permit(limiter.admit(Priority::High));
        let mut low = ticket(limiter.admit(Priority::Low));
        tokio::time::advance(Duration::from_secs(20) - Duration::from_nanos(1)).await;
        let mut high = ticket(limiter.admit(Priority::High));
        let mut normal = ticket(limiter.admit(Priority::Normal));
        let best = || limiter.best(&limiter.lock(), &mut Now::default());
        // low has waited one step: level normal, behind high
        assert_eq!(best(), Some((Priority::High.index(), false)));
        tokio::time::advance(Duration::from_nanos(1)).await;
        // two steps: level high, and it came first
        assert_eq!(best(), Some((Priority::Low.index(), false)));
        drop(busy);
        let permit = granted(&mut low).expect("the aged request goes first");
        assert!(granted(&mut high).is_none() && granted(&mut normal).is_none());
        drop(permit);
        drop(granted(&mut high).expect("then high"));
        assert!(granted(&mut normal).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn window_pacing_counts_the_last_period_exactly() {
        let mut config = Config::new(8);
        config.pacing = Some(Pacing::Window {
            requests: 2,
            per: Duration::from_secs(1),
        });
        let limiter = Limiter::new(config);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut state = limiter.lock();
        assert!(limiter.take_pacing(&mut state, at(0)));
        assert!(limiter.take_pacing(&mut state, at(300)));
        assert!(!limiter.take_pacing(&mut state, at(999)));
        // the first dispatch leaves the window exactly 1 s after it
        assert_eq!(limiter.pacing_ready_at(&state, at(999)), at(1000));
        assert!(limiter.take_pacing(&mut state, at(1000)));
        assert!(!limiter.take_pacing(&mut state, at(1299)));
        assert_eq!(limiter.pacing_ready_at(&state, at(1299)), at(1300));
        assert!(limiter.take_pacing(&mut state, at(1300)));
        assert_eq!(state.pacing_log.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn window_pacing_survives_an_unrepresentable_window() {
        let mut config = Config::new(8);
        config.pacing = Some(Pacing::Window {
            requests: 1,
            per: Duration::MAX,
        });
        let limiter = Limiter::new(config);
        let now = Instant::now();
        let mut state = limiter.lock();
        assert!(limiter.take_pacing(&mut state, now));
        assert!(!limiter.take_pacing(&mut state, now + Duration::from_secs(86_400)));
        assert!(limiter.pacing_ready_at(&state, now) > now + Duration::from_secs(86_400 * 365));
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
        let best = || limiter.best(&limiter.lock(), &mut Now::default());
        assert_eq!(best(), Some((Priority::Normal.index(), false)));
        tokio::time::advance(Duration::from_secs(1) - Duration::from_nanos(1)).await;
        assert_eq!(best(), Some((Priority::Normal.index(), false)));
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(best(), Some((Priority::Normal.index(), true)));
    }
}
