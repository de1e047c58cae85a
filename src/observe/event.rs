//! The events layers report about a logical request.

use std::time::Duration;

use serde::Serialize;

/// What happened to a logical request, with its fields: the one vocabulary
/// every layer reports in. Serialized with `event` (the name) and the
/// variant's own fields; the audit layer's sinks add `ts`, `correlation_id`
/// and `attempt` ([`AuditEvent`](crate::audit::AuditEvent)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event")]
#[non_exhaustive]
pub enum Event {
    /// The logical request entered the stack.
    #[serde(rename = "request.started")]
    RequestStarted {
        /// The method.
        method: String,
        /// The URL, userinfo removed, secret-looking query values redacted,
        /// cut to [`MAX_EVENT_URL`](crate::audit::MAX_EVENT_URL) bytes.
        url: String,
        /// The JSON request body with secret-looking keys masked, only when
        /// [`record_bodies`](crate::audit::AuditLayer::record_bodies) is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<serde_json::Value>,
        /// The priority, if the request carried one.
        #[serde(skip_serializing_if = "Option::is_none")]
        priority: Option<&'static str>,
    },
    /// An attempt was handed to the layers below the retry layer.
    #[serde(rename = "attempt.started")]
    AttemptStarted {},
    /// An attempt ended.
    #[serde(rename = "attempt.finished")]
    AttemptFinished {
        /// The response status, if there was a response.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// `success`, `retryable` or `fatal`.
        class: &'static str,
        /// Why it failed (`status`, `connect`, `not_sent`, `timeout`,
        /// `transport`, `other`), if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<&'static str>,
        /// From the attempt's start to its outcome, in milliseconds.
        latency_ms: f64,
    },
    /// Another attempt will follow after a delay.
    #[serde(rename = "retry.scheduled")]
    RetryScheduled {
        /// The delay in milliseconds.
        delay_ms: f64,
        /// Where it came from: `backoff`, `retry-after`, `ratelimit`,
        /// `vendor-header`, `circuit-breaker`.
        source: &'static str,
    },
    /// A server hint header was present but malformed, and ignored.
    #[serde(rename = "hint.ignored")]
    HintIgnored {
        /// The header.
        header: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The retry layer stopped retrying.
    #[serde(rename = "retry.gave_up")]
    RetryGaveUp {
        /// `fatal`, `outcome_unknown`, `body_not_replayable`,
        /// `attempts_exhausted`, `budget_exhausted`, `deadline_reached`,
        /// `hint_over_cap` or `hint_past_deadline`.
        reason: &'static str,
    },
    /// This request's response closed the shared rate gate.
    #[serde(rename = "gate.closed")]
    GateClosed {
        /// For how long, in milliseconds.
        for_ms: f64,
        /// The header that said so.
        source: &'static str,
    },
    /// The rate gate reopened and this request, which waited behind it, was
    /// let through.
    #[serde(rename = "gate.opened")]
    GateOpened {},
    /// The request waited in the limiter's queue.
    #[serde(rename = "queue.waited")]
    QueueWaited {
        /// For how long, in milliseconds (a closed gate included).
        wait_ms: f64,
    },
    /// The limiter shed the request without sending it.
    #[serde(rename = "request.shed")]
    Shed {
        /// `queue_full`, `evicted` or `queue_timeout`.
        reason: &'static str,
    },
    /// This request's outcome moved the circuit breaker.
    #[serde(rename = "breaker.transition")]
    BreakerTransition {
        /// The state left.
        from: &'static str,
        /// The state entered.
        to: &'static str,
    },
    /// The request waited for a token and got a fresh one.
    #[serde(rename = "token.refreshed")]
    TokenRefreshed {
        /// How long it waited, in milliseconds.
        wait_ms: f64,
    },
    /// The request waited for a token and none could be had.
    #[serde(rename = "token.refresh_failed")]
    TokenRefreshFailed {
        /// The error (never a secret).
        error: String,
    },
    /// The server refused the request's token (401); it was dropped and the
    /// request is replayed with a fresh one if its body allows.
    #[serde(rename = "token.invalidated")]
    TokenInvalidated {
        /// The status that caused it.
        status: u16,
    },
    /// The logical request ended.
    #[serde(rename = "request.finished")]
    RequestFinished {
        /// `success`, `http_error`, `error`, or `cancelled` (the caller
        /// dropped the request before its end).
        outcome: &'static str,
        /// The final status, if there was a response.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The error kind for `error` (`connect`, `timeout`, `not_sent`,
        /// `transport`, `outcome_unknown`, `other`).
        #[serde(skip_serializing_if = "Option::is_none")]
        error_kind: Option<&'static str>,
        /// Attempts sent (counted by the retry layer; without one, 1, or 0
        /// when the request provably never left).
        attempts: u32,
        /// From entering the stack to the outcome, in milliseconds.
        total_ms: f64,
        /// Of which waiting in backoff, in milliseconds.
        backoff_ms: f64,
        /// Of which waiting in the limiter's queue (gate included).
        queue_ms: f64,
        /// The rest: on the wire (and in layers below the limiter).
        wire_ms: f64,
    },
    /// Shared fleet state (Redis) became unreachable: this instance goes on
    /// with its local state. Not tied to a request (`correlation_id` is
    /// `-`).
    #[serde(rename = "fleet.degraded")]
    FleetDegraded {
        /// `token`, `gate`, `breaker` or `pacer`.
        component: &'static str,
        /// Why (the kind of failure; never a URL or a secret).
        reason: String,
    },
    /// Shared fleet state is reachable again and used.
    #[serde(rename = "fleet.restored")]
    FleetRestored {
        /// `token`, `gate`, `breaker` or `pacer`.
        component: &'static str,
    },
}

impl Event {
    /// The kind's name, as in the `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RequestStarted { .. } => "request.started",
            Event::AttemptStarted {} => "attempt.started",
            Event::AttemptFinished { .. } => "attempt.finished",
            Event::RetryScheduled { .. } => "retry.scheduled",
            Event::HintIgnored { .. } => "hint.ignored",
            Event::RetryGaveUp { .. } => "retry.gave_up",
            Event::GateClosed { .. } => "gate.closed",
            Event::GateOpened {} => "gate.opened",
            Event::QueueWaited { .. } => "queue.waited",
            Event::Shed { .. } => "request.shed",
            Event::BreakerTransition { .. } => "breaker.transition",
            Event::TokenRefreshed { .. } => "token.refreshed",
            Event::TokenRefreshFailed { .. } => "token.refresh_failed",
            Event::TokenInvalidated { .. } => "token.invalidated",
            Event::RequestFinished { .. } => "request.finished",
            Event::FleetDegraded { .. } => "fleet.degraded",
            Event::FleetRestored { .. } => "fleet.restored",
        }
    }
}

/// A duration in milliseconds, to the microsecond, as events carry them.
pub(crate) fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
