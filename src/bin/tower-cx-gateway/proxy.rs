//! One request: checked, buffered within the limits, sent to the configured
//! upstream through the stack, and answered; the stack's typed errors become
//! HTTP answers that tell the caller what happened without any detail an
//! unauthenticated caller should not see.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_cx::auth::TokenError;
use tower_cx::body::Body;
use tower_cx::error::{
    chain, find, BoxError, CircuitOpen, OutcomeUnknown, Overloaded, QuotaExhausted,
    RetryDeadlineExceeded, UnknownCause,
};

use super::admin::Admin;
use super::limits::{read_body, BodyBudget, BodyError, Limits};

/// The stack as the gateway calls it.
pub type Upstream = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The methods forwarded. TRACE would echo the gateway's token back to the
/// caller and CONNECT would open a tunnel with it: both, and any method not
/// listed, are answered 405.
const ALLOWED: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    // not standard, but sent by old clients as `Connection` is
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The most header lines a request may have (hyper's HTTP/1 limit).
const MAX_HEADERS: usize = 100;

/// Says that the upstream may or may not have applied the request.
pub const OUTCOME_HEADER: &str = "x-cx-outcome";

/// What every connection shares.
#[derive(Clone)]
pub struct Gateway {
    pub stack: Upstream,
    /// `/healthz`, `/readyz` and `/metrics`, answered here.
    pub admin: Arc<Admin>,
    pub upstream: Arc<Uri>,
    pub authenticates: bool,
    pub limits: Arc<Limits>,
    pub budget: BodyBudget,
}

impl Gateway {
    /// Forward one request through the stack.
    pub async fn handle(
        self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(answer) = self.admin.answer(&request) {
            return Ok(answer);
        }
        if let Some(refused) = self.refuse(&request) {
            return Ok(refused);
        }
        let (mut parts, body) = request.into_parts();
        let declared = body_length(&parts.headers);
        let (bytes, share) = match read_body(body, declared, &self.limits, &self.budget).await {
            Ok(read) => read,
            Err(e) => return Ok(body_error(e, &self.limits)),
        };
        if let Err(e) = self.rewrite(&mut parts, peer) {
            return Ok(plain(StatusCode::BAD_REQUEST, "bad_uri", &e.to_string()));
        }
        let request = Request::from_parts(parts, Body::from_bytes(bytes));
        let response = match self.stack.oneshot(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // the caller's connection decides the version it is sent in
                parts.version = http::Version::default();
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => error_response(&*error),
        };
        // the body (and any copy kept for a retry) is gone: give its bytes
        // back to the budget
        drop(share);
        Ok(response)
    }

    /// Answers given before the body is touched (an oversized declared
    /// length is refused by [`read_body`] before it reads).
    fn refuse(&self, request: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if !ALLOWED.contains(request.method()) {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("the gateway forwards {ALLOW}"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            return Some(response);
        }
        let uri_len = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        if uri_len > self.limits.max_uri_bytes {
            return Some(plain(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                &format!(
                    "request targets are limited to {} bytes",
                    self.limits.max_uri_bytes
                ),
            ));
        }
        // HTTP/1's parser stops at this many header lines; HTTP/2 has no
        // such count, so it is made here
        if request.headers().len() > MAX_HEADERS {
            return Some(plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
                &format!("requests are limited to {MAX_HEADERS} header lines"),
            ));
        }
        None
    }

    /// The upstream request's head: the configured upstream's scheme and
    /// authority whatever the caller's target or `Host` said, the caller's
    /// path and query, end-to-end headers only.
    fn rewrite(
        &self,
        parts: &mut http::request::Parts,
        peer: SocketAddr,
    ) -> Result<(), http::Error> {
        let base_path = self.upstream.path().trim_end_matches('/');
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut uri = Uri::builder().path_and_query(format!("{base_path}{path_and_query}"));
        if let Some(scheme) = self.upstream.scheme() {
            uri = uri.scheme(scheme.clone());
        }
        if let Some(authority) = self.upstream.authority() {
            uri = uri.authority(authority.clone());
        }
        parts.uri = uri.build()?;
        // the caller's HTTP version is the caller's: the client to the
        // upstream picks its own (HTTP/2 where the upstream offers it)
        parts.version = http::Version::default();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        if self.authenticates {
            // The gateway authenticates: the caller's credentials stay here.
            parts.headers.remove(header::AUTHORIZATION);
        }
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            parts.headers.append("x-forwarded-for", value);
        }
        Ok(())
    }
}

