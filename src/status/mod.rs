//! An operator's status page: every layer's live state, as JSON and as a
//! self-refreshing HTML page, from one tower service you mount where you
//! like (the gateway serves it at `/_cx/status`).
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{header, Request};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_cx::audit::{AuditLayer, FanOut, JsonLinesSink};
//! use tower_cx::breaker::CircuitBreakerLayer;
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::stack::Stack;
//! use tower_cx::status::{Status, StatusBoard};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_cx::error::BoxError> {
//! let stack = Stack::new()
//!     .breaker(CircuitBreakerLayer::new())
//!     .limiter(PriorityLimitLayer::new(16).pacing(300, Duration::from_secs(60)));
//! let board = StatusBoard::new().stack("genesys", &stack.handles());
//! // the board hears retries and sheds as an audit sink
//! let stack = stack.audit(AuditLayer::new(FanOut::new().with(board.clone())));
//! # let _client = stack.build();
//!
//! // in axum: Router::new().nest_service("/_cx/status", board.service())
//! let request = Request::get("/_cx/status")
//!     .header(header::ACCEPT, "application/json")
//!     .body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let response = board.service().oneshot(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! let status: Status = serde_json::from_slice(&body)?;
//! assert_eq!(status.limiters[0].available, 16);
//! assert_eq!(status.limiters[0].pacing.as_ref().map(|p| p.per_second), Some(5.0));
//! assert_eq!(status.breakers[0].state, "closed");
//! # let _ = JsonLinesSink::stdout;
//! # Ok(())
//! # }
//! ```
//!
//! # What it shows
//!
//! Read from the layers' handles when the page is asked for:
//! - each token cache: whether a token is in hand, when it expires and
//!   when it will be refreshed (never the token);
//! - each breaker: its state, the time to its next probe while open, its
//!   counts;
//! - each limiter: permits, queue depth per priority, whether the rate
//!   gate is closed, until when and by what (the hint's header, or
//!   `shared` when a limiter sharing the gate closed it), and the pacing
//!   rate in force.
//!
//! Heard as an [`AuditSink`](crate::audit::AuditSink) (put a clone of the
//! board in the audit layer's sinks):
//! - the last retries and sheds, and their totals since the start;
//! - with [`StatusBoard::fleet`], which fleet components fell back to
//!   local state and why (send the fleet's events to the audit layer).
//!
//! With the `redis` feature, `StatusBoard::fleet_membership` also shows
//! the fleet's members alive, as this instance's
//! `fleet::Membership` heartbeat last saw them.
//!
//! # Serving it
//!
//! [`StatusService`] answers `GET`/`HEAD` on any path with the HTML page,
//! or with the JSON [`Status`] when the path ends in `.json`, the query
//! says `format=json`, or `Accept` prefers `application/json` to `text/html` (by q-value, then order). The page
//! is rendered on the server, uses no script and no external asset, and
//! reloads itself (every 2 s by default, [`StatusBoard::refresh`]). Every
//! value on it carries a `data-field` attribute with its place in the JSON
//! (`limiters.0.queued.high`).
//!
//! The page tells how your client is doing, including correlation ids of
//! recent retries: serve it on an operator's port, not to the internet.

mod board;
mod html;
mod recent;
mod service;
mod snapshot;

pub use board::StatusBoard;
pub use service::StatusService;
pub use snapshot::{
    BreakerView, DegradedView, FleetView, GateView, LimiterView, PacingView, QueuedView,
    RecentEvent, RecentView, Status, TokenView,
};
