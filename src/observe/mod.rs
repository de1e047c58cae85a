//! Observation: the leaf every layer reports into, and the one place that
//! knows nothing of who listens.
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
//! use tower_cx::observe::{RequestContext, Event};
//!
//! // a layer of your own reports the same way the crate's layers do
//! fn report_shed(request: &http::Request<()>) {
//!     if let Some(context) = request.extensions().get::<RequestContext>() {
//!         context.publish(None, Event::Shed { reason: "my_reason" });
//!     }
//! }
//! report_shed(&http::Request::new(()));
//! ```

mod context;
mod event;

pub use context::{Observer, RequestContext};
pub(crate) use event::ms;
pub use event::Event;
