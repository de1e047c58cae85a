//! Genesys Cloud errors.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::vendor::{BusinessFailure, RetryRules, Rule, VendorError};

/// An error reported by Genesys Cloud: a non-2xx answer with the platform's
/// error body (`message`, `code`, `status`, `contextId`,
/// `details[].errorCode`, nested `errors`), or a business error found in a
/// 200's output by a [`BusinessRule`](crate::vendor::BusinessRule).
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_cx::genesys::GenesysError;
///
/// let body = br#"{"message":"There was an issue validating the credentials.",
///   "code":"bad.request","status":400,"contextId":"ctx-1",
///   "details":[{"errorCode":"ACTION.AUTHENTICATION"}],
///   "errors":[{"errorCode":"INVALID_CREDENTIALS","status":401,"userMessage":"denied"}]}"#;
/// let err = GenesysError::from_body(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
/// assert_eq!(err.code(), Some("bad.request"));
/// assert_eq!(err.context_id(), Some("ctx-1"));
/// assert_eq!(err.detail_codes().collect::<Vec<_>>(), ["ACTION.AUTHENTICATION"]);
/// assert_eq!(err.errors()[0].status(), StatusCode::UNAUTHORIZED);
/// assert!(err.codes().any(|c| c == "INVALID_CREDENTIALS"));
/// assert!(err.to_string().contains("ACTION.AUTHENTICATION"));
/// ```
#[derive(Debug, Clone)]
pub struct GenesysError {
    status: StatusCode,
    message: String,
    code: Option<String>,
    context_id: Option<String>,
    correlation_id: Option<String>,
    details: Vec<String>,
    errors: Vec<GenesysError>,
    retry_after: Option<Duration>,
    business: Option<Arc<Value>>,
}

impl GenesysError {
    /// Build the error from an error response's status, headers and body.
    /// A body that is not the platform's JSON keeps its first 200 characters
    /// as the message.
    pub fn from_body(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut error = match serde_json::from_slice::<Value>(body) {
            Ok(value) if value.is_object() => Self::from_value(status, &value),
            _ => Self::bare(status, crate::vendor::snippet(body)),
        };
        error.correlation_id = header(headers, "inin-correlation-id");
        error.retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| crate::hint::parse_retry_after(v, SystemTime::now()).ok());
        error
    }

    fn bare(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            code: None,
            context_id: None,
            correlation_id: None,
            details: Vec::new(),
            errors: Vec::new(),
            retry_after: None,
            business: None,
        }
    }

    fn from_value(status: StatusCode, value: &Value) -> Self {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| value.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let status = value
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(status);
        let details = value
            .get("details")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(|d| d.get("errorCode").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let errors = value
            .get("errors")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .filter(|e| e.is_object())
                    .take(16)
                    .map(|e| Self::from_value(status, e))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status,
            message: text(&["message", "userMessage"]).unwrap_or_default(),
            code: text(&["code", "errorCode"]),
            context_id: text(&["contextId", "correlationId"]),
            correlation_id: None,
            details,
            errors,
            retry_after: None,
            business: None,
        }
    }

    /// A business error: a 200 whose output a [`BusinessRule`](crate::vendor::BusinessRule) rejected.
    pub fn business(failure: BusinessFailure, output: Value) -> Self {
        let mut error = Self::bare(StatusCode::OK, failure.message);
        error.code = Some(failure.code);
        error.business = Some(Arc::new(output));
        error
    }

    /// The HTTP status (from the body's `status` when present).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error code (`bad.request`, `too.many.requests.retry.after`, ...).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The `contextId` to quote to Genesys support.
    pub fn context_id(&self) -> Option<&str> {
        self.context_id.as_deref()
    }

    /// The `ININ-Correlation-Id` response header.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The `details[].errorCode` values (`ACTION.REMOTE_ENDPOINT`, ...).
    pub fn detail_codes(&self) -> impl Iterator<Item = &str> {
        self.details.iter().map(String::as_str)
    }

    /// The nested `errors` (a data action's remote endpoint failure).
    pub fn errors(&self) -> &[GenesysError] {
        &self.errors
    }

    /// Every code: `code`, the detail codes, then the nested errors' codes.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        let mut all = Vec::new();
        self.collect_codes(&mut all);
        all.into_iter()
    }

    fn collect_codes<'a>(&'a self, all: &mut Vec<&'a str>) {
        all.extend(self.code.as_deref());
        all.extend(self.detail_codes());
        for nested in &self.errors {
            nested.collect_codes(all);
        }
    }

    /// Whether this is a data action's remote endpoint failure
    /// (`details[].errorCode` `ACTION.REMOTE_ENDPOINT`).
    pub fn is_remote_endpoint(&self) -> bool {
        self.detail_codes()
            .any(|c| c.eq_ignore_ascii_case("ACTION.REMOTE_ENDPOINT"))
    }

    /// Whether this nested error is Genesys' generic wrapper (code
    /// `INTERNAL_SERVER_ERROR`), whose status is Genesys', not the remote's.
    fn is_internal_wrapper(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("INTERNAL_SERVER_ERROR"))
    }

    /// The status the remote endpoint answered, in either shape Genesys
    /// Cloud publishes:
    ///
    /// - an outer 400 with a nested error: the nested error's status;
    /// - an outer 500 `internal.server.error` with a nested
    ///   `INTERNAL_SERVER_ERROR` (status 500, Genesys' own): the status
    ///   named in the nested message text (`status code 503`, `status:
    ///   404`), or `None` when the text names none.
    ///
    /// Without nested errors, a status named in this error's message text.
    pub fn remote_status(&self) -> Option<StatusCode> {
        match self.errors.first() {
            Some(nested) if !nested.is_internal_wrapper() => Some(nested.status),
            _ => self
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .chain([self.message.as_str()])
                .find_map(status_in_text),
        }
    }

    /// Whether the failure was the remote side's: the remote endpoint
    /// answered 5xx, 408 or 429. For a data action failure
    /// ([`is_remote_endpoint`](Self::is_remote_endpoint)) whose remote
    /// status is unknown this is `false`: an outer 500 says nothing about
    /// the remote. Any other error without a remote status falls back to its
    /// own status.
    pub fn remote_failed(&self) -> bool {
        let status = match self.remote_status() {
            Some(status) => status,
            None if self.is_remote_endpoint() => return false,
            None => self.status,
        };
        status.is_server_error() || matches!(status.as_u16(), 408 | 429)
    }

    /// The server's `Retry-After`, if it sent one.
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

