//! The audit event: one serde type, one stable JSON shape.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One thing that happened to one logical request.
///
/// Serialized as one flat JSON object: `ts` (RFC 3339, UTC, milliseconds),
/// `event` (the kind's name), `correlation_id`, `attempt` (when the event is
/// about one attempt), then the kind's own fields. See the
/// [module docs](crate::audit) for every kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When it happened; serialized as RFC 3339 in UTC with milliseconds.
    pub ts: Timestamp,
    /// The logical request's correlation id.
    pub correlation_id: Arc<str>,
    /// The attempt the event is about, if any (1 for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl AuditEvent {
    pub(crate) fn new(correlation_id: Arc<str>, attempt: Option<u32>, kind: EventKind) -> Self {
        Self {
            ts: Timestamp(SystemTime::now()),
            correlation_id,
            attempt,
            kind,
        }
    }

    /// The event's name, as in its `event` field (e.g. `retry.scheduled`).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The event as one JSON line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// About how many bytes the event holds (its strings and JSON body
    /// plus a fixed part), without serializing it: what byte-capped queues
    /// count.
    pub fn approx_bytes(&self) -> usize {
        let own = match &self.kind {
            EventKind::RequestStarted {
                method, url, body, ..
            } => method.len() + url.len() + body.as_ref().map_or(0, json_bytes),
            EventKind::TokenRefreshFailed { error } => error.len(),
            EventKind::FleetDegraded { reason, .. } => reason.len(),
            _ => 0,
        };
        std::mem::size_of::<Self>() + self.correlation_id.len() + own
    }
}

/// About how many bytes a JSON value holds.
fn json_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    16 + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(json_bytes).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + json_bytes(v)).sum(),
        _ => 0,
    }
}

/// A wall-clock instant, formatted (RFC 3339, UTC, milliseconds) only when
/// the event is serialized or displayed, so that sinks that never format it
/// never pay for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What an [`AuditEvent`] reports, with its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event")]
#[non_exhaustive]
pub enum EventKind {
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

impl EventKind {
    /// The kind's name, as in the `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RequestStarted { .. } => "request.started",
            EventKind::AttemptStarted {} => "attempt.started",
            EventKind::AttemptFinished { .. } => "attempt.finished",
            EventKind::RetryScheduled { .. } => "retry.scheduled",
            EventKind::HintIgnored { .. } => "hint.ignored",
            EventKind::RetryGaveUp { .. } => "retry.gave_up",
            EventKind::GateClosed { .. } => "gate.closed",
            EventKind::GateOpened {} => "gate.opened",
            EventKind::QueueWaited { .. } => "queue.waited",
            EventKind::Shed { .. } => "request.shed",
            EventKind::BreakerTransition { .. } => "breaker.transition",
            EventKind::TokenRefreshed { .. } => "token.refreshed",
            EventKind::TokenRefreshFailed { .. } => "token.refresh_failed",
            EventKind::TokenInvalidated { .. } => "token.invalidated",
            EventKind::RequestFinished { .. } => "request.finished",
            EventKind::FleetDegraded { .. } => "fleet.degraded",
            EventKind::FleetRestored { .. } => "fleet.restored",
        }
    }
}

pub(crate) fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
