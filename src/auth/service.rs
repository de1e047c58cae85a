use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::Service;

use super::future::{On401, ResponseFuture, Unauthorized};
use super::{BearerLayer, TokenCache};
use crate::body::{try_clone_request, ReplayBody};
use crate::error::{BoxError, InsecureUrl};
use crate::observe::RequestContext;
use crate::origin::Origin;
use crate::replay;

/// Injects `Authorization: Bearer ...` at call time; on a 401 drops the
/// token the request carried, gets a fresh one and replays the request once
/// (or leaves the replay to a layer above that marked the request: see
/// [`crate::replay`]).
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
        if !self.origins.is_empty() {
            // A relative URI names no origin, so it cannot be shown to be
            // the API's: with origins restricted it gets no token either
            // (whatever a `Host` header says).
            let allowed = Origin::of(request.uri()).is_some_and(|o| self.origins.contains(&o));
            if !allowed {
                // not (provably) the API: no token, no 401 handling
                return ResponseFuture::passthrough(self.inner.call(request));
            }
        }
        if let Err(insecure) = InsecureUrl::check(request.uri()) {
            return ResponseFuture::failed(insecure.into());
        }
        let cache = self.cache.clone();
        let audit = request.extensions().get::<RequestContext>().cloned();
        // the 401 replay (`crate::replay`): ours, unless a layer above does it
        let replay_here = self.replay_on_401 && !replay::is_marked_with(&request, audit.as_ref());
        match cache.fresh() {
            // Hot path: a valid cached token, no waiting. The service is
            // kept (a clone of the ready one) only for a replay of our own.
            Some(token) if replay_here => {
                let template = try_clone_request(&request);
                request.headers_mut().insert(AUTHORIZATION, token.header);
                let clone = self.inner.clone();
                let mut service = std::mem::replace(&mut self.inner, clone);
                let future = service.call(request);
                let unauthorized = match template {
                    Some(request) => Unauthorized::Replay { service, request },
                    None => Unauthorized::Mark,
                };
                ResponseFuture::sent(future, cache, token.id, unauthorized, audit)
            }
            Some(token) => {
                request.headers_mut().insert(AUTHORIZATION, token.header);
                let future = self.inner.call(request);
                ResponseFuture::sent(future, cache, token.id, Unauthorized::Mark, audit)
            }
            None => {
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let on_401 = if replay_here {
                    On401::Replay
                } else {
                    On401::Mark
                };
                ResponseFuture::acquiring(service, cache, request, on_401, audit)
            }
        }
    }
}
