//! The retry budget: a cap on retries relative to first attempts.
//!
//! [`Budget`] is what the retry layer asks; [`RetryBudget`] is this
//! process's own, and a budget shared by a fleet (`fleet::RedisRetryBudget`
//! with the `redis` feature) implements the same trait.

use std::fmt;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

const SLOTS: usize = 10;

/// What the retry layer asks of a retry budget: it deposits once per logical
/// request and withdraws once per retry, giving the time it has already
/// read. Both run on the request path: they must not wait (no lock held
/// across I/O, no network round trip).
///
/// ```
/// use tokio::time::Instant;
/// use tower_cx::retry::{Budget, RetryBudget, RetryLayer};
///
/// /// Counts what passes through a budget.
/// #[derive(Debug, Default)]
/// struct Counting(RetryBudget, std::sync::atomic::AtomicU64);
///
/// impl Budget for Counting {
///     fn deposit(&self, now: Instant) {
///         Budget::deposit(&self.0, now)
///     }
///     fn withdraw(&self, now: Instant) -> bool {
///         self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         Budget::withdraw(&self.0, now)
///     }
/// }
///
/// let layer = RetryLayer::new().budget(Counting::default());
/// # let _ = layer;
/// ```
pub trait Budget: fmt::Debug + Send + Sync + 'static {
    /// Record a first attempt made at `now`.
    fn deposit(&self, now: Instant);
    /// Take one retry from the budget at `now`; `false` if it is exhausted
    /// (the retry is not made).
    fn withdraw(&self, now: Instant) -> bool;
}

impl<B: Budget + ?Sized> Budget for Arc<B> {
    fn deposit(&self, now: Instant) {
        (**self).deposit(now)
    }

    fn withdraw(&self, now: Instant) -> bool {
        (**self).withdraw(now)
    }
}

/// Limits retries to a share of first attempts, so a failing upstream sees at
/// most `1 + percent` times its normal load instead of `max_attempts` times.
///
/// Every logical request deposits into the budget; every retry withdraws.
/// A reserve of `min_per_sec` retries per second of the window is always
/// there, so a quiet client can still retry. Deposits and withdrawals expire
/// after `ttl`, counted in 10 slots. Clones share the same budget.
///
/// The accounting is the one of tower's `TpsBudget` (Finagle's retry budget),
/// with two differences that matter on the request path: it is lock-free
/// (atomics only, where `TpsBudget` takes a mutex on every deposit), and it
/// takes the time the retry layer has already read instead of reading the
/// clock again. Time is `tokio::time`, so it follows paused test time. Under
/// heavy contention the count is approximate by a few requests, never by a
/// window.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::retry::RetryBudget;
///
/// // retries may add 20 % on top of first attempts, plus 10 per second
/// let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
/// assert!(RetryBudget::new(Duration::ZERO, 10, 0.2).is_err());
/// # let _ = budget;
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Option<Arc<Windowed>>,
}

struct Windowed {
    origin: Instant,
    slot_millis: u64,
    /// Balance of each slot, for the slot number in `numbers`.
    balances: [AtomicIsize; SLOTS],
    /// Which slot number (time since origin / slot length) each entry holds.
    numbers: [AtomicU64; SLOTS],
    reserve: isize,
    deposit_amount: isize,
    withdraw_amount: isize,
    settings: (Duration, u32, f32),
}

