//! A priority concurrency limit with a bounded queue and one shared rate
//! gate.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_cx::body::Body;
//! use tower_cx::error::BoxError;
//! use tower_cx::priority::{Priority, PriorityLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = PriorityLimitLayer::new(16)
//!     .max_queue(1_000)
//!     .max_queue_wait(Duration::from_secs(30))
//!     .pacing(300, Duration::from_secs(60)); // Genesys: 300 requests a minute
//! let handle = layer.handle();
//! let api = layer.layer(service_fn(|_req: Request<Body>| async {
//!     Ok::<_, BoxError>(Response::new(()))
//! }));
//!
//! let mut urgent = Request::new(Body::empty());
//! urgent.extensions_mut().insert(Priority::High);
//! api.oneshot(urgent).await?;
//! assert_eq!(handle.status().available, 16);
//! # Ok(())
//! # }
//! ```
//!
//! # Rules
//!
//! - Each request's [`Priority`] comes from its extensions (default
//!   `Normal`); [`PriorityFromHeaderLayer`] sets it from a header for gateways.
//! - At most N requests are in flight across all clones. Waiters are served
//!   by priority, first come first served within a priority; with aging, a
//!   request is promoted one level per step waited, so `Low` never starves.
//!   With [`adaptive_lifo`](PriorityLimitLayer::adaptive_lifo), a priority
//!   whose queue has stood for a while (its oldest waiter waited that long)
//!   serves its newest waiter first, so that under sustained overload most
//!   callers wait briefly instead of every caller waiting for the whole
//!   backlog.
//! - The queue is bounded. When it is full, a new request evicts the newest
//!   waiter of a lower priority (which fails with
//!   [`Overloaded`](crate::error::Overloaded), reason `Evicted`); if there is
//!   none, the new request fails at once (`QueueFull`). A maximum queue wait
//!   sheds requests that waited too long (`QueueTimeout`).
//! - Rate gate: a response carrying a server hint (`Retry-After` on a `429`
//!   or a `503`, `RateLimit` with `r=0` or Genesys `inin-ratelimit-*` at its
//!   limit on any status) closes the gate for every request until the hint
//!   passes; nothing is dispatched meanwhile, and when it reopens waiters go
//!   in priority order. A `Retry-After` on another status (a `202` saying
//!   when to poll a job, a redirect) is about that resource, not the client,
//!   and closes nothing.
//!   A hint longer than [`max_gate`](PriorityLimitLayer::max_gate) (180 s by
//!   default: a daily cap, not pacing) does not close the gate.
//! - Quota exhausted: such a hint (a daily cap) puts the limiter in the
//!   exhausted state until the hint's time. Every queued request and every
//!   new one fails at once with
//!   [`QuotaExhausted`](crate::error::QuotaExhausted) (`until`,
//!   `retry_after()`), nothing is sent upstream, and the retry layer does
//!   not retry it; a request already sent finishes. With a
//!   [`PauseShare`](crate::share::PauseShare) every limiter sharing the
//!   gate (the whole fleet with Redis) enters the state until the same
//!   time. [`LimiterStatus::quota_exhausted_for`] shows it.
//! - Quota reserve ([`quota_reserve`](PriorityLimitLayer::quota_reserve)):
//!   as the remaining quota the server advertises falls to the low
//!   reserve, low-priority requests are shed
//!   ([`Overloaded`](crate::error::Overloaded), reason
//!   [`QuotaReserve`](crate::error::OverloadReason::QuotaReserve)), queued
//!   ones included; at the normal reserve, normal ones too. High is never
//!   shed by the reserve.
//! - Pacing (optional) keeps dispatches under a known vendor limit: evenly
//!   spaced ([`pacing`](PriorityLimitLayer::pacing)), or as a sliding window
//!   ([`pacing_window`](PriorityLimitLayer::pacing_window): at most N in any
//!   period, a whole allowance at once, never over a fixed window of the
//!   vendor's whatever its alignment). A [`Pacer`] shares one rate between
//!   limiters (or, with the `redis` feature, a fleet of processes), and a
//!   [`PauseShare`](crate::share::PauseShare) spreads gate closures between
//!   them.
//! - Learned pacing ([`learn_rate`](PriorityLimitLayer::learn_rate)) needs
//!   no rate: it paces to the quota the server advertises, or adapts to its
//!   `429`s; a configured rate is then the ceiling.
//!   [`PriorityLimitHandle::pacing`] shows the rate in force and where it
//!   comes from.
//! - Whatever paces (a configured or learned rate, or a shared pacer),
//!   paced requests wait in the queue and each slot goes to the best waiter
//!   by priority (with aging) when it comes due; when the gate reopens, the
//!   waiters go out at the rate in force (one slot at a time with smooth
//!   pacing and no burst), best first, not all at once. A shared pacer also
//!   keeps its near future for higher priorities ([`LocalPacer::horizon`]),
//!   so that a high priority request of one limiter does not wait behind
//!   the low priority backlog of the others.
//! - The queue order holds among waiters. A request arriving at the
//!   very instant a permit frees up, before it saw the queue, may take that
//!   permit ahead of a waiter (who then gets the next one): the price of a
//!   lock-free fast path.
//! - A permit is released when the response arrives or the future is dropped,
//!   at any point; a dropped waiter leaves the queue.
//!
//! The layer needs a Tokio runtime with the time driver: it arms a timer to
//! dispatch when the gate reopens or pacing allows.

mod admit;
mod arena;
mod config;
mod cost;
mod exhaust;
mod future;
mod gate;
mod handle;
pub mod keyed;
mod layer;
mod limiter;
mod pacing;
mod queue;
mod reserve;
mod service;
mod shared;

use std::task::{Context, Poll};

use http::{HeaderName, Request};
use tower::{Layer, Service};

pub use crate::level::{Priority, UnknownPriority};
pub use crate::observe::LimiterEvent;
pub use crate::observe::PacingSource;
pub use cost::Cost;
pub use future::ResponseFuture;
pub use handle::{LimiterStatus, PacingStatus, PriorityLimitHandle};
pub use layer::PriorityLimitLayer;
pub use service::PriorityLimit;
pub use shared::{LocalPacer, Pacer, PacerFuture, Reservation};

/// Sets a request's [`Priority`] extension from a header (e.g. `x-priority:
/// high`), for gateways. A missing or unknown value leaves the request as it
/// is (`Normal` unless something set it).
#[derive(Debug, Clone)]
pub struct PriorityFromHeaderLayer {
    header: HeaderName,
}

impl PriorityFromHeaderLayer {
    /// Read the priority from `header`.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl<S> Layer<S> for PriorityFromHeaderLayer {
    type Service = PriorityFromHeader<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityFromHeader {
            inner,
            header: self.header.clone(),
        }
    }
}

/// The service made by [`PriorityFromHeaderLayer`].
#[derive(Debug, Clone)]
pub struct PriorityFromHeader<S> {
    inner: S,
    header: HeaderName,
}

impl<S, B> Service<Request<B>> for PriorityFromHeader<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let priority = request
            .headers()
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Priority>().ok());
        if let Some(priority) = priority {
            request.extensions_mut().insert(priority);
        }
        self.inner.call(request)
    }
}
