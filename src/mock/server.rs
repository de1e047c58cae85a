use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::genesys::Region;

/// Settings of a [`MockServer`].
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The OAuth client id accepted (Genesys and CXone).
    pub client_id: String,
    /// The OAuth client secret accepted.
    pub client_secret: String,
    /// The CXone access key id accepted.
    pub access_key_id: String,
    /// The CXone access key secret accepted.
    pub access_key_secret: String,
    /// Lifetime of issued tokens.
    pub token_lifetime: Duration,
    /// API requests allowed per token per window.
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_window: Duration,
    /// Entities in the Genesys users listing.
    pub users: usize,
    /// Completed contacts in the CXone listing.
    pub contacts: usize,
    /// Requests arriving this soon after a wait was announced to their token
    /// were in flight before the client could know: answered 429, not
    /// counted as violations. Default 100 ms.
    pub in_flight_grace: Duration,
    /// How long a CXone data-extraction result URL stays valid. Default 60 s.
    pub result_url_ttl: Duration,
    /// Faults drawn at random for some requests, after the scripted ones
    /// (default none).
    pub random_faults: Option<RandomFaults>,
}

/// Faults drawn at random, from a seeded RNG so that a run can be repeated,
/// for the requests whose path starts with `path_prefix`. Scripted faults
/// ([`MockServer::fault`]) are served first.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::mock::{Fault, RandomFaults};
///
/// let faults = RandomFaults::new(7, "/api/")
///     .with(Fault::Status(503), 0.10)
///     .with(Fault::Reset, 0.02)
///     .with(Fault::Delay(Duration::from_secs(30)), 0.01);
/// assert_eq!(faults.faults.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFaults {
    /// The RNG seed.
    pub seed: u64,
    /// Only requests whose path starts with this are faulted.
    pub path_prefix: String,
    /// Each fault with its probability per request (together at most 1).
    pub faults: Vec<(Fault, f64)>,
}

impl RandomFaults {
    /// No faults yet, for paths under `path_prefix`, drawn from `seed`.
    pub fn new(seed: u64, path_prefix: impl Into<String>) -> Self {
        Self {
            seed,
            path_prefix: path_prefix.into(),
            faults: Vec::new(),
        }
    }

    /// Add `fault` with `probability` per request.
    pub fn with(mut self, fault: Fault, probability: f64) -> Self {
        self.faults.push((fault, probability));
        self
    }

    fn draw(&self, rng: &mut StdRng) -> Option<Fault> {
        let mut roll: f64 = rng.random();
        for (fault, probability) in &self.faults {
            if roll < *probability {
                return Some(fault.clone());
            }
            roll -= probability;
        }
        None
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            client_id: "mock-client".into(),
            client_secret: "mock-secret".into(),
            access_key_id: "mock-access-key".into(),
            access_key_secret: "mock-access-secret".into(),
            token_lifetime: Duration::from_secs(86_399),
            rate_limit: 300,
            rate_window: Duration::from_secs(60),
            users: 250,
            contacts: 120,
            in_flight_grace: Duration::from_millis(100),
            result_url_ttl: Duration::from_secs(60),
            random_faults: None,
        }
    }
}

/// A scripted fault for the next matching requests.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and a Genesys-style error body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without an answer.
    Reset,
    /// 429 with `Retry-After` in seconds.
    RetryAfterSecs(u64),
    /// 503 with `Retry-After` as an HTTP-date this far ahead.
    RetryAfterDate(Duration),
    /// 429 with a `RateLimit` header `"default";r=0;t=N`.
    RateLimitHeader(u64),
    /// 200 with a business error in the body: `{"success":false,...}`.
    BusinessError200,
    /// A data action failure: 400 with `details[].errorCode` set to this.
    DataActionError(String),
    /// A data action whose remote endpoint answered this status: 400 with
    /// `details[].errorCode` `ACTION.REMOTE_ENDPOINT` and the remote status
    /// in the nested `errors`, as Genesys Cloud reports it.
    RemoteEndpoint(u16),
    /// A CXone-style error: this status, an empty body and the text in the
    /// `icStatusDescription` header.
    IcStatus(u16, String),
    /// This status with this body (`content-type: application/json`).
    Body(u16, String),
}

/// The states a mock job goes through, one per status read; the last one
/// repeats. Each state may carry an error message (`""`: none).
///
/// ```
/// use tower_cx::mock::JobScript;
///
/// let script = JobScript::new([("QUEUED", ""), ("FAILED", ""), ("FAILED", "disk full")]);
/// assert_eq!(script.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobScript {
    steps: Vec<(String, String)>,
}

