//! Exponential backoff with jitter.
//!
//! The ceiling for retry `n` (1-based) is `min(cap, base * factor^(n-1))`.
//! Jitter then picks the actual delay:
//!
//! | [`Jitter`] | delay for retry `n` | bounds |
//! |---|---|---|
//! | `None` | `ceiling(n)` | exactly `ceiling(n)` |
//! | `Full` | `rand(0, ceiling(n))` | `[0, ceiling(n)]` |
//! | `Equal` | `ceiling(n)/2 + rand(0, ceiling(n)/2)` | `[ceiling(n)/2, ceiling(n)]` |
//! | `Decorrelated` | `min(cap, rand(base, prev * 3))`, `prev` starting at `base` | `[min(base, cap), cap]` |
//!
//! Every computation saturates: any retry number up to `u32::MAX` gives a
//! delay within its bounds, never an overflow or a panic.
//!
//! Randomness comes from a [`SharedRng`], which can be seeded so tests and
//! simulations are reproducible.
//!
//! ```
//! use std::time::Duration;
//! use tower_cx::backoff::{Backoff, BackoffState, Jitter, SharedRng};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(500))
//!     .max_delay(Duration::from_secs(30))
//!     .jitter(Jitter::None);
//! let rng = SharedRng::seeded(7);
//! let mut state = BackoffState::default();
//! let delays: Vec<_> = (1..=4)
//!     .map(|retry| backoff.next_delay(retry, &mut state, &rng))
//!     .collect();
//! assert_eq!(
//!     delays,
//!     [500, 1000, 2000, 4000].map(Duration::from_millis),
//! );
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the actual delay is drawn below the exponential ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// No jitter: the delay is the ceiling.
    None,
    /// Uniform in `[0, ceiling]` (the default; the best spread against storms).
    #[default]
    Full,
    /// Half the ceiling plus uniform in `[0, ceiling/2]`.
    Equal,
    /// AWS "decorrelated jitter": `min(cap, rand(base, previous * 3))`.
    Decorrelated,
}

/// An exponential backoff with a cap and a [`Jitter`] mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// Base 500 ms, factor 2, cap 30 s, full jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(500))
    }
}

impl Backoff {
    /// Exponential backoff from `base`, with factor 2, a 30 s cap and full
    /// jitter; change them with the builder methods.
    pub fn exponential(base: Duration) -> Self {
        Self {
            base,
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }

    /// The same delay before every retry, without jitter.
    pub fn constant(delay: Duration) -> Self {
        Self {
            base: delay,
            factor: 1.0,
            cap: delay,
            jitter: Jitter::None,
        }
    }

    /// The growth factor between retries. Values below 1 or not finite are
    /// taken as 1 (a constant ceiling).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        self
    }

    /// The largest delay the backoff ever returns.
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The jitter mode.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The base delay.
    pub fn base_delay(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter mode in use.
    pub fn jitter_mode(&self) -> Jitter {
        self.jitter
    }

    /// The exponential ceiling for retry `retry` (1-based; 0 is taken as 1):
    /// `min(cap, base * factor^(retry-1))`, saturating.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1);
        let exponent = i32::try_from(exponent).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(self.cap)
    }

    /// The documented `(min, max)` bounds of the delay for retry `retry`.
    pub fn bounds(&self, retry: u32) -> (Duration, Duration) {
        let ceiling = self.ceiling(retry);
        match self.jitter {
            Jitter::None => (ceiling, ceiling),
            Jitter::Full => (Duration::ZERO, ceiling),
            Jitter::Equal => (ceiling / 2, ceiling),
            Jitter::Decorrelated => (self.base.min(self.cap), self.cap),
        }
    }

