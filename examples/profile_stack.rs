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
//! `limiter`, `stack` (the default), `bearer-noreplay`, and `audit-stats`
//! and `stack-stats` (the audit layer's stats handle taken, so that every
//! request carries a context); the peers
//! `peer-auth` (tower-http's `AddAuthorization`), `peer-retry` (`tower::retry`
//! with a `TpsBudget`), `peer-limit` (tower's `ConcurrencyLimit`),
//! `peer-breaker` (tower-resilience's circuit breaker, closed),
//! `peer-resilience-retry` (tower-resilience's retry) and `peer-stack`
//! (tower's and tower-http's built-ins).
//!
//! End to end, the modes `wire-bare`, `wire-stack`, `wire-peers` and
//! `wire-peers-id` send N requests (32 in flight) over loopback TCP to a
//! local hyper server on a one-worker runtime, through the bare hyper-util
//! client, the full stack as `benches/loopback.rs` builds it, the built-ins,
//! or the built-ins sending the audit layer's correlation header too:
//! everything the process does per request (client, server, runtime) is
//! counted, so the difference to `wire-bare` is what the stack adds end to
//! end. `wire-retry`, `wire-limiter`, `wire-bearer` (without its own
//! replay, as in the stack), `wire-breaker` and `wire-audit` send them
//! through one layer alone; `wire-peer-retry`, `wire-peer-limit` and
//! `wire-peer-auth` through its built-in peer.

use std::hint::black_box;

use http::{Request, Response};
use tower::{Layer, Service};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::BearerLayer;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;

#[path = "../benches/support/inmem.rs"]
mod inmem;
#[path = "../benches/support/wire.rs"]
mod wire;

use inmem::{
    cached_token, canonical_stack, canonical_stack_with, now, peer_stack, read_audit, request,
    resilience_retry, runtime, upstream, PeerPolicy,
};

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

/// `n` requests over loopback through the client, the stack or the
/// built-ins (`which`: `bare`, `stack` or `peers`).
fn drive_wire(which: &str, n: usize) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::util::BoxCloneSyncService;
    use tower::{BoxError, ServiceExt};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let _guard = runtime.enter();
    let addr = runtime.block_on(wire::serve());
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let tokens = cached_token();
    let service: BoxCloneSyncService<Request<Body>, Response<hyper::body::Incoming>, BoxError> =
        match which {
            "bare" => BoxCloneSyncService::new(client.map_err(BoxError::from)),
            "peers" => BoxCloneSyncService::new(inmem::peer_layers(client, wire::CONCURRENCY)),
            "peers-id" => BoxCloneSyncService::new(wire::with_correlation_header(
                inmem::peer_layers(client, wire::CONCURRENCY),
            )),
            "stack" => tower_cx::stack::Stack::new()
                .bearer(tokens)
                .limiter(PriorityLimitLayer::new(wire::CONCURRENCY))
                .build_with(client),
            // each layer alone over the client, against its built-in peer
            "retry" => BoxCloneSyncService::new(RetryLayer::new().layer(client)),
            "peer-retry" => BoxCloneSyncService::new(
                tower::retry::RetryLayer::new(PeerPolicy::new())
                    .layer(client.map_err(BoxError::from)),
            ),
            "limiter" => {
                BoxCloneSyncService::new(PriorityLimitLayer::new(wire::CONCURRENCY).layer(client))
            }
            "peer-limit" => BoxCloneSyncService::new(
                tower::limit::ConcurrencyLimitLayer::new(wire::CONCURRENCY)
                    .layer(client.map_err(BoxError::from)),
            ),
            // as the stack has it: its retry layer replays a rejected token
            "bearer" => BoxCloneSyncService::new(
                BearerLayer::new(tokens).replay_on_401(false).layer(client),
            ),
            "peer-auth" => BoxCloneSyncService::new(
                tower_http::auth::AddAuthorizationLayer::bearer("bench-token")
                    .layer(client.map_err(BoxError::from)),
            ),
            "breaker" => BoxCloneSyncService::new(CircuitBreakerLayer::new().layer(client)),
            "audit" => BoxCloneSyncService::new(AuditLayer::new(NoopSink).layer(client)),
            other => panic!(
                "unknown mode wire-{other}: wire-bare, wire-stack, wire-peers, wire-peers-id, \
                 or a layer: wire-retry, wire-peer-retry, wire-limiter, wire-peer-limit, \
                 wire-bearer, wire-peer-auth, wire-breaker, wire-audit"
            ),
        };
    runtime.block_on(wire::hammer(service, addr, n));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "stack".into());
    let n: usize = args.next().map_or(100_000, |n| n.parse().expect("a count"));
    if let Some(wire) = which.strip_prefix("wire-") {
        return drive_wire(wire, n);
    }
    let runtime = runtime();
    let cache = cached_token();
    let _guard = runtime.enter();
    match which.as_str() {
        "bare" => drive(upstream(), n),
        "audit" => drive(AuditLayer::new(NoopSink).layer(upstream()), n),
        "retry" => drive(RetryLayer::new().layer(upstream()), n),
        "bearer" => drive(BearerLayer::new(cache).layer(upstream()), n),
        "breaker" => drive(CircuitBreakerLayer::new().layer(upstream()), n),
        "limiter" => drive(PriorityLimitLayer::new(16).layer(upstream()), n),
        "bearer-noreplay" => drive(
            BearerLayer::new(cache)
                .replay_on_401(false)
                .layer(upstream()),
            n,
        ),
        "peer-auth" => drive(
            tower_http::auth::AddAuthorizationLayer::bearer("bench-token").layer(upstream()),
            n,
        ),
        "peer-retry" => drive(tower::retry::Retry::new(PeerPolicy::new(), upstream()), n),
        "peer-limit" => drive(
            tower::limit::ConcurrencyLimitLayer::new(16).layer(upstream()),
            n,
        ),
        "peer-breaker" => drive(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .build()
                .expect("a valid breaker")
                .layer(upstream()),
            n,
        ),
        "peer-stack" => drive(peer_stack(), n),
        "peer-resilience-retry" => drive(resilience_retry(), n),
        "stack" => drive(canonical_stack(cache, true), n),
        "stack-stats" => drive(canonical_stack_with(read_audit(), cache, true), n),
        "audit-stats" => drive(read_audit().layer(upstream()), n),
        other => panic!("unknown mode {other}: see the example's docs for the modes"),
    }
}
