//! The audit event: one serde type, one stable JSON shape.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::observe::{AuthEvent, Event as EventKind, FleetEvent, RequestEvent};

/// One thing that happened to one logical request.
///
/// Serialized as one flat JSON object: `ts` (RFC 3339, UTC, milliseconds),
/// `event` (the kind's name), `correlation_id`, `attempt` (when the event is
/// about one attempt), then the kind's own fields. See the
/// [module docs](crate::audit) for every kind.
#[derive(Debug, Clone, Serialize)]
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
            EventKind::Request(RequestEvent::Started {
                method, url, body, ..
            }) => method.len() + url.len() + body.as_ref().map_or(0, json_bytes),
            EventKind::Token(
                AuthEvent::TokenAwaitFailed { error } | AuthEvent::RefreshFailed { error, .. },
            ) => error.to_string().len(),
            EventKind::Fleet(FleetEvent::Degraded { reason, .. }) => reason.len(),
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
