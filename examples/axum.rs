//! Axum: the tower-cx stack inside an existing axum service.
//!
//! The app's handlers call Genesys Cloud (the embedded mock here) through
//! one shared, cloneable stack kept in the router state: a token fetched
//! once and refreshed ahead of expiry, pacing at the Genesys limit,
//! retries with `Retry-After`, the breaker, the audit stats. Each handler
//! sets the priority of its upstream calls; failures of the stack become
//! HTTP answers of the app (503 with `Retry-After` while the breaker is
//! open, 504 on a deadline, 502 otherwise).
//!
//! Run: `cargo run --example axum` starts the mock and the app, calls the
//! app's two routes, prints the answers and exits. With `-- --serve` it
//! keeps serving on `127.0.0.1:3000` (`curl localhost:3000/agents`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::Request;
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_cx::body::Body;
use tower_cx::error::{BoxError, CircuitOpen, RetryDeadlineExceeded};
use tower_cx::mock::MockServer;
use tower_cx::priority::Priority;
use tower_cx::stack::{CxService, Stack, StackHandles};

/// What the handlers share: the stack (cloning it is cheap and clones share
/// its token, limiter, breaker and stats) and where Genesys is.
#[derive(Clone)]
struct AppState {
    genesys: CxService,
    api: String,
    handles: StackHandles,
}

impl AppState {
    /// One call to Genesys through the stack, its JSON answer parsed.
    async fn call(&self, request: Request<Body>) -> Result<Value, AppError> {
        let response = self.genesys.clone().oneshot(request).await?;
        let status = response.status();
        // A bounded read: an endless upstream body cannot exhaust memory.
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await?
            .to_bytes();
        if !status.is_success() {
            return Err(AppError::Upstream(
                status,
                String::from_utf8_lossy(&body).into(),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| AppError::Stack(e.into()))
    }
}

/// `GET /agents`: the first page of users, high priority (a person waits).
async fn agents(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let mut request = Request::get(format!("{}/api/v2/users?pageSize=5", state.api))
        .body(Body::empty())
        .map_err(|e| AppError::Stack(e.into()))?;
    request.extensions_mut().insert(Priority::High);
    let page = state.call(request).await?;
    let names: Vec<&Value> = page["entities"]
        .as_array()
        .map(|users| users.iter().map(|u| &u["name"]).collect())
        .unwrap_or_default();
    Ok(Json(json!({ "agents": names, "total": page["total"] })))
}

/// `GET /customers/{id}`: a data action lookup, normal priority. The POST is
/// retried safely: the stack adds an `Idempotency-Key`.
async fn customer(
    State(state): State<AppState>,
    Path(id): Path<u32>,
) -> Result<Json<Value>, AppError> {
    let request = Request::post(format!(
        "{}/api/v2/integrations/actions/customer-lookup/execute",
        state.api
    ))
    .header("content-type", "application/json")
    .body(Body::from(json!({ "customerId": id }).to_string()))
    .map_err(|e| AppError::Stack(e.into()))?;
    Ok(Json(state.call(request).await?))
}

/// `GET /stats`: the stack's audit statistics.
async fn stats(State(state): State<AppState>) -> Json<Value> {
    let s = state.handles.stats.snapshot();
    Json(json!({
        "requests": s.requests, "attempts": s.attempts, "retries": s.retries,
        "successes": s.successes, "token_refreshes": s.token_refreshes,
        "breaker": format!("{:?}", state.handles.breaker.state()),
    }))
}

/// A failure of a call to Genesys, as the app's HTTP answer.
enum AppError {
    Upstream(StatusCode, String),
    Stack(BoxError),
}

impl From<BoxError> for AppError {
    fn from(error: BoxError) -> Self {
        AppError::Stack(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Upstream(status, body) => (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": "upstream", "status": status.as_u16(), "body": body })),
            )
                .into_response(),
            AppError::Stack(error) => {
                let chain = || {
                    std::iter::successors(
                        Some(&*error as &(dyn std::error::Error + 'static)),
                        |e| e.source(),
                    )
                };
                let body = Json(json!({ "error": error.to_string() }));
                if let Some(open) = chain().find_map(|e| e.downcast_ref::<CircuitOpen>()) {
                    let secs = open.retry_in().map_or(1, |d| d.as_secs().max(1));
                    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    response
                } else if chain().any(|e| e.is::<RetryDeadlineExceeded>()) {
                    (StatusCode::GATEWAY_TIMEOUT, body).into_response()
                } else {
                    (StatusCode::BAD_GATEWAY, body).into_response()
                }
            }
        }
    }
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/agents", get(agents))
        .route("/customers/{id}", get(customer))
        .route("/stats", get(stats))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let mock = MockServer::start().await?;
    let config = mock.config().clone();
    mock.fault(Some("/api/v2/users"), tower_cx::mock::Fault::Status(503), 1);

    let stack = Stack::genesys(
        &mock.genesys_region(),
        config.client_id,
        config.client_secret,
    )?
    .timeout(Duration::from_secs(10));
    let handles = stack.handles();
    let state = AppState {
        genesys: stack.build(),
        api: mock.base_url(),
        handles,
    };

    let listen = if serve_forever {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "app on http://{addr}, calling Genesys (mock) on {}",
        mock.base_url()
    );
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    if serve_forever {
        server.await??;
        return Ok(());
    }

    // Call the app like a browser would, and show its answers.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for path in ["/agents", "/customers/42", "/stats"] {
        let response = client.get(format!("http://{addr}{path}").parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET {path} -> {status}\n  {}",
            String::from_utf8_lossy(&body)
        );
    }
    server.abort();
    Ok(())
}
