//! The limiter's built-in pacing: a plain schedule that answers, for a
//! given instant, whether a dispatch may go and when the next one may. It
//! knows nothing of the limiter, tasks or timers; the limiter holds one
//! under its lock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

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

/// A pacing schedule: smooth (GCRA with a burst, optionally re-paced to the
/// server's `inin-ratelimit-allowed`) or a sliding window.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Smooth {
        /// The configured interval.
        interval: Duration,
        /// Dispatches allowed at once (at least 1).
        burst: u32,
        /// The theoretical arrival time of the next dispatch.
        tat: Option<Instant>,
        /// The window to learn the rate in, if learning is on.
        learn_window: Option<Duration>,
        /// The interval learned from `inin-ratelimit-allowed` (replaces
        /// the configured one).
        learned_interval: Option<Duration>,
        /// The longest `inin-ratelimit-reset` seen: the window the headers
        /// imply (at most `learn_window`).
        learned_window: Option<Duration>,
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
    /// (a window bursts by design); `learn_window` turns on learning the
    /// rate from the server (smooth pacing only).
    pub(crate) fn new(spec: PacingSpec, burst: u32, learn_window: Option<Duration>) -> Self {
        let kind = match spec {
            PacingSpec::Smooth { interval } => Kind::Smooth {
                interval,
                burst: burst.max(1),
                tat: None,
                learn_window,
                learned_interval: None,
                learned_window: None,
            },
            PacingSpec::Window { requests, per } => Kind::Window {
                requests,
                per,
                log: VecDeque::new(),
            },
        };
        Self { kind }
    }

    /// Whether a dispatch may go at `now`; takes the slot if so.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        match &mut self.kind {
            Kind::Smooth {
                interval,
                burst,
                tat,
                learned_interval,
                ..
            } => {
                let interval = learned_interval.unwrap_or(*interval);
                let current = tat.unwrap_or(now).max(now);
                let tolerance = interval.saturating_mul(burst.saturating_sub(1));
                if current.saturating_duration_since(now) > tolerance {
                    return false;
                }
                *tat = Some(current.checked_add(interval).unwrap_or(current + FAR));
                true
            }
            Kind::Window { requests, per, log } => {
                // a dispatch at `s` counts until `s + per` (excluded)
                while let Some(&sent) = log.front() {
                    match sent.checked_add(*per) {
                        Some(expires) if expires <= now => log.pop_front(),
                        _ => break,
                    };
                }
                if log.len() >= *requests as usize {
                    return false;
                }
                log.push_back(now);
                true
            }
        }
    }

    /// When the next dispatch may go, seen from `now` (never before it).
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        let at = match &self.kind {
            Kind::Smooth {
                interval,
                burst,
                tat,
                learned_interval,
                ..
            } => tat.map(|tat| {
                let interval = learned_interval.unwrap_or(*interval);
                let tolerance = interval.saturating_mul(burst.saturating_sub(1));
                tat.checked_sub(tolerance).unwrap_or(now)
            }),
            // the oldest dispatch of the window leaves it
            Kind::Window { per, log, .. } => log
                .front()
                .map(|&sent| sent.checked_add(*per).unwrap_or(now + FAR)),
        };
        at.unwrap_or(now).max(now)
    }

    /// Pace to `allowed` requests per window: the window is the longest
    /// `reset` seen, at most the learning window; the interval becomes
    /// `window / allowed`. No effect without learning, on a sliding
    /// window, or for `allowed == 0`.
    pub(crate) fn learn(&mut self, allowed: u32, reset: Option<Duration>) {
        let Kind::Smooth {
            learn_window: Some(window),
            learned_interval,
            learned_window,
            ..
        } = &mut self.kind
        else {
            return;
        };
        if allowed == 0 {
            return;
        }
        let seen = match (*learned_window, reset) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let window = seen.map_or(*window, |seen| seen.min(*window));
        *learned_window = seen;
        *learned_interval = Some(window / allowed);
    }

    /// Smooth pacing's interval in force (learned, else configured);
    /// `None` for a sliding window.
    pub(crate) fn interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Smooth {
                interval,
                learned_interval,
                ..
            } => Some(learned_interval.unwrap_or(*interval)),
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
        Pacing::new(PacingSpec::Smooth { interval }, burst, None)
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
            PacingSpec::Smooth { interval: ms(200) },
            1,
            Some(Duration::from_secs(60)),
        );
        assert_eq!(pacing.interval(), Some(ms(200)));
        // 600 a minute: 100 ms apart
        pacing.learn(600, None);
        assert_eq!(pacing.interval(), Some(ms(100)));
        // a reset of 10 s implies a 10 s window: 600 per 10 s
        pacing.learn(600, Some(Duration::from_secs(10)));
        assert_eq!(pacing.interval(), Some(Duration::from_secs(10) / 600));
        // a shorter reset later (the window running out) keeps the longest
        pacing.learn(600, Some(Duration::from_secs(2)));
        assert_eq!(pacing.interval(), Some(Duration::from_secs(10) / 600));
        // never longer than the configured window; 0 is ignored
        pacing.learn(60, Some(Duration::from_secs(600)));
        assert_eq!(pacing.interval(), Some(Duration::from_secs(1)));
        pacing.learn(0, None);
        assert_eq!(pacing.interval(), Some(Duration::from_secs(1)));
        assert!(pacing.try_take(start));
        assert_eq!(pacing.ready_at(start), start + Duration::from_secs(1));
    }

    #[test]
    fn learning_is_off_unless_asked_for() {
        let mut pacing = smooth(ms(200), 1);
        pacing.learn(600, None);
        assert_eq!(pacing.interval(), Some(ms(200)));
        let mut window = Pacing::new(
            PacingSpec::Window {
                requests: 5,
                per: ms(1000),
            },
            1,
            Some(Duration::from_secs(60)),
        );
        window.learn(600, None);
        assert_eq!(window.interval(), None);
    }

    #[test]
    fn window_pacing_counts_the_last_period_exactly() {
        let start = Instant::now();
        let at = |v: u64| start + ms(v);
        let mut pacing = Pacing::new(
            PacingSpec::Window {
                requests: 2,
                per: Duration::from_secs(1),
            },
            1,
            None,
        );
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
    fn window_pacing_survives_an_unrepresentable_window() {
        let now = Instant::now();
        let mut pacing = Pacing::new(
            PacingSpec::Window {
                requests: 1,
                per: Duration::MAX,
            },
            1,
            None,
        );
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
