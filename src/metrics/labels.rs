//! Label values, kept bounded: a known method or `_OTHER`, a host and a
//! port (never a path, a query or a correlation id), a status code, an
//! error class.

use std::sync::Arc;

use ::metrics::{Label, SharedString};
use http::StatusCode;

use crate::classify::FailureKind;

/// `http.request.method`.
pub(super) const METHOD: &str = "http.request.method";
/// `server.address`.
pub(super) const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub(super) const SERVER_PORT: &str = "server.port";
/// `http.response.status_code`.
pub(super) const STATUS_CODE: &str = "http.response.status_code";
/// `error.type`.
pub(super) const ERROR_TYPE: &str = "error.type";

/// OpenTelemetry's value for a method, or an error type, outside the known
/// set.
pub(super) const OTHER: &str = "_OTHER";

/// The method as OpenTelemetry labels it: one of the methods of RFC 9110
/// and `PATCH`, else `_OTHER`.
pub(super) fn method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or(OTHER)
}

/// The host (lower case, IPv6 without brackets) and port of a URL as the
/// audit layer records it (`scheme://host[:port]/...`), the port being the
/// scheme's default when the URL names none. `None` for a URL without an
/// authority (a relative one).
pub(super) fn server(url: &str) -> Option<(Arc<str>, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // the audit layer has removed userinfo already; never label with it
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let authority: http::uri::Authority = authority.parse().ok()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let port = authority.port_u16().or(match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    Some((Arc::from(host.to_ascii_lowercase()), port))
}

/// `error.type` of an outcome: the status code for a status of 400 or
/// above, else the failure's kind (`timeout`, `connect`, ...) when the
/// outcome counted as a failure.
pub(super) fn error_type(
    status: Option<StatusCode>,
    failure: Option<FailureKind>,
) -> Option<SharedString> {
    match (status, failure) {
        (Some(status), _) if status.as_u16() >= 400 => Some(code(status)),
        (_, Some(FailureKind::Status(status))) => Some(code(status)),
        (_, Some(kind)) => Some(SharedString::const_str(kind.as_str())),
        (_, None) => None,
    }
}

/// A status code as a label value (`503`).
pub(super) fn code(status: StatusCode) -> SharedString {
    SharedString::from_owned(status.as_u16().to_string())
}

/// The labels of the HTTP instruments a request was started with.
#[derive(Clone)]
pub(super) struct RequestLabels {
    pub(super) method: &'static str,
    pub(super) server: Option<(Arc<str>, Option<u16>)>,
}

impl RequestLabels {
    /// The labels of a request whose start was not seen.
    pub(super) fn unknown() -> Self {
        Self {
            method: OTHER,
            server: None,
        }
    }

    /// Method, address and port.
    pub(super) fn base(&self) -> Vec<Label> {
        let mut labels = Vec::with_capacity(5);
        labels.push(Label::from_static_parts(METHOD, self.method));
        if let Some((address, port)) = &self.server {
            labels.push(Label::new(
                SERVER_ADDRESS,
                SharedString::from_shared(address.clone()),
            ));
            if let Some(port) = port {
                labels.push(Label::new(
                    SERVER_PORT,
                    SharedString::from_owned(port.to_string()),
                ));
            }
        }
        labels
    }

    /// Method, address, port, and the outcome's status and error type.
    pub(super) fn outcome(
        &self,
        status: Option<StatusCode>,
        error_type: Option<SharedString>,
    ) -> Vec<Label> {
        let mut labels = self.base();
        if let Some(status) = status {
            labels.push(Label::new(STATUS_CODE, code(status)));
        }
        if let Some(error_type) = error_type {
            labels.push(Label::new(ERROR_TYPE, error_type));
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_are_other() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("PATCH"), "PATCH");
        assert_eq!(method("get"), OTHER);
        assert_eq!(method("PURGE"), OTHER);
    }

    #[test]
    fn the_server_is_the_host_and_port_never_the_path() {
        let at = |url: &str| server(url).map(|(host, port)| (host.to_string(), port));
        assert_eq!(
            at("https://API.example.com/api/v2/users/123?x=1"),
            Some(("api.example.com".into(), Some(443)))
        );
        assert_eq!(
            at("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), Some(8080)))
        );
        assert_eq!(at("http://[::1]/x"), Some(("::1".into(), Some(80))));
        assert_eq!(
            at("https://host.example?q=1"),
            Some(("host.example".into(), Some(443)))
        );
        assert_eq!(at("/relative/123"), None);
        assert_eq!(at("https:///nohost"), None);
    }

    #[test]
    fn error_types_are_status_codes_or_failure_kinds() {
        let text = |e: Option<SharedString>| e.map(|e| e.to_string());
        let status = |code| Some(StatusCode::from_u16(code).unwrap());
        assert_eq!(text(error_type(status(200), None)), None);
        assert_eq!(text(error_type(status(404), None)), Some("404".into()));
        assert_eq!(
            text(error_type(
                status(503),
                Some(FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE))
            )),
            Some("503".into())
        );
        assert_eq!(
            text(error_type(None, Some(FailureKind::Timeout))),
            Some("timeout".into())
        );
        // a classifier that fails a 200 says which status
        assert_eq!(
            text(error_type(
                status(200),
                Some(FailureKind::Status(StatusCode::OK))
            )),
            Some("200".into())
        );
    }
}
