//! The OAuth2 bearer layer and token cache against a token endpoint: in
//! process for exact paused-time tests, and a real hyper server on 127.0.0.1
//! for the wire format.

#[path = "support/events.rs"]
mod events;
#[path = "support/loopback.rs"]
mod loopback;
#[path = "support/upstream.rs"]
mod upstream;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::{advance, Instant};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_cx::auth::{
    AuthEvent, Bearer, BearerLayer, ClientCredentials, LifetimeNote, TokenCache, TokenError,
    TokenRejected,
};
use tower_cx::backoff::{Backoff, Jitter, SharedRng};
use tower_cx::body::Body;
use tower_cx::error::{BoxError, InsecureUrl};
use tower_cx::genesys::Region;
use tower_cx::retry::{DelaySource, RetryBudget, RetryEvent, RetryEventKind, RetryLayer};

use events::EventCapture;
use upstream::{status, Scripted};

// ---------------------------------------------------------------- token endpoint

/// One scripted answer of the token endpoint.
#[derive(Clone)]
enum TokenAnswer {
    /// Issue `tok-N`, with this raw `expires_in` JSON (None: field absent).
    Issue(Option<&'static str>),
    /// Answer with this status, content type and body.
    Fail(
        u16,
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    ),
}

#[derive(Default)]
struct EndpointState {
    requests: AtomicU64,
    issued: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    script: Mutex<VecDeque<TokenAnswer>>,
    down: AtomicBool,
    /// `(authorization header, form body)` of each request.
    seen: EventCapture<(Option<String>, String)>,
}

/// A token endpoint. Answers after `latency` (paused-time friendly), from
/// the script, else issues tokens of `expires_in` 3600; `down` answers an
/// HTML 503.
#[derive(Clone)]
struct TokenEndpoint {
    state: Arc<EndpointState>,
    latency: Duration,
    expires_in: &'static str,
}

impl TokenEndpoint {
    fn new() -> Self {
        Self {
            state: Arc::default(),
            latency: Duration::from_millis(100),
            expires_in: "3600",
        }
    }

    fn expires_in(mut self, value: &'static str) -> Self {
        self.expires_in = value;
        self
    }

