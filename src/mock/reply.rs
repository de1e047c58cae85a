//! The shape of the mock's answers: which vendor a route imitates, and its
//! errors (Genesys' JSON body, or CXone's `error` with
//! `icStatusDescription`), rate-limit refusals and 401s.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

/// An answer of the mock.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Which vendor a route imitates, which decides the shape of its errors and
/// whether it sends `inin-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vendor {
    Genesys,
    Cxone,
}

impl Vendor {
    /// The vendor whose API `path` belongs to.
    pub(crate) fn of(path: &str) -> Self {
        let cxone = [
            "/data-extraction/",
            "/incontactapi/",
            "/auth/",
            "/.well-known/",
            "/files/",
        ];
        if cxone.iter().any(|p| path.starts_with(p)) {
            Vendor::Cxone
        } else {
            Vendor::Genesys
        }
    }

    /// An error in the vendor's shape: Genesys' JSON error body, or CXone's
    /// `error`/`error_description` with `icStatusDescription`.
    pub(crate) fn error(self, status: u16, code: &str, message: &str) -> Reply {
        match self {
            Vendor::Genesys => json(
                status,
                serde_json::json!({
                    "message": message, "code": code, "status": status,
                    "contextId": "mock-context", "details": [], "errors": []
                })
                .to_string(),
            ),
            Vendor::Cxone => {
                let mut reply = json(
                    status,
                    serde_json::json!({ "error": code, "error_description": message }).to_string(),
                );
                if let Ok(value) = message.parse() {
                    reply.headers_mut().insert("icStatusDescription", value);
                }
                reply
            }
        }
    }

    /// A 429 asking to wait `secs`, with `Retry-After`.
    pub(crate) fn too_many(self, secs: u64) -> Reply {
        let mut reply = match self {
            Vendor::Genesys => self.error(
                429,
                "too.many.requests.retry.after",
                &format!("Rate limit exceeded the maximum. Retry the request in [{secs}] seconds"),
            ),
            Vendor::Cxone => self.error(
                429,
                "TooManyRequests",
                &format!("Too many requests. Retry after {secs} seconds"),
            ),
        };
        reply
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("digits"));
        reply
    }

    /// A 401 for a missing, unknown or expired token.
    pub(crate) fn unauthorized(self, missing: bool) -> Reply {
        match (self, missing) {
            (Vendor::Genesys, true) => self.error(
                401,
                "authentication.required",
                "No authentication bearer token specified",
            ),
            (Vendor::Genesys, false) => {
                self.error(401, "bad.credentials", "Invalid login credentials.")
            }
            (Vendor::Cxone, _) => self.error(401, "invalid_token", "Invalid or expired token"),
        }
    }
}

/// A JSON answer.
pub(crate) fn json(status: u16, body: impl Into<String>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.into())))
        .expect("valid response")
}

/// The request's query parameters.
pub(crate) fn query(request: &Request<Bytes>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
