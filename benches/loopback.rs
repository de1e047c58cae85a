//! End to end over loopback TCP: a bare hyper-util client against the full
//! tower-cx stack over the same client, both sending many concurrent
//! requests to a local hyper server. The stack's throughput should be at
//! least 0.95 of the bare client's. Each iteration runs both, one after
//! the other, so that both see the same load from other processes.
//!
//! Run: `cargo bench --bench loopback`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{BoxError, Service, ServiceExt};

use tower_cx::auth::{source_fn, Token, TokenCache, TokenError};
use tower_cx::body::Body;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::stack::Stack;

/// Requests per measured iteration.
const REQUESTS: usize = 2_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;

/// A hyper HTTP/1 server on an ephemeral loopback port answering every
/// request with a small JSON body.
async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(br#"{"entities":[]}"#)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn request(addr: SocketAddr) -> Request<Body> {
    Request::get(format!("http://{addr}/api/v2/users"))
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap()
}

/// `REQUESTS` requests, `CONCURRENCY` at a time, each response read whole.
async fn hammer<S>(service: S, addr: SocketAddr)
where
    S: Service<Request<Body>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in 0..REQUESTS / CONCURRENCY {
                    let response = service
                        .clone()
                        .oneshot(request(addr))
                        .await
                        .map_err(Into::into)
                        .unwrap();
                    assert!(response.status().is_success());
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

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
        .bearer(tokens)
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
                    0 => runtime.block_on(hammer(client.clone(), addr)),
                    _ => runtime.block_on(hammer(stack.clone(), addr)),
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
}

criterion_group!(benches, loopback);
criterion_main!(benches);