    fn script(&self, answers: Vec<TokenAnswer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn answer(&self, auth: Option<String>, form: String) -> Response<Full<Bytes>> {
        self.state.seen.push((auth, form));
        let down = self.state.down.load(Ordering::SeqCst);
        let scripted = self.state.script.lock().unwrap().pop_front();
        let answer = match (down, scripted) {
            (true, _) => TokenAnswer::Fail(
                503,
                "text/html",
                "<html><body>Service Unavailable</body></html>",
                vec![],
            ),
            (false, Some(answer)) => answer,
            (false, None) => TokenAnswer::Issue(Some(self.expires_in)),
        };
        match answer {
            TokenAnswer::Issue(expires_in) => {
                let n = self.state.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let lifetime = expires_in
                    .map(|v| format!(",\"expires_in\":{v}"))
                    .unwrap_or_default();
                let body =
                    format!("{{\"access_token\":\"tok-{n}\",\"token_type\":\"bearer\"{lifetime}}}");
                json(200, body)
            }
            TokenAnswer::Fail(status, content_type, body, headers) => {
                let mut response = Response::builder()
                    .status(status)
                    .header("content-type", content_type);
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                response
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap()
            }
        }
    }

    /// Client credentials that reach this endpoint in process.
    fn credentials(&self) -> ClientCredentials {
        ClientCredentials::new("http://127.0.0.1/oauth/token", "client-id", "s3cr3t")
            .unwrap()
            .http_client(self.clone())
            .retry(RetryLayer::new().max_attempts(1))
    }
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

impl Service<Request<Body>> for TokenEndpoint {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let state = &this.state;
            state.requests.fetch_add(1, Ordering::SeqCst);
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            let form = String::from_utf8(
                request
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap();
            tokio::time::sleep(this.latency).await;
            let response = this.answer(auth, form);
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------- API

/// An API that accepts `Bearer tok-N` unless revoked, answers after
/// `latency`, and records the token of every request (which must be
/// marked sensitive).
#[derive(Clone)]
struct Api {
    upstream: Scripted,
    revoked: Arc<Mutex<HashSet<String>>>,
}

impl Api {
    fn new() -> Self {
        Self::build(Duration::ZERO, None)
    }

    /// Answers after `latency`.
    fn slow(latency: Duration) -> Self {
        Self::build(latency, None)
    }

    /// Answers `code` to every request, whatever its token.
    fn always(code: u16) -> Self {
        Self::build(Duration::ZERO, Some(code))
    }

    fn build(latency: Duration, always: Option<u16>) -> Self {
        let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let upstream = Scripted::answering({
            let revoked = revoked.clone();
            move |request| {
                let value = request.headers.get("authorization");
                assert!(
                    value.is_some_and(|v| v.is_sensitive()),
                    "Authorization must be marked sensitive"
                );
                let token = request.header("authorization").unwrap();
                let code = match always {
                    Some(code) => code,
                    None if revoked.lock().unwrap().contains(token) => 401,
                    None => 200,
                };
                status(code).after(latency)
            }
        });
        Self { upstream, revoked }
    }

    /// The service to put under the bearer.
    fn service(&self) -> Scripted {
        self.upstream.clone()
    }

    fn revoke(&self, token: &str) {
        self.revoked
            .lock()
            .unwrap()
            .insert(format!("Bearer {token}"));
    }

    fn tokens(&self) -> Vec<String> {
        let tokens = self.upstream.header_values("authorization").into_iter();
        tokens.map(Option::unwrap_or_default).collect()
    }
}

type Events = EventCapture<AuthEvent>;

fn cache(endpoint: &TokenEndpoint, events: &Events) -> TokenCache {
    TokenCache::builder(endpoint.credentials())
        .refresh_backoff(Backoff::exponential(Duration::from_secs(1)).jitter(Jitter::None))
        .rng(SharedRng::seeded(1))
        .on_event(events.recorder())
        .build()
}

fn get() -> Request<Body> {
    Request::get("https://api.mypurecloud.com/api/v2/users/me")
        .body(Body::empty())
        .unwrap()
}

fn post() -> Request<Body> {
    Request::post("https://api.mypurecloud.com/api/v2/integrations/actions/a/execute")
        .body(Body::from("{}"))
        .unwrap()
}

async fn call(
    service: &Bearer<Scripted>,
    request: Request<Body>,
) -> Result<Response<()>, BoxError> {
    service.clone().oneshot(request).await
}

/// Let spawned tasks (the background refresh) run to their next await.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

// ---------------------------------------------------------------- refresh ahead

#[tokio::test(start_paused = true)]
async fn refresh_ahead_starts_at_the_exact_instant_without_delaying_callers() {
    let endpoint = TokenEndpoint::new(); // expires_in 3600, latency 100 ms
    let events = Events::default();
    let cache = cache(&endpoint, &events);
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());

    call(&service, get()).await.unwrap();
    assert_eq!(endpoint.requests(), 1);
    let received = Instant::now(); // token received at 100 ms
                                   // refresh ahead = max(60 s, 10 % of 3600 s) = 360 s before expiry
    let status = cache.status();
    assert_eq!(status.expires_at, Some(received + secs(3600)));
    assert_eq!(status.refresh_at, Some(received + secs(3240)));

    tokio::time::sleep_until(received + secs(3240) - Duration::from_millis(1)).await;
    call(&service, get()).await.unwrap();
    settle().await;
    assert_eq!(endpoint.requests(), 1, "not due yet");

    tokio::time::sleep_until(received + secs(3240)).await;
    let before = Instant::now();
    call(&service, get()).await.unwrap();
    assert_eq!(
        Instant::now(),
        before,
        "the caller did not wait for the refresh"
    );
    settle().await;
    assert_eq!(endpoint.requests(), 1 + 1, "one background refresh");
    assert_eq!(api.tokens().last().unwrap(), "Bearer tok-1");

    advance(Duration::from_millis(100)).await; // the refresh's latency
    settle().await;
    call(&service, get()).await.unwrap();
    assert_eq!(api.tokens().last().unwrap(), "Bearer tok-2");
    assert_eq!(cache.status().refresh_count, 2);
    assert_eq!(endpoint.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lifetimes_refresh_sixty_seconds_ahead() {
    let endpoint = TokenEndpoint::new().expires_in("300");
    let cache = cache(&endpoint, &Events::default());
    cache.refresh().await.unwrap();
    let status = cache.status();
    // max(60 s, 30 s) = 60 s ahead
    assert_eq!(
        status.refresh_at.unwrap(),
        status.expires_at.unwrap() - secs(60)
    );
}

// ---------------------------------------------------------------- single flight

#[tokio::test(start_paused = true)]
async fn ten_thousand_callers_at_expiry_make_exactly_one_token_request() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    call(&service, get()).await.unwrap();
    assert_eq!(endpoint.requests(), 1);

    advance(secs(3600)).await; // expired, no refresh ran in between
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(get()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        endpoint.requests(),
        2,
        "exactly one token request for 10,000 callers"
    );
    assert_eq!(endpoint.state.max_in_flight.load(Ordering::SeqCst), 1);
    let tokens = api.tokens();
    assert_eq!(tokens.len(), 10_001);
    assert!(tokens[1..].iter().all(|t| t == "Bearer tok-2"));
}

// ---------------------------------------------------------------- refresh failures

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_keeps_serving_the_valid_token_and_recovers() {
    let endpoint = TokenEndpoint::new();
    let events = Events::default();
    let cache = cache(&endpoint, &events);
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    call(&service, get()).await.unwrap();
    let received = Instant::now();

    endpoint.set_down(true);
    tokio::time::sleep_until(received + secs(3240)).await;
    // due: a background refresh starts and fails; callers keep tok-1
    for _ in 0..3 {
        let response = call(&service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        advance(Duration::from_millis(100)).await;
        settle().await;
    }
    assert!(api.tokens().iter().all(|t| t == "Bearer tok-1"));
    let failures: Vec<_> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            AuthEvent::RefreshFailed {
                error,
                token_still_valid,
                retry_in,
            } => Some((error.to_string(), *token_still_valid, *retry_in)),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].0.contains("503"), "{}", failures[0].0);
    assert!(failures[0].1);
    assert_eq!(
        failures[0].2,
        Some(secs(1)),
        "backoff 1 s, then 2 s, 4 s..."
    );

    // the endpoint comes back; the retrying background refresh picks it up
    endpoint.set_down(false);
    advance(secs(3)).await; // retries at +1 s (fails) ... +2 s more succeeds
    settle().await;
    advance(Duration::from_millis(100)).await;
    settle().await;
    call(&service, get()).await.unwrap();
    assert_eq!(api.tokens().last().unwrap(), "Bearer tok-2");
    assert_eq!(cache.status().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn expiry_while_the_endpoint_is_down_gives_a_typed_error_then_recovers() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    call(&service, get()).await.unwrap();

    endpoint.set_down(true);
    advance(secs(3601)).await; // expired
    let err = call(&service, get()).await.unwrap_err();
    let err = err
        .downcast_ref::<TokenError>()
        .expect("a typed token error");
    match err {
        TokenError::Unavailable { cause } => match cause.as_ref() {
            TokenError::UnexpectedResponse {
                status,
                content_type,
                ..
            } => {
                assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(content_type.as_deref(), Some("text/html"));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let requests = endpoint.requests();
    // within the refresh backoff, callers fail fast without new token requests
    assert!(call(&service, get()).await.is_err());
    assert_eq!(endpoint.requests(), requests);
    assert_eq!(api.tokens().len(), 1, "no request went out without a token");

    endpoint.set_down(false);
    advance(secs(1)).await; // past the backoff
    let response = call(&service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.tokens().last().unwrap(), "Bearer tok-2");
}

/// A bearer service called again and again (not cloned per request, as
/// `call` does) follows every change of its cache at once.
#[tokio::test(start_paused = true)]
async fn a_bearer_called_again_and_again_sends_the_caches_current_token() {
    let endpoint = TokenEndpoint::new(); // expires_in 3600
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let mut service = BearerLayer::new(cache.clone()).layer(api.service());
    let send =
        async |service: &mut Bearer<Scripted>| service.ready().await.unwrap().call(get()).await;

    send(&mut service).await.unwrap();
    send(&mut service).await.unwrap();
    // a refresh forced through another handle: the next request has it
    cache.refresh().await.unwrap();
    send(&mut service).await.unwrap();
    assert_eq!(
        api.tokens(),
        ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    );

    // a 401 to another bearer on the same cache (which does not replay)
    // drops tok-2: this service never sends it again
    let other = BearerLayer::new(cache.clone())
        .replay_on_401(false)
        .layer(api.service());
    api.revoke("tok-2");
    let refused = call(&other, get()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    send(&mut service).await.unwrap();
    cache.refresh().await.unwrap();
    send(&mut service).await.unwrap();
    assert_eq!(
        api.tokens()[3..],
        ["Bearer tok-2", "Bearer tok-3", "Bearer tok-4"]
    );

    // expired while the endpoint is down: a typed error, not the old token
    endpoint.set_down(true);
    advance(secs(3601)).await;
    let err = send(&mut service).await.unwrap_err();
    assert!(err.downcast_ref::<TokenError>().is_some(), "{err}");
    assert_eq!(api.tokens().len(), 6, "nothing sent with an expired token");
}

// ---------------------------------------------------------------- 401 and 403

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_401s_make_one_refresh_and_each_request_is_replayed_once() {
    let endpoint = TokenEndpoint::new();
    let events = Events::default();
    let cache = cache(&endpoint, &events);
    let api = Api::slow(Duration::from_millis(50));
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    cache.refresh().await.unwrap();
    api.revoke("tok-1");

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(get()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(endpoint.requests(), 2, "one refresh for 100 401s");
    let tokens = api.tokens();
    assert_eq!(tokens.len(), 200, "each request sent twice, no more");
    assert_eq!(tokens.iter().filter(|t| *t == "Bearer tok-1").count(), 100);
    assert_eq!(tokens.iter().filter(|t| *t == "Bearer tok-2").count(), 100);
    let events = events.all();
    let invalidated = events
        .iter()
        .filter(|e| matches!(e, AuthEvent::TokenInvalidated { .. }))
        .count();
    let replayed = events
        .iter()
        .filter(|e| matches!(e, AuthEvent::RequestReplayed))
        .count();
    assert_eq!(invalidated, 1);
    assert_eq!(replayed, 100);
}

#[tokio::test(start_paused = true)]
async fn a_late_401_does_not_throw_away_a_newer_token() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::slow(secs(10));
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    cache.refresh().await.unwrap();
    api.revoke("tok-1");

    let slow = tokio::spawn({
        let service = service.clone();
        async move { service.oneshot(get()).await }
    });
    settle().await;
    cache.refresh().await.unwrap(); // tok-2 arrives while the request is out
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(
        endpoint.requests(),
        2,
        "tok-2 was kept, not refreshed again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_401_is_returned_not_replayed_again() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    cache.refresh().await.unwrap();
    api.revoke("tok-1");
    api.revoke("tok-2");
    let response = call(&service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test(start_paused = true)]
async fn callers_of_an_always_401_path_cannot_drive_the_token_endpoint() {
    let endpoint = TokenEndpoint::new();
    let events = Events::default();
    let cache = cache(&endpoint, &events);
    let api = Api::always(401);
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    cache.refresh().await.unwrap();
    // 20 requests: the first 401 drops tok-1 and is replayed with tok-2;
    // every later 401 falls in the 30 s cooldown and is returned as it is
    for _ in 0..20 {
        let response = call(&service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(endpoint.requests(), 2, "tok-1 and one refresh");
    assert_eq!(api.tokens().len(), 21, "one replay, no more");
    let deferred = events
        .all()
        .iter()
        .filter(|e| matches!(e, AuthEvent::RejectionDeferred { .. }))
        .count();
    assert_eq!(deferred, 19);
    // 4,000 more over ten minutes: one token request per cooldown (the
    // first batch still falls in the first cooldown)
    for _ in 0..20 {
        for _ in 0..200 {
            call(&service, get()).await.unwrap();
        }
        advance(secs(30)).await;
    }
    assert_eq!(endpoint.requests(), 2 + 19);
}

#[tokio::test(start_paused = true)]
async fn under_a_retry_layer_an_always_401_path_cannot_drive_the_token_endpoint() {
    let t = RetryOverBearer::new(RetryLayer::new(), Duration::ZERO).await;
    for n in 2..=20 {
        t.api.revoke(&format!("tok-{n}"));
    }
    for _ in 0..20 {
        assert_eq!(t.send(get()).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(t.endpoint.requests(), 2);
    assert_eq!(t.token_replays(), 1);
}

#[tokio::test(start_paused = true)]
async fn new_tokens_leave_no_timer_task_behind() {
    let endpoint = TokenEndpoint::new();
    let cache = TokenCache::builder(endpoint.credentials())
        .rejection_cooldown(Duration::ZERO)
        .build();
    cache.refresh().await.unwrap();
    settle().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let alive = metrics.num_alive_tasks();
    for _ in 0..50 {
        cache.refresh().await.unwrap();
    }
    settle().await;
    assert_eq!(endpoint.requests(), 51);
    assert_eq!(metrics.num_alive_tasks(), alive, "one timer, not 51");
    drop(cache);
    settle().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        alive - 1,
        "and none once dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn forbidden_never_triggers_a_refresh() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::always(403);
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    for _ in 0..5 {
        let response = call(&service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(endpoint.requests(), 1);
    assert_eq!(api.tokens().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_a_streaming_body_is_returned_and_the_token_dropped() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    cache.refresh().await.unwrap();
    api.revoke("tok-1");
    let body = Body::from_stream(Full::new(Bytes::from_static(b"{}")));
    let request = Request::post("https://api.mypurecloud.com/x")
        .body(body)
        .unwrap();
    let response = call(&service, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.tokens().len(), 1, "not replayed");
    // the refused token is gone: the next request gets a fresh one
    call(&service, get()).await.unwrap();
    assert_eq!(api.tokens().last().unwrap(), "Bearer tok-2");
}

// ---------------------------------------------------------------- 401 replay by the retry layer

type RetryEvents = EventCapture<RetryEvent>;
type Client = BoxCloneSyncService<Request<Body>, Response<()>, BoxError>;

/// A retry layer over a bearer whose own replay is off, as `Stack`
/// composes them, with `tok-1` cached and already revoked by the API.
struct RetryOverBearer {
    endpoint: TokenEndpoint,
    auth_events: Events,
    api: Api,
    events: RetryEvents,
    service: Client,
}

impl RetryOverBearer {
    /// An audit layer that observes its requests (its stats are read) over a
    /// retry layer over a bearer with its defaults: no setting tells the
    /// bearer that a retry layer is above, the mark travels in each
    /// request's context (`tower_cx::replay`).
    async fn new(retry: RetryLayer, latency: Duration) -> Self {
        Self::with_bearer_replay(retry, latency, true, true).await
    }

    async fn with_bearer_replay(
        retry: RetryLayer,
        latency: Duration,
        replay_on_401: bool,
        audit: bool,
    ) -> Self {
        let endpoint = TokenEndpoint::new();
        let auth_events = Events::default();
        let cache = cache(&endpoint, &auth_events);
        let api = Api::slow(latency);
        let events = RetryEvents::default();
        let service = ServiceBuilder::new()
            .option_layer(audit.then(|| {
                let audit = tower_cx::audit::AuditLayer::new(tower_cx::audit::NoopSink);
                // read stats make every request carry a context
                let _stats = audit.stats_handle();
                audit
            }))
            .layer(retry.on_event(events.recorder()))
            .layer(BearerLayer::new(cache.clone()).replay_on_401(replay_on_401))
            .service(api.service());
        cache.refresh().await.unwrap();
        api.revoke("tok-1");
        Self {
            endpoint,
            auth_events,
            api,
            events,
            service: Client::new(service),
        }
    }

    async fn send(&self, request: Request<Body>) -> Response<()> {
        self.service.clone().oneshot(request).await.unwrap()
    }

    /// Replays the retry layer made for a rejected token.
    fn token_replays(&self) -> usize {
        self.events
            .all()
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    RetryEventKind::RetryScheduled { delay, source: DelaySource::TokenRejected }
                        if delay.is_zero()
                )
            })
            .count()
    }
}

#[tokio::test(start_paused = true)]
async fn under_a_retry_layer_a_hundred_401s_make_one_refresh_and_one_replay_each() {
    // a budget that allows no retry at all: the replay must not need one
    let retry = RetryLayer::new().budget(RetryBudget::new(secs(10), 0, 0.0).unwrap());
    let t = RetryOverBearer::new(retry, Duration::from_millis(50)).await;
    let started = Instant::now();

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let service = t.service.clone();
            tokio::spawn(async move { service.oneshot(get()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // 50 ms rejected, 100 ms for the token endpoint, 50 ms replayed: no
    // backoff anywhere
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(t.endpoint.requests(), 2, "one refresh for 100 401s");
    let tokens = t.api.tokens();
    assert_eq!(tokens.len(), 200, "each request sent twice, no more");
    assert_eq!(tokens.iter().filter(|t| *t == "Bearer tok-2").count(), 100);
    assert_eq!(t.token_replays(), 100);
    let auth_events = t.auth_events.all();
    let count = |f: fn(&AuthEvent) -> bool| auth_events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(|e| matches!(e, AuthEvent::TokenInvalidated { .. })),
        1
    );
    assert_eq!(
        count(|e| matches!(e, AuthEvent::RequestReplayed)),
        0,
        "the bearer made no copy and no replay of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn under_a_retry_layer_a_post_is_replayed_after_a_401_even_without_retries() {
    let t = RetryOverBearer::new(RetryLayer::new().max_attempts(1), Duration::ZERO).await;
    let post = Request::post("https://api.mypurecloud.com/api/v2/x")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(t.send(post).await.status(), StatusCode::OK);
    assert_eq!(t.api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(t.token_replays(), 1);
}

#[tokio::test(start_paused = true)]
async fn under_a_retry_layer_a_second_401_is_returned_not_replayed_again() {
    let t = RetryOverBearer::new(RetryLayer::new(), Duration::ZERO).await;
    t.api.revoke("tok-2");
    assert_eq!(t.send(get()).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(t.api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(t.token_replays(), 1);
    // within the rejection cooldown tok-2 is kept: no token request
    assert_eq!(t.send(get()).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(t.endpoint.requests(), 2);
    // after it, the next 401 drops tok-2: the request fetches tok-3
    advance(secs(30)).await;
    assert_eq!(t.send(get()).await.status(), StatusCode::OK);
    assert_eq!(t.endpoint.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn under_a_retry_layer_a_401_on_a_streaming_body_is_returned() {
    let t = RetryOverBearer::new(RetryLayer::new(), Duration::ZERO).await;
    let body = Body::from_stream(Full::new(Bytes::from_static(b"{}")));
    let request = Request::post("https://api.mypurecloud.com/x")
        .body(body)
        .unwrap();
    assert_eq!(t.send(request).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(t.api.tokens().len(), 1, "not replayed");
    assert_eq!(t.token_replays(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_default_bearer_under_a_retry_layer_replays_once_from_the_retry_layers_copy() {
    // the bearer is built with its defaults (its own replay on), and the
    // token the request carries is rejected: the request is sent twice in
    // all, the second time by the retry layer, with a fresh token
    let t = RetryOverBearer::new(RetryLayer::new(), Duration::ZERO).await;
    let response = t.send(post()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(t.token_replays(), 1, "the retry layer replayed it");
    assert_eq!(t.endpoint.requests(), 2);
    // a second rejection of the fresh token is not replayed again
    t.api.revoke("tok-2");
    advance(secs(30)).await;
    assert_eq!(t.send(post()).await.status(), StatusCode::OK);
    assert_eq!(t.api.tokens().len(), 4, "tok-2 rejected once, then tok-3");
    assert_eq!(t.token_replays(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_extensions_to_carry_the_mark_the_bearer_replays_once_and_never_twice() {
    // no audit layer: the request has no extensions, the retry layer makes
    // no map for its mark, and the bearer replays from its own copy
    let t =
        RetryOverBearer::with_bearer_replay(RetryLayer::new(), Duration::ZERO, true, false).await;
    assert_eq!(t.send(post()).await.status(), StatusCode::OK);
    assert_eq!(t.api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(t.token_replays(), 0, "the bearer replayed it");
    // its replay rejected too: the 401 comes back unmarked, not sent again
    t.api.revoke("tok-2");
    t.api.revoke("tok-3");
    advance(secs(30)).await;
    assert_eq!(t.send(post()).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(t.api.tokens().len(), 4, "tok-2, then one replay with tok-3");
    assert_eq!(t.token_replays(), 0);
}

#[tokio::test(start_paused = true)]
async fn with_the_retry_layers_replay_off_a_default_bearer_replays_itself() {
    let retry = RetryLayer::new().replay_rejected_token(false);
    let t = RetryOverBearer::new(retry, Duration::ZERO).await;
    let response = t.send(get()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.api.tokens(), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(
        t.token_replays(),
        0,
        "the bearer replayed it, not the retry layer"
    );
}

#[tokio::test(start_paused = true)]
async fn with_both_replays_off_a_401_is_returned_and_the_token_dropped() {
    let retry = RetryLayer::new().replay_rejected_token(false);
    let t = RetryOverBearer::with_bearer_replay(retry, Duration::ZERO, false, true).await;
    let response = t.send(get()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.extensions().get::<TokenRejected>().is_some());
    assert_eq!(t.api.tokens(), ["Bearer tok-1"]);
    t.send(get()).await;
    assert_eq!(t.api.tokens().last().unwrap(), "Bearer tok-2");
}

// ---------------------------------------------------------------- token responses

#[tokio::test(start_paused = true)]
async fn missing_zero_and_absurd_lifetimes_are_adjusted_with_an_event() {
    for (expires_in, used) in [
        (None, 300),
        (Some("0"), 30),
        (Some("-60"), 30),
        (Some("99999999999"), 365 * 86_400),
    ] {
        let endpoint = TokenEndpoint::new();
        endpoint.script(vec![TokenAnswer::Issue(expires_in)]);
        let events = Events::default();
        let cache = cache(&endpoint, &events);
        cache.refresh().await.unwrap();
        let status = cache.status();
        assert_eq!(
            status.expires_at.unwrap(),
            Instant::now() + secs(used),
            "{expires_in:?}"
        );
        let adjusted: Vec<_> = events
            .all()
            .iter()
            .filter_map(|e| match e {
                AuthEvent::LifetimeAdjusted(note) => Some(note.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(adjusted.len(), 1, "{expires_in:?}");
        match (&adjusted[0], expires_in) {
            (LifetimeNote::Missing { assumed }, None) => assert_eq!(*assumed, secs(300)),
            (LifetimeNote::Clamped { used: u, .. }, Some(_)) => assert_eq!(*u, secs(used)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn rfc6749_error_body_is_a_typed_final_error() {
    let endpoint = TokenEndpoint::new();
    endpoint.script(vec![TokenAnswer::Fail(
        401,
        "application/json",
        r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
        vec![],
    )]);
    let cache = cache(&endpoint, &Events::default());
    let err = cache.refresh().await.unwrap_err();
    let TokenError::Rejected {
        status,
        error,
        description,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid_client");
    assert_eq!(description.as_deref(), Some("Client authentication failed"));
    assert!(err.is_final());
}

#[tokio::test(start_paused = true)]
async fn token_request_is_retried_on_429_and_5xx_but_not_on_invalid_client() {
    let endpoint = TokenEndpoint::new();
    endpoint.script(vec![
        TokenAnswer::Fail(429, "application/json", "{}", vec![("retry-after", "2")]),
        TokenAnswer::Fail(502, "text/html", "<html>Bad Gateway</html>", vec![]),
    ]);
    let credentials = endpoint.credentials().retry(
        RetryLayer::new()
            .max_attempts(3)
            .backoff(Backoff::constant(secs(1)))
            .hint_jitter(0.0, Duration::ZERO),
    );
    let cache = TokenCache::new(credentials);
    let start = Instant::now();
    cache.refresh().await.unwrap();
    assert_eq!(endpoint.requests(), 3);
    // 100 ms + 2 s (Retry-After) + 100 ms + 1 s (backoff) + 100 ms
    assert_eq!(start.elapsed(), Duration::from_millis(3300));

    let endpoint = TokenEndpoint::new();
    endpoint.script(vec![TokenAnswer::Fail(
        400,
        "application/json",
        r#"{"error":"invalid_client"}"#,
        vec![],
    )]);
    let cache = TokenCache::new(
        endpoint
            .credentials()
            .retry(RetryLayer::new().max_attempts(3)),
    );
    assert!(cache.refresh().await.unwrap_err().is_final());
    assert_eq!(endpoint.requests(), 1);
}

// ---------------------------------------------------------------- security

#[test]
fn plain_http_token_url_to_a_remote_host_is_refused() {
    let err = ClientCredentials::new("http://login.mypurecloud.com/oauth/token", "id", "secret")
        .unwrap_err();
    assert!(matches!(err, TokenError::Insecure(_)), "{err:?}");
    let err = ClientCredentials::new("not a url", "id", "secret").unwrap_err();
    assert!(matches!(err, TokenError::InvalidUrl { .. }), "{err:?}");
    assert!(ClientCredentials::new("http://127.0.0.1:1/oauth/token", "id", "secret").is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_bearer_layer_never_sends_a_token_over_plain_http_to_a_remote_host() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let api = Api::new();
    let service = BearerLayer::new(cache).layer(api.service());
    let request = Request::get("http://api.mypurecloud.com/api/v2/users/me")
        .body(Body::empty())
        .unwrap();
    let err = call(&service, request).await.unwrap_err();
    assert!(err.is::<InsecureUrl>(), "{err}");
    assert_eq!(api.tokens().len(), 0);
    assert_eq!(endpoint.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn secrets_and_tokens_never_appear_in_debug_errors_or_events() {
    let endpoint = TokenEndpoint::new();
    let events = Events::default();
    let credentials = ClientCredentials::cxone(
        "http://127.0.0.1/auth/token",
        "client-id",
        "client-s3cr3t",
        "access-key-id",
        "access-key-s3cr3t",
    )
    .unwrap()
    .http_client(endpoint.clone())
    .retry(RetryLayer::new().max_attempts(1));
    let shown_credentials = format!("{credentials:?}");
    let cache = TokenCache::builder(credentials)
        .on_event(events.recorder())
        .build();
    let api = Api::new();
    let service = BearerLayer::new(cache.clone()).layer(api.service());
    call(&service, get()).await.unwrap();
    api.revoke("tok-1");
    endpoint.set_down(true);
    advance(secs(3601)).await;
    let error = call(&service, get()).await.unwrap_err();

    let mut shown = vec![
        shown_credentials,
        format!("{cache:?}"),
        format!("{:?}", service.cache()),
        format!("{error:?}"),
        error.to_string(),
    ];
    shown.extend(events.all().iter().map(|e| format!("{e:?}")));
    for text in &shown {
        for secret in ["client-s3cr3t", "access-key-s3cr3t", "tok-1", "tok-2"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
}

// ---------------------------------------------------------------- over real TCP

fn real_endpoint() -> TokenEndpoint {
    let mut endpoint = TokenEndpoint::new();
    endpoint.latency = Duration::ZERO;
    endpoint
}

#[tokio::test]
async fn cxone_access_key_form_is_encoded_correctly_over_tcp() {
    let endpoint = real_endpoint();
    let base = loopback::serve(endpoint.clone()).await;
    let credentials = ClientCredentials::cxone(
        &format!("{base}/auth/token"),
        "my client",
        "c+s=cret==",
        "AK+id/1=",
        "a=b+c&d==",
    )
    .unwrap();
    let cache = TokenCache::new(credentials);
    cache.refresh().await.unwrap();

    let seen = endpoint.state.seen.all();
    assert_eq!(seen.len(), 1);
    let (auth, form) = &seen[0];
    let basic = auth.as_deref().unwrap().strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .unwrap();
    assert_eq!(decoded, b"my client:c+s=cret==");
    assert_eq!(
        form,
        "grant_type=password&username=AK%2Bid%2F1%3D&password=a%3Db%2Bc%26d%3D%3D"
    );
    let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        pairs,
        [
            ("grant_type".into(), "password".into()),
            ("username".into(), "AK+id/1=".into()),
            ("password".into(), "a=b+c&d==".into())
        ]
    );
}

#[tokio::test]
async fn genesys_preset_posts_client_credentials_with_basic_auth_over_tcp() {
    let endpoint = real_endpoint();
    let base = loopback::serve(endpoint.clone()).await;
    let region = Region::custom(base.clone(), base);
    let credentials = ClientCredentials::genesys(&region, "gen-id", "gen-secret").unwrap();
    let cache = TokenCache::new(credentials);
    cache.refresh().await.unwrap();
    let seen = endpoint.state.seen.all();
    let (auth, form) = &seen[0];
    let expected = base64::engine::general_purpose::STANDARD.encode("gen-id:gen-secret");
    assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
    assert_eq!(form, "grant_type=client_credentials");
}

#[tokio::test]
async fn html_502_from_a_real_token_endpoint_is_a_typed_error() {
    let endpoint = real_endpoint();
    endpoint.script(vec![TokenAnswer::Fail(
        502,
        "text/html; charset=utf-8",
        "<html><h1>502 Bad Gateway</h1></html>",
        vec![],
    )]);
    let base = loopback::serve(endpoint.clone()).await;
    let credentials = ClientCredentials::new(&format!("{base}/oauth/token"), "id", "secret")
        .unwrap()
        .retry(RetryLayer::new().max_attempts(1))
        .client_auth(tower_cx::auth::ClientAuth::Post)
        .scope("analytics")
        .scope("users");
    let cache = TokenCache::new(credentials);
    let err = cache.refresh().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("502") && text.contains("text/html"), "{text}");
    let (auth, form) = endpoint.state.seen.all()[0].clone();
    assert_eq!(auth, None, "client_secret_post sends no Basic header");
    assert_eq!(
        form,
        "grant_type=client_credentials&scope=analytics+users&client_id=id&client_secret=secret"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_token_source_releases_its_waiters_with_an_error() {
    let cache = TokenCache::new(tower_cx::auth::source_fn(|| async {
        panic!("source bug");
        #[allow(unreachable_code)]
        Err::<tower_cx::auth::Token, TokenError>(TokenError::InvalidUrl { url: String::new() })
    }));
    let err = cache.refresh().await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(!cache.status().refreshing);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_a_retrying_background_refresh() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let service = BearerLayer::new(cache.clone()).layer(Api::new().service());
    call(&service, get()).await.unwrap();
    endpoint.set_down(true);
    advance(secs(3240)).await;
    call(&service, get()).await.unwrap(); // starts the failing refresh loop
    advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(endpoint.requests(), 2);
    drop(service);
    drop(cache);
    for _ in 0..20 {
        advance(secs(10)).await;
        settle().await;
    }
    // the loop wakes from its backoff, finds no handle left, and stops
    assert_eq!(endpoint.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_callers_at_cold_start_make_exactly_one_token_request() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    let service = BearerLayer::new(cache.clone()).layer(Api::new().service());
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(get()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(endpoint.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_gets_its_token_refreshed_when_due_without_traffic() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    cache.refresh().await.unwrap();
    let refresh_at = cache.status().refresh_at.unwrap();
    tokio::time::sleep_until(refresh_at - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(endpoint.requests(), 1);
    tokio::time::sleep_until(refresh_at).await;
    settle().await;
    assert_eq!(
        endpoint.requests(),
        2,
        "refresh started at refresh_at exactly"
    );
    advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(cache.status().refresh_count, 2);
}

#[tokio::test(start_paused = true)]
async fn an_already_expired_token_is_a_typed_error_not_a_loop() {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let cache = TokenCache::builder(tower_cx::auth::source_fn(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, TokenError>(tower_cx::auth::Token::new("t", Duration::ZERO)) }
    }))
    .refresh_backoff(Backoff::constant(secs(1)))
    .build();
    let service = BearerLayer::new(cache).layer(Api::new().service());
    let err = call(&service, get()).await.unwrap_err();
    let err = err.downcast_ref::<TokenError>().unwrap();
    assert!(
        matches!(err, TokenError::Unavailable { cause } if matches!(**cause, TokenError::AlreadyExpired)),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // within the backoff, no new token request
    assert!(call(&service, get()).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_huge_lifetime_is_clamped_not_an_overflow() {
    let cache = TokenCache::new(tower_cx::auth::source_fn(|| async {
        Ok::<_, TokenError>(tower_cx::auth::Token::new("t", Duration::MAX))
    }));
    cache.refresh().await.unwrap();
    assert_eq!(
        cache.status().expires_at.unwrap(),
        Instant::now() + secs(365 * 86_400)
    );
}

#[tokio::test(start_paused = true)]
async fn a_forced_refresh_reports_each_failed_attempt_while_the_token_is_valid() {
    let endpoint = TokenEndpoint::new();
    let cache = cache(&endpoint, &Events::default());
    cache.refresh().await.unwrap();
    endpoint.set_down(true);
    let start = Instant::now();
    let err = cache.refresh().await.unwrap_err();
    assert!(
        matches!(err, TokenError::UnexpectedResponse { .. }),
        "{err:?}"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "one attempt, not the whole loop"
    );
    endpoint.set_down(false);
    cache.refresh().await.unwrap();
    assert_eq!(cache.status().refresh_count, 2);
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn the_default_client_speaks_https() {
    // nothing listens there: the https connector gets as far as connecting
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let credentials = ClientCredentials::new(
        &format!("https://127.0.0.1:{port}/oauth/token"),
        "id",
        "secret",
    )
    .unwrap()
    .retry(RetryLayer::new().max_attempts(1));
    let err = TokenCache::new(credentials).refresh().await.unwrap_err();
    let TokenError::Transport(source) = &err else {
        panic!("{err:?}")
    };
    let class = tower_cx::classify::classify_error(source.as_ref());
    assert_eq!(
        class,
        tower_cx::classify::Class::Retryable(tower_cx::classify::FailureKind::Connect),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_custom_source_reports_a_transport_failure_with_its_cause() {
    use tower_cx::auth::{source_fn, Token};
    let cache = TokenCache::new(source_fn(|| async {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Err::<Token, _>(TokenError::transport(refused))
    }));
    let err = cache.refresh().await.unwrap_err();
    let TokenError::Transport(source) = &err else {
        panic!("{err:?}")
    };
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the cause is kept");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!err.is_final(), "a transport failure may be retried");
    assert_eq!(err.to_string(), "token request failed: refused");
}

#[test]
fn a_custom_source_builds_an_invalid_url_error_without_the_secret() {
    let err = TokenError::invalid_url("https://user:pw@login.example/oauth/token?secret=s3cr3t");
    assert!(matches!(err, TokenError::InvalidUrl { .. }), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("pw@"),
            "{shown}"
        );
    }
    assert!(err.is_final());
}
