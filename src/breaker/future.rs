use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::machine::{Admission, Breaker, Verdict};
use super::service::publish_transitions;
use crate::classify::{classify_error, Class, FailureKind};
use crate::error::{BoxError, CircuitOpen};
use crate::observe::RequestContext;
use crate::retry_after::server_hint;

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
        Rejected { error: CircuitOpen },
        Done,
    }
}

/// What an attempt's end tells the breaker.
enum Outcome {
    /// An outcome that counts.
    Counted(Verdict),
    /// Never reached the upstream: says nothing about it.
    Unsent,
}

/// Where an admitted call stands with the breaker.
#[derive(Clone, Copy)]
enum Report {
    /// Not reported yet: a probe dropped now frees its slot.
    Owed(Admission),
    Made,
}

/// Reports an admitted call exactly once; a call dropped before its outcome
/// frees its probe slot.
pub(crate) struct Guard {
    breaker: Arc<Breaker>,
    report: Report,
    audit: Option<RequestContext>,
}

impl Guard {
    fn record(&mut self, outcome: Outcome) {
        let Report::Owed(admission) = std::mem::replace(&mut self.report, Report::Made) else {
            return;
        };
        match outcome {
            Outcome::Counted(verdict) => {
                let transitions = self.breaker.core.record(admission, verdict);
                publish_transitions(self.audit.as_ref(), &transitions);
            }
            Outcome::Unsent => {
                if let Admission::Probe(round) = admission {
                    self.breaker.core.release_probe(round);
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Report::Owed(Admission::Probe(round)) = self.report {
            self.breaker.core.release_probe(round);
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(
        future: F,
        breaker: Arc<Breaker>,
        admission: Admission,
        started: Option<Instant>,
        audit: Option<RequestContext>,
    ) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                guard: Guard {
                    breaker,
                    report: Report::Owed(admission),
                    audit,
                },
                started,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error },
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
        let mut kind = self.project().kind;
        match kind.as_mut().project() {
            KindProj::Done => {
                Poll::Ready(Err("circuit breaker future polled after completion".into()))
            }
            KindProj::Rejected { error } => {
                let error = error.clone();
                kind.set(Kind::Done);
                Poll::Ready(Err(error.into()))
            }
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
                let outcome = match &result {
                    Ok(response) => {
                        if status_fails(response.status(), config.count_429) {
                            let hint = server_hint(response.headers(), &*config.clock)
                                .hint
                                .map(|h| h.delay);
                            Outcome::Counted(Verdict::Failure { hint })
                        } else if slow {
                            Outcome::Counted(Verdict::Failure { hint: None })
                        } else {
                            Outcome::Counted(Verdict::Success)
                        }
                    }
                    Err(error) => match classify_error(error.as_ref()) {
                        Class::Retryable(FailureKind::NotSent) => Outcome::Unsent,
                        Class::Retryable(
                            FailureKind::Connect | FailureKind::Timeout | FailureKind::Transport,
                        ) => Outcome::Counted(Verdict::Failure { hint: None }),
                        _ if slow => Outcome::Counted(Verdict::Failure { hint: None }),
                        _ => Outcome::Counted(Verdict::Success),
                    },
                };
                guard.record(outcome);
                kind.set(Kind::Done);
                Poll::Ready(result)
            }
        }
    }
}

/// 5xx other than 501 fail; 429 only when asked.
#[inline]
fn status_fails(status: StatusCode, count_429: bool) -> bool {
    (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || (count_429 && status == StatusCode::TOO_MANY_REQUESTS)
}
