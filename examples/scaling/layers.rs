//! The other layers' structures that grow with load: the breaker's
//! failure-rate window, the sliding-window pacing log, the audit stats and
//! the members of a pause share.

use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::share::{LocalPauseShare, PauseShare};

use super::{best, call, header, paused_runtime, per_item, request, row, upstream, us, SIZES};

/// The breaker's failure-rate window.
pub(crate) fn breaker(runs: usize) {
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

/// The sliding-window pacing log.
pub(crate) fn pacing(runs: usize) {
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

/// The audit stats: recording, and a snapshot.
pub(crate) fn stats(runs: usize) {
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

/// Members of a `LocalPauseShare`: subscribing, an announcement, churn.
pub(crate) fn share(runs: usize) {
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
