//! The retry layer's settings and the per-request override.

use std::sync::Arc;
use std::time::Duration;

use crate::observe::RetryEvent;

/// A callback that receives every [`RetryEvent`]. It runs on the request
/// path: keep it short and non-blocking.
pub(crate) type EventHandler = Arc<dyn Fn(&RetryEvent) + Send + Sync>;
use super::{Budget, RetryBudget};
use crate::backoff::{Backoff, SharedRng};
use crate::classify::{Classify, DefaultClassifier};
use crate::origin::Origin;
use crate::retry_after::{Clock, SystemClock};

/// Settings shared by every service made by one [`RetryLayer`](super::RetryLayer).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_server_hint: Duration,
    pub(crate) hint_jitter_ratio: f64,
    pub(crate) hint_jitter_max: Duration,
    pub(crate) budget: Arc<dyn Budget>,
    pub(crate) classifier: Arc<dyn Classify>,
    /// `classifier` is the [`DefaultClassifier`]: a status under 400 is a
    /// success without asking it.
    pub(crate) default_classifier: bool,
    pub(crate) rng: SharedRng,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auto_idempotency_key: bool,
    /// Origins declared to honour `Idempotency-Key`: a keyed request to one
    /// of them may be retried after any retryable failure.
    pub(crate) key_origins: Arc<[Origin]>,
    pub(crate) replay_rejected_token: bool,
    pub(crate) on_event: Option<EventHandler>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            deadline: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_server_hint: Duration::from_secs(180),
            hint_jitter_ratio: 0.1,
            hint_jitter_max: Duration::from_secs(1),
            budget: Arc::new(RetryBudget::default()),
            classifier: Arc::new(DefaultClassifier),
            default_classifier: true,
            rng: SharedRng::from_os(),
            clock: Arc::new(SystemClock),
            auto_idempotency_key: false,
            key_origins: Arc::from(Vec::new()),
            replay_rejected_token: true,
            on_event: None,
        }
    }
}

/// Per-request changes to the layer's policy, set as a request extension.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::retry::RetryOverride;
///
/// let mut request = http::Request::new(());
/// // A bulk export: one retry at most, and give up after 5 s.
/// request.extensions_mut().insert(
///     RetryOverride::new()
///         .max_attempts(2)
///         .deadline(Duration::from_secs(5)),
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryOverride {
    pub(super) max_attempts: Option<u32>,
    pub(super) deadline: Option<Duration>,
    pub(super) backoff: Option<Backoff>,
    pub(super) max_server_hint: Option<Duration>,
    idempotent: Option<bool>,
}

impl RetryOverride {
    /// An override that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send this request once, never retry it.
    pub fn no_retry() -> Self {
        Self::new().max_attempts(1)
    }

    /// Total attempts for this request (1 = no retry; 0 is taken as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Total deadline for this request.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Declare whether this request may be sent twice, whatever its method.
    ///
    /// `true` suits requests that are safe to repeat but use `POST`, such as
    /// an OAuth2 token request; `false` forbids retries that the method
    /// would allow.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    pub(crate) fn idempotency(&self) -> Option<bool> {
        self.idempotent
    }

    pub(crate) fn attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Backoff for this request.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Largest server hint this request will wait for.
    pub fn max_server_hint(mut self, cap: Duration) -> Self {
        self.max_server_hint = Some(cap);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_zero_attempts_means_one() {
        assert_eq!(
            RetryOverride::new().max_attempts(0),
            RetryOverride::no_retry()
        );
    }
}
