//! Cancellation: dropping response futures at any await point of the whole
//! stack (queued in the limiter, asleep in retry backoff, waiting for a
//! token refresh, as a half-open probe, mid-flight) leaves no concurrency
//! permit, no probe slot and no refresh lock held.
//!
//! A property test throws requests with random start times, priorities,
//! upstream outcomes and latencies at an in-process stack (paused time), and
//! drops each future at a random instant. Afterwards the stack must be
//! whole: idle limiter at full capacity, no refresh in flight, and a burst
//! of fresh requests against the healed upstream all succeed, which needs
//! the breaker's probe slot and the token cache's single flight to be free.

#[path = "support/upstream.rs"]
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use proptest::prelude::*;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::backoff::{Backoff, Jitter, SharedRng};
use tower_cx::body::Body;
use tower_cx::breaker::{BreakerState, CircuitBreakerHandle, CircuitBreakerLayer};
use tower_cx::error::BoxError;
use tower_cx::priority::{Priority, PriorityLimitHandle, PriorityLimitLayer};
use tower_cx::retry::RetryLayer;

use upstream::{ok, status, Scripted};

const PERMITS: usize = 2;

type Client = BoxCloneSyncService<Request<Body>, Response<()>, BoxError>;

/// One scripted upstream answer: fail with 503 or not, after a latency.
#[derive(Debug, Clone, Copy)]
struct Answer {
    fail: bool,
    latency_ms: u64,
}

/// One logical request: when it starts, its priority, when it is dropped
/// (`None`: awaited to the end).
#[derive(Debug, Clone, Copy)]
struct Plan {
    start_ms: u64,
    priority: u8,
    drop_after_ms: Option<u64>,
}

/// Where the stack was when a future was dropped (for the coverage report).
#[derive(Debug, Default)]
struct Seen {
    queued: AtomicU64,
    refreshing: AtomicU64,
    half_open: AtomicU64,
    open: AtomicU64,
    in_flight: AtomicU64,
    drops: AtomicU64,
}

struct Harness {
    client: Client,
    limiter: PriorityLimitHandle,
    breaker: CircuitBreakerHandle,
    tokens: TokenCache,
    upstream: Scripted,
}

fn harness(answers: Vec<Answer>) -> Harness {
    let issued = Arc::new(AtomicU64::new(0));
    let tokens = TokenCache::builder(source_fn(move || {
        let n = issued.fetch_add(1, Ordering::SeqCst);
        async move {
            // a refresh takes a while: requests wait on it
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, TokenError>(Token::new(format!("token-{n}"), Duration::from_secs(4)))
        }
    }))
    .rng(SharedRng::seeded(1))
    .build();
    let script = answers.into_iter().map(|answer| {
        let code = if answer.fail { 503 } else { 200 };
        status(code).after(Duration::from_millis(answer.latency_ms))
    });
    let upstream = Scripted::new(script).then(ok().after(Duration::from_millis(50)));
    let limiter = PriorityLimitLayer::new(PERMITS).max_queue(64);
    let breaker = CircuitBreakerLayer::new()
        .consecutive_failures(2)
        .open_duration(Backoff::constant(Duration::from_millis(700)))
        .half_open(1, 1);
    let handles = (limiter.handle(), breaker.handle());
    let client = ServiceBuilder::new()
        .layer(AuditLayer::new(NoopSink))
        .layer(
            RetryLayer::new()
                .max_attempts(4)
                .deadline(Duration::from_secs(20))
                .backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::Full))
                .rng(SharedRng::seeded(2)),
        )
        .layer(breaker)
        .layer(limiter)
        .layer(BearerLayer::new(tokens.clone()))
        .service(upstream.clone());
    Harness {
        client: BoxCloneSyncService::new(client),
        limiter: handles.0,
        breaker: handles.1,
        tokens,
        upstream,
    }
}

fn request(priority: u8) -> Request<Body> {
    let mut request = Request::get("https://api.example.com/x")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(match priority % 3 {
        0 => Priority::Low,
        1 => Priority::Normal,
        _ => Priority::High,
    });
    request
}

