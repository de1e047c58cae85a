//! The limiter's built-in pacing: a plain schedule that answers, for a
//! given instant, whether a dispatch may go and when the next one may. It
//! knows nothing of the limiter, tasks or timers; the limiter holds one
//! under its lock.

mod cubic;
mod feed;
mod learner;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::observe::PacingSource;
pub(crate) use learner::{Learn, Learner};

/// An interval too long to represent is as good as forever: 30 years.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// How the built-in pacing spaces dispatches (the configured shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacingSpec {
    /// One dispatch per `interval`, bursts of up to the configured burst
    /// (GCRA).
    Smooth {
        /// The configured interval between dispatches.
        interval: Duration,
    },
    /// At most `requests` dispatches in any `per` (a sliding window).
    Window {
        /// The allowance per window.
        requests: u32,
        /// The window.
        per: Duration,
    },
}

/// A pacing schedule: smooth (GCRA with a burst, at a configured rate or
/// one learned from the server) or a sliding window.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    kind: Kind,
    /// Learning only, for a pacer outside the limiter: never holds a
    /// dispatch back (the pacer does), counts what is sent for the learner.
    advisory: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Smooth {
        /// The configured interval (`None`: learned only).
        interval: Option<Duration>,
        /// Dispatches allowed at once (at least 1).
        burst: u32,
        /// The theoretical arrival time of the next dispatch.
        tat: Option<Instant>,
        /// The slot the last dispatch took, and its cost in slots.
        last: Option<(Instant, u32)>,
        /// What is learned from the server, if learning is on.
        learner: Option<Box<Learner>>,
    },
    Window {
        requests: u32,
        per: Duration,
        /// The times of the dispatches in the current window, oldest first
        /// (at most `requests` of them).
        log: VecDeque<Instant>,
    },
}

impl Pacing {
    /// A schedule of the given shape. `burst` applies to smooth pacing
    /// (a window bursts by design); `learn` turns on learning the rate from
    /// the server (smooth pacing, or none configured). `None` when there is
    /// nothing to pace by.
    pub(crate) fn new(spec: Option<PacingSpec>, burst: u32, learn: Learn) -> Option<Self> {
        let kind = match spec {
            Some(PacingSpec::Window { requests, per }) => Kind::Window {
                requests,
                per,
                log: VecDeque::new(),
            },
            Some(PacingSpec::Smooth { interval }) => Kind::Smooth {
                interval: Some(interval),
                burst: burst.max(1),
                tat: None,
                last: None,
                learner: Learner::new(learn).map(Box::new),
            },
            None => Kind::Smooth {
                interval: None,
                burst: burst.max(1),
                tat: None,
                last: None,
                learner: Some(Box::new(Learner::new(learn)?)),
            },
        };
        Some(Self {
            kind,
            advisory: false,
        })
    }

    /// Learning only, beside a pacer outside the limiter: what is learned
    /// is told to that pacer; this schedule holds nothing back. `None`
    /// without learning.
    pub(crate) fn advisory(burst: u32, learn: Learn) -> Option<Self> {
        let mut pacing = Self::new(None, burst, learn)?;
        pacing.advisory = true;
        Some(pacing)
    }

