//! Latencies recorded without a lock: one atomic count per bucket of the HDR
//! histogram the stats report from, folded into it when they are read.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// The lowest latency recorded, in microseconds.
pub(crate) const LOWEST_US: u64 = 1;
/// The highest latency recorded (an hour), in microseconds.
pub(crate) const HIGHEST_US: u64 = 3_600_000_000;
/// The histogram's precision, in significant digits.
const SIGFIG: u8 = 3;

// The bucket layout `Histogram::new_with_bounds(LOWEST_US, HIGHEST_US,
// SIGFIG)` uses: 2 * 10^SIGFIG values of unit resolution round up to 2^11
// sub-buckets, of which each bucket after the first uses the upper half
// (2^10); a lowest value of 1 is a unit magnitude of 0.
const HALF_MAGNITUDE: u32 = 10;
const SUB_BUCKET_MASK: u64 = (1 << (HALF_MAGNITUDE + 1)) - 1;
const LEADING_ZERO_BASE: u32 = 64 - HALF_MAGNITUDE - 1;
/// Buckets up to and including [`HIGHEST_US`]'s.
const BUCKETS: usize = index_of(HIGHEST_US) + 1;

/// The index of `micros`'s bucket, as the histogram counts it.
const fn index_of(micros: u64) -> usize {
    let bucket = LEADING_ZERO_BASE - (micros | SUB_BUCKET_MASK).leading_zeros();
    let sub_bucket = micros >> bucket;
    // bucket 0 uses both halves of its sub-buckets, the others the upper
    ((bucket as usize + 1) << HALF_MAGNITUDE) + sub_bucket as usize - (1 << HALF_MAGNITUDE)
}

/// The lowest latency counted in bucket `index`.
fn lowest_of(index: usize) -> u64 {
    let half = 1 << HALF_MAGNITUDE;
    match (index >> HALF_MAGNITUDE).checked_sub(1) {
        // the lower half of bucket 0
        None => index as u64,
        Some(bucket) => (((index & (half - 1)) + half) as u64) << bucket,
    }
}

/// Counts per histogram bucket, recorded with one atomic add: the stats'
/// per-request cost, where a `Mutex<Histogram>` took a lock and a record.
pub(crate) struct Latencies {
    counts: Box<[AtomicU64]>,
}

impl Latencies {
    pub(crate) fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// An empty histogram of the layout [`record`](Self::record) counts in.
    pub(crate) fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).expect("valid histogram bounds")
    }

    /// Count one latency of `micros`, clamped to the recorded range.
    #[inline]
    pub(crate) fn record(&self, micros: u64) {
        let index = index_of(micros.clamp(LOWEST_US, HIGHEST_US));
        self.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Move the counts recorded since the last fold into `histogram`.
    pub(crate) fn fold_into(&self, histogram: &mut Histogram<u64>) {
        for (index, count) in self.counts.iter().enumerate() {
            if count.load(Ordering::Relaxed) != 0 {
                let n = count.swap(0, Ordering::Relaxed);
                // in range by construction: each index came from a clamped value
                let _ = histogram.record_n(lowest_of(index), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every power of two, and every value below 5,000.
    fn samples() -> impl Iterator<Item = u64> {
        let around = (0..32).flat_map(|shift| {
            let power = 1u64 << shift;
            [
                power - 1,
                power,
                power + 1,
                power * 3 / 2,
                power * 7 / 4 + 3,
            ]
        });
        (1..5_000)
            .chain(around)
            .chain([HIGHEST_US - 1, HIGHEST_US, 123_456_789, 999_999_999])
            .filter(|v| (LOWEST_US..=HIGHEST_US).contains(v))
    }

    #[test]
    fn buckets_are_the_histograms() {
        let histogram = Latencies::histogram();
        assert!(BUCKETS <= histogram.distinct_values());
        for value in samples() {
            let index = index_of(value);
            assert!(index < BUCKETS, "{value}");
            assert_eq!(
                lowest_of(index),
                histogram.lowest_equivalent(value),
                "{value} (index {index})"
            );
            assert_eq!(index_of(lowest_of(index)), index, "{value}");
        }
    }

    #[test]
    fn folding_gives_what_recording_each_value_gives() {
        let latencies = Latencies::new();
        let mut direct = Latencies::histogram();
        for value in samples().chain([0, HIGHEST_US + 1, u64::MAX]) {
            latencies.record(value);
            direct
                .record(value.clamp(LOWEST_US, HIGHEST_US))
                .expect("in range");
        }
        let mut folded = Latencies::histogram();
        latencies.fold_into(&mut folded);
        assert_eq!(folded.len(), direct.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                folded.lowest_equivalent(folded.value_at_quantile(q)),
                direct.lowest_equivalent(direct.value_at_quantile(q)),
                "{q}"
            );
        }
        // folding moves the counts: a second fold adds nothing
        latencies.fold_into(&mut folded);
        assert_eq!(folded.len(), direct.len());
    }
}
