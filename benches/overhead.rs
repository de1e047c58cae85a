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

use criterion::{criterion_group, criterion_main, Criterion};
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
    cached_token, canonical_stack, now, peer_stack, request, resilience_retry, runtime, upstream,
    PeerPolicy,
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

fn retry(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();

    let mut group = c.benchmark_group("retry");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));

    let mut ours = RetryLayer::new().layer(upstream());
    group.bench_function("tower-cx RetryLayer", |b| added(b, &mut ours, &mut bare));

    // The request clone both retry layers make for a replay, measured alone:
    // most of what either adds on the happy path.
    let template = request();
    group.bench_function("request clone alone", |b| {
        b.iter(|| black_box(try_clone_request(&template)))
    });

    let mut peer = tower::retry::Retry::new(PeerPolicy::new(), upstream());
    group.bench_function("tower::retry (TpsBudget)", |b| {
        added(b, &mut peer, &mut bare)
    });

    let mut resilience = resilience_retry();
    group.bench_function("tower-resilience Retry (token bucket)", |b| {
        added(b, &mut resilience, &mut bare)
    });
    group.finish();
}

fn bearer(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let cache = cached_token(&runtime);

    let mut group = c.benchmark_group("bearer");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));

    let mut ours = BearerLayer::new(cache.clone()).layer(upstream());
    group.bench_function("tower-cx BearerLayer (cached token, 401 replay on)", |b| {
        added(b, &mut ours, &mut bare)
    });

    let mut no_replay = BearerLayer::new(cache.clone())
        .replay_on_401(false)
        .layer(upstream());
    group.bench_function("tower-cx BearerLayer (cached token, 401 replay off)", |b| {
        added(b, &mut no_replay, &mut bare)
    });

    let mut peer = AddAuthorizationLayer::bearer("bench-token").layer(upstream());
    group.bench_function("tower-http AddAuthorization (static bearer)", |b| {
        added(b, &mut peer, &mut bare)
    });
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("breaker");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));
    let mut ours = CircuitBreakerLayer::new().layer(upstream());
    group.bench_function("tower-cx CircuitBreakerLayer (closed)", |b| {
        added(b, &mut ours, &mut bare)
    });
    let mut peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .layer(upstream());
    group.bench_function("tower-resilience CircuitBreaker (closed)", |b| {
        added(b, &mut peer, &mut bare)
    });
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("limiter");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));
    let mut ours = PriorityLimitLayer::new(16).layer(upstream());
    group.bench_function("tower-cx PriorityLimitLayer (uncontended)", |b| {
        added(b, &mut ours, &mut bare)
    });
    let mut tower_limit = tower::limit::ConcurrencyLimit::new(upstream(), 16);
    group.bench_function("tower ConcurrencyLimit (uncontended)", |b| {
        added(b, &mut tower_limit, &mut bare)
    });
    let mut bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(16)
        .backpressure()
        .build()
        .unwrap()
        .layer(upstream());
    group.bench_function("tower-resilience Bulkhead (uncontended)", |b| {
        added(b, &mut bulkhead, &mut bare)
    });
    group.finish();
}

fn audit(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("audit");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));
    let mut noop = AuditLayer::new(NoopSink).layer(upstream());
    group.bench_function("tower-cx AuditLayer (no-op sink)", |b| {
        added(b, &mut noop, &mut bare)
    });
    let mut lines =
        AuditLayer::new(JsonLinesSink::with_capacity(std::io::sink(), 1 << 20)).layer(upstream());
    group.bench_function("tower-cx AuditLayer (JSON lines to io::sink)", |b| {
        added(b, &mut lines, &mut bare)
    });
    group.finish();
}

/// The whole canonical stack (audit with a no-op sink, retry, breaker,
/// limiter, bearer with a cached token, per-attempt timeout) against the
/// same job done with tower's and tower-http's built-ins (retry with a
/// `TpsBudget`, concurrency limit, static bearer, timeout).
fn stack(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let cache = cached_token(&runtime);

    let mut group = c.benchmark_group("stack");
    let mut bare = upstream();
    group.bench_function("bare service", |b| b.iter(|| drive(&mut bare)));

    let mut ours = canonical_stack(cache.clone(), true);
    group.bench_function("tower-cx canonical stack", |b| {
        added(b, &mut ours, &mut bare)
    });

    let mut ours_no_timeout = canonical_stack(cache.clone(), false);
    group.bench_function("tower-cx canonical stack without timeout", |b| {
        added(b, &mut ours_no_timeout, &mut bare)
    });

    let mut peer = peer_stack();
    group.bench_function("tower built-ins (retry, limit, auth, timeout)", |b| {
        added(b, &mut peer, &mut bare)
    });
    group.finish();
}

criterion_group!(benches, retry, bearer, breaker, limiter, audit, stack);
criterion_main!(benches);
