//! One instructed upstream for the limiter tests: each request says how it
//! is to be answered, so that a test reads as a list of requests.
#![allow(dead_code)]

use std::time::Duration;

use http::{Request, Response};
use tower::ServiceExt;
use tower_cx::body::Body;
use tower_cx::error::{BoxError, OverloadReason, Overloaded};
use tower_cx::priority::{Priority, PriorityLimit};

use super::upstream::{status, Scripted};

/// An upstream that follows each request's instructions: `x-latency-ms`,
/// `x-status` with `x-retry-after`, and `x-remaining` (answered as Genesys
/// quota headers: 100 allowed per 60 s, that many left).
pub fn instructed() -> Scripted {
    Scripted::answering(|request| {
        let latency = request
            .header("x-latency-ms")
            .map_or(0, |v| v.parse().unwrap());
        let code = request
            .header("x-status")
            .map_or(200, |v| v.parse().unwrap());
        let mut answer = status(code).after(Duration::from_millis(latency));
        if let Some(value) = request.header("x-retry-after") {
            answer = answer.header("retry-after", value);
        }
        if let Some(left) = request.header("x-remaining") {
            let count = 100 - left.parse::<u64>().unwrap();
            answer = answer
                .header("inin-ratelimit-allowed", "100")
                .header("inin-ratelimit-count", &count.to_string())
                .header("inin-ratelimit-reset", "60");
        }
        answer
    })
}

/// A request `id` of `priority`, answered after `latency_ms`.
pub fn req(id: &str, priority: Priority, latency_ms: u64) -> Request<Body> {
    let mut request = Request::get("http://127.0.0.1/")
        .header("x-id", id)
        .header("x-latency-ms", latency_ms.to_string())
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(priority);
    request
}

/// A request the upstream answers with `429` and `Retry-After: retry_after`.
pub fn throttled_req(id: &str, latency_ms: u64, retry_after: &str) -> Request<Body> {
    let mut request = req(id, Priority::Normal, latency_ms);
    let headers = request.headers_mut();
    headers.insert("x-status", "429".parse().unwrap());
    headers.insert("x-retry-after", retry_after.parse().unwrap());
    request
}

/// A request sent on its own task.
pub type Task = tokio::task::JoinHandle<Result<Response<()>, BoxError>>;

/// Send `request` through a clone of `service` on a task of its own.
pub fn spawn(service: &PriorityLimit<Scripted>, request: Request<Body>) -> Task {
    let service = service.clone();
    tokio::spawn(async move { service.oneshot(request).await })
}

/// Let spawned tasks run until they all wait on something.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Whole seconds.
pub fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// Why a request was shed (it must have been).
pub fn overload_reason(result: Result<Response<()>, BoxError>) -> OverloadReason {
    result
        .expect_err("shed")
        .downcast_ref::<Overloaded>()
        .expect("an Overloaded error")
        .reason()
}
