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
//! fatal outcome (a 404, a 422) is returned as it is. A retryable one first
//! meets the side-effect rule, below: a request that must not be applied
//! twice, after a failure that does not prove the server left it alone, is
//! never sent again, and the caller gets
//! [`OutcomeUnknown`](crate::error::OutcomeUnknown) instead of the last
//! outcome. Otherwise it is retried only if all of these hold, checked in
//! order; the first that fails ends the request with the last outcome (a
//! final HTTP response is returned as a response, never turned into an
//! error):
//!
//! 1. Attempts remain.
//! 2. Its body can be replayed ([`ReplayBody`](crate::body::ReplayBody)).
//! 3. The wait fits: a server hint (`Retry-After`, `RateLimit`,
//!    `inin-ratelimit-*`, see [`crate::retry_after`]) is honoured exactly and
//!    never undercut, spread after by a small jitter; a hint over
//!    [`max_server_hint`](RetryLayer::max_server_hint) or past the deadline
//!    returns the response at once instead of sleeping. Without a hint the
//!    backoff applies, and a delay that would reach the deadline ends the
//!    request.
//! 4. The [`RetryBudget`] (or any [`Budget`], such as a fleet's shared one)
//!    has room.
//!
//! # Side effects: what may be sent twice
//!
//! A request is **repeatable** when its method is idempotent (RFC 9110:
//! `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), when the caller
//! declares it so ([`RetryOverride::idempotent`], per request; the typed
//! clients per call), or when it carries an `Idempotency-Key` and its origin
//! is declared to honour keys
//! ([`idempotency_keys_honoured_by`](RetryLayer::idempotency_keys_honoured_by);
//! by default no origin is, and Genesys Cloud and NICE CXone ignore the
//! header). A declaration wins over the method, both ways.
//!
//! Any other request (a `POST` or `PATCH`) is retried only on proof that it
//! was not processed:
//!
//! | method × origin | failure | retried? |
//! |---|---|---|
//! | repeatable (any row) | any retryable failure | yes |
//! | `POST`/`PATCH`, any origin | connect error, nothing written ([`RequestNotSent`](crate::error::RequestNotSent)), an HTTP/2 stream refused (`REFUSED_STREAM`) | yes |
//! | `POST`/`PATCH`, any origin | refused by this crate's layers: breaker open ([`CircuitOpen`](crate::error::CircuitOpen)), queue ([`Overloaded`](crate::error::Overloaded)), rate gate | yes |
//! | `POST`/`PATCH`, any origin | `429` | yes |
//! | `POST`/`PATCH`, any origin | `503` with `Retry-After` | yes |
//! | `POST`/`PATCH`, origin not honouring keys (or no key) | `500`, `502`, `504`, `503` without `Retry-After`, `408`, timeout, connection lost after writing | **no: `OutcomeUnknown`** |
//! | `POST`/`PATCH` with a key, origin honouring keys | `500`, `502`, `504`, timeout, connection lost | yes (the same key on every attempt) |
//! | `POST`/`PATCH` with a key, origin honouring keys | `409` (the first copy still in progress) | yes |
//! | any | `422`, other 4xx, fatal errors | no: returned as is |
//!
//! `OutcomeUnknown` says what happened (the status, a timeout, a lost
//! connection) and which attempt it was; it keeps the response's status and
//! headers, or the error as its source. It is published as
//! [`GiveUpReason::OutcomeUnknown`], and the typed clients dead-letter it
//! with the code `outcome_unknown`, so that an operator checks whether it
//! was applied before replaying it. It comes whatever attempts, budget or
//! deadline remain, and it is fatal to any retry layer above.
//!
//! [`auto_idempotency_key`](RetryLayer::auto_idempotency_key) still adds a
//! key to `POST` and `PATCH`; the key unlocks retries only for origins that
//! honour it.
//!
//! One case skips these rules: a `401` whose token the bearer layer below
//! has just dropped (marked [`TokenRejected`](crate::replay::TokenRejected))
//! is sent once more at once, with a fresh token, whatever its method,
//! without using an attempt or the budget
//! ([`replay_rejected_token`](RetryLayer::replay_rejected_token)). The 401
//! replay is one protocol between the bearer and this layer, documented in
//! [`crate::replay`]: the request is replayed once and copied once, in any
//! composition.
//!
//! Every step is published as a [`RetryEvent`] to the callback set with
//! [`RetryLayer::on_event`].
//!
//! Per-request changes go in a [`RetryOverride`] request extension.

mod budget;
mod config;
mod future;
mod layer;
mod policy;
mod safety;
mod service;
mod template;

pub use crate::observe::{DelaySource, GiveUpReason, RetryEvent, RetryEventKind};
#[cfg(feature = "redis")]
pub(crate) use budget::BudgetUnits;
pub use budget::{Budget, RetryBudget};
pub use config::RetryOverride;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use safety::{is_idempotent, new_idempotency_key, IDEMPOTENCY_KEY};
pub use service::Retry;
