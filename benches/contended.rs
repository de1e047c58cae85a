//! 1,000 tasks hammering a concurrency limit of 16 on two worker threads:
//! tower-cx's priority limiter against `tower::limit::ConcurrencyLimit`.
//! A bench target of its own, so that no earlier benchmark's leftovers share
//! the two cores with it.
//!
//! Run: `cargo bench --bench contended`
//!
//! Paired ratio rounds instead of criterion (on a shared machine the ratio
//! of two criterion entries moves with the load between them):
//! `CONTENDED_RATIO_ROUNDS=30 cargo bench --bench contended` runs 30 rounds
//! of 40 alternating runs of each and prints the spread of tower-cx's
//! throughput over tower's, round by round.

use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use http::{Request, Response};
use tower::{service_fn, BoxError, Layer, Service};
use tower_cx::body::Body;
use tower_cx::priority::PriorityLimitLayer;

fn request() -> Request<Body> {
    Request::get("https://api.mypurecloud.com/api/v2/users")
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap()
}

/// An upstream that yields once per request, so that requests overlap.
fn yielding_upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    service_fn(|_req: Request<Body>| async {
        tokio::task::yield_now().await;
        Ok::<_, BoxError>(Response::new(()))
    })
}

/// 1,000 tasks, one request each, through a limit of 16, on 2 worker threads.
fn hammer<S>(runtime: &tokio::runtime::Runtime, service: &S)
where
    S: Service<Request<Body>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    runtime.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move {
                    use tower::ServiceExt;
                    service.oneshot(request()).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// A runtime with two worker threads and the time driver.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn contended(c: &mut Criterion) {
    let runtime = two_workers();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("limiter contended (1000 tasks, limit 16)");
    group.throughput(criterion::Throughput::Elements(1000));
    let tower_limit = tower::limit::ConcurrencyLimit::new(yielding_upstream(), 16);
    let ours = PriorityLimitLayer::new(16)
        .max_queue(2000)
        .layer(yielding_upstream());
    // Paired: each iteration runs both limiters, alternating which goes
    // first, and times one, so both see the same load from other processes.
    let paired = |ours_timed: bool, iters: u64| -> Duration {
        let mut timed = Duration::ZERO;
        for i in 0..iters {
            for ours_turn in [i % 2 == 0, i % 2 == 1] {
                let started = Instant::now();
                if ours_turn {
                    hammer(&runtime, &ours);
                } else {
                    hammer(&runtime, &tower_limit);
                }
                if ours_turn == ours_timed {
                    timed += started.elapsed();
                }
            }
        }
        timed
    };
    group.bench_function("tower ConcurrencyLimit", |b| {
        b.iter_custom(|iters| paired(false, iters))
    });
    group.bench_function("tower-cx PriorityLimitLayer", |b| {
        b.iter_custom(|iters| paired(true, iters))
    });
    let no_aging = PriorityLimitLayer::new(16)
        .max_queue(2000)
        .aging(None)
        .layer(yielding_upstream());
    group.bench_function("tower-cx PriorityLimitLayer (no aging, unpaired)", |b| {
        b.iter(|| hammer(&runtime, &no_aging))
    });
    group.finish();
}

criterion_group!(benches, contended);

/// `rounds` rounds of 40 runs of each limiter, alternating which goes first;
/// prints the ratio of tower-cx's throughput to tower's over the rounds.
fn ratio_rounds(rounds: usize) {
    let runtime = two_workers();
    let _guard = runtime.enter();
    let tower_limit = tower::limit::ConcurrencyLimit::new(yielding_upstream(), 16);
    let ours = PriorityLimitLayer::new(16)
        .max_queue(2000)
        .layer(yielding_upstream());
    let mut ratios = Vec::with_capacity(rounds);
    let (mut tower_total, mut ours_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let (mut tower_time, mut ours_time) = (Duration::ZERO, Duration::ZERO);
        for i in 0..40 {
            for ours_turn in [(i + round) % 2 == 0, (i + round) % 2 == 1] {
                let started = Instant::now();
                if ours_turn {
                    hammer(&runtime, &ours);
                    ours_time += started.elapsed();
                } else {
                    hammer(&runtime, &tower_limit);
                    tower_time += started.elapsed();
                }
            }
        }
        tower_total += tower_time;
        ours_total += ours_time;
        ratios.push(tower_time.as_secs_f64() / ours_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let mean = ratios.iter().sum::<f64>() / n as f64;
    let per_second = |total: Duration| (rounds * 40 * 1000) as f64 / total.as_secs_f64() / 1e3;
    println!(
        "tower-cx / tower throughput over {n} rounds: mean {mean:.3}, median {:.3}, \
         p10 {:.3}, p90 {:.3}, min {:.3}, max {:.3} (tower {:.0} k/s, tower-cx {:.0} k/s)",
        ratios[n / 2],
        ratios[n / 10],
        ratios[n * 9 / 10],
        ratios[0],
        ratios[n - 1],
        per_second(tower_total),
        per_second(ours_total),
    );
}

fn main() {
    match std::env::var("CONTENDED_RATIO_ROUNDS") {
        Ok(rounds) => ratio_rounds(rounds.parse::<usize>().expect("a number of rounds").max(1)),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
