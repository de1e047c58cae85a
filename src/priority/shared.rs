//! Pacing that can live outside one limiter: shared by several limiters in
//! a process, or by a fleet of processes (see the `fleet` module with the
//! `redis` feature).
//!
//! ```
//! use std::time::Duration;
//!
//! use tower_cx::priority::{LocalPacer, Priority, PriorityLimitLayer, Reservation};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Two limiters (say, one per API host) that together send at most 5
//! // requests per second, high priority first.
//! let pacer = LocalPacer::new(5, Duration::from_secs(1));
//! let a = PriorityLimitLayer::new(8).pacer(pacer.clone());
//! let b = PriorityLimitLayer::new(8).pacer(pacer.clone());
//! # let _ = (a, b);
//! // Slots are spaced 200 ms apart, whoever takes them.
//! assert_eq!(pacer.reserve_now(), Duration::ZERO);
//! assert_eq!(pacer.reserve_now(), Duration::from_millis(200));
//! // The schedule is booked 400 ms ahead: too far for low priority (which
//! // takes only a slot free now), not for high.
//! let ms = Duration::from_millis;
//! assert_eq!(pacer.try_reserve(Priority::Low), Reservation::Deferred(ms(400)));
//! assert_eq!(pacer.try_reserve(Priority::High), Reservation::Granted(ms(400)));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Priority;

/// The future of a [`Pacer`] reservation.
pub type PacerFuture = Pin<Box<dyn Future<Output = Reservation> + Send + 'static>>;

/// A [`Pacer`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is reserved for the request: send it after this wait.
    Granted(Duration),
    /// No slot for this priority now (the schedule keeps room for higher
    /// priorities): ask again after this wait.
    Deferred(Duration),
}

/// Hands out dispatch slots at a fixed rate to one or more limiters.
///
/// A limiter with a pacer holds at most one reservation at a time: it asks
/// for a slot at the priority of its best waiter (aging included) once a
/// permit is free, and when the slot comes due it dispatches whichever
/// waiter is best then (a request of higher priority that arrived in the
/// meantime goes first). A [`Deferred`](Reservation::Deferred) answer makes
/// it ask again at the time given. So a pacer may keep the schedule's near
/// future for higher priorities across every limiter (or process) that
/// shares it, as [`LocalPacer`] and the fleet's Redis pacer do.
pub trait Pacer: Send + Sync + 'static {
    /// Ask for the next slot for a request of `priority`.
    fn reserve(&self, priority: Priority) -> PacerFuture;

    /// A limiter that learns the rate
    /// ([`learn_rate`](super::PriorityLimitLayer::learn_rate)) tells the
    /// pacer the rate it learned from a response: at most one slot per
    /// `interval` (`None`: nothing learned, the pacer's own rate). A pacer
    /// shared by several limiters (or a fleet) should then pace them all no
    /// faster than that, and never faster than its own rate: the rate it
    /// was made with is the ceiling. Called on the response path: return
    /// quickly. The default ignores it.
    fn learned(&self, interval: Option<Duration>) {
        let _ = interval;
    }

    /// A request sent on one of this pacer's slots costs `units` slots more
    /// (its [`Cost`](super::Cost) above one): move the schedule on by that
    /// many slots, as if they had been reserved, so that the requests after
    /// it wait for them. Called by the limiter once the request is
    /// dispatched, outside its lock: return quickly. The default ignores
    /// it, and the pacer then hands out one slot per request whatever its
    /// cost.
    fn charge(&self, units: u32) {
        let _ = units;
    }
}

impl<P: Pacer + ?Sized> Pacer for Arc<P> {
    fn reserve(&self, priority: Priority) -> PacerFuture {
        (**self).reserve(priority)
    }

    fn learned(&self, interval: Option<Duration>) {
        (**self).learned(interval);
    }

    fn charge(&self, units: u32) {
        (**self).charge(units);
    }
}

/// How far ahead of now each priority may book a schedule, beyond its
/// burst: `None` is no limit. Indexed by `Priority::index`.
pub(crate) type Horizons = [Option<Duration>; 3];

