//! The limiter's refusal while the server's quota is used up.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The server's quota is used up (a daily cap: a server hint longer than
/// the limiter's [`max_gate`](crate::priority::PriorityLimitLayer::max_gate)):
/// the request was not sent, and no request is sent before
/// [`until`](Self::until).
///
/// Unlike [`Overloaded`](super::Overloaded) it is not "not sent, try
/// again": the retry layer returns it at once, and a gateway answers `429`
/// with `Retry-After` set to [`retry_after`](Self::retry_after).
///
/// ```
/// use std::time::Duration;
///
/// use tokio::time::Instant;
/// use tower_cx::error::{BoxError, QuotaExhausted};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let until = Instant::now() + Duration::from_secs(3600);
/// let err: BoxError = QuotaExhausted::new(until).into();
/// let exhausted = err.downcast_ref::<QuotaExhausted>().expect("typed");
/// assert_eq!(exhausted.until(), until);
/// assert_eq!(exhausted.retry_after(), Duration::from_secs(3600));
/// assert_eq!(
///     err.to_string(),
///     "quota exhausted: no request is sent for 3600 s more, until the quota resets"
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExhausted {
    until: Instant,
}

impl QuotaExhausted {
    /// Exhausted until `until`.
    pub fn new(until: Instant) -> Self {
        Self { until }
    }

    /// When the quota is expected back (the server hint's time).
    pub fn until(&self) -> Instant {
        self.until
    }

    /// How long from now until [`until`](Self::until) (zero once it passed).
    pub fn retry_after(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up (for
    /// a `Retry-After` header): a request sent after that many seconds is
    /// never early.
    pub fn retry_after_secs(&self) -> u64 {
        let left = self.retry_after();
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

impl fmt::Display for QuotaExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quota exhausted: no request is sent for {} s more, until the quota resets",
            self.retry_after_secs()
        )
    }
}

impl StdError for QuotaExhausted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_wait_counts_down_and_rounds_up_to_whole_seconds() {
        let until = Instant::now() + Duration::from_millis(2_500);
        let exhausted = QuotaExhausted::new(until);
        assert_eq!(exhausted.retry_after_secs(), 3);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(exhausted.retry_after(), Duration::from_secs(1));
        assert_eq!(exhausted.retry_after_secs(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(exhausted.retry_after(), Duration::ZERO);
        assert!(exhausted.to_string().contains("for 0 s more"));
    }
}
