//! The `tower-cx-gateway` binary, started as a process, proxying to the
//! embedded mock with a bearer token it fetched itself.
#![cfg(all(feature = "gateway", feature = "mock"))]

#[path = "support/events.rs"]
mod events;
#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/loopback.rs"]
mod loopback;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tower_cx::body::Body;
use tower_cx::mock::{Fault, MockServer};

use events::EventCapture;

/// The gateway binary `cargo test` builds for this test.
fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tower-cx-gateway"))
}

/// Starts the gateway and returns it with the address it listens on.
async fn start_gateway(args: &[&str], secret: &str, audit: &std::path::Path) -> (Child, String) {
    let audit = audit.to_str().expect("a UTF-8 path");
    let args: Vec<&str> = ["--audit-file", audit]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let gateway = gateway_process::start(&args, &[("TOWER_CX_CLIENT_SECRET", secret)]).await;
    (gateway.child, gateway.addr)
}

/// The gateway in front of `mock`, authenticating with the mock's client id
/// and `secret`.
async fn gateway_for_mock(
    mock: &MockServer,
    extra: &[&str],
    secret: &str,
    audit: &std::path::Path,
) -> (Child, String) {
    let token_url = format!("{}/oauth/token", mock.base_url());
    let base = mock.base_url();
    let mut args = vec![
        "--upstream",
        &base,
        "--token-url",
        &token_url,
        "--client-id",
        &mock.config().client_id,
    ];
    args.extend_from_slice(extra);
    start_gateway(&args, secret, audit).await
}

/// Whether `text` holds a token as the mock issues them: `mock-` and 16 hex
/// digits.
fn contains_mock_token(text: &str) -> bool {
    text.match_indices("mock-").any(|(at, _)| {
        let rest = &text.as_bytes()[at + 5..];
        rest.len() >= 16 && rest[..16].iter().all(u8::is_ascii_hexdigit)
    })
}

fn audit_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tower-cx-gateway-{name}-{}.jsonl",
        std::process::id()
    ))
}

#[tokio::test]
async fn the_gateway_proxies_with_a_token_it_fetched_itself() {
    let mock = MockServer::start().await.unwrap();
    let config = mock.config().clone();
    let audit = audit_path("ok");
    let (_gateway, addr) =
        gateway_for_mock(&mock, &["--rate", "100/1"], &config.client_secret, &audit).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    // The caller's own credentials are not forwarded: the mock would answer
    // 401 to an unknown token.
    let request = Request::get(format!("{addr}/api/v2/users?pageSize=3"))
        .header("authorization", "Bearer the-callers-own")
        .header("x-priority", "high")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["entities"].as_array().unwrap().len(), 3);

    let request = Request::post(format!("{addr}/api/v2/integrations/actions/a1/execute"))
        .header("content-type", "application/json")
        .body(Full::from("{\"customer\":7}"))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let counters = mock.counters();
    assert_eq!(counters.tokens_issued, 1, "one token for both requests");
    assert_eq!(counters.requests["/oauth/token"], 1);
    assert_eq!(counters.requests["/api/v2/users"], 1);

    // The audit file has the requests, and never the secret or the token.
    let lines = std::fs::read_to_string(&audit).unwrap();
    let _ = std::fs::remove_file(&audit);
    assert!(lines.lines().count() >= 4, "{lines}");
    assert!(lines.contains("/api/v2/users"));
    assert!(!lines.contains(&config.client_secret));
    assert!(!contains_mock_token(&lines), "{lines}");
}

#[tokio::test]
async fn the_gateway_answers_a_typed_error_when_its_credentials_are_refused() {
    let mock = MockServer::start().await.unwrap();
    let audit = audit_path("refused");
    let (_gateway, addr) = gateway_for_mock(&mock, &[], "not-the-secret", &audit).await;

    let response = get(&addr, "/api/v2/users").await;
    let _ = std::fs::remove_file(&audit);
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "token", "{error}");
    assert_eq!(
        error["message"], "upstream authentication failed",
        "{error}"
    );
    assert!(!String::from_utf8_lossy(&body).contains("not-the-secret"));
    let counters = mock.counters();
    assert_eq!(
        counters.requests.get("/api/v2/users"),
        None,
        "nothing reached the API"
    );
}

// ---------------------------------------------------------------------------
// A recording upstream: a token endpoint and an API that remembers what it
// was sent, so that tests can see exactly what the gateway forwarded.

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: http::HeaderMap,
    body_len: usize,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: EventCapture<Seen>,
    /// When set, the token endpoint answers 401 with this body.
    token_failure: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    fn api_requests(&self) -> Vec<Seen> {
        let seen = self.seen.all().into_iter();
        seen.filter(|s| s.uri != "/oauth/token").collect()
    }
}

