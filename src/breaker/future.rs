use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::service::publish_transitions;
use super::state::{Admission, Breaker};
use crate::audit::AuditRecord;
use crate::classify::{classify_error, Class, FailureKind};
use crate::error::{BoxError, CircuitOpen};
use crate::retry_after::{server_hint, SystemClock};

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Admitted {
            #[pin]
            future: F,
            guard: Guard,
            started: Option<Instant>,
        },
        Rejected { error: Option<CircuitOpen> },
    }
}

/// Reports an admitted call exactly once; a call dropped before its outcome
/// frees its probe slot.
pub(crate) struct Guard {
    breaker: Arc<Breaker>,
    admission: Admission,
    done: bool,
    audit: Option<AuditRecord>,
}

impl Guard {
    fn record(&mut self, failure: Option<bool>, hint: Option<Duration>) {
        self.done = true;
        match failure {
            Some(failure) => {
                let transitions = self.breaker.record(self.admission, failure, hint);
                publish_transitions(self.audit.as_ref(), &transitions);
            }
            None => {
                if let Admission::Probe(round) = self.admission {
                    self.breaker.release_probe(round);
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let (false, Admission::Probe(round)) = (self.done, self.admission) {
            self.breaker.release_probe(round);
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(
        future: F,
        breaker: Arc<Breaker>,
        admission: Admission,
        started: Option<Instant>,
        audit: Option<AuditRecord>,
    ) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                guard: Guard {
                    breaker,
                    admission,
                    done: false,
                    audit,
                },
                started,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .map(BoxError::from)
                .unwrap_or_else(|| "circuit breaker future polled after completion".into()))),
            KindProj::Admitted {
                future,
                guard,
                started,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let config = &guard.breaker.config;
                let slow = match (config.slow_call, started) {
                    (Some(threshold), Some(started)) => started.elapsed() > threshold,
                    _ => false,
                };
                let (failure, hint) = match &result {
                    Ok(response) => {
                        let status = response.status();
                        let failed = status_fails(status, config.count_429);
                        let hint = failed
                            .then(|| server_hint(response.headers(), &SystemClock).hint)
                            .flatten()
                            .map(|h| h.delay);
                        (Some(failed || slow), hint)
                    }
                    Err(error) => match classify_error(error.as_ref()) {
                        // never reached the upstream: says nothing about it
                        Class::Retryable(FailureKind::NotSent) => (None, None),
                        Class::Retryable(
                            FailureKind::Connect | FailureKind::Timeout | FailureKind::Transport,
                        ) => (Some(true), None),
                        _ => (Some(slow), None),
                    },
                };
                guard.record(failure, hint);
                Poll::Ready(result)
            }
        }
    }
}

/// 5xx other than 501 fail; 429 only when asked.
fn status_fails(status: StatusCode, count_429: bool) -> bool {
    (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || (count_429 && status == StatusCode::TOO_MANY_REQUESTS)
}
