//! A [`Transport`](super::Transport) over your own `reqwest::Client`
//! (feature `reqwest`): [`ReqwestTransport`].
//!
//! ```
//! use tower_cx::transport::ReqwestTransport;
//!
//! let client = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()
//!     .expect("a TLS backend and a resolver");
//! let transport = ReqwestTransport::new(client);
//! # let _ = transport.client();
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::Body;
use crate::error::BoxError;

/// reqwest's own future for one request.
type Pending = <reqwest::Client as tower::Service<reqwest::Request>>::Future;

/// A tower service sending this crate's requests with a `reqwest::Client`
/// (reqwest 0.12): a [`Transport`](super::Transport) for the typed clients,
/// token sources, and any stack of this crate's layers.
///
/// The client is yours, with what reqwest offers: proxies, TLS settings
/// and roots, client certificates, the pool, DNS, HTTP/2 (negotiated by
/// ALPN over TLS). The layers above add the retries, the breaker, the
/// limiter and the token.
///
/// ```no_run
/// use std::time::Duration;
///
/// use tower::ServiceBuilder;
/// use tower_cx::audit::{AuditLayer, NoopSink};
/// use tower_cx::breaker::CircuitBreakerLayer;
/// use tower_cx::priority::PriorityLimitLayer;
/// use tower_cx::retry::RetryLayer;
/// use tower_cx::stack::ServiceBuilderExt;
/// use tower_cx::transport::{ReqwestTransport, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_cx::error::BoxError> {
/// // proxies, TLS settings and the connection pool are reqwest's
/// let reqwest = reqwest::Client::builder()
///     .pool_idle_timeout(Duration::from_secs(60))
///     .build()?;
/// let client = ServiceBuilder::new()
///     .audit(AuditLayer::new(NoopSink))
///     .with_retry(RetryLayer::new())
///     .circuit_breaker(CircuitBreakerLayer::new())
///     .priority_limit(PriorityLimitLayer::new(16))
///     .timeout(Duration::from_secs(30))
///     .service(ReqwestTransport::new(reqwest));
/// let request = http::Request::get("https://api.example.com/v1/items")
///     .body(tower_cx::body::Body::empty())?;
/// let response = client.send(request).await?;
/// println!("{}", response.status());
/// # Ok(())
/// # }
/// ```
///
/// - A buffered [`Body`] is handed to reqwest as its bytes (a reference
///   count, no copy): a retry or a 401 replay sends the layers' own copy,
///   so every attempt carries the same bytes. A streaming body is sent as
///   a stream, once (its size hint kept, so a known length is sent as
///   `content-length`).
/// - Method, URI, version, headers and extensions go over as they are; a
///   URI that is not absolute is refused by reqwest (a builder error).
/// - The response comes back as an `http::Response<reqwest::Body>`.
/// - Errors are `reqwest::Error`s, which [`classify`](crate::classify)
///   reads: a connect failure (`is_connect()`) was never sent, so the
///   retry layer may retry even a `POST`, and the breaker counts it; a
///   timeout (`is_timeout()`) is a timeout; any other failure of the
///   exchange may have reached the server; a builder, redirect or decode
///   error is final.
///
/// A client follows redirects if it was built to (reqwest's default): the
/// layers then see only the last answer. [`ReqwestTransport::default`]
/// builds one that does not, like the crate's built-in client.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport sending with `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The reqwest client it sends with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Default for ReqwestTransport {
    /// A transport over a reqwest client with reqwest's defaults except
    /// redirects, which it does not follow (each `3xx` reaches the layers,
    /// as with the crate's built-in client).
    ///
    /// # Panics
    ///
    /// When reqwest cannot build a client (as `reqwest::Client::new` does):
    /// its TLS backend cannot be initialised or the system's resolver
    /// configuration cannot be read.
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest builds a client (TLS backend and resolver)");
        Self::new(client)
    }
}

