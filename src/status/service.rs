//! The status page as a tower service: HTML for a browser, JSON for a
//! program, from one snapshot per request.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::Service;

use super::board::StatusBoard;
use super::html;

/// Answers `GET` and `HEAD` with the board's status: JSON when the path
/// ends in `.json` or `/json`, the query has `format=json`, or the
/// `Accept` header prefers `application/json` to `text/html` (by q-value,
/// then by order); the
/// self-refreshing HTML page otherwise. Any other method gets `405` with
/// `Allow: GET, HEAD`. Every answer is `Cache-Control: no-store`.
///
/// It answers every path it is given, so mount it where it belongs: in
/// axum with `Router::nest_service("/_cx/status", board.service())`, or in
/// front of your own routing by path. Made by
/// [`StatusBoard::service`].
#[derive(Debug, Clone)]
pub struct StatusService {
    board: StatusBoard,
}

impl StatusService {
    /// A service answering with `board`'s status.
    pub fn new(board: StatusBoard) -> Self {
        Self { board }
    }

    /// The board it answers with.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The answer to a request for `path` with `query` and `headers`.
    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = Response::new(Full::new(Bytes::from_static(
                b"{\"error\":\"method_not_allowed\"}",
            )));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            let headers = response.headers_mut();
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return response;
        }
        let status = self.board.snapshot();
        let (body, content_type) = if wants_json(path, query, headers) {
            let json = serde_json::to_vec(&status).unwrap_or_else(|_| b"{}".to_vec());
            (json, "application/json")
        } else {
            let page = html::render(&status, self.board.page_title(), self.board.refresh_secs());
            (page.into_bytes(), "text/html; charset=utf-8")
        };
        let body = if method == Method::HEAD {
            Vec::new()
        } else {
            body
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Whether the request asks for JSON rather than the page.
fn wants_json(path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
    if path.ends_with(".json") || path.ends_with("/json") {
        return true;
    }
    if let Some(query) = query {
        if form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "format" && v == "json") {
            return true;
        }
    }
    // the media type with the higher q-value wins (RFC 9110, 12.5.1), each
    // taken from the most specific range that covers it; on a tie, the one
    // named outranks a wildcard, then the one listed first: browsers list
    // text/html first, programs ask for JSON alone
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    // per type: (specificity, q-value, position) of the range that covers
    // it best
    let (mut json, mut html) = (None::<(u8, f32, usize)>, None::<(u8, f32, usize)>);
    for (position, range) in ranges.enumerate() {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim().eq_ignore_ascii_case("q").then_some(value)
            })
            .find_map(|q| q.trim().parse::<f32>().ok())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        let (for_json, for_html) = match media.as_str() {
            "application/json" => (Some(2), None),
            "text/html" => (None, Some(2)),
            "application/*" => (Some(1), None),
            "text/*" => (None, Some(1)),
            "*/*" => (Some(0), Some(0)),
            _ => continue,
        };
        for (specificity, slot) in [(for_json, &mut json), (for_html, &mut html)] {
            if let Some(specificity) = specificity {
                if slot.is_none_or(|(best, _, _)| specificity > best) {
                    *slot = Some((specificity, q, position));
                }
            }
        }
    }
    match (json, html) {
        (None, _) => false,
        (Some((_, q, _)), None) => q > 0.0,
        (Some((json_by, json_q, json_at)), Some((html_by, html_q, html_at))) => {
            // on a tie, a type named outranks a wildcard, then order decides
            json_q > 0.0
                && (json_q, json_by, std::cmp::Reverse(json_at))
                    > (html_q, html_by, std::cmp::Reverse(html_at))
        }
    }
}

impl<B> Service<Request<B>> for StatusService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        ready(Ok(self.answer(
            request.method(),
            uri.path(),
            uri.query(),
            request.headers(),
        )))
    }
}
