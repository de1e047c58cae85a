//! The canonical stack, ready-made, and a [`ServiceBuilder`] extension for
//! composing the layers by hand.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use http::Request;
//! use tower::ServiceExt;
//! use tower_cx::body::Body;
//! use tower_cx::genesys::Region;
//! use tower_cx::stack::Stack;
//!
//! # async fn run() -> Result<(), tower_cx::error::BoxError> {
//! let client = Stack::genesys(&Region::EuWest1, "client-id", "client-secret")?
//!     .timeout(Duration::from_secs(10))
//!     .build();
//! let response = client
//!     .oneshot(Request::get("https://api.mypurecloud.ie/api/v2/users/me").body(Body::empty())?)
//!     .await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! The order, outermost first: Audit -> Retry -> Breaker -> PriorityLimit ->
//! Bearer -> Timeout (per attempt) -> hyper-util client (HTTPS with the `tls`
//! feature, plain HTTP for loopback). See `ARCHITECTURE.md` for why.
//!
//! The built-in client negotiates HTTP/2 by ALPN over TLS, falling back to
//! HTTP/1.1 when the server offers only that; plain `http://` is HTTP/1.1
//! unless [`Stack::http2_prior_knowledge`] is on.

use std::fmt;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::timeout::TimeoutLayer;
use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer, ServiceBuilder};

use crate::audit::{AuditLayer, AuditStats, NoopSink};
use crate::auth::{BearerLayer, ClientCredentials, Secret, TokenCache, TokenError};
use crate::body::Body;
use crate::breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use crate::error::{BoxError, ConfigError};
use crate::genesys::Region;
use crate::priority::{PriorityLimitHandle, PriorityLimitLayer};
use crate::retry::RetryLayer;

/// The service the stack builds: cloneable, `Send + Sync`, taking requests
/// with this crate's [`Body`] and returning hyper's response body.
pub type CxService = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

pub use crate::genesys::GENESYS_DEADLINE;

/// Builds the canonical stack over a hyper-util client, with per-vendor
/// defaults. Every layer can be replaced before [`build`](Self::build).
pub struct Stack {
    audit: AuditLayer,
    retry: RetryLayer,
    breaker: CircuitBreakerLayer,
    limiter: PriorityLimitLayer,
    bearer: Option<BearerLayer>,
    timeout: Duration,
    http2_prior_knowledge: bool,
}

impl Stack {
    /// A stack for any API, without authentication: stats-only audit, the
    /// default retry policy with automatic idempotency keys, the default
    /// breaker, 16 requests in flight, a 30 s timeout per attempt.
    pub fn new() -> Self {
        Self {
            audit: AuditLayer::new(NoopSink),
            retry: RetryLayer::new().auto_idempotency_key(true),
            breaker: CircuitBreakerLayer::new(),
            limiter: PriorityLimitLayer::new(16),
            bearer: None,
            timeout: Duration::from_secs(30),
            http2_prior_knowledge: false,
        }
    }

    /// The Genesys Cloud retry preset: [`Stack::new`]'s policy with a total
    /// deadline of [`GENESYS_DEADLINE`] (150 s), so that a `Retry-After` of
    /// 30 to 60 s (normal with per-minute windows) can be waited out; a
    /// hint over 180 s (a daily cap, as the official SDKs treat it) stays
    /// final. Change it and pass it to [`retry`](Self::retry):
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::stack::Stack;
    ///
    /// let retry = Stack::genesys_retry().deadline(Duration::from_secs(300));
    /// # let _ = retry;
    /// ```
    pub fn genesys_retry() -> RetryLayer {
        RetryLayer::new()
            .auto_idempotency_key(true)
            .deadline(GENESYS_DEADLINE)
            .max_server_hint(Duration::from_secs(180))
    }

    /// Genesys Cloud: client credentials against the region's login host,
    /// the token sent to the region's API origin only, the
    /// [`genesys_retry`](Self::genesys_retry) preset (150 s deadline), and
    /// pacing learned from the server ([`PriorityLimitLayer::learn_rate`]):
    /// 300 requests per 60 s (the default per-token API limit) until the
    /// first answer, then the organisation's own limit as its
    /// `inin-ratelimit-*` headers advertise it. The 300 is an initial rate,
    /// not a ceiling: Genesys sends its limit on every answer, and an
    /// organisation whose limit was raised should get all of it.
    pub fn genesys(
        region: &Region,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        let credentials = ClientCredentials::genesys(region, client_id, client_secret)?;
        let api = region.api_base();
        let bearer = BearerLayer::new(TokenCache::new(credentials))
            .allow_origin(&api)
            .map_err(|_| TokenError::invalid_url(&api))?;
        Ok(Self::new()
            .bearer_layer(bearer)
            .retry(Self::genesys_retry())
            .limiter(
                PriorityLimitLayer::new(16)
                    .learn_rate()
                    .initial_rate(300, Duration::from_secs(60)),
            ))
    }