impl JobScript {
    /// A script of `(state, errorMessage)` steps.
    pub fn new<'a>(steps: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            steps: steps
                .into_iter()
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
                .collect(),
        }
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the script has no steps (the default states apply).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn step(&self, poll: u32) -> Option<&(String, String)> {
        let i = (poll.max(1) as usize - 1).min(self.steps.len().checked_sub(1)?);
        self.steps.get(i)
    }
}

/// What the mock counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockCounters {
    /// Requests per path.
    pub requests: BTreeMap<String, u64>,
    /// All requests.
    pub total_requests: u64,
    /// The most requests in progress at once.
    pub peak_concurrency: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// API requests that carried an expired token.
    pub expired_token_requests: u64,
    /// API requests that arrived inside a wait announced to their token (a
    /// 429's `Retry-After`, or `inin-ratelimit-count` at the limit), after
    /// the in-flight grace (see [`MockConfig::in_flight_grace`]).
    pub retry_after_violations: u64,
    /// POSTs whose `Idempotency-Key` had already been applied successfully.
    pub duplicate_idempotency_keys: u64,
    /// Result downloads that carried an `Authorization` header (a token
    /// sent to the file host: must stay zero).
    pub credentials_sent_to_files: u64,
    /// Distinct `Idempotency-Key`s of POSTs applied (each one once).
    pub idempotency_keys_applied: u64,
    /// Faults drawn by [`MockConfig::random_faults`], by kind.
    pub random_faults: BTreeMap<String, u64>,
}

struct TokenState {
    expires_at: Instant,
    window_start: Instant,
    used: u32,
    blocked_until: Option<Instant>,
    /// When the client was first told to wait (a 429, or a count at the
    /// limit); requests already in flight then are not violations.
    announced_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, TokenState>,
    faults: VecDeque<(Option<Method>, Option<String>, Fault, usize)>,
    counters: MockCounters,
    applied_keys: HashSet<String>,
    genesys_jobs: HashMap<String, MockJob>,
    cxone_jobs: HashMap<String, MockJob>,
    genesys_scripts: VecDeque<JobScript>,
    cxone_scripts: VecDeque<JobScript>,
    files: HashMap<String, (String, Instant)>,
    keys_seen: Vec<(String, String)>,
    next_id: u64,
    rng: Option<StdRng>,
}

#[derive(Default)]
struct MockJob {
    polls: u32,
    script: Option<JobScript>,
}

struct Shared {
    config: MockConfig,
    base: String,
    state: Mutex<State>,
    in_flight: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running mock. Stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Start with the default settings.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(MockConfig::default()).await
    }

    /// Start with `config`.
    pub async fn start_with(config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = State {
            rng: config
                .random_faults
                .as_ref()
                .map(|r| StdRng::seed_from_u64(r.seed)),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            config,
            base: format!("http://{addr}"),
            state: Mutex::new(state),
            in_flight: AtomicU64::new(0),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { handle(shared, request).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A Genesys region whose API and login hosts are this mock.
    pub fn genesys_region(&self) -> Region {
        Region::custom(self.base_url(), self.base_url())
    }

    /// The CXone token URL of this mock.
    pub fn cxone_token_url(&self) -> String {
        format!("{}/auth/token", self.shared.base)
    }

    /// The settings in use (credentials included, for tests).
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Script a fault for the next `times` requests whose path starts with
    /// `path_prefix` (`None`: any path, token endpoints included).
    pub fn fault(&self, path_prefix: Option<&str>, fault: Fault, times: usize) {
        self.shared
            .lock()
            .faults
            .push_back((None, path_prefix.map(str::to_owned), fault, times));
    }

    /// Like [`fault`](Self::fault), for requests with this method only.
    pub fn fault_on(&self, method: Method, path_prefix: &str, fault: Fault, times: usize) {
        self.shared.lock().faults.push_back((
            Some(method),
            Some(path_prefix.to_owned()),
            fault,
            times,
        ));
    }

    /// The next Genesys analytics job follows `script` (state names
    /// `QUEUED`, `PENDING`, `FULFILLED`, `FAILED`, `CANCELLED`, `EXPIRED`).
    /// Scripts queue up, one per submitted job; without one a job reads
    /// `QUEUED`, `PENDING`, then `FULFILLED`.
    pub fn script_genesys_job(&self, script: JobScript) {
        self.shared.lock().genesys_scripts.push_back(script);
    }

    /// The next CXone data-extraction job follows `script` (`RUNNING`,
    /// `SUCCEEDED`, `FAILED`, `CANCELLED`, `EXPIRED`). Without one a job
    /// reads `RUNNING` twice, then `SUCCEEDED`.
    pub fn script_cxone_job(&self, script: JobScript) {
        self.shared.lock().cxone_scripts.push_back(script);
    }

    /// Every `Idempotency-Key` sent on a POST whose path starts with
    /// `path_prefix`, in order, faulted attempts included.
    pub fn idempotency_keys(&self, path_prefix: &str) -> Vec<String> {
        self.shared
            .lock()
            .keys_seen
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Drop every scripted fault not yet served (the random ones stay).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> MockCounters {
        self.shared.lock().counters.clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

fn json(status: u16, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.into())))
        .expect("valid response")
}

fn genesys_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({
            "message": message, "code": code, "status": status,
            "contextId": "mock-context", "details": [], "errors": []
        })
        .to_string(),
    )
}

