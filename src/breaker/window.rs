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
    /// A bucket's length in nanoseconds (at least a millisecond): a
    /// tenth of the window, worked out once.
    bucket_nanos: u64,
}

impl Window {
    /// An empty window of `length`, its buckets counted from `origin`.
    pub(crate) fn new(origin: Instant, length: Duration) -> Self {
        let bucket_len = (length / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            buckets: [Bucket::default(); BUCKETS],
            origin,
            bucket_nanos: nanos(bucket_len),
        }
    }

    /// Forget every outcome.
    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    /// Count an outcome at `now`; for a failure, the window's
    /// `(total, failures)` (a success needs no sum).
    pub(crate) fn add(&mut self, now: Instant, failure: bool) -> Option<(u32, u32)> {
        let elapsed = now.saturating_duration_since(self.origin);
        let number = nanos(elapsed) / self.bucket_nanos;
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

/// `d` in nanoseconds: a u64 lasts 584 years, and spares a 128-bit
/// division.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_sums_the_buckets_still_in_the_window() {
        let start = Instant::now();
        let mut window = Window::new(start, Duration::from_secs(10));
        assert_eq!(window.add(start, false), None);
        assert_eq!(window.add(start, true), Some((2, 1)));
        // 9.999 s later the first bucket is still in; 10 s later it is out
        let late = start + Duration::from_millis(9_999);
        assert_eq!(window.add(late, true), Some((3, 2)));
        let out = start + Duration::from_secs(10);
        assert_eq!(window.add(out, true), Some((2, 2)));
        window.clear();
        assert_eq!(window.add(out, true), Some((1, 1)));
    }
}