/// The declared `Content-Length` (hyper has already refused a malformed one).
fn body_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_error(error: BodyError, limits: &Limits) -> Response<ProxyBody> {
    let mut response = match error {
        BodyError::TooLarge => plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!(
                "request bodies are limited to {} bytes",
                limits.max_body_bytes
            ),
        ),
        BodyError::OverBudget => {
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many request bodies in flight, try again",
            );
            response.headers_mut().insert(header::RETRY_AFTER, 1.into());
            response
        }
        BodyError::Timeout => plain(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!(
                "the request body must arrive within {:?}",
                limits.body_timeout
            ),
        ),
        BodyError::Read(e) => plain(StatusCode::BAD_REQUEST, "bad_request_body", &e.to_string()),
    };
    // the rest of the body is not read: this connection ends here
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A typed error from the stack as an HTTP answer to the caller.
/// `wait` in whole seconds, rounded up, at least 1 (for `Retry-After`).
fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pub fn error_response(error: &(dyn std::error::Error + 'static)) -> Response<ProxyBody> {
    if let Some(unknown) = find::<OutcomeUnknown>(error) {
        // The upstream may have applied the request: never a success, and
        // say so, so that the caller checks before sending it again.
        let status = match unknown.cause() {
            UnknownCause::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        let mut response = plain(status, "outcome_unknown", &unknown.to_string());
        response.headers_mut().insert(
            HeaderName::from_static(OUTCOME_HEADER),
            HeaderValue::from_static("unknown"),
        );
        return response;
    }
    if let Some(open) = find::<CircuitOpen>(error) {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            &open.to_string(),
        );
        if let Some(wait) = open.retry_in() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, whole_seconds(wait).into());
        }
        return response;
    }
    if let Some(exhausted) = find::<QuotaExhausted>(error) {
        // the upstream's daily cap: the caller comes back when it resets
        let mut response = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exhausted",
            &exhausted.to_string(),
        );
        let secs = exhausted.retry_after_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
        return response;
    }
    if let Some(overloaded) = find::<Overloaded>(error) {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &overloaded.to_string(),
        );
        // when the rate gate opens, if that is why; else a moment
        let wait = overloaded.retry_in().map_or(1, whole_seconds);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.into());
        return response;
    }
    if let Some(deadline) = find::<RetryDeadlineExceeded>(error) {
        return plain(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            &deadline.to_string(),
        );
    }
    if find::<tower::timeout::error::Elapsed>(error).is_some() {
        return plain(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the upstream did not answer in time",
        );
    }
    if find::<TokenError>(error).is_some() {
        // The token endpoint's text may echo credentials: it goes to the
        // audit stream only, never to a caller.
        return plain(
            StatusCode::BAD_GATEWAY,
            "token",
            "upstream authentication failed",
        );
    }
    // the whole chain: "client error (Connect)" alone says nothing of a
    // certificate or a malformed answer
    eprintln!("upstream request failed: {}", chain(error));
    plain(
        StatusCode::BAD_GATEWAY,
        "upstream",
        "the upstream request failed",
    )
}

fn plain(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": kind, "message": message }).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another, as layers do.
    #[derive(Debug)]
    struct Wrapped(BoxError);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn answer(error: BoxError) -> (StatusCode, Option<String>) {
        let response = error_response(&Wrapped(error));
        let outcome = response
            .headers()
            .get(OUTCOME_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), outcome)
    }

    #[test]
    fn an_unknown_outcome_is_never_a_success_and_says_so() {
        let cases = [
            (
                UnknownCause::Status(StatusCode::INTERNAL_SERVER_ERROR),
                StatusCode::BAD_GATEWAY,
            ),
            (
                UnknownCause::Status(StatusCode::GATEWAY_TIMEOUT),
                StatusCode::BAD_GATEWAY,
            ),
            (UnknownCause::ConnectionLost, StatusCode::BAD_GATEWAY),
            (UnknownCause::Timeout, StatusCode::GATEWAY_TIMEOUT),
        ];
        for (cause, status) in cases {
            let error =
                OutcomeUnknown::new(1, cause).with_source(tower::timeout::error::Elapsed::new());
            assert_eq!(
                answer(error.into()),
                (status, Some("unknown".to_owned())),
                "{cause:?}"
            );
        }
    }

    #[test]
    fn other_errors_have_no_outcome_header() {
        assert_eq!(
            answer(tower::timeout::error::Elapsed::new().into()),
            (StatusCode::GATEWAY_TIMEOUT, None)
        );
        assert_eq!(
            answer(CircuitOpen::new(None).into()),
            (StatusCode::SERVICE_UNAVAILABLE, None)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_quota_is_a_429_with_the_seconds_until_it_resets() {
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(3_599_500);
        let response = error_response(&Wrapped(QuotaExhausted::new(until).into()));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3600");
    }
}
