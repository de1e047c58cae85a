//! One structured event stream per logical request: the outermost layer.
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_cx::audit::{callback, AuditLayer};
//! use tower_cx::body::Body;
//! use tower_cx::error::BoxError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let sink = {
//!     let lines = lines.clone();
//!     callback(move |event| lines.lock().unwrap().push(event.to_json()))
//! };
//! let layer = AuditLayer::new(sink);
//! let stats = layer.stats_handle();
//! let api = layer.layer(service_fn(|_req: Request<Body>| async {
//!     Ok::<_, BoxError>(Response::new(()))
//! }));
//! let request = Request::get("https://api.example.com/v2/users?access_token=s3cr3t")
//!     .header("x-request-id", "req-42")
//!     .body(Body::empty())?;
//! api.oneshot(request).await?;
//! let lines = lines.lock().unwrap();
//! assert!(lines[0].contains(r#""event":"request.started""#));
//! assert!(lines[0].contains(r#""correlation_id":"req-42""#));
//! assert!(!lines[0].contains("s3cr3t"));
//! assert!(lines[1].contains(r#""event":"request.finished""#));
//! assert_eq!(stats.snapshot().successes, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! [`AuditLayer`] opens a [`RequestContext`](crate::observe::RequestContext)
//! (also named [`AuditRecord`]) per logical request and puts it in the
//! request's extensions: a correlation id, also sent upstream in a header
//! (`x-correlation-id` by default). It is the one the request arrives with,
//! if sane (in that same header, else in `X-Request-Id` or
//! `ININ-Correlation-Id`), else a new one in UUID layout: 64 random bits
//! drawn once per process, then a counter. The retry, breaker, limiter and
//! bearer layers find the context and publish what they do into
//! [`crate::observe`], which knows nothing of the audit layer: the audit
//! layer is the context's [`Observer`](crate::observe::Observer), and feeds
//! its stats and its sink. Without an audit layer the layers publish nothing
//! and work as before.
//!
//! A request gets a context only when something will read what it carries:
//! a sink that wants events ([`AuditSink::enabled`]), a stats handle that
//! was taken ([`AuditLayer::stats_handle`], [`AuditLayer::stats`]), or a
//! dead-letter sink. An audit layer nothing reads (a [`NoopSink`], no
//! handle) only sends the correlation id upstream, and costs about what
//! that costs (`BENCHMARKS.md`).
//!
//! # The event schema
//!
//! Every event is one flat JSON object: `ts` (RFC 3339 UTC, milliseconds),
//! `event`, `correlation_id`, `attempt` (for per-attempt events), then its
//! fields. Durations are milliseconds as numbers. One line of each kind:
//!
//! ```text
//! {"ts":"2026-11-22T08:49:12.000Z","correlation_id":"req-42","event":"request.started","method":"GET","url":"https://api.mypurecloud.com/api/v2/users?access_token=[redacted]","priority":"high"}
//! {"ts":"2026-11-22T08:49:12.000Z","correlation_id":"req-42","attempt":1,"event":"attempt.started"}
//! {"ts":"2026-11-22T08:49:12.031Z","correlation_id":"req-42","attempt":1,"event":"attempt.finished","status":429,"class":"retryable","failure":"status","latency_ms":31.0}
//! {"ts":"2026-11-22T08:49:12.031Z","correlation_id":"req-42","attempt":1,"event":"hint.ignored","header":"retry-after","reason":"not delay-seconds or an HTTP-date"}
//! {"ts":"2026-11-22T08:49:12.031Z","correlation_id":"req-42","attempt":1,"event":"retry.scheduled","delay_ms":5250.0,"source":"retry-after"}
//! {"ts":"2026-11-22T08:49:12.031Z","correlation_id":"req-42","attempt":3,"event":"retry.gave_up","reason":"budget_exhausted"}
//! {"ts":"2026-11-22T08:49:12.031Z","correlation_id":"req-42","event":"gate.closed","for_ms":5000.0,"source":"retry-after"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-42","event":"gate.opened"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-42","event":"queue.waited","wait_ms":4969.0,"priority":"high"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-43","event":"request.shed","priority":"low","reason":"queue_full"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-44","event":"breaker.transition","from":"closed","to":"open","reason":"consecutive_failures"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-45","event":"token.refreshed","wait_ms":120.0}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-45","event":"token.refresh_failed","error":"token request rejected (401 Unauthorized): invalid_client"}
//! {"ts":"2026-11-22T08:49:17.100Z","correlation_id":"req-46","event":"token.invalidated","status":401}
//! {"ts":"2026-11-22T08:49:17.300Z","correlation_id":"req-42","event":"request.finished","outcome":"success","status":200,"attempts":2,"total_ms":5300.0,"backoff_ms":5250.0,"queue_ms":0.0,"wire_ms":50.0}
//! ```
//!
//! `request.finished` has `outcome` `success` (status below 400),
//! `http_error` (a final 4xx/5xx response), `error` (no response; then
//! `error_kind`: `connect`, `timeout`, `not_sent`, `transport`,
//! `outcome_unknown`, `other`) or `cancelled` (the caller dropped the request
//! first).
//!
//! Each line is an [`Event`](crate::observe::Event) (the layers' own typed
//! events, the same values their `on_event` callbacks get) with the
//! request's `ts`, `correlation_id` and `attempt`. Events about no request
//! (a [`RedisFleet`](crate::fleet::RedisFleet)'s `fleet.degraded`, say)
//! reach the sink through an [`AuditEmitter`], with `correlation_id` `-`.
//!
//! # Redaction
//!
//! Headers are never recorded (so neither `Authorization`, `Cookie` nor any
//! token); URLs lose their userinfo and secret-looking query values
//! (`token`, `secret`, `password`, `key`, `code`, ...); response bodies are
//! never recorded, and request bodies only with
//! [`record_bodies`](AuditLayer::record_bodies), as JSON with the values of
//! secret-looking keys masked. Error messages come from the crate's typed
//! errors, which never carry secrets (an error from your own inner client is
//! shown as its `Display` gives it).
//!
//! # Sinks
//!
//! [`AuditSink`] implementations never block the request path:
//! [`JsonLinesSink`] (a background writer thread, bounded, drops and counts
//! when behind), [`callback`], [`TracingSink`] (structured `tracing`
//! events), [`WebhookSink`] (batched POSTs from a background task),
//! [`FanOut`], [`NoopSink`] (the correlation id, and stats if read). A
//! [`DeadLetterSink`] ([`dead_letter_fn`], [`JsonLinesDeadLetters`]) receives
//! each request that failed for good, with a replayable copy.

mod event;
mod future;
mod latency;
mod layer;
mod observer;
mod service;
mod sink;
mod stats;
mod webhook;

pub use crate::dead_letter::{
    dead_letter_fn, DeadLetter, DeadLetterFn, DeadLetterSink, DeadLettersHandled,
};
/// The events layers report: [`crate::observe::Event`], under the name
/// the audit stream has always used.
pub use crate::observe::Event as EventKind;
/// The per-request context the audit layer puts in the extensions:
/// [`crate::observe::RequestContext`].
pub use crate::observe::RequestContext as AuditRecord;
pub use crate::redact::{
    is_secret_key, redact_json, redact_uri, redact_uri_for_event, MAX_EVENT_URL, REDACTED,
};
pub use event::{AuditEvent, Timestamp};
pub use future::ResponseFuture;
pub use layer::{AuditEmitter, AuditLayer};
pub use service::Audit;
pub use sink::{
    callback, AuditSink, CallbackSink, FanOut, JsonLinesDeadLetters, JsonLinesSink, NoopSink,
    TracingSink,
};
pub use stats::{AuditStats, StatsSnapshot};
pub use webhook::{WebhookSink, WebhookSinkBuilder};