/// A status code named in free text: `status 503`, `status code: 404`,
/// `"status":502`, `statusCode=429` (three digits, 100 to 599).
fn status_in_text(text: &str) -> Option<StatusCode> {
    let lower = text.to_ascii_lowercase();
    lower.match_indices("status").find_map(|(at, word)| {
        let rest = lower[at + word.len()..].trim_start_matches([' ', '_']);
        let rest = rest.strip_prefix("code").unwrap_or(rest);
        let rest = rest.trim_start_matches([' ', ':', '=', '"', '\'']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let code: u16 = (digits.len() == 3).then(|| digits.parse().ok())??;
        (100..600)
            .contains(&code)
            .then(|| StatusCode::from_u16(code).ok())?
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

impl fmt::Display for GenesysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_business() {
            write!(f, "Genesys Cloud business error")?;
        } else {
            write!(f, "Genesys Cloud error {}", self.status.as_u16())?;
        }
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if !self.details.is_empty() {
            write!(f, " [{}]", self.details.join(", "))?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(remote) = self.remote_status() {
            write!(f, " (remote {})", remote.as_u16())?;
        }
        if let Some(context) = &self.context_id {
            write!(f, " (contextId {context})")?;
        }
        Ok(())
    }
}

impl StdError for GenesysError {}

impl VendorError for GenesysError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn codes(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(GenesysError::codes(self))
    }

    fn remote_failed(&self) -> bool {
        GenesysError::remote_failed(self)
    }

    fn is_business(&self) -> bool {
        GenesysError::is_business(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The first detail code (`ACTION.REMOTE_ENDPOINT`), else the code,
    /// else `genesys_error`.
    fn dead_letter_code(&self) -> &str {
        self.detail_codes()
            .next()
            .or(self.code())
            .unwrap_or("genesys_error")
    }
}

impl RetryRules {
    /// Genesys Cloud defaults. Retry: `ACTION.REMOTE_ENDPOINT` when the
    /// remote endpoint failed with 5xx/408/429, `too.many.requests` (the data
    /// action engine's concurrency limit), `request.timeout`,
    /// `gateway.timeout`, `service.unavailable`. Final:
    /// `ACTION.AUTHENTICATION`, `ACTION.CERTIFICATE`, `ACTION.PROCESSING`.
    /// Anything else (validation errors, `not.found`, ...) is final unless
    /// [`statuses`](Self::statuses) retries its status.
    pub fn genesys() -> Self {
        Self::new()
            .error_type::<GenesysError>()
            .code("ACTION.REMOTE_ENDPOINT", Rule::RetryOnRemoteFailure)
            .code("too.many.requests", Rule::Retry)
            .code("too.many.requests.retry.after", Rule::Retry)
            .code("request.timeout", Rule::Retry)
            .code("gateway.timeout", Rule::Retry)
            .code("service.unavailable", Rule::Retry)
            .code("ACTION.AUTHENTICATION", Rule::Final)
            .code("ACTION.CERTIFICATE", Rule::Final)
            .code("ACTION.PROCESSING", Rule::Final)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Class, Classify, FailureKind};

    fn genesys(status: u16, body: &str) -> GenesysError {
        GenesysError::from_body(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn a_non_json_body_keeps_its_start_as_the_message() {
        let mut headers = HeaderMap::new();
        headers.insert("inin-correlation-id", "corr-9".parse().unwrap());
        headers.insert("retry-after", "7".parse().unwrap());
        let err = GenesysError::from_body(StatusCode::BAD_GATEWAY, &headers, b"<html>bad gateway");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.message(), "<html>bad gateway");
        assert_eq!(err.correlation_id(), Some("corr-9"));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.remote_failed());
    }

    #[test]
    fn status_codes_are_found_in_message_text() {
        for (text, status) in [
            (
                "Response from web service: status code 503 [ctx]",
                Some(503),
            ),
            ("status: 404", Some(404)),
            (r#"{"statusCode":429}"#, Some(429)),
            ("errorMessage:status:400,success:false", Some(400)),
            (r#"{"status":"success"}"#, None),
            ("status 5000", None),
            ("status 099", None),
            ("no status here", None),
        ] {
            assert_eq!(status_in_text(text).map(|s| s.as_u16()), status, "{text}");
        }
    }

    fn data_action(outer: u16, body: serde_json::Value) -> GenesysError {
        GenesysError::from_body(
            StatusCode::from_u16(outer).unwrap(),
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn the_outer_400_shape_takes_the_nested_status() {
        for (remote, failed) in [(503, true), (429, true), (404, false), (401, false)] {
            let err = data_action(
                400,
                serde_json::json!({
                    "message": "REST call for action execute failed.", "code": "bad.request",
                    "status": 400, "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                    "errors": [{"message": "Request to backend service failed.",
                        "code": "REMOTE_ERROR", "status": remote}]
                }),
            );
            assert!(err.is_remote_endpoint());
            assert_eq!(err.remote_status().map(|s| s.as_u16()), Some(remote));
            assert_eq!(err.remote_failed(), failed, "remote {remote}");
        }
    }

    #[test]
    fn the_outer_500_shape_reads_the_remote_status_from_the_text_only() {
        let shape = |text: &str| {
            data_action(
                500,
                serde_json::json!({
                    "message": "Internal Server Error", "code": "internal.server.error",
                    "status": 500, "messageParams": {}, "contextId": "c",
                    "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                    "errors": [{"message": text, "code": "INTERNAL_SERVER_ERROR",
                        "status": 500, "details": [], "errors": []}]
                }),
            )
        };
        let err = shape(
            "REST call for action execute failed. Response from web service: status code 404",
        );
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.remote_status(), Some(StatusCode::NOT_FOUND));
        assert!(!err.remote_failed(), "a remote 404 inside an outer 500");
        let err = shape("Request to backend service failed. status code 503");
        assert_eq!(err.remote_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert!(err.remote_failed());
        // the nested 500 is Genesys' wrapper, not the remote's answer
        let err = shape("Invoked function failed. Function execution failed");
        assert_eq!(err.remote_status(), None);
        assert!(!err.remote_failed(), "unknown is not a remote failure");
        assert!(!err.to_string().contains("remote 500"));
    }

    #[test]
    fn the_rate_limit_body_parses() {
        let body = br#"{"message":"Rate limit exceeded the maximum. Retry the request in [5] seconds","code":"too.many.requests.retry.after","status":429,"contextId":"c"}"#;
        let err = GenesysError::from_body(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
        assert_eq!(err.code(), Some("too.many.requests.retry.after"));
        assert_eq!(
            err.to_string(),
            "Genesys Cloud error 429 too.many.requests.retry.after: Rate limit exceeded the maximum. Retry the request in [5] seconds (contextId c)"
        );
    }

    #[test]
    fn remote_endpoint_is_retried_only_when_the_remote_failed() {
        let rules = RetryRules::genesys();
        let remote_503 = genesys(
            400,
            r#"{"code":"bad.request","status":400,"details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],"errors":[{"status":503}]}"#,
        );
        let remote_404 = genesys(
            400,
            r#"{"code":"x","status":400,"details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],"errors":[{"status":404}]}"#,
        );
        assert!(matches!(
            rules.classify_error(&remote_503),
            Class::Retryable(_)
        ));
        assert!(matches!(rules.classify_error(&remote_404), Class::Fatal(_)));
        // a final rule on any code wins
        let rules = rules.code("bad.request", Rule::Final);
        assert!(matches!(rules.classify_error(&remote_503), Class::Fatal(_)));
    }

    #[test]
    fn authentication_failures_are_final_and_unknown_codes_follow_statuses() {
        let rules = RetryRules::genesys();
        let auth = genesys(
            400,
            r#"{"status":400,"details":[{"errorCode":"ACTION.AUTHENTICATION"}]}"#,
        );
        assert!(matches!(rules.classify_error(&auth), Class::Fatal(_)));
        let unknown = genesys(503, r#"{"code":"weird","status":503}"#);
        assert!(matches!(rules.classify_error(&unknown), Class::Fatal(_)));
        assert!(matches!(
            rules.clone().statuses(true).classify_error(&unknown),
            Class::Retryable(_)
        ));
        // case-insensitive
        let rules = rules.code("WEIRD", Rule::Retry);
        assert!(matches!(
            rules.classify_error(&unknown),
            Class::Retryable(_)
        ));
    }

    #[test]
    fn other_errors_are_final_for_the_client_retry() {
        let err: crate::error::BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(
            RetryRules::genesys().classify_error(err.as_ref()),
            Class::Fatal(FailureKind::Other)
        );
    }
}