fn note(seen: &Seen, h: &Harness) {
    seen.drops.fetch_add(1, Ordering::Relaxed);
    let status = h.limiter.status();
    if status.queued.iter().sum::<usize>() > 0 {
        seen.queued.fetch_add(1, Ordering::Relaxed);
    }
    if status.in_flight > 0 {
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
    }
    if h.tokens.status().refreshing {
        seen.refreshing.fetch_add(1, Ordering::Relaxed);
    }
    match h.breaker.state() {
        BreakerState::HalfOpen => seen.half_open.fetch_add(1, Ordering::Relaxed),
        BreakerState::Open { .. } => seen.open.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

async fn run(answers: Vec<Answer>, plans: Vec<Plan>, seen: Arc<Seen>) -> Result<(), TestCaseError> {
    let h = Arc::new(harness(answers));
    let mut tasks = Vec::new();
    for plan in plans {
        let h = h.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(plan.start_ms)).await;
            let call = h.client.clone().oneshot(request(plan.priority));
            match plan.drop_after_ms {
                Some(ms) => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                            // the future is dropped right after this note
                            note(&seen, &h);
                        }
                        _ = call => {}
                    }
                }
                None => {
                    // awaited to the end: a response or a typed error
                    let _ = call.await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }

    // everything dropped or done: the stack must be whole
    let status = h.limiter.status();
    prop_assert_eq!(status.in_flight, 0);
    prop_assert_eq!(status.available, PERMITS);
    prop_assert_eq!(status.queued, [0, 0, 0]);

    // heal the upstream; after the longest open duration, a burst of fresh
    // requests must all succeed: a leaked permit, probe slot or refresh lock
    // would make some of them hang or fail
    h.upstream.clear_script();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // a 4 s token is refreshed every 2 s and a refresh takes 300 ms: one
    // may be running now, but none may stay in flight
    let mut idle_seen = false;
    for _ in 0..10 {
        if !h.tokens.status().refreshing {
            idle_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prop_assert!(idle_seen, "a refresh stayed in flight");
    let burst: Vec<_> = (0..(PERMITS as u8 * 3))
        .map(|i| tokio::spawn(h.client.clone().oneshot(request(i))))
        .collect();
    let all = async {
        let mut statuses = Vec::new();
        for task in burst {
            statuses.push(task.await.expect("no panic").map(|r| r.status()));
        }
        statuses
    };
    let statuses = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .map_err(|_| TestCaseError::fail("a fresh request hung"))?;
    for status in statuses {
        match status {
            Ok(status) => prop_assert_eq!(status, StatusCode::OK),
            Err(error) => {
                return Err(TestCaseError::fail(format!(
                    "fresh request failed: {error}"
                )))
            }
        }
    }
    prop_assert_eq!(h.breaker.state(), BreakerState::Closed);
    let status = h.limiter.status();
    prop_assert_eq!((status.in_flight, status.available), (0, PERMITS));
    // and a forced refresh still goes through the single flight
    prop_assert!(h.tokens.refresh().await.is_ok());
    // every request that reached the upstream carried a token
    let seen = h.upstream.seen();
    prop_assert!(seen.iter().all(|s| s.headers.contains_key("authorization")));
    Ok(())
}

fn answers() -> impl Strategy<Value = Vec<Answer>> {
    proptest::collection::vec(
        (proptest::bool::weighted(0.5), 0u64..800)
            .prop_map(|(fail, latency_ms)| Answer { fail, latency_ms }),
        0..40,
    )
}

fn plans() -> impl Strategy<Value = Vec<Plan>> {
    proptest::collection::vec(
        (
            0u64..6_000,
            0u8..3,
            proptest::option::weighted(0.7, 0u64..3_000),
        )
            .prop_map(|(start_ms, priority, drop_after_ms)| Plan {
                start_ms,
                priority,
                drop_after_ms,
            }),
        1..24,
    )
}

#[test]
fn futures_dropped_at_random_points_leave_nothing_held() {
    let seen = Arc::new(Seen::default());
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(answers in answers(), plans in plans())| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(answers, plans, seen.clone()))?;
    });
    println!("drop points seen: {seen:?}");
    // the random drop points reached every place a request can wait
    assert!(seen.queued.load(Ordering::Relaxed) > 0, "{seen:?}");
    assert!(seen.refreshing.load(Ordering::Relaxed) > 0, "{seen:?}");
    assert!(seen.in_flight.load(Ordering::Relaxed) > 0, "{seen:?}");
    assert!(
        seen.half_open.load(Ordering::Relaxed) + seen.open.load(Ordering::Relaxed) > 0,
        "{seen:?}"
    );
}