struct Counting<'a>(&'a Shared);

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Answer {
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _counting = Counting(&shared);
    let path = request.uri().path().to_owned();
    let fault = {
        let mut state = shared.lock();
        let counters = &mut state.counters;
        counters.total_requests += 1;
        *counters.requests.entry(path.clone()).or_default() += 1;
        counters.peak_concurrency = counters.peak_concurrency.max(now_in_flight);
        if request.method() == Method::POST {
            if let Some(key) = request
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
            {
                state.keys_seen.push((path.clone(), key.to_owned()));
            }
        }
        let method = request.method();
        let index = state.faults.iter().position(|(only, prefix, _, left)| {
            *left > 0
                && only.as_ref().is_none_or(|m| m == method)
                && prefix.as_deref().is_none_or(|p| path.starts_with(p))
        });
        let scripted = index.map(|i| {
            let entry = &mut state.faults[i];
            entry.3 -= 1;
            let fault = entry.2.clone();
            if entry.3 == 0 {
                state.faults.remove(i);
            }
            fault
        });
        scripted.or_else(|| random_fault(&shared.config, &mut state, &path))
    };
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = Request::from_parts(parts, body);
    if let Some(fault) = fault {
        match fault {
            Fault::Delay(wait) => tokio::time::sleep(wait).await,
            Fault::Reset => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock fault: reset",
                ))
            }
            other => return Ok(fault_response(&other)),
        }
    }
    let response = route(&shared, &request);
    Ok(response)
}

fn random_fault(config: &MockConfig, state: &mut State, path: &str) -> Option<Fault> {
    let random = config.random_faults.as_ref()?;
    if !path.starts_with(random.path_prefix.as_str()) {
        return None;
    }
    let fault = random.draw(state.rng.as_mut()?)?;
    *state
        .counters
        .random_faults
        .entry(format!("{fault:?}"))
        .or_default() += 1;
    Some(fault)
}

fn fault_response(fault: &Fault) -> Response<Full<Bytes>> {
    match fault {
        Fault::Status(status) => genesys_error(*status, "mock.fault", "scripted fault"),
        Fault::RetryAfterSecs(secs) => {
            let mut response = too_many(*secs);
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("digits"));
            response
        }
        Fault::RetryAfterDate(ahead) => {
            let mut response = genesys_error(503, "service.unavailable", "try later");
            let date = httpdate::fmt_http_date(SystemTime::now() + *ahead);
            response
                .headers_mut()
                .insert("retry-after", date.parse().expect("an HTTP-date"));
            response
        }
        Fault::RateLimitHeader(t) => {
            let mut response = genesys_error(429, "too.many.requests", "rate limited");
            response.headers_mut().insert(
                "ratelimit",
                format!("\"default\";r=0;t={t}").parse().expect("ascii"),
            );
            response
        }
        Fault::BusinessError200 => json(200, r#"{"success":false,"error":"mock business error"}"#),
        Fault::DataActionError(code) => json(
            400,
            serde_json::json!({
                "message": "The remote endpoint failed", "code": "bad.request", "status": 400,
                "contextId": "mock-context",
                "details": [{"errorCode": code}], "errors": []
            })
            .to_string(),
        ),
        Fault::RemoteEndpoint(remote) => json(
            400,
            serde_json::json!({
                "message": "REST call for action execute failed. Message: Request to backend service failed.",
                "code": "bad.request", "status": 400, "contextId": "mock-context",
                "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                "errors": [{
                    "message": format!("Response from web service: status {remote}"),
                    "code": "REMOTE_ERROR", "status": remote, "details": [], "errors": []
                }]
            })
            .to_string(),
        ),
        Fault::IcStatus(status, description) => {
            let mut response = Response::builder()
                .status(*status)
                .body(Full::new(Bytes::new()))
                .expect("valid response");
            if let Ok(value) = description.parse() {
                response.headers_mut().insert("icStatusDescription", value);
            }
            response
        }
        Fault::Body(status, body) => json(*status, body.clone()),
        Fault::Delay(_) | Fault::Reset => genesys_error(500, "mock.fault", "unreachable"),
    }
}

