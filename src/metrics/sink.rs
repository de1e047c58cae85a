//! [`MetricsSink`]: the audit stream of each logical request, as metrics.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use ::metrics::{counter, gauge, histogram, SharedString};

use super::labels::{self, RequestLabels};
use super::names;
use crate::audit::{AuditEvent, AuditSink};
use crate::observe::{
    AuthEvent, Event, LimiterEvent, RequestEvent, RequestOutcome, RetryEventKind,
};

/// Requests tracked at once, at most: past this many started and not yet
/// finished, a request is recorded without its method and server.
const MAX_TRACKED: usize = 65_536;

/// An [`AuditSink`] that records each logical request's events as metrics:
/// the HTTP client instruments of OpenTelemetry (per attempt, in flight)
/// and the request's retries, give-ups, queue wait and token failures.
///
/// Put it in the [`AuditLayer`](crate::audit::AuditLayer), alone or beside
/// other sinks with a [`FanOut`](crate::audit::FanOut). It records through
/// the `metrics` facade, to whatever recorder is installed,
/// on the request path: each event costs a short lock and the recorder's
/// own work.
///
/// It records what the request stream alone carries. Events that also
/// reach a layer's own `on_event` callback in full (gate closures, sheds,
/// breaker transitions, tokens stored or invalidated) are left to the
/// adapters of [`crate::metrics`] ([`limiter_events`](super::limiter_events)
/// and the others), so that nothing is counted twice.
///
/// Labels come from the request's `request.started` event: the method
/// (`_OTHER` outside the known set) and the URL's host and port, never its
/// path or query, nor the correlation id. The sink remembers them, keyed
/// by correlation id, until `request.finished` (at most 65 536 requests at
/// once; past that, a request is recorded with the method `_OTHER` and no
/// server, and is not counted in flight). Requests that share an incoming
/// correlation id at the same time share the first one's labels.
///
/// ```
/// use tower_cx::audit::{AuditLayer, FanOut, JsonLinesSink};
/// use tower_cx::metrics::MetricsSink;
///
/// let audit = AuditLayer::new(FanOut::new().with(JsonLinesSink::stdout()).with(MetricsSink::new()));
/// # let _ = audit;
/// ```
#[derive(Clone)]
pub struct MetricsSink {
    requests: Arc<Mutex<HashMap<Arc<str>, Tracked>>>,
}

/// What the sink remembers of a request between its start and its end.
struct Tracked {
    labels: RequestLabels,
    /// Whether an `attempt.finished` was seen (a retry layer reports them;
    /// without one, the logical request is its one attempt).
    attempt_seen: bool,
    /// Requests in flight under this correlation id.
    refs: u32,
}

impl MetricsSink {
    /// A sink recording to the installed recorder (and describing the
    /// instruments to it: see [`describe`](super::describe)).
    pub fn new() -> Self {
        names::describe();
        Self {
            requests: Arc::default(),
        }
    }

    /// Logical requests started and not yet finished, as the sink tracks
    /// them.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Tracked>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn started(&self, id: &Arc<str>, method: &str, url: &str) {
        let labels = {
            let mut requests = self.lock();
            if let Some(tracked) = requests.get_mut(id) {
                tracked.refs += 1;
                tracked.labels.clone()
            } else if requests.len() < MAX_TRACKED {
                let labels = RequestLabels {
                    method: labels::method(method),
                    server: labels::server(url),
                };
                requests.insert(
                    id.clone(),
                    Tracked {
                        labels: labels.clone(),
                        attempt_seen: false,
                        refs: 1,
                    },
                );
                labels
            } else {
                // not tracked: its end will not be matched either
                return;
            }
        };
        gauge!(names::HTTP_CLIENT_ACTIVE_REQUESTS, labels.base()).increment(1.0);
    }

    /// The labels of a request, marking that an attempt of it finished.
    fn attempt_labels(&self, id: &str) -> RequestLabels {
        match self.lock().get_mut(id) {
            Some(tracked) => {
                tracked.attempt_seen = true;
                tracked.labels.clone()
            }
            None => RequestLabels::unknown(),
        }
    }

    fn finished(&self, id: &str, event: &RequestEvent) {
        let RequestEvent::Finished {
            outcome,
            status,
            error_kind,
            total,
            ..
        } = event
        else {
            return;
        };
        let tracked = {
            let mut requests = self.lock();
            match requests.get_mut(id) {
                Some(tracked) if tracked.refs > 1 => {
                    tracked.refs -= 1;
                    Some((tracked.labels.clone(), tracked.attempt_seen))
                }
                Some(_) => requests
                    .remove(id)
                    .map(|tracked| (tracked.labels, tracked.attempt_seen)),
                None => None,
            }
        };
        let (labels, attempt_seen) = match tracked {
            Some((labels, attempt_seen)) => {
                gauge!(names::HTTP_CLIENT_ACTIVE_REQUESTS, labels.base()).decrement(1.0);
                (labels, attempt_seen)
            }
            None => (RequestLabels::unknown(), false),
        };
        let error_type = match outcome {
            RequestOutcome::Cancelled => Some(SharedString::const_str("cancelled")),
            _ => labels::error_type(*status, *error_kind),
        };
        let seconds = total.as_secs_f64();
        if !attempt_seen && *outcome != RequestOutcome::Cancelled {
            // no retry layer reported attempts: the request was one
            histogram!(
                names::HTTP_CLIENT_REQUEST_DURATION,
                labels.outcome(*status, error_type.clone())
            )
            .record(seconds);
        }
        histogram!(names::REQUEST_DURATION, labels.outcome(*status, error_type)).record(seconds);
    }
}