/// The default horizons for slots `interval` apart: low takes only a slot
/// free now, normal books at most one slot ahead, high any slot.
pub(crate) fn default_horizons(interval: Duration) -> Horizons {
    [Some(Duration::ZERO), Some(interval), None]
}

/// GCRA with a horizon: the answer for a request at `now` on a schedule
/// whose next free slot is `tat` (advanced if granted).
pub(crate) fn gcra(
    tat: &mut Option<Instant>,
    now: Instant,
    interval: Duration,
    tolerance: Duration,
    horizon: Option<Duration>,
) -> Reservation {
    let current = tat.unwrap_or(now).max(now);
    let wait = current
        .checked_sub(tolerance)
        .map_or(Duration::ZERO, |go| go.saturating_duration_since(now));
    if let Some(horizon) = horizon {
        if wait > horizon {
            return Reservation::Deferred(wait - horizon);
        }
    }
    *tat = Some(current + interval);
    Reservation::Granted(wait)
}

/// An in-memory [`Pacer`] (GCRA: a schedule of evenly spaced slots with an
/// optional burst). Clones share the schedule.
///
/// Priorities book the schedule to different horizons: by default a low
/// priority request takes a slot only when one is free now, a normal one
/// books at most one slot ahead, and a high one any slot, so that a high
/// priority request waits at most about one slot per limiter behind lower
/// priorities, however much of them the other limiters have queued.
/// [`horizon`](Self::horizon) changes this.
#[derive(Clone)]
pub struct LocalPacer {
    interval: Duration,
    tolerance: Duration,
    horizons: Horizons,
    tat: Arc<Mutex<Option<Instant>>>,
    /// The rate a limiter learned, as an interval in nanoseconds (0: none).
    learned: Arc<AtomicU64>,
}

impl LocalPacer {
    /// `requests` per `per`, evenly spaced (at least one request per
    /// `per`).
    pub fn new(requests: u32, per: Duration) -> Self {
        let interval = per / requests.max(1);
        Self {
            interval,
            tolerance: Duration::ZERO,
            horizons: default_horizons(interval),
            tat: Arc::default(),
            learned: Arc::default(),
        }
    }

    /// Let up to `burst` requests go at once within the rate.
    pub fn burst(mut self, burst: u32) -> Self {
        self.tolerance = self.interval * burst.max(1).saturating_sub(1);
        self
    }

    /// A request of `priority` takes a slot only while it would wait at
    /// most `ahead` for it; otherwise it is
    /// [`Deferred`](Reservation::Deferred) until it would (defaults: low
    /// zero, normal one interval, high no limit).
    /// `Duration::MAX` lifts the limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::priority::{LocalPacer, Priority};
    ///
    /// // normal requests may book up to a second ahead
    /// let pacer = LocalPacer::new(300, Duration::from_secs(60))
    ///     .horizon(Priority::Normal, Duration::from_secs(1));
    /// # let _ = pacer;
    /// ```
    pub fn horizon(mut self, priority: Priority, ahead: Duration) -> Self {
        self.horizons[priority.index()] = (ahead != Duration::MAX).then_some(ahead);
        self
    }

    /// The time between two slots: the pacer's own, or the longer one a
    /// limiter learned (see [`Pacer::learned`]).
    pub fn interval(&self) -> Duration {
        let learned = Duration::from_nanos(self.learned.load(Ordering::Relaxed));
        self.interval.max(learned)
    }

    /// Reserve a slot now, whatever the priority; how long to wait for it.
    pub fn reserve_now(&self) -> Duration {
        match self.answer(None) {
            Reservation::Granted(wait) | Reservation::Deferred(wait) => wait,
        }
    }

    /// Reserve a slot now for a request of `priority`, if its horizon
    /// allows.
    pub fn try_reserve(&self, priority: Priority) -> Reservation {
        self.answer(self.horizons[priority.index()])
    }

    fn answer(&self, horizon: Option<Duration>) -> Reservation {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        gcra(
            &mut tat,
            Instant::now(),
            self.interval(),
            self.tolerance,
            horizon,
        )
    }
}

