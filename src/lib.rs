//! # tower-cx
//!
//! Resilient HTTP API clients as a stack of composable [`tower`] layers, for
//! rate-limited SaaS APIs such as NICE CXone and Genesys Cloud.
//!
//! Each layer works alone in any [`tower::ServiceBuilder`]:
//!
//! - [`retry`]: `Retry-After`-aware retries with jittered exponential
//!   backoff, a retry budget, a total deadline and idempotency rules.
//! - [`auth`]: OAuth2 bearer tokens (client credentials, Genesys Cloud and
//!   NICE CXone flavours) from a shared cache that refreshes ahead of expiry,
//!   one token request at a time, with 401 -> refresh -> replay once.
//!
//! Building blocks shared by the layers:
//!
//! - [`backoff`]: exponential backoff with none, full, equal and decorrelated
//!   jitter, over an injectable random source.
//! - [`retry_after`]: server hints (`Retry-After`, `RateLimit`, Genesys
//!   `inin-ratelimit-*`) over an injectable clock.
//! - [`classify`]: which responses and errors are worth another attempt.
//! - [`body`]: replayable request bodies.
//! - [`error`]: the typed errors the crate creates.
//! - [`genesys`]: Genesys Cloud regions.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_cx::retry::RetryLayer;
//!
//! # let client = tower::service_fn(|_req: http::Request<tower_cx::body::Body>| async {
//! #     Ok::<_, tower::BoxError>(http::Response::new(()))
//! # });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new().deadline(Duration::from_secs(30)).auto_idempotency_key(true))
//!     .service(client);
//! # let _ = client;
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod backoff;
pub mod body;
pub mod breaker;
pub mod classify;
pub mod error;
pub mod genesys;
pub mod priority;
pub mod retry;
pub mod retry_after;
