//! A priority limiter per key: per route group, per client, per user, as
//! vendors layer their limits. One layer serves many keys, each with its
//! own concurrency, queue, rate gate and pacing, made on first use.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_cx::body::Body;
//! use tower_cx::error::BoxError;
//! use tower_cx::priority::keyed::KeyedLimitLayer;
//! use tower_cx::priority::PriorityLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // one limiter per route group: analytics at 100 a minute, the rest at 300
//! let layer = KeyedLimitLayer::new(
//!     |req: &Request<Body>| {
//!         let analytics = req.uri().path().starts_with("/api/v2/analytics/");
//!         Some(if analytics { "analytics" } else { "default" })
//!     },
//!     |group: &&str| {
//!         let per_minute = if *group == "analytics" { 100 } else { 300 };
//!         PriorityLimitLayer::new(16).pacing(per_minute, Duration::from_secs(60))
//!     },
//! )
//! .max_keys(100)
//! .idle_timeout(Duration::from_secs(300));
//! let keys = layer.handle();
//! let api = layer.layer(service_fn(|_req: Request<Body>| async {
//!     Ok::<_, BoxError>(Response::new(()))
//! }));
//!
//! let query = Request::post("/api/v2/analytics/conversations/details/query").body(Body::empty())?;
//! assert_eq!(api.clone().oneshot(query).await?.status(), StatusCode::OK);
//! assert_eq!(keys.keys(), vec!["analytics"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Rules
//!
//! - The key function reads the request (its method and path for a route
//!   group, or an extension the caller set for a client or a user). `None`
//!   sends the request on unlimited by this layer.
//! - A key's limiter is made by the factory the first time the key is
//!   seen (the factory runs outside the layer's lock, so it may be slow or
//!   read the layer's handle; when two first requests of a key race, it may
//!   run twice and the first limiter stored serves both), and serves every
//!   request of the key from then on, in every
//!   clone of the layer and of its services: everything
//!   [`PriorityLimitLayer`](crate::priority::PriorityLimitLayer) does
//!   (priority queue, aging, a rate gate closed by the key's own `429`s
//!   only, pacing, learned pacing) holds per key.
//! - Memory is bounded. A key is idle when nothing is in flight or queued
//!   for it, its gate is open and its pacing schedule is spent (so a new
//!   limiter for it would pace the same). An idle key is dropped after
//!   [`idle_timeout`](KeyedLimitLayer::idle_timeout), and at most
//!   [`max_keys`](KeyedLimitLayer::max_keys) keys are kept: a new key takes
//!   the place of the least recently used idle key, and when no key is idle
//!   the request fails at once with
//!   [`Overloaded`](crate::error::Overloaded), reason
//!   [`TooManyKeys`](crate::error::OverloadReason::TooManyKeys) (not sent;
//!   the retry layer may try it again later).
//! - Layered limits: [`within`](KeyedLimitLayer::within) makes every key
//!   also take a slot of one shared [`Pacer`](crate::priority::Pacer) (the
//!   client-wide limit), at the instant it takes its own, so that neither
//!   limit is overrun. (Stacked over a separate client-wide limiter
//!   instead, a key's slot is taken when its request enters the client
//!   limiter's queue, not when it is sent.)
//! - A request's [`Cost`](crate::priority::Cost) extension makes it take
//!   that many slots of its key's built-in pacing, and as many of the
//!   shared pacer (one reserved, the rest
//!   [charged](crate::priority::Pacer::charge) when it goes).
//!
//! # Genesys Cloud: per route and per client
//!
//! Genesys limits an OAuth client to 300 requests a minute (by default),
//! and some resources further, such as the analytics queries. With one
//! token per client, the client limit is shared by every route group, and
//! each group has its own limit inside it:
//!
//! ```
//! use std::time::Duration;
//!
//! use http::Request;
//! use tower_cx::body::Body;
//! use tower_cx::priority::keyed::KeyedLimitLayer;
//! use tower_cx::priority::{Cost, LocalPacer, PriorityLimitLayer};
//!
//! let minute = Duration::from_secs(60);
//! let limits = KeyedLimitLayer::new(
//!     |req: &Request<Body>| {
//!         let analytics = req.uri().path().starts_with("/api/v2/analytics/");
//!         Some(if analytics { "analytics" } else { "other" })
//!     },
//!     move |group: &&str| match *group {
//!         // a window of 100 units a minute: a query marked `Cost` 2
//!         // takes two of them
//!         "analytics" => PriorityLimitLayer::new(4).pacing_window(100, minute),
//!         _ => PriorityLimitLayer::new(16),
//!     },
//! )
//! // the client's 300 a minute over every group
//! .within(LocalPacer::new(300, minute));
//!
//! let mut query = Request::post("/api/v2/analytics/conversations/details/query")
//!     .body(Body::empty())
//!     .unwrap();
//! query.extensions_mut().insert(Cost::new(2).unwrap());
//! # let _ = (limits, query);
//! ```
//!
//! Put such a layer where the stack's limiter stands (inside the retry
//! layer, outside the bearer), in place of a `Stack::genesys` stack's
//! single limiter; with a fleet, give `within` the fleet's Redis pacer.
//!
//! The layer needs a Tokio runtime with the time driver, as the limiter
//! does.

mod future;
mod handle;
mod layer;
mod registry;
mod service;

pub use future::ResponseFuture;
pub use handle::KeyedLimitHandle;
pub use layer::{KeyedLimitLayer, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_KEYS};
pub use service::KeyedLimit;