const UPSTREAM_TOKEN: &str = "upstream-token-7";

/// Starts the recording upstream; returns its recorder and `http://ADDR`.
async fn recording_upstream() -> (Recorder, String) {
    let recorder = Recorder::default();
    let shared = recorder.clone();
    let base = loopback::serve(tower::service_fn(move |request| {
        std::future::ready(Ok::<_, std::convert::Infallible>(record(&shared, request)))
    }))
    .await;
    (recorder, base)
}

/// A plain GET through the gateway at `addr`.
async fn get(addr: &str, path: &str) -> http::Response<hyper::body::Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("{addr}{path}"))
        .body(Full::default())
        .unwrap();
    client.request(request).await.unwrap()
}

fn record(recorder: &Recorder, request: Request<Body>) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.as_bytes().cloned().unwrap_or_default();
    let uri = parts.uri.to_string();
    recorder.seen.push(Seen {
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body_len: body.len(),
    });
    let respond = |status: u16, body: String| {
        let mut response = http::Response::new(Full::from(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        response
    };
    if uri == "/oauth/token" {
        if let Some(failure) = recorder.token_failure.lock().unwrap().clone() {
            return respond(401, failure);
        }
        return respond(
            200,
            format!(
                r#"{{"access_token":"{UPSTREAM_TOKEN}","token_type":"bearer","expires_in":3600}}"#
            ),
        );
    }
    if uri == "/spent" {
        let mut response = respond(200, "{}".into());
        for (name, value) in [
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "20"),
        ] {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    if uri == "/fail" {
        return respond(500, "{}".into());
    }
    if uri == "/big" {
        return http::Response::new(Full::from(vec![b'x'; BIG]));
    }
    if uri.starts_with("/redirect") {
        let mut response = http::Response::new(Full::default());
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(
            "location",
            "http://elsewhere.invalid/taken".parse().unwrap(),
        );
        return response;
    }
    respond(200, format!(r#"{{"received":{}}}"#, body.len()))
}

/// A new recording upstream and a gateway in front of it (see
/// [`gateway_for_recorder`]): the recorder, the gateway and its address.
async fn gateway_with_recorder(
    authenticate: bool,
    extra: &[&str],
    name: &str,
) -> (Recorder, Child, String) {
    let (recorder, base) = recording_upstream().await;
    let (gateway, addr) = gateway_for_recorder(&base, authenticate, extra, name).await;
    (recorder, gateway, addr)
}

/// A gateway in front of the recording upstream, authenticating against its
/// token endpoint when `authenticate`.
async fn gateway_for_recorder(
    base: &str,
    authenticate: bool,
    extra: &[&str],
    name: &str,
) -> (Child, String) {
    let token_url = format!("{base}/oauth/token");
    let mut args = vec!["--upstream", base];
    if authenticate {
        args.extend(["--token-url", &token_url, "--client-id", "gateway-client"]);
    }
    args.extend_from_slice(extra);
    start_gateway(&args, RECORDER_SECRET, &audit_path(name)).await
}

const RECORDER_SECRET: &str = "s3cret-Zq9-never-shown";

/// Sends `raw` on a new connection and returns everything the gateway
/// answered until it closed the connection.
async fn raw_exchange(addr: &str, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(host_port(addr)).await.unwrap();
    stream.write_all(raw).await.unwrap();
    read_to_close(&mut stream).await
}

/// Everything until the peer closes (at most 30 s, so that a regression
/// fails instead of hanging).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

fn host_port(addr: &str) -> &str {
    addr.strip_prefix("http://").unwrap_or(addr)
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

// ---------------------------------------------------------------------------
// What held up in the review, kept as regression tests.

#[tokio::test]
async fn absolute_form_targets_and_host_tricks_reach_the_configured_upstream_only() {
    let (recorder, base) = recording_upstream().await;
    let (_gateway, addr) = gateway_for_recorder(&base, false, &[], "absolute").await;
    let upstream_authority = host_port(&base).to_owned();

    let tricks = [
        "GET http://evil.invalid:9/abs?q=1 HTTP/1.1\r\nHost: evil.invalid:9\r\nConnection: close\r\n\r\n",
        "GET /host?q=2 HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
        "GET http://127.0.0.1:1/abs2 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n",
    ];
    for trick in tricks {
        let answer = raw_exchange(&addr, trick.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{trick}: {answer}");
    }
    let seen = recorder.api_requests();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["/abs?q=1", "/host?q=2", "/abs2"]);
    for s in &seen {
        assert_eq!(s.headers["host"], upstream_authority.as_str(), "{s:?}");
    }
}

#[tokio::test]
async fn the_callers_authorization_and_hop_by_hop_headers_are_stripped() {
    let (recorder, _gateway, addr) = gateway_with_recorder(true, &[], "hop").await;

    let raw = "GET /api/me HTTP/1.1\r\nHost: x\r\n\
               Authorization: Bearer the-callers-own\r\n\
               Proxy-Authorization: Basic Y2FsbGVyOnB3\r\n\
               Connection: close, x-hop-secret\r\n\
               X-Hop-Secret: 1\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: trailers\r\n\
               Trailer: x-late\r\n\
               X-End-To-End: kept\r\n\r\n";
    let answer = raw_exchange(&addr, raw.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = recorder.api_requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let headers = &seen[0].headers;
    assert_eq!(
        headers["authorization"],
        format!("Bearer {UPSTREAM_TOKEN}").as_str(),
        "the gateway's token, not the caller's"
    );
    for gone in [
        "proxy-authorization",
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} was forwarded: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn a_redirect_to_another_host_is_passed_back_not_followed() {
    let (recorder, _gateway, addr) = gateway_with_recorder(true, &[], "redirect").await;

    let response = get(&addr, "/redirect").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        "http://elsewhere.invalid/taken"
    );
    assert_eq!(
        recorder.api_requests().len(),
        1,
        "one request, not followed"
    );
}

#[tokio::test]
async fn the_413_414_and_431_limits_answer_before_anything_is_forwarded() {
    let (recorder, _gateway, addr) =
        gateway_with_recorder(false, &["--max-body-bytes", "1024"], "limits").await;

    // A huge declared length is refused at once: the body is never sent,
    // so an answer can only come from a refusal before reading.
    let answer = raw_exchange(
        &addr,
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 413, "{answer}");

    // A chunked body that grows past the limit.
    let mut chunked =
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'a'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(&raw_exchange(&addr, &chunked).await), 413);

    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "u".repeat(10_000)
    );
    assert_eq!(
        status_of(&raw_exchange(&addr, long_uri.as_bytes()).await),
        414
    );

    let big_header = format!(
        "GET /h HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(40_000)
    );
    assert_eq!(
        status_of(&raw_exchange(&addr, big_header.as_bytes()).await),
        431
    );
    // more than 100 header lines, however short
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /h HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    assert!(many_headers.len() < 2_000);
    assert_eq!(
        status_of(&raw_exchange(&addr, many_headers.as_bytes()).await),
        431
    );

    assert!(
        recorder.api_requests().is_empty(),
        "{:?}",
        recorder.api_requests()
    );
}

// ---------------------------------------------------------------------------
// Issue 17: methods, token errors, flags.

#[tokio::test]
async fn trace_connect_and_unknown_methods_are_answered_405_and_never_forwarded() {
    let (recorder, base) = recording_upstream().await;
    let (_gateway, addr) = gateway_for_recorder(&base, true, &[], "methods").await;

    let authority = host_port(&base).to_owned();
    for raw in [
        "TRACE /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
        "PROPFIND /dav HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let answer = raw_exchange(&addr, raw.as_bytes()).await;
        assert_eq!(status_of(&answer), 405, "{raw}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nallow: get, head, post, put, patch, delete, options\r\n"),
            "{answer}"
        );
    }
    // (the token is fetched at start, so that /readyz can turn ready)
    assert!(
        recorder.api_requests().is_empty(),
        "nothing reached the upstream's API"
    );
}

#[tokio::test]
async fn token_endpoint_text_never_reaches_the_caller() {
    use base64::Engine as _;
    let (recorder, base) = recording_upstream().await;
    // An endpoint that echoes what it was sent, as some do in their errors.
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("gateway-client:{RECORDER_SECRET}"));
    *recorder.token_failure.lock().unwrap() = Some(format!(
        r#"{{"error":"invalid_client","error_description":"bad secret {RECORDER_SECRET} in Basic {basic}"}}"#
    ));
    let (_gateway, addr) = gateway_for_recorder(&base, true, &[], "echo").await;

    let response = get(&addr, "/api/me").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(RECORDER_SECRET), "{text}");
    assert!(!text.contains(&basic), "{text}");
    assert!(!text.contains("bad secret"), "{text}");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["message"], "upstream authentication failed");
    assert!(
        recorder.api_requests().is_empty(),
        "no API call without a token"
    );
}

