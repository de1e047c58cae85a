//! What requests travel over: the [`Transport`] trait the typed clients and
//! token sources send through, the crate's built-in hyper client, and
//! bounded reads of response bodies ([`read_limited`]).
//!
//! Any cloneable tower service from `Request<Body>` to `Response<B>` is a
//! [`Transport`]: a bare hyper-util client, the canonical
//! [`Stack`](crate::stack::Stack), or a `service_fn` in a test.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_cx::error::BoxError> {
//! use http::{Request, Response};
//! use tower_cx::body::Body;
//! use tower_cx::error::{BodyTooLarge, BoxError};
//! use tower_cx::transport::{read_limited, Transport};
//!
//! let echo = tower::service_fn(|req: Request<Body>| async move {
//!     Ok::<_, BoxError>(Response::new(req.into_body()))
//! });
//! let response = echo.send(Request::new(Body::from("{\"id\":7}"))).await?;
//! assert_eq!(read_limited(response, 64).await?, "{\"id\":7}");
//!
//! // A body past the limit is a typed error, and never read further.
//! let response = echo.send(Request::new(Body::from(vec![b'x'; 65]))).await?;
//! let error = read_limited(response, 64).await.unwrap_err();
//! assert_eq!(error.downcast_ref::<BodyTooLarge>().unwrap().limit(), 64);
//! # Ok(())
//! # }
//! ```
//!
//! The crate's built-in client (token requests, the webhook sink, CXone
//! file downloads, [`Stack::build`](crate::stack::Stack::build)) is
//! hyper-util's pooled client. Over TLS (the `tls` feature) it offers `h2`
//! and `http/1.1` by ALPN and speaks whichever the server picks: over
//! HTTP/2, requests share a pooled connection as concurrent streams (a
//! burst on a cold pool may still open several). Plain `http://` is
//! HTTP/1.1, or HTTP/2 with prior knowledge for a stack built with
//! [`Stack::http2_prior_knowledge`](crate::stack::Stack::http2_prior_knowledge).
//!
//! With the `reqwest` feature, `ReqwestTransport` sends over your own
//! `reqwest::Client` instead (its proxies, TLS settings and pool).

mod client;
mod read;
#[cfg(feature = "reqwest")]
mod reqwest_transport;

use std::future::Future;
use std::pin::Pin;

use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::body::Body;
use crate::error::BoxError;

pub(crate) use client::{buffered, hyper_client};
pub(crate) use read::collect_limited;
pub use read::read_limited;
#[cfg(feature = "reqwest")]
pub use reqwest_transport::{ReqwestFuture, ReqwestTransport};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the typed clients and token sources run over: any cloneable,
/// `Send + Sync` tower service taking `Request<Body>` and returning
/// `Response<B>` for some HTTP body `B`, such as the stack's
/// [`CxService`](crate::stack::CxService), a bare hyper-util client, or your
/// own `ServiceBuilder` stack. Implemented for every such service; you never
/// implement it yourself.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The response body type.
    type ResBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static;

    /// Send one request.
    fn send(&self, request: Request<Body>) -> BoxFuture<Result<Response<Self::ResBody>, BoxError>>;
}

impl<S, B> Transport for S
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type ResBody = B;

    fn send(&self, request: Request<Body>) -> BoxFuture<Result<Response<B>, BoxError>> {
        let service = self.clone();
        Box::pin(async move { service.oneshot(request).await.map_err(Into::into) })
    }
}
