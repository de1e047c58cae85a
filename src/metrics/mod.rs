//! Metrics (feature `metrics`), through the `metrics` facade:
//! install any recorder (an OpenTelemetry or a Prometheus exporter), and
//! the stack's events become instruments.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_cx::audit::AuditLayer;
//! use tower_cx::body::Body;
//! use tower_cx::breaker::CircuitBreakerLayer;
//! use tower_cx::error::BoxError;
//! use tower_cx::metrics::{self, MetricsSampler, MetricsSink};
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! # let recorder = metrics_util::debugging::DebuggingRecorder::new();
//! # let snapshots = recorder.snapshotter();
//! # let _recording = ::metrics::set_default_local_recorder(&recorder);
//! // a recorder is installed first, e.g. metrics_exporter_prometheus
//! let breaker = CircuitBreakerLayer::new().on_event(metrics::breaker_events("api"));
//! let limiter = PriorityLimitLayer::new(16).on_event(metrics::limiter_events("api"));
//! let sampler = MetricsSampler::new()
//!     .breaker("api", breaker.handle())
//!     .limiter("api", limiter.handle());
//! let client = ServiceBuilder::new()
//!     .layer(AuditLayer::new(MetricsSink::new()))
//!     .layer(RetryLayer::new())
//!     .layer(breaker)
//!     .layer(limiter)
//!     .service(service_fn(|_req: Request<Body>| async {
//!         Ok::<_, BoxError>(Response::new(()))
//!     }));
//! let sampling = sampler.spawn(Duration::from_secs(15));
//!
//! let request = Request::get("https://api.example.com/api/v2/users/42").body(Body::empty())?;
//! client.oneshot(request).await?;
//! // http.client.request.duration{http.request.method="GET",
//! //   server.address="api.example.com",server.port="443",http.response.status_code="200"}
//! # let recorded = snapshots.snapshot().into_vec();
//! # let (key, ..) = recorded
//! #     .iter()
//! #     .find(|(key, ..)| key.key().name() == "http.client.request.duration")
//! #     .expect("one attempt recorded");
//! # let labels: Vec<_> = key.key().labels().map(|l| (l.key(), l.value())).collect();
//! # assert!(labels.contains(&("server.address", "api.example.com")));
//! # assert!(labels.contains(&("http.response.status_code", "200")));
//! sampling.abort();
//! # Ok(())
//! # }
//! ```
//!
//! # Where each instrument comes from
//!
//! Nothing here is imported by a layer: the layers report events
//! ([`crate::observe`]) and this module consumes them, each event from one
//! place only, so that nothing is counted twice.
//!
//! - [`MetricsSink`], an [`AuditSink`](crate::audit::AuditSink) for the
//!   [`AuditLayer`](crate::audit::AuditLayer), records what each logical
//!   request's event stream carries: attempts, the request's duration and
//!   end, retries, give-ups, queue waits, requests left without a token.
//!   Beside other sinks:
//!   `AuditLayer::new(FanOut::new().with(JsonLinesSink::stdout()).with(MetricsSink::new()))`.
//! - [`breaker_events`], [`limiter_events`], [`auth_events`] and
//!   [`fleet_events`] are callbacks for the layers' own `on_event`, which
//!   hear every transition, shed, gate closure and token refresh, those of
//!   no request included.
//! - [`MetricsSampler`] reads gauges from the handles
//!   ([`PriorityLimitHandle`](crate::priority::PriorityLimitHandle),
//!   [`CircuitBreakerHandle`](crate::breaker::CircuitBreakerHandle),
//!   [`TokenCache`](crate::auth::TokenCache), or a whole stack's
//!   [`StackHandles`](crate::stack::StackHandles)) when it samples.
//! - [`MeteredDeadLetters`] wraps a dead-letter sink and counts its
//!   letters.
//!
//! With the ready-made [`Stack`](crate::stack::Stack), give it an audit
//! layer with the sink and layers with the callbacks, and sample their
//! handles (or all of the stack's, with
//! [`MetricsSampler::stack`]):
//!
//! ```
//! # use std::time::Duration;
//! use tower_cx::audit::AuditLayer;
//! use tower_cx::breaker::CircuitBreakerLayer;
//! use tower_cx::metrics::{self, MetricsSampler, MetricsSink};
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::stack::Stack;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = CircuitBreakerLayer::new().on_event(metrics::breaker_events("genesys"));
//! let limiter = PriorityLimitLayer::new(16).on_event(metrics::limiter_events("genesys"));
//! let sampler = MetricsSampler::new().breaker("genesys", breaker.handle()).limiter("genesys", limiter.handle());
//! let client = Stack::new().audit(AuditLayer::new(MetricsSink::new())).breaker(breaker).limiter(limiter).build();
//! let sampling = sampler.spawn(Duration::from_secs(15)); // sets the gauges every 15 s
//! # sampling.abort();
//! # drop(client);
//! # }
//! ```
//!
//! # Instruments
//!
//! OpenTelemetry's names where its semantic conventions have one, else
//! this crate's under `tower_cx.` (the constants in [`names`]). Durations
//! are in seconds.
//!
//! | name | type | from | labels |
//! |---|---|---|---|
//! | `http.client.request.duration` | histogram, s | sink | `http.request.method`, `server.address`, `server.port`, `http.response.status_code`, `error.type` |
//! | `http.client.active_requests` | gauge | sink | `http.request.method`, `server.address`, `server.port` |
//! | `tower_cx.request.duration` | histogram, s | sink | as `http.client.request.duration` |
//! | `tower_cx.retries` | counter | sink | `source` |
//! | `tower_cx.retry.give_ups` | counter | sink | `reason` |
//! | `tower_cx.queue.wait` | histogram, s | sink | `priority` |
//! | `tower_cx.token.refresh_failures` | counter | sink | |
//! | `tower_cx.requests.shed` | counter | [`limiter_events`] | `name`, `priority`, `reason` |
//! | `tower_cx.gate.closed_duration` | histogram, s | [`limiter_events`] | `name`, `source` |
//! | `tower_cx.breaker.transitions` | counter | [`breaker_events`] | `name`, `from`, `to`, `reason` |
//! | `tower_cx.breaker.state` | gauge | [`breaker_events`], sampler | `name` |
//! | `tower_cx.token.issued` | counter | [`auth_events`] | `name` |
//! | `tower_cx.token.fetch_failures` | counter | [`auth_events`] | `name`, `token_still_valid` |
//! | `tower_cx.token.invalidations` | counter | [`auth_events`] | `name` |
//! | `tower_cx.fleet.degradations`, `tower_cx.fleet.restorations` | counter | [`fleet_events`] | `name`, `component` |
//! | `tower_cx.fleet.degraded` | gauge | [`fleet_events`] | `name`, `component` |
//! | `tower_cx.queue.depth` | gauge | sampler | `name`, `priority` |
//! | `tower_cx.limiter.in_flight` | gauge | sampler | `name` |
//! | `tower_cx.token.expires_in` | gauge, s | sampler | `name` |
//! | `tower_cx.token.consecutive_failures` | gauge | sampler | `name` |
//! | `tower_cx.dead_letters` | counter | [`MeteredDeadLetters`] | `error.type` |
//!
//! What they measure:
//!
//! - **Attempts** (`http.client.request.duration`) run from the attempt's
//!   hand-off below the retry layer to its outcome: the limiter's queue and
//!   a token wait are part of it, as the caller lives them. Without a retry
//!   layer the logical request is its one attempt. An attempt the stack
//!   refused (a shed, an open breaker) has `error.type` `not_sent`.
//! - **`error.type`** is the status code for a response of 400 or above,
//!   else the failure's kind (`timeout`, `connect`, `not_sent`,
//!   `transport`, `outcome_unknown`, `other`); on
//!   `tower_cx.request.duration`, `cancelled` for a request its caller
//!   dropped.
//! - **Active requests** are logical requests, backoff and queue included.
//! - **Gate closed time**: each closure adds to
//!   `tower_cx.gate.closed_duration` only the time it extends the gate's
//!   closure by, so that the sum is the time the gate was announced closed
//!   (not shortened by a hand-opened gate).
//!
//! Labels stay bounded: a method outside the known set is `_OTHER`; the
//! server is the URL's host and port, never its path or query; no
//! correlation id, no vendor error text. `server.address` has as many
//! values as the hosts you call.

mod dead_letters;
mod events;
mod labels;
pub mod names;
mod sampler;
mod sink;

pub use dead_letters::MeteredDeadLetters;
pub use events::{auth_events, breaker_events, fleet_events, limiter_events};
pub use names::describe;
pub use sampler::MetricsSampler;
pub use sink::MetricsSink;
