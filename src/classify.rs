//! Classification of responses and errors, shared by the retry layer and the
//! circuit breaker.
//!
//! The default table:
//!
//! | outcome | class |
//! |---|---|
//! | 1xx, 2xx, 3xx | success |
//! | 408, 429, 500, 502, 503, 504 | retryable |
//! | every other 4xx and 5xx (501 and 505 included) | fatal |
//! | connect error (`reqwest::Error::is_connect` too), [`RequestNotSent`], [`Overloaded`], [`CircuitOpen`] (not isolated) | retryable, and the request was never sent |
//! | timeout ([`tower::timeout::error::Elapsed`], [`tokio::time::error::Elapsed`], hyper timeouts, `reqwest::Error::is_timeout`) | retryable |
//! | an HTTP/2 stream refused by the server (`REFUSED_STREAM`, RFC 9113 §8.7) | retryable, and the request was never processed |
//! | connection closed or reset mid-exchange, an answer that is not HTTP or whose head is too large (hyper's parse errors), any other HTTP/2 stream error (any other `reqwest` request or body error) | retryable (the request may have been applied) |
//! | [`OutcomeUnknown`] (a retry layer below gave up on an unknown outcome) | fatal |
//! | [`QuotaExhausted`] (the limiter refuses every request until the quota resets) | fatal: never retried before the reset, returned at once |
//! | anything else (a `reqwest` builder, redirect or decode error too) | fatal |
//!
//! Whether a retryable outcome is actually retried also depends on the
//! request (its method, an `Idempotency-Key` to an origin that honours keys)
//! and on whether the failure proves the request was not processed: that is
//! the retry layer's call (see the table in [`crate::retry`]).
//!
//! A closure can override the table for responses:
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_cx::classify::{self, Class, Classify, FailureKind};
//!
//! // This API answers 520 when its own upstream hiccups: worth a retry.
//! let classifier = classify::from_fn(|status: StatusCode, _headers: &HeaderMap| {
//!     (status.as_u16() == 520).then_some(Class::Retryable(FailureKind::Status(status)))
//! });
//! let status = StatusCode::from_u16(520).unwrap();
//! assert_eq!(
//!     classifier.classify_response(status, &HeaderMap::new()),
//!     Class::Retryable(FailureKind::Status(status)),
//! );
//! // Everything else keeps the default table.
//! assert_eq!(
//!     classifier.classify_response(StatusCode::NOT_IMPLEMENTED, &HeaderMap::new()),
//!     Class::Fatal(FailureKind::Status(StatusCode::NOT_IMPLEMENTED)),
//! );
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::error::{CircuitOpen, OutcomeUnknown, Overloaded, QuotaExhausted, RequestNotSent};

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The server answered with this status.
    Status(StatusCode),
    /// The connection could not be established: the request was never sent.
    Connect,
    /// A layer or the client reported that the request was never sent.
    NotSent,
    /// The attempt timed out.
    Timeout,
    /// The connection was closed or reset during the exchange; the server may
    /// have applied the request.
    Transport,
    /// A retry layer below already gave up with
    /// [`OutcomeUnknown`]: the request may have
    /// been applied, and it must not be sent again. Always fatal.
    OutcomeUnknown,
    /// Any other error.
    Other,
}

impl FailureKind {
    /// Whether the request may have reached the server. `false` only when it
    /// provably did not ([`Connect`](Self::Connect), [`NotSent`](Self::NotSent)),
    /// which makes a retry safe for any method.
    pub fn request_may_have_been_sent(&self) -> bool {
        !matches!(self, FailureKind::Connect | FailureKind::NotSent)
    }

    /// A short stable name: `status`, `connect`, `not_sent`, `timeout`,
    /// `transport`, `outcome_unknown` or `other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Status(_) => "status",
            FailureKind::Connect => "connect",
            FailureKind::NotSent => "not_sent",
            FailureKind::Timeout => "timeout",
            FailureKind::Transport => "transport",
            FailureKind::OutcomeUnknown => "outcome_unknown",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Status(status) => write!(f, "status {}", status.as_u16()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The class of one attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The attempt succeeded (any 1xx, 2xx or 3xx by default).
    Success,
    /// The attempt failed in a way another attempt may fix.
    Retryable(FailureKind),
    /// The attempt failed in a way another attempt will not fix.
    Fatal(FailureKind),
}

impl Class {
    /// Whether this is [`Class::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Class::Success)
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<FailureKind> {
        match self {
            Class::Success => None,
            Class::Retryable(kind) | Class::Fatal(kind) => Some(*kind),
        }
    }
}

/// Decides the [`Class`] of a response or an error.
///
/// Implement it for full control, or use [`from_fn`] to override the default
/// table for some responses only.
pub trait Classify: Send + Sync + 'static {
    /// Classify a response by its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Class;

