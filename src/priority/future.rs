use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::limiter::Permit;
use super::queue::{Ticket, TicketState};
use crate::deadline;
use crate::error::{BoxError, Overloaded, QuotaExhausted};
use crate::hint::client_wide_hint;
use crate::observe::{LimiterEvent, RequestContext};

pin_project! {
    /// Response future of [`PriorityLimit`](super::PriorityLimit): waits in
    /// the queue, then sends. Dropping it at any point leaves the queue or
    /// releases the permit.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
        audit: Option<RequestContext>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        // Not sent yet: queued for a permit, or waiting for the gate. Kept
        // out of line: only a request that already waits pays the box,
        // and the future every other request moves and drops stays the
        // size of the called one (the service and the request are large).
        Waiting { waiting: Box<Waiting<S, B>> },
        Called { #[pin] future: F, permit: Option<Permit> },
        Failed { error: Option<BoxError> },
    }
}

/// A request that has not been sent yet. The service and request stay
/// where they are while the stage changes.
struct Waiting<S, B> {
    stage: Stage,
    pending: Option<(S, Request<B>)>,
    /// The logical request's deadline, if a layer above set one
    /// (`crate::deadline`): the request is never held past it.
    deadline: Option<Instant>,
}

/// Where a request that has not been sent yet stands. (The `Option`s only
/// let a permit move on to the next stage.)
enum Stage {
    /// In the queue, for a permit.
    Queued {
        ticket: Ticket,
        give_up: Option<Pin<Box<Sleep>>>,
        /// When it queued, if the audit record wants the wait.
        queued_at: Option<Instant>,
    },
    /// Holding a permit (and the paced slot, if any), waiting for the
    /// rate gate that closed after the grant.
    Gated {
        wait: Pin<Box<Sleep>>,
        permit: Option<Permit>,
    },
    /// Holding a permit (and the paced slot, if any): sent once the gate is
    /// open.
    Ready { permit: Option<Permit> },
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(future: S::Future, permit: Permit, audit: Option<RequestContext>) -> Self {
        Self {
            state: State::Called {
                future,
                permit: Some(permit),
            },
            audit,
        }
    }

    pub(crate) fn queued(
        ticket: Ticket,
        service: S,
        request: Request<B>,
        audit: Option<RequestContext>,
    ) -> Self {
        let deadline = deadline::current();
        // the limiter's own maximum wait, or the request's deadline
        let give_up = match (ticket.give_up_at(), deadline) {
            (Some(at), Some(deadline)) => Some(at.min(deadline)),
            (at, deadline) => at.or(deadline),
        }
        .map(|at| Box::pin(tokio::time::sleep_until(at)));
        let waiting = Box::new(Waiting {
            stage: Stage::Queued {
                queued_at: audit.as_ref().map(|_| Instant::now()),
                ticket,
                give_up,
            },
            pending: Some((service, request)),
            deadline,
        });
        Self {
            state: State::Waiting { waiting },
            audit,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            audit: None,
        }
    }
}

