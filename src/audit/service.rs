use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::Service;

use super::event::EventKind;
use super::future::ResponseFuture;
use super::redact::redact_uri;
use super::{AuditLayer, AuditRecord};
use crate::body::{try_clone_request, Body, ReplayBody};
use crate::error::BoxError;
use crate::priority::Priority;
use crate::retry::policy_uuid_v4;

/// Opens an [`AuditRecord`] per logical request and reports its end; see the
/// [module docs](crate::audit).
#[derive(Clone)]
pub struct Audit<S> {
    pub(crate) inner: S,
    pub(crate) layer: AuditLayer,
}

impl<S> Audit<S> {
    /// Wrap `inner`, auditing into the layer's sink.
    pub fn new(inner: S, layer: AuditLayer) -> Self {
        Self { inner, layer }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Audit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

const INCOMING_IDS: [&str; 2] = ["x-request-id", "inin-correlation-id"];

/// A correlation id from the request, if it carries a sane one.
fn incoming_id(headers: &HeaderMap) -> Option<Arc<str>> {
    INCOMING_IDS.iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?.trim();
        let sane =
            !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
        sane.then(|| Arc::from(value))
    })
}

impl<S, B, ResB> Service<Request<B>> for Audit<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: ReplayBody + Into<Body>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let layer = &self.layer;
        let correlation_id =
            incoming_id(request.headers()).unwrap_or_else(|| Arc::from(policy_uuid_v4()));
        if let Ok(value) = HeaderValue::from_str(&correlation_id) {
            request.headers_mut().insert(layer.header.clone(), value);
        }
        let record = AuditRecord::new(correlation_id, layer.sink.clone(), layer.stats.clone());
        if layer.sink.enabled() {
            let priority = request.extensions().get::<Priority>().map(|p| p.as_str());
            record.publish(
                None,
                EventKind::RequestStarted {
                    method: request.method().to_string(),
                    url: redact_uri(request.uri()),
                    priority,
                },
            );
        }
        request.extensions_mut().insert(record.clone());
        let copy = layer
            .dead_letters
            .as_ref()
            .and_then(|_| try_clone_request(&request))
            .map(|copy| {
                let (mut parts, body) = copy.into_parts();
                strip_credentials(&mut parts.headers);
                parts.extensions = http::Extensions::new();
                Request::from_parts(parts, body.into())
            });
        let future = self.inner.call(request);
        ResponseFuture::new(future, record, layer.dead_letters.clone(), copy)
    }
}

fn strip_credentials(headers: &mut HeaderMap) {
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
        headers.remove(&name);
    }
    headers.remove(HeaderName::from_static("x-api-key"));
}
