//! Quickstart: the whole tower-cx stack against the embedded Genesys Cloud
//! mock, with the faults contact-center integrations meet in production.
//!
//! The mock issues short-lived tokens (8 s, so one expires mid-run), limits
//! each token to 120 requests per 10 s, and is scripted to answer some
//! requests with 503s, 429s carrying `Retry-After`, connection resets and
//! data-action errors. About 200 requests of mixed priority go through
//! Audit -> Retry -> CircuitBreaker -> PriorityLimit (+ rate gate) -> Bearer
//! -> Timeout -> hyper, and a summary shows what happened, including the
//! mock's own count of rule violations (it must be zero).
//!
//! Run: `cargo run --example quickstart` (no credentials, no network).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{ClientCredentials, TokenCache};
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::error::BoxError;
use tower_cx::mock::{Fault, MockConfig, MockServer};
use tower_cx::priority::{Priority, PriorityLimitLayer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

const REQUESTS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockServer::start_with(MockConfig {
        token_lifetime: Duration::from_secs(8),
        rate_limit: 120,
        rate_window: Duration::from_secs(10),
        ..MockConfig::default()
    })
    .await?;
    println!("embedded Genesys Cloud mock on {}", mock.base_url());
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 4);
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(1), 3);
    mock.fault(Some("/api/v2/users"), Fault::Reset, 2);
    mock.fault(
        Some("/api/v2/integrations"),
        Fault::DataActionError("ACTION.REMOTE_ENDPOINT".into()),
        2,
    );
    mock.fault(Some("/api/v2/integrations"), Fault::Status(502), 3);

    let config = mock.config().clone();
    let credentials = ClientCredentials::genesys(
        &mock.genesys_region(),
        config.client_id,
        config.client_secret,
    )?;
    let stack = Stack::new()
        .audit(AuditLayer::new(NoopSink))
        .retry(
            RetryLayer::new()
                .max_attempts(4)
                .deadline(Duration::from_secs(20))
                .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full))
                .auto_idempotency_key(true),
        )
        .limiter(PriorityLimitLayer::new(8).max_queue(REQUESTS))
        .bearer(TokenCache::new(credentials))
        .timeout(Duration::from_secs(5));
    let handles = stack.handles();
    let client = stack.build();

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let client = client.clone();
        let base = mock.base_url();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let priority = [
                Priority::High,
                Priority::Normal,
                Priority::Normal,
                Priority::Low,
            ][i % 4];
            let mut request = if i % 5 == 0 {
                Request::post(format!("{base}/api/v2/integrations/actions/lookup/execute"))
                    .header("content-type", "application/json")
                    .body(Body::from(format!("{{\"customer\":{i}}}")))?
            } else {
                Request::get(format!("{base}/api/v2/users?pageNumber={}", 1 + i % 10))
                    .body(Body::empty())?
            };
            request.extensions_mut().insert(priority);
            let status = client.oneshot(request).await.map(|r| r.status());
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            if n % 20 == 0 {
                println!(
                    "  {n:>3}/{REQUESTS} done after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok::<_, BoxError>(status)
        }));
    }
    let (mut ok, mut http_errors, mut errors) = (0, 0, 0);
    for task in tasks {
        match task.await? {
            Ok(Ok(status)) if status == StatusCode::OK => ok += 1,
            Ok(Ok(_)) => http_errors += 1,
            Ok(Err(error)) => {
                errors += 1;
                if errors <= 3 {
                    println!("  error: {error}");
                }
            }
            Err(error) => return Err(error),
        }
    }
    let elapsed = started.elapsed();
    let stats = handles.stats.snapshot();
    let mock_counts = mock.counters();

    println!();
    println!("summary after {:.1} s", elapsed.as_secs_f64());
    let rows: [(&str, String); 12] = [
        ("requests", REQUESTS.to_string()),
        ("succeeded (200)", ok.to_string()),
        (
            "final HTTP errors",
            format!("{http_errors} (data-action errors are final)"),
        ),
        ("errors", errors.to_string()),
        ("attempts sent", stats.attempts.to_string()),
        ("retries", stats.retries.to_string()),
        (
            "server waits honoured",
            format!("{} gate closures", stats.gate_closures),
        ),
        ("tokens issued", mock_counts.tokens_issued.to_string()),
        ("breaker trips", handles.breaker.counts().trips.to_string()),
        ("shed", stats.shed.to_string()),
        (
            "latency p50 / p99",
            format!("{:.0} ms / {:.0} ms", stats.p50_ms, stats.p99_ms),
        ),
        (
            "mock-counted violations",
            format!(
                "{} (Retry-After ignored: {}, expired tokens sent: {}, duplicate keys: {})",
                mock_counts.retry_after_violations
                    + mock_counts.expired_token_requests
                    + mock_counts.duplicate_idempotency_keys,
                mock_counts.retry_after_violations,
                mock_counts.expired_token_requests,
                mock_counts.duplicate_idempotency_keys
            ),
        ),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    Ok(())
}
