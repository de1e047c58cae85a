use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

use super::future::ResponseFuture;
use super::machine::Breaker;
use super::{CircuitBreakerHandle, CircuitBreakerLayer};
use crate::error::BoxError;
use crate::observe::RequestContext;

/// Tell the request's audit record about the transitions it caused.
pub(crate) fn publish_transitions(
    audit: Option<&RequestContext>,
    transitions: &[super::BreakerEvent],
) {
    if let Some(audit) = audit {
        for transition in transitions {
            audit.publish(None, transition.clone().into());
        }
    }
}

/// Fails fast while the upstream is broken; see the [module docs](crate::breaker).
#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> CircuitBreaker<S> {
    /// Wrap `inner` with a breaker of default settings.
    pub fn new(inner: S) -> Self {
        CircuitBreakerLayer::new().layer_service(inner)
    }

    /// A [`CircuitBreakerLayer`] with default settings, to configure.
    pub fn layer() -> CircuitBreakerLayer {
        CircuitBreakerLayer::new()
    }

    pub(crate) fn from_shared(inner: S, breaker: Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            core: self.breaker.core.clone(),
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

impl CircuitBreakerLayer {
    fn layer_service<S>(&self, inner: S) -> CircuitBreaker<S> {
        tower::Layer::layer(self, inner)
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.handle())
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let audit = request.extensions().get::<RequestContext>().cloned();
        let (admission, transitions) = self.breaker.core.admit(self.breaker.config.share.as_ref());
        publish_transitions(audit.as_ref(), &transitions);
        match admission {
            Ok(admission) => {
                let started = self.breaker.config.slow_call.map(|_| Instant::now());
                let future = self.inner.call(request);
                ResponseFuture::admitted(future, self.breaker.clone(), admission, started, audit)
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
