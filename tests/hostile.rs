//! Hostile input: arbitrary bytes in the hint headers (`Retry-After`,
//! `RateLimit`, Genesys `inin-ratelimit-*`), in token responses and in
//! response bodies. Nothing panics, every error is typed and short, no
//! secret is echoed, and every delay the stack computes from a header stays
//! within its bounds (the server-hint cap, the deadline, the rate gate cap).
//!
//! The same parsers are fuzzed by the cargo-fuzz targets under `fuzz/`.

#[path = "support/upstream.rs"]
mod upstream;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use tower_cx::auth::{LifetimePolicy, TokenError};
use tower_cx::body::Body;
use tower_cx::error::BodyTooLarge;
use tower_cx::hint::{server_hint, MalformedHint, SystemClock};
use tower_cx::internals::{
    parse_genesys, parse_ratelimit, parse_retry_after, parse_token_response,
};
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::transport::read_limited;

use upstream::{status, Scripted};

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // anything at all
        proptest::collection::vec(any::<u8>(), 0..96),
        // near misses of the real syntax
        "[ \t]{0,2}[0-9]{0,25}[ \t.,;=-]{0,2}[0-9a-z]{0,4}".prop_map(String::into_bytes),
        "\"[a-z]{0,5}\";r=[-0-9]{0,3};t=[-0-9.]{0,22}(, [a-z]+;r=0;t=[0-9]{0,22})?"
            .prop_map(String::into_bytes),
        "limit=[0-9]{0,4}, remaining=[0-9]{0,2}, reset=[-0-9]{0,22}".prop_map(String::into_bytes),
        "(Mon|Sun|Fri), [0-9]{1,2} (Jan|Feb|Dec) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
            .prop_map(String::into_bytes),
    ]
}

fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

