use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::Service;

use super::future::ResponseFuture;
use super::origin::Origin;
use super::{BearerLayer, TokenCache};
use crate::audit::AuditRecord;
use crate::body::{try_clone_request, ReplayBody};
use crate::error::{BoxError, InsecureUrl};

/// Injects `Authorization: Bearer ...` at call time; on a 401 drops the
/// token the request carried, gets a fresh one and replays the request once.
///
/// See the [module docs](crate::auth).
#[derive(Debug, Clone)]
pub struct Bearer<S> {
    inner: S,
    cache: TokenCache,
    replay_on_401: bool,
    pub(super) origins: Arc<[Origin]>,
}

impl<S> Bearer<S> {
    /// Wrap `inner`, taking tokens from `cache`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        Self {
            inner,
            cache,
            replay_on_401: true,
            origins: Arc::from([]),
        }
    }

    /// A [`BearerLayer`] over `cache`.
    pub fn layer(cache: TokenCache) -> BearerLayer {
        BearerLayer::new(cache)
    }

    /// See [`BearerLayer::replay_on_401`].
    pub fn replay_on_401(mut self, enabled: bool) -> Self {
        self.replay_on_401 = enabled;
        self
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
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

impl<S, B, ResB> Service<Request<B>> for Bearer<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        if !self.origins.is_empty() {
            if let Some(origin) = Origin::of(request.uri()) {
                if !self.origins.contains(&origin) {
                    // not the API: no token, no 401 handling
                    return ResponseFuture::passthrough(service.call(request));
                }
            }
        }
        if let Err(insecure) = InsecureUrl::check(request.uri()) {
            return ResponseFuture::failed(insecure.into());
        }
        let cache = self.cache.clone();
        let audit = request.extensions().get::<AuditRecord>().cloned();
        match cache.fresh() {
            // Hot path: a valid cached token, no waiting, no allocation.
            Some(token) => {
                let template = if self.replay_on_401 {
                    try_clone_request(&request)
                } else {
                    None
                };
                request.headers_mut().insert(AUTHORIZATION, token.header);
                let future = service.call(request);
                ResponseFuture::called(future, service, cache, template, token.id, audit)
            }
            None => ResponseFuture::acquiring(service, cache, request, self.replay_on_401, audit),
        }
    }
}
