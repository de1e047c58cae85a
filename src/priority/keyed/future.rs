use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use super::registry::Hold;
use crate::error::BoxError;
use crate::priority;

pin_project! {
    /// Response future of [`KeyedLimit`](super::KeyedLimit): the key's
    /// limiter's future (it keeps the key in use until it completes or is
    /// dropped), the inner service's for a request without a key, or a
    /// refusal.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
        hold: Option<Hold>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Limited { #[pin] future: priority::ResponseFuture<S, B> },
        Unkeyed { #[pin] future: S::Future },
        Failed { error: Option<BoxError> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn limited(future: priority::ResponseFuture<S, B>, hold: Hold) -> Self {
        Self {
            kind: Kind::Limited { future },
            hold: Some(hold),
        }
    }

    pub(super) fn unkeyed(future: S::Future) -> Self {
        Self {
            kind: Kind::Unkeyed { future },
            hold: None,
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
            hold: None,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = match this.kind.project() {
            KindProj::Limited { future } => std::task::ready!(future.poll(cx)),
            KindProj::Unkeyed { future } => std::task::ready!(future.poll(cx)).map_err(Into::into),
            KindProj::Failed { error } => Err(error
                .take()
                .unwrap_or_else(|| "keyed limit future polled after completion".into())),
        };
        // the key is idle from the response on
        this.hold.take();
        Poll::Ready(output)
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("keyed", &self.hold.is_some())
            .finish_non_exhaustive()
    }
}
