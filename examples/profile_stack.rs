//! Drive one layer (or the canonical stack) over a ready in-memory service
//! N times, single-threaded and without an executor, so that an
//! instruction-counting profiler sees only the happy path. Used for the
//! instruction counts in `BENCHMARKS.md`:
//!
//! ```sh
//! cargo build --release --example profile_stack
//! valgrind --tool=callgrind target/release/examples/profile_stack bare 20000
//! valgrind --tool=callgrind target/release/examples/profile_stack stack 20000
//! ```
//!
//! The difference of the two totals divided by N is what the stack adds per
//! request. Layers: `bare`, `audit`, `retry`, `bearer`, `breaker`,
//! `limiter`, `stack` (the default).

use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower::timeout::TimeoutLayer;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;

/// Poll a future that is ready at once.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the profiled service is always ready"),
    }
}

fn request() -> Request<Body> {
    Request::get("https://api.mypurecloud.com/api/v2/users")
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap()
}

fn upstream() -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = Ready<Result<Response<()>, BoxError>>,
> + Clone {
    service_fn(|_req: Request<Body>| ready(Ok::<_, BoxError>(Response::new(()))))
}

fn drive<S>(mut service: S, n: usize)
where
    S: Service<Request<Body>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        now(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
        black_box(now(service.call(request())).unwrap());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "stack".into());
    let n: usize = args.next().map_or(100_000, |n| n.parse().expect("a count"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let cache = TokenCache::new(source_fn(|| async {
        Ok::<_, TokenError>(Token::new("bench-token", Duration::from_secs(86_400)))
    }));
    runtime.block_on(cache.refresh()).unwrap();
    match which.as_str() {
        "bare" => drive(upstream(), n),
        "audit" => drive(AuditLayer::new(NoopSink).layer(upstream()), n),
        "retry" => drive(RetryLayer::new().layer(upstream()), n),
        "bearer" => drive(BearerLayer::new(cache).layer(upstream()), n),
        "breaker" => drive(CircuitBreakerLayer::new().layer(upstream()), n),
        "limiter" => drive(PriorityLimitLayer::new(16).layer(upstream()), n),
        _ => drive(
            ServiceBuilder::new()
                .layer(AuditLayer::new(NoopSink))
                .layer(RetryLayer::new())
                .layer(CircuitBreakerLayer::new())
                .layer(PriorityLimitLayer::new(16))
                .layer(BearerLayer::new(cache))
                .layer(TimeoutLayer::new(Duration::from_secs(30)))
                .service(upstream()),
            n,
        ),
    }
}
