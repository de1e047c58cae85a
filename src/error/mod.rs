//! Typed errors created by this crate.
//!
//! Every error a layer of this crate creates is a concrete type that can be
//! recovered from a [`BoxError`] with [`downcast_ref`](std::error::Error):
//!
//! ```
//! use tower_cx::error::{BoxError, RequestNotSent};
//!
//! let err: BoxError = RequestNotSent::new("connection pool closed").into();
//! assert!(err.downcast_ref::<RequestNotSent>().is_some());
//! assert_eq!(err.to_string(), "request was not sent: connection pool closed");
//! ```

use std::error::Error as StdError;
use std::fmt;

mod quota;
mod token;

pub use quota::QuotaExhausted;
pub use token::TokenError;
pub(crate) use token::{cut, url_without_secrets};

/// The error type every layer of this crate returns: a boxed, sendable error.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The first error of type `T` in `error` or its `source()` chain.
///
/// ```
/// use tower_cx::error::{find, BoxError, OutcomeUnknown, RequestNotSent};
///
/// let err: BoxError = RequestNotSent::with_source("pool closed", std::fmt::Error).into();
/// assert!(find::<RequestNotSent>(err.as_ref()).is_some());
/// assert!(find::<std::fmt::Error>(err.as_ref()).is_some());
/// assert!(find::<OutcomeUnknown>(err.as_ref()).is_none());
/// ```
pub fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// `error` and its `source()` chain as one line, each cause after `": "`:
/// for logs, where an outer error's text alone (`client error (Connect)`)
/// says nothing of its cause.
///
/// ```
/// use tower_cx::error::{chain, BoxError, RequestNotSent, TokenError};
///
/// let err: BoxError = RequestNotSent::with_source("pool closed", std::fmt::Error).into();
/// let line = chain(err.as_ref()).to_string();
/// assert!(line.starts_with(&err.to_string()));
/// assert!(line.ends_with(": an error occurred when formatting an argument"), "{line}");
///
/// // a cause an error already shows in its own text is not repeated
/// let err: BoxError = TokenError::Unavailable {
///     cause: Box::new(TokenError::AlreadyExpired),
/// }
/// .into();
/// assert_eq!(chain(err.as_ref()).to_string(), err.to_string());
/// ```
pub fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl fmt::Display + 'a {
    Chain(error)
}

/// See [`chain`].
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // many errors show their cause in their own text too: a cause whose
        // text already ends the line is not written again
        let mut line = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&line)
    }
}

/// The request was never handed to the network, so retrying it is always
/// safe, whatever its method.
///
/// A service below the retry layer can return this error (or wrap one in its
/// source chain) to tell the retry layer that even a `POST` may be retried.
#[derive(Debug)]
pub struct RequestNotSent {
    reason: String,
    source: Option<BoxError>,
}

impl RequestNotSent {
    /// A `RequestNotSent` with a human-readable reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            source: None,
        }
    }

    /// A `RequestNotSent` caused by `source`.
    pub fn with_source(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// Why the request was not sent.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RequestNotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request was not sent: {}", self.reason)
    }
}

impl StdError for RequestNotSent {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A layer was configured with a value it cannot work with.
///
/// Returned by fallible constructors such as
/// [`RetryBudget::new`](crate::retry::RetryBudget::new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    /// A configuration error for `setting`, saying why the value was refused.
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }

    /// The name of the setting that was refused.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.setting, self.reason)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_not_sent_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = RequestNotSent::with_source("connect failed", io);
        assert_eq!(err.reason(), "connect failed");
        let source = err.source().expect("source kept");
        assert_eq!(source.to_string(), "refused");
    }

    #[test]
    fn an_unknown_outcome_shows_header_names_never_values() {
        let response = http::Response::builder()
            .status(500)
            .header("set-cookie", "session=s3cr3t")
            .body(())
            .unwrap();
        let unknown = OutcomeUnknown::new(
            2,
            UnknownCause::Status(http::StatusCode::INTERNAL_SERVER_ERROR),
        )
        .with_response(response);
        let shown = format!("{unknown:?} {unknown}");
        assert!(shown.contains("set-cookie"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(unknown.headers()["set-cookie"], "session=s3cr3t");
    }

    #[test]
    fn config_error_names_the_setting() {
        let err = ConfigError::new("ttl", "must be between 1 s and 60 s, got 0 s");
        assert_eq!(err.setting(), "ttl");
        assert_eq!(
            err.to_string(),
            "invalid `ttl`: must be between 1 s and 60 s, got 0 s"
        );
    }
}

/// A credential or token would have been sent in clear text (plain
/// `http://`, `ws://` or any scheme but `https` and `wss`) to a host that
/// is not a loopback address. Clear text is allowed only to loopback
/// (tests, local mocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureUrl {
    /// The scheme, lower-case.
    scheme: String,
    host: String,
}

