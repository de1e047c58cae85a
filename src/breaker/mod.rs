//! A circuit breaker: fail fast while the upstream is broken, probe it, and
//! close again when it recovers.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_cx::backoff::Backoff;
//! use tower_cx::body::Body;
//! use tower_cx::breaker::{BreakerState, CircuitBreakerLayer};
//! use tower_cx::error::{BoxError, CircuitOpen};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::new()
//!     .consecutive_failures(3)
//!     .open_duration(Backoff::constant(Duration::from_secs(5)));
//! let handle = layer.handle();
//! let broken = layer.layer(service_fn(|_req: Request<Body>| async {
//!     Ok::<_, BoxError>(Response::builder().status(StatusCode::BAD_GATEWAY).body(())?)
//! }));
//!
//! for _ in 0..3 {
//!     broken.clone().oneshot(Request::new(Body::empty())).await?;
//! }
//! assert_eq!(handle.state(), BreakerState::Open { retry_in: Duration::from_secs(5) });
//! let err = broken.clone().oneshot(Request::new(Body::empty())).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().retry_in(), Some(Duration::from_secs(5)));
//! # Ok(())
//! # }
//! ```
//!
//! # Rules
//!
//! - States: closed, open, half-open, isolated (by hand). The breaker counts
//!   attempts, not logical requests: put it inside the retry layer.
//! - A failure is a 5xx other than 501, a timeout, a connection error or a
//!   connection reset, or any call slower than the
//!   [`slow_call`](CircuitBreakerLayer::slow_call) threshold. A 429 is pacing,
//!   not breakage, unless [`count_429_as_failure`](CircuitBreakerLayer::count_429_as_failure).
//!   An error that shows the request was never sent
//!   ([`Overloaded`](crate::error::Overloaded) and the like) counts for nothing.
//! - It trips on N failures in a row, or on a failure ratio over a sliding
//!   window once a minimum of calls was seen. While open, calls fail at once
//!   with [`CircuitOpen`](crate::error::CircuitOpen) carrying the time to the
//!   next probe; a retry layer above waits that long when it fits its
//!   deadline (whatever its `max_attempts`: the refused call was never
//!   sent), so its caller sees `CircuitOpen` only past the deadline.
//! - The open duration grows with trips in a row (a [`Backoff`](crate::backoff::Backoff)),
//!   or is the server's hint (`Retry-After` on the failing response).
//! - Half-open lets N probes through; enough successes close it, one failure
//!   opens it again. A probe whose future is dropped frees its slot.

mod config;
mod future;
mod handle;
mod layer;
mod machine;
mod service;
mod state;
mod transition;
mod window;

pub use future::ResponseFuture;
pub use handle::CircuitBreakerHandle;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{BreakerCounts, BreakerEvent, BreakerState, TransitionReason};
