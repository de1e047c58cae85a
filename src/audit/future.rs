use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;

use super::observer::AuditObserver;
use super::AuditRecord;
use crate::body::Body;
use crate::classify::{classify_error, Class, FailureKind};
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::error::{BoxError, OutcomeUnknown, UnknownCause};
use crate::observe::{RequestEvent, RequestOutcome};

pin_project! {
    /// Response future of [`Audit`](super::Audit): reports
    /// `request.finished` and hands failures to the dead-letter sink.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        // `None` when nothing observes the request (see `Audit::observed`)
        record: Option<Finisher>,
    }
}

/// Where a request that fails for good goes, with its replayable copy.
pub(crate) struct Letters {
    pub(crate) sink: Arc<dyn DeadLetterSink>,
    // boxed: kept only with a dead-letter sink, and large
    pub(crate) copy: Option<Box<Request<Body>>>,
    /// Letter the request too if it is dropped before its outcome.
    pub(crate) on_drop: bool,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        future: F,
        record: AuditRecord,
        observer: Arc<AuditObserver>,
        letters: Option<Letters>,
    ) -> Self {
        Self {
            future,
            record: Some(Finisher {
                record,
                observer,
                letters,
                finished: false,
            }),
        }
    }

    /// A request nothing observes: its outcome is reported nowhere.
    pub(crate) fn unobserved(future: F) -> Self {
        Self {
            future,
            record: None,
        }
    }
}

/// Reports `request.finished` exactly once: from `poll` with the outcome,
/// or, if the future is dropped first, as `cancelled`.
struct Finisher {
    record: AuditRecord,
    /// The record's observer, for counting an end no sink wants.
    observer: Arc<AuditObserver>,
    letters: Option<Letters>,
    finished: bool,
}

impl Finisher {
    fn finish(
        &mut self,
        outcome: RequestOutcome,
        status: Option<StatusCode>,
        error_kind: Option<FailureKind>,
    ) -> u32 {
        self.finished = true;
        let record = &self.record;
        let total = record.started().elapsed();
        let timings = record.timings(total);
        // counted by a retry layer; without one, one attempt was sent unless
        // the request provably never left
        let attempts = match (timings.attempts, outcome, error_kind) {
            (0, RequestOutcome::Cancelled, _) | (0, _, Some(FailureKind::NotSent)) => 0,
            (0, _, _) => 1,
            (n, _, _) => n,
        };
        if !record.enabled() {
            // no sink wants the event: count what it would have counted,
            // without building it
            self.observer.stats.finished(outcome, error_kind, total);
            return attempts;
        }
        record.publish(
            None,
            RequestEvent::Finished {
                outcome,
                status,
                error_kind,
                attempts,
                total,
                backoff: timings.backoff,
                queue: timings.queue,
            }
            .into(),
        );
        attempts
    }

    /// Reports the request's `result`, and dead-letters it if it failed.
    fn report<B>(&mut self, result: &Result<Response<B>, BoxError>) {
        let (outcome, status, error_kind, message) = match result {
            Ok(response) if response.status().as_u16() < 400 => {
                (RequestOutcome::Success, Some(response.status()), None, None)
            }
            Ok(response) => (
                RequestOutcome::HttpError,
                Some(response.status()),
                None,
                Some(response.status().to_string()),
            ),
            Err(error) => {
                let kind = match classify_error(error.as_ref()) {
                    Class::Retryable(kind) | Class::Fatal(kind) => kind,
                    Class::Success => FailureKind::Other,
                };
                (
                    RequestOutcome::Error,
                    None,
                    Some(kind),
                    Some(error.to_string()),
                )
            }
        };
        let attempts = self.finish(outcome, status, error_kind);
        if outcome != RequestOutcome::Success {
            let code = error_kind.map_or_else(|| outcome.as_str(), |kind| kind.as_str());
            // an outcome made unknown by the server's answer: its status
            let status = status.or_else(|| {
                let error = result.as_ref().err()?;
                match OutcomeUnknown::find(error.as_ref())?.cause() {
                    UnknownCause::Status(status) => Some(status),
                    _ => None,
                }
            });
            self.letter(attempts, status, code, message.unwrap_or_default());
        }
    }

    /// Hands the request to the dead-letter sink, if there is one.
    fn letter(&mut self, attempts: u32, status: Option<StatusCode>, code: &str, message: String) {
        if let Some(letters) = self.letters.as_mut() {
            letters.sink.dead_letter(DeadLetter {
                correlation_id: self.record.correlation_id().to_owned(),
                attempts,
                last_status: status.map(|s| s.as_u16()),
                error_code: code.to_owned(),
                message,
                request: letters.copy.take().map(|copy| {
                    let mut copy = *copy;
                    // the copy was taken before a layer below added its
                    // idempotency key: a replay must send the same one
                    self.record.restore_kept_header(copy.headers_mut());
                    copy
                }),
            });
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if !self.finished {
            let attempts = self.finish(RequestOutcome::Cancelled, None, None);
            if self.letters.as_ref().is_some_and(|l| l.on_drop) {
                let message = "dropped before its outcome was known".to_owned();
                self.letter(attempts, None, RequestOutcome::Cancelled.as_str(), message);
            }
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
        let this = self.project();
        let result = ready!(this.future.poll(cx)).map_err(Into::into);
        if let Some(record) = this.record.as_mut() {
            record.report(&result);
        }
        Poll::Ready(result)
    }
}