    /// The delay before retry `retry` (1-based). `state` carries the previous
    /// delay for [`Jitter::Decorrelated`]; keep one per logical request.
    pub fn next_delay(&self, retry: u32, state: &mut BackoffState, rng: &SharedRng) -> Duration {
        let delay = match self.jitter {
            Jitter::None => self.ceiling(retry),
            Jitter::Full => between(Duration::ZERO, self.ceiling(retry), rng.unit()),
            Jitter::Equal => {
                let ceiling = self.ceiling(retry);
                let half = ceiling / 2;
                between(half, ceiling, rng.unit())
            }
            Jitter::Decorrelated => {
                let prev = state.prev.unwrap_or(self.base).max(self.base);
                let upper = prev.saturating_mul(3);
                between(self.base, upper, rng.unit()).min(self.cap)
            }
        };
        state.prev = Some(delay);
        delay
    }
}

/// A uniform pick in `[lo, hi]` from a unit sample in `[0, 1)`; never leaves
/// the interval, even for durations an `f64` cannot represent exactly.
pub(crate) fn between(lo: Duration, hi: Duration, unit: f64) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = hi - lo;
    let offset = Duration::try_from_secs_f64(span.as_secs_f64() * unit)
        .unwrap_or(span)
        .min(span);
    lo + offset
}

/// Per-request backoff memory (the previous delay, for decorrelated jitter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffState {
    prev: Option<Duration>,
}

/// A random number generator shared by clones, for jitter.
///
/// Seed it ([`SharedRng::seeded`]) or inject any [`rand::Rng`]
/// ([`SharedRng::from_rng`]) to make delays reproducible.
#[derive(Clone)]
pub struct SharedRng {
    inner: Arc<Mutex<dyn Rng + Send>>,
}

impl SharedRng {
    /// A generator seeded from the operating system.
    pub fn from_os() -> Self {
        Self::from_rng(rand::make_rng::<StdRng>())
    }

    /// A reproducible generator: the same seed gives the same delays.
    pub fn seeded(seed: u64) -> Self {
        Self::from_rng(StdRng::seed_from_u64(seed))
    }

