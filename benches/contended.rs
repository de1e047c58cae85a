//! 1,000 tasks hammering a concurrency limit of 16 on two worker threads:
//! tower-cx's priority limiter against `tower::limit::ConcurrencyLimit`.
//! A bench target of its own, so that no earlier benchmark's leftovers share
//! the two cores with it.
//!
//! Run: `cargo bench --bench contended`

use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
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

fn contended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
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
criterion_main!(benches);
