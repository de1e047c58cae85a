//! The retry-storm simulation shared by `examples/storm.rs` (the full
//! report) and `tests/storm.rs` (a quick scenario whose structural
//! properties are asserted).
//!
//! A simulated API (an in-process `tower::Service`, no sockets) accepts at
//! most `capacity` requests per fixed one-second window and answers every
//! request over that with `429 Too Many Requests` and a `Retry-After` in
//! whole seconds up to the end of the window, like per-token API limits do.
//! Responses arrive after a fixed latency. Clients fire bursts of requests on
//! a schedule (open loop: a burst goes out whether or not earlier ones have
//! finished), all through one integration, i.e. one rate limit.
//!
//! A request counts as sent *inside an announced window* when it reaches the
//! API after a 429 has been delivered to the integration and before the
//! `Retry-After` of that 429 has passed. Requests already in flight when the
//! 429 was delivered are not counted: nobody could have held them back.
//!
//! Everything runs on `tokio::time` with paused time and seeded random
//! sources, so a run is deterministic and a simulated minute costs
//! milliseconds.

#![allow(dead_code)] // each includer uses a different part

use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::retry::backoff::MakeBackoff as _;
use tower::retry::backoff::{Backoff as _, ExponentialBackoff, ExponentialBackoffMaker};
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::util::rng::HasherRng;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use tower_cx::backoff::SharedRng;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;

/// The load and the API.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Requests the API accepts per one-second window (C).
    pub capacity: u32,
    /// Clients sharing the integration.
    pub clients: u32,
    /// Bursts each client sends.
    pub bursts: u32,
    /// Requests in one burst.
    pub burst_size: u32,
    /// Time between a client's bursts.
    pub period: Duration,
    /// Client start times are spread evenly over this span.
    pub spread: Duration,
    /// Time from a request reaching the API to its response arriving.
    pub latency: Duration,
    /// Seed of every random source.
    pub seed: u64,
    /// The API's fixed window: it accepts `capacity` per second of it
    /// (one second unless a scenario says otherwise).
    pub window: Duration,
    /// Whether every answer advertises the quota the Genesys way
    /// (`inin-ratelimit-allowed`, `-count`, `-reset`).
    pub advertise: bool,
}

impl Scenario {
    /// A sustained storm: 200 clients, C = 100 requests per second, 6
    /// bursts of 3 every 5 s (120 % of capacity on average, 6 times it
    /// during the first second of each period), 20 ms latency.
    pub fn storm() -> Self {
        Self {
            capacity: 100,
            clients: 200,
            bursts: 6,
            burst_size: 3,
            period: Duration::from_secs(5),
            spread: Duration::from_secs(1),
            latency: Duration::from_millis(20),
            seed: 7,
            window: Duration::from_secs(1),
            advertise: false,
        }
    }

    /// Bursts with room between them: as [`storm`](Self::storm) with bursts
    /// of 2 (80 % of capacity on average, 4 times it at each burst), so
    /// that every request can be served and latency compares fairly.
    pub fn bursty() -> Self {
        Self {
            burst_size: 2,
            ..Self::storm()
        }
    }

    /// Every request of the scenario.
    pub fn requests(&self) -> u64 {
        u64::from(self.clients) * u64::from(self.bursts) * u64::from(self.burst_size)
    }
}