    /// Classify an error returned by the inner service.
    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Class;

    /// The wait a server asked for, when `error` stands for its answer and
    /// kept its `Retry-After` (a typed vendor error made from a `429` or
    /// `503`, say). The retry layer waits for it as it does for a response's
    /// header, and a `503` with one proves the request was not processed.
    /// By default none.
    fn error_retry_after(&self, error: &(dyn StdError + 'static)) -> Option<Duration> {
        let _ = error;
        None
    }
}

/// The default classification table (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify_response(&self, status: StatusCode, _headers: &HeaderMap) -> Class {
        classify_status(status)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Class {
        classify_error(error)
    }
}

/// The default table for a status code.
pub fn classify_status(status: StatusCode) -> Class {
    match status.as_u16() {
        408 | 429 | 500 | 502 | 503 | 504 => Class::Retryable(FailureKind::Status(status)),
        400..=599 => Class::Fatal(FailureKind::Status(status)),
        _ => Class::Success,
    }
}

/// The default table for an error: walks the error and its `source()` chain
/// and takes the first cause it recognises.
pub fn classify_error(error: &(dyn StdError + 'static)) -> Class {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(kind) = recognise(err) {
            return match kind {
                FailureKind::Other | FailureKind::OutcomeUnknown => Class::Fatal(kind),
                _ => Class::Retryable(kind),
            };
        }
        current = err.source();
    }
    Class::Fatal(FailureKind::Other)
}

fn recognise(err: &(dyn StdError + 'static)) -> Option<FailureKind> {
    if err.is::<OutcomeUnknown>() {
        return Some(FailureKind::OutcomeUnknown);
    }
    // exhausted until a reset hours away: no retry may come earlier
    if err.is::<QuotaExhausted>() {
        return Some(FailureKind::Other);
    }
    if err.is::<RequestNotSent>() || err.is::<Overloaded>() {
        return Some(FailureKind::NotSent);
    }
    if let Some(open) = err.downcast_ref::<CircuitOpen>() {
        // isolated by hand: no point in retrying
        return Some(if open.retry_in().is_some() {
            FailureKind::NotSent
        } else {
            FailureKind::Other
        });
    }
    if err.is::<tower::timeout::error::Elapsed>() || err.is::<tokio::time::error::Elapsed>() {
        return Some(FailureKind::Timeout);
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = err.downcast_ref::<reqwest::Error>() {
        return Some(reqwest_failure(err));
    }
    if let Some(err) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        if err.is_connect() {
            return Some(FailureKind::Connect);
        }
        return None; // look at its source
    }
    if let Some(err) = err.downcast_ref::<hyper::Error>() {
        if err.is_timeout() {
            return Some(FailureKind::Timeout);
        }
        if err.is_canceled() || err.is_closed() || err.is_incomplete_message() {
            return Some(FailureKind::Transport);
        }
        // an answer that is not HTTP, or too large a head: the request was
        // written, and the server may have acted on it
        if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
            return Some(FailureKind::Transport);
        }
        return None;
    }
    if let Some(err) = err.downcast_ref::<h2::Error>() {
        // RFC 9113 §8.7: a stream refused "prior to any processing" may be
        // sent again, whatever its method
        if err.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Some(FailureKind::NotSent);
        }
        return Some(FailureKind::Transport);
    }
    if let Some(err) = err.downcast_ref::<io::Error>() {
        return match err.kind() {
            io::ErrorKind::ConnectionRefused => Some(FailureKind::Connect),
            io::ErrorKind::TimedOut => Some(FailureKind::Timeout),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Some(FailureKind::Transport),
            // `io::Error::source` skips the error it wraps: look at it here.
            _ => err.get_ref().and_then(|inner| recognise(inner)),
        };
    }
    None
}

