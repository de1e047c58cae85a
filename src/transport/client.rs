//! The crate's built-in hyper-util client, and clients boxed with their
//! response bodies read (within a limit).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;

use super::{collect_limited, Transport};
use crate::body::Body;
use crate::error::BoxError;

/// The connector of the built-in client: HTTPS (rustls, Mozilla roots,
/// ALPN `h2` then `http/1.1`) and plain HTTP with the `tls` feature; plain
/// HTTP only without it.
#[cfg(feature = "tls")]
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
/// The connector of the built-in client: plain HTTP (no `tls` feature).
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = HttpConnector;

/// The connector of the built-in client. Over TLS it offers `h2` and
/// `http/1.1` by ALPN, and the client speaks whichever the server picks;
/// plain `http://` connections carry no ALPN.
#[cfg(feature = "tls")]
pub(crate) fn connector() -> Connector {
    // the ring provider named, not the process default: with two providers
    // compiled in (another crate enabling aws-lc-rs) the default is ambiguous
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports the default TLS versions")
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build()
}

/// The connector of the built-in client: plain HTTP (no `tls` feature).
#[cfg(not(feature = "tls"))]
pub(crate) fn connector() -> Connector {
    HttpConnector::new()
}

/// The crate's built-in client, used for token requests, the webhook sink
/// and the ready-made stack: hyper-util's pooled client over [`connector`],
/// so HTTP/2 by ALPN over TLS (one multiplexed connection per origin) and
/// HTTP/1.1 over plain HTTP, unless
/// [`http2_prior_knowledge`](Self::http2_prior_knowledge) is on.
///
/// One reference-counted handle: hyper-util's clients are about 150 bytes
/// each, and a stack is cloned per request by many callers and held by
/// every request queued in its limiter, so a clone costs one reference
/// count and eight bytes.
#[derive(Clone, Debug)]
pub(crate) struct HyperClient {
    clients: Arc<Clients>,
}

#[derive(Debug)]
struct Clients {
    /// `https://` (ALPN) and, without prior knowledge, `http://` (HTTP/1.1).
    negotiated: Client<Connector, Body>,
    /// `http://` with HTTP/2 prior knowledge, when opted in.
    prior_knowledge: Option<Client<HttpConnector, Body>>,
}

impl HyperClient {
    /// HTTP/2 or HTTP/1.1 by ALPN over TLS, HTTP/1.1 over plain HTTP.
    pub(crate) fn new() -> Self {
        Self {
            clients: Arc::new(Clients {
                negotiated: Client::builder(TokioExecutor::new()).build(connector()),
                prior_knowledge: None,
            }),
        }
    }

    /// Speak HTTP/2 from the first byte on plain `http://` (h2c with prior
    /// knowledge), on a pool of its own; `https://` still negotiates.
    pub(crate) fn http2_prior_knowledge(self, on: bool) -> Self {
        let prior_knowledge = on.then(|| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(HttpConnector::new())
        });
        Self {
            clients: Arc::new(Clients {
                negotiated: self.clients.negotiated.clone(),
                prior_knowledge,
            }),
        }
    }
}

impl tower::Service<Request<Body>> for HyperClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's client is always ready: the pool waits in the call
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        let clients = &*self.clients;
        match &clients.prior_knowledge {
            Some(h2c) if request.uri().scheme() == Some(&Scheme::HTTP) => h2c.request(request),
            _ => clients.negotiated.request(request),
        }
    }
}

/// The crate's built-in client, negotiating HTTP/2 by ALPN over TLS.
pub(crate) fn hyper_client() -> HyperClient {
    HyperClient::new()
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

#[cfg(all(test, feature = "tls"))]
mod tests {
    use tokio::io::AsyncReadExt;
    use tower::Service;

    use super::*;

    /// The ALPN extension as rustls writes it into a ClientHello offering
    /// `h2` first, then `http/1.1`: type 16, its length, the list's length,
    /// then each name after its length.
    const ALPN_H2_THEN_HTTP11: &[u8] = b"\x00\x10\x00\x0e\x00\x0c\x02h2\x08http/1.1";

    #[tokio::test]
    async fn the_tls_connector_offers_h2_then_http11() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri: http::Uri = format!("https://localhost:{port}/").parse().unwrap();
        let mut connector = connector();
        let connecting = tokio::spawn(async move { connector.call(uri).await.map(|_| ()) });

        let (mut stream, _) = listener.accept().await.unwrap();
        // the first TLS record: a 5-byte header (handshake, version, length)
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.unwrap();
        assert_eq!(header[0], 0x16, "a handshake record");
        let mut hello = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(hello[0], 0x01, "a ClientHello");
        assert!(
            hello
                .windows(ALPN_H2_THEN_HTTP11.len())
                .any(|w| w == ALPN_H2_THEN_HTTP11),
            "the ClientHello offers h2 then http/1.1 by ALPN"
        );
        drop(stream);
        assert!(connecting.await.unwrap().is_err(), "no server answered");
    }
}