/// A client-side strategy against the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// What most hand-written integrations do: each request loops on its
    /// own, 100 ms doubling (no jitter), up to 6 attempts, ignoring
    /// `Retry-After` and every other request.
    Naive,
    /// `tower::retry` with tower's `ExponentialBackoff` (100 ms to 10 s,
    /// jitter 0.99) and `TpsBudget::default()`, retrying 429 and 5xx, up to
    /// 4 attempts.
    TowerRetry,
    /// tower-cx: `RetryLayer` (defaults, seeded jitter), circuit breaker,
    /// `PriorityLimitLayer` (16 in flight, shared rate gate) pacing at the
    /// vendor's announced limit with a sliding window
    /// (`pacing_window(C, 1 s)`: never over C in any second, bursts allowed),
    /// serving the newest waiter first once the queue has stood for 500 ms
    /// (`adaptive_lifo`).
    TowerCx,
    /// tower-cx with the sliding-window pacing, first come first served.
    TowerCxWindowFifo,
    /// tower-cx pacing evenly (`pacing(C, 1 s)`: one request every 1/C s),
    /// first come first served.
    TowerCxEvenFifo,
    /// tower-cx without pacing: what the shared gate and the retry layer do
    /// alone when the limit is not known in advance.
    TowerCxNoPacing,
    /// tower-cx learning the rate (`learn_rate()`, no rate configured):
    /// from the advertised quota, or from 429s when nothing is advertised.
    TowerCxLearned,
    /// A client in the style of AWS's adaptive retry mode: a token bucket
    /// whose rate follows CUBIC on throttling (cut to 0.7 of the measured
    /// rate, recovery scaled by 0.4), up to 3 attempts with exponential
    /// backoff (100 ms, doubling, no jitter), `Retry-After` ignored.
    AwsAdaptive,
    /// tower-cx pacing evenly at a wrongly set rate, nothing learned.
    TowerCxFixed(RateSet),
    /// tower-cx learning, the wrongly set rate as its ceiling.
    TowerCxLearnedCeiling(RateSet),
}

/// A wrongly set rate, against the real capacity C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSet {
    /// 2 C.
    Double,
    /// C / 2.
    Half,
}

impl Strategy {
    /// All strategies, in report order.
    pub const ALL: [Strategy; 6] = [
        Strategy::Naive,
        Strategy::TowerRetry,
        Strategy::TowerCx,
        Strategy::TowerCxWindowFifo,
        Strategy::TowerCxEvenFifo,
        Strategy::TowerCxNoPacing,
    ];

    /// The strategies of the scenarios where the limit is not configured.
    pub const LEARNING: [Strategy; 2] = [Strategy::TowerCxLearned, Strategy::AwsAdaptive];

    /// The strategies of the wrongly set rate.
    pub const WRONG_RATE: [Strategy; 5] = [
        Strategy::TowerCxLearned,
        Strategy::TowerCxFixed(RateSet::Double),
        Strategy::TowerCxLearnedCeiling(RateSet::Double),
        Strategy::TowerCxFixed(RateSet::Half),
        Strategy::TowerCxLearnedCeiling(RateSet::Half),
    ];

    /// The row label.
    pub fn label(&self) -> &'static str {
        match self {
            Strategy::TowerCxLearned => {
                "tower-cx learning the rate (`learn_rate()`, none configured)"
            }
            Strategy::AwsAdaptive => "AWS-adaptive-style client (CUBIC token bucket, 3 attempts)",
            Strategy::TowerCxFixed(RateSet::Double) => {
                "tower-cx, `pacing` set to 2 C, nothing learned"
            }
            Strategy::TowerCxFixed(RateSet::Half) => {
                "tower-cx, `pacing` set to C / 2, nothing learned"
            }
            Strategy::TowerCxLearnedCeiling(RateSet::Double) => {
                "tower-cx, `pacing` 2 C + `learn_rate()` (2 C is the ceiling)"
            }
            Strategy::TowerCxLearnedCeiling(RateSet::Half) => {
                "tower-cx, `pacing` C / 2 + `learn_rate()` (C / 2 is the ceiling: stays C / 2)"
            }
            Strategy::Naive => "naive retry loop",
            Strategy::TowerRetry => "tower::retry + ExponentialBackoff + TpsBudget",
            Strategy::TowerCx => {
                "tower-cx (retry + gate + budget + window pacing + adaptive LIFO 500 ms)"
            }
            Strategy::TowerCxWindowFifo => "tower-cx, window pacing, first come first served",
            Strategy::TowerCxEvenFifo => "tower-cx, even pacing, first come first served",
            Strategy::TowerCxNoPacing => "tower-cx without pacing (retry + gate + budget)",
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The strategy.
    pub strategy: Strategy,
    /// Logical requests issued.
    pub requests: u64,
    /// Logical requests that ended with a 200.
    pub successes: u64,
    /// Requests that reached the API (every attempt).
    pub attempts: u64,
    /// Attempts that reached the API inside an announced `Retry-After`
    /// window.
    pub in_window: u64,
    /// 429 responses the API sent.
    pub rejected: u64,
    /// From the first request's start to the last request's end.
    pub makespan: Duration,
    /// Median time from a request's start to its success; `None` when the
    /// request at that rank failed (a failed request never completes).
    pub p50: Option<Duration>,
    /// 99th percentile of the same.
    pub p99: Option<Duration>,
    /// The API's capacity, per second.
    pub capacity: u32,
    /// When each attempt reached the API, from the start of the run, in
    /// arrival order (for charts: [`attempts_per_bin`](Self::attempts_per_bin)).
    pub sent: Vec<Duration>,
}

impl Report {
    /// Successes per second over the run (first start to last end), as a
    /// fraction of capacity.
    pub fn goodput(&self) -> f64 {
        self.successes as f64 / (self.makespan.as_secs_f64() * f64::from(self.capacity))
    }