    /// Whether a dispatch may go at `now`; takes the slot if so.
    #[cfg(test)]
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.wait(now, 1).is_some() {
            return false;
        }
        self.take(now, 1);
        true
    }

    /// Whether a dispatch costing `units` slots may go at `now`: `None` if
    /// it may, else the instant from which it may (never before `now`).
    ///
    /// Smooth pacing lets a request go when its first slot is due, whatever
    /// its cost, and charges the cost to the requests after it
    /// ([`take`](Self::take)); a sliding window needs `units` free entries
    /// (at most the whole window).
    pub(crate) fn wait(&mut self, now: Instant, units: u32) -> Option<Instant> {
        if self.advisory {
            // the pacer outside holds dispatches back, not this schedule
            return None;
        }
        match &mut self.kind {
            Kind::Smooth { .. } => {
                let at = self.ready_at(now);
                (at > now).then_some(at)
            }
            Kind::Window { requests, per, log } => {
                // a dispatch at `s` counts until `s + per` (excluded)
                while let Some(&sent) = log.front() {
                    match sent.checked_add(*per) {
                        Some(expires) if expires <= now => log.pop_front(),
                        _ => break,
                    };
                }
                let units = units.clamp(1, (*requests).max(1)) as usize;
                let over = (log.len() + units)
                    .checked_sub(*requests as usize)
                    .filter(|over| *over > 0)?;
                // the entry whose leaving makes room for `units`
                let sent = log[over - 1];
                Some(sent.checked_add(*per).unwrap_or(now + FAR).max(now))
            }
        }
    }

    /// Take the slots of a dispatch costing `units` at `now` (after
    /// [`wait`](Self::wait) said it may go): smooth pacing moves the next
    /// slot `units` intervals on; a window records `units` entries.
    pub(crate) fn take(&mut self, now: Instant, units: u32) {
        let units = units.max(1);
        if self.advisory {
            // only measured, for the learner: the pacer outside spaced it
            if let Some(learner) = self.learner() {
                learner.dispatched(now, units);
            }
            return;
        }
        match &mut self.kind {
            Kind::Smooth {
                interval,
                tat,
                last,
                learner,
                ..
            } => {
                let in_force = match learner {
                    Some(learner) => learner.interval(*interval, now).0,
                    None => *interval,
                };
                if let Some(in_force) = in_force {
                    let current = tat.unwrap_or(now).max(now);
                    let next = match learner {
                        Some(learner) => learner.next_slot(*interval, current, now, units),
                        None => current.checked_add(in_force.saturating_mul(units)),
                    };
                    *tat = Some(next.unwrap_or(current + FAR));
                    *last = Some((current, units));
                }
                if let Some(learner) = learner {
                    learner.dispatched(now, units);
                }
            }
            Kind::Window { requests, log, .. } => {
                for _ in 0..units.min(*requests) {
                    log.push_back(now);
                }
            }
        }
    }

    /// The interval in force was `before` until what was just learned: a
    /// next slot the slower rate set comes in to where the faster rate puts
    /// it after the last dispatch, so that a faster rate holds from the next
    /// dispatch, not one old interval later.
    pub(crate) fn rate_changed(&mut self, before: Option<Duration>, now: Instant) {
        let after = self.status(now).0;
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        if let Kind::Smooth {
            tat: Some(tat),
            last: Some((slot, units)),
            ..
        } = &mut self.kind
        {
            let sooner = slot.checked_add(after.saturating_mul(*units));
            if let Some(sooner) = sooner.filter(|_| after < before) {
                *tat = (*tat).min(sooner.max(now));
            }
        }
    }

    /// When the next dispatch may go, seen from `now` (never before it).
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        if self.advisory {
            return now;
        }
        let at = match &self.kind {
            Kind::Smooth { burst, tat, .. } => {
                let interval = self.status(now).0;
                tat.zip(interval).map(|(tat, interval)| {
                    let tolerance = interval.saturating_mul(burst.saturating_sub(1));
                    tat.checked_sub(tolerance).unwrap_or(now)
                })
            }
            // the oldest dispatch of the window leaves it
            Kind::Window { per, log, .. } => log
                .front()
                .map(|&sent| sent.checked_add(*per).unwrap_or(now + FAR)),
        };
        at.unwrap_or(now).max(now)
    }

    /// Whether the schedule holds nothing back at `now` and remembers
    /// nothing that a new schedule would need to keep the rate (the next
    /// slot is due, the window is empty). A learned rate is not kept: a new
    /// schedule learns it again from the next response.
    pub(crate) fn is_spent(&self, now: Instant) -> bool {
        match &self.kind {
            Kind::Smooth { tat, .. } => tat.is_none_or(|tat| tat <= now),
            Kind::Window { per, log, .. } => log
                .back()
                .is_none_or(|&sent| sent.checked_add(*per).is_some_and(|end| end <= now)),
        }
    }

    /// What learns, if anything.
    pub(crate) fn learner(&mut self) -> Option<&mut Learner> {
        match &mut self.kind {
            Kind::Smooth { learner, .. } => learner.as_deref_mut(),
            Kind::Window { .. } => None,
        }
    }

    /// Smooth pacing's interval in force at `now` and where it comes from,
    /// and the ceiling on learning; no interval for a sliding window.
    pub(crate) fn status(
        &self,
        now: Instant,
    ) -> (Option<Duration>, PacingSource, Option<Duration>) {
        match &self.kind {
            Kind::Smooth {
                interval, learner, ..
            } => match learner {
                Some(learner) => {
                    let (current, source) = learner.interval(*interval, now);
                    (current, source, learner.ceiling(*interval))
                }
                None => (*interval, PacingSource::Configured, None),
            },
            Kind::Window { .. } => (None, PacingSource::Configured, None),
        }
    }

    /// The configured smooth interval (`None` for a window, or learning
    /// without one).
    pub(crate) fn configured(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Smooth { interval, .. } => *interval,
            Kind::Window { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn smooth(interval: Duration, burst: u32) -> Pacing {
        Pacing::new(Some(PacingSpec::Smooth { interval }), burst, Learn::Off).unwrap()
    }

    fn interval(pacing: &Pacing) -> Option<Duration> {
        pacing.status(Instant::now()).0
    }

    /// What the deprecated `learn_pacing` learned from Genesys headers.
    fn learn(pacing: &mut Pacing, allowed: u64, reset: Option<Duration>) {
        let quota = crate::hint::Quota {
            source: crate::hint::QuotaSource::Genesys,
            limit: Some(allowed),
            window: None,
            remaining: None,
            reset,
        };
        if let Some(learner) = pacing.learner() {
            learner.advertised(&quota, 0, Instant::now());
        }
    }

    #[test]
    fn smooth_pacing_spaces_dispatches_by_its_interval() {
        let start = Instant::now();
        let mut pacing = smooth(ms(200), 1);
        assert!(pacing.try_take(start));
        assert!(!pacing.try_take(start + ms(199)));
        assert_eq!(pacing.ready_at(start + ms(1)), start + ms(200));
        assert!(pacing.try_take(start + ms(200)));
        assert_eq!(pacing.ready_at(start + ms(200)), start + ms(400));
    }

    #[test]
    fn smooth_pacing_allows_its_burst_and_idle_time_does_not_pile_up() {
        let start = Instant::now();
        let mut pacing = smooth(ms(250), 3);
        assert!((0..3).all(|_| pacing.try_take(start)));
        assert!(!pacing.try_take(start));
        assert_eq!(pacing.ready_at(start), start + ms(250));
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| pacing.try_take(later)));
        assert!(!pacing.try_take(later));
    }

    #[test]
    fn a_burst_of_zero_is_a_burst_of_one() {
        let start = Instant::now();
        let mut pacing = smooth(ms(100), 0);
        assert!(pacing.try_take(start));
        assert!(!pacing.try_take(start));
    }

    #[test]
    fn learned_pacing_follows_the_allowance_within_the_window() {
        let start = Instant::now();
        let mut pacing = Pacing::new(
            Some(PacingSpec::Smooth { interval: ms(200) }),
            1,
            Learn::Legacy(Duration::from_secs(60)),
        )
        .unwrap();
        assert_eq!(interval(&pacing), Some(ms(200)));
        // 600 a minute: 100 ms apart
        learn(&mut pacing, 600, None);
        assert_eq!(interval(&pacing), Some(ms(100)));
        // a reset of 10 s implies a 10 s window: 600 per 10 s
        learn(&mut pacing, 600, Some(Duration::from_secs(10)));
        assert_eq!(interval(&pacing), Some(Duration::from_secs(10) / 600));
        // a shorter reset later (the window running out) keeps the longest
        learn(&mut pacing, 600, Some(Duration::from_secs(2)));
        assert_eq!(interval(&pacing), Some(Duration::from_secs(10) / 600));
        // never longer than the configured window; 0 is ignored
        learn(&mut pacing, 60, Some(Duration::from_secs(600)));
        assert_eq!(interval(&pacing), Some(Duration::from_secs(1)));
        learn(&mut pacing, 0, None);
        assert_eq!(interval(&pacing), Some(Duration::from_secs(1)));
        assert!(pacing.try_take(start));
        assert_eq!(pacing.ready_at(start), start + Duration::from_secs(1));
    }

    #[test]
    fn a_faster_rate_learned_holds_from_the_next_dispatch() {
        let start = Instant::now();
        let mut pacing = Pacing::new(None, 1, Learn::Legacy(Duration::from_secs(60))).unwrap();
        // 6 a minute: one every 10 s
        learn(&mut pacing, 6, None);
        assert!(pacing.try_take(start));
        assert_eq!(pacing.ready_at(start), start + Duration::from_secs(10));
        // 600 a minute from now on: the next goes 100 ms after the last
        let before = interval(&pacing);
        learn(&mut pacing, 600, None);
        pacing.rate_changed(before, start);
        assert_eq!(pacing.ready_at(start), start + ms(100));
        // a slower rate leaves the slot where it is
        assert!(pacing.try_take(start + ms(100)));
        let before = interval(&pacing);
        learn(&mut pacing, 60, None);
        pacing.rate_changed(before, start + ms(100));
        assert_eq!(pacing.ready_at(start + ms(100)), start + ms(200));
    }

    #[test]
    fn learning_is_off_unless_asked_for() {
        let mut pacing = smooth(ms(200), 1);
        learn(&mut pacing, 600, None);
        assert_eq!(interval(&pacing), Some(ms(200)));
        let mut window = Pacing::new(
            Some(PacingSpec::Window {
                requests: 5,
                per: ms(1000),
            }),
            1,
            Learn::Legacy(Duration::from_secs(60)),
        )
        .unwrap();
        learn(&mut window, 600, None);
        assert_eq!(interval(&window), None);
    }

    #[test]
    fn window_pacing_counts_the_last_period_exactly() {
        let start = Instant::now();
        let at = |v: u64| start + ms(v);
        let mut pacing = Pacing::new(
            Some(PacingSpec::Window {
                requests: 2,
                per: Duration::from_secs(1),
            }),
            1,
            Learn::Off,
        )
        .unwrap();
        assert_eq!(pacing.ready_at(at(0)), at(0));
        assert!(pacing.try_take(at(0)));
        assert!(pacing.try_take(at(300)));
        assert!(!pacing.try_take(at(999)));
        // the first dispatch leaves the window exactly 1 s after it
        assert_eq!(pacing.ready_at(at(999)), at(1000));
        assert!(pacing.try_take(at(1000)));
        assert!(!pacing.try_take(at(1299)));
        assert_eq!(pacing.ready_at(at(1299)), at(1300));
        assert!(pacing.try_take(at(1300)));
    }

    #[test]
    fn a_costly_dispatch_takes_its_units_of_the_schedule() {
        let start = Instant::now();
        let at = |v: u64| start + ms(v);
        // smooth: goes when its slot is due, the next waits three intervals
        let mut pacing = smooth(ms(200), 1);
        assert_eq!(pacing.wait(at(0), 3), None);
        pacing.take(at(0), 3);
        assert_eq!(pacing.wait(at(0), 1), Some(at(600)));
        assert_eq!(pacing.wait(at(600), 1), None);
        // window: needs three free entries and records three
        let mut window = Pacing::new(
            Some(PacingSpec::Window {
                requests: 4,
                per: Duration::from_secs(1),
            }),
            1,
            Learn::Off,
        )
        .unwrap();
        window.take(at(0), 1);
        window.take(at(100), 1);
        assert_eq!(window.wait(at(100), 3), Some(at(1000)));
        assert_eq!(window.wait(at(100), 2), None);
        window.take(at(100), 2);
        assert_eq!(window.wait(at(1000), 3), Some(at(1100)));
        assert_eq!(window.wait(at(1100), 3), None);
        // a cost over the allowance takes the whole window
        assert_eq!(window.wait(at(1100), 9), None);
        window.take(at(1100), 9);
        assert_eq!(window.wait(at(1100), 1), Some(at(2100)));
        assert!(!window.is_spent(at(2099)) && window.is_spent(at(2100)));
    }

    #[test]
    fn a_schedule_is_spent_once_its_next_slot_is_due() {
        let start = Instant::now();
        let mut pacing = smooth(ms(200), 1);
        assert!(pacing.is_spent(start));
        pacing.take(start, 2);
        assert!(!pacing.is_spent(start + ms(399)));
        assert!(pacing.is_spent(start + ms(400)));
    }

    #[test]
    fn window_pacing_survives_an_unrepresentable_window() {
        let now = Instant::now();
        let mut pacing = Pacing::new(
            Some(PacingSpec::Window {
                requests: 1,
                per: Duration::MAX,
            }),
            1,
            Learn::Off,
        )
        .unwrap();
        assert!(pacing.try_take(now));
        assert!(!pacing.try_take(now + Duration::from_secs(86_400)));
        assert!(pacing.ready_at(now) > now + Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn an_unrepresentable_interval_is_forever() {
        let now = Instant::now();
        let mut pacing = smooth(Duration::MAX, 1);
        assert!(pacing.try_take(now));
        assert!(!pacing.try_take(now + Duration::from_secs(86_400 * 365)));
    }
}
