//! Adapting to a server that advertises no quota, from its `429`s alone:
//! the dispatch rate measured over the last second, and a CUBIC curve
//! (the shape of TCP CUBIC, as AWS's adaptive retry mode uses it) that cuts
//! the rate on a `429` and brings it back over time.
//!
//! After a cut at rate `W` the rate is `β·W` and follows
//! `W·(1 − (1 − β)·(1 − t/K)³)`: quickly back towards `W` (concave), slowly
//! near it (where the last `429` came), then probing above it faster and
//! faster (convex) until the next `429`.

use std::time::Duration;

use tokio::time::Instant;

/// The cut: the rate after a `429` is this share of the rate measured.
pub(crate) const BETA: f64 = 0.8;
/// The time to climb back to the rate of the last cut.
pub(crate) const RECOVERY: Duration = Duration::from_secs(10);
/// The lowest rate a cut leaves: one request a minute.
const FLOOR: f64 = 1.0 / 60.0;

/// Dispatches over the last second (two one-second buckets, the older
/// weighted by how much of it is still within the last second).
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    start: Option<Instant>,
    previous: u32,
    current: u32,
}

const BUCKET: Duration = Duration::from_secs(1);

impl Meter {
    pub(crate) fn new() -> Self {
        Self {
            start: None,
            previous: 0,
            current: 0,
        }
    }

    fn roll(&mut self, now: Instant) -> f64 {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= BUCKET * 2 {
            self.previous = 0;
            self.current = 0;
            self.start = Some(now);
            return 0.0;
        }
        if elapsed >= BUCKET {
            self.previous = self.current;
            self.current = 0;
            let start = start + BUCKET;
            self.start = Some(start);
            return now.saturating_duration_since(start).as_secs_f64();
        }
        elapsed.as_secs_f64()
    }

    /// One dispatch at `now`, costing `units` slots.
    pub(crate) fn tick(&mut self, now: Instant, units: u32) {
        self.roll(now);
        self.current = self.current.saturating_add(units);
    }

    /// Dispatches per second over the last second.
    pub(crate) fn rate(&mut self, now: Instant) -> f64 {
        let into = self.roll(now) / BUCKET.as_secs_f64();
        f64::from(self.previous) * (1.0 - into) + f64::from(self.current)
    }
}

/// The rate after the last cut, as it recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cubic {
    /// Requests per second when the last `429` came.
    w_max: f64,
    /// When.
    since: Instant,
}

impl Cubic {
    /// A cut at `now`, from `rate` requests per second.
    pub(crate) fn cut(rate: f64, now: Instant) -> Self {
        Self {
            w_max: rate.max(FLOOR / BETA),
            since: now,
        }
    }

    /// Requests per second at `now`.
    pub(crate) fn rate(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.since).as_secs_f64();
        let x = 1.0 - t / RECOVERY.as_secs_f64();
        self.w_max * (1.0 - (1.0 - BETA) * x * x * x)
    }

    /// The time between dispatches at `now`.
    pub(crate) fn interval(&self, now: Instant) -> Duration {
        interval_of(self.rate(now))
    }
}

/// One request per this, at `rate` per second (at least a nanosecond).
pub(crate) fn interval_of(rate: f64) -> Duration {
    if rate.is_nan() || rate <= 0.0 {
        return Duration::MAX;
    }
    Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(Duration::MAX)
        .max(Duration::from_nanos(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_meter_counts_the_last_second() {
        let start = Instant::now();
        let mut meter = Meter::new();
        for i in 0..100 {
            meter.tick(start + ms(i * 10), 1);
        }
        assert_eq!(meter.rate(start + ms(999)), 100.0);
        // half of the first second is still within the last one
        meter.tick(start + ms(1500), 1);
        assert_eq!(meter.rate(start + ms(1500)), 51.0);
        // nothing for two seconds: nothing measured
        assert_eq!(meter.rate(start + ms(3600)), 0.0);
    }

    #[test]
    fn cubic_cuts_then_recovers_to_the_last_rate_then_probes_above() {
        let start = Instant::now();
        let cubic = Cubic::cut(100.0, start);
        let rate =
            |secs: u64| (cubic.rate(start + Duration::from_secs(secs)) * 1000.0).round() / 1000.0;
        assert_eq!(rate(0), 80.0);
        // concave: most of the way back in half the recovery time
        assert_eq!(rate(5), 97.5);
        assert_eq!(rate(10), 100.0);
        // convex: slowly above at first, then faster
        assert_eq!(rate(15), 102.5);
        assert_eq!(rate(20), 120.0);
        assert_eq!(cubic.interval(start), ms(1000) / 80);
    }

    #[test]
    fn a_cut_never_stops_pacing_altogether() {
        let start = Instant::now();
        let cubic = Cubic::cut(0.0, start);
        assert_eq!(cubic.interval(start), Duration::from_secs(60));
        assert_eq!(interval_of(0.0), Duration::MAX);
        assert_eq!(interval_of(f64::INFINITY), Duration::from_nanos(1));
    }
}