fn too_many(secs: u64) -> Response<Full<Bytes>> {
    genesys_error(
        429,
        "too.many.requests.retry.after",
        &format!("Rate limit exceeded the maximum. Retry the request in [{secs}] seconds"),
    )
}

fn route(shared: &Shared, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method();
    match (method, path) {
        (&Method::POST, "/oauth/token") => token(shared, request, false),
        (&Method::POST, "/auth/token") => token(shared, request, true),
        (&Method::GET, "/.well-known/openid-configuration") => json(
            200,
            serde_json::json!({
                "issuer": shared.base,
                "token_endpoint": format!("{}/auth/token", shared.base),
            })
            .to_string(),
        ),
        (&Method::GET, p) if p.starts_with("/files/") => file(shared, request),
        (&Method::GET, "/.well-known/cxone-configuration") => json(
            200,
            serde_json::json!({ "area": "na1", "api_endpoint": shared.base }).to_string(),
        ),
        _ => api(shared, request),
    }
}

/// A pre-signed result download: no bearer token, a signature that expires.
fn file(shared: &Shared, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let mut state = shared.lock();
    if request.headers().contains_key("authorization") {
        state.counters.credentials_sent_to_files += 1;
    }
    let sig = query(request).remove("sig").unwrap_or_default();
    let denied = |message: &str| {
        Response::builder()
            .status(403)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(format!(
                "<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
            ))))
            .expect("valid response")
    };
    let Some((id, expires)) = state.files.get(&sig).cloned() else {
        return denied("Invalid signature");
    };
    if Instant::now() >= expires || !request.uri().path().contains(&id) {
        return denied("Request has expired");
    }
    let mut csv = String::from("contactId,agentId,skill\n");
    for i in 0..5 {
        csv.push_str(&format!("{i},agent-{i},skill-{}\n", i % 2));
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from(csv)))
        .expect("valid response")
}

fn basic_credentials(request: &Request<Bytes>) -> Option<(String, String)> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn token(shared: &Shared, request: &Request<Bytes>, cxone: bool) -> Response<Full<Bytes>> {
    let config = &shared.config;
    let form: HashMap<String, String> = form_urlencoded::parse(request.body())
        .into_owned()
        .collect();
    let client_ok = basic_credentials(request)
        .is_some_and(|(id, secret)| id == config.client_id && secret == config.client_secret);
    if !client_ok {
        return json(
            401,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
        );
    }
    let grant_ok = if cxone {
        form.get("grant_type").map(String::as_str) == Some("password")
            && form.get("username") == Some(&config.access_key_id)
            && form.get("password") == Some(&config.access_key_secret)
    } else {
        form.get("grant_type").map(String::as_str) == Some("client_credentials")
    };
    if !grant_ok {
        return json(400, r#"{"error":"invalid_grant"}"#);
    }
    let now = Instant::now();
    let mut state = shared.lock();
    state.next_id += 1;
    let access_token = format!("mock-{:016x}-{}", rand::random::<u64>(), state.next_id);
    state.tokens.insert(
        access_token.clone(),
        TokenState {
            expires_at: now + config.token_lifetime,
            window_start: now,
            used: 0,
            blocked_until: None,
            announced_at: None,
        },
    );
    state.counters.tokens_issued += 1;
    let lifetime = config.token_lifetime.as_secs();
    let body = if cxone {
        serde_json::json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": lifetime,
            "refresh_token": "mock-refresh", "id_token": "mock-id"
        })
    } else {
        serde_json::json!({
            "access_token": access_token, "token_type": "bearer", "expires_in": lifetime
        })
    };
    json(200, body.to_string())
}

