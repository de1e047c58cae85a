//! Quickstart: the tower-cx stack over a real hyper client, calling a
//! rate-limited API on loopback that fails the way SaaS APIs do.
//!
//! The local API issues OAuth2 tokens at `/oauth/token` (Genesys style:
//! Basic client credentials, `expires_in` 86399) and answers each new API
//! call with a 503, then a 429 carrying `Retry-After: 1`, then success. The
//! client stack is the canonical one, outermost first:
//!
//! Audit -> Retry -> CircuitBreaker -> PriorityLimit (+ rate gate) -> Bearer -> Timeout -> hyper
//!
//! Run: `cargo run --example quickstart` (no credentials, no network).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::timeout::TimeoutLayer;
use tower::{ServiceBuilder, ServiceExt};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{AuthEvent, BearerLayer, ClientCredentials, TokenCache};
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::BoxError;
use tower_cx::genesys::Region;
use tower_cx::priority::{LimiterEvent, Priority, PriorityLimitLayer};
use tower_cx::retry::{RetryEventKind, RetryLayer, IDEMPOTENCY_KEY};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = spawn_flaky_api().await?;
    let base = format!("http://{addr}");
    println!("flaky API and token endpoint on {base}");

    // OAuth2 client credentials, Genesys flavour, against the local endpoint.
    let region = Region::custom(&base, &base);
    let tokens = TokenCache::builder(ClientCredentials::genesys(
        &region,
        "demo-id",
        "demo-secret",
    )?)
    .on_event(|event| {
        if let AuthEvent::TokenRefreshed { lifetime, .. } = event {
            println!("  [auth] token fetched, valid {lifetime:?}");
        }
    })
    .build();
    let limiter = PriorityLimitLayer::new(8)
        .pacing(300, Duration::from_secs(60))
        .pacing_burst(10)
        .on_event(|event| {
            if let LimiterEvent::GateClosed { for_, source } = event {
                println!("  [limiter] rate gate closed for {for_:?} ({source})");
            }
        });
    let breaker = CircuitBreakerLayer::new().on_event(|event| {
        println!(
            "  [breaker] {} -> {}",
            event.from.as_str(),
            event.to.as_str()
        );
    });
    let retry = RetryLayer::new()
        .max_attempts(4)
        .deadline(Duration::from_secs(20))
        .backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::Full))
        .auto_idempotency_key(true)
        .on_event(|event| match &event.kind {
            RetryEventKind::AttemptFinished { status, class } => {
                println!(
                    "  [retry] attempt {}: {status:?} -> {class:?}",
                    event.attempt
                )
            }
            RetryEventKind::RetryScheduled { delay, source } => {
                println!("  [retry] next attempt in {delay:?} (from {source})")
            }
            RetryEventKind::GaveUp(reason) => println!("  [retry] gave up: {}", reason.as_str()),
            other => println!("  [retry] {other:?}"),
        });

    let audit = AuditLayer::new(NoopSink);
    let stats = audit.stats_handle();
    let client = ServiceBuilder::new()
        .layer(audit)
        .layer(retry)
        .layer(breaker)
        .layer(limiter)
        .layer(BearerLayer::new(tokens.clone()))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());

    for (method, path, body, priority) in [
        (Method::GET, "/api/v2/users/me", "", Priority::High),
        (
            Method::POST,
            "/api/v2/orders",
            "{\"item\":\"headset\"}",
            Priority::Normal,
        ),
    ] {
        println!("{method} {path} ({priority} priority)");
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(Body::from(body))?;
        request.extensions_mut().insert(priority);
        let response = client.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("  => {status} {}", String::from_utf8_lossy(&body));
    }
    let summary = stats.snapshot();
    println!("summary (from the audit layer's stats):");
    println!("  requests        {}", summary.requests);
    println!("  successes       {}", summary.successes);
    println!("  attempts        {}", summary.attempts);
    println!("  retries         {}", summary.retries);
    println!("  gate closures   {}", summary.gate_closures);
    println!(
        "  p50 / p99       {:.0} ms / {:.0} ms",
        summary.p50_ms, summary.p99_ms
    );
    println!(
        "  token requests  {} (one for all calls and retries)",
        tokens.status().refresh_count
    );
    Ok(())
}

/// A loopback API: `/oauth/token` issues tokens; every other path answers
/// 503, then 429 with `Retry-After: 1`, then success, in turn.
async fn spawn_flaky_api() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let calls = calls.clone();
                    async move { Ok::<_, Infallible>(answer(&calls, &request)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(calls: &AtomicU32, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/oauth/token" {
        return json(
            StatusCode::OK,
            None,
            r#"{"access_token":"demo-token","token_type":"bearer","expires_in":86399}"#.into(),
        );
    }
    if request.headers().get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer demo-token") {
        return json(StatusCode::UNAUTHORIZED, None, r#"{"status":401}"#.into());
    }
    match calls.fetch_add(1, Ordering::SeqCst) % 3 {
        0 => json(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            r#"{"message":"busy","status":503}"#.into(),
        ),
        1 => json(
            StatusCode::TOO_MANY_REQUESTS,
            Some("1"),
            r#"{"message":"Rate limit exceeded the maximum. Retry the request in [1] seconds","code":"too.many.requests.retry.after","status":429}"#.into(),
        ),
        _ => {
            let key = request
                .headers()
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            json(
                StatusCode::OK,
                None,
                format!("{{\"ok\":true,\"idempotency_key\":\"{key}\"}}"),
            )
        }
    }
}

fn json(status: StatusCode, retry_after: Option<&str>, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(value) = retry_after {
        response = response.header("retry-after", value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
