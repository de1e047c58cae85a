//! The retry budget: a cap on retries relative to first attempts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget as _, TpsBudget};

use crate::error::ConfigError;

/// Limits retries to a share of first attempts, so a failing upstream sees at
/// most `1 + percent` times its normal load instead of `max_attempts` times.
///
/// Every logical request deposits into the budget; every retry withdraws.
/// A floor of `min_per_sec` retries per second is always allowed, so a quiet
/// client can still retry. Clones share the same budget.
///
/// This wraps tower's [`TpsBudget`] (a sliding window of 10 slots over `ttl`,
/// measured on `tokio::time`, so it follows paused test time); this type adds
/// validation with a typed error instead of a panic, and an unlimited mode.
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
    inner: Option<Arc<TpsBudget>>,
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
        Ok(Self {
            inner: Some(Arc::new(TpsBudget::new(ttl, min_per_sec, percent))),
            settings: (ttl, min_per_sec, percent),
        })
    }

    /// No budget: every retry the policy allows is made.
    pub fn unlimited() -> Self {
        Self {
            inner: None,
            settings: (Duration::ZERO, 0, f32::INFINITY),
        }
    }

    /// Record a first attempt.
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.inner {
            budget.deposit();
        }
    }

    /// Take one retry from the budget; `false` if it is exhausted.
    pub(crate) fn withdraw(&self) -> bool {
        match &self.inner {
            Some(budget) => budget.withdraw(),
            None => true,
        }
    }
}

impl Default for RetryBudget {
    /// 20 % on top of first attempts, a floor of 10 retries per second, over a
    /// 10 s window.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2).expect("valid default budget")
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("RetryBudget::unlimited"),
            Some(_) => f
                .debug_struct("RetryBudget")
                .field("ttl", &self.settings.0)
                .field("min_per_sec", &self.settings.1)
                .field("percent", &self.settings.2)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_then_percent() {
        // 1 s window, floor 1/s, 50 %: reserve = 1 retry
        let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.5).unwrap();
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        budget.deposit();
        budget.deposit();
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
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

    #[test]
    fn unlimited_always_allows() {
        let budget = RetryBudget::unlimited();
        assert!((0..10_000).all(|_| budget.withdraw()));
    }
}