/// Runs the gateway with `args` on a free port, sending to a closed one
/// unless told otherwise, and returns its exit status and stderr.
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:9",
    ];
    all.extend_from_slice(args);
    exit_of(&all).await
}

/// Runs the gateway with exactly `args` and returns its exit status and
/// stderr.
async fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(gateway_binary())
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the gateway exits on a bad flag")
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_numbers_in_flags_end_the_gateway_with_a_clear_error_not_a_panic() {
    let cases: [(&[&str], &str); 12] = [
        (&["--rate", "1/1e30"], "--rate"),
        (&["--rate", "0/1"], "--rate"),
        (&["--rate", "5/0"], "--rate"),
        (&["--timeout", "1e30"], "--timeout"),
        (&["--timeout", "NaN"], "--timeout"),
        (&["--concurrency", "0"], "--concurrency"),
        (&["--max-attempts", "99999999999"], "--max-attempts"),
        (&["--header-timeout", "-1"], "--header-timeout"),
        (&["--body-timeout", "inf"], "--body-timeout"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--max-header-bytes", "100"], "--max-header-bytes"),
        (&["--max-buffered-bytes", "lots"], "--max-buffered-bytes"),
    ];
    for (args, flag) in cases {
        let (code, stderr) = run_to_exit(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("gateway: {flag}: expected")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_upstream_or_a_listen_address_that_cannot_work_is_refused_at_start() {
    let with = |upstream| ["--listen", "127.0.0.1:0", "--upstream", upstream];
    for upstream in [
        "ftp://127.0.0.1/files",
        "http://127.0.0.1:9/base?key=value",
        "/relative",
    ] {
        let (code, stderr) = exit_of(&with(upstream)).await;
        assert_eq!(code, Some(1), "{upstream}: {stderr}");
        assert!(
            stderr.starts_with("gateway: --upstream: an absolute http:// or https:// URL"),
            "{upstream}: {stderr}"
        );
    }
    #[cfg(feature = "mock")]
    {
        let (code, stderr) = run_to_exit(&["--mock"]).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.starts_with("gateway: --mock is the upstream"),
            "{stderr}"
        );
    }
    // a port taken: the address is named
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut args = with("http://127.0.0.1:9");
    args[1] = &address;
    let (code, stderr) = exit_of(&args).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("gateway: cannot listen on {address}: ")),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Issue 17, item 2: slow clients, connections, buffered bytes, memory.

#[tokio::test]
async fn slow_clients_are_closed_by_the_header_and_body_timeouts() {
    let (recorder, _gateway, addr) = gateway_with_recorder(
        false,
        &["--header-timeout", "1", "--body-timeout", "1"],
        "slow",
    )
    .await;

    // 10 silent, 10 with part of their headers, 20 with part of their body.
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(host_port(&addr)).await.unwrap();
        let partial: &[u8] = match i % 3 {
            _ if i < 10 => b"",
            0 => b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Partial: ",
            _ => b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        };
        stream.write_all(partial).await.unwrap();
        clients.push((partial.len() > 60, stream));
    }
    let started = std::time::Instant::now();
    let mut held_open = 0;
    let mut body_timeouts = 0;
    for (sent_headers, mut stream) in clients {
        // `read_to_close` fails the test if the gateway keeps it open 30 s
        let answer = read_to_close(&mut stream).await;
        if sent_headers {
            assert_eq!(status_of(&answer), 408, "{answer}");
            body_timeouts += 1;
        } else {
            assert!(answer.is_empty() || status_of(&answer) == 408, "{answer}");
        }
        // closed: a further read sees the end at once
        let mut buf = [0u8; 16];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {}
            Ok(_) => held_open += 1,
        }
    }
    println!(
        "slow clients: 40 connections (10 silent, {} partial headers, {body_timeouts} partial bodies); \
         {held_open} still open after the 1 s timeouts; all closed {:.1} s after the last one connected",
        30 - body_timeouts,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(held_open, 0);
    assert!(recorder.api_requests().is_empty());
}

#[tokio::test]
async fn an_open_breaker_whose_probe_is_past_the_deadline_is_answered_503_at_once() {
    let (recorder, _gateway, addr) =
        gateway_with_recorder(false, &["--deadline", "2"], "deadline").await;
    // failing GETs (retried) until the breaker opens; then, while it is
    // open (its first probe 5 s away, past the 2 s deadline), a caller is
    // answered at once and nothing is sent. (On a machine so loaded that the
    // next request comes after the probe time, it is the probe: the breaker
    // opens again, for longer, and the check is made again.)
    for _ in 0..3 {
        let mut opened = false;
        for _ in 0..10 {
            let response = get(&addr, "/fail").await;
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                opened = true;
                break;
            }
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert!(opened, "the breaker opened");
        let sent = recorder.api_requests().len();
        let response = get(&addr, "/fail").await;
        if recorder.api_requests().len() > sent {
            continue;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("circuit_open"));
        return;
    }
    panic!("never answered at once while the breaker was open");
}

#[tokio::test]
async fn an_http2_client_with_prior_knowledge_is_served_like_an_http1_one() {
    let (recorder, _gateway, addr) = gateway_with_recorder(false, &[], "h2").await;
    let client = h2_prior_knowledge();
    let request = Request::get(format!("{addr}/h2/get?x=1"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    // streams on one connection at once
    let posts = (0..8).map(|i| {
        let request = Request::post(format!("{addr}/h2/post/{i}"))
            .body(Full::from("12345"))
            .unwrap();
        client.request(request)
    });
    for response in futures_util::future::join_all(posts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"received":5}"#);
    }
    // the header limit holds on HTTP/2 too
    let request = Request::get(format!("{addr}/h2/big-header"))
        .header("x-big", "h".repeat(40_000))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // and so does the count of header lines, which HTTP/2 itself has not
    let mut request = Request::get(format!("{addr}/h2/many-headers"));
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let seen = recorder.api_requests();
    assert_eq!(seen.len(), 9);
    assert_eq!(seen[0].uri, "/h2/get?x=1");
    assert!(seen
        .iter()
        .all(|s| s.headers.get("idempotency-key").is_some() || s.uri == "/h2/get?x=1"));
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_at_the_header_timeout() {
    let (_recorder, _gateway, addr) = gateway_with_recorder(
        false,
        &["--header-timeout", "1", "--max-connections", "1"],
        "h2-idle",
    )
    .await;
    // an HTTP/2 client keeps its connection after a request, idle
    let client = h2_prior_knowledge();
    let request = Request::get(format!("{addr}/h2/get"))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        client.request(request).await.unwrap().status(),
        StatusCode::OK
    );
    // the only connection slot comes free once the gateway closes it:
    // `read_to_close` fails the test if that takes 30 s
    healthz_once_a_slot_frees(&addr).await;
    drop(client);
}

#[tokio::test]
async fn a_rate_gate_that_opens_past_the_deadline_is_answered_503_with_its_time_at_once() {
    let (recorder, _gateway, addr) =
        gateway_with_recorder(false, &["--deadline", "3"], "gate").await;
    // none left for 20 s
    assert_eq!(get(&addr, "/spent").await.status(), StatusCode::OK);
    let response = get(&addr, "/next").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // (when the gate opens: 20 s after the answer that closed it)
    assert!((2..=20).contains(&retry_after), "{retry_after}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("overloaded"));
    assert_eq!(
        recorder.api_requests().len(),
        1,
        "nothing sent into the wait"
    );
}

/// A client that speaks HTTP/2 to a plain-HTTP address (h2c prior knowledge).
fn h2_prior_knowledge() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// `GET /healthz` on a new connection is answered 200: with
/// `--max-connections 1`, once the gateway freed the only slot
/// (`read_to_close` fails the test if that takes 30 s).
async fn healthz_once_a_slot_frees(addr: &str) {
    let mut next = TcpStream::connect(host_port(addr)).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut next).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// The recording upstream's `/big` answer: more than any socket buffers.
const BIG: usize = 64 * 1024 * 1024;

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_at_the_send_timeout() {
    let (_recorder, _gateway, addr) = gateway_with_recorder(
        false,
        &["--send-timeout", "1", "--max-connections", "1"],
        "stalled",
    )
    .await;
    // asks for 64 MiB with a small receive window, and reads nothing
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(host_port(&addr).parse().unwrap())
        .await
        .unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // the only connection slot comes free once the gateway gives up on it:
    // `read_to_close` fails the test if that takes 30 s
    healthz_once_a_slot_frees(&addr).await;
    // what the stalled client can still read ends short of the answer
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the stalled connection is still open"),
        }
    }
    assert!(received < BIG, "{received} bytes: the answer was cut");
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let (recorder, _gateway, addr) =
        gateway_with_recorder(false, &["--max-connections", "2"], "connections").await;

    // Two connections take both slots (accepted in order, before the third).
    let first = TcpStream::connect(host_port(&addr)).await.unwrap();
    let _second = TcpStream::connect(host_port(&addr)).await.unwrap();
    let mut third = TcpStream::connect(host_port(&addr)).await.unwrap();
    third
        .write_all(b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served over the limit"
    );
    assert!(recorder.api_requests().is_empty());

    drop(first);
    let answer = read_to_close(&mut third).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(recorder.api_requests().len(), 1);
}

/// Sends the head of a POST with `Expect: 100-continue` and waits for the
/// gateway's verdict: `Ok(stream)` once it asked for the body (the body's
/// bytes are then reserved), `Err(answer)` if it answered at once.
async fn post_head(addr: &str, path: &str, length: usize) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(host_port(addr)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("the gateway answers the head")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 100") && text.contains("\r\n\r\n") {
            return Ok(stream);
        }
        if n == 0 || (text.contains("\r\n\r\n") && !text.starts_with("HTTP/1.1 100")) {
            let rest = read_to_close(&mut stream).await;
            return Err(format!("{text}{rest}"));
        }
    }
}

