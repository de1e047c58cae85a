//! The side-effect rule: which requests may be sent more than once, and
//! which failures prove that a request was not processed (the table is in
//! the [`retry`](super) module docs).

use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::config::{Config, RetryOverride};
use crate::classify::FailureKind;
use crate::origin::Origin;

/// The `Idempotency-Key` header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether RFC 9110 makes `method` idempotent (safe to send twice).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A fresh idempotency key: a random (version 4) UUID in its usual text form.
///
/// It always comes from the operating system's seeded thread generator, never
/// from the layer's (possibly seeded) jitter generator: two processes seeded
/// alike must not send the same key for different requests.
pub fn new_idempotency_key() -> HeaderValue {
    HeaderValue::from_str(&uuid_v4()).expect("hex digits and dashes are a valid header value")
}

/// A random (version 4) UUID in its usual text form, from the operating
/// system's seeded thread generator.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    text
}

/// Whether a request may be sent more than once, decided when it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Safety {
    pub(crate) repeatable: bool,
    pub(crate) keys_honoured: bool,
}

impl Safety {
    /// The rule for `request`: a caller's declaration wins; otherwise its
    /// method (RFC 9110), or an `Idempotency-Key` to an origin that is
    /// declared to honour keys.
    pub(crate) fn of<B>(
        config: &Config,
        overrides: Option<&RetryOverride>,
        request: &http::Request<B>,
    ) -> Self {
        Self::of_parts(config, overrides, request.method(), request.uri(), || {
            request.headers().contains_key(IDEMPOTENCY_KEY)
        })
    }

    /// [`of`](Self::of), from a request's method, URI and whether it
    /// carries an `Idempotency-Key` (asked only when some origin honours
    /// keys).
    pub(crate) fn of_parts(
        config: &Config,
        overrides: Option<&RetryOverride>,
        method: &Method,
        uri: &Uri,
        has_key: impl FnOnce() -> bool,
    ) -> Self {
        let keys_honoured = !config.key_origins.is_empty()
            && has_key()
            && Origin::of(uri).is_some_and(|o| config.key_origins.contains(&o));
        let repeatable = overrides
            .and_then(RetryOverride::idempotency)
            .unwrap_or_else(|| is_idempotent(method) || keys_honoured);
        Self {
            repeatable,
            keys_honoured,
        }
    }
}

/// Whether a failure proves that the server did not process the request:
/// it was never sent or nothing of it was written (a connect error,
/// [`RequestNotSent`](crate::error::RequestNotSent)), this crate's own
/// layers refused it (breaker open, queue, rate gate), or the server
/// refused it before acting: a `429`, or a `503` that carries
/// `Retry-After`.
pub(crate) fn proves_not_processed(kind: FailureKind, retry_after: bool) -> bool {
    match kind {
        FailureKind::Connect | FailureKind::NotSent => true,
        FailureKind::Status(StatusCode::TOO_MANY_REQUESTS) => true,
        FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE) => retry_after,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn idempotency_keys_are_uuid_v4_and_distinct() {
        let a = new_idempotency_key();
        let b = new_idempotency_key();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(text.matches('-').count(), 4);
    }

    #[test]
    fn only_failures_that_prove_nothing_was_processed_unlock_a_post() {
        for kind in [FailureKind::Connect, FailureKind::NotSent] {
            assert!(proves_not_processed(kind, false), "{kind:?}");
        }
        let status = |code: u16| FailureKind::Status(StatusCode::from_u16(code).unwrap());
        assert!(proves_not_processed(status(429), false));
        assert!(proves_not_processed(status(503), true));
        assert!(!proves_not_processed(status(503), false));
        for code in [408, 500, 502, 504] {
            assert!(!proves_not_processed(status(code), true), "{code}");
        }
        for kind in [
            FailureKind::Timeout,
            FailureKind::Transport,
            FailureKind::Other,
        ] {
            assert!(!proves_not_processed(kind, false), "{kind:?}");
        }
    }
}
