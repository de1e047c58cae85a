//! Observation: the one event vocabulary, and the per-request context every
//! layer reports into, knowing nothing of who listens.
//!
//! Each layer's events are its own typed values, defined here:
//! [`RetryEventKind`], [`LimiterEvent`], [`BreakerEvent`], [`AuthEvent`],
//! [`FleetEvent`], and the observing layer's [`RequestEvent`]. A layer's
//! `on_event` callback receives them; [`Event`] holds any of them, for
//! whoever observes a whole logical request.
//!
//! The layer that observes a logical request (the
//! [`AuditLayer`](crate::audit::AuditLayer)) puts a [`RequestContext`] in the
//! request's extensions: its correlation id, start time, attempt counter,
//! and a way to [`publish`](RequestContext::publish) an [`Event`] to an
//! [`Observer`]. The retry layer, the breaker, the limiter and the bearer
//! find the context and publish what they do; they never import the audit
//! layer, which is one consumer among possible others.
//!
//! ```
//! use tower_cx::error::OverloadReason;
//! use tower_cx::observe::{LimiterEvent, RequestContext};
//! use tower_cx::priority::Priority;
//!
//! // a layer of your own reports the same way the crate's layers do
//! fn report_shed(request: &http::Request<()>) {
//!     if let Some(context) = request.extensions().get::<RequestContext>() {
//!         let shed = LimiterEvent::Shed {
//!             priority: Priority::Low,
//!             reason: OverloadReason::QueueFull,
//!         };
//!         context.publish(None, shed.into());
//!     }
//! }
//! report_shed(&http::Request::new(()));
//! ```

mod breaker;
mod context;
mod event;
mod fleet;
mod limiter;
mod request;
mod retry;
mod token;

pub use breaker::{BreakerEvent, BreakerState, TransitionReason};
pub use context::{Observer, RequestContext};
pub use event::Event;
pub use fleet::FleetEvent;
pub(crate) use limiter::per_minute;
pub use limiter::{LimiterEvent, PacingSource};
pub use request::{RequestEvent, RequestOutcome};
pub use retry::{DelaySource, GiveUpReason, RetryEvent, RetryEventKind};
pub use token::{AuthEvent, LifetimeNote};
