//! The `gateway` example, started as a process, proxying to the embedded
//! mock with a bearer token it fetched itself.
#![cfg(feature = "mock")]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tower_cx::mock::MockServer;

/// The example binary `cargo test` builds next to the test binaries.
fn gateway_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let binary = profile
        .join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --all-features`, which builds the examples",
        binary.display()
    );
    binary
}

/// Starts the gateway and returns it with the address it listens on.
async fn start_gateway(args: &[&str], secret: &str, audit: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(gateway_binary())
        .args(["--listen", "127.0.0.1:0", "--audit-file"])
        .arg(audit)
        .args(args)
        .env("TOWER_CX_CLIENT_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.to_string();
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .expect("the gateway starts");
    // Keep draining its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
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

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = Request::get(format!("{addr}/api/v2/users"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let _ = std::fs::remove_file(&audit);
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "token", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
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