impl RetryBudget {
    /// A budget over a window of `ttl` (1 s to 60 s) allowing `percent` retries
    /// per first attempt (0 to 1000, e.g. `0.2` for 20 %) plus `min_per_sec`
    /// retries per second.
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f32) -> Result<Self, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "ttl",
                format!("must be between 1 s and 60 s, got {ttl:?}"),
            ));
        }
        if !(0.0..=1000.0).contains(&percent) {
            return Err(ConfigError::new(
                "percent",
                format!("must be between 0 and 1000, got {percent}"),
            ));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::new(
                "min_per_sec",
                format!("must be below {}, got {min_per_sec}", i32::MAX),
            ));
        }
        // Fixed point: a retry costs 1000 units, a first attempt earns
        // `percent * 1000`, so any percent is honoured to 0.1 %.
        let withdraw_amount: isize = 1000;
        let deposit_amount = (f64::from(percent) * 1000.0).round() as isize;
        let reserve = (min_per_sec as isize)
            .saturating_mul(ttl.as_secs() as isize)
            .saturating_mul(withdraw_amount);
        let slot_millis = (ttl.as_millis() as u64 / SLOTS as u64).max(1);
        Ok(Self {
            inner: Some(Arc::new(Windowed {
                origin: Instant::now(),
                slot_millis,
                balances: Default::default(),
                numbers: Default::default(),
                reserve,
                deposit_amount,
                withdraw_amount,
                settings: (ttl, min_per_sec, percent),
            })),
        })
    }

    /// No budget: every retry the policy allows is made.
    pub fn unlimited() -> Self {
        Self { inner: None }
    }

    /// The budget in its fixed-point units (a retry costs 1000): the
    /// reserve, a first attempt's deposit, and the length of one of the
    /// window's slots; `None` when unlimited. For budgets kept elsewhere
    /// (a fleet's) with the same accounting.
    #[cfg(feature = "redis")]
    pub(crate) fn units(&self) -> Option<BudgetUnits> {
        self.inner.as_ref().map(|b| BudgetUnits {
            reserve: b.reserve as i64,
            deposit: b.deposit_amount as i64,
            withdraw: b.withdraw_amount as i64,
            slot: std::time::Duration::from_millis(b.slot_millis),
            slots: SLOTS as u32,
        })
    }

    /// Record a first attempt made at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        if let Some(budget) = &self.inner {
            let slot = budget.slot(now);
            budget.balances[slot].fetch_add(budget.deposit_amount, Ordering::Relaxed);
        }
    }

    /// Take one retry from the budget at `now`; `false` if it is exhausted.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let Some(budget) = &self.inner else {
            return true;
        };
        let slot = budget.slot(now);
        let current = budget.numbers[slot].load(Ordering::Acquire);
        let live: isize = budget
            .balances
            .iter()
            .zip(&budget.numbers)
            .filter(|(_, number)| {
                current.saturating_sub(number.load(Ordering::Acquire)) < SLOTS as u64
            })
            .map(|(balance, _)| balance.load(Ordering::Relaxed))
            .fold(budget.reserve, isize::saturating_add);
        if live >= budget.withdraw_amount {
            budget.balances[slot].fetch_sub(budget.withdraw_amount, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// A [`RetryBudget`]'s accounting, in its fixed-point units.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BudgetUnits {
    /// Always there: `min_per_sec * ttl` retries.
    pub(crate) reserve: i64,
    /// What a first attempt adds (`percent * 1000`).
    pub(crate) deposit: i64,
    /// What a retry takes (1000).
    pub(crate) withdraw: i64,
    /// One slot of the window; deposits and withdrawals expire after
    /// `slots` of them.
    pub(crate) slot: std::time::Duration,
    pub(crate) slots: u32,
}

impl Budget for RetryBudget {
    fn deposit(&self, now: Instant) {
        RetryBudget::deposit(self, now)
    }

    fn withdraw(&self, now: Instant) -> bool {
        RetryBudget::withdraw(self, now)
    }
}

impl Windowed {
    /// The index of the slot for `now`, cleared first if it still holds an
    /// expired slot number.
    fn slot(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.origin);
        let millis = elapsed.as_secs() * 1000 + u64::from(elapsed.subsec_millis());
        let number = millis / self.slot_millis;
        let index = (number % SLOTS as u64) as usize;
        let held = self.numbers[index].load(Ordering::Acquire);
        if held < number
            && self.numbers[index]
                .compare_exchange(held, number, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.balances[index].store(0, Ordering::Release);
        }
        index
    }
}

impl Default for RetryBudget {
    /// 20 % on top of first attempts, a reserve of 10 retries per second,
    /// over a 10 s window.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2).expect("valid default budget")
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("RetryBudget::unlimited"),
            Some(budget) => f
                .debug_struct("RetryBudget")
                .field("ttl", &budget.settings.0)
                .field("min_per_sec", &budget.settings.1)
                .field("percent", &budget.settings.2)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reserve_then_percent() {
        // 1 s window, reserve 1/s, 50 %: one retry in reserve, then one
        // retry per two first attempts
        let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.5).unwrap();
        let now = Instant::now();
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
        budget.deposit(now);
        budget.deposit(now);
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl_and_slots_are_reused() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            budget.deposit(start);
        }
        // still inside the window 9.9 s later: five retries, not six
        let later = start + Duration::from_millis(9_900);
        assert!((0..5).all(|_| budget.withdraw(later)));
        assert!(!budget.withdraw(later));
        // deposits made at `start` are gone once the window has passed
        let start2 = start + Duration::from_secs(11);
        budget.deposit(start2);
        budget.deposit(start2);
        let gone = start2 + Duration::from_secs(10);
        assert!(!budget.withdraw(gone));
    }

    #[tokio::test(start_paused = true)]
    async fn percent_above_one_allows_several_retries_per_request() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 2.0).unwrap();
        let now = Instant::now();
        budget.deposit(now);
        assert!(budget.withdraw(now));
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_percent_only_has_the_reserve() {
        let budget = RetryBudget::new(Duration::from_secs(2), 3, 0.0).unwrap();
        let now = Instant::now();
        (0..100).for_each(|_| budget.deposit(now));
        assert_eq!((0..100).filter(|_| budget.withdraw(now)).count(), 6);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let err = RetryBudget::new(Duration::from_secs(61), 1, 0.2).unwrap_err();
        assert_eq!(err.setting(), "ttl");
        let err = RetryBudget::new(Duration::from_secs(10), 1, -0.1).unwrap_err();
        assert_eq!(err.setting(), "percent");
        let err = RetryBudget::new(Duration::from_secs(10), u32::MAX, 0.1).unwrap_err();
        assert_eq!(err.setting(), "min_per_sec");
        assert!(RetryBudget::new(Duration::from_secs(10), 1, f32::NAN).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn any_percent_is_honoured() {
        for (percent, expected) in [(0.7, 70), (0.4, 40), (0.3, 30), (0.25, 25), (0.05, 5)] {
            let budget = RetryBudget::new(Duration::from_secs(10), 0, percent).unwrap();
            let now = Instant::now();
            (0..100).for_each(|_| budget.deposit(now));
            let allowed = (0..1000).filter(|_| budget.withdraw(now)).count();
            assert_eq!(allowed, expected, "{percent}");
        }
    }

    #[tokio::test]
    async fn unlimited_always_allows() {
        let budget = RetryBudget::unlimited();
        let now = Instant::now();
        assert!((0..10_000).all(|_| budget.withdraw(now)));
    }
}