    /// Use `rng` as the source of randomness.
    pub fn from_rng<R: Rng + Send + 'static>(rng: R) -> Self {
        Self {
            inner: Arc::new(Mutex::new(rng)),
        }
    }

    /// A uniform sample in `[0, 1)` with 53 bits of precision.
    pub fn unit(&self) -> f64 {
        let bits = {
            let mut rng = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            rng.next_u64()
        };
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl Default for SharedRng {
    fn default() -> Self {
        Self::from_os()
    }
}

impl fmt::Debug for SharedRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRng").finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    /// An RNG that returns the given words in a cycle, so every unit sample
    /// is known in advance: `0x8000_0000_0000_0000` is exactly 0.5.
    #[derive(Debug, Clone)]
    pub(crate) struct ScriptedRng {
        words: Vec<u64>,
        next: usize,
    }

    impl ScriptedRng {
        pub(crate) fn new(words: &[u64]) -> Self {
            Self {
                words: words.to_vec(),
                next: 0,
            }
        }
    }

    impl rand::TryRng for ScriptedRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            self.try_next_u64().map(|w| (w >> 32) as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            let word = self.words[self.next % self.words.len()];
            self.next += 1;
            Ok(word)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            for chunk in dst.chunks_mut(8) {
                let word = self.try_next_u64()?.to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            Ok(())
        }
    }

    const HALF: u64 = 1 << 63;
    const QUARTER: u64 = 1 << 62;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn sequence(backoff: Backoff, words: &[u64], n: u32) -> Vec<Duration> {
        let rng = SharedRng::from_rng(ScriptedRng::new(words));
        let mut state = BackoffState::default();
        (1..=n)
            .map(|retry| backoff.next_delay(retry, &mut state, &rng))
            .collect()
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let b = Backoff::exponential(ms(500))
            .max_delay(ms(3000))
            .jitter(Jitter::None);
        assert_eq!(sequence(b, &[0], 5), [500, 1000, 2000, 3000, 3000].map(ms));
    }

    #[test]
    fn full_jitter_exact_with_scripted_samples() {
        let b = Backoff::exponential(ms(500)).max_delay(ms(30_000));
        // samples 0.5, 0.25, 0.5: half of 500, a quarter of 1000, half of 2000
        assert_eq!(
            sequence(b, &[HALF, QUARTER, HALF], 3),
            [250, 250, 1000].map(ms)
        );
    }

    #[test]
    fn equal_jitter_exact_with_scripted_samples() {
        let b = Backoff::exponential(ms(1000)).jitter(Jitter::Equal);
        // ceiling/2 + sample * ceiling/2
        assert_eq!(
            sequence(b, &[HALF, 0, QUARTER], 3),
            [750, 1000, 2500].map(ms)
        );
    }

    #[test]
    fn decorrelated_jitter_exact_with_scripted_samples() {
        let b = Backoff::exponential(ms(100))
            .max_delay(ms(1000))
            .jitter(Jitter::Decorrelated);
        // prev=100: rand(100, 300) at 0.5 = 200; prev=200: rand(100, 600) at 0.5 = 350;
        // prev=350: rand(100, 1050) at 0.5 = 575; prev=575: rand(100,1725) at 0.5 = 912.5;
        // prev=912.5: rand(100, 2737.5) at 0.5 = 1418.75 -> capped at 1000
        assert_eq!(
            sequence(b, &[HALF], 5),
            vec![
                ms(200),
                ms(350),
                ms(575),
                Duration::from_micros(912_500),
                ms(1000)
            ]
        );
    }

    #[test]
    fn constant_backoff() {
        assert_eq!(
            sequence(Backoff::constant(ms(250)), &[HALF], 3),
            [250, 250, 250].map(ms)
        );
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        let b = Backoff::default();
        let a = sequence_seeded(b, 42);
        assert_eq!(a, sequence_seeded(b, 42));
        assert_ne!(a, sequence_seeded(b, 43));
    }

    fn sequence_seeded(b: Backoff, seed: u64) -> Vec<Duration> {
        let rng = SharedRng::seeded(seed);
        let mut state = BackoffState::default();
        (1..=8).map(|n| b.next_delay(n, &mut state, &rng)).collect()
    }

    #[test]
    fn extreme_retry_numbers_do_not_overflow() {
        let b = Backoff::exponential(Duration::MAX)
            .max_delay(Duration::MAX)
            .factor(f64::MAX);
        assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        assert_eq!(b.ceiling(0), Duration::MAX);
        let b = Backoff::exponential(ms(1)).factor(f64::NAN);
        assert_eq!(b.ceiling(u32::MAX), ms(1));
    }

    fn jitter_strategy() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ]
    }

    proptest! {
        #[test]
        fn every_delay_is_within_its_bounds(
            base_ns in 0u64..=u64::MAX,
            cap_ns in 0u64..=u64::MAX,
            factor in prop_oneof![Just(1.0f64), Just(2.0), 1.0f64..1e6, Just(f64::INFINITY)],
            jitter in jitter_strategy(),
            retries in proptest::collection::vec(any::<u32>(), 1..8),
            seed in any::<u64>(),
        ) {
            let b = Backoff::exponential(Duration::from_nanos(base_ns))
                .max_delay(Duration::from_nanos(cap_ns))
                .factor(factor)
                .jitter(jitter);
            let rng = SharedRng::seeded(seed);
            let mut state = BackoffState::default();
            for retry in retries {
                let (lo, hi) = b.bounds(retry);
                let d = b.next_delay(retry, &mut state, &rng);
                prop_assert!(d >= lo && d <= hi, "{d:?} not in [{lo:?}, {hi:?}]");
                prop_assert!(d <= b.cap());
            }
        }

        #[test]
        fn ceiling_never_decreases(base_ms in 0u64..10_000, factor in 1.0f64..10.0, n in 1u32..u32::MAX) {
            let b = Backoff::exponential(Duration::from_millis(base_ms)).factor(factor);
            prop_assert!(b.ceiling(n) <= b.ceiling(n.saturating_add(1)));
        }

        #[test]
        fn between_stays_inside(lo in any::<u64>(), span in any::<u64>(), unit in 0.0f64..1.0) {
            let lo = Duration::from_nanos(lo);
            let hi = lo.saturating_add(Duration::from_nanos(span));
            let d = between(lo, hi, unit);
            prop_assert!(d >= lo && d <= hi);
        }
    }
}
