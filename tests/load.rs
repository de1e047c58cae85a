//! Load: 10,000 concurrent logical requests of mixed priority through the
//! whole stack, over real loopback TCP, against the embedded mock with
//! seeded random faults (among them operations applied and then answered
//! 500, or applied and then dropped) and 5 s tokens. The mock ignores
//! idempotency keys, as Genesys and CXone do, and counts operations applied
//! more than once by their `requestId`. Nothing is lost, nothing is applied
//! twice, nothing panics, and the limiter ends idle at full capacity.
//!
//! Time is paused: the mock, the stack and the sockets share one
//! current-thread runtime, so Retry-After waits, backoff, token expiry and
//! attempt timeouts cost no wall-clock time, and the run is repeatable.
#![cfg(feature = "mock")]

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::Duration;

use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_cx::auth::TokenError;
use tower_cx::backoff::{Backoff, Jitter, SharedRng};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::{BoxError, CircuitOpen, OutcomeUnknown, Overloaded, RetryDeadlineExceeded};
use tower_cx::mock::{Fault, MockConfig, MockServer, RandomFaults};
use tower_cx::priority::{Priority, PriorityLimitLayer};
use tower_cx::retry::{RetryBudget, RetryLayer};
use tower_cx::stack::Stack;

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 32;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The name of the first crate-or-library error type found in the chain of
/// `error`, or `None` when the error is of no known type.
fn typed(error: &BoxError) -> Option<&'static str> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(e) = current {
        if e.is::<OutcomeUnknown>() {
            return Some("outcome unknown");
        }
        if e.is::<CircuitOpen>() {
            return Some("circuit open");
        }
        if e.is::<Overloaded>() {
            return Some("overloaded");
        }
        if e.is::<RetryDeadlineExceeded>() {
            return Some("retry deadline");
        }
        if e.is::<TokenError>() {
            return Some("token");
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return Some("attempt timeout");
        }
        if e.is::<hyper_util::client::legacy::Error>() || e.is::<hyper::Error>() {
            return Some("connection");
        }
        current = e.source();
    }
    None
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_through_faults_end_once_each() {
    let wall = std::time::Instant::now();
    let start = tokio::time::Instant::now();
    let mock = MockServer::start_with(MockConfig {
        token_lifetime: Duration::from_secs(5),
        rate_limit: 1_000_000,
        random_faults: Some(
            RandomFaults::new(9, "/api/")
                .with(Fault::Status(503), 0.10)
                .with(Fault::RetryAfterSecs(1), 0.025)
                .with(Fault::RetryAfterSecs(2), 0.025)
                .with(Fault::Reset, 0.02)
                .with(Fault::ApplyThenStatus(500), 0.01)
                .with(Fault::ApplyThenDrop, 0.01)
                .with(Fault::Delay(ATTEMPT_TIMEOUT + Duration::from_secs(1)), 0.01),
        ),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = mock.config().clone();
    let stack = Stack::genesys(&mock.genesys_region(), c.client_id, c.client_secret)
        .unwrap()
        .retry(
            RetryLayer::new()
                .max_attempts(5)
                // 10,000 requests queue behind ~260 gate closures: minutes of
                // simulated time pass before the last is sent
                .deadline(Duration::from_secs(1_800))
                .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full))
                .rng(SharedRng::seeded(9))
                // the faults hit 20 % of attempts: a budget of 50 % retries
                .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.5).unwrap())
                // keys are sent, and ignored by the mock: they unlock nothing
                .auto_idempotency_key(true),
        )
        .breaker(
            CircuitBreakerLayer::new()
                .consecutive_failures(20)
                .failure_rate(0.5, Duration::from_secs(10), 50),
        )
        .limiter(PriorityLimitLayer::new(CONCURRENCY).max_queue(REQUESTS))
        .timeout(ATTEMPT_TIMEOUT);
    let handles = stack.handles();
    let client = stack.build();

    let mut tasks = Vec::with_capacity(REQUESTS);
    let mut posts = 0u64;
    for i in 0..REQUESTS {
        let client = client.clone();
        let base = mock.base_url();
        let post = i % 5 == 0;
        posts += u64::from(post);
        tasks.push(tokio::spawn(async move {
            let mut request = if post {
                Request::post(format!("{base}/api/v2/integrations/actions/a{i}/execute"))
                    .header("content-type", "application/json")
                    .body(Body::from(format!(
                        "{{\"requestId\":\"op-{i}\",\"n\":{i}}}"
                    )))
                    .unwrap()
            } else {
                Request::get(format!(
                    "{base}/api/v2/users?pageSize=1&pageNumber={}",
                    i % 7 + 1
                ))
                .body(Body::empty())
                .unwrap()
            };
            let priority = [Priority::High, Priority::Normal, Priority::Low][i % 3];
            request.extensions_mut().insert(priority);
            (i, post, client.oneshot(request).await.map(|r| r.status()))
        }));
    }

    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut untyped = Vec::new();
    let mut posts_ok = 0u64;
    let mut gets_ok = 0u64;
    let mut unknown_ops = Vec::new();
    let mut panics = 0;
    let all = async {
        for task in tasks {
            match task.await {
                Ok((_, post, Ok(status))) => {
                    if status == StatusCode::OK {
                        if post {
                            posts_ok += 1;
                        } else {
                            gets_ok += 1;
                        }
                    }
                    *outcomes
                        .entry(format!("HTTP {}", status.as_u16()))
                        .or_default() += 1;
                }
                Ok((i, post, Err(error))) => match typed(&error) {
                    Some(kind) => {
                        if kind == "outcome unknown" {
                            assert!(post, "only a POST can have an unknown outcome");
                            unknown_ops.push(format!("op-{i}"));
                        }
                        *outcomes.entry(format!("error: {kind}")).or_default() += 1
                    }
                    None => untyped.push(error.to_string()),
                },
                Err(join) => {
                    assert!(join.is_panic(), "{join}");
                    panics += 1;
                }
            }
        }
    };
    // a lost request would hang here: paused time turns that into a failure
    tokio::time::timeout(Duration::from_secs(3_600), all)
        .await
        .expect("every request ended within an hour of simulated time");
    let simulated = start.elapsed();

    let ended: u64 = outcomes.values().sum::<u64>() + untyped.len() as u64;
    let counters = mock.counters();
    let stats = handles.stats.snapshot();
    let limiter = handles.limiter.status();
    println!("outcomes: {outcomes:?}");
    // of the unknown outcomes, how many the server had in fact applied: a
    // blind retry would have applied each of those twice
    let unknown_applied = unknown_ops
        .iter()
        .filter(|op| mock.applied(op) == 1)
        .count();
    println!(
        "mock: {} requests, {} tokens issued, faults {:?}, operations applied {}, applied twice {}, expired tokens sent {}, Retry-After violations {}",
        counters.total_requests,
        counters.tokens_issued,
        counters.random_faults,
        counters.operations_applied,
        counters.duplicate_applications,
        counters.expired_token_requests,
        counters.retry_after_violations
    );
    println!(
        "POSTs: {posts} sent, {posts_ok} × 200, {} outcome unknown (of which {unknown_applied} applied by the server)",
        unknown_ops.len()
    );
    println!("audit: {stats:?}");
    println!("breaker: {:?}", handles.breaker.counts());
    println!(
        "simulated {:?}, wall {:.1} s, peak memory (VmHWM) {} KiB",
        simulated,
        wall.elapsed().as_secs_f64(),
        peak_memory_kib().map_or("unknown".into(), |k| k.to_string())
    );

    assert_eq!(panics, 0, "no request panicked");
    assert!(untyped.is_empty(), "untyped errors: {untyped:?}");
    assert_eq!(ended, REQUESTS as u64, "every request ended exactly once");
    assert_eq!(stats.requests, REQUESTS as u64);
    let gets = REQUESTS as u64 - posts;
    assert!(
        gets_ok >= gets * 98 / 100,
        "most reads succeed through the faults: {outcomes:?}"
    );
    // the side-effecting share of the load is kept, and most of it succeeds
    assert_eq!(posts, REQUESTS as u64 / 5);
    assert!(posts_ok >= posts * 80 / 100, "{outcomes:?}");
    // the faults really happened
    let injected: u64 = counters.random_faults.values().sum();
    assert!(
        injected > REQUESTS as u64 / 10,
        "{:?}",
        counters.random_faults
    );
    // none applied twice, counted by operation (the mock ignores keys):
    // every successful POST applied once; an unknown outcome was never sent
    // again, whether or not the server had applied it
    assert_eq!(counters.duplicate_applications, 0);
    assert!(counters.operations_applied >= posts_ok);
    assert!(counters.operations_applied <= posts);
    assert!(
        !unknown_ops.is_empty(),
        "the apply-then-fail faults happened"
    );
    assert!(
        unknown_applied > 0,
        "some unknown outcomes had been applied"
    );
    // the stack honoured every wait the server announced to a token
    assert_eq!(counters.retry_after_violations, 0);
    // the limiter is idle and whole again
    assert_eq!(limiter.in_flight, 0);
    assert_eq!(limiter.available, CONCURRENCY);
    assert_eq!(limiter.queued, [0, 0, 0]);
    // tokens lived 5 s: the run needed many
    assert!(counters.tokens_issued > 1);
}
