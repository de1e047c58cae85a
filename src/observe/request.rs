//! The observing layer's events: a logical request's start and end.

use std::time::Duration;

use http::StatusCode;
use serde::{Serialize, Serializer};

use super::event::Fields;
use crate::classify::FailureKind;
use crate::level::Priority;

/// The start or the end of one logical request, published by the layer that
/// observes it (the audit layer).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RequestEvent {
    /// The logical request entered the stack (`request.started`: `method`,
    /// `url`, `body`, `priority`).
    Started {
        /// The method.
        method: String,
        /// The URL, userinfo removed, secret-looking query values redacted,
        /// cut to [`MAX_EVENT_URL`](crate::audit::MAX_EVENT_URL) bytes.
        url: String,
        /// The JSON request body with secret-looking keys masked, only when
        /// [`record_bodies`](crate::audit::AuditLayer::record_bodies) is on.
        body: Option<serde_json::Value>,
        /// The priority, if the request carried one.
        priority: Option<Priority>,
    },
    /// The logical request ended (`request.finished`: `outcome`, `status`,
    /// `error_kind`, `attempts`, `total_ms`, `backoff_ms`, `queue_ms`,
    /// `wire_ms`).
    Finished {
        /// How it ended.
        outcome: RequestOutcome,
        /// The final status, if there was a response.
        status: Option<StatusCode>,
        /// What failed, for [`RequestOutcome::Error`].
        error_kind: Option<FailureKind>,
        /// Attempts sent (counted by the retry layer; without one, 1, or 0
        /// when the request provably never left).
        attempts: u32,
        /// From entering the stack to the outcome.
        total: Duration,
        /// Of which waiting in backoff (`wire_ms` in the record is what is
        /// left: time in the layers below and on the network, attempts
        /// refused before they were sent included).
        backoff: Duration,
        /// Of which waiting in the limiter's queue (gate included).
        queue: Duration,
    },
}

impl RequestEvent {
    /// The event's name (`request.started`, `request.finished`).
    pub fn name(&self) -> &'static str {
        match self {
            RequestEvent::Started { .. } => "request.started",
            RequestEvent::Finished { .. } => "request.finished",
        }
    }
}

impl Serialize for RequestEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Fields::start(serializer, self.name())?;
        match self {
            RequestEvent::Started {
                method,
                url,
                body,
                priority,
            } => fields
                .field("method", method)?
                .field("url", url)?
                .some("body", body.as_ref())?
                .some("priority", priority.map(|p| p.as_str()))?,
            RequestEvent::Finished {
                outcome,
                status,
                error_kind,
                attempts,
                total,
                backoff,
                queue,
            } => fields
                .field("outcome", outcome.as_str())?
                .some("status", status.map(|s| s.as_u16()))?
                .some("error_kind", error_kind.map(|k| k.as_str()))?
                .field("attempts", attempts)?
                .millis("total_ms", *total)?
                .millis("backoff_ms", *backoff)?
                .millis("queue_ms", *queue)?
                .millis("wire_ms", total.saturating_sub(*backoff + *queue))?,
        }
        .end()
    }
}

/// How a logical request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// A response below 400.
    Success,
    /// A response of 400 or above.
    HttpError,
    /// An error.
    Error,
    /// The caller dropped the request before its end.
    Cancelled,
}

impl RequestOutcome {
    /// `success`, `http_error`, `error` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::HttpError => "http_error",
            RequestOutcome::Error => "error",
            RequestOutcome::Cancelled => "cancelled",
        }
    }
}
