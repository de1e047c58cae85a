//! Scaling: what one operation costs as the structure it touches grows.
//!
//! Everything goes through the public API, on a current-thread runtime
//! with a paused Tokio clock (timers fire when the runtime is idle, so no
//! run waits in real time), and is timed with the wall clock. Each cell is
//! the wall time of the whole batch divided by its size, the best of
//! `SCALING_RUNS` runs (default 3). Flat rows mean constant cost per item.
//!
//! ```sh
//! cargo run --release --example scaling            # every table
//! cargo run --release --example scaling -- queue   # some of them
//! ```
//!
//! Tables: `queue` (the limiter's waiting room: enqueue, cancel in three
//! orders, throughput through a limit of 16), `breaker` (the failure-rate
//! window), `pacing` (the sliding-window pacing log), `stats` (the audit
//! stats), `sinks` (the JSON-lines and webhook queues, growing and full) and
//! `share` (members of a `LocalPauseShare`, the in-process counterpart of
//! the fleet's subscriptions).

use std::future::{pending, ready, Future};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_cx::audit::{callback, AuditLayer, AuditSink, JsonLinesSink, NoopSink, WebhookSink};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::share::{LocalPauseShare, PauseShare};

/// The sizes every table is measured at.
const SIZES: [usize; 3] = [10_000, 40_000, 160_000];

/// A table's name and what prints it (given the number of runs).
type Table = (&'static str, fn(usize));

fn main() {
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = std::env::var("SCALING_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let wanted = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    println!("Per item, best of {runs} runs (SCALING_RUNS); wall time on a paused Tokio clock.\n");
    let tables: [Table; 6] = [
        ("queue", queue),
        ("breaker", breaker),
        ("pacing", pacing),
        ("stats", stats),
        ("sinks", sinks),
        ("share", share),
    ];
    for (name, table) in tables {
        if wanted(name) {
            table(runs);
        }
    }
}

// ---------------------------------------------------------------- helpers

/// A current-thread runtime whose clock is paused.
fn paused_runtime() -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async { tokio::time::pause() });
    runtime
}

/// The request every call sends.
fn request() -> Request<Body> {
    Request::get("https://api.mypurecloud.com/api/v2/users")
        .header("accept", "application/json")
        .body(Body::empty())
        .expect("a valid request")
}

/// A ready upstream answering 200 at once.
fn upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<()>, BoxError>>,
> + Clone {
    service_fn(|_req: Request<Body>| ready(Ok::<_, BoxError>(Response::new(()))))
}

/// Call a service that is always ready (its readiness polled, as tower asks).
fn call<S: Service<Request<Body>>>(service: &mut S, request: Request<Body>) -> S::Future {
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => service.call(request),
        _ => panic!("the measured services are always ready"),
    }
}

/// Nanoseconds per item.
fn per_item(elapsed: Duration, items: usize) -> f64 {
    elapsed.as_nanos() as f64 / items.max(1) as f64
}

/// The best (lowest) of `runs` runs, column by column.
fn best<const N: usize>(runs: usize, mut run: impl FnMut() -> [f64; N]) -> [f64; N] {
    let mut best = [f64::INFINITY; N];
    for _ in 0..runs {
        for (b, v) in best.iter_mut().zip(run()) {
            *b = b.min(v);
        }
    }
    best
}

/// A cost in nanoseconds, as microseconds.
fn us(ns: f64) -> String {
    format!("{:.3} µs", ns / 1000.0)
}

fn header(title: &str, note: &str, columns: &[&str]) {
    println!("### {title}\n\n{note}\n");
    println!("| n | {} |", columns.join(" | "));
    println!("|---:|{}", "---:|".repeat(columns.len()));
}

fn row(n: usize, cells: &[String]) {
    println!("| {n} | {} |", cells.join(" | "));
}

/// A deterministic shuffle (SplitMix64 and Fisher-Yates): the same order
/// every run.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

// ------------------------------------------------------------------ queue

/// Which waiters a cancellation run drops first.
#[derive(Clone, Copy)]
enum Order {
    OldestFirst,
    NewestFirst,
    Random,
    /// Random, the futures left where they were made (in arrival order):
    /// the harness's own reads are scattered too.
    Scattered,
}

