//! Dead letters: requests that failed for good, kept to be sent again, and
//! the one rule that hands each to a sink exactly once.
//!
//! The protocol, owned here:
//!
//! - The outermost party that sees a logical request end for good hands it
//!   to a [`DeadLetterSink`] once, with a replayable copy (credentials
//!   removed) and a code: the failure kind, `outcome_unknown` when it may
//!   have been applied, or `http_error`.
//! - A typed vendor client dead-letters after its own retries (one letter
//!   per logical call) and marks each request it sends
//!   [`DeadLettersHandled`]; the [`AuditLayer`](crate::audit::AuditLayer)
//!   below it then letters nothing for it.
//! - Without a typed client, the audit layer letters the requests that
//!   reach it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_cx::dead_letter::{dead_letter_fn, DeadLetter, DeadLetterSink};
//!
//! let kept = Arc::new(Mutex::new(Vec::new()));
//! let seen = kept.clone();
//! let sink = dead_letter_fn(move |letter: DeadLetter| seen.lock().unwrap().push(letter));
//! sink.dead_letter(DeadLetter {
//!     correlation_id: "req-1".into(),
//!     attempts: 3,
//!     last_status: Some(503),
//!     error_code: "http_error".into(),
//!     message: "503 Service Unavailable".into(),
//!     request: None,
//! });
//! assert_eq!(kept.lock().unwrap()[0].attempts, 3);
//! ```

use std::fmt;

use http::Request;

use crate::body::Body;

/// A request that failed for good, kept so it can be sent again later.
///
/// Its `Debug` shows the request's method and URL with secret-looking
/// query values redacted, as the audit records do, and no headers or body.
pub struct DeadLetter {
    /// The logical request's correlation id.
    pub correlation_id: String,
    /// Attempts sent.
    pub attempts: u32,
    /// The last status, if the request got a response.
    pub last_status: Option<u16>,
    /// A short error code: the failure kind (`http_error`, `timeout`, ...).
    pub error_code: String,
    /// A human-readable message: the status, or the error's text. This
    /// crate's errors carry no secrets; an error from your own inner client
    /// is passed on as its `Display` gives it.
    pub message: String,
    /// The request, if its body could be kept (credentials headers removed).
    pub request: Option<Request<Body>>,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self
            .request
            .as_ref()
            .map(|r| format!("{} {}", r.method(), crate::redact::redact_uri(r.uri())));
        f.debug_struct("DeadLetter")
            .field("correlation_id", &self.correlation_id)
            .field("attempts", &self.attempts)
            .field("last_status", &self.last_status)
            .field("error_code", &self.error_code)
            .field("message", &self.message)
            .field("request", &request)
            .finish()
    }
}

/// A request extension: the caller dead-letters this request itself (the
/// typed vendor clients do, once per logical call after their own
/// retries), so an observing layer with a dead-letter sink (the audit
/// layer) does not. See the [module docs](self) for the protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLettersHandled;

/// Receives [`DeadLetter`]s.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Keep the dead letter. Called once per failed request; return quickly.
    fn dead_letter(&self, letter: DeadLetter);
}

/// A dead-letter sink that calls a closure. Made by [`dead_letter_fn`].
#[derive(Clone)]
pub struct DeadLetterFn<F> {
    f: F,
}

/// Hand each dead letter to `f`.
pub fn dead_letter_fn<F>(f: F) -> DeadLetterFn<F>
where
    F: Fn(DeadLetter) + Send + Sync + 'static,
{
    DeadLetterFn { f }
}

impl<F> DeadLetterSink for DeadLetterFn<F>
where
    F: Fn(DeadLetter) + Send + Sync + 'static,
{
    fn dead_letter(&self, letter: DeadLetter) {
        (self.f)(letter);
    }
}

impl<F> fmt::Debug for DeadLetterFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterFn").finish_non_exhaustive()
    }
}
