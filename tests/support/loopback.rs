//! A real HTTP/1 server on 127.0.0.1, for the tests that need the wire.
#![allow(dead_code)] // each test file uses what it needs

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cx::body::Body;

/// Serves `service` on a free 127.0.0.1 port, one task per connection,
/// until the runtime ends; returns `http://127.0.0.1:PORT`. Each request is
/// read whole first: `service` finds its bytes at `body().as_bytes()` (and
/// no bytes when the body could not be read to its end: still, it sees
/// every request that arrived).
pub async fn serve<S>(service: S) -> String
where
    S: tower::Service<Request<Body>, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let service = service.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes());
            let request = Request::from_parts(parts, Body::from(bytes.unwrap_or_default()));
            service.oneshot(request).await
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    base
}