impl Order {
    /// The arrival numbers of `n` waiters, in the order they are dropped.
    fn of(self, n: usize) -> Vec<usize> {
        match self {
            Order::OldestFirst => (0..n).collect(),
            Order::NewestFirst => (0..n).rev().collect(),
            Order::Random | Order::Scattered => shuffled(n, 19),
        }
    }
}

/// Drop `waiters` (in arrival order) in `order`; per waiter. The futures
/// are first laid out in the order they will be dropped, so that the
/// harness walks its own memory front to back whatever the order, and what
/// differs between orders is the limiter's work (and its memory).
fn drop_in<F>(waiters: Vec<F>, order: Order) -> f64 {
    let n = waiters.len();
    let mut waiters: Vec<Option<F>> = waiters.into_iter().map(Some).collect();
    if let Order::Scattered = order {
        let order = order.of(n);
        let start = Instant::now();
        for i in order {
            waiters[i] = None;
        }
        return per_item(start.elapsed(), n);
    }
    let mut ordered: Vec<F> = Order::of(order, n)
        .into_iter()
        .map(|i| waiters[i].take().expect("each waiter once"))
        .collect();
    let start = Instant::now();
    for waiter in ordered.drain(..) {
        drop(waiter);
    }
    per_item(start.elapsed(), n)
}

/// A request that allocates nothing, so that the queue tables time the
/// limiter rather than the allocator.
fn bare_request() -> Request<Body> {
    Request::new(Body::empty())
}

/// One permit, held; `n` waiters queued (timed: the enqueue); then every
/// waiter dropped in `order` (timed: the cancellation). Per waiter.
fn cancel_run(runtime: &tokio::runtime::Runtime, n: usize, order: Order) -> (f64, f64) {
    let _guard = runtime.enter();
    let layer = PriorityLimitLayer::new(1).max_queue(n);
    let handle = layer.handle();
    let mut service = layer.layer(upstream());
    // never polled: it keeps the only permit
    let busy = call(&mut service, bare_request());
    let start = Instant::now();
    let waiters: Vec<_> = (0..n).map(|_| call(&mut service, bare_request())).collect();
    let enqueue = per_item(start.elapsed(), n);
    assert_eq!(handle.status().queued, [0, n, 0]);
    let cancel = drop_in(waiters, order);
    assert_eq!(handle.status().queued, [0, 0, 0]);
    drop(busy);
    assert_eq!(handle.status().in_flight, 0);
    (enqueue, cancel)
}

/// The same through tower's `ConcurrencyLimit`: one clone holds the only
/// permit, `n` clones wait for it in `poll_ready` (tower's semaphore queue),
/// then are dropped in `order`.
fn tower_cancel_run(runtime: &tokio::runtime::Runtime, n: usize, order: Order) -> (f64, f64) {
    let _guard = runtime.enter();
    let mut busy = tower::limit::ConcurrencyLimit::new(upstream(), 1);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(busy.poll_ready(&mut cx).is_ready());
    let start = Instant::now();
    let waiters: Vec<_> = (0..n)
        .map(|_| {
            let mut waiter = busy.clone();
            assert!(waiter.poll_ready(&mut cx).is_pending());
            waiter
        })
        .collect();
    let enqueue = per_item(start.elapsed(), n);
    let cancel = drop_in(waiters, order);
    (enqueue, cancel)
}

/// `n` requests at once through a limit of 16 over an upstream that takes
/// 1 ms (paused clock): per request, wall time.
fn through_limit<S>(runtime: &tokio::runtime::Runtime, n: usize, service: S) -> f64
where
    S: Service<Request<Body>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    runtime.block_on(async move {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            tasks.spawn(service.clone().oneshot(bare_request()));
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("no panic").expect("a response");
        }
        per_item(start.elapsed(), n)
    })
}

/// An upstream that answers after 1 ms.
fn slow_upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone
       + Send {
    service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, BoxError>(Response::new(()))
    })
}

