//! What smooth pacing learns from the server: the advertised quota (its
//! steady rate, and the remaining requests spread over the time left in
//! the window) and the `429`s of a server that advertises nothing (a CUBIC
//! rate). The slowest of what is known paces; a configured rate is the
//! ceiling, or the rate until something is learned.

use std::time::Duration;

use tokio::time::Instant;

use super::cubic::{Cubic, Meter};
use crate::hint::{Quota, QuotaSource};
use crate::observe::PacingSource;

/// The longest window or reset learned from: a day.
const LONGEST: Duration = Duration::from_secs(86_400);

/// How learning treats the configured rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learn {
    /// No learning.
    Off,
    /// `learn_pacing(window)` (deprecated): `inin-ratelimit-allowed` per
    /// the longest reset seen (at most `window`) replaces the configured
    /// rate.
    Legacy(Duration),
    /// `learn_rate()`: learn from every quota family and from `429`s; a
    /// configured rate is the ceiling, `initial` the rate until something
    /// is learned.
    On {
        /// The rate before anything is learned.
        initial: Option<Duration>,
    },
}

/// The steady rate a quota advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Advertised {
    interval: Duration,
    source: QuotaSource,
}

/// The remaining quota spread over the time left in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spread {
    interval: Duration,
    until: Instant,
    source: QuotaSource,
}

#[derive(Debug, Clone)]
pub(crate) struct Learner {
    mode: Learn,
    /// The longest reset seen: the window the headers imply.
    longest_reset: Option<Duration>,
    advertised: Option<Advertised>,
    spread: Option<Spread>,
    cubic: Option<Cubic>,
    meter: Meter,
}

impl Learner {
    pub(crate) fn new(mode: Learn) -> Option<Self> {
        (mode != Learn::Off).then(|| Self {
            mode,
            longest_reset: None,
            advertised: None,
            spread: None,
            cubic: None,
            meter: Meter::new(),
        })
    }

    /// Whether `429`s cut the rate: only for a server that advertises no
    /// quota. Once one is advertised, the server's own count paces, and a
    /// `429` (a fault, another client of the same quota) is the gate's to
    /// honour (its `Retry-After`), not a reason to slow down for good.
    pub(crate) fn adapts(&self) -> bool {
        matches!(self.mode, Learn::On { .. }) && self.advertised.is_none()
    }

    /// One dispatch at `now` (for the measured rate).
    pub(crate) fn dispatched(&mut self, now: Instant, units: u32) {
        if matches!(self.mode, Learn::On { .. }) {
            self.meter.tick(now, units);
        }
    }

    /// The interval in force and where it comes from, given the configured
    /// interval.
    pub(crate) fn interval(
        &self,
        configured: Option<Duration>,
        now: Instant,
    ) -> (Option<Duration>, PacingSource) {
        self.combined(configured, now, true)
    }

    /// [`interval`](Self::interval), with or without the spread of the
    /// remaining quota.
    fn combined(
        &self,
        configured: Option<Duration>,
        now: Instant,
        with_spread: bool,
    ) -> (Option<Duration>, PacingSource) {
        let advertised = self
            .advertised
            .map(|a| (a.interval, PacingSource::Advertised(a.source)));
        let learned = match self.mode {
            Learn::Off => None,
            Learn::Legacy(_) => advertised,
            Learn::On { .. } => {
                let spread = self.spread.filter(|s| with_spread && now < s.until);
                [
                    advertised,
                    spread.map(|s| (s.interval, PacingSource::Advertised(s.source))),
                    self.cubic.map(|c| (c.interval(now), PacingSource::Adapted)),
                ]
                .into_iter()
                .flatten()
                .max_by_key(|(interval, _)| *interval)
            }
        };
        let configured = configured.map(|c| (c, PacingSource::Configured));
        let slowest = |a: (Duration, PacingSource), b: (Duration, PacingSource)| {
            if b.0 >= a.0 {
                b
            } else {
                a
            }
        };
        let found = match (self.mode, learned, configured) {
            // learned, under the configured ceiling
            (Learn::On { .. }, Some(l), Some(c)) => Some(slowest(l, c)),
            // nothing learned yet: the initial rate (under the ceiling)
            (Learn::On { initial: Some(i) }, None, c) => {
                let initial = (i, PacingSource::Configured);
                Some(c.map_or(initial, |c| slowest(initial, c)))
            }
            // the deprecated learning replaces the configured rate
            (_, l, c) => l.or(c),
        };
        match found {
            Some((interval, source)) => (Some(interval), source),
            None => (None, PacingSource::Off),
        }
    }