    /// NICE CXone: the access-key flavour of client credentials against
    /// `token_url` (usually [`CXONE_TOKEN_URL`](crate::auth::CXONE_TOKEN_URL)).
    pub fn cxone(
        token_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        let credentials = ClientCredentials::cxone(
            token_url,
            client_id,
            client_secret,
            access_key_id,
            access_key_secret,
        )?;
        Ok(Self::new().bearer(TokenCache::new(credentials)))
    }

    /// The audit layer (default: stats only).
    pub fn audit(mut self, audit: AuditLayer) -> Self {
        self.audit = audit;
        self
    }

    /// The retry layer.
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// The circuit breaker.
    pub fn breaker(mut self, breaker: CircuitBreakerLayer) -> Self {
        self.breaker = breaker;
        self
    }

    /// The priority limiter.
    pub fn limiter(mut self, limiter: PriorityLimitLayer) -> Self {
        self.limiter = limiter;
        self
    }

    /// Authenticate with bearer tokens from `tokens`, sent to any origin
    /// (see [`bearer_layer`](Self::bearer_layer) to restrict them).
    pub fn bearer(mut self, tokens: TokenCache) -> Self {
        self.bearer = Some(BearerLayer::new(tokens));
        self
    }

    /// Authenticate with this bearer layer (e.g. one restricted to the API
    /// origin with [`BearerLayer::allow_origin`]).
    pub fn bearer_layer(mut self, bearer: BearerLayer) -> Self {
        self.bearer = Some(bearer);
        self
    }

    /// Send the token only to requests for `url`'s origin (repeat for
    /// several), e.g. the CXone API endpoint found by
    /// [`discover`](crate::cxone::discover): a request anywhere else goes out
    /// without it. Fails without a bearer layer, or for a URL that is not
    /// absolute.
    pub fn allow_origin(mut self, url: &str) -> Result<Self, ConfigError> {
        let bearer = self
            .bearer
            .take()
            .ok_or_else(|| ConfigError::new("allow_origin", "the stack has no bearer layer"))?;
        self.bearer = Some(bearer.allow_origin(url)?);
        Ok(self)
    }

    /// The timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Speak HTTP/2 with prior knowledge (h2c) to plain `http://` origins,
    /// for a server known to accept it: a sidecar, a loopback test server.
    /// Off by default, when plain HTTP is HTTP/1.1. `https://` is the same
    /// either way: the built-in client offers `h2` and `http/1.1` by ALPN
    /// and speaks whichever the server picks. Over HTTP/2, the requests to
    /// one origin share one connection, as concurrent streams.
    ///
    /// It applies to [`build`](Self::build)'s client only: a client given
    /// to [`build_with`](Self::build_with) is used as it is, and token
    /// requests go through the token source's own client
    /// ([`ClientCredentials::http_client`] to replace it).
    ///
    /// ```
    /// use tower_cx::stack::Stack;
    ///
    /// let client = Stack::new().http2_prior_knowledge(true).build();
    /// # drop(client);
    /// ```
    pub fn http2_prior_knowledge(mut self, on: bool) -> Self {
        self.http2_prior_knowledge = on;
        self
    }

    /// Handles on the shared state, to keep before building.
    pub fn handles(&self) -> StackHandles {
        StackHandles {
            stats: self.audit.stats_handle(),
            breaker: self.breaker.handle(),
            limiter: self.limiter.handle(),
            tokens: self.bearer.as_ref().map(|b| b.cache().clone()),
        }
    }

    /// The stack over the built-in hyper-util client: HTTPS with the `tls`
    /// feature, HTTP/2 or HTTP/1.1 by ALPN; plain HTTP/1.1, or HTTP/2 with
    /// [`http2_prior_knowledge`](Self::http2_prior_knowledge).
    pub fn build(self) -> CxService {
        let client =
            crate::transport::hyper_client().http2_prior_knowledge(self.http2_prior_knowledge);
        self.build_with(client)
    }