    /// Attempts that reached the API per successful logical request.
    pub fn attempts_per_success(&self) -> f64 {
        self.attempts as f64 / self.successes.max(1) as f64
    }

    /// Attempts that reached the API in each `bin` from the start of the
    /// run, up to the bin of the last attempt (empty bins included).
    pub fn attempts_per_bin(&self, bin: Duration) -> Vec<u64> {
        assert!(!bin.is_zero(), "a bin must be longer than zero");
        let index = |t: &Duration| (t.as_nanos() / bin.as_nanos()) as usize;
        let mut bins = vec![0; self.sent.iter().map(index).max().map_or(0, |i| i + 1)];
        for t in &self.sent {
            bins[index(t)] += 1;
        }
        bins
    }

    /// The header of the table [`Display`](fmt::Display) writes rows of.
    pub fn table_header() -> &'static str {
        "| strategy | succeeded | goodput (x C) | attempts / success | p50 | p99 | in-window requests | 429s | makespan |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {}/{} | {:.3} | {:.3} | {} | {} | {} | {} | {:.1} s |",
            self.strategy.label(),
            self.successes,
            self.requests,
            self.goodput(),
            self.attempts_per_success(),
            seconds(self.p50),
            seconds(self.p99),
            self.in_window,
            self.rejected,
            self.makespan.as_secs_f64(),
        )
    }
}

fn seconds(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "failed".to_owned(),
    }
}

/// The API's books.
#[derive(Debug)]
struct ApiState {
    origin: Instant,
    /// Requests accepted per window.
    capacity: u32,
    window_len: Duration,
    advertise: bool,
    latency: Duration,
    window: u64,
    used: u32,
    /// The end of the latest `Retry-After` window delivered to the client.
    announced_until: Option<Instant>,
    attempts: u64,
    in_window: u64,
    rejected: u64,
    /// When each attempt arrived, from `origin`.
    sent: Vec<Duration>,
}

/// The simulated API: a `tower::Service`, cheap to clone (shared books).
#[derive(Debug, Clone)]
pub struct SimApi {
    state: Arc<Mutex<ApiState>>,
}

type ApiFuture = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

impl SimApi {
    /// An API for `scenario` whose one-second windows start at `origin`.
    pub fn new(scenario: &Scenario, origin: Instant) -> Self {
        Self {
            state: Arc::new(Mutex::new(ApiState {
                origin,
                capacity: scenario.capacity * scenario.window.as_secs().max(1) as u32,
                window_len: scenario.window,
                advertise: scenario.advertise,
                latency: scenario.latency,
                window: 0,
                used: 0,
                announced_until: None,
                attempts: 0,
                in_window: 0,
                rejected: 0,
                sent: Vec::new(),
            })),
        }
    }

    /// `(attempts, in_window, rejected)` so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        let s = self.state.lock().unwrap();
        (s.attempts, s.in_window, s.rejected)
    }

    /// When each attempt so far arrived, from `origin`, in arrival order.
    pub fn sent(&self) -> Vec<Duration> {
        self.state.lock().unwrap().sent.clone()
    }
}