fn api(shared: &Shared, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let config = &shared.config;
    let now = Instant::now();
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut state = shared.lock();
    let Some(token) = token else {
        return genesys_error(
            401,
            "authentication.required",
            "No authentication bearer token specified",
        );
    };
    let expired = match state.tokens.get(&token) {
        None => return genesys_error(401, "bad.credentials", "Invalid login credentials."),
        Some(t) => now >= t.expires_at,
    };
    if expired {
        state.counters.expired_token_requests += 1;
        return genesys_error(401, "bad.credentials", "Invalid login credentials.");
    }
    // rate limiting: fixed windows per token
    let (used, reset, limited, violation) = {
        let t = state.tokens.get_mut(&token).expect("checked above");
        let violation = t.blocked_until.is_some_and(|until| now < until)
            && t.announced_at
                .is_some_and(|at| now.saturating_duration_since(at) > config.in_flight_grace);
        if now.saturating_duration_since(t.window_start) >= config.rate_window {
            t.window_start = now;
            t.used = 0;
            t.blocked_until = None;
            t.announced_at = None;
        }
        let reset = (config.rate_window - now.saturating_duration_since(t.window_start))
            .as_secs_f64()
            .ceil() as u64;
        let limited = t.used >= config.rate_limit;
        if limited {
            t.blocked_until = Some(t.window_start + config.rate_window);
        } else {
            t.used += 1;
        }
        if t.used >= config.rate_limit {
            // this answer announces the wait (a 429, or a count at the limit)
            t.blocked_until = Some(t.window_start + config.rate_window);
            t.announced_at.get_or_insert(now);
        }
        (t.used, reset.max(1), limited, violation)
    };
    if violation {
        state.counters.retry_after_violations += 1;
    }
    let mut response = if limited {
        let mut response = too_many(reset);
        response
            .headers_mut()
            .insert("retry-after", reset.to_string().parse().expect("digits"));
        response
    } else {
        if request.method() == Method::POST {
            if let Some(key) = request
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
            {
                if state.applied_keys.insert(key.to_owned()) {
                    state.counters.idempotency_keys_applied += 1;
                } else {
                    state.counters.duplicate_idempotency_keys += 1;
                }
            }
        }
        endpoint(shared, &mut state, request)
    };
    let headers = response.headers_mut();
    headers.insert("inin-ratelimit-allowed", config.rate_limit.into());
    headers.insert("inin-ratelimit-count", used.into());
    headers.insert("inin-ratelimit-reset", reset.into());
    state.next_id += 1;
    headers.insert(
        "inin-correlation-id",
        format!("mock-corr-{}", state.next_id)
            .parse()
            .expect("ascii"),
    );
    response
}