    /// The stack over `client`: any cloneable service that sends a request
    /// and returns a response with hyper's body.
    pub fn build_with<S>(self, client: S) -> CxService
    where
        S: tower::Service<Request<Body>, Response = Response<Incoming>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let lower = ServiceBuilder::new()
            .layer(TimeoutLayer::new(self.timeout))
            .service(client);
        // `Either`, not a box: no allocation per call or per clone
        let lower = match self.bearer {
            // the retry layer above sends a request once more after a
            // rejected token, from the copy it keeps anyway (`crate::replay`):
            // the bearer, told so once here, needs no copy and no
            // per-request mark
            Some(bearer) if self.retry.replays_rejected_token() => {
                Either::Left(bearer.replay_on_401(false).layer(lower))
            }
            Some(bearer) => Either::Left(bearer.layer(lower)),
            None => Either::Right(lower),
        };
        let stack = ServiceBuilder::new()
            .layer(self.audit)
            .layer(self.retry)
            .layer(self.breaker)
            .layer(self.limiter)
            .service(lower);
        BoxCloneSyncService::new(stack)
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("audit", &self.audit)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("limiter", &self.limiter)
            .field("bearer", &self.bearer)
            .field("timeout", &self.timeout)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .finish()
    }
}

/// Handles on a stack's shared state.
#[derive(Debug, Clone)]
pub struct StackHandles {
    /// The audit statistics.
    pub stats: AuditStats,
    /// The circuit breaker.
    pub breaker: CircuitBreakerHandle,
    /// The priority limiter.
    pub limiter: PriorityLimitHandle,
    /// The token cache, if the stack authenticates.
    pub tokens: Option<TokenCache>,
}

/// Adds the crate's layers to [`ServiceBuilder`], in the style of
/// tower-http's `ServiceBuilderExt`.
///
/// The retry layer is added with [`with_retry`](Self::with_retry): tower's
/// own `ServiceBuilder::retry` (a tower `Policy`) would win a method named
/// `retry`.
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_cx::audit::{AuditLayer, NoopSink};
/// use tower_cx::body::Body;
/// use tower_cx::breaker::CircuitBreakerLayer;
/// use tower_cx::priority::PriorityLimitLayer;
/// use tower_cx::retry::RetryLayer;
/// use tower_cx::stack::ServiceBuilderExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let counter = calls.clone();
/// let flaky = service_fn(move |_req: Request<Body>| {
///     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///     async move {
///         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
///         Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
///     }
/// });
/// let client = ServiceBuilder::new()
///     .audit(AuditLayer::new(NoopSink))
///     .with_retry(RetryLayer::new())
///     .circuit_breaker(CircuitBreakerLayer::new())
///     .priority_limit(PriorityLimitLayer::new(16))
///     .service(flaky);
/// let request = Request::get("http://127.0.0.1/x").body(Body::empty())?;
/// let response = client.oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "retried once");
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Add an [`AuditLayer`].
    fn audit(self, layer: AuditLayer) -> ServiceBuilder<Stacked<AuditLayer, L>>;
    /// Add a [`RetryLayer`] (not named `retry`: tower's
    /// `ServiceBuilder::retry` takes a tower `Policy` and wins that name).
    fn with_retry(self, layer: RetryLayer) -> ServiceBuilder<Stacked<RetryLayer, L>>;
    /// Add a [`CircuitBreakerLayer`].
    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stacked<CircuitBreakerLayer, L>>;
    /// Add a [`PriorityLimitLayer`].
    fn priority_limit(
        self,
        layer: PriorityLimitLayer,
    ) -> ServiceBuilder<Stacked<PriorityLimitLayer, L>>;
    /// Add a [`BearerLayer`] over `tokens`. Alone it replays a request
    /// after a 401 itself; under a [`with_retry`](Self::with_retry) layer the
    /// retry layer does, from the copy it keeps (one replay, one copy:
    /// [`crate::replay`]).
    fn bearer(self, tokens: TokenCache) -> ServiceBuilder<Stacked<BearerLayer, L>>;
}

/// A [`ServiceBuilder`]'s layers with `Outer` added on top of `Inner`.
pub type Stacked<Outer, Inner> = tower::layer::util::Stack<Outer, Inner>;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn audit(self, layer: AuditLayer) -> ServiceBuilder<Stacked<AuditLayer, L>> {
        self.layer(layer)
    }

    fn with_retry(self, layer: RetryLayer) -> ServiceBuilder<Stacked<RetryLayer, L>> {
        self.layer(layer)
    }

    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stacked<CircuitBreakerLayer, L>> {
        self.layer(layer)
    }

    fn priority_limit(
        self,
        layer: PriorityLimitLayer,
    ) -> ServiceBuilder<Stacked<PriorityLimitLayer, L>> {
        self.layer(layer)
    }

    fn bearer(self, tokens: TokenCache) -> ServiceBuilder<Stacked<BearerLayer, L>> {
        self.layer(BearerLayer::new(tokens))
    }
}
