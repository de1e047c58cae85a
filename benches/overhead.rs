//! Happy-path overhead of each layer over a ready in-memory service, side by
//! side with the nearest peer doing the same job.
//!
//! `bare service` is the absolute time of a call (building the request
//! included); every other entry is the time a layer *adds* to it, measured
//! paired with the bare service (see [`added`]) so that load from other
//! processes on the machine cancels out.
//!
//! Run: `cargo bench --bench overhead`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use http::{Request, Response};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

use tower_cx::audit::{AuditLayer, JsonLinesSink, NoopSink};
use tower_cx::auth::BearerLayer;
use tower_cx::body::{try_clone_request, Body};
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_http::auth::AddAuthorizationLayer;

#[path = "support/inmem.rs"]
mod inmem;

use inmem::{
    cached_token, canonical_stack, canonical_stack_with, now, peer_stack, read_audit, request,
    resilience_retry, runtime, upstream, PeerPolicy,
};

fn drive<S>(service: &mut S)
where
    S: Service<Request<Body>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
    let response = now(service.call(request())).unwrap();
    black_box(response);
}

/// The time `layered` adds per request over `bare`, measured paired:
/// blocks of 64 calls of each, alternating, so that both see the same load
/// from whatever else runs on the machine; criterion sees the difference.
fn added<S, T>(b: &mut criterion::Bencher<'_>, layered: &mut S, bare: &mut T)
where
    S: Service<Request<Body>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
    T: Service<Request<Body>, Response = Response<()>>,
    T::Error: std::fmt::Debug,
{
    b.iter_custom(|iters| {
        let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
        let mut left = iters;
        while left > 0 {
            let n = left.min(64);
            let started = Instant::now();
            for _ in 0..n {
                drive(layered);
            }
            with += started.elapsed();
            let started = Instant::now();
            for _ in 0..n {
                drive(bare);
            }
            without += started.elapsed();
            left -= n;
        }
        // never zero: criterion rejects a sample of zero time
        with.saturating_sub(without).max(Duration::from_nanos(1))
    })
}

/// A benchmark group that times the bare service first, then what each
/// layered service adds to it (see [`added`]).
struct Overhead<'a, T> {
    group: BenchmarkGroup<'a, WallTime>,
    bare: T,
}

impl<'a, T> Overhead<'a, T>
where
    T: Service<Request<Body>, Response = Response<()>>,
    T::Error: std::fmt::Debug,
{
    fn new(c: &'a mut Criterion, name: &str, mut bare: T) -> Self {
        let mut group = c.benchmark_group(name);
        group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));
        Self { group, bare }
    }

    /// What `layered` adds to the bare service, as `name`.
    fn added<S>(&mut self, name: &str, mut layered: S)
    where
        S: Service<Request<Body>, Response = Response<()>>,
        S::Error: std::fmt::Debug,
    {
        let bare = &mut self.bare;
        self.group
            .bench_function(name, |b| added(b, &mut layered, bare));
    }

    fn finish(self) {
        self.group.finish();
    }
}

fn retry(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = Overhead::new(c, "retry", upstream());
    group.added("tower-cx RetryLayer", RetryLayer::new().layer(upstream()));

    // The request clone both retry layers make for a replay, measured alone:
    // most of what either adds on the happy path.
    let template = request();
    group.group.bench_function("request clone alone", |b| {
        b.iter(|| black_box(try_clone_request(&template)))
    });

    group.added(
        "tower::retry (TpsBudget)",
        tower::retry::Retry::new(PeerPolicy::new(), upstream()),
    );
    group.added("tower-resilience Retry (token bucket)", resilience_retry());
    group.finish();
}

fn bearer(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let cache = cached_token();

    let mut group = Overhead::new(c, "bearer", upstream());
    group.added(
        "tower-cx BearerLayer (cached token, 401 replay on)",
        BearerLayer::new(cache.clone()).layer(upstream()),
    );
    group.added(
        "tower-cx BearerLayer (cached token, 401 replay off)",
        BearerLayer::new(cache.clone())
            .replay_on_401(false)
            .layer(upstream()),
    );
    group.added(
        "tower-http AddAuthorization (static bearer)",
        AddAuthorizationLayer::bearer("bench-token").layer(upstream()),
    );
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = Overhead::new(c, "breaker", upstream());
    group.added(
        "tower-cx CircuitBreakerLayer (closed)",
        CircuitBreakerLayer::new().layer(upstream()),
    );
    let peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    group.added(
        "tower-resilience CircuitBreaker (closed)",
        peer.layer(upstream()),
    );
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = Overhead::new(c, "limiter", upstream());
    group.added(
        "tower-cx PriorityLimitLayer (uncontended)",
        PriorityLimitLayer::new(16).layer(upstream()),
    );
    group.added(
        "tower ConcurrencyLimit (uncontended)",
        tower::limit::ConcurrencyLimit::new(upstream(), 16),
    );
    let bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(16)
        .backpressure()
        .build()
        .unwrap();
    group.added(
        "tower-resilience Bulkhead (uncontended)",
        bulkhead.layer(upstream()),
    );
    group.finish();
}

fn audit(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = Overhead::new(c, "audit", upstream());
    group.added(
        "tower-cx AuditLayer (no-op sink)",
        AuditLayer::new(NoopSink).layer(upstream()),
    );
    group.added(
        "tower-cx AuditLayer (no-op sink, stats handle taken)",
        read_audit().layer(upstream()),
    );
    let lines = JsonLinesSink::with_capacity(std::io::sink(), 1 << 20);
    group.added(
        "tower-cx AuditLayer (JSON lines to io::sink)",
        AuditLayer::new(lines).layer(upstream()),
    );
    group.finish();
}

/// The whole canonical stack (audit with a no-op sink, retry, breaker,
/// limiter, bearer with a cached token, per-attempt timeout) against the
/// same job done with tower's and tower-http's built-ins (retry with a
/// `TpsBudget`, concurrency limit, static bearer, timeout).
fn stack(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let cache = cached_token();

    let mut group = Overhead::new(c, "stack", upstream());
    group.added(
        "tower-cx canonical stack",
        canonical_stack(cache.clone(), true),
    );
    group.added(
        "tower-cx canonical stack, its stats handle taken",
        canonical_stack_with(read_audit(), cache.clone(), true),
    );
    group.added(
        "tower-cx canonical stack without timeout",
        canonical_stack(cache.clone(), false),
    );
    group.added(
        "tower built-ins (retry, limit, auth, timeout)",
        peer_stack(),
    );
    group.finish();
}

criterion_group!(benches, retry, bearer, breaker, limiter, audit, stack);
criterion_main!(benches);
