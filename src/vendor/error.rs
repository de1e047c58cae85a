//! The errors the clients share, and [`VendorError`]: what every vendor's
//! typed error tells the shared code.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// What the shared client code needs to know about a vendor's typed error
/// ([`GenesysError`](crate::genesys::GenesysError),
/// [`CxoneError`](crate::cxone::CxoneError)), so that retry rules and dead
/// letters work the same for every vendor without knowing any of them.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_cx::genesys::GenesysError;
/// use tower_cx::vendor::VendorError;
///
/// let body = br#"{"code":"bad.request","status":400,"details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],
///     "errors":[{"status":503}]}"#;
/// let genesys = GenesysError::from_body(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
/// let error: &dyn VendorError = &genesys;
/// assert_eq!(error.status(), StatusCode::BAD_REQUEST);
/// assert!(error.codes().any(|code| code == "ACTION.REMOTE_ENDPOINT"));
/// assert!(error.remote_failed());
/// assert!(!error.is_business());
/// assert_eq!(error.dead_letter_code(), "ACTION.REMOTE_ENDPOINT");
/// ```
pub trait VendorError: StdError + Send + Sync + 'static {
    /// The HTTP status the vendor answered (200 for a business error).
    fn status(&self) -> StatusCode;

    /// Every code the error carries, the ones [`RetryRules`](super::RetryRules)
    /// match.
    fn codes(&self) -> Box<dyn Iterator<Item = &str> + '_>;

    /// Whether the failure was a remote side's (a data action's backend
    /// answered 5xx, 408 or 429). Default: `false`.
    fn remote_failed(&self) -> bool {
        false
    }

    /// Whether this is a business error found in a 200.
    fn is_business(&self) -> bool;

    /// The server's `Retry-After`, if it sent one.
    fn retry_after(&self) -> Option<Duration>;

    /// The one code a dead letter records for this error: its most specific
    /// code, or a fallback naming the vendor (`genesys_error`).
    fn dead_letter_code(&self) -> &str;
}

/// A successful response whose body is not what the API documents (not
/// JSON, or missing a field).
#[derive(Debug)]
pub struct UnexpectedBody {
    what: &'static str,
    status: StatusCode,
    source: Option<serde_json::Error>,
    snippet: String,
}

impl UnexpectedBody {
    pub(crate) fn new(
        what: &'static str,
        status: StatusCode,
        body: &[u8],
        source: Option<serde_json::Error>,
    ) -> Self {
        Self {
            what,
            status,
            source,
            snippet: snippet(body),
        }
    }

    /// What the client expected (e.g. `"an analytics job id"`).
    pub fn expected(&self) -> &'static str {
        self.what
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The start of the body (at most 200 characters).
    pub fn snippet(&self) -> &str {
        &self.snippet
    }
}

impl fmt::Display for UnexpectedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected response body ({}): expected {}, got {:?}",
            self.status, self.what, self.snippet
        )
    }
}

impl StdError for UnexpectedBody {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The first 200 characters of a body, lossily decoded.
pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(800)])
        .chars()
        .take(200)
        .collect()
}