#[tokio::test]
async fn bodies_over_the_shared_budget_are_answered_503_at_once() {
    let (recorder, _gateway, addr) = gateway_with_recorder(
        false,
        &["--max-body-bytes", "1000", "--max-buffered-bytes", "1500"],
        "budget",
    )
    .await;

    // The first request holds 1000 of the 1500 bytes while its body comes.
    let mut holder = post_head(&addr, "/holder", 1000)
        .await
        .expect("asked for the body");
    let refused = post_head(&addr, "/second", 1000)
        .await
        .expect_err("over the budget");
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // a body without a declared length is refused when it grows past it
    let chunked = format!(
        "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{}\r\n0\r\n\r\n",
        "c".repeat(600)
    );
    assert_eq!(
        status_of(&raw_exchange(&addr, chunked.as_bytes()).await),
        503
    );

    holder.write_all(&[b'h'; 1000]).await.unwrap();
    assert_eq!(status_of(&read_to_close(&mut holder).await), 200);
    // its bytes are back in the budget
    let mut next = post_head(&addr, "/next", 1000)
        .await
        .expect("budget given back");
    next.write_all(&[b'n'; 1000]).await.unwrap();
    assert_eq!(status_of(&read_to_close(&mut next).await), 200);

    let seen: Vec<(String, usize)> = recorder
        .api_requests()
        .into_iter()
        .map(|s| (s.uri, s.body_len))
        .collect();
    assert_eq!(
        seen,
        [("/holder".to_owned(), 1000), ("/next".to_owned(), 1000)]
    );
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB (Linux).
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// 40 connections at once, each sending an 8 MiB body (the client waits for
/// `100 Continue`, so a refused body is never sent). Returns the statuses.
async fn forty_large_bodies(addr: &str) -> Vec<u16> {
    const BODY: usize = 8 * 1024 * 1024;
    let body: Arc<Vec<u8>> = Arc::new(vec![b'x'; BODY]);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let addr = addr.to_owned();
            let body = body.clone();
            tokio::spawn(async move {
                match post_head(&addr, &format!("/large/{i}"), BODY).await {
                    Ok(mut stream) => {
                        stream.write_all(&body).await.unwrap();
                        status_of(&read_to_close(&mut stream).await)
                    }
                    Err(answer) => status_of(&answer),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn large_bodies_stay_within_the_budget_and_memory_is_given_back() {
    let (recorder, base) = recording_upstream().await;
    for (budget, label) in [
        ("67108864", "default budget (64 MiB)"),
        (
            "419430400",
            "budget raised to 400 MiB (every body buffered at once)",
        ),
    ] {
        let (gateway, addr) =
            gateway_for_recorder(&base, false, &["--max-buffered-bytes", budget], "memory").await;
        let pid = gateway.id().unwrap();
        let before = memory_mib(pid);
        let statuses = forty_large_bodies(&addr).await;
        let during = memory_mib(pid);
        // Give the gateway a moment to hand freed memory back (a measurement,
        // not an assertion).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = memory_mib(pid);
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        let busy = statuses.iter().filter(|&&s| s == 503).count();
        assert_eq!(ok + busy, 40, "only 200 or 503: {statuses:?}");
        assert!(ok >= 1, "{statuses:?}");
        if budget == "419430400" {
            assert_eq!(ok, 40, "{statuses:?}");
        }
        if let (Some(before), Some(during), Some(after)) = (before, during, after) {
            println!(
                "large bodies, {label}: 40 x 8 MiB -> {ok} x 200, {busy} x 503; \
                 gateway VmRSS before {:.1} MiB, peak (VmHWM) {:.1} MiB, after {:.1} MiB",
                before.0, during.1, after.0
            );
        }
        drop(gateway);
    }
    assert!(recorder
        .api_requests()
        .iter()
        .all(|s| s.body_len == 8 * 1024 * 1024));
}

// ---------------------------------------------------------------------------
// Issue 16: unknown outcomes are never a success.

#[tokio::test]
async fn a_post_whose_upstream_answers_500_is_answered_502_outcome_unknown() {
    let mock = MockServer::start().await.unwrap();
    let config = mock.config().clone();
    let audit = audit_path("unknown");
    let (_gateway, addr) = gateway_for_mock(&mock, &[], &config.client_secret, &audit).await;
    let path = "/api/v2/integrations/actions/a1/execute";
    mock.fault_on(Method::POST, path, Fault::Status(500), 5);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::from("{\"customer\":7}"))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let _ = std::fs::remove_file(&audit);
    let status = response.status();
    let outcome = response.headers().get("x-cx-outcome").cloned();
    assert_eq!(
        mock.counters().requests[path],
        1,
        "sent once, never repeated"
    );
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        outcome.as_ref().map(|v| v.to_str().unwrap()),
        Some("unknown")
    );
}

#[tokio::test]
async fn a_post_is_retried_when_the_upstream_is_declared_to_honour_keys() {
    let mock = MockServer::start().await.unwrap();
    let config = mock.config().clone();
    let audit = audit_path("keys");
    let (_gateway, addr) = gateway_for_mock(
        &mock,
        &["--upstream-honours-keys"],
        &config.client_secret,
        &audit,
    )
    .await;
    let path = "/api/v2/integrations/actions/a1/execute";
    mock.fault_on(Method::POST, path, Fault::Status(500), 1);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::from("{\"customer\":7}"))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let _ = std::fs::remove_file(&audit);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-cx-outcome").is_none());
    assert_eq!(mock.counters().requests[path], 2, "the 500, then the retry");
    let keys = mock.idempotency_keys(path);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the same key on both attempts");
}

/// Out of descriptors, the gateway pauses accepting (a line when it starts
/// and about one a second after) instead of spinning, and serves again once
/// descriptors are free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn accept_errors_back_off_instead_of_spinning() {
    use std::os::unix::process::CommandExt as _;

    let (recorder, base) = recording_upstream().await;
    let mut command = std::process::Command::new(gateway_binary());
    command
        .args(["--listen", "127.0.0.1:0", "--upstream", &base])
        .args(["--header-timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Command::from(command).kill_on_drop(true).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = out.next_line().await.unwrap().expect("the gateway starts");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let stderr_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = stderr_lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });

    // More idle connections than the gateway has descriptors for.
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(TcpStream::connect(host_port(&addr)).await.unwrap());
    }
    // Two seconds of refused accepts (a real wait: the gateway's own pauses
    // are what is observed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during: Vec<String> = stderr_lines.lock().unwrap().clone();
    let accept_lines = during.iter().filter(|l| l.starts_with("accept:")).count();
    println!("accept errors for 2 s: {accept_lines} log line(s): {during:?}");
    assert!(accept_lines >= 1, "the pause is logged: {during:?}");
    assert!(
        accept_lines <= 6,
        "a log line per error is a hot loop: {during:?}"
    );

    drop(idle);
    let answer = raw_exchange(
        &addr,
        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(recorder.api_requests().iter().any(|s| s.uri == "/after"));
    assert!(
        stderr_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("accept: accepting again")),
        "{:?}",
        stderr_lines.lock().unwrap()
    );
}

/// Sends `n` data-action POSTs, 16 at a time, each with its own `requestId`;
/// returns each operation with the status and `x-cx-outcome` it got.
async fn post_operations(addr: &str, n: usize) -> Vec<(String, StatusCode, Option<String>)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let path = "/api/v2/integrations/actions/create-case/execute";
    let mut results = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        let sends = batch.iter().map(|i| {
            let client = client.clone();
            let op = format!("case-{i}");
            let request = Request::post(format!("{addr}{path}"))
                .header("content-type", "application/json")
                .body(Full::from(format!("{{\"requestId\":\"{op}\"}}")))
                .unwrap();
            async move {
                let response = client.request(request).await.unwrap();
                let outcome = response
                    .headers()
                    .get("x-cx-outcome")
                    .map(|v| v.to_str().unwrap().to_owned());
                (op, response.status(), outcome)
            }
        });
        results.extend(futures_util::future::join_all(sends).await);
    }
    results
}