const DONE: &str = "priority limit future polled after completion";

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| DONE.into())));
                }
                StateProj::Waiting { waiting } => {
                    let Waiting {
                        stage,
                        pending,
                        deadline,
                    } = &mut **waiting;
                    match stage {
                        Stage::Queued {
                            ticket,
                            give_up,
                            queued_at,
                        } => {
                            let mut outcome = ticket.poll_state(cx.waker());
                            // the rate gate closed (woken then) until past
                            // the request's deadline: no use waiting
                            let gate = deadline.and_then(|deadline| {
                                ticket
                                    .gate_closed_until()
                                    .filter(|until| *until >= deadline)
                            });
                            if let (TicketState::Waiting, Some(until)) = (&outcome, gate) {
                                outcome = ticket.gate_past_deadline(until);
                            }
                            if matches!(outcome, TicketState::Waiting) {
                                if let Some(sleep) = give_up.as_mut() {
                                    if sleep.as_mut().poll(cx).is_ready() {
                                        outcome = ticket.time_out();
                                    }
                                }
                            }
                            match outcome {
                                TicketState::Waiting => return Poll::Pending,
                                TicketState::Granted(permit) => {
                                    if let (Some(audit), Some(at)) =
                                        (this.audit.as_ref(), *queued_at)
                                    {
                                        if ticket.after_gate() {
                                            audit.publish(None, LimiterEvent::GateOpened.into());
                                        }
                                        let wait = at.elapsed();
                                        audit.add_queue(wait);
                                        let waited = LimiterEvent::QueueWaited {
                                            wait,
                                            priority: ticket.priority,
                                        };
                                        audit.publish(None, waited.into());
                                    }
                                    *stage = Stage::Ready {
                                        permit: Some(permit),
                                    };
                                }
                                TicketState::Shed(overloaded) => {
                                    if let Some(audit) = this.audit.as_ref() {
                                        if let Some(at) = *queued_at {
                                            audit.add_queue(at.elapsed());
                                        }
                                        let shed = LimiterEvent::Shed {
                                            priority: ticket.priority,
                                            reason: overloaded.reason(),
                                        };
                                        audit.publish(None, shed.into());
                                    }
                                    this.state.set(State::Failed {
                                        error: Some(overloaded.into()),
                                    });
                                }
                                TicketState::Exhausted(exhausted) => {
                                    if let (Some(audit), Some(at)) =
                                        (this.audit.as_ref(), *queued_at)
                                    {
                                        audit.add_queue(at.elapsed());
                                    }
                                    this.state.set(State::Failed {
                                        error: Some(exhausted.into()),
                                    });
                                }
                            }
                        }
                        Stage::Gated { wait, permit } => {
                            ready!(wait.as_mut().poll(cx));
                            let permit = permit.take();
                            *stage = Stage::Ready { permit };
                        }
                        Stage::Ready { permit } => {
                            // Granted, but the quota ran out before this task
                            // ran: fail now, as every waiter did.
                            let exhausted =
                                permit.as_ref().and_then(|p| p.limiter().exhausted_until());
                            if let Some(until) = exhausted {
                                permit.take();
                                let error = QuotaExhausted::new(until);
                                this.state.set(State::Failed {
                                    error: Some(error.into()),
                                });
                                continue;
                            }
                            // Granted, but the gate closed before this task ran
                            // (a 429 elsewhere): keep the permit and wait for the
                            // gate, never send into an announced wait.
                            let closed = permit
                                .as_ref()
                                .and_then(|p| p.limiter().gate_closed_until());
                            if let Some(until) = closed {
                                if deadline.is_some_and(|deadline| until >= deadline) {
                                    // it would open too late for the request
                                    permit.take();
                                    let late = Overloaded::gate_closed(until - Instant::now());
                                    this.state.set(State::Failed {
                                        error: Some(late.into()),
                                    });
                                    continue;
                                }
                                let wait = Box::pin(tokio::time::sleep_until(until));
                                let permit = permit.take();
                                *stage = Stage::Gated { wait, permit };
                                continue;
                            }
                            let Some((service, _)) = pending.as_mut() else {
                                return Poll::Ready(Err(DONE.into()));
                            };
                            ready!(service.poll_ready(cx)).map_err(Into::into)?;
                            let Some((mut service, request)) = pending.take() else {
                                return Poll::Ready(Err(DONE.into()));
                            };
                            let permit = permit.take();
                            let future = service.call(request);
                            this.state.set(State::Called { future, permit });
                        }
                    }
                }
                StateProj::Called { future, permit } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    if let (Ok(response), Some(permit)) = (&result, permit.as_ref()) {
                        let limiter = permit.limiter();
                        if limiter.config.learns() {
                            let learned =
                                limiter.learn_from(permit, response.status(), response.headers());
                            if let (Some(event), Some(audit)) = (learned, this.audit.as_ref()) {
                                audit.publish(None, event.into());
                            }
                        }
                        limiter.advertised_remaining(response.headers());
                        let clock = limiter.config.clock.as_ref();
                        let report = client_wide_hint(response.status(), response.headers(), clock);
                        if let Some(hint) =
                            report.hint.filter(|h| h.delay > limiter.config.max_gate)
                        {
                            // a daily cap: nothing goes until its time
                            let entered = limiter.exhaust(hint.delay, hint.source);
                            if let (true, Some(audit)) = (entered, this.audit.as_ref()) {
                                let exhausted = LimiterEvent::QuotaExhausted {
                                    for_: hint.delay,
                                    source: Some(hint.source),
                                };
                                audit.publish(None, exhausted.into());
                            }
                        } else if let Some(hint) = report.hint {
                            let closed = limiter.close_gate(hint.delay, hint.source);
                            if let (true, Some(audit)) = (closed, this.audit.as_ref()) {
                                let closed = LimiterEvent::GateClosed {
                                    for_: hint.delay,
                                    source: hint.source,
                                };
                                audit.publish(None, closed.into());
                            }
                        }
                    }
                    // the permit goes back now, not when the future is dropped
                    permit.take();
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