impl Default for MetricsSink {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditSink for MetricsSink {
    fn record(&self, event: &AuditEvent) {
        let id = &event.correlation_id;
        match &event.kind {
            Event::Request(RequestEvent::Started { method, url, .. }) => {
                self.started(id, method, url)
            }
            Event::Request(finished @ RequestEvent::Finished { .. }) => self.finished(id, finished),
            Event::Retry(RetryEventKind::AttemptFinished {
                status,
                class,
                latency,
            }) => {
                let labels = self.attempt_labels(id);
                let error_type = labels::error_type(*status, class.failure());
                histogram!(
                    names::HTTP_CLIENT_REQUEST_DURATION,
                    labels.outcome(*status, error_type)
                )
                .record(latency.as_secs_f64());
            }
            Event::Retry(RetryEventKind::RetryScheduled { source, .. }) => {
                counter!(names::RETRIES, "source" => source.as_str()).increment(1);
            }
            Event::Retry(RetryEventKind::GaveUp(reason)) => {
                counter!(names::RETRY_GIVE_UPS, "reason" => reason.as_str()).increment(1);
            }
            Event::Limiter(LimiterEvent::QueueWaited { wait, priority }) => {
                let seconds = wait.as_secs_f64();
                histogram!(names::QUEUE_WAIT, "priority" => priority.as_str()).record(seconds);
            }
            Event::Token(AuthEvent::TokenAwaitFailed { .. }) => {
                counter!(names::TOKEN_REFRESH_FAILURES).increment(1);
            }
            // the layers' adapters count the rest, from the layers' own
            // callbacks, which hear them all
            _ => {}
        }
    }
}

impl fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSink")
            .field("tracked", &self.tracked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::audit::Timestamp;

    fn event(id: &str, kind: impl Into<Event>) -> AuditEvent {
        AuditEvent {
            ts: Timestamp(SystemTime::now()),
            correlation_id: Arc::from(id),
            attempt: None,
            kind: kind.into(),
        }
    }

    fn started(method: &str) -> RequestEvent {
        RequestEvent::Started {
            method: method.into(),
            url: "https://api.example.com/x/1".into(),
            body: None,
            priority: None,
        }
    }

    fn finished(outcome: RequestOutcome) -> RequestEvent {
        RequestEvent::Finished {
            outcome,
            status: None,
            error_kind: None,
            attempts: 0,
            total: Duration::from_millis(250),
            backoff: Duration::ZERO,
            queue: Duration::ZERO,
        }
    }

    /// Every value recorded, as `name{label values}` and the value.
    fn recorded(recorder: &DebuggingRecorder) -> Vec<(String, String)> {
        let mut all: Vec<_> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<&str> = key.labels().map(|l| l.value()).collect();
                let value = match value {
                    DebugValue::Counter(n) => n.to_string(),
                    DebugValue::Gauge(v) => v.to_string(),
                    DebugValue::Histogram(vs) => format!("{vs:?}"),
                };
                (format!("{}{labels:?}", key.name()), value)
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn requests_sharing_an_id_are_tracked_until_the_last_ends() {
        let recorder = DebuggingRecorder::new();
        let sink = ::metrics::with_local_recorder(&recorder, MetricsSink::new);
        ::metrics::with_local_recorder(&recorder, || {
            sink.record(&event("dup", started("GET")));
            sink.record(&event("dup", started("POST")));
            assert_eq!(sink.tracked(), 1);
            sink.record(&event("dup", finished(RequestOutcome::Cancelled)));
            assert_eq!(sink.tracked(), 1);
            sink.record(&event("dup", finished(RequestOutcome::Success)));
            assert_eq!(sink.tracked(), 0);
            // an end whose start was not seen
            sink.record(&event("lost", finished(RequestOutcome::Success)));
        });
        let active = r#"http.client.active_requests["GET", "api.example.com", "443"]"#;
        assert_eq!(
            recorded(&recorder),
            [
                // the second shares the first one's labels
                (active.to_owned(), "0".to_owned()),
                (
                    r#"http.client.request.duration["GET", "api.example.com", "443"]"#.into(),
                    "[0.25]".into()
                ),
                (
                    r#"http.client.request.duration["_OTHER"]"#.into(),
                    "[0.25]".into()
                ),
                (
                    r#"tower_cx.request.duration["GET", "api.example.com", "443", "cancelled"]"#
                        .into(),
                    "[0.25]".into()
                ),
                (
                    r#"tower_cx.request.duration["GET", "api.example.com", "443"]"#.into(),
                    "[0.25]".into()
                ),
                (
                    r#"tower_cx.request.duration["_OTHER"]"#.into(),
                    "[0.25]".into()
                ),
            ]
        );
    }
}
