//! Quickstart: the whole tower-cx stack against the embedded Genesys Cloud
//! mock, with the faults contact-center integrations meet in production.
//!
//! The mock issues short-lived tokens (8 s, so one expires mid-run), limits
//! each token to 120 requests per 10 s (and says so in Genesys'
//! `inin-ratelimit-*` headers), ignores `Idempotency-Key` as Genesys does,
//! and is scripted to answer some requests with 503s, 429s carrying
//! `Retry-After`, connection resets, data-action errors, and data actions
//! that run and then answer 500. 200 requests of mixed priority (a fifth of
//! them data actions with side effects) go through `Stack::genesys`: Audit
//! -> Retry -> CircuitBreaker -> PriorityLimit (+ rate gate, pacing learned
//! from the headers) -> Bearer -> Timeout -> hyper. A summary shows what
//! happened, including the mock's own count of rule violations and of
//! operations applied twice (both must be zero).
//!
//! Run: `cargo run --example quickstart` (no credentials, no network). On a
//! terminal a live progress bar shows the run; in a log or a pipe, a plain
//! line every 20 requests.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::error::{BoxError, OutcomeUnknown};
use tower_cx::mock::{Fault, MockConfig, MockServer};
use tower_cx::priority::Priority;
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

    // a data action that runs, then fails: it must not run twice
    mock.fault(Some("/api/v2/integrations"), Fault::ApplyThenStatus(500), 2);

    let config = mock.config().clone();
    let stack = Stack::genesys(
        &mock.genesys_region(),
        config.client_id,
        config.client_secret,
    )?
    .retry(
        Stack::genesys_retry()
            .max_attempts(4)
            .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full)),
    )
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
                    .body(Body::from(format!(
                        "{{\"requestId\":\"quickstart-{i}\",\"customer\":{i}}}"
                    )))?
            } else {
                Request::get(format!("{base}/api/v2/users?pageNumber={}", 1 + i % 10))
                    .body(Body::empty())?
            };
            request.extensions_mut().insert(priority);
            let status = client.oneshot(request).await.map(|r| r.status());
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            progress(n, started.elapsed());
            Ok::<_, BoxError>(status)
        }));
    }
    let (mut ok, mut http_errors, mut errors, mut unknown) = (0, 0, 0, 0);
    // told after the run, so that they never break the progress bar
    let mut notes = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(Ok(status)) if status == StatusCode::OK => ok += 1,
            Ok(Ok(_)) => http_errors += 1,
            Ok(Err(error)) if OutcomeUnknown::find(error.as_ref()).is_some() => {
                unknown += 1;
                notes.push(format!("  not retried: {error}"));
            }
            Ok(Err(error)) => {
                errors += 1;
                if errors <= 3 {
                    notes.push(format!("  error: {error}"));
                }
            }
            Err(error) => return Err(error),
        }
    }
    if std::io::stdout().is_terminal() {
        println!(); // past the progress bar
    }
    for note in notes {
        println!("{note}");
    }
    let elapsed = started.elapsed();
    let stats = handles.stats.snapshot();
    let mock_counts = mock.counters();

    println!();
    println!("summary after {:.1} s", elapsed.as_secs_f64());
    let rows: [(&str, String); 14] = [
        ("requests", REQUESTS.to_string()),
        ("succeeded (200)", ok.to_string()),
        (
            "final HTTP errors",
            format!("{http_errors} (data-action errors are final)"),
        ),
        (
            "outcome unknown",
            format!("{unknown} (data actions that may have run: sent once, never again)"),
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
                "{} (Retry-After ignored: {}, expired tokens sent: {})",
                mock_counts.retry_after_violations + mock_counts.expired_token_requests,
                mock_counts.retry_after_violations,
                mock_counts.expired_token_requests,
            ),
        ),
        (
            "applied twice",
            format!(
                "{} of {} operations (counted by requestId; keys are ignored)",
                mock_counts.duplicate_applications, mock_counts.operations_applied
            ),
        ),
    ];
    for (name, value) in rows {
        println!("  {name:<24} {value}");
    }
    Ok(())
}

/// Report `n` of the requests done after `elapsed`: a live bar redrawn in
/// place on a terminal, a plain line every 20 requests otherwise (a log, a
/// pipe, CI).
fn progress(n: usize, elapsed: Duration) {
    const WIDTH: usize = 30;
    let seconds = elapsed.as_secs_f64();
    if std::io::stdout().is_terminal() {
        let filled = n * WIDTH / REQUESTS;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled));
        print!("\r  [{bar}] {n:>3}/{REQUESTS} after {seconds:.1} s");
        let _ = std::io::stdout().flush();
    } else if n % 20 == 0 {
        println!("  {n:>3}/{REQUESTS} done after {seconds:.1} s");
    }
}