impl Service<Request<Body>> for SimApi {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = ApiFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Body>) -> ApiFuture {
        let now = Instant::now();
        let (latency, announce, quota) = {
            let mut s = self.state.lock().unwrap();
            s.attempts += 1;
            if s.announced_until.is_some_and(|until| now < until) {
                s.in_window += 1;
            }
            let elapsed = now - s.origin;
            s.sent.push(elapsed);
            let window = (elapsed.as_nanos() / s.window_len.as_nanos()) as u64;
            if window != s.window {
                s.window = window;
                s.used = 0;
            }
            // whole seconds up to the end of the window, at least 1
            let left = s.window_len * (window as u32 + 1) - elapsed;
            let reset = (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1);
            let announce = if s.used < s.capacity {
                s.used += 1;
                None
            } else {
                s.rejected += 1;
                Some(reset)
            };
            let quota = s.advertise.then_some((s.capacity, s.used, reset));
            (s.latency, announce, quota)
        };
        let state = self.state.clone();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let mut response = match announce {
                None => Response::new(()),
                Some(secs) => {
                    // Delivered now: from here on the integration knows.
                    let until = now + Duration::from_secs(secs);
                    let mut s = state.lock().unwrap();
                    s.announced_until = Some(s.announced_until.map_or(until, |u| u.max(until)));
                    Response::builder()
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .header("retry-after", secs.to_string())
                        .body(())
                        .unwrap()
                }
            };
            if let Some((allowed, count, reset)) = quota {
                let headers = response.headers_mut();
                headers.insert("inin-ratelimit-allowed", allowed.into());
                headers.insert("inin-ratelimit-count", count.into());
                headers.insert("inin-ratelimit-reset", reset.into());
            }
            Ok(response)
        })
    }
}

/// A request to the simulated API.
pub fn request() -> Request<Body> {
    Request::get("https://api.example.test/api/v2/users")
        .body(Body::empty())
        .unwrap()
}

/// A logical request through some client; `true` when it ended with a 200.
type Client = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

fn naive_client(api: SimApi) -> Client {
    Arc::new(move || {
        let api = api.clone();
        Box::pin(async move {
            let mut delay = Duration::from_millis(100);
            for attempt in 1..=6 {
                match api.clone().oneshot(request()).await {
                    Ok(response) if response.status() == StatusCode::OK => return true,
                    _ if attempt == 6 => return false,
                    _ => {}
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            false
        })
    })
}

/// tower's retry, used the way its docs suggest: a policy holding a backoff
/// from an `ExponentialBackoffMaker` and a shared `TpsBudget`.
#[derive(Clone)]
struct TowerPolicy {
    backoff: ExponentialBackoff<HasherRng<BuildHasherDefault<std::hash::DefaultHasher>>>,
    budget: Arc<TpsBudget>,
    attempts: u32,
}

impl tower::retry::Policy<Request<Body>, Response<()>, BoxError> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<()>, BoxError>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(response) => {
                response.status() == StatusCode::TOO_MANY_REQUESTS
                    || response.status().is_server_error()
            }
            Err(_) => true,
        };
        if retryable && self.attempts < 4 && self.budget.withdraw() {
            Some(self.backoff.next_backoff())
        } else {
            None
        }
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        if self.attempts == 0 {
            self.budget.deposit();
        }
        self.attempts += 1;
        tower_cx::body::try_clone_request(request)
    }
}

fn tower_retry_client(api: SimApi) -> Client {
    let mut maker = ExponentialBackoffMaker::new(
        Duration::from_millis(100),
        Duration::from_secs(10),
        0.99,
        HasherRng::with_hasher(BuildHasherDefault::<std::hash::DefaultHasher>::default()),
    )
    .unwrap();
    let policy = TowerPolicy {
        backoff: maker.make_backoff(),
        budget: Arc::new(TpsBudget::default()),
        attempts: 0,
    };
    let service = tower::retry::Retry::new(policy, api);
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move {
            matches!(service.oneshot(request()).await, Ok(r) if r.status() == StatusCode::OK)
        })
    })
}

/// How the tower-cx limiter paces and orders its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    WindowLifo,
    WindowFifo,
    EvenFifo,
    NoPacing,
    /// `learn_rate()`, with this rate (per window) as the ceiling if any.
    Learn(Option<u32>),
    /// `pacing` at this rate per window.
    Fixed(u32),
}