impl From<reqwest::Client> for ReqwestTransport {
    fn from(client: reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl tower::Service<Request<Body>> for ReqwestTransport {
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's client is always ready: the pool waits in the call
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> ReqwestFuture {
        let state = match reqwest::Request::try_from(request.map(to_reqwest_body)) {
            Ok(request) => State::Sending {
                pending: tower::Service::call(&mut self.client, request),
            },
            Err(error) => State::Refused { error: Some(error) },
        };
        ReqwestFuture { state }
    }
}

/// The crate's body as reqwest's: the bytes of a buffered body (cheap to
/// clone, replayable by reqwest itself), or the stream.
fn to_reqwest_body(body: Body) -> reqwest::Body {
    match body.as_bytes() {
        // a buffered body already read to its end (it is never handed over
        // so by the layers) has nothing left to send
        Some(_) if http_body::Body::is_end_stream(&body) => reqwest::Body::from(Bytes::new()),
        Some(bytes) => reqwest::Body::from(bytes.clone()),
        None => reqwest::Body::wrap(SyncBody(Mutex::new(body))),
    }
}

/// A streaming [`Body`] made `Sync`, as reqwest wants its streams: frames
/// are polled through `&mut` (no locking); the lock is taken only for the
/// size hint and the end-of-stream check, which hyper asks through `&`.
struct SyncBody(Mutex<Body>);

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

pin_project! {
    /// The future of one [`ReqwestTransport`] call: the response as an
    /// `http::Response<reqwest::Body>`, or reqwest's error.
    pub struct ReqwestFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending { #[pin] pending: Pending },
        // the request could not be made into reqwest's (a URI that is not
        // absolute): its error, once
        Refused { error: Option<reqwest::Error> },
    }
}

impl Future for ReqwestFuture {
    type Output = Result<Response<reqwest::Body>, reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { pending } => pending.poll(cx).map_ok(Response::from),
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ReqwestFuture polled after completion"))),
        }
    }
}

