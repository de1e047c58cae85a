use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::Service;

use super::cache::Seen;
use super::future::{On401, Pending, ResponseFuture};
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
    /// The token this service last read from `cache`.
    seen: Seen,
}

impl<S> Bearer<S> {
    /// Wrap `inner`, taking tokens from `cache`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        Self {
            inner,
            cache,
            replay_on_401: true,
            origins: Arc::from([]),
            seen: Seen::default(),
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
        // `https` (the usual case) needs no closer look
        if request.uri().scheme_str() != Some("https") {
            if let Err(insecure) = InsecureUrl::check(request.uri()) {
                return ResponseFuture::failed(insecure.into());
            }
        }
        let audit = request.extensions().get::<RequestContext>().cloned();
        // the 401 replay (`crate::replay`): ours, unless a layer above does it
        let replay_here = self.replay_on_401 && !replay::is_marked_with(&request, audit.as_ref());
        let Some(token) = self.cache.fresh_seen(&mut self.seen) else {
            // no valid token: wait for one, then send
            let on_401 = if replay_here {
                On401::Replay
            } else {
                On401::Mark
            };
            let pending = Pending::boxed(self.take_ready(), request);
            return ResponseFuture::acquiring(pending, self.cache.clone(), on_401, audit);
        };
        // Hot path: a valid cached token, no waiting. For a replay of our
        // own, a copy of the request is kept (made before the token goes
        // in) with the ready service that sends it first.
        let template = if replay_here {
            try_clone_request(&request)
        } else {
            None
        };
        request.headers_mut().insert(AUTHORIZATION, token.header);
        let (future, replay) = match template {
            Some(template) => {
                let mut service = self.take_ready();
                (
                    service.call(request),
                    Some(Pending::boxed(service, template)),
                )
            }
            None => (self.inner.call(request), None),
        };
        ResponseFuture::sent(future, self.cache.clone(), token.id, replay, audit)
    }
}

impl<S: Clone> Bearer<S> {
    /// The ready inner service, for a future that calls it later (or again
    /// for a replay); a fresh clone stays here.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}
