use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{sleep, sleep_until, Instant, Sleep};
use tower::Service;

use super::config::Config;
use super::policy::{Attempts, Decision, Outcome};
use super::template::Template;
use crate::body::ReplayBody;
use crate::classify::FailureKind;
use crate::deadline;
use crate::error::{BoxError, CircuitOpen, OutcomeUnknown, Overloaded, UnknownCause};
use crate::replay::TokenRejected;
use crate::retry_after::{HintSource, ServerHint};

pin_project! {
    /// Response future of [`Retry`](super::Retry): drives attempts, backoff
    /// sleeps and readiness of the inner service. Dropping it at any point
    /// cancels the logical request; nothing further is sent.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        // the service for the next attempt, cloned from the spare only when
        // a retry is due; boxed, so that the common case (no retry) does
        // not carry a service inline through every move of this future
        service: Option<Box<S>>,
        shared: Arc<Shared<S>>,
        template: Option<Template<B>>,
        attempts: Attempts,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called { #[pin] future: F },
        // Waiting out the delay before the next attempt.
        Backoff { #[pin] sleep: Sleep },
        // Waiting for the inner service to be ready for the next attempt,
        // no later than the deadline.
        Ready { #[pin] deadline: Sleep },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        future: S::Future,
        shared: Arc<Shared<S>>,
        template: Option<Template<B>>,
        attempts: Attempts,
    ) -> Self {
        Self {
            state: State::Called { future },
            service: None,
            shared,
            template,
            attempts,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayBody,
    ResB: Send + 'static,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let config = &this.shared.config;
                    // the happy path: a success by the default table (any
                    // status under 400), nobody to tell
                    if let Ok(response) = &result {
                        if config.default_classifier
                            && response.status().as_u16() < 400
                            && !this.attempts.listened(config)
                        {
                            return Poll::Ready(result);
                        }
                    }
                    this.attempts.settle_safety(config, this.template.as_ref());
                    let decision = match &result {
                        Ok(response) => {
                            let class = config
                                .classifier
                                .classify_response(response.status(), response.headers());
                            let token_replay = if response.status() == StatusCode::UNAUTHORIZED
                                && response.extensions().get::<TokenRejected>().is_some()
                            {
                                this.attempts
                                    .token_rejected(config, response.status(), class)
                            } else {
                                None
                            };
                            token_replay.unwrap_or_else(|| {
                                this.attempts.decide(
                                    config,
                                    &Outcome::Response(response.status(), response.headers()),
                                    class,
                                )
                            })
                        }
                        Err(error) => {
                            let class = config.classifier.classify_error(error.as_ref());
                            // held back below until the deadline and never
                            // sent (`crate::deadline`): the deadline ended it
                            if class.failure() == Some(FailureKind::NotSent)
                                && Instant::now() >= this.attempts.deadline_at(config)
                            {
                                let passed = this.attempts.deadline_passed(config);
                                return Poll::Ready(Err(passed));
                            }
                            let wait = refusal_hint(error.as_ref()).or_else(|| {
                                let delay = config.classifier.error_retry_after(error.as_ref())?;
                                Some(ServerHint {
                                    delay,
                                    source: HintSource::RetryAfter,
                                })
                            });
                            this.attempts
                                .decide(config, &Outcome::Error { wait }, class)
                        }
                    };
                    match decision {
                        Decision::Return => return Poll::Ready(result),
                        Decision::Unknown(kind) => {
                            let attempt = this.attempts.attempt;
                            let unknown = outcome_unknown(attempt, kind, result);
                            return Poll::Ready(Err(unknown.into()));
                        }
                        Decision::Retry(delay) if delay.is_zero() => {
                            let deadline =
                                sleep_until(this.attempts.deadline_at(&this.shared.config));
                            this.state.set(State::Ready { deadline });
                        }
                        Decision::Retry(delay) => {
                            this.state.set(State::Backoff {
                                sleep: sleep(delay),
                            });
                        }
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    let deadline = sleep_until(this.attempts.deadline_at(&this.shared.config));
                    this.state.set(State::Ready { deadline });
                }
                StateProj::Ready { deadline } => {
                    // A service that is slow to become ready (a breaker, a
                    // full limiter) must not push an attempt past the deadline.
                    let service = this
                        .service
                        .get_or_insert_with(|| Box::new(this.shared.spare()));
                    let ready = service.poll_ready(cx);
                    if deadline.poll(cx).is_ready()
                        || (ready.is_ready()
                            && Instant::now() >= this.attempts.deadline_at(&this.shared.config))
                    {
                        return Poll::Ready(Err(this
                            .attempts
                            .deadline_passed(&this.shared.config)));
                    }
                    ready!(ready).map_err(Into::into)?;
                    let mut request = this
                        .template
                        .as_ref()
                        .and_then(Template::request)
                        .ok_or_else(|| -> BoxError {
                            // `decide` only schedules a retry for a replayable
                            // template; a body whose clone fails later is a bug
                            // in its `ReplayBody` impl, reported, not hidden.
                            "request body could not be replayed for a retry".into()
                        })?;
                    this.attempts
                        .attempt_started(&this.shared.config, Instant::now());
                    this.attempts.tag(&mut request);
                    let deadline = this.attempts.deadline_at(&this.shared.config);
                    let entered = deadline::enter(deadline, Duration::ZERO);
                    let future = service.call(request);
                    drop(entered);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// What every clone of one [`Retry`](super::Retry) service and each of its
/// response futures share, behind one reference count: the layer's
/// settings, and a clone of the inner service made at the first call. A
/// request that succeeds at once takes nothing from it; a retry takes a
/// clone of the kept service.
pub(crate) struct Shared<S> {
    pub(crate) config: Config,
    spare: OnceLock<Mutex<S>>,
}

impl<S> Shared<S> {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            spare: OnceLock::new(),
        }
    }
}

impl<S: Clone> Shared<S> {
    /// Keep a clone of `service` for later retries, if none is kept yet.
    pub(crate) fn keep(&self, service: &S) {
        self.spare.get_or_init(|| Mutex::new(service.clone()));
    }

    /// A clone of the kept service (kept before any future exists).
    fn spare(&self) -> S {
        let kept = self.spare.get().expect("kept at the first call");
        kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempts.attempt)
            .finish_non_exhaustive()
    }
}

/// The [`OutcomeUnknown`] that replaces an attempt's outcome: a response is
/// kept whole, body unread, for the caller to take; an error becomes its
/// source.
fn outcome_unknown<B: Send + 'static>(
    attempt: u32,
    kind: FailureKind,
    result: Result<Response<B>, BoxError>,
) -> OutcomeUnknown {
    let cause = match kind {
        FailureKind::Status(status) => UnknownCause::Status(status),
        FailureKind::Timeout => UnknownCause::Timeout,
        FailureKind::Transport => UnknownCause::ConnectionLost,
        _ => UnknownCause::Other,
    };
    let unknown = OutcomeUnknown::new(attempt, cause);
    match result {
        Ok(response) => unknown.with_response(response),
        Err(error) => unknown.with_source(error),
    }
}

/// The wait a refusal by a layer below announces, anywhere in the error
/// chain: an open breaker's next probe ([`CircuitOpen`]), or a rate gate
/// that opens past the deadline ([`Overloaded`] `GateClosed`).
fn refusal_hint(error: &(dyn std::error::Error + 'static)) -> Option<ServerHint> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(open) = err.downcast_ref::<CircuitOpen>() {
            return open.retry_in().map(|delay| ServerHint {
                delay,
                source: HintSource::CircuitBreaker,
            });
        }
        if let Some(delay) = err
            .downcast_ref::<Overloaded>()
            .and_then(Overloaded::retry_in)
        {
            return Some(ServerHint {
                delay,
                source: HintSource::RateGate,
            });
        }
        current = err.source();
    }
    None
}
