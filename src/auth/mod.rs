//! OAuth2 bearer tokens: sources, a shared cache that refreshes ahead of
//! expiry, and the [`BearerLayer`] that injects the token at dispatch time.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
//! use tower_cx::body::Body;
//! use tower_cx::error::BoxError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // In production: ClientCredentials::genesys(&Region::UsEast1, id, secret)?
//! let cache = TokenCache::new(source_fn(|| async {
//!     Ok::<_, TokenError>(Token::new("tok-1", Duration::from_secs(86_399)))
//! }));
//!
//! let api = service_fn(|req: Request<Body>| async move {
//!     let authorized = req.headers()["authorization"] == "Bearer tok-1";
//!     let status = if authorized { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
//!     Ok::<_, BoxError>(Response::builder().status(status).body(())?)
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(BearerLayer::new(cache.clone()))
//!     .service(api);
//! let response = client
//!     .oneshot(Request::get("https://api.mypurecloud.com/api/v2/users/me").body(Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(cache.status().refresh_count, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - The token is read when the request is dispatched, never before a queue
//!   wait. The `Authorization` value is marked sensitive.
//! - A `401` (with or without `WWW-Authenticate: Bearer error="invalid_token"`)
//!   drops the cached token only if it is the one this request carried (a
//!   newer token is kept), tells the source which token was refused
//!   ([`TokenSource::invalidate`]: a shared store forgets exactly that
//!   token), fetches a fresh one (single flight), and replays the request
//!   once if its body is replayable; otherwise the 401 is returned.
//!   A `403` never triggers a refresh.
//! - Callers cannot drive the token endpoint: after a 401 has dropped a
//!   token, further 401s within the [rejection
//!   cooldown](TokenCacheBuilder::rejection_cooldown) (30 s) keep the token
//!   and are returned as they are, neither refreshed nor replayed.
//! - Under a [`RetryLayer`](crate::retry::RetryLayer), the retry layer marks
//!   each request ([`replay::mark`](crate::replay::mark)): the bearer
//!   then keeps no copy of its own, and returns the 401 marked
//!   [`TokenRejected`] for the retry layer to send once more from the copy it
//!   keeps anyway. One replay, and one copy wherever the mark can travel
//!   (the request has a context or extensions) or
//!   [`Stack`](crate::stack::Stack) composes the two (the protocol is
//!   documented in [`crate::replay`]).
//! - Requests to `http://` hosts other than loopback fail with
//!   [`InsecureUrl`](crate::error::InsecureUrl): credentials never travel in
//!   clear text.
//! - With [`allow_origin`](BearerLayer::allow_origin), the token is attached
//!   only to requests whose origin (scheme, host, port) is one of the
//!   allowed ones; a request to any other origin (a presigned download URL,
//!   a `nextUri` pointing elsewhere) passes through without a token and
//!   without 401 handling. A relative URI (`/path`) names no origin, so
//!   with origins restricted it passes through without a token too.
//!   [`Stack::genesys`](crate::stack::Stack::genesys) allows the region's
//!   API origin only. Without `allow_origin`, every origin, and every
//!   relative URI, gets the token. This crate never follows redirects, so a
//!   token is never carried to another host by one.
//! - See [`TokenCache`] for refresh-ahead, single flight and stale-token rules,
//!   and [`ClientCredentials`] for the Genesys Cloud and NICE CXone flavours.
//!
//! # How a token is checked
//!
//! An expired token is never sent: expiry is measured on the local
//! monotonic clock from the token's receipt.
//!
//! - A token fetched by a refresh that ran on a multi-thread runtime is
//!   vouched for until its refresh point by one watcher thread per process
//!   (a plain thread on the real clock, which wakes on time whatever the
//!   runtimes do). Until then the token is known to be valid and not yet
//!   due, and the request path reads no clock; from then on it checks the
//!   clock again. The thread starts with the first such token.
//! - Any other token is checked against Tokio's clock on every request: one
//!   fetched on a current-thread runtime (whose clock a test may pause, so
//!   a paused clock counts), and one with less than 5 s between its refresh
//!   point and its expiry
//!   ([`refresh_ahead`](TokenCacheBuilder::refresh_ahead)).
//! - A token fetched on a multi-thread runtime is judged on the real clock
//!   until its refresh point, even when a request is sent from a
//!   current-thread runtime whose clock is paused.

mod builder;
mod cache;
mod future;
mod layer;
mod refresh;
mod scrub;
mod service;
mod source;
mod token;
mod vouch;

pub use crate::observe::AuthEvent;
pub use crate::replay::TokenRejected;
pub use builder::TokenCacheBuilder;
pub use cache::{TokenCache, TokenStatus};
pub use future::ResponseFuture;
pub use layer::BearerLayer;
#[cfg(feature = "redis")]
pub(crate) use scrub::url_without_secrets;
pub use service::Bearer;
pub use source::{
    box_client, source_fn, ClientAuth, ClientCredentials, SourceFn, TokenFuture, TokenHttpClient,
    TokenSource, CXONE_TOKEN_URL,
};
#[cfg(feature = "internals")]
pub(crate) use token::parse_token_response;
pub use token::{LifetimeNote, LifetimePolicy, Secret, Token, TokenError};