impl InsecureUrl {
    /// Check that `uri` may carry credentials: `https` or `wss`, or any
    /// other scheme (`http`, `ws`, ...) to a loopback host (`127.0.0.0/8`,
    /// `::1`, `localhost`). A URI without a scheme (a path for a later
    /// layer to complete) is not judged here.
    pub fn check(uri: &http::Uri) -> Result<(), InsecureUrl> {
        match uri.scheme_str() {
            None => Ok(()),
            Some(scheme)
                if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") =>
            {
                Ok(())
            }
            Some(scheme) => {
                let authority = uri.authority().map_or("", |a| a.as_str());
                if is_usual_loopback_authority(authority) {
                    return Ok(());
                }
                let host = uri.host().unwrap_or("");
                if is_loopback(host) {
                    Ok(())
                } else {
                    Err(InsecureUrl {
                        scheme: scheme.to_ascii_lowercase(),
                        host: host.to_owned(),
                    })
                }
            }
        }
    }

    /// The host that was refused.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `127.0.0.1`, `localhost` or `[::1]`, with or without a port and without
/// user info: the loopback authorities seen on every request of a local
/// test or mock, decided without splitting the authority.
fn is_usual_loopback_authority(authority: &str) -> bool {
    if authority.as_bytes().contains(&b'@') {
        // `127.0.0.1@example.com` is a user name at another host
        return false;
    }
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|host| {
        authority
            .strip_prefix(host)
            .is_some_and(|port| port.is_empty() || port.starts_with(':'))
    })
}

fn is_loopback(host: &str) -> bool {
    // the usual spellings without parsing (this runs on every request)
    if matches!(host, "127.0.0.1" | "[::1]") || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

impl fmt::Display for InsecureUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to send credentials over plain {}:// to {:?}: use https (clear text is allowed only to loopback)",
            self.scheme, self.host
        )
    }
}

impl StdError for InsecureUrl {}

#[cfg(test)]
mod insecure_tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = [
            "https://login.mypurecloud.com/oauth/token",
            "http://127.0.0.1:8080/token",
            "http://127.9.9.9/token",
            "http://localhost/token",
            "http://[::1]:9000/token",
            "http://[::1]/token",
            "http://LOCALHOST:8080/token",
            "http://user@127.0.0.1:8080/token",
            "/relative/path",
        ];
        for uri in ok {
            assert!(InsecureUrl::check(&uri.parse().unwrap()).is_ok(), "{uri}");
        }
        for uri in [
            "http://login.mypurecloud.com/oauth/token",
            "http://10.0.0.1/token",
            "HTTP://example.com/",
            "http://127.0.0.1.example.com/",
            "http://[::2]/token",
            "http://localhost.example.com/",
            "http://127.0.0.1@example.com/",
            "http://localhost:80@example.com/",
            "http://127.0.0.10.example.com/",
        ] {
            let err = InsecureUrl::check(&uri.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("plain http://"), "{err}");
        }
        // other schemes: only the encrypted ones go anywhere
        for uri in [
            "wss://api.example.com/x",
            "WSS://api.example.com/",
            "ws://127.0.0.1/x",
        ] {
            assert!(InsecureUrl::check(&uri.parse().unwrap()).is_ok(), "{uri}");
        }
        for (uri, plain) in [
            ("ws://api.example.com/x", "plain ws://"),
            ("ftp://example.com/token", "plain ftp://"),
        ] {
            let err = InsecureUrl::check(&uri.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains(plain), "{err}");
            assert_eq!(err.host(), uri.split('/').nth(2).unwrap());
        }
    }
}

/// A response body was longer than the limit the crate reads (token
/// responses, vendor JSON, error bodies): reading stopped at the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: usize,
    status: http::StatusCode,
}

impl BodyTooLarge {
    /// `limit` bytes were read from the body of a response with `status`,
    /// and there was more.
    pub(crate) fn new(limit: usize, status: http::StatusCode) -> Self {
        Self { limit, status }
    }

    /// The limit that was exceeded, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The status of the response whose body was too large.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body ({}) larger than the {} byte limit",
            self.status, self.limit
        )
    }
}

impl StdError for BodyTooLarge {}

/// The circuit breaker is open (or half-open with its probes busy, or
/// isolated by hand): the request was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_in: Option<std::time::Duration>,
}

