//! Your own gateway from the library: a hyper server that forwards every
//! request through a [`Stack`] (token, pacing, retries, breaker, audit) to
//! Genesys Cloud, here the embedded mock.
//!
//! `cargo run --example gateway` sends it one request, prints the answer and
//! exits; with `-- --serve` it keeps serving on `127.0.0.1:8080`. The
//! ready-made sidecar with flags, health, metrics and graceful shutdown is
//! the `tower-cx-gateway` binary (feature `gateway`).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use tower_cx::body::Body;
use tower_cx::error::BoxError;
use tower_cx::mock::MockServer;
use tower_cx::stack::{CxService, Stack};

type Answer = Response<Either<Incoming, Full<Bytes>>>;

/// Forwards one request to `api` through the stack; its errors become a 502.
async fn forward(
    stack: CxService,
    api: String,
    request: Request<Incoming>,
) -> Result<Answer, BoxError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = format!("{api}{path}").parse()?;
    parts.headers.remove(http::header::HOST);
    let request = Request::from_parts(parts, Body::from_bytes(body.collect().await?.to_bytes()));
    Ok(match stack.oneshot(request).await {
        Ok(response) => response.map(Either::Left),
        Err(e) => {
            let mut answer = Response::new(Either::Right(Full::from(e.to_string())));
            *answer.status_mut() = StatusCode::BAD_GATEWAY;
            answer
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockServer::start().await?;
    let (region, config) = (mock.genesys_region(), mock.config().clone());
    let stack = Stack::genesys(&region, config.client_id, config.client_secret)?.build();
    let serve = std::env::args().any(|a| a == "--serve");
    let listener = tokio::net::TcpListener::bind(if serve {
        "127.0.0.1:8080"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    let addr = listener.local_addr()?;
    println!("gateway on http://{addr}, upstream {}", region.api_base());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (stack, api) = (stack.clone(), region.api_base());
            let service =
                hyper::service::service_fn(move |r| forward(stack.clone(), api.clone(), r));
            let http = hyper::server::conn::http1::Builder::new();
            tokio::spawn(http.serve_connection(TokioIo::new(stream), service));
        }
    });
    if serve {
        return Ok(tokio::signal::ctrl_c().await?);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{addr}/api/v2/users?pageSize=2").parse()?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("{status} {}", String::from_utf8_lossy(&body));
    Ok(())
}