    /// The slot after one taken at `from`: one interval in force later, but
    /// a slot the remaining quota's spread alone pushes past the window's
    /// reset comes at the reset (a new window starts there).
    pub(crate) fn next_slot(
        &self,
        configured: Option<Duration>,
        from: Instant,
        now: Instant,
        units: u32,
    ) -> Option<Instant> {
        let by_others = self
            .combined(configured, now, false)
            .0
            .and_then(|interval| from.checked_add(interval.saturating_mul(units)));
        let spread = self
            .spread
            .filter(|s| matches!(self.mode, Learn::On { .. }) && now < s.until);
        let Some(spread) = spread else {
            return by_others;
        };
        let by_spread = from
            .checked_add(spread.interval.saturating_mul(units))
            .map_or(spread.until, |at| at.min(spread.until));
        Some(by_others.map_or(by_spread, |at| at.max(by_spread)))
    }

    /// The configured interval is a ceiling (for the status).
    pub(crate) fn ceiling(&self, configured: Option<Duration>) -> Option<Duration> {
        matches!(self.mode, Learn::On { .. })
            .then_some(configured)
            .flatten()
    }

    /// Learn from an advertised quota; `in_flight_others` are requests sent
    /// that the server may not have counted yet. Whether the steady rate
    /// changed.
    pub(crate) fn advertised(
        &mut self,
        quota: &Quota,
        in_flight_others: u64,
        now: Instant,
    ) -> bool {
        // a reset (or window) over a day is not pacing: not learned from
        let over_a_day =
            quota.reset.is_some_and(|r| r > LONGEST) || quota.window.is_some_and(|w| w > LONGEST);
        if over_a_day && matches!(self.mode, Learn::On { .. }) {
            return false;
        }
        let reset = quota.reset.filter(|r| !r.is_zero());
        if let Some(reset) = reset {
            self.longest_reset = Some(self.longest_reset.map_or(reset, |l| l.max(reset)));
        }
        let window = match self.mode {
            Learn::Off => return false,
            Learn::Legacy(window) => {
                if quota.source != QuotaSource::Genesys {
                    return false;
                }
                Some(self.longest_reset.map_or(window, |seen| seen.min(window)))
            }
            Learn::On { .. } => quota.window.or(self.longest_reset),
        };
        if matches!(self.mode, Learn::On { .. }) {
            if let (Some(remaining), Some(reset)) = (quota.remaining, quota.reset) {
                let left = remaining.saturating_sub(in_flight_others);
                let interval = match u32::try_from(left) {
                    Ok(0) => reset,
                    Ok(left) => reset / left,
                    Err(_) => Duration::ZERO,
                };
                // a reset too far to represent is no spread
                self.spread = now.checked_add(reset).map(|until| Spread {
                    interval,
                    until,
                    source: quota.source,
                });
            }
        }
        let steady = match (quota.limit, window) {
            (Some(limit), Some(window)) if limit > 0 => Advertised {
                interval: window / u32::try_from(limit).unwrap_or(u32::MAX),
                source: quota.source,
            },
            _ => return false,
        };
        // the server's own count paces from now on: a cut inferred from
        // 429s before it advertised (faults, say) no longer holds
        let cut = self.cubic.take().is_some();
        let changed = cut || self.advertised != Some(steady);
        self.advertised = Some(steady);
        changed
    }