impl CircuitOpen {
    /// Open for `retry_in` more (`None`: isolated by hand, no probe planned).
    pub fn new(retry_in: Option<std::time::Duration>) -> Self {
        Self { retry_in }
    }

    /// How long until the breaker lets a probe through; `None` when it was
    /// isolated by hand.
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        self.retry_in
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_in {
            Some(wait) => write!(f, "circuit open: next probe in {wait:?}"),
            None => f.write_str("circuit isolated: no request is let through until reset"),
        }
    }
}

impl StdError for CircuitOpen {}

/// Why the priority limiter shed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverloadReason {
    /// The queue was full and nothing of lower priority could make room.
    QueueFull,
    /// A higher-priority arrival took this request's place in a full queue.
    Evicted,
    /// The request waited in the queue longer than allowed.
    QueueTimeout,
    /// A keyed limiter holds its maximum of keys and none is idle.
    TooManyKeys,
    /// The quota the server advertises fell below the reserve kept for
    /// higher priorities
    /// ([`quota_reserve`](crate::priority::PriorityLimitLayer::quota_reserve)).
    QuotaReserve,
    /// The rate gate a server hint closed stays closed past the request's
    /// deadline (a retry layer's, above): waiting would only end in it.
    /// [`Overloaded::retry_in`] says when the gate opens.
    GateClosed,
}

impl OverloadReason {
    /// A short stable name: `queue_full`, `evicted`, `queue_timeout`,
    /// `too_many_keys`, `quota_reserve`, `gate_closed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OverloadReason::QueueFull => "queue_full",
            OverloadReason::Evicted => "evicted",
            OverloadReason::QueueTimeout => "queue_timeout",
            OverloadReason::TooManyKeys => "too_many_keys",
            OverloadReason::QuotaReserve => "quota_reserve",
            OverloadReason::GateClosed => "gate_closed",
        }
    }
}

/// The priority limiter shed the request: it was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    reason: OverloadReason,
    retry_in: Option<std::time::Duration>,
}

impl Overloaded {
    /// An overload error for `reason`.
    pub fn new(reason: OverloadReason) -> Self {
        Self {
            reason,
            retry_in: None,
        }
    }

    /// Shed because the rate gate opens only in `retry_in`, past the
    /// request's deadline ([`OverloadReason::GateClosed`]).
    pub fn gate_closed(retry_in: std::time::Duration) -> Self {
        Self {
            reason: OverloadReason::GateClosed,
            retry_in: Some(retry_in),
        }
    }

    /// Why the request was shed.
    pub fn reason(&self) -> OverloadReason {
        self.reason
    }

    /// When sending may work again, if the limiter knows
    /// ([`OverloadReason::GateClosed`]): a retry layer gives up at once
    /// when that is past its deadline.
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        self.retry_in
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            OverloadReason::QueueFull => "the queue is full",
            OverloadReason::Evicted => "evicted from the queue by a higher-priority request",
            OverloadReason::QueueTimeout => "waited in the queue longer than allowed",
            OverloadReason::TooManyKeys => "every key of the keyed limiter is busy",
            OverloadReason::QuotaReserve => {
                "the remaining quota is kept for higher-priority requests"
            }
            OverloadReason::GateClosed => "the rate gate stays closed past the request's deadline",
        };
        write!(f, "overloaded, request not sent: {why}")
    }
}

impl StdError for Overloaded {}

/// The retry layer's total deadline passed while the next attempt waited for
/// the inner service to become ready; the attempt was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDeadlineExceeded {
    attempts: u32,
}

impl RetryDeadlineExceeded {
    /// After `attempts` attempts were sent.
    pub fn new(attempts: u32) -> Self {
        Self { attempts }
    }

    /// How many attempts were sent before the deadline.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for RetryDeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry deadline passed after {} attempt(s) while waiting to send the next",
            self.attempts
        )
    }
}

impl StdError for RetryDeadlineExceeded {}

/// What made the outcome of an attempt unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnknownCause {
    /// The server answered this status (`500`, `502`, `504`, or another
    /// retryable status that does not prove the request was left alone).
    Status(http::StatusCode),
    /// The attempt timed out after the request was handed to the network.
    Timeout,
    /// The connection was closed or reset after the request was written.
    ConnectionLost,
    /// Another error that a classifier took as retryable, after the request
    /// may have been sent.
    Other,
}

impl UnknownCause {
    /// A short stable name: `status`, `timeout`, `connection_lost` or
    /// `other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnknownCause::Status(_) => "status",
            UnknownCause::Timeout => "timeout",
            UnknownCause::ConnectionLost => "connection_lost",
            UnknownCause::Other => "other",
        }
    }
}

