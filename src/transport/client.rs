//! The crate's built-in hyper-util client, and clients boxed with their
//! response bodies read (within a limit).

use bytes::Bytes;
use http::{Request, Response};
use tower::util::BoxCloneSyncService;

use super::{collect_limited, Transport};
use crate::body::Body;
use crate::error::BoxError;

/// The connector of the built-in client: HTTPS (rustls, Mozilla roots) and
/// plain HTTP with the `tls` feature; plain HTTP only without it.
#[cfg(feature = "tls")]
pub(crate) type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
/// The connector of the built-in client: plain HTTP (no `tls` feature).
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = hyper_util::client::legacy::connect::HttpConnector;

/// The crate's built-in hyper-util client, used for token requests, the
/// webhook sink and the ready-made stack.
pub(crate) fn hyper_client() -> hyper_util::client::legacy::Client<Connector, Body> {
    let builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    #[cfg(feature = "tls")]
    {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        builder.build::<_, Body>(https)
    }
    #[cfg(not(feature = "tls"))]
    {
        builder.build_http::<Body>()
    }
}

/// A boxed client whose responses come with their bodies collected.
pub(crate) type BufferedClient = BoxCloneSyncService<Request<Body>, Response<Bytes>, BoxError>;

/// Box `client`, collecting at most `limit` bytes of each response body: a
/// longer body fails with [`BodyTooLarge`](crate::error::BodyTooLarge).
pub(crate) fn buffered(client: impl Transport, limit: usize) -> BufferedClient {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request<Body>| {
        let sent = client.send(request);
        async move {
            let (parts, body) = sent.await?.into_parts();
            let bytes = collect_limited(parts.status, body, limit).await?;
            Ok::<_, BoxError>(Response::from_parts(parts, bytes))
        }
    }))
}
