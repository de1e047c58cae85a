//! The retry layer's events: every decision it makes.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::{Serialize, Serializer};

use super::event::Fields;
use crate::classify::Class;
use crate::hint::{HintSource, MalformedHint, ServerHint};

/// One decision of the retry layer about one logical request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryEvent {
    /// The attempt the decision is about (1 for the first attempt).
    pub attempt: u32,
    /// What happened.
    pub kind: RetryEventKind,
}

/// What a [`RetryEvent`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryEventKind {
    /// An attempt was handed to the layers below the retry layer
    /// (`attempt.started`).
    AttemptStarted,
    /// An attempt ended: with a response (`status`) or an error (`status` is
    /// `None`), classified as `class` (`attempt.finished`: `status`,
    /// `class`, `failure`, `latency_ms`).
    AttemptFinished {
        /// The response status, if the attempt got a response.
        status: Option<StatusCode>,
        /// How the outcome was classified.
        class: Class,
        /// From the attempt's start to its outcome; zero when nobody
        /// listened when it started.
        latency: Duration,
    },
    /// A server hint header was present but malformed; it was ignored and the
    /// next hint or the backoff applies (`hint.ignored`: `header`,
    /// `reason`).
    HintIgnored(MalformedHint),
    /// Another attempt will start after `delay` (`retry.scheduled`:
    /// `delay_ms`, `source`).
    RetryScheduled {
        /// How long the layer waits before the next attempt.
        delay: Duration,
        /// Where the delay came from.
        source: DelaySource,
    },
    /// No further attempt: the outcome of attempt `attempt` is returned
    /// (`retry.gave_up`: `reason`).
    GaveUp(GiveUpReason),
}

impl RetryEventKind {
    /// The event's name (`attempt.started`, `attempt.finished`,
    /// `hint.ignored`, `retry.scheduled`, `retry.gave_up`).
    pub fn name(&self) -> &'static str {
        match self {
            RetryEventKind::AttemptStarted => "attempt.started",
            RetryEventKind::AttemptFinished { .. } => "attempt.finished",
            RetryEventKind::HintIgnored(_) => "hint.ignored",
            RetryEventKind::RetryScheduled { .. } => "retry.scheduled",
            RetryEventKind::GaveUp(_) => "retry.gave_up",
        }
    }
}

impl Serialize for RetryEventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Fields::start(serializer, self.name())?;
        match self {
            RetryEventKind::AttemptStarted => fields,
            RetryEventKind::AttemptFinished {
                status,
                class,
                latency,
            } => fields
                .some("status", status.map(|s| s.as_u16()))?
                .field("class", class_name(class))?
                .some("failure", class.failure().map(|f| f.as_str()))?
                .millis("latency_ms", *latency)?,
            RetryEventKind::HintIgnored(malformed) => fields
                .field("header", malformed.source.as_str())?
                .field("reason", malformed.reason)?,
            RetryEventKind::RetryScheduled { delay, source } => fields
                .millis("delay_ms", *delay)?
                .field("source", source.as_str())?,
            RetryEventKind::GaveUp(reason) => fields.field("reason", reason.as_str())?,
        }
        .end()
    }
}

/// `success`, `retryable` or `fatal`.
fn class_name(class: &Class) -> &'static str {
    match class {
        Class::Success => "success",
        Class::Retryable(_) => "retryable",
        Class::Fatal(_) => "fatal",
    }
}

/// Where a retry delay came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelaySource {
    /// The local backoff strategy.
    Backoff,
    /// The `Retry-After` response header.
    RetryAfter,
    /// The `RateLimit` response header.
    RateLimit,
    /// A vendor header (Genesys `inin-ratelimit-reset`, `X-RateLimit-Reset`).
    VendorHeader,
    /// The circuit breaker's time until its next probe.
    CircuitBreaker,
    /// No wait: the bearer layer below dropped a token the server rejected
    /// with a `401` ([`TokenRejected`](crate::auth::TokenRejected)), and the
    /// request is sent once more with a fresh one.
    TokenRejected,
}

impl DelaySource {
    /// A short stable name: `backoff`, `retry-after`, `ratelimit`,
    /// `vendor-header`, `circuit-breaker`, `token-rejected`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DelaySource::Backoff => "backoff",
            DelaySource::RetryAfter => "retry-after",
            DelaySource::RateLimit => "ratelimit",
            DelaySource::VendorHeader => "vendor-header",
            DelaySource::CircuitBreaker => "circuit-breaker",
            DelaySource::TokenRejected => "token-rejected",
        }
    }
}

impl From<HintSource> for DelaySource {
    fn from(source: HintSource) -> Self {
        match source {
            HintSource::RetryAfter => DelaySource::RetryAfter,
            HintSource::RateLimit => DelaySource::RateLimit,
            HintSource::CircuitBreaker => DelaySource::CircuitBreaker,
            _ => DelaySource::VendorHeader,
        }
    }
}

impl fmt::Display for DelaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the retry layer stopped and returned the last outcome.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The outcome is not retryable (a 404, a 422, a fatal error).
    Fatal,
    /// The request is not safe to repeat (a `POST` or `PATCH` to an origin
    /// not known to honour idempotency keys) and the failure does not prove
    /// it was left alone (a `500`, `502`, `504`, a timeout, a connection
    /// lost after writing): the caller gets
    /// [`OutcomeUnknown`](crate::error::OutcomeUnknown).
    OutcomeUnknown,
    /// The request body cannot be replayed (a stream).
    BodyNotReplayable,
    /// The maximum number of attempts was reached.
    AttemptsExhausted,
    /// The retry budget is exhausted: the upstream is failing for many
    /// requests, and retrying would multiply its load.
    BudgetExhausted,
    /// The next attempt would start at or after the total deadline.
    DeadlineReached,
    /// The server asked to wait longer than the configured maximum.
    HintOverCap {
        /// The server's hint.
        hint: ServerHint,
        /// The configured maximum.
        cap: Duration,
    },
    /// The server asked to wait past the total deadline.
    HintPastDeadline {
        /// The server's hint.
        hint: ServerHint,
    },
}

impl GiveUpReason {
    /// A short stable name, e.g. `budget_exhausted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUpReason::Fatal => "fatal",
            GiveUpReason::OutcomeUnknown => "outcome_unknown",
            GiveUpReason::BodyNotReplayable => "body_not_replayable",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::DeadlineReached => "deadline_reached",
            GiveUpReason::HintOverCap { .. } => "hint_over_cap",
            GiveUpReason::HintPastDeadline { .. } => "hint_past_deadline",
        }
    }
}
