//! Retries that behave well against rate-limited APIs.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//! use tower_cx::backoff::{Backoff, Jitter};
//! use tower_cx::body::Body;
//! use tower_cx::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let flaky = service_fn(move |_req: Request<Body>| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::new()
//!             .max_attempts(3)
//!             .deadline(Duration::from_secs(10))
//!             .backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::Equal)),
//!     )
//!     .service(flaky);
//!
//! let response = client.oneshot(Request::get("http://127.0.0.1/x").body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Rules
//!
//! After each attempt the outcome is classified ([`crate::classify`]). A
//! retryable outcome is retried only if all of these hold, checked in order;
//! the first that fails ends the request with the last outcome (a final HTTP
//! response is returned as a response, never turned into an error):
//!
//! 1. Attempts remain.
//! 2. Its body can be replayed ([`ReplayBody`](crate::body::ReplayBody)).
//! 3. The request may be repeated: its method is idempotent (RFC 9110: `GET`,
//!    `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), or it carries an
//!    `Idempotency-Key`, or the failure proves it was never sent (connect
//!    error, [`RequestNotSent`](crate::error::RequestNotSent)). A `409` on a
//!    keyed request is retryable; a `422` is not.
//! 4. The wait fits: a server hint (`Retry-After`, `RateLimit`,
//!    `inin-ratelimit-*`, see [`crate::retry_after`]) is honoured exactly and
//!    never undercut, spread after by a small jitter; a hint over
//!    [`max_server_hint`](RetryLayer::max_server_hint) or past the deadline
//!    returns the response at once instead of sleeping. Without a hint the
//!    backoff applies, and a delay that would reach the deadline ends the
//!    request.
//! 5. The [`RetryBudget`] has room.
//!
//! One case skips these rules: a `401` whose token the bearer layer below
//! has just dropped (marked [`TokenRejected`](crate::auth::TokenRejected)) is
//! sent once more at once, with a fresh token, whatever its method, without
//! using an attempt or the budget
//! ([`replay_rejected_token`](RetryLayer::replay_rejected_token)). This is the
//! bearer's own 401 replay, done here from the copy the retry layer keeps
//! anyway; [`Stack`](crate::stack::Stack) turns the bearer's copy off, so
//! each request is copied once, not twice.
//!
//! Every step is published as a [`RetryEvent`] to the callback set with
//! [`RetryLayer::on_event`].
//!
//! Per-request changes go in a [`RetryOverride`] request extension.

mod budget;
mod event;
mod future;
mod layer;
mod policy;
mod service;

pub use budget::RetryBudget;
pub use event::{DelaySource, GiveUpReason, RetryEvent, RetryEventKind};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{is_idempotent, new_idempotency_key, RetryOverride, IDEMPOTENCY_KEY};
pub use service::Retry;