/// Enqueue, then cancellation in three orders, with `run`; one table row.
fn cancel_row(
    runtime: &tokio::runtime::Runtime,
    runs: usize,
    n: usize,
    run: fn(&tokio::runtime::Runtime, usize, Order) -> (f64, f64),
) {
    let [enqueue, oldest, newest, random, scattered] = best(runs, || {
        let (e1, oldest) = run(runtime, n, Order::OldestFirst);
        let (e2, newest) = run(runtime, n, Order::NewestFirst);
        let (e3, random) = run(runtime, n, Order::Random);
        let (e4, scattered) = run(runtime, n, Order::Scattered);
        [
            e1.min(e2).min(e3).min(e4),
            oldest,
            newest,
            random,
            scattered,
        ]
    });
    let worst = newest.max(random) / oldest;
    row(
        n,
        &[
            us(enqueue),
            us(oldest),
            us(newest),
            us(random),
            format!("{worst:.2}"),
            us(scattered),
        ],
    );
}

fn queue(runs: usize) {
    let columns = [
        "enqueue",
        "drop oldest-first",
        "drop newest-first",
        "drop random",
        "worst / oldest-first",
        "drop random, futures scattered",
    ];
    let runtime = paused_runtime();
    header(
        "The limiter's queue (`PriorityLimitLayer`): enqueue and cancellation",
        "One permit held, n waiters queued at one priority (requests that \
         allocate nothing), then every waiter's future dropped; per waiter. \
         The futures are laid out in the order they are dropped, so that the \
         orders differ only in the limiter's work and memory; the last column \
         leaves them in arrival order (the harness's reads are random too).",
        &columns,
    );
    for n in SIZES {
        cancel_row(&runtime, runs, n, cancel_run);
    }
    println!();
    header(
        "For reference: tower's `ConcurrencyLimit` (a semaphore's intrusive waiter list)",
        "The same harness: one clone holds the permit, n clones wait in \
         `poll_ready`, then are dropped.",
        &columns,
    );
    for n in SIZES {
        cancel_row(&runtime, runs, n, tower_cancel_run);
    }
    println!();
    header(
        "Throughput through a limit of 16",
        "n requests at once (one task each) through a limit of 16 over an \
         upstream that answers after 1 ms (paused clock); per request.",
        &["`PriorityLimitLayer`", "tower `ConcurrencyLimit`"],
    );
    for n in SIZES {
        let cells = best(runs, || {
            let ours = {
                let _guard = runtime.enter();
                let service = PriorityLimitLayer::new(16)
                    .max_queue(n)
                    .layer(slow_upstream());
                through_limit(&runtime, n, service)
            };
            let tower = through_limit(
                &runtime,
                n,
                tower::limit::ConcurrencyLimit::new(slow_upstream(), 16),
            );
            [ours, tower]
        });
        row(n, &cells.map(us));
    }
    println!();
}

// ---------------------------------------------------------------- breaker

fn breaker(runs: usize) {
    header(
        "The breaker's failure-rate window (`CircuitBreakerLayer`)",
        "n requests through a closed breaker (failure rate 50 % over 10 s, one \
         request in ten a 503, so every tenth outcome sums the window), the \
         clock advancing 1 ms every 16 requests (the window slides through \
         every bucket); per request.",
        &["per request"],
    );
    let runtime = paused_runtime();
    for n in SIZES {
        let [cost] = best(runs, || {
            runtime.block_on(async {
                let count = Arc::new(AtomicU64::new(0));
                let upstream = service_fn(move |_req: Request<Body>| {
                    let status = if count.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let mut response = Response::new(());
                    *response.status_mut() = status;
                    ready(Ok::<_, BoxError>(response))
                });
                let mut service = CircuitBreakerLayer::new()
                    .consecutive_failures(0)
                    .failure_rate(0.5, Duration::from_secs(10), 100)
                    .layer(upstream);
                let start = Instant::now();
                for i in 0..n {
                    call(&mut service, request()).await.expect("closed");
                    if i % 16 == 15 {
                        tokio::time::advance(Duration::from_millis(1)).await;
                    }
                }
                [per_item(start.elapsed(), n)]
            })
        });
        row(n, &[us(cost)]);
    }
    println!();
}

// ----------------------------------------------------------------- pacing