/// The defect issue 16 reported, end to end: 300 data actions through the
/// gateway to an upstream that ignores `Idempotency-Key` (as Genesys does)
/// and applies some of them before answering 500 or dropping the
/// connection. None is applied twice, and none whose outcome is unknown is
/// answered 200. Declared to honour keys, the same load is retried to 200.
#[tokio::test]
async fn posts_through_apply_then_fail_faults_are_applied_once_and_never_told_200_unknowingly() {
    use tower_cx::mock::{MockConfig, RandomFaults};

    let faults = || {
        RandomFaults::new(16, "/api/v2/integrations")
            .with(Fault::ApplyThenStatus(500), 0.08)
            .with(Fault::ApplyThenDrop, 0.08)
            .with(Fault::Status(503), 0.04)
    };
    let mock = MockServer::start_with(MockConfig::default().random_faults(faults()))
        .await
        .unwrap();
    let config = mock.config().clone();
    let audit = audit_path("ops");
    let (_gateway, addr) = gateway_for_mock(&mock, &[], &config.client_secret, &audit).await;
    let results = post_operations(&addr, 300).await;
    let _ = std::fs::remove_file(&audit);

    let mut ok = 0;
    let mut unknown = 0;
    let mut unknown_but_applied = 0;
    for (op, status, outcome) in &results {
        match *status {
            StatusCode::OK => {
                assert_eq!(mock.applied(op), 1, "{op}");
                ok += 1;
            }
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
                assert_eq!(outcome.as_deref(), Some("unknown"), "{op} {status}");
                unknown += 1;
                unknown_but_applied += usize::from(mock.applied(op) == 1);
            }
            other => panic!("{op}: unexpected {other}"),
        }
    }
    println!(
        "keys ignored: 300 operations, {ok} × 200, {unknown} unknown ({unknown_but_applied} of them applied upstream), {} applied twice",
        mock.duplicate_applications()
    );
    assert_eq!(mock.duplicate_applications(), 0);
    assert_eq!(ok + unknown, 300);
    assert!(
        unknown_but_applied > 0,
        "the apply-then-fail faults happened"
    );

    // an upstream that honours keys, declared so: a POST applied and then
    // dropped is sent again with its key, and the upstream answers it from
    // what it stored, without applying it again
    let mock = MockServer::start_with(
        MockConfig::default()
            .honour_idempotency_keys(true)
            .random_faults(
                RandomFaults::new(17, "/api/v2/integrations").with(Fault::ApplyThenDrop, 0.1),
            ),
    )
    .await
    .unwrap();
    let config = mock.config().clone();
    let audit = audit_path("ops-keys");
    let (_gateway, addr) = gateway_for_mock(
        &mock,
        &["--upstream-honours-keys", "--max-attempts", "5"],
        &config.client_secret,
        &audit,
    )
    .await;
    let results = post_operations(&addr, 100).await;
    let _ = std::fs::remove_file(&audit);
    let ok = results
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::OK)
        .count();
    let replayed = mock.counters().replayed_by_key;
    println!(
        "keys honoured: 100 operations, {ok} × 200, {replayed} answered from the key, {} applied twice",
        mock.duplicate_applications(),
    );
    assert_eq!(ok, 100);
    assert!(replayed > 0, "drops were retried with their key");
    assert_eq!(mock.duplicate_applications(), 0);
    assert!(results.iter().all(|(op, _, _)| mock.applied(op) == 1));
}

#[tokio::test]
async fn a_daily_cap_is_answered_429_with_retry_after_and_nothing_is_forwarded_until_it_resets() {
    let mock = MockServer::start().await.unwrap();
    let config = mock.config().clone();
    let audit = audit_path("cap");
    let (_gateway, addr) = gateway_for_mock(&mock, &[], &config.client_secret, &audit).await;
    let path = "/api/v2/users";
    // the upstream's daily cap: come back in two hours
    mock.fault_on(Method::GET, path, Fault::RetryAfterSecs(7200), 1);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = || {
        let request = Request::get(format!("{addr}{path}?pageSize=1"))
            .body(Full::default())
            .unwrap();
        client.request(request)
    };
    // the upstream's own 429 comes back as it is
    let response = get().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7200");
    // then the gateway answers for it, without asking the upstream
    for _ in 0..3 {
        let response = get().await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((7190..=7200).contains(&retry_after), "{retry_after}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "quota_exhausted");
    }
    let _ = std::fs::remove_file(&audit);
    assert_eq!(mock.counters().requests[path], 1, "sent once");
}
