//! The server core: [`MockServer`], its shared state, and the path every
//! request takes (counting, the fault script, authentication and rate
//! limits, the vendor's endpoint, the operation ledger).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{JobScript, MockConfig};
use super::faults::{Fault, FaultScript, Strike};
use super::ledger::{key_of, operation_of, side_effecting, Ledger, MockCounters, Stored};
use super::limits::{Limits, Refusal};
use super::reply::{json, Reply, Vendor};
use super::{cxone, genesys};
use crate::genesys::Region;

/// A mock job: how often its status was read, and its script.
#[derive(Default)]
pub(crate) struct MockJob {
    pub(crate) polls: u32,
    pub(crate) script: Option<JobScript>,
    /// The ledger's name of the submission that made the job.
    pub(crate) operation: String,
    /// Whether the job ended in failure, as a client read it: its
    /// submission no longer counts as applied.
    pub(crate) failed: bool,
}

impl MockJob {
    /// A job made by the submission `request`, following `script`.
    pub(crate) fn new(
        config: &MockConfig,
        request: &Request<Bytes>,
        script: Option<JobScript>,
    ) -> Self {
        Self {
            polls: 0,
            script,
            operation: operation_of(request, &config.operation_id_field),
            failed: false,
        }
    }

    /// Note that a client read the job in `state`: a failed, cancelled
    /// or expired job voids its submission in `ledger`, once, so that
    /// submitting it again (a re-run) is not a duplicate.
    pub(crate) fn read_as(&mut self, state: &str, ledger: &mut Ledger) {
        if !self.failed && matches!(state, "FAILED" | "CANCELLED" | "EXPIRED") {
            self.failed = true;
            ledger.void(&self.operation);
        }
    }
}

/// Everything the mock remembers, behind one lock.
pub(crate) struct State {
    pub(crate) limits: Limits,
    pub(crate) faults: FaultScript,
    pub(crate) counters: MockCounters,
    pub(crate) ledger: Ledger,
    pub(crate) genesys_jobs: HashMap<String, MockJob>,
    pub(crate) cxone_jobs: HashMap<String, MockJob>,
    pub(crate) genesys_scripts: VecDeque<JobScript>,
    pub(crate) cxone_scripts: VecDeque<JobScript>,
    pub(crate) files: HashMap<String, (String, Instant)>,
    pub(crate) contacts_added: u64,
    pub(crate) next_id: u64,
}

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) base: String,
    state: Mutex<State>,
    in_flight: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The form of a token request whose Basic client credentials are
    /// right; `None` otherwise (answer [`invalid_client`]).
    pub(crate) fn client_form(&self, request: &Request<Bytes>) -> Option<HashMap<String, String>> {
        let client_ok = basic_credentials(request).is_some_and(|(id, secret)| {
            id == self.config.client_id && secret == self.config.client_secret
        });
        client_ok.then(|| {
            form_urlencoded::parse(request.body())
                .into_owned()
                .collect()
        })
    }
}

/// RFC 6749's answer to wrong client credentials.
pub(crate) fn invalid_client() -> Reply {
    json(
        401,
        r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
    )
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
            limits: Limits::default(),
            faults: FaultScript::new(config.random_faults.clone()),
            counters: MockCounters::default(),
            ledger: Ledger::default(),
            genesys_jobs: HashMap::new(),
            cxone_jobs: HashMap::new(),
            genesys_scripts: VecDeque::new(),
            cxone_scripts: VecDeque::new(),
            files: HashMap::new(),
            contacts_added: 0,
            next_id: 0,
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
        let prefix = path_prefix.map(str::to_owned);
        self.shared.lock().faults.push(None, prefix, fault, times);
    }

    /// Like [`fault`](Self::fault), for requests with this method only.
    pub fn fault_on(&self, method: Method, path_prefix: &str, fault: Fault, times: usize) {
        let prefix = Some(path_prefix.to_owned());
        self.shared
            .lock()
            .faults
            .push(Some(method), prefix, fault, times);
    }

    /// Drop every scripted fault not yet served (the random ones stay).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
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

    /// `n` more completed contacts, updated after every existing one (data
    /// that changes while a client pages).
    pub fn add_contacts(&self, n: u64) {
        self.shared.lock().contacts_added += n;
    }

    /// Every `Idempotency-Key` sent on a POST whose path starts with
    /// `path_prefix`, in order, faulted attempts included.
    pub fn idempotency_keys(&self, path_prefix: &str) -> Vec<String> {
        self.shared
            .lock()
            .ledger
            .keys_seen
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// How many times the operation `op` was applied. An operation's name
    /// is `METHOD path id`, where the id is the body's
    /// [`operation_id_field`](MockConfig::operation_id_field) (default
    /// `requestId`) or the whole body; `op` is a whole name or a whole id
    /// (`op-1` does not count `op-10`).
    pub fn applied(&self, op: &str) -> u64 {
        self.shared.lock().ledger.count(op)
    }

    /// Applications of an operation that had been applied already (side
    /// effects repeated), whatever their `Idempotency-Key`.
    pub fn duplicate_applications(&self) -> u64 {
        self.shared.lock().counters.duplicate_applications
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> MockCounters {
        let state = self.shared.lock();
        let mut counters = state.counters.clone();
        counters.random_faults = state.faults.drawn.clone();
        counters
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

struct Counting<'a>(&'a Shared);

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn dropped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: dropped")
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Reply, std::io::Error> {
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
                state.ledger.keys_seen.push((path.clone(), key.to_owned()));
            }
        }
        state.faults.next(request.method(), &path)
    };
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = Request::from_parts(parts, body);
    let vendor = Vendor::of(&path);
    let after = match fault.map(|f| f.strike(vendor)) {
        None => None,
        Some(Strike::Before(reply)) => return Ok(reply),
        Some(Strike::Reset) => return Err(dropped()),
        Some(Strike::Delay(wait)) => {
            tokio::time::sleep(wait).await;
            None
        }
        Some(after) => Some(after),
    };
    let reply = route(&shared, &request);
    match after {
        Some(Strike::AfterDrop) => Err(dropped()),
        Some(Strike::AfterStatus(status)) => Ok(vendor.error(
            status,
            "internal.server.error",
            "The server encountered an error after applying the request",
        )),
        _ => Ok(reply),
    }
}

