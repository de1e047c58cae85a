use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::config::Config;
use super::{Budget, Retry};
use crate::backoff::{Backoff, SharedRng};
use crate::classify::Classify;
use crate::observe::RetryEvent;
use crate::origin::Origin;
use crate::retry_after::Clock;

/// Applies [`Retry`] to a service. Cheap to clone; every service it makes
/// shares one budget and one jitter generator.
///
/// Defaults: 4 attempts, a 30 s total deadline, exponential backoff from
/// 500 ms capped at 30 s with full jitter, server hints honoured up to 180 s
/// with up to 10 % (at most 1 s) of spread after them, a budget of 20 % on
/// top of first attempts (floor 10/s), no automatic idempotency key.
#[derive(Clone, Default)]
pub struct RetryLayer {
    config: Config,
}

impl RetryLayer {
    /// A retry layer with the default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total attempts per logical request, the first one included (0 is
    /// taken as 1; 1 disables retries). A refusal by an open breaker below,
    /// which was never sent, uses no attempt: the request waits for the
    /// breaker's next probe when that fits its deadline, up to this many
    /// times. For a caller to get the breaker's
    /// [`CircuitOpen`](crate::error::CircuitOpen) at once, give the retry
    /// layer a deadline shorter than the breaker's open duration.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts.max(1);
        self
    }

    /// The total deadline of one logical request: no attempt is started at
    /// or after it. An attempt already in flight is not cut short (that is
    /// the per-attempt timeout's job). An attempt a limiter below holds
    /// back (in its queue, or behind a rate gate a `429` closed) is held no
    /// later than the deadline: it is never sent, and the request ends with
    /// [`RetryDeadlineExceeded`](crate::error::RetryDeadlineExceeded) then.
    /// An attempt behind a rate gate that opens only past the deadline is
    /// not held for nothing: the limiter refuses it as soon as that is known
    /// (on arrival, or when the gate closes while it waits), and its
    /// refusal ([`Overloaded`](crate::error::Overloaded) with
    /// [`retry_in`](crate::error::Overloaded::retry_in)) is returned then.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// The backoff used when the server gives no hint.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest server hint (`Retry-After` and friends) worth waiting
    /// for. A longer hint returns the response at once. Default 180 s, the
    /// point past which the Genesys SDKs treat a 429 as a daily cap.
    pub fn max_server_hint(mut self, cap: Duration) -> Self {
        self.config.max_server_hint = cap;
        self
    }

    /// Spread retries after a server hint by up to `ratio` of the hint, at
    /// most `max`, so that clients told the same instant do not all come
    /// back at it. A ratio that is negative or not finite is taken as 0.
    pub fn hint_jitter(mut self, ratio: f64, max: Duration) -> Self {
        self.config.hint_jitter_ratio = if ratio.is_finite() && ratio > 0.0 {
            ratio
        } else {
            0.0
        };
        self.config.hint_jitter_max = max;
        self
    }

    /// The retry budget (a [`RetryBudget`](super::RetryBudget) by default, or any [`Budget`],
    /// such as a fleet's shared one); use [`RetryBudget::unlimited`](super::RetryBudget::unlimited) to
    /// turn it off.
    pub fn budget(mut self, budget: impl Budget) -> Self {
        self.config.budget = Arc::new(budget);
        self
    }

    /// How responses and errors are classified.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.config.classifier = Arc::new(classifier);
        self.config.default_classifier = false;
        self
    }

    /// The random source for jitter (seed it for reproducible delays).
    pub fn rng(mut self, rng: SharedRng) -> Self {
        self.config.rng = rng;
        self
    }

    /// The wall clock used to turn an HTTP-date `Retry-After` into a delay.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Add an `Idempotency-Key` to `POST` and `PATCH` requests that have
    /// none: one fresh value per logical request, the same on every attempt.
    ///
    /// A key alone does not make a request retryable: it does only when its
    /// origin is declared to honour keys
    /// ([`idempotency_keys_honoured_by`](Self::idempotency_keys_honoured_by)).
    /// Genesys Cloud and NICE CXone ignore the header.
    pub fn auto_idempotency_key(mut self, enabled: bool) -> Self {
        self.config.auto_idempotency_key = enabled;
        self
    }

    /// Declare that `origin` honours `Idempotency-Key`: it applies a keyed
    /// request at most once, however often it is sent. A `POST` or `PATCH`
    /// that carries a key and goes to such an origin may then be retried
    /// after any retryable failure (a `500`, a timeout, a dropped
    /// connection), and a `409` on it (the first copy still in progress) is
    /// retried too. Call once per origin; by default no origin honours keys.
    pub fn idempotency_keys_honoured_by(mut self, origin: Origin) -> Self {
        let mut origins = self.config.key_origins.to_vec();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
        self.config.key_origins = origins.into();
        self
    }

    /// Send a request once more, at once, when the bearer layer below
    /// rejected its token: a `401` marked
    /// [`TokenRejected`](crate::replay::TokenRejected) (default on). The
    /// request is marked ([`replay::mark`](crate::replay::mark)), so
    /// a bearer below leaves the replay to this layer, which keeps a copy of
    /// the request anyway: one replay, one copy (see [`crate::replay`]).
    /// Once per logical request, whatever its method; it uses neither an
    /// attempt nor the budget.
    pub fn replay_rejected_token(mut self, enabled: bool) -> Self {
        self.config.replay_rejected_token = enabled;
        self
    }

    /// Whether a `401` marked [`TokenRejected`](crate::replay::TokenRejected)
    /// is sent once more ([`replay_rejected_token`](Self::replay_rejected_token)).
    pub fn replays_rejected_token(&self) -> bool {
        self.config.replay_rejected_token
    }

    /// Receive every [`RetryEvent`]. The callback runs on the request path:
    /// keep it short and non-blocking.
    pub fn on_event<F>(mut self, handler: F) -> Self
    where
        F: Fn(&RetryEvent) + Send + Sync + 'static,
    {
        self.config.on_event = Some(Arc::new(handler));
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_config(inner, self.config.clone())
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RetryLayer")
            .field("max_attempts", &c.max_attempts)
            .field("deadline", &c.deadline)
            .field("backoff", &c.backoff)
            .field("max_server_hint", &c.max_server_hint)
            .field("hint_jitter_ratio", &c.hint_jitter_ratio)
            .field("hint_jitter_max", &c.hint_jitter_max)
            .field("budget", &c.budget)
            .field("auto_idempotency_key", &c.auto_idempotency_key)
            .field("idempotency_keys_honoured_by", &c.key_origins)
            .field("replay_rejected_token", &c.replay_rejected_token)
            .finish_non_exhaustive()
    }
}
