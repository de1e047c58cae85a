use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::future::ResponseFuture;
use super::handle::KeyedLimitHandle;
use super::registry::Registry;
use crate::error::BoxError;
use crate::observe::{LimiterEvent, RequestContext};
use crate::priority::{Priority, PriorityLimit};

/// A [`PriorityLimit`] per key; see the [module docs](crate::priority::keyed)
/// and [`KeyedLimitLayer`](super::KeyedLimitLayer).
pub struct KeyedLimit<S, K, F> {
    inner: S,
    key: F,
    registry: Arc<Registry<K>>,
}

impl<S, K, F> KeyedLimit<S, K, F> {
    pub(super) fn from_parts(inner: S, key: F, registry: Arc<Registry<K>>) -> Self {
        Self {
            inner,
            key,
            registry,
        }
    }

    /// A handle on the keys.
    pub fn handle(&self) -> KeyedLimitHandle<K> {
        KeyedLimitHandle {
            registry: self.registry.clone(),
        }
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

impl<S: Clone, K, F: Clone> Clone for KeyedLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("inner", &self.inner)
            .field("max_keys", &self.registry.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, B, ResB> Service<Request<B>> for KeyedLimit<S, K, F>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + Send + 'static,
    F: Fn(&Request<B>) -> Option<K>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // the service driven to readiness goes with this request; a fresh
        // clone stays here
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = (self.key)(&request) else {
            return ResponseFuture::unkeyed(inner.call(request));
        };
        match self.registry.acquire(&key) {
            Ok((limiter, hold)) => {
                let mut limited = PriorityLimit::from_shared(inner, limiter);
                ResponseFuture::limited(limited.call(request), hold)
            }
            Err(overloaded) => {
                if let Some(audit) = request.extensions().get::<RequestContext>() {
                    let priority = request
                        .extensions()
                        .get::<Priority>()
                        .copied()
                        .unwrap_or_default();
                    let shed = LimiterEvent::Shed {
                        priority,
                        reason: overloaded.reason(),
                    };
                    audit.publish(None, shed.into());
                }
                ResponseFuture::failed(overloaded.into())
            }
        }
    }
}