fn tower_cx_client(api: SimApi, scenario: &Scenario, setup: Setup) -> Client {
    let limiter = PriorityLimitLayer::new(16).max_queue(1_000_000);
    let second = Duration::from_secs(1);
    let limiter = match setup {
        Setup::WindowLifo => limiter
            .pacing_window(scenario.capacity, second)
            .adaptive_lifo(Duration::from_millis(500)),
        Setup::WindowFifo => limiter.pacing_window(scenario.capacity, second),
        Setup::EvenFifo => limiter.pacing(scenario.capacity, second),
        Setup::NoPacing => limiter,
        Setup::Learn(None) => limiter.learn_rate(),
        Setup::Learn(Some(per_window)) => limiter.learn_rate().pacing(per_window, scenario.window),
        Setup::Fixed(per_window) => limiter.pacing(per_window, scenario.window),
    };
    let service = ServiceBuilder::new()
        .layer(
            RetryLayer::new()
                .deadline(Duration::from_secs(120))
                .rng(SharedRng::seeded(scenario.seed)),
        )
        .layer(CircuitBreakerLayer::new())
        .layer(limiter)
        .service(api);
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move {
            matches!(service.oneshot(request()).await, Ok(r) if r.status() == StatusCode::OK)
        })
    })
}

/// When client `client` sends burst `burst`, from the start of the run.
fn start_of(scenario: &Scenario, client: u32, burst: u32) -> Duration {
    scenario.period * burst
        + scenario
            .spread
            .mul_f64(f64::from(client) / f64::from(scenario.clients))
}

/// Run `scenario` with `strategy`. Needs a Tokio runtime with paused time
/// (`start_paused = true`) to be quick and deterministic.
pub async fn run(scenario: &Scenario, strategy: Strategy) -> Report {
    let origin = Instant::now();
    let api = SimApi::new(scenario, origin);
    let client = match strategy {
        Strategy::Naive => naive_client(api.clone()),
        Strategy::TowerRetry => tower_retry_client(api.clone()),
        Strategy::TowerCx => tower_cx_client(api.clone(), scenario, Setup::WindowLifo),
        Strategy::TowerCxWindowFifo => tower_cx_client(api.clone(), scenario, Setup::WindowFifo),
        Strategy::TowerCxEvenFifo => tower_cx_client(api.clone(), scenario, Setup::EvenFifo),
        Strategy::TowerCxNoPacing => tower_cx_client(api.clone(), scenario, Setup::NoPacing),
        Strategy::TowerCxLearned => tower_cx_client(api.clone(), scenario, Setup::Learn(None)),
        Strategy::AwsAdaptive => aws_adaptive_client(api.clone()),
        Strategy::TowerCxFixed(set) => tower_cx_client(
            api.clone(),
            scenario,
            Setup::Fixed(set.per_window(scenario)),
        ),
        Strategy::TowerCxLearnedCeiling(set) => tower_cx_client(
            api.clone(),
            scenario,
            Setup::Learn(Some(set.per_window(scenario))),
        ),
    };

    let mut tasks = Vec::new();
    for burst in 0..scenario.bursts {
        for c in 0..scenario.clients {
            let start = origin + start_of(scenario, c, burst);
            for _ in 0..scenario.burst_size {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(start).await;
                    let ok = client().await;
                    (ok, start, Instant::now())
                }));
            }
        }
    }

    let mut ends = Vec::new();
    // time to success; a failure sorts after every success
    let mut to_success = Vec::new();
    for task in tasks {
        let (ok, start, end) = task.await.expect("a client task panicked");
        ends.push(end);
        to_success.push(ok.then(|| end - start));
    }
    to_success.sort_by_key(|d| d.unwrap_or(Duration::MAX));
    let percentile = |p: f64| -> Option<Duration> {
        let rank = (p * to_success.len() as f64).ceil() as usize;
        to_success[rank.clamp(1, to_success.len()) - 1]
    };
    let last = ends.into_iter().max().unwrap_or(origin);
    let (attempts, in_window, rejected) = api.counters();
    Report {
        strategy,
        requests: scenario.requests(),
        successes: to_success.iter().filter(|d| d.is_some()).count() as u64,
        attempts,
        in_window,
        rejected,
        makespan: last - origin,
        p50: percentile(0.50),
        p99: percentile(0.99),
        capacity: scenario.capacity,
        sent: api.sent(),
    }
}

impl RateSet {
    /// The wrong rate, in requests per window of the scenario's API.
    fn per_window(self, scenario: &Scenario) -> u32 {
        let right = scenario.capacity * scenario.window.as_secs().max(1) as u32;
        match self {
            RateSet::Double => right * 2,
            RateSet::Half => right / 2,
        }
    }
}