impl Pacer for LocalPacer {
    fn reserve(&self, priority: Priority) -> PacerFuture {
        Box::pin(std::future::ready(self.try_reserve(priority)))
    }

    /// Slots go at most one per `interval` from now on, never faster than
    /// the pacer's own rate; `None` goes back to its own rate.
    fn learned(&self, interval: Option<Duration>) {
        let nanos = interval.map_or(0, |i| u64::try_from(i.as_nanos()).unwrap_or(u64::MAX));
        self.learned.store(nanos, Ordering::Relaxed);
    }

    /// The next free slot moves `units` slots on (from now, if it was
    /// already past).
    fn charge(&self, units: u32) {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let current = tat.unwrap_or(now).max(now);
        let ahead = self.interval().saturating_mul(units);
        *tat = Some(current.checked_add(ahead).unwrap_or(current));
    }
}

impl fmt::Debug for LocalPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPacer")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .field("horizons", &self.horizons)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn local_pacer_spaces_slots_and_allows_its_burst() {
        let pacer = LocalPacer::new(4, Duration::from_secs(1)).burst(2);
        let waits: Vec<_> = (0..5).map(|_| pacer.reserve_now()).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(250), ms(500), ms(750)]);
        tokio::time::advance(Duration::from_secs(10)).await;
        // idle time does not pile up beyond the burst
        let waits: Vec<_> = (0..3).map(|_| pacer.reserve_now()).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(250)]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_priority_books_the_schedule_to_its_horizon() {
        use Reservation::{Deferred, Granted};
        let pacer = LocalPacer::new(4, Duration::from_secs(1));
        assert_eq!(pacer.try_reserve(Priority::Low), Granted(ms(0)));
        // the next slot is 250 ms ahead: normal books it, low may not
        assert_eq!(pacer.try_reserve(Priority::Low), Deferred(ms(250)));
        assert_eq!(pacer.try_reserve(Priority::Normal), Granted(ms(250)));
        assert_eq!(pacer.try_reserve(Priority::Normal), Deferred(ms(250)));
        assert_eq!(pacer.try_reserve(Priority::High), Granted(ms(500)));
        assert_eq!(pacer.try_reserve(Priority::High), Granted(ms(750)));
        // a deferral reserves nothing: asked again when it said, low gets
        // the slot after high's
        tokio::time::advance(ms(1000)).await;
        assert_eq!(pacer.try_reserve(Priority::Low), Granted(ms(0)));
        let wide = pacer.clone().horizon(Priority::Low, Duration::MAX);
        assert_eq!(wide.try_reserve(Priority::Low), Granted(ms(250)));
        let narrow = pacer.horizon(Priority::High, ms(100));
        assert_eq!(narrow.try_reserve(Priority::High), Deferred(ms(400)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_moves_the_schedule_on_by_its_slots() {
        use Reservation::{Deferred, Granted};
        let pacer = LocalPacer::new(4, Duration::from_secs(1));
        assert_eq!(pacer.try_reserve(Priority::High), Granted(ms(0)));
        // the request on that slot costs 3: two more slots are charged
        pacer.charge(2);
        assert_eq!(pacer.try_reserve(Priority::High), Granted(ms(750)));
        assert_eq!(pacer.try_reserve(Priority::Normal), Deferred(ms(750)));
        // a schedule left behind by idle time is charged from now
        tokio::time::advance(Duration::from_secs(10)).await;
        pacer.charge(1);
        assert_eq!(pacer.try_reserve(Priority::Low), Deferred(ms(250)));
        assert_eq!(pacer.try_reserve(Priority::High), Granted(ms(250)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_horizon_counts_beyond_the_burst() {
        use Reservation::{Deferred, Granted};
        let pacer = LocalPacer::new(4, Duration::from_secs(1)).burst(3);
        let lows: Vec<_> = (0..4).map(|_| pacer.try_reserve(Priority::Low)).collect();
        assert_eq!(
            lows,
            [
                Granted(ms(0)),
                Granted(ms(0)),
                Granted(ms(0)),
                Deferred(ms(250))
            ]
        );
    }
}
