//! The failure-rate window: outcomes counted in ten time buckets.
//!
//! The counts are atomics so that the commonest outcome, a success while
//! closed, is counted without the breaker's lock
//! ([`add_success`](Window::add_success)). Everything else (a failure, a
//! bucket turning over, clearing, a new length) happens under the lock,
//! which makes the lock holder the only one to reset a bucket: a success
//! counted without the lock only ever adds one to a bucket already current.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

/// A bucket number no time reaches: such a bucket is never current.
const NEVER: u64 = u64::MAX;

struct Bucket {
    number: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

impl Bucket {
    fn never() -> Self {
        Self {
            number: AtomicU64::new(NEVER),
            total: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }
}

/// Outcomes over the last `window`, in [`BUCKETS`] buckets that slide with
/// time.
pub(crate) struct Window {
    buckets: [Bucket; BUCKETS],
    origin: Instant,
    /// A bucket's length in nanoseconds (at least a millisecond): a
    /// tenth of the window, worked out once per length.
    bucket_nanos: AtomicU64,
}

impl Window {
    /// An empty window of `length`, its buckets counted from `origin`.
    pub(crate) fn new(origin: Instant, length: Duration) -> Self {
        Self {
            buckets: std::array::from_fn(|_| Bucket::never()),
            origin,
            bucket_nanos: AtomicU64::new(bucket_nanos(length)),
        }
    }

    /// Forget every outcome and count over `length` from now on. Under the
    /// breaker's lock.
    pub(crate) fn set_length(&self, length: Duration) {
        let nanos = bucket_nanos(length);
        if self.bucket_nanos.swap(nanos, Ordering::Relaxed) != nanos {
            for bucket in &self.buckets {
                bucket.number.store(NEVER, Ordering::Release);
            }
            self.clear();
        }
    }

    /// Forget every outcome. Under the breaker's lock.
    pub(crate) fn clear(&self) {
        for bucket in &self.buckets {
            bucket.total.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
    }

    /// The bucket `now` falls in.
    fn number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        nanos(elapsed) / self.bucket_nanos.load(Ordering::Relaxed)
    }

    fn slot(&self, number: u64) -> &Bucket {
        &self.buckets[(number % BUCKETS as u64) as usize]
    }

    /// Count a success at `now` without the lock, if its bucket is already
    /// current; `false` (nothing counted) when the bucket must turn over
    /// first, which is the lock holder's job ([`add`](Self::add)).
    ///
    /// The bucket may turn over between the check and the count only if
    /// this thread stalls for the length of the whole window: the success
    /// then counts in the newer bucket, as if it had been recorded then.
    pub(crate) fn add_success(&self, now: Instant) -> bool {
        let number = self.number(now);
        let slot = self.slot(number);
        if slot.number.load(Ordering::Acquire) != number {
            return false;
        }
        slot.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Count an outcome at `now`, turning its bucket over if needed; for a
    /// failure, the window's `(total, failures)` (a success needs no sum).
    /// Under the breaker's lock, with `now` read under it, so that buckets
    /// only ever turn forward.
    pub(crate) fn add(&self, now: Instant, failure: bool) -> Option<(u32, u32)> {
        let number = self.number(now);
        let slot = self.slot(number);
        if slot.number.load(Ordering::Relaxed) != number {
            // zero the counts before publishing the number: a success that
            // sees the new number counts on top of the zeros
            slot.total.store(0, Ordering::Relaxed);
            slot.failures.store(0, Ordering::Relaxed);
            slot.number.store(number, Ordering::Release);
        }
        slot.total.fetch_add(1, Ordering::Relaxed);
        if !failure {
            return None;
        }
        slot.failures.fetch_add(1, Ordering::Relaxed);
        Some(
            self.buckets
                .iter()
                .filter(|b| {
                    let n = b.number.load(Ordering::Acquire);
                    n <= number && number - n < BUCKETS as u64
                })
                .fold((0, 0), |(t, f), b| {
                    (
                        t + b.total.load(Ordering::Relaxed),
                        f + b.failures.load(Ordering::Relaxed),
                    )
                }),
        )
    }
}

/// A tenth of `length` in nanoseconds, at least a millisecond.
fn bucket_nanos(length: Duration) -> u64 {
    nanos((length / BUCKETS as u32).max(Duration::from_millis(1)))
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
        let window = Window::new(start, Duration::from_secs(10));
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

    #[tokio::test(start_paused = true)]
    async fn a_success_without_the_lock_counts_only_in_a_current_bucket() {
        let start = Instant::now();
        let window = Window::new(start, Duration::from_secs(10));
        // no bucket is current yet: the lock holder must turn it over
        assert!(!window.add_success(start));
        assert_eq!(window.add(start, false), None);
        assert!(window.add_success(start + Duration::from_millis(999)));
        // the next second is a new bucket
        assert!(!window.add_success(start + Duration::from_secs(1)));
        assert_eq!(
            window.add(start + Duration::from_secs(1), true),
            Some((3, 1))
        );
        // ten seconds on, the first bucket's slot holds an old bucket
        assert!(!window.add_success(start + Duration::from_secs(10)));
        assert_eq!(
            window.add(start + Duration::from_secs(10), true),
            Some((2, 2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_length_starts_an_empty_window() {
        let start = Instant::now();
        let window = Window::new(start, Duration::from_secs(30));
        assert_eq!(window.add(start, true), Some((1, 1)));
        window.set_length(Duration::from_secs(1));
        let later = start + Duration::from_millis(500);
        assert_eq!(window.add(later, true), Some((1, 1)));
        // a second later (the new length) the failure at 0.5 s is out
        assert_eq!(
            window.add(later + Duration::from_secs(1), true),
            Some((1, 1))
        );
    }
}