fn route(shared: &Shared, request: &Request<Bytes>) -> Reply {
    let path = request.uri().path();
    let mut state = shared.lock();
    match (request.method(), path) {
        (&Method::POST, "/oauth/token") => genesys::token(shared, &mut state, request),
        (&Method::POST, "/auth/token") => cxone::token(shared, &mut state, request),
        (&Method::GET, p) if p.starts_with("/files/") => cxone::file(&mut state, request),
        (&Method::GET, p) => match cxone::discovery(shared, p) {
            Some(reply) => reply,
            None => api(shared, &mut state, request),
        },
        _ => api(shared, &mut state, request),
    }
}

/// An API call: the bearer token and rate limit, the key replay (when keys
/// are honoured), the vendor's endpoint, the ledger, the headers.
fn api(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let config = &shared.config;
    let path_vendor = Vendor::of(request.uri().path());
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let admitted = match state.limits.admit(config, &mut state.counters, token) {
        Ok(admitted) => admitted,
        Err(Refusal::Missing) => return path_vendor.unauthorized(true),
        Err(Refusal::Invalid) => return path_vendor.unauthorized(false),
    };
    let vendor = admitted.vendor;
    let mut reply = if admitted.limited {
        vendor.too_many(admitted.reset)
    } else {
        apply(shared, state, request, vendor)
    };
    let headers = reply.headers_mut();
    if vendor == Vendor::Genesys {
        headers.insert("inin-ratelimit-allowed", config.rate_limit.into());
        headers.insert("inin-ratelimit-count", admitted.used.into());
        headers.insert("inin-ratelimit-reset", admitted.reset.into());
        state.next_id += 1;
        let correlation = format!("mock-corr-{}", state.next_id);
        headers.insert("inin-correlation-id", correlation.parse().expect("ascii"));
    }
    reply
}

/// Run the endpoint and record a side effect in the ledger; with keys
/// honoured, a repeated key gets the first answer back, not applied again.
fn apply(shared: &Shared, state: &mut State, request: &Request<Bytes>, vendor: Vendor) -> Reply {
    let config = &shared.config;
    let effect = side_effecting(request.method());
    let key = key_of(request).filter(|_| effect);
    if let Some(stored) = key
        .filter(|_| config.honour_idempotency_keys)
        .and_then(|k| state.ledger.replay(k))
    {
        state.counters.replayed_by_key += 1;
        let mut reply = Response::new(Full::new(stored.body));
        *reply.status_mut() = stored.status;
        *reply.headers_mut() = stored.headers;
        return reply;
    }
    let reply = match vendor {
        Vendor::Genesys => genesys::endpoint(shared, state, request),
        Vendor::Cxone => cxone::endpoint(shared, state, request),
    };
    if effect && reply.status().is_success() {
        let stored = config.honour_idempotency_keys.then(|| Stored {
            status: reply.status(),
            headers: reply.headers().clone(),
            body: body_of(&reply),
        });
        let operation = operation_of(request, &config.operation_id_field);
        state
            .ledger
            .applied(&mut state.counters, operation, key, stored);
    }
    reply
}

fn body_of(reply: &Reply) -> Bytes {
    // a `Full` body is one chunk: read it without polling
    use http_body::Body as _;
    let body = reply.body();
    match body.size_hint().exact() {
        Some(0) => Bytes::new(),
        _ => {
            let mut copy = body.clone();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::Pin::new(&mut copy).poll_frame(&mut cx) {
                std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            }
        }
    }
}
