//! End to end over loopback TCP: a bare hyper-util client against the full
//! tower-cx stack over the same client, both sending many concurrent
//! requests to a local hyper server (the target: at least 0.90 of the bare
//! client's throughput). Each iteration runs both, one after the other, so
//! that both see the same load from other processes.
//!
//! After criterion's two estimates it prints the ratio pair by pair
//! (median, quartiles, range over 101 pairs), and the same for tower's and
//! tower-http's built-ins doing the jobs they can, then for the built-ins
//! also sending the audit layer's correlation header; with
//! `LOOPBACK_BREAKDOWN=1` also the bare client sending one more header,
//! each layer alone, and the stack without each layer.
//!
//! Run: `cargo bench --bench loopback`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

// the built-ins stack; the rest of the in-memory fixtures are unused here
#[allow(dead_code)]
#[path = "support/inmem.rs"]
mod inmem;

#[path = "support/wire.rs"]
mod wire;

use wire::{hammer, serve, CONCURRENCY};

/// Requests per measured iteration.
const REQUESTS: usize = 2_000;

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(serve());
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();

    let tokens = TokenCache::new(source_fn(|| async {
        Ok::<_, TokenError>(Token::new("bench-token", Duration::from_secs(86_400)))
    }));
    runtime.block_on(tokens.refresh()).unwrap();
    let stack = Stack::new()
        .bearer(tokens.clone())
        .limiter(PriorityLimitLayer::new(CONCURRENCY))
        .build_with(client.clone());

    // Paired: every iteration runs both clients back to back (alternating
    // which goes first) and times one of them, so that both see the same
    // load from whatever else runs on the machine.
    let run = |which: u64, iters: u64| -> Duration {
        let mut timed = Duration::ZERO;
        for i in 0..iters {
            for turn in [i % 2, 1 - i % 2] {
                let started = Instant::now();
                match turn {
                    0 => runtime.block_on(hammer(client.clone(), addr, REQUESTS)),
                    _ => runtime.block_on(hammer(stack.clone(), addr, REQUESTS)),
                }
                if turn == which {
                    timed += started.elapsed();
                }
            }
        }
        timed
    };
    let mut group = c.benchmark_group("loopback (paired)");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.sample_size(20);
    group.bench_function("bare hyper-util client", |b| {
        b.iter_custom(|iters| run(0, iters))
    });
    group.bench_function("tower-cx full stack", |b| {
        b.iter_custom(|iters| run(1, iters))
    });
    group.finish();

    let ratio = paired_ratio(&runtime, addr, &client, &stack, PAIRS);
    println!("loopback throughput ratio, full stack / bare client, over {PAIRS} pairs: {ratio}");
    // context: tower's and tower-http's built-ins doing the jobs they can
    // (retry with a budget, concurrency limit, static bearer, timeout)
    let peers = inmem::peer_layers(client.clone(), CONCURRENCY);
    let ratio = paired_ratio(&runtime, addr, &client, &peers, PAIRS);
    println!(
        "loopback throughput ratio, built-ins stack / bare client, over {PAIRS} pairs: {ratio}"
    );
    // the built-ins sending the correlation id too: the floor for any stack
    // that keeps the id upstream, before the breaker's and the audit's jobs
    let peers_id = wire::with_correlation_header(peers);
    let ratio = paired_ratio(&runtime, addr, &client, &peers_id, PAIRS);
    println!(
        "loopback throughput ratio, built-ins stack + correlation header / bare client, over {PAIRS} pairs: {ratio}"
    );

    // `LOOPBACK_BREAKDOWN=1`: each layer alone over the client, then the
    // boxed stack without each layer in turn, every one paired with the
    // bare client the same way.
    if std::env::var_os("LOOPBACK_BREAKDOWN").is_some() {
        let _guard = runtime.enter();
        for (name, service) in breakdown(&tokens, &client) {
            let ratio = paired_ratio(&runtime, addr, &client, &service, BREAKDOWN_PAIRS);
            println!("  {name:<28} {ratio}");
        }
    }
}

/// The median, quartiles and range of `pairs` throughput ratios.
struct Ratios(Vec<f64>);

impl std::fmt::Display for Ratios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        let at = |q: usize| r[(r.len() - 1) * q / 4];
        write!(
            f,
            "median {:.3}, quartiles {:.3} .. {:.3}, range {:.3} .. {:.3}",
            at(2),
            at(1),
            at(3),
            r[0],
            r[r.len() - 1]
        )
    }
}

/// `service` against the bare `client`, pair by pair: each pair runs both
/// back to back (alternating the order), so outside load that changes
/// between pairs cancels out within each ratio.
fn paired_ratio<S>(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    client: &HttpClient,
    service: &S,
    pairs: usize,
) -> Ratios
where
    S: Service<Request<Body>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let mut ratios: Vec<f64> = (0..pairs)
        .map(|i| {
            let mut elapsed = [Duration::ZERO; 2];
            for turn in [i % 2, 1 - i % 2] {
                let started = Instant::now();
                match turn {
                    0 => runtime.block_on(hammer(client.clone(), addr, REQUESTS)),
                    _ => runtime.block_on(hammer(service.clone(), addr, REQUESTS)),
                }
                elapsed[turn] = started.elapsed();
            }
            // throughput ratio: service / bare
            elapsed[0].as_secs_f64() / elapsed[1].as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    Ratios(ratios)
}

type HttpClient = Client<HttpConnector, Body>;
type Boxed = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

/// Each layer alone over the client, and the stack (every layer boxed, so
/// that one can be left out) without each layer in turn.
fn breakdown(tokens: &TokenCache, client: &HttpClient) -> Vec<(String, Boxed)> {
    const LAYERS: [&str; 6] = ["audit", "retry", "breaker", "limiter", "bearer", "timeout"];
    let build = |on: [bool; 6]| {
        let mut s = Boxed::new(client.clone().map_err(BoxError::from));
        if on[5] {
            s = Boxed::new(TimeoutLayer::new(Duration::from_secs(30)).layer(s));
        }
        if on[4] {
            s = Boxed::new(BearerLayer::new(tokens.clone()).layer(s));
        }
        if on[3] {
            s = Boxed::new(PriorityLimitLayer::new(CONCURRENCY).layer(s));
        }
        if on[2] {
            s = Boxed::new(CircuitBreakerLayer::new().layer(s));
        }
        if on[1] {
            s = Boxed::new(RetryLayer::new().layer(s));
        }
        if on[0] {
            s = Boxed::new(AuditLayer::new(NoopSink).layer(s));
        }
        s
    };
    let mut services = vec![("bare client, boxed".to_owned(), build([false; 6]))];
    // what the audit layer's correlation header alone costs end to end
    // (the server parses one more header)
    services.push((
        "bare client + one header".to_owned(),
        Boxed::new(wire::with_correlation_header(client.clone()).map_err(BoxError::from)),
    ));
    for (i, layer) in LAYERS.iter().enumerate() {
        let mut on = [false; 6];
        on[i] = true;
        services.push((format!("{layer} alone"), build(on)));
    }
    services.push(("every layer boxed".to_owned(), build([true; 6])));
    for (i, layer) in LAYERS.iter().enumerate() {
        let mut on = [true; 6];
        on[i] = false;
        services.push((format!("every layer but {layer}"), build(on)));
    }
    services
}

/// Pairs measured for each line of the breakdown.
const BREAKDOWN_PAIRS: usize = 41;

/// Pairs measured for the ratio summary.
const PAIRS: usize = 101;

criterion_group!(benches, loopback);
criterion_main!(benches);
