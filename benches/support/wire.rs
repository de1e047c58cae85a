//! The loopback fixtures shared by `benches/loopback.rs` and
//! `examples/profile_stack.rs` (included with `#[path]`): a local hyper
//! server, the request every call sends, and a client load of many
//! concurrent requests.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::util::MapRequest;
use tower::{BoxError, Service, ServiceExt};
use tower_cx::body::Body;

/// Requests in flight at once.
pub const CONCURRENCY: usize = 32;

/// A hyper HTTP/1 server on an ephemeral loopback port answering every
/// request with a small JSON body.
pub async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(br#"{"entities":[]}"#)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The request every call sends: a GET with an `Accept` header.
pub fn request(addr: SocketAddr) -> Request<Body> {
    Request::get(format!("http://{addr}/api/v2/users"))
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap()
}

/// What [`with_correlation_header`] makes.
pub type WithCorrelationHeader<S> = MapRequest<S, fn(Request<Body>) -> Request<Body>>;

/// `service` sending the correlation header the audit layer adds (the
/// same name, an id of the same length) and doing nothing else: what keeping
/// the id upstream costs any stack end to end, the server's parsing included.
pub fn with_correlation_header<S>(service: S) -> WithCorrelationHeader<S> {
    fn add(mut request: Request<Body>) -> Request<Body> {
        request.headers_mut().insert(
            HeaderName::from_static("x-correlation-id"),
            HeaderValue::from_static("6f1c0e2a-94b3-4d1e-0000-000000000001"),
        );
        request
    }
    MapRequest::new(service, add as fn(Request<Body>) -> Request<Body>)
}

/// `requests` requests, `CONCURRENCY` at a time, each response read whole.
pub async fn hammer<S>(service: S, addr: SocketAddr, requests: usize)
where
    S: Service<Request<Body>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let service = service.clone();
            // the first `requests % CONCURRENCY` workers send one more
            let share = requests / CONCURRENCY + usize::from(worker < requests % CONCURRENCY);
            tokio::spawn(async move {
                for _ in 0..share {
                    let response = service
                        .clone()
                        .oneshot(request(addr))
                        .await
                        .map_err(Into::into)
                        .unwrap();
                    assert!(response.status().is_success());
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}