fn query(request: &Request<Bytes>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn endpoint(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let config = &shared.config;
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["api", "v2", "users"]) => {
            let q = query(request);
            let page: usize = q
                .get("pageNumber")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1);
            let size: usize = q
                .get("pageSize")
                .and_then(|v| v.parse().ok())
                .unwrap_or(25)
                .clamp(1, 500);
            let count = config.users.div_ceil(size).max(1);
            let start = (page - 1) * size;
            let entities: Vec<_> = (start..(start + size).min(config.users))
                .map(
                    |i| serde_json::json!({"id": format!("user-{i}"), "name": format!("User {i}")}),
                )
                .collect();
            let mut body = serde_json::json!({
                "entities": entities, "pageNumber": page, "pageSize": size,
                "pageCount": count, "total": config.users,
            });
            if page < count {
                body["nextUri"] =
                    format!("/api/v2/users?pageNumber={}&pageSize={size}", page + 1).into();
            }
            json(200, body.to_string())
        }
        (&Method::POST, ["api", "v2", "integrations", "actions", id, "test"]) => {
            let input: serde_json::Value =
                serde_json::from_slice(request.body()).unwrap_or_default();
            let body = if id.starts_with("fail-") {
                serde_json::json!({
                    "success": false,
                    "operations": [
                        {"step": 1, "name": "Resolve request", "success": true},
                        {"step": 2, "name": "Execute", "success": false}
                    ],
                    "error": {
                        "message": "Request to backend service failed.", "code": "bad.request",
                        "status": 400, "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                        "errors": [{"message": "upstream down", "status": 503}]
                    }
                })
            } else {
                serde_json::json!({
                    "success": true,
                    "operations": [
                        {"step": 1, "name": "Resolve request", "success": true},
                        {"step": 2, "name": "Execute", "success": true},
                        {"step": 3, "name": "Resolve translation map", "success": true}
                    ],
                    "finalResult": { "ok": true, "input": input }
                })
            };
            json(200, body.to_string())
        }
        (&Method::POST, ["api", "v2", "integrations", "actions", _id, "execute"]) => {
            let input: serde_json::Value =
                serde_json::from_slice(request.body()).unwrap_or_default();
            json(
                200,
                serde_json::json!({ "ok": true, "input": input }).to_string(),
            )
        }
        (&Method::POST, ["api", "v2", "analytics", "conversations", "details", "jobs"]) => {
            state.next_id += 1;
            let id = format!("job-{}", state.next_id);
            let script = state.genesys_scripts.pop_front();
            state
                .genesys_jobs
                .insert(id.clone(), MockJob { polls: 0, script });
            json(202, serde_json::json!({ "jobId": id }).to_string())
        }
        (&Method::GET, ["api", "v2", "analytics", "conversations", "details", "jobs", id]) => {
            let Some(job) = state.genesys_jobs.get_mut(*id) else {
                return genesys_error(404, "not.found", "job not found");
            };
            job.polls += 1;
            let (status, message) = match job.script.as_ref().and_then(|s| s.step(job.polls)) {
                Some((status, message)) => (status.clone(), message.clone()),
                None => {
                    let status = match job.polls {
                        1 => "QUEUED",
                        2 => "PENDING",
                        _ => "FULFILLED",
                    };
                    (status.to_owned(), String::new())
                }
            };
            let mut body =
                serde_json::json!({ "state": status, "submissionDate": "2026-11-22T10:00:00Z" });
            if status == "FAILED" {
                body["errorMessage"] = message.into();
            }
            json(200, body.to_string())
        }
        (
            &Method::GET,
            ["api", "v2", "analytics", "conversations", "details", "jobs", _id, "results"],
        ) => {
            let last = query(request).contains_key("cursor");
            let conversations: Vec<_> = (0..3)
                .map(|i| serde_json::json!({ "conversationId": format!("conv-{}-{i}", u8::from(last)) }))
                .collect();
            let mut body = serde_json::json!({ "conversations": conversations });
            if !last {
                body["cursor"] = "mock-cursor".into();
            }
            json(200, body.to_string())
        }
        (&Method::POST, ["data-extraction", "v1", "jobs"]) => {
            state.next_id += 1;
            let id = format!("dx-{}", state.next_id);
            let script = state.cxone_scripts.pop_front();
            state
                .cxone_jobs
                .insert(id.clone(), MockJob { polls: 0, script });
            json(202, serde_json::Value::String(id).to_string())
        }
        (&Method::GET, ["data-extraction", "v1", "jobs", id]) => {
            let Some(job) = state.cxone_jobs.get_mut(*id) else {
                return json(404, r#"{"error":"job not found"}"#);
            };
            job.polls += 1;
            let (status, message) = match job.script.as_ref().and_then(|s| s.step(job.polls)) {
                Some((status, message)) => (status.clone(), message.clone()),
                None if job.polls < 3 => ("RUNNING".to_owned(), String::new()),
                None => ("SUCCEEDED".to_owned(), String::new()),
            };
            let body = match status.as_str() {
                "SUCCEEDED" => {
                    state.next_id += 1;
                    let sig = format!("sig-{:x}-{}", rand::random::<u32>(), state.next_id);
                    let expires = Instant::now() + config.result_url_ttl;
                    state.files.insert(sig.clone(), ((*id).to_owned(), expires));
                    serde_json::json!({ "jobStatus": { "id": id, "status": status,
                        "result": { "url": format!("{}/files/{id}.csv?sig={sig}", shared.base) } } })
                }
                "FAILED" => serde_json::json!({ "jobStatus": { "id": id, "status": status,
                    "result": { "errorMessage": message } } }),
                _ => serde_json::json!({ "jobStatus": { "id": id, "status": status } }),
            };
            json(200, body.to_string())
        }
        (&Method::GET, ["incontactapi", "services", _version, "contacts", "completed"]) => {
            let q = query(request);
            let skip: usize = q.get("skip").and_then(|v| v.parse().ok()).unwrap_or(0);
            let top: usize = q
                .get("top")
                .and_then(|v| v.parse().ok())
                .unwrap_or(50)
                .clamp(1, 10_000);
            if skip >= config.contacts {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .expect("valid response");
            }
            let contacts: Vec<_> = (skip..(skip + top).min(config.contacts))
                .map(|i| serde_json::json!({ "contactId": i }))
                .collect();
            json(200, serde_json::json!({ "completedContacts": contacts, "totalRecords": config.contacts }).to_string())
        }
        _ => genesys_error(404, "not.found", "no such endpoint in the mock"),
    }
}
