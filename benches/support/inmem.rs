//! The in-memory fixtures shared by `benches/overhead.rs` and
//! `examples/profile_stack.rs` (included with `#[path]`): a ready upstream,
//! the request every call sends, a poll without an executor, a cached
//! token, and the canonical stack.

use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use tower::timeout::TimeoutLayer;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::body::{try_clone_request, Body};
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_http::auth::AddAuthorizationLayer;

/// Poll a future that is ready at once (every service here is), without an
/// executor in the measurement.
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the measured service is always ready"),
    }
}

/// The request every call sends.
pub fn request() -> Request<Body> {
    Request::get("https://api.mypurecloud.com/api/v2/users")
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap()
}

/// A ready upstream answering at once.
pub fn upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = Ready<Result<Response<()>, BoxError>>,
> + Clone {
    service_fn(|_req: Request<Body>| ready(Ok::<_, BoxError>(Response::new(()))))
}

/// A current-thread runtime with the time driver (the layers arm timers).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A token cache holding a day-long token already, fetched on a
/// multi-thread runtime kept for the rest of the process: as in an
/// application, its refresh timer then fires on time whatever the caller's
/// runtime does, so the bearer's hot path reads no clock (`tower_cx::auth`,
/// "How a token is checked"). Callers use the cache from any runtime.
pub fn cached_token() -> TokenCache {
    static TIMERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let timers = TIMERS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap()
    });
    let _guard = timers.enter();
    let cache = TokenCache::new(source_fn(|| async {
        Ok::<_, TokenError>(Token::new("bench-token", Duration::from_secs(86_400)))
    }));
    timers.block_on(cache.refresh()).unwrap();
    cache
}

/// The canonical stack (audit with a no-op sink, retry, breaker, limiter,
/// bearer with a cached token, and the per-attempt timeout unless
/// `timeout` is false) over [`upstream`], composed as
/// [`tower_cx::stack::Stack`] composes it.
pub fn canonical_stack(
    cache: TokenCache,
    timeout: bool,
) -> impl Service<Request<Body>, Response = Response<()>, Error = BoxError> {
    canonical_stack_with(AuditLayer::new(NoopSink), cache, timeout)
}

/// An audit layer with a no-op sink whose stats handle was taken: every
/// request then carries a context.
pub fn read_audit() -> AuditLayer {
    let audit = AuditLayer::new(NoopSink);
    drop(audit.stats_handle());
    audit
}

/// [`canonical_stack`] under `audit` (for example one whose stats handle
/// was taken, so that every request carries a context).
pub fn canonical_stack_with(
    audit: AuditLayer,
    cache: TokenCache,
    timeout: bool,
) -> impl Service<Request<Body>, Response = Response<()>, Error = BoxError> {
    ServiceBuilder::new()
        .layer(audit)
        .layer(RetryLayer::new())
        .layer(CircuitBreakerLayer::new())
        .layer(PriorityLimitLayer::new(16))
        // as `Stack` builds it: the retry layer above replays a rejected
        // token (`crate::replay`), so the bearer keeps no copy of its own
        .layer(BearerLayer::new(cache).replay_on_401(false))
        .option_layer(timeout.then(|| TimeoutLayer::new(Duration::from_secs(30))))
        .service(upstream())
}

/// tower's retry with the same job on the happy path: clone the request for
/// a replay, deposit in a `TpsBudget`, retry 5xx while the budget allows.
#[derive(Clone)]
pub struct PeerPolicy {
    budget: std::sync::Arc<TpsBudget>,
}

impl PeerPolicy {
    /// A policy over a default `TpsBudget`.
    pub fn new() -> Self {
        Self {
            budget: std::sync::Arc::new(TpsBudget::default()),
        }
    }
}

impl<ResB> tower::retry::Policy<Request<Body>, Response<ResB>, BoxError> for PeerPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<ResB>, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if response.status().is_server_error() && self.budget.withdraw() => {
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        self.budget.deposit();
        try_clone_request(req)
    }
}

/// The same job done with tower's and tower-http's built-ins (retry with a
/// `TpsBudget`, concurrency limit, static bearer, timeout) over
/// [`upstream`].
pub fn peer_stack() -> impl Service<Request<Body>, Response = Response<()>, Error = BoxError> {
    peer_layers(upstream(), 16)
}

/// The built-ins of [`peer_stack`], outermost first.
pub type PeerStack<S> = tower::retry::Retry<
    PeerPolicy,
    tower::limit::ConcurrencyLimit<tower_http::auth::AddAuthorization<tower::timeout::Timeout<S>>>,
>;

/// The built-ins of [`peer_stack`] over any `inner` service, `limit`
/// requests in flight.
pub fn peer_layers<S>(inner: S, limit: usize) -> PeerStack<S> {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(PeerPolicy::new()))
        .layer(tower::limit::ConcurrencyLimitLayer::new(limit))
        .layer(AddAuthorizationLayer::bearer("bench-token"))
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(inner)
}

/// A request tower-resilience's retry can clone (it asks for `Req: Clone`):
/// the buffered body makes the clone a [`try_clone_request`].
pub struct CloneableRequest(pub Request<Body>);

impl Clone for CloneableRequest {
    fn clone(&self) -> Self {
        Self(try_clone_request(&self.0).expect("the bench's bodies are buffered"))
    }
}

/// tower-resilience's retry doing the same job over [`upstream`]: 5xx
/// retried, up to 4 attempts, exponential backoff, a token-bucket budget.
pub fn resilience_retry() -> impl Service<Request<Body>, Response = Response<()>, Error = BoxError>
{
    use tower::ServiceExt as _;
    let budget = tower_resilience::retry::RetryBudgetBuilder::new()
        .token_bucket()
        .build()
        .expect("a valid budget");
    let retry =
        tower_resilience::retry::RetryLayer::<CloneableRequest, Response<()>, BoxError>::builder()
            .max_attempts(4)
            .exponential_backoff(Duration::from_millis(100))
            .retry_on_response(|response: &Response<()>| response.status().is_server_error())
            .budget(budget)
            .build();
    retry
        .layer(upstream().map_request(|request: CloneableRequest| request.0))
        .map_request(CloneableRequest)
}