fn pacing(runs: usize) {
    header(
        "The sliding-window pacing log (`pacing_window`)",
        "A window of n requests per second: n requests at once (the log grows \
         to n), the clock moves on 1 s (all of them expire), n requests again \
         (the first one clears the log); per request. Smooth pacing keeps no \
         log (one instant).",
        &["per request"],
    );
    let runtime = paused_runtime();
    for n in SIZES {
        let [cost] = best(runs, || {
            runtime.block_on(async {
                let layer = PriorityLimitLayer::new(n)
                    .max_queue(n)
                    .pacing_window(n as u32, Duration::from_secs(1));
                let handle = layer.handle();
                let mut service = layer.layer(upstream());
                let start = Instant::now();
                for _ in 0..2 {
                    for _ in 0..n {
                        call(&mut service, request())
                            .await
                            .expect("paced, not shed");
                    }
                    tokio::time::advance(Duration::from_secs(1)).await;
                }
                assert_eq!(handle.status().queued, [0, 0, 0]);
                [per_item(start.elapsed(), 2 * n)]
            })
        });
        row(n, &[us(cost)]);
    }
    println!();
}

// ------------------------------------------------------------------ stats

fn stats(runs: usize) {
    header(
        "The audit stats (`AuditStats`)",
        "n requests through an `AuditLayer` with a no-op sink over an upstream \
         whose latency is spread from 1 µs to 1 s (so the latency histogram \
         fills many buckets); per request. Then a `snapshot()` of the stats \
         (counters and three percentiles).",
        &["per request", "snapshot"],
    );
    let runtime = paused_runtime();
    for n in SIZES {
        let [cost, snapshot] = best(runs, || {
            runtime.block_on(async {
                let layer = AuditLayer::new(NoopSink);
                let stats = layer.stats_handle();
                let draws = Arc::new(AtomicU64::new(0));
                let mut service = layer.layer(service_fn(move |_req: Request<Body>| {
                    let draw = draws.fetch_add(1, Ordering::Relaxed);
                    // a spread of latencies: 1 µs .. 1 s
                    let micros = 1 + draw.wrapping_mul(2_654_435_761) % 1_000_000;
                    async move {
                        tokio::time::advance(Duration::from_micros(micros)).await;
                        Ok::<_, BoxError>(Response::new(()))
                    }
                }));
                let start = Instant::now();
                for _ in 0..n {
                    call(&mut service, request()).await.expect("a response");
                }
                let cost = per_item(start.elapsed(), n);
                let start = Instant::now();
                let snaps = 100;
                for _ in 0..snaps {
                    std::hint::black_box(stats.snapshot());
                }
                assert_eq!(stats.snapshot().requests, n as u64);
                [cost, per_item(start.elapsed(), snaps)]
            })
        });
        row(n, &[us(cost), us(snapshot)]);
    }
    println!();
}

// ------------------------------------------------------------------ sinks

