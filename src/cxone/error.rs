//! NICE CXone errors.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::vendor::{BusinessFailure, RetryRules, VendorError};

/// The header CXone puts its status text in.
pub(crate) const IC_STATUS_DESCRIPTION: &str = "icStatusDescription";

/// An error reported by NICE CXone: a non-2xx answer whose text comes from
/// the JSON body (`error_description`, `message`, `error`), the
/// `icStatusDescription` header, or the raw body; or a business error found
/// in a 200 by a [`BusinessRule`](crate::vendor::BusinessRule).
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_cx::cxone::CxoneError;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("icStatusDescription", "Invalid skill id".parse().unwrap());
/// let err = CxoneError::from_response(StatusCode::BAD_REQUEST, &headers, b"");
/// assert_eq!(err.ic_status_description(), Some("Invalid skill id"));
/// assert_eq!(err.message(), "Invalid skill id");
/// assert_eq!(err.to_string(), "NICE CXone error 400: Invalid skill id");
/// ```
#[derive(Debug, Clone)]
pub struct CxoneError {
    status: StatusCode,
    message: String,
    code: Option<String>,
    ic_status_description: Option<String>,
    retry_after: Option<Duration>,
    business: Option<Arc<Value>>,
}

impl CxoneError {
    /// Build the error from a response's status, headers and body.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let ic = headers
            .get(IC_STATUS_DESCRIPTION)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(512)
                    .collect::<String>()
            })
            .filter(|v| !v.trim().is_empty());
        let json = serde_json::from_slice::<Value>(body).ok();
        let text = |keys: &[&str]| {
            json.as_ref().and_then(|v| {
                keys.iter()
                    .find_map(|k| v.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
            })
        };
        let code = text(&["error", "errorCode", "code"]);
        let message = text(&["error_description", "message", "Message", "errorMessage"])
            .or_else(|| ic.clone())
            .or_else(|| code.clone())
            .unwrap_or_else(|| {
                if json.is_none() {
                    crate::vendor::snippet(body)
                } else {
                    String::new()
                }
            });
        Self {
            status,
            message,
            code,
            ic_status_description: ic,
            retry_after: headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| crate::hint::parse_retry_after(v, SystemTime::now()).ok()),
            business: None,
        }
    }

    /// A business error: a 200 whose output a rule rejected.
    pub fn business(failure: BusinessFailure, output: Value) -> Self {
        Self {
            status: StatusCode::OK,
            message: failure.message,
            code: Some(failure.code),
            ic_status_description: None,
            retry_after: None,
            business: Some(Arc::new(output)),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error code from the body (`error`, `errorCode` or `code`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The `icStatusDescription` header.
    pub fn ic_status_description(&self) -> Option<&str> {
        self.ic_status_description.as_deref()
    }

    /// The codes [`RetryRules`](crate::vendor::RetryRules) match: the code,
    /// then the `icStatusDescription`.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.code
            .as_deref()
            .into_iter()
            .chain(self.ic_status_description.as_deref())
    }

    /// The server's `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether this is a business error found in a 200.
    pub fn is_business(&self) -> bool {
        self.business.is_some()
    }

    /// The rejected output of a business error.
    pub fn output(&self) -> Option<&Value> {
        self.business.as_deref()
    }
}

impl fmt::Display for CxoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_business() {
            write!(f, "NICE CXone business error")?;
        } else {
            write!(f, "NICE CXone error {}", self.status.as_u16())?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl StdError for CxoneError {}

impl VendorError for CxoneError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn codes(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(CxoneError::codes(self))
    }

    fn is_business(&self) -> bool {
        CxoneError::is_business(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The code, else the `icStatusDescription`, else `cxone_error`.
    fn dead_letter_code(&self) -> &str {
        CxoneError::codes(self).next().unwrap_or("cxone_error")
    }
}

impl RetryRules {
    /// NICE CXone defaults: no code rules (CXone errors carry free text),
    /// so only what [`statuses`](Self::statuses) and [`code`](Self::code)
    /// add is retried.
    pub fn cxone() -> Self {
        Self::new().error_type::<CxoneError>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_wins_over_the_header_and_both_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("icstatusdescription", "Throttled".parse().unwrap());
        let err = CxoneError::from_response(
            StatusCode::BAD_REQUEST,
            &headers,
            br#"{"error":"invalid_request","error_description":"bad date range"}"#,
        );
        assert_eq!(err.message(), "bad date range");
        assert_eq!(
            err.codes().collect::<Vec<_>>(),
            ["invalid_request", "Throttled"]
        );
        let err = CxoneError::from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>");
        assert_eq!(err.message(), "<html>");
    }
}
