use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

use super::admit::Admission;
use super::future::ResponseFuture;
use super::handle::PriorityLimitHandle;
use super::limiter::Limiter;
use super::{Cost, Priority, PriorityLimitLayer};
use crate::error::{BoxError, Overloaded};
use crate::observe::{LimiterEvent, RequestContext};

/// A concurrency limit with a priority queue and a shared rate gate; see the
/// [module docs](crate::priority).
#[derive(Clone)]
pub struct PriorityLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> PriorityLimit<S> {
    /// When the rate gate is closed until past the deadline of the request
    /// being called (`crate::deadline`), the refusal that says when it
    /// opens.
    fn gate_past_deadline(&self) -> Option<Overloaded> {
        let deadline = crate::deadline::current()?;
        let until = self.limiter.gate_closed_until()?;
        (until >= deadline).then(|| Overloaded::gate_closed(until - Instant::now()))
    }

    /// Wrap `inner` with at most `max_concurrency` requests in flight.
    pub fn new(inner: S, max_concurrency: usize) -> Self {
        tower::Layer::layer(&PriorityLimitLayer::new(max_concurrency), inner)
    }

    /// A [`PriorityLimitLayer`] to configure.
    pub fn layer(max_concurrency: usize) -> PriorityLimitLayer {
        PriorityLimitLayer::new(max_concurrency)
    }

    pub(crate) fn from_shared(inner: S, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
    }

    /// A handle on the shared limiter.
    pub fn handle(&self) -> PriorityLimitHandle {
        PriorityLimitHandle::fixed(self.limiter.clone())
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

impl<S: fmt::Debug> fmt::Debug for PriorityLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.handle())
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for PriorityLimit<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // the usual case, a permit free and nothing queued: only the
        // context is read, no admission is built and no lock taken
        let Some(permit) = self.limiter.try_permit() else {
            return self.admit(request);
        };
        let audit = request.extensions().get::<RequestContext>().cloned();
        ResponseFuture::called(self.inner.call(request), permit, audit)
    }
}

impl<S> PriorityLimit<S> {
    /// Admission when the fast path could not take a permit: under the
    /// lock, a permit, a place in the queue or a refusal. (Kept out of
    /// `call`, so that the fast path stays small.)
    #[inline(never)]
    fn admit<B, ResB>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone,
        S::Error: Into<BoxError>,
    {
        let priority = request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        let audit = request.extensions().get::<RequestContext>().cloned();
        // a rate gate that opens only past the request's deadline: refused
        // now, before it takes (or evicts for) a place in the queue
        if let Some(late) = self.gate_past_deadline() {
            if let Some(audit) = &audit {
                let shed = LimiterEvent::Shed {
                    priority,
                    reason: late.reason(),
                };
                audit.publish(None, shed.into());
            }
            return ResponseFuture::failed(late.into());
        }
        match self.limiter.admit_costing(priority, Cost::of(&request)) {
            Admission::Permit(permit) => {
                let future = self.inner.call(request);
                ResponseFuture::called(future, permit, audit)
            }
            Admission::Queued(ticket) => {
                // keep the service driven to readiness for later; a fresh
                // clone stays here
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(ticket, service, request, audit)
            }
            Admission::Rejected(overloaded) => {
                if let Some(audit) = &audit {
                    let shed = LimiterEvent::Shed {
                        priority,
                        reason: overloaded.reason(),
                    };
                    audit.publish(None, shed.into());
                }
                ResponseFuture::failed(overloaded.into())
            }
            Admission::Exhausted(exhausted) => ResponseFuture::failed(exhausted.into()),
        }
    }
}