impl fmt::Display for UnknownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownCause::Status(status) => write!(f, "the server answered {}", status.as_u16()),
            UnknownCause::Timeout => {
                f.write_str("the attempt timed out after the request was sent")
            }
            UnknownCause::ConnectionLost => {
                f.write_str("the connection was lost after the request was written")
            }
            UnknownCause::Other => {
                f.write_str("the attempt failed after the request may have been sent")
            }
        }
    }
}

/// A request that is not safe to repeat (a `POST` or `PATCH` without proof
/// that its origin honours idempotency keys) failed in a way that does not
/// prove the server left it alone: it may or may not have been applied.
///
/// The retry layer returns this instead of retrying blindly, and instead of
/// the `500` / `502` / `504` response it got (whose status and headers it
/// keeps), so that a caller can tell "failed" from "may have happened" and
/// check before sending it again.
///
/// ```
/// use http::StatusCode;
/// use tower_cx::error::{BoxError, OutcomeUnknown, UnknownCause};
///
/// let err: BoxError =
///     OutcomeUnknown::new(1, UnknownCause::Status(StatusCode::INTERNAL_SERVER_ERROR)).into();
/// let unknown = err.downcast_ref::<OutcomeUnknown>().expect("typed");
/// assert_eq!(unknown.attempt(), 1);
/// assert_eq!(unknown.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
/// assert_eq!(
///     err.to_string(),
///     "outcome unknown after attempt 1: the server answered 500; \
///      the request may have been applied, check before sending it again"
/// );
/// ```
pub struct OutcomeUnknown {
    attempt: u32,
    cause: UnknownCause,
    headers: http::HeaderMap,
    /// The response that made the outcome unknown, body unread, until a
    /// caller takes it ([`take_response`](Self::take_response)).
    response: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
    source: Option<BoxError>,
}

impl fmt::Debug for OutcomeUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // header names only: a value (a `Set-Cookie`, say) may be a secret
        let headers: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("OutcomeUnknown")
            .field("attempt", &self.attempt)
            .field("cause", &self.cause)
            .field("headers", &headers)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl OutcomeUnknown {
    /// The outcome of attempt number `attempt` (1 is the first) is unknown
    /// because of `cause`.
    pub fn new(attempt: u32, cause: UnknownCause) -> Self {
        Self {
            attempt,
            cause,
            headers: http::HeaderMap::new(),
            response: std::sync::Mutex::new(None),
            source: None,
        }
    }

    /// Keep the headers of the response that made the outcome unknown.
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// Keep the response that made the outcome unknown, body unread, for a
    /// caller to [`take`](Self::take_response) (its headers are also kept
    /// apart, for [`headers`](Self::headers)).
    pub fn with_response<B: Send + 'static>(mut self, response: http::Response<B>) -> Self {
        self.headers = response.headers().clone();
        self.response = std::sync::Mutex::new(Some(Box::new(response)));
        self
    }

    /// Take the response that made the outcome unknown, with its body
    /// unread, if there was one and its body type is `B`. Only the first
    /// call gets it.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use tower_cx::error::{OutcomeUnknown, UnknownCause};
    ///
    /// let response = Response::builder().status(500).body("partial".to_owned()).unwrap();
    /// let unknown = OutcomeUnknown::new(1, UnknownCause::Status(StatusCode::INTERNAL_SERVER_ERROR))
    ///     .with_response(response);
    /// assert!(unknown.take_response::<()>().is_none(), "another body type");
    /// let response = unknown.take_response::<String>().expect("kept");
    /// assert_eq!(response.body(), "partial");
    /// assert!(unknown.take_response::<String>().is_none(), "taken once");
    /// ```
    pub fn take_response<B: 'static>(&self) -> Option<http::Response<B>> {
        let mut slot = self.response.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take()?.downcast::<http::Response<B>>() {
            Ok(response) => Some(*response),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    /// Keep the error that made the outcome unknown (its `source()`).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Which attempt's outcome is unknown (1 is the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What happened.
    pub fn cause(&self) -> UnknownCause {
        self.cause
    }

    /// The status the server answered, when it answered.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self.cause {
            UnknownCause::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The headers of the response that made the outcome unknown (empty
    /// when there was no response).
    pub fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    /// Find an `OutcomeUnknown` in `error` or its `source()` chain.
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a OutcomeUnknown> {
        find::<OutcomeUnknown>(error)
    }
}

impl fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outcome unknown after attempt {}: {}; the request may have been applied, check before sending it again",
            self.attempt, self.cause
        )
    }
}

impl StdError for OutcomeUnknown {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
