//! # tower-cx
//!
//! Resilient HTTP API clients as a stack of composable [`tower`] layers, for
//! rate-limited SaaS APIs such as NICE CXone and Genesys Cloud.
//!
//! The layers, outermost first, as the canonical stack orders them; each
//! also works alone in any [`tower::ServiceBuilder`]:
//!
//! - [`audit`]: one structured event stream per logical request (JSON lines,
//!   callback, `tracing`, webhook), stats with latency percentiles, dead
//!   letters; never a secret in it.
//! - [`retry`]: `Retry-After`-aware retries with jittered exponential
//!   backoff, a retry budget, a total deadline and idempotency rules.
//! - [`breaker`]: a circuit breaker with consecutive and failure-rate trips,
//!   half-open probes, isolate/reset.
//! - [`priority`]: a priority concurrency limit with a bounded queue, one
//!   shared rate gate closed by server hints, and pacing.
//! - [`auth`]: OAuth2 bearer tokens (client credentials, Genesys Cloud and
//!   NICE CXone flavours) from a shared cache that refreshes ahead of expiry,
//!   one token request at a time, with 401 -> refresh -> replay once.
//!
//! Building blocks shared by the layers:
//!
//! - [`backoff`]: exponential backoff with none, full, equal and decorrelated
//!   jitter, over an injectable random source.
//! - [`hint`]: server hints (`Retry-After`, `RateLimit`, Genesys
//!   `inin-ratelimit-*`) over an injectable clock (formerly `retry_after`,
//!   a name still accepted).
//! - [`classify`]: which responses and errors are worth another attempt.
//! - [`body`]: replayable request bodies.
//! - [`transport`]: the [`Transport`](transport::Transport) every client
//!   sends through, the built-in hyper client, bounded body reads.
//! - [`error`]: the typed errors the crate creates.
//! - [`genesys`]: Genesys Cloud regions and a typed client (data actions,
//!   analytics jobs, entity listings, errors).
//! - [`cxone`]: NICE CXone discovery and a typed client (data-extraction
//!   jobs with re-runs, completed contacts, errors).
//! - [`jobs`]: the submit-then-poll runner both clients use.
//! - [`vendor`]: what the clients share, knowing no vendor: the
//!   [`VendorError`](vendor::VendorError) trait, retry rules by error code,
//!   business rules, body limits.
//!
//! Consumers of the layers' events and handles:
//!
//! - [`status`]: an operator's status page (JSON and a self-refreshing
//!   HTML page) of every layer's live state, as a tower service to mount.
//! - `metrics` (feature `metrics`): OpenTelemetry and the layers' own
//!   instruments through the `metrics` facade.
//!
//! ```
//! use std::time::Duration;
//! use tower::timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//! use tower_cx::audit::{AuditLayer, JsonLinesSink};
//! use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
//! use tower_cx::breaker::CircuitBreakerLayer;
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::retry::RetryLayer;
//!
//! # let client = tower::service_fn(|_req: http::Request<tower_cx::body::Body>| async {
//! #     Ok::<_, tower::BoxError>(http::Response::new(()))
//! # });
//! // In production: TokenCache::new(ClientCredentials::genesys(&region, id, secret)?)
//! let tokens = TokenCache::new(source_fn(|| async {
//!     Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600)))
//! }));
//! let client = ServiceBuilder::new()
//!     .layer(AuditLayer::new(JsonLinesSink::stdout()))
//!     .layer(RetryLayer::new().deadline(Duration::from_secs(30)).auto_idempotency_key(true))
//!     .layer(CircuitBreakerLayer::new())
//!     .layer(PriorityLimitLayer::new(16).pacing(300, Duration::from_secs(60)))
//!     .layer(BearerLayer::new(tokens))
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)))
//!     .service(client);
//! # let _ = client;
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
#![deny(clippy::fn_params_excessive_bools)]

pub mod audit;
pub mod auth;
pub mod backoff;
pub mod body;
pub mod breaker;
pub mod classify;
pub mod cxone;
pub mod dead_letter;
mod deadline;
pub mod error;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod genesys;
pub mod hint;
pub mod jobs;
#[cfg(feature = "metrics")]
pub mod metrics;

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
mod level;
#[cfg(feature = "mock")]
pub mod mock;
pub mod observe;
pub mod origin;
pub mod priority;
pub mod redact;
pub mod replay;
pub mod retry;
/// The former name of [`hint`], kept so that `tower_cx::retry_after::..`
/// paths written before the rename still compile.
pub use hint as retry_after;
pub mod share;
pub mod stack;
pub mod status;
pub mod transport;
pub mod vendor;