/// A writer that blocks until opened: the JSON-lines queue only grows.
#[derive(Clone, Default)]
struct Blocked {
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Blocked {
    fn open(&self) {
        *self.open.0.lock().expect("not poisoned") = true;
        self.open.1.notify_all();
    }
}

impl Write for Blocked {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut open = self.open.0.lock().expect("not poisoned");
        while !*open {
            open = self.open.1.wait(open).expect("not poisoned");
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Events per request, and their mean JSON and approximate sizes.
fn calibrate(runtime: &tokio::runtime::Runtime) -> (usize, usize, usize) {
    let counts = Arc::new((
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ));
    let sink = {
        let counts = counts.clone();
        callback(move |event| {
            counts.0.fetch_add(1, Ordering::Relaxed);
            counts.1.fetch_add(event.to_json().len(), Ordering::Relaxed);
            counts.2.fetch_add(event.approx_bytes(), Ordering::Relaxed);
        })
    };
    let requests = 100;
    runtime.block_on(async {
        let mut service = AuditLayer::new(sink).layer(upstream());
        for _ in 0..requests {
            call(&mut service, request()).await.expect("a response");
        }
    });
    let events = counts.0.load(Ordering::Relaxed);
    (
        events / requests,
        counts.1.load(Ordering::Relaxed) / events,
        counts.2.load(Ordering::Relaxed) / events,
    )
}

/// `n` requests through an audit layer into `sink`, untimed, then `n` more,
/// timed; per request.
fn fill_then_time(runtime: &tokio::runtime::Runtime, sink: impl AuditSink, n: usize) -> f64 {
    runtime.block_on(async {
        let mut service = AuditLayer::new(sink).layer(upstream());
        for _ in 0..n {
            call(&mut service, request()).await.expect("a response");
        }
        let start = Instant::now();
        for _ in 0..n {
            call(&mut service, request()).await.expect("a response");
        }
        per_item(start.elapsed(), n)
    })
}

/// A webhook sink whose POSTs never answer: its queue only grows.
fn stuck_webhook(runtime: &tokio::runtime::Runtime, max_bytes: usize) -> WebhookSink {
    let _guard = runtime.enter();
    let never = service_fn(|_req: Request<Body>| pending::<Result<Response<Body>, BoxError>>());
    WebhookSink::builder("http://127.0.0.1:9/audit")
        .expect("a valid URL")
        .capacity(usize::MAX / 2)
        .max_bytes(max_bytes)
        .http_client(never)
        .build()
}

fn sinks(runs: usize) {
    let runtime = paused_runtime();
    let (events, json, approx) = calibrate(&runtime);
    header(
        "The audit sinks' queues (`JsonLinesSink`, `WebhookSink`)",
        &format!(
            "Requests through an `AuditLayer` ({events} events each, about {json} \
             bytes of JSON and {approx} counted bytes per event) into a sink whose \
             writer (JSON lines) or webhook (POSTs that never answer) is stuck; per \
             request, timed while the queue goes from n to 2n requests' events \
             (growing), or while it is full by its byte cap at n requests' events \
             (JSON lines: each new event dropped; webhook: each new event drops \
             the oldest)."
        ),
        &[
            "JSON lines, growing",
            "JSON lines, full (bytes)",
            "webhook, growing",
            "webhook, full (bytes)",
        ],
    );
    for n in SIZES {
        let cells = best(runs, || {
            let lines = |max_bytes: usize| {
                let writer = Blocked::default();
                let sink = JsonLinesSink::with_capacity(writer.clone(), usize::MAX / 2)
                    .max_bytes(max_bytes);
                let cost = fill_then_time(&runtime, sink.clone(), n);
                writer.open();
                sink.flush();
                cost
            };
            let hook = |max_bytes: usize| {
                let sink = stuck_webhook(&runtime, max_bytes);
                fill_then_time(&runtime, sink, n)
            };
            [
                lines(usize::MAX / 2),
                lines(n * events * approx),
                hook(usize::MAX / 2),
                hook(n * events * json),
            ]
        });
        row(n, &cells.map(us));
    }
    println!();
}

// ------------------------------------------------------------------ share

fn share(runs: usize) {
    header(
        "Members of a pause share (`LocalPauseShare`)",
        "n limiter layers on one share, built beforehand; timed: each makes its \
         service (the limiter subscribes to the share), all staying alive; then \
         one pause announced to all of them; then n more layers make a service \
         and drop it, one after another, while the n stay alive (churn). Per \
         member.",
        &["subscribe", "announce", "subscribe with churn"],
    );
    let runtime = paused_runtime();
    for n in SIZES {
        let cells = best(runs, || {
            let _guard = runtime.enter();
            let share = LocalPauseShare::new();
            let layers = || -> Vec<PriorityLimitLayer> {
                (0..n)
                    .map(|_| PriorityLimitLayer::new(1).share_gate(share.clone()))
                    .collect()
            };
            let (members, churn) = (layers(), layers());
            let start = Instant::now();
            let members: Vec<_> = members.iter().map(|l| l.layer(upstream())).collect();
            let subscribe = per_item(start.elapsed(), n);
            let start = Instant::now();
            share.announce(0, Duration::from_secs(1));
            let announce = per_item(start.elapsed(), n);
            assert!(members[n - 1].handle().status().gate_closed_for.is_some());
            let start = Instant::now();
            for layer in churn {
                drop(layer.layer(upstream()));
            }
            let churn = per_item(start.elapsed(), n);
            [subscribe, announce, churn]
        });
        row(n, &cells.map(us));
    }
    println!();
}
