//! Replayable request bodies.
//!
//! A request can only be retried, or replayed after a token refresh, if its
//! body can be sent again. [`Body`] is this crate's request body: a buffered
//! body is backed by [`Bytes`] and clones for the cost of a reference count,
//! while a streaming body passes through untouched and is never replayed.
//!
//! ```
//! use tower_cx::body::{Body, ReplayBody};
//!
//! let buffered = Body::from("{\"query\":1}");
//! assert!(buffered.is_replayable());
//! assert!(buffered.try_clone_body().is_some());
//!
//! let streaming = Body::from_stream(http_body_util::Empty::<bytes::Bytes>::new());
//! assert!(!streaming.is_replayable());
//! assert!(streaming.try_clone_body().is_none());
//! ```
//!
//! Any other body type can take part by implementing [`ReplayBody`].
//!
//! Response bodies are read with a size limit
//! ([`transport::read_limited`](crate::transport::read_limited), the same
//! reader the crate uses for token responses, vendor JSON and error bodies): a server sending an endless body gets a
//! [`BodyTooLarge`](crate::error::BodyTooLarge) error, and never more than
//! the limit is buffered.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::error::BoxError;

/// A body that can say whether it can be sent again.
///
/// The retry and bearer layers call [`try_clone_body`](Self::try_clone_body)
/// before the first attempt; `None` means the request is sent once and never
/// replayed.
pub trait ReplayBody: Sized {
    /// A copy of this body that can be sent again, or `None` if the body
    /// cannot be replayed (a stream, an incoming body).
    fn try_clone_body(&self) -> Option<Self>;
}

/// Clone a request (method, URI, version, headers, extensions and body) for a
/// later replay, or `None` if its body cannot be replayed.
pub fn try_clone_request<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    // (a map emptied by a layer that took its entry out is not copied: its
    // copy would allocate as much as the full one)
    try_clone_parts(request, !request.extensions().is_empty())
}

/// [`try_clone_request`], with the extensions copied only if
/// `with_extensions`: a layer that puts back on each attempt the one entry
/// the request carries saves the copy of a map (three allocations).
pub(crate) fn try_clone_parts<B: ReplayBody>(
    request: &Request<B>,
    with_extensions: bool,
) -> Option<Request<B>> {
    let body = request.body().try_clone_body()?;
    let mut clone = Request::new(body);
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    if with_extensions {
        *clone.extensions_mut() = request.extensions().clone();
    }
    Some(clone)
}

/// The crate's request body: buffered [`Bytes`] (replayable, cheap to clone)
/// or a stream (sent once).
pub struct Body {
    kind: Kind,
}

enum Kind {
    Buffered { data: Bytes, sent: bool },
    Streaming(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty, replayable body.
    pub fn empty() -> Self {
        Self::from_bytes(Bytes::new())
    }

    /// A buffered, replayable body.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: data.into(),
                sent: false,
            },
        }
    }

    /// A streaming body. It is sent once and never replayed.
    pub fn from_stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Streaming(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// Whether this body can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }

    /// The buffered bytes, or `None` for a streaming body.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Buffered { data, .. } => Some(data),
            Kind::Streaming(_) => None,
        }
    }
}

impl ReplayBody for Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes().map(|data| Self::from_bytes(data.clone()))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    // The content is never printed: a body may carry credentials (a
    // `client_secret_post` token request, for one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Buffered { data, .. } => f
                .debug_struct("Body")
                .field("buffered_len", &data.len())
                .finish(),
            Kind::Streaming(_) => f.debug_struct("Body").field("streaming", &true).finish(),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Buffered { data, sent } => {
                if *sent || data.is_empty() {
                    *sent = true;
                    return Poll::Ready(None);
                }
                *sent = true;
                Poll::Ready(Some(Ok(Frame::data(data.clone()))))
            }
            Kind::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, sent } => *sent || data.is_empty(),
            Kind::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, sent } => {
                SizeHint::with_exact(if *sent { 0 } else { data.len() as u64 })
            }
            Kind::Streaming(body) => body.size_hint(),
        }
    }
}

macro_rules! body_from {
    ($($ty:ty),* $(,)?) => {
        $(
            impl From<$ty> for Body {
                fn from(value: $ty) -> Self {
                    Self::from_bytes(value)
                }
            }
        )*
    };
}

body_from!(Bytes, String, Vec<u8>, &'static str, &'static [u8]);

impl From<http_body_util::Full<Bytes>> for Body {
    fn from(mut body: http_body_util::Full<Bytes>) -> Self {
        // `Full` has no accessor for its bytes, but it yields them at once on
        // the first poll: take them without a runtime.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Self::from_bytes(data),
                Err(_) => Self::empty(),
            },
            _ => Self::empty(),
        }
    }
}

impl From<http_body_util::Empty<Bytes>> for Body {
    fn from(_: http_body_util::Empty<Bytes>) -> Self {
        Self::empty()
    }
}

impl ReplayBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

impl ReplayBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for http_body_util::Full<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(Self::new())
    }
}

impl ReplayBody for hyper::body::Incoming {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for UnsyncBoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::BoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Version};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn buffered_body_replays_the_same_bytes() {
        let body = Body::from("hello");
        let copy = body.try_clone_body().expect("replayable");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn streaming_body_is_sent_once_and_never_cloned() {
        let body = Body::from_stream(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert!(body.try_clone_body().is_none());
        assert!(body.as_bytes().is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }

    #[tokio::test]
    async fn full_converts_to_a_replayable_body() {
        let body = Body::from(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.as_bytes().unwrap(), "abc");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }

    #[test]
    fn size_hint_is_exact_for_buffered() {
        let body = Body::from(vec![1u8, 2, 3]);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        assert!(http_body::Body::is_end_stream(&Body::empty()));
    }

    #[test]
    fn debug_never_shows_content() {
        let body = Body::from("client_secret=hunter2");
        let shown = format!("{body:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("21"), "{shown}");
    }

    #[test]
    fn try_clone_request_copies_everything() {
        #[derive(Clone, Debug, PartialEq)]
        struct Marker(u32);
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri("http://127.0.0.1/x?y=1")
            .version(Version::HTTP_11)
            .header("x-a", "1")
            .body(Body::from("payload"))
            .unwrap();
        req.extensions_mut().insert(Marker(7));
        let copy = try_clone_request(&req).expect("replayable");
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), "http://127.0.0.1/x?y=1");
        assert_eq!(copy.headers()["x-a"], "1");
        assert_eq!(copy.extensions().get::<Marker>(), Some(&Marker(7)));
        assert_eq!(copy.body().as_bytes().unwrap(), "payload");
    }

    #[test]
    fn streaming_request_is_not_cloned() {
        let req = Request::new(Body::from_stream(http_body_util::Empty::<Bytes>::new()));
        assert!(try_clone_request(&req).is_none());
    }
}