impl Scenario {
    /// An unknown limit: an API allowing 300 requests per 60 s window
    /// (C = 5 per second, Genesys's default per-token limit) that
    /// advertises it on every answer the Genesys way; 30 clients send 2
    /// requests every 10 s for 3 minutes (120 % of capacity), 100 ms
    /// latency.
    pub fn unknown_limit() -> Self {
        Self {
            capacity: 5,
            clients: 30,
            bursts: 18,
            burst_size: 2,
            period: Duration::from_secs(10),
            spread: Duration::from_secs(10),
            latency: Duration::from_millis(100),
            seed: 5,
            window: Duration::from_secs(60),
            advertise: true,
        }
    }

    /// A silent limit: the sustained storm against an API that advertises
    /// nothing and answers 429 with `Retry-After` only.
    pub fn silent_limit() -> Self {
        Self::storm()
    }
}

/// The AWS-adaptive-style client's rate: a token bucket whose fill rate
/// follows CUBIC once throttled (written from the public description of
/// the adaptive retry mode: cut to `BETA` of the measured send rate on a
/// throttle, `W(t) = SCALE (t - K)^3 + W_max` after it, at most twice the
/// measured rate; unlimited until the first throttle).
#[derive(Debug)]
struct AwsBucket {
    enabled: bool,
    fill_rate: f64,
    tokens: f64,
    last_refill: Instant,
    w_max: f64,
    last_throttle: Instant,
    measured: f64,
    bucket_start: Instant,
    bucket_count: u32,
}

impl AwsBucket {
    const BETA: f64 = 0.7;
    const SCALE: f64 = 0.4;
    const SMOOTH: f64 = 0.8;

    fn new(now: Instant) -> Self {
        Self {
            enabled: false,
            fill_rate: 0.0,
            tokens: 0.0,
            last_refill: now,
            w_max: 0.0,
            last_throttle: now,
            measured: 0.0,
            bucket_start: now,
            bucket_count: 0,
        }
    }

    /// Take a token at `now` if there is one; else how long until one
    /// would be there at the current rate (the caller waits, then asks
    /// again: the rate may have changed meanwhile).
    fn take(&mut self, now: Instant) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let capacity = self.fill_rate.max(1.0);
        self.tokens =
            (self.tokens + (now - self.last_refill).as_secs_f64() * self.fill_rate).min(capacity);
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        Some(Duration::from_secs_f64(
            (1.0 - self.tokens) / self.fill_rate,
        ))
    }

    /// A response at `now`: measure the send rate (half-second buckets,
    /// smoothed) and follow CUBIC.
    fn answered(&mut self, throttled: bool, now: Instant) {
        let elapsed = (now - self.bucket_start).as_secs_f64();
        self.bucket_count += 1;
        if elapsed >= 0.5 {
            let rate = f64::from(self.bucket_count) / elapsed;
            self.measured = rate * Self::SMOOTH + self.measured * (1.0 - Self::SMOOTH);
            self.bucket_count = 0;
            self.bucket_start = now;
        }
        if throttled {
            let rate = if self.enabled {
                self.measured.min(self.fill_rate)
            } else {
                self.measured
            };
            self.w_max = rate.max(0.5);
            self.last_throttle = now;
            self.fill_rate = self.w_max * Self::BETA;
            self.enabled = true;
        } else if self.enabled {
            let k = (self.w_max * (1.0 - Self::BETA) / Self::SCALE).cbrt();
            let t = (now - self.last_throttle).as_secs_f64();
            let cubic = Self::SCALE * (t - k).powi(3) + self.w_max;
            self.fill_rate = cubic.min(2.0 * self.measured).max(0.5);
        }
    }
}

fn aws_adaptive_client(api: SimApi) -> Client {
    let bucket = Arc::new(Mutex::new(AwsBucket::new(Instant::now())));
    Arc::new(move || {
        let (api, bucket) = (api.clone(), bucket.clone());
        Box::pin(async move {
            let mut backoff = Duration::from_millis(100);
            for attempt in 1..=3 {
                loop {
                    let wait = bucket.lock().unwrap().take(Instant::now());
                    match wait {
                        None => break,
                        Some(wait) => tokio::time::sleep(wait).await,
                    }
                }
                let ok = matches!(
                    api.clone().oneshot(request()).await,
                    Ok(r) if r.status() == StatusCode::OK
                );
                bucket.lock().unwrap().answered(!ok, Instant::now());
                if ok {
                    return true;
                }
                if attempt < 3 {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            false
        })
    })
}