    /// A `429` from a server that advertised no quota on it: cut the rate
    /// from the one measured (or the one in force, if lower).
    pub(crate) fn throttled(&mut self, configured: Option<Duration>, now: Instant) -> bool {
        if !matches!(self.mode, Learn::On { .. }) {
            return false;
        }
        let measured = self.meter.rate(now);
        let in_force = self
            .interval(configured, now)
            .0
            .map_or(f64::INFINITY, |i| 1.0 / i.as_secs_f64());
        self.cubic = Some(Cubic::cut(measured.min(in_force), now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn quota(limit: u64, remaining: u64, reset: u64) -> Quota {
        Quota {
            source: QuotaSource::Genesys,
            limit: Some(limit),
            window: None,
            remaining: Some(remaining),
            reset: Some(secs(reset)),
        }
    }

    #[test]
    fn the_steady_rate_is_the_limit_per_longest_reset_and_remaining_is_spread() {
        let now = Instant::now();
        let mut learner = Learner::new(Learn::On { initial: None }).unwrap();
        assert_eq!(learner.interval(None, now), (None, PacingSource::Off));
        // 60 s left, 300 allowed, 100 left (10 of them in flight)
        assert!(learner.advertised(&quota(300, 100, 60), 10, now));
        let genesys = PacingSource::Advertised(QuotaSource::Genesys);
        assert_eq!(learner.interval(None, now), (Some(secs(60) / 90), genesys));
        // once the window is over, the steady rate: 300 per 60 s
        assert_eq!(
            learner.interval(None, now + secs(60)),
            (Some(Duration::from_millis(200)), genesys)
        );
        // the same limit again is no change
        assert!(!learner.advertised(&quota(300, 300, 60), 0, now + secs(60)));
        // a reset over a day is ignored
        assert!(!learner.advertised(&quota(3, 1, u64::MAX), 0, now));
        assert!(!learner.advertised(&quota(3, 1, 86_401), 0, now));
        assert_eq!(
            learner.interval(None, now).0,
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn a_configured_rate_is_a_ceiling_and_an_initial_rate_only_a_start() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut ceiling = Learner::new(Learn::On { initial: None }).unwrap();
        assert_eq!(
            ceiling.interval(Some(ms(100)), now),
            (Some(ms(100)), PacingSource::Configured)
        );
        ceiling.advertised(&quota(600, 600, 60), 0, now);
        // 600 a minute advertised, 600 configured: the configured rate holds
        assert_eq!(
            ceiling.interval(Some(ms(200)), now).1,
            PacingSource::Configured
        );
        ceiling.advertised(&quota(100, 100, 60), 0, now);
        assert_eq!(ceiling.interval(Some(ms(200)), now).0, Some(ms(600)));
        let mut initial = Learner::new(Learn::On {
            initial: Some(ms(200)),
        })
        .unwrap();
        assert_eq!(
            initial.interval(None, now),
            (Some(ms(200)), PacingSource::Configured)
        );
        // an initial rate over the ceiling is held to the ceiling
        assert_eq!(initial.interval(Some(ms(300)), now).0, Some(ms(300)));
        initial.advertised(&quota(600, 600, 60), 0, now);
        assert_eq!(initial.interval(None, now).0, Some(ms(100)));
    }

    #[test]
    fn once_a_quota_is_advertised_429s_no_longer_cut_and_an_earlier_cut_is_dropped() {
        let now = Instant::now();
        let mut learner = Learner::new(Learn::On { initial: None }).unwrap();
        for i in 0..50 {
            learner.dispatched(now + Duration::from_millis(i * 10), 1);
        }
        // a 429 before anything is advertised (a fault, say) cuts
        assert!(learner.adapts());
        assert!(learner.throttled(None, now + secs(1)));
        assert_eq!(
            learner.interval(None, now + secs(1)).1,
            PacingSource::Adapted
        );
        // the quota the server then advertises replaces the cut
        assert!(learner.advertised(&quota(300, 300, 60), 0, now + secs(61)));
        let genesys = PacingSource::Advertised(QuotaSource::Genesys);
        assert_eq!(
            learner.interval(None, now + secs(122)),
            (Some(Duration::from_millis(200)), genesys)
        );
        // and later 429s are the gate's to honour, not cuts
        assert!(!learner.adapts());
    }

    #[test]
    fn a_429_cuts_the_measured_rate() {
        let start = Instant::now();
        let mut learner = Learner::new(Learn::On { initial: None }).unwrap();
        for i in 0..50 {
            learner.dispatched(start + Duration::from_millis(i * 10), 1);
        }
        let at = start + Duration::from_millis(500);
        assert!(learner.throttled(None, at));
        // 50 in the last second, cut to 40 per second
        assert_eq!(
            learner.interval(None, at),
            (Some(Duration::from_millis(25)), PacingSource::Adapted)
        );
    }
}