impl fmt::Debug for ReqwestFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Sending { .. } => "sending",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ReqwestFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    use super::*;
    use crate::classify::{classify_error, Class, FailureKind};
    use crate::transport::Transport;

    /// A client that ignores proxy settings from the environment: these
    /// tests talk to loopback only.
    fn transport() -> ReqwestTransport {
        ReqwestTransport::new(reqwest::Client::builder().no_proxy().build().unwrap())
    }

    /// The class the default table gives to `error` and to the same error
    /// boxed, as the layers see it.
    fn class_of(error: reqwest::Error) -> Class {
        let class = classify_error(&error);
        let boxed: BoxError = error.into();
        assert_eq!(classify_error(boxed.as_ref()), class);
        class
    }

    /// A port on loopback with nothing listening.
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        port
    }

    /// Serves loopback connections with `answer` for each request; its
    /// base URL.
    async fn serve<F, Fut>(answer: F) -> String
    where
        F: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<http_body_util::Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let service = hyper::service::service_fn(move |request| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(request).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        base
    }

    fn post(url: &str, body: Body) -> Request<Body> {
        Request::post(url).body(body).unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_never_sent() {
        let url = format!("http://127.0.0.1:{}/x", closed_port().await);
        let error = transport()
            .oneshot(post(&url, Body::from("{}")))
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let class = class_of(error);
        assert_eq!(class, Class::Retryable(FailureKind::Connect));
        assert!(!class.failure().unwrap().request_may_have_been_sent());
    }

    #[tokio::test]
    async fn a_timeout_is_a_timeout() {
        // a listener that accepts and never answers: only reqwest's own
        // timeout ends the request (no assertion on how long it took)
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(1))
            .build()
            .unwrap();
        let error = ReqwestTransport::new(client)
            .oneshot(Request::get(&url).body(Body::empty()).unwrap())
            .await
            .unwrap_err();
        assert!(error.is_timeout() && !error.is_connect(), "{error:?}");
        assert_eq!(class_of(error), Class::Retryable(FailureKind::Timeout));
        held.abort();
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_may_have_been_applied() {
        // the server reads the request, then closes without a word
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
        });
        let error = transport()
            .oneshot(post(&url, Body::from("{}")))
            .await
            .unwrap_err();
        assert!(error.is_request() && !error.is_connect(), "{error:?}");
        let class = class_of(error);
        assert_eq!(class, Class::Retryable(FailureKind::Transport));
        assert!(class.failure().unwrap().request_may_have_been_sent());
    }

    #[tokio::test]
    async fn a_relative_uri_is_a_final_builder_error() {
        let error = transport()
            .oneshot(Request::get("/relative").body(Body::empty()).unwrap())
            .await
            .unwrap_err();
        assert!(error.is_builder(), "{error:?}");
        assert_eq!(class_of(error), Class::Fatal(FailureKind::Other));
    }

    #[tokio::test]
    async fn too_many_redirects_is_final() {
        let base = serve(|_| async {
            Response::builder()
                .status(302)
                .header("location", "/again")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap()
        })
        .await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(1))
            .build()
            .unwrap();
        let error = ReqwestTransport::new(client)
            .oneshot(
                Request::get(format!("{base}/x"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert!(error.is_redirect(), "{error:?}");
        assert_eq!(class_of(error), Class::Fatal(FailureKind::Other));
    }

    #[tokio::test]
    async fn the_default_transport_does_not_follow_redirects() {
        let base = serve(|_| async {
            Response::builder()
                .status(302)
                .header("location", "/elsewhere")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap()
        })
        .await;
        let response = ReqwestTransport::default()
            .send(
                Request::get(format!("{base}/x"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
    }

    #[tokio::test]
    async fn method_uri_headers_and_a_buffered_body_go_over_as_they_are() {
        let base = serve(|request: Request<hyper::body::Incoming>| async move {
            let echo = format!(
                "{} {} {} {}",
                request.method(),
                request.uri(),
                request.headers()["x-case"].to_str().unwrap(),
                request.headers()["content-length"].to_str().unwrap(),
            );
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::builder()
                .header("x-echo", echo)
                .body(http_body_util::Full::new(body))
                .unwrap()
        })
        .await;
        let request = Request::put(format!("{base}/items/7?q=1"))
            .header("x-case", "buffered")
            .body(Body::from("{\"id\":7}"))
            .unwrap();
        let response = transport().send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-echo"], "PUT /items/7?q=1 buffered 8");
        let body = crate::transport::read_limited(response, 64).await.unwrap();
        assert_eq!(body, "{\"id\":7}");
    }

    #[tokio::test]
    async fn a_streaming_body_is_sent_as_a_stream() {
        let base = serve(|request: Request<hyper::body::Incoming>| async move {
            let framing = match request.headers().get("content-length") {
                Some(length) => format!("length {}", length.to_str().unwrap()),
                None => format!("{:?}", request.headers().get("transfer-encoding")),
            };
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::builder()
                .header("x-framing", framing)
                .body(http_body_util::Full::new(body))
                .unwrap()
        })
        .await;
        let chunks = futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part one, "))),
            Ok(Frame::data(Bytes::from_static(b"part two"))),
        ]);
        let body = Body::from_stream(http_body_util::StreamBody::new(chunks));
        let response = transport()
            .send(post(&format!("{base}/upload"), body))
            .await
            .unwrap();
        assert_eq!(response.headers()["x-framing"], "Some(\"chunked\")");
        let body = crate::transport::read_limited(response, 64).await.unwrap();
        assert_eq!(body, "part one, part two");

        // a stream whose length is known is sent with it
        let body = Body::from_stream(http_body_util::Full::new(Bytes::from_static(b"sized")));
        assert!(!body.is_replayable());
        let response = transport()
            .send(post(&format!("{base}/upload"), body))
            .await
            .unwrap();
        assert_eq!(response.headers()["x-framing"], "length 5");
        let body = crate::transport::read_limited(response, 64).await.unwrap();
        assert_eq!(body, "sized");
    }

    #[test]
    fn a_stream_keeps_its_size_hint_through_the_sync_wrapper() {
        let body = Body::from_stream(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let wrapped = SyncBody(Mutex::new(body));
        assert_eq!(http_body::Body::size_hint(&wrapped).exact(), Some(3));
        assert!(!http_body::Body::is_end_stream(&wrapped));
    }
}
