//! The `tower-cx-gateway` binary's operator endpoints, started as a process:
//! `/healthz`, `/readyz` and `/metrics`, answered by the gateway itself.
#![cfg(all(feature = "gateway", feature = "mock"))]

#[path = "support/gateway_process.rs"]
mod gateway_process;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::Child;
use tower_cx::mock::{Fault, MockServer};

/// Starts the gateway with `args` and returns it with its base URL.
async fn start(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let gateway = gateway_process::start(args, env).await;
    (gateway.child, gateway.addr)
}

/// `GET base+path`: the status and the body text.
async fn get(base: &str, path: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("{base}{path}"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A token endpoint that answers 503 until `up` is set.
async fn token_endpoint(up: Arc<AtomicBool>) -> String {
    let app = Router::new().route(
        "/oauth/token",
        post(move || {
            let up = up.clone();
            async move {
                if up.load(Ordering::SeqCst) {
                    let token = r#"{"access_token":"t-1","token_type":"bearer","expires_in":3600}"#;
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        token,
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("content-type", "text/plain")],
                        "down",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/oauth/token")
}

#[tokio::test]
async fn healthz_is_200_and_readyz_waits_for_the_first_token() {
    let mock = MockServer::start().await.unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let token_url = token_endpoint(up.clone()).await;
    let base = mock.base_url();
    let (_gateway, addr) = start(
        &[
            "--upstream",
            &base,
            "--token-url",
            &token_url,
            "--client-id",
            "c",
        ],
        &[("TOWER_CX_CLIENT_SECRET", "s")],
    )
    .await;

    assert_eq!(get(&addr, "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let reason: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reason["reason"], "no_token", "{body}");

    up.store(true, Ordering::SeqCst);
    let mut ready = false;
    for _ in 0..300 {
        if get(&addr, "/readyz").await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready once the token endpoint answers");
    assert_eq!(get(&addr, "/healthz").await.0, StatusCode::OK);
    let counters = mock.counters();
    assert_eq!(counters.requests.get("/healthz"), None, "never proxied");
    assert_eq!(counters.requests.get("/readyz"), None, "never proxied");
}

#[tokio::test]
async fn metrics_show_the_proxied_request_and_the_pacing_rate_without_correlation_ids() {
    let audit = std::env::temp_dir().join(format!(
        "tower-cx-gateway-metrics-{}.jsonl",
        std::process::id()
    ));
    let audit_arg = audit.to_str().unwrap().to_owned();
    let (_gateway, addr) = start(
        &["--mock", "--audit-file", &audit_arg, "--rate", "600/60"],
        &[],
    )
    .await;

    let (status, _) = get(&addr, "/api/v2/users?pageSize=2").await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = get(&addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("http_client_request_duration"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("tower_cx_")), "{text}");
    // `--rate 600/60` is the ceiling; the mock advertises 300 a minute,
    // less what it has seen used
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tower_cx_pacing_rate{name=\"upstream\"} "))
        .unwrap_or_else(|| panic!("no pacing rate: {text}"))
        .parse()
        .unwrap();
    assert!(rate > 0.0 && rate <= 300.0, "{rate}");

    let lines = std::fs::read_to_string(&audit).unwrap();
    let _ = std::fs::remove_file(&audit);
    let ids: Vec<String> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["correlation_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!ids.is_empty(), "{lines}");
    for id in ids {
        assert!(!text.contains(&id), "{id} in /metrics");
    }
    assert!(!text.contains("correlation"), "{text}");
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_refuses_new_ones_and_exits_0() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(
        Some("/api/v2/users"),
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    let token_url = format!("{}/oauth/token", mock.base_url());
    let base = mock.base_url();
    let client_id = mock.config().client_id.clone();
    let secret = mock.config().client_secret.clone();
    let (mut gateway, addr) = start(
        &[
            "--upstream",
            &base,
            "--token-url",
            &token_url,
            "--client-id",
            &client_id,
        ],
        &[("TOWER_CX_CLIENT_SECRET", &secret)],
    )
    .await;

    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { get(&addr, "/api/v2/users?pageSize=1").await }
    });
    // the request has reached the upstream, which holds it
    gateway_process::wait_until_mock_saw(&mock, "/api/v2/users").await;

    gateway_process::terminate(&gateway);

    // new connections are refused once the listener is closed
    let host = addr.strip_prefix("http://").unwrap().to_owned();
    let mut refused = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&host).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused after SIGTERM");

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let exit = tokio::time::timeout(Duration::from_secs(60), gateway.wait())
        .await
        .expect("the gateway exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn requests_still_in_flight_after_the_grace_period_are_dropped_and_counted() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(
        Some("/api/v2/users"),
        Fault::Delay(Duration::from_secs(120)),
        1,
    );
    let token_url = format!("{}/oauth/token", mock.base_url());
    let base = mock.base_url();
    let client_id = mock.config().client_id.clone();
    let secret = mock.config().client_secret.clone();
    let audit = std::env::temp_dir().join(format!(
        "tower-cx-gateway-grace-{}.jsonl",
        std::process::id()
    ));
    let audit_arg = audit.to_str().unwrap().to_owned();
    let letters = std::env::temp_dir().join(format!(
        "tower-cx-gateway-grace-letters-{}.jsonl",
        std::process::id()
    ));
    let letters_arg = letters.to_str().unwrap().to_owned();
    let gateway_process::Gateway {
        child: mut gateway,
        addr,
        output,
    } = gateway_process::start(
        &[
            "--upstream",
            &base,
            "--token-url",
            &token_url,
            "--client-id",
            &client_id,
            "--shutdown-grace",
            "0",
            "--audit-file",
            &audit_arg,
            "--dead-letter-file",
            &letters_arg,
        ],
        &[("TOWER_CX_CLIENT_SECRET", &secret)],
    )
    .await;

    let stuck = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("{addr}/api/v2/users"))
            .body(Full::default())
            .unwrap();
        client.request(request).await.map(|r| r.status())
    });
    gateway_process::wait_until_mock_saw(&mock, "/api/v2/users").await;
    gateway_process::terminate_and_exit_0(&mut gateway).await;
    assert!(
        stuck.await.unwrap().is_err(),
        "the dropped request gets no answer"
    );
    gateway_process::wait_for_line(&output, "stopped (1 request(s) dropped at shutdown)").await;
    let lines = std::fs::read_to_string(&audit).unwrap();
    let _ = std::fs::remove_file(&audit);
    assert!(lines.contains("\"cancelled\""), "{lines}");
    // nothing lost silently: the dropped request is a dead letter to replay
    let written = std::fs::read_to_string(&letters).unwrap();
    let _ = std::fs::remove_file(&letters);
    let letters: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{written}");
    assert_eq!(letters[0]["error_code"], "cancelled");
    assert_eq!(letters[0]["method"], "GET");
    assert!(
        letters[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/v2/users"),
        "{written}"
    );
    assert!(!written.contains(&secret) && !written.to_lowercase().contains("authorization"));
}

#[tokio::test]
async fn a_response_still_streaming_at_shutdown_is_counted_as_dropped() {
    use futures_util::StreamExt;
    // an upstream that sends a head and a first chunk, then nothing more
    let stream = || {
        let first = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"first chunk\n"))
        });
        axum::body::Body::from_stream(first.chain(futures_util::stream::pending()))
    };
    let app = Router::new().route(
        "/stream",
        axum::routing::get(move || async move { stream() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway_process::Gateway {
        child: mut gateway,
        addr,
        output,
    } = gateway_process::start(&["--upstream", &upstream, "--shutdown-grace", "0"], &[]).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("{addr}/stream"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first chunk\n");
    // the head and a chunk are out; the body is not done
    gateway_process::terminate_and_exit_0(&mut gateway).await;
    let lines = output.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l == "shutting down: 1 request(s) in flight, waiting up to 0ns"),
        "{lines:?}"
    );
    gateway_process::wait_for_line(&output, "stopped (1 request(s) dropped at shutdown)").await;
    // the client sees the stream cut
    assert!(body.collect().await.is_err());
}
