//! What the gateway answers itself and never forwards: `GET /healthz` (200
//! while the process serves), `GET /readyz` (200 with a token in hand and the
//! breaker not open, else 503 with the reason), `GET /metrics`
//! (Prometheus text of the stack's instruments) and `GET /_cx/status` (the
//! status page, HTML or JSON, also at `/_cx/status.json`).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;
use tower::Service;
use tower_cx::auth::TokenCache;
use tower_cx::breaker::CircuitBreakerHandle;
use tower_cx::error::BoxError;
use tower_cx::metrics::MetricsSampler;
use tower_cx::observe::BreakerState;
use tower_cx::stack::StackHandles;
use tower_cx::status::{StatusBoard, StatusService};

use super::proxy::ProxyBody;
use super::shared::METRICS_NAME;

/// The gateway's own paths.
const PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/_cx/status",
    "/_cx/status.json",
];

/// The state the gateway's own answers read.
pub struct Admin {
    tokens: Option<TokenCache>,
    breaker: CircuitBreakerHandle,
    sampler: MetricsSampler,
    metrics: PrometheusHandle,
    status: StatusService,
}

/// Histogram buckets in seconds: OpenTelemetry's advice for
/// `http.client.request.duration`, up to a minute for queued and retried
/// requests. Buckets (not summaries) so that a fleet's scrapes add up.
const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
];

/// Installs the process-wide Prometheus recorder (no listener of its own:
/// `/metrics` renders it) and returns its handle.
pub fn install_recorder() -> Result<PrometheusHandle, BoxError> {
    Ok(PrometheusBuilder::new()
        .set_buckets(&BUCKETS)?
        .install_recorder()?)
}

impl Admin {
    /// The answers over a stack's handles, rendering `metrics`.
    pub fn new(handles: &StackHandles, metrics: PrometheusHandle) -> Self {
        Self {
            tokens: handles.tokens.clone(),
            breaker: handles.breaker.clone(),
            sampler: MetricsSampler::new().stack(METRICS_NAME, handles),
            metrics,
            status: StatusBoard::new().stack(METRICS_NAME, handles).service(),
        }
    }

    /// Answer `/_cx/status` from `board` (by default, a board of the
    /// stack's handles that heard no event).
    pub fn status(mut self, board: StatusBoard) -> Self {
        self.status = board.service();
        self
    }

    /// The gateway's own answer to `request`, or `None` to forward it.
    pub fn answer<B>(&self, request: &Request<B>) -> Option<Response<ProxyBody>> {
        let path = request.uri().path();
        if !PATHS.contains(&path) {
            return None;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                "{\"error\":\"method_not_allowed\"}".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(response);
        }
        Some(match path {
            "/healthz" => json(StatusCode::OK, "{\"status\":\"serving\"}".into()),
            "/readyz" => match self.not_ready() {
                None => json(StatusCode::OK, "{\"ready\":true}".into()),
                Some(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "ready": false, "reason": reason }).to_string(),
                ),
            },
            "/metrics" => self.render(),
            _ => self.status_page(request),
        })
    }

    /// Why the gateway should not get traffic now, if it should not.
    fn not_ready(&self) -> Option<&'static str> {
        if let Some(tokens) = &self.tokens {
            let in_hand = tokens
                .status()
                .expires_at
                .is_some_and(|at| at > Instant::now());
            if !in_hand {
                return Some("no_token");
            }
        }
        match self.breaker.state() {
            BreakerState::Open { .. } => Some("circuit_open"),
            BreakerState::Isolated => Some("circuit_isolated"),
            BreakerState::Closed | BreakerState::HalfOpen => None,
        }
    }

    /// The status page, HTML or JSON as the request asks.
    fn status_page<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        let mut ask = Request::new(());
        *ask.method_mut() = request.method().clone();
        *ask.uri_mut() = request.uri().clone();
        *ask.headers_mut() = request.headers().clone();
        let Ok(response) = self.status.clone().call(ask).into_inner();
        response.map(Either::Right)
    }

    /// The gauges sampled now, then every instrument as Prometheus text.
    fn render(&self) -> Response<ProxyBody> {
        self.sampler.sample();
        self.metrics.run_upkeep();
        let mut response =
            Response::new(Either::Right(Full::new(Bytes::from(self.metrics.render()))));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Keeps a token in hand without waiting for traffic, so that `/readyz`
/// can turn ready before the first request: fetches the first token
/// (retrying from 0.5 s, doubling to 10 s), then refreshes it when due.
/// The endpoint's error text is not printed (it may echo credentials).
pub fn keep_token(tokens: TokenCache) {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(500);
        loop {
            let status = tokens.status();
            if let Some(at) = status.refresh_at.filter(|at| *at > Instant::now()) {
                tokio::time::sleep_until(at).await;
                continue;
            }
            match tokens.refresh().await {
                Ok(()) => wait = Duration::from_millis(500),
                Err(_) => {
                    eprintln!(
                        "token: the token endpoint refused or did not answer; again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_cx::breaker::CircuitBreakerLayer;
    use tower_cx::stack::Stack;

    fn admin(breaker: CircuitBreakerLayer) -> Admin {
        let handles = Stack::new().breaker(breaker).handles();
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        Admin::new(&handles, metrics)
    }

    fn get(admin: &Admin, path: &str) -> Option<StatusCode> {
        let request = Request::get(path).body(()).unwrap();
        admin.answer(&request).map(|r| r.status())
    }

    #[tokio::test]
    async fn only_the_gateways_own_paths_are_answered_here() {
        let admin = admin(CircuitBreakerLayer::new());
        assert_eq!(get(&admin, "/healthz"), Some(StatusCode::OK));
        assert_eq!(get(&admin, "/readyz"), Some(StatusCode::OK));
        assert_eq!(get(&admin, "/metrics"), Some(StatusCode::OK));
        assert_eq!(get(&admin, "/_cx/status"), Some(StatusCode::OK));
        assert_eq!(get(&admin, "/_cx/status.json"), Some(StatusCode::OK));
        assert_eq!(get(&admin, "/_cx/status/x"), None);
        assert_eq!(get(&admin, "/healthz/x"), None);
        assert_eq!(get(&admin, "/api/v2/users"), None);
        let post = Request::post("/readyz").body(()).unwrap();
        let answer = admin.answer(&post).unwrap();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn an_isolated_breaker_is_not_ready() {
        let breaker = CircuitBreakerLayer::new();
        let handle = breaker.handle();
        let admin = admin(breaker);
        handle.isolate();
        assert_eq!(admin.not_ready(), Some("circuit_isolated"));
        assert_eq!(
            get(&admin, "/readyz"),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(get(&admin, "/healthz"), Some(StatusCode::OK));
    }
}