/// What a `reqwest::Error` says: a connect failure (refused, DNS, TLS
/// handshake, a connect timeout) never sent the request; a timeout after
/// that is a timeout; any other failure of the exchange may have reached
/// the server; a builder, redirect, status or decode error is final.
#[cfg(feature = "reqwest")]
fn reqwest_failure(err: &reqwest::Error) -> FailureKind {
    if err.is_connect() {
        // before `is_timeout`: a connect timeout is both, and never sent
        FailureKind::Connect
    } else if err.is_timeout() {
        FailureKind::Timeout
    } else if err.is_request() || err.is_body() {
        FailureKind::Transport
    } else {
        FailureKind::Other
    }
}

/// A classifier that asks a closure first and falls back to the default
/// table when the closure returns `None`. Made by [`from_fn`].
#[derive(Clone)]
pub struct ClassifyFn<F> {
    f: F,
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Override the default table for responses with a closure; `None` keeps the
/// default answer. Errors keep the default table.
pub fn from_fn<F>(f: F) -> ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap) -> Option<Class> + Send + Sync + 'static,
{
    ClassifyFn { f }
}

impl<F> Classify for ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap) -> Option<Class> + Send + Sync + 'static,
{
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Class {
        (self.f)(status, headers).unwrap_or_else(|| classify_status(status))
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Class {
        classify_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BoxError;

    fn status(code: u16) -> Class {
        classify_status(StatusCode::from_u16(code).unwrap())
    }

    #[test]
    fn status_table() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(status(code), Class::Retryable(_)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501, 505, 507, 511] {
            assert!(matches!(status(code), Class::Fatal(_)), "{code}");
        }
        for code in [100, 200, 201, 204, 301, 304] {
            assert_eq!(status(code), Class::Success, "{code}");
        }
    }

    #[test]
    fn errors_are_recognised_through_their_source_chain() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "no");
        assert_eq!(
            classify_error(&refused),
            Class::Retryable(FailureKind::Connect)
        );
        let wrapped: BoxError = RequestNotSent::with_source("pool", refused).into();
        assert_eq!(
            classify_error(wrapped.as_ref()),
            Class::Retryable(FailureKind::NotSent)
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let outer = io::Error::other(reset);
        assert_eq!(
            classify_error(&outer),
            Class::Retryable(FailureKind::Transport)
        );
        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(
            classify_error(elapsed.as_ref()),
            Class::Retryable(FailureKind::Timeout)
        );
        let other = io::Error::new(io::ErrorKind::InvalidData, "bad");
        assert_eq!(classify_error(&other), Class::Fatal(FailureKind::Other));
    }

    #[test]
    fn a_refused_http2_stream_was_not_sent_and_other_resets_may_have_been() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(
            classify_error(&refused),
            Class::Retryable(FailureKind::NotSent)
        );
        // as hyper hands it on: inside another error's source chain
        let wrapped = io::Error::other(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert_eq!(
            classify_error(&wrapped),
            Class::Retryable(FailureKind::NotSent)
        );
        for reason in [
            h2::Reason::INTERNAL_ERROR,
            h2::Reason::CANCEL,
            h2::Reason::NO_ERROR,
        ] {
            assert_eq!(
                classify_error(&h2::Error::from(reason)),
                Class::Retryable(FailureKind::Transport),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn only_connect_and_not_sent_prove_the_request_was_not_sent() {
        assert!(!FailureKind::Connect.request_may_have_been_sent());
        assert!(!FailureKind::NotSent.request_may_have_been_sent());
        assert!(FailureKind::Timeout.request_may_have_been_sent());
        assert!(FailureKind::Transport.request_may_have_been_sent());
        assert!(FailureKind::Status(StatusCode::BAD_GATEWAY).request_may_have_been_sent());
    }

    #[test]
    fn closure_overrides_only_what_it_answers() {
        let c = from_fn(|status, headers: &HeaderMap| {
            (status == StatusCode::CONFLICT && headers.contains_key("x-retry"))
                .then_some(Class::Retryable(FailureKind::Status(status)))
        });
        let mut headers = HeaderMap::new();
        assert!(matches!(
            c.classify_response(StatusCode::CONFLICT, &headers),
            Class::Fatal(_)
        ));
        headers.insert("x-retry", "1".parse().unwrap());
        assert!(matches!(
            c.classify_response(StatusCode::CONFLICT, &headers),
            Class::Retryable(_)
        ));
        assert_eq!(
            c.classify_response(StatusCode::OK, &headers),
            Class::Success
        );
    }
}
