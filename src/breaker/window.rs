//! The failure-rate window: outcomes counted in ten time buckets.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Bucket {
    number: u64,
    total: u32,
    failures: u32,
}

/// Outcomes over the last `window`, in [`BUCKETS`] buckets that slide with
/// time.
pub(crate) struct Window {
    buckets: [Bucket; BUCKETS],
    origin: Instant,
}

impl Window {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            buckets: [Bucket::default(); BUCKETS],
            origin,
        }
    }

    /// Forget every outcome.
    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    /// Count an outcome at `now` in a window of `length`; for a failure,
    /// the window's `(total, failures)` (a success needs no sum).
    pub(crate) fn add(
        &mut self,
        length: Duration,
        now: Instant,
        failure: bool,
    ) -> Option<(u32, u32)> {
        let bucket_len = (length / BUCKETS as u32).max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.origin);
        // nanoseconds in a u64 last 584 years: no 128-bit division
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let number = nanos(elapsed) / nanos(bucket_len);
        let slot = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if slot.number != number {
            *slot = Bucket {
                number,
                total: 0,
                failures: 0,
            };
        }
        slot.total += 1;
        slot.failures += u32::from(failure);
        failure.then(|| {
            self.buckets
                .iter()
                .filter(|b| number.saturating_sub(b.number) < BUCKETS as u64 && b.number <= number)
                .fold((0, 0), |(t, f), b| (t + b.total, f + b.failures))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_sums_the_buckets_still_in_the_window() {
        let start = Instant::now();
        let mut window = Window::new(start);
        let length = Duration::from_secs(10);
        assert_eq!(window.add(length, start, false), None);
        assert_eq!(window.add(length, start, true), Some((2, 1)));
        // 9.999 s later the first bucket is still in; 10 s later it is out
        let late = start + Duration::from_millis(9_999);
        assert_eq!(window.add(length, late, true), Some((3, 2)));
        let out = start + Duration::from_secs(10);
        assert_eq!(window.add(length, out, true), Some((2, 2)));
        window.clear();
        assert_eq!(window.add(length, out, true), Some((1, 1)));
    }
}
