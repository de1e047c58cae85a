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
//! the fleet's subscriptions). The queue tables are in `queue.rs`, the
//! sinks' in `sinks.rs`, the others in `layers.rs`.

mod layers;
mod queue;
mod sinks;

use std::future::ready;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower::{service_fn, BoxError, Service};
use tower_cx::body::Body;

/// The sizes every table is measured at.
const SIZES: [usize; 3] = [10_000, 40_000, 160_000];

/// A table's name and what prints it (given the number of runs).
type Table = (&'static str, fn(usize));

/// Print the tables named on the command line (all by default).
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
        ("queue", queue::queue),
        ("breaker", layers::breaker),
        ("pacing", layers::pacing),
        ("stats", layers::stats),
        ("sinks", sinks::sinks),
        ("share", layers::share),
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

/// A table's title, its note and its header row.
fn header(title: &str, note: &str, columns: &[&str]) {
    println!("### {title}\n\n{note}\n");
    println!("| n | {} |", columns.join(" | "));
    println!("|---:|{}", "---:|".repeat(columns.len()));
}

/// One table row.
fn row(n: usize, cells: &[String]) {
    println!("| {n} | {} |", cells.join(" | "));
}