fn short(malformed: &MalformedHint) -> bool {
    malformed.value.chars().count() <= MalformedHint::MAX_VALUE_CHARS
        && malformed.to_string().len() < 512
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn retry_after_is_total_and_delay_seconds_are_exact(bytes in header_bytes()) {
        let Some(v) = value(&bytes) else { return Ok(()) };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        match parse_retry_after(&v, now) {
            Ok(delay) => {
                let text = String::from_utf8_lossy(&bytes);
                let trimmed = text.trim_matches(|c| c == ' ' || c == '\t');
                if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                    let expected = trimmed.parse::<u64>().unwrap_or(u64::MAX);
                    prop_assert_eq!(delay, Duration::from_secs(expected));
                } else {
                    // an HTTP-date: never more than the years an HTTP-date can name
                    prop_assert!(delay <= Duration::from_secs(10_000 * 366 * 86_400), "{:?}", delay);
                    prop_assert_eq!(delay.subsec_nanos(), 0, "rounded up to whole seconds");
                }
            }
            Err(malformed) => prop_assert!(short(&malformed)),
        }
    }

    #[test]
    fn ratelimit_is_total(bytes in header_bytes()) {
        let Some(v) = value(&bytes) else { return Ok(()) };
        if let Err(malformed) = parse_ratelimit(&v) {
            prop_assert!(short(&malformed));
        }
    }

    #[test]
    fn a_spent_ratelimit_item_gives_its_reset(t in 0u64..1_000_000_000, other in 0u64..1_000) {
        let v = HeaderValue::from_str(&format!("\"a\";r=5;t={other}, \"default\";r=0;t={t}")).unwrap();
        prop_assert_eq!(parse_ratelimit(&v).unwrap(), Some(Duration::from_secs(t)));
    }

    #[test]
    fn genesys_headers_are_total_and_exact(
        count in header_bytes(), allowed in header_bytes(), reset in header_bytes(),
        n in 0u64..1_000, limit in 1u64..1_000, secs in 0u64..100_000,
    ) {
        let mut headers = HeaderMap::new();
        for (name, bytes) in [("inin-ratelimit-count", &count), ("inin-ratelimit-allowed", &allowed), ("inin-ratelimit-reset", &reset)] {
            if let Some(v) = value(bytes) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        if let Err(malformed) = parse_genesys(&headers) {
            prop_assert!(short(&malformed));
        }
        let report = server_hint(&headers, &SystemClock);
        prop_assert!(report.malformed.iter().all(short));

        let mut valid = HeaderMap::new();
        valid.insert("inin-ratelimit-count", n.into());
        valid.insert("inin-ratelimit-allowed", limit.into());
        valid.insert("inin-ratelimit-reset", secs.into());
        let expected = (n >= limit).then(|| Duration::from_secs(secs));
        prop_assert_eq!(parse_genesys(&valid).unwrap(), expected);
    }

    #[test]
    fn token_responses_never_panic_echo_no_secret_and_keep_lifetimes_in_bounds(
        status in prop_oneof![Just(200u16), Just(400), Just(401), 100u16..600],
        content_type in prop_oneof![Just("application/json".to_owned()), Just("text/html".to_owned()), "[ -~]{0,40}"],
        secret in "[A-Za-z0-9]{24}",
        expires_in in prop_oneof![
            Just("3600".to_owned()), Just("\"3600\"".to_owned()), Just("-1".to_owned()),
            Just("1e400".to_owned()), Just("null".to_owned()), Just("0".to_owned()),
            Just("18446744073709551616".to_owned()), "[-0-9.e]{1,12}",
        ],
        token_type in prop_oneof![Just("bearer".to_owned()), Just("Bearer".to_owned()), Just("mac".to_owned()), "[a-z]{0,6}"],
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        shape in 0u8..4,
    ) {
        let body = match shape {
            0 => format!(r#"{{"access_token":"{secret}","token_type":"{token_type}","expires_in":{expires_in}}}"#).into_bytes(),
            1 => format!(r#"{{"error":"invalid_client","error_description":"{}","access_token":"{secret}"}}"#, "x".repeat(noise.len() * 20)).into_bytes(),
            2 => {
                // a token response broken off at a random point
                let full = format!(r#"{{"access_token":"{secret}","token_type":"bearer","expires_in":60}}"#);
                full.as_bytes()[..noise.len().min(full.len())].to_vec()
            }
            _ => noise.clone(),
        };
        let policy = LifetimePolicy::default();
        let status = StatusCode::from_u16(status).unwrap();
        match parse_token_response(status, Some(&content_type), &body, tokio::time::Instant::now(), &policy) {
            Ok(token) => {
                prop_assert!(status.is_success());
                prop_assert!(token.lifetime() > Duration::ZERO);
                prop_assert!(token.lifetime() <= policy.max);
                let shown = format!("{:?}", token);
                prop_assert!(!shown.contains(&secret));
            }
            Err(error) => {
                let shown = format!("{error} {error:?}");
                prop_assert!(!shown.contains(&secret), "{}", shown);
                prop_assert!(shown.len() < 2_048, "errors stay short: {} bytes", shown.len());
                prop_assert!(!matches!(error, TokenError::Transport(_)));
            }
        }
    }

    #[test]
    fn bodies_are_read_up_to_their_limit_and_not_beyond(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
        limit in 0usize..2_000,
    ) {
        let total: usize = chunks.iter().map(Vec::len).sum();
        let expected: Vec<u8> = chunks.concat();
        let body = Chunks(chunks.into_iter().map(Bytes::from).collect());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let read = runtime.block_on(read_limited(Response::new(body), limit));
        if total <= limit {
            prop_assert_eq!(read.unwrap(), expected);
        } else {
            let error = read.unwrap_err();
            prop_assert_eq!(error.downcast_ref::<BodyTooLarge>().map(BodyTooLarge::limit), Some(limit));
        }
    }
}

/// A body delivered in the given chunks, one frame each.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

// ------------------------------------------------- delays the stack computes

const CAP: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(60);
const JITTER_MAX: Duration = Duration::from_secs(1);
const MAX_GATE: Duration = Duration::from_secs(20);

/// One 429 carrying `headers`, then 200s; returns the time the logical
/// request took, the attempts made, and the final status.
async fn through_retry(headers: HeaderMap) -> (Duration, u32, StatusCode) {
    let upstream = Scripted::new([status(429).headers(headers)]);
    let limiter = PriorityLimitLayer::new(1).max_gate(MAX_GATE);
    let gate = limiter.handle();
    let client = RetryLayer::new()
        .max_attempts(2)
        .max_server_hint(CAP)
        .hint_jitter(0.1, JITTER_MAX)
        .deadline(DEADLINE)
        .layer(limiter.layer(upstream.clone()));
    let started = tokio::time::Instant::now();
    let response = client
        .oneshot(
            Request::get("https://api.example.com/")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect("a 429 is a response, never an error");
    // the gate never stays closed longer than its cap
    if let Some(closed_for) = gate.status().gate_closed_for {
        assert!(closed_for <= MAX_GATE, "{closed_for:?}");
    }
    let attempts = upstream.count() as u32;
    (started.elapsed(), attempts, response.status())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_hostile_hint_never_stretches_a_wait_past_its_bounds(
        retry_after in proptest::option::of(header_bytes()),
        ratelimit in proptest::option::of(header_bytes()),
        genesys in proptest::option::of((header_bytes(), header_bytes(), header_bytes())),
    ) {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, bytes: &[u8]| {
            if let Some(v) = value(bytes) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        if let Some(b) = &retry_after { put("retry-after", b); }
        if let Some(b) = &ratelimit { put("ratelimit", b); }
        if let Some((c, a, r)) = &genesys {
            put("inin-ratelimit-count", c);
            put("inin-ratelimit-allowed", a);
            put("inin-ratelimit-reset", r);
        }
        let hint = server_hint(&headers, &SystemClock).hint.map(|h| h.delay);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let (elapsed, attempts, status) = runtime.block_on(through_retry(headers));
        // never longer than the cap plus its jitter, never past the deadline
        prop_assert!(elapsed <= (CAP + JITTER_MAX).min(DEADLINE), "{:?} for {:?}", elapsed, hint);
        match hint {
            // over the cap: the 429 comes back at once, no sleep
            Some(delay) if delay > CAP => {
                prop_assert_eq!((attempts, status), (1, StatusCode::TOO_MANY_REQUESTS));
                prop_assert_eq!(elapsed, Duration::ZERO);
            }
            // honoured: never undercut
            Some(delay) => {
                prop_assert_eq!((attempts, status), (2, StatusCode::OK));
                prop_assert!(elapsed >= delay, "{:?} < {:?}", elapsed, delay);
            }
            None => prop_assert_eq!((attempts, status), (2, StatusCode::OK)),
        }
    }
}

/// Vendor error bodies: arbitrary bytes, and JSON of the right shape with
/// hostile values (wrong types, huge strings, deep `errors` nesting).
fn vendor_body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        "[a-zA-Z0-9 .]{0,40}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::Value::Bool(true)),
        (1usize..5000).prop_map(|n| serde_json::Value::String("x".repeat(n))),
    ];
    let json = (
        text.clone(),
        text.clone(),
        text.clone(),
        proptest::collection::vec(text.clone(), 0..4),
        0usize..40,
        0usize..300,
    )
        .prop_map(|(message, code, status, details, depth, width)| {
            let mut errors = serde_json::json!([]);
            for _ in 0..depth {
                errors = serde_json::json!([{ "message": "nested", "errors": errors }]);
            }
            let wide: Vec<_> = (0..width).map(|i| serde_json::json!({ "code": i })).collect();
            serde_json::to_vec(&serde_json::json!({
                "message": message,
                "code": code,
                "status": status,
                "contextId": "ctx",
                "details": details.into_iter().map(|d| serde_json::json!({ "errorCode": d })).collect::<Vec<_>>(),
                "errors": if width > 0 { serde_json::Value::Array(wide) } else { errors },
                "error_description": "denied",
            }))
            .unwrap()
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), json]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn vendor_error_bodies_never_panic_and_stay_bounded(
        body in vendor_body(),
        status in 400u16..600,
        ic in proptest::collection::vec(any::<u8>(), 0..200),
        retry_after in header_bytes(),
    ) {
        use tower_cx::cxone::CxoneError;
        use tower_cx::internals::IC_STATUS_DESCRIPTION;
        use tower_cx::genesys::GenesysError;

        let status = StatusCode::from_u16(status).unwrap();
        let mut headers = HeaderMap::new();
        if let Some(v) = value(&ic) {
            headers.insert(IC_STATUS_DESCRIPTION, v);
        }
        if let Some(v) = value(&retry_after) {
            headers.insert(http::header::RETRY_AFTER, v);
        }
        let genesys = GenesysError::from_body(status, &headers, &body);
        prop_assert_eq!(genesys.status(), status);
        let _ = (genesys.codes().count(), genesys.remote_status(), genesys.retry_after());
        prop_assert!(genesys.to_string().len() < 64 * 1024, "{}", genesys.to_string().len());
        let cxone = CxoneError::from_response(status, &headers, &body);
        prop_assert_eq!(cxone.status(), status);
        let _ = (cxone.codes().count(), cxone.retry_after());
        prop_assert!(cxone.to_string().len() < 64 * 1024, "{}", cxone.to_string().len());
    }
}
