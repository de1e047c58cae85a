//! The gateway's status page over the mock: the JSON a program reads, and
//! the HTML page as a real browser (headless Chromium) renders it, showing
//! the same numbers. The browser test keeps a screenshot in
//! `target/ci-artifacts/status-page.png`.
//!
//! Chromium is found as `$TOWER_CX_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on the `PATH`. Without one the
//! browser test says so and passes, except in CI (`CI` set), where it fails.

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/status_page.rs"]
mod status_page;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower_cx::status::Status;

/// `GET base+path` with `priority`: the status and the body text.
async fn get(base: &str, path: &str, priority: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("{base}{path}"))
        .header("x-priority", priority)
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The gateway's status as JSON.
async fn status(base: &str) -> (Status, Value) {
    let (code, text) = get(base, "/_cx/status.json", "normal").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    (
        serde_json::from_str(&text).unwrap(),
        serde_json::from_str(&text).unwrap(),
    )
}

/// A gateway over the mock, paced at most 20 requests a second (then to
/// the mock's advertised limit), one request at a time with room for two waiters; 12 requests at once from three
/// priorities, so that some queue and some are shed (and retried).
async fn busy_gateway() -> gateway_process::Gateway {
    let gateway = gateway_process::start(
        &[
            "--mock",
            "--rate",
            "20/1",
            "--concurrency",
            "1",
            "--queue-depth",
            "2",
        ],
        &[],
    )
    .await;
    let mut burst = Vec::new();
    for i in 0..12 {
        let addr = gateway.addr.clone();
        let priority = ["high", "normal", "low"][i % 3];
        burst.push(tokio::spawn(async move {
            get(&addr, "/api/v2/users?pageSize=1", priority).await.0
        }));
    }
    for request in burst {
        let code = request.await.unwrap();
        assert!(
            code == StatusCode::OK || code == StatusCode::SERVICE_UNAVAILABLE,
            "{code}"
        );
    }
    gateway
}

#[tokio::test]
async fn the_json_shows_the_token_pacing_queue_and_the_retries_and_sheds_of_a_burst() {
    let gateway = busy_gateway().await;
    let (status, _) = status(&gateway.addr).await;
    let token = &status.tokens[0];
    assert!(token.in_hand, "{status:?}");
    assert!(token.expires_in_s.unwrap() > 3000.0, "{status:?}");
    let limiter = &status.limiters[0];
    assert_eq!(limiter.name, "upstream");
    // `--rate 20/1` is a ceiling: the mock advertises 300 a minute
    let pacing = limiter.pacing.as_ref().unwrap();
    assert!(
        pacing.per_second > 0.0 && pacing.per_second <= 5.0,
        "{pacing:?}"
    );
    assert_eq!(pacing.source, "inin-ratelimit", "{pacing:?}");
    assert_eq!((limiter.in_flight, limiter.available), (0, 1));
    assert_eq!(status.breakers[0].state, "closed");
    // twelve at once through one permit and two places: some were shed,
    // and the gateway's retries tried them again
    assert!(status.recent.sheds_total > 0, "{status:?}");
    assert!(status.recent.retries_total > 0, "{status:?}");
    assert!(status
        .recent
        .events
        .iter()
        .any(|e| e.event == "request.shed"));
    assert!(status.fleet.is_none());

    // the same through `Accept`, and the page itself
    let (code, html) = get(&gateway.addr, "/_cx/status", "normal").await;
    assert_eq!(code, StatusCode::OK);
    let shown = format!(
        "data-field=\"limiters.0.pacing.per_second\">{}<",
        pacing.per_second
    );
    assert!(html.contains(&shown), "{shown} in {html}");
}

/// Chromium, if this machine has one.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOWER_CX_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium on `url` with `args`; its standard output.
fn headless(chromium: &Path, args: &[&str], url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("tower-cx-chromium-{}", std::process::id()));
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn headless_chromium_shows_the_numbers_of_the_json_and_keeps_a_screenshot() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium (.ci/run does)"
        );
        eprintln!("no chromium on this machine: the browser test is skipped");
        return;
    };
    let gateway = busy_gateway().await;
    let url = format!("{}/_cx/status", gateway.addr);

    // the page as the browser built it, then the JSON right after: nothing
    // runs in between, so every value that does not count time down agrees
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || headless(&chromium, &["--dump-dom"], &url))
            .await
            .unwrap()
    };
    let (_, json) = status(&gateway.addr).await;
    let shown = status_page::fields(&dom);
    assert!(
        shown.len() >= 25,
        "the browser saw {} fields: {dom}",
        shown.len()
    );
    let moving = [
        "generated_at",
        "expires_at",
        "expires_in_s",
        "refresh_in_s",
        "reopens_in_s",
    ];
    assert_eq!(status_page::disagreements(&dom, &json, &moving), []);
    for field in [
        "recent.sheds_total",
        "recent.retries_total",
        "limiters.0.pacing.per_second",
    ] {
        let on_page = shown
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.clone());
        assert_eq!(on_page, Some(status_page::shown(&json, field)), "{field}");
    }
    assert_ne!(status_page::shown(&json, "recent.sheds_total"), "0");
    let expires_in = |text: &str| text.parse::<f64>().unwrap();
    let page_left = shown
        .iter()
        .find(|(f, _)| f == "tokens.0.expires_in_s")
        .unwrap();
    let json_left = status_page::shown(&json, "tokens.0.expires_in_s");
    assert!((expires_in(&page_left.1) - expires_in(&json_left)).abs() < 5.0);

    // the screenshot, kept for CI
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    let (chromium, url2) = (chromium.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        headless(&chromium, &[&shot, "--window-size=1280,1000"], &url2)
    })
    .await
    .unwrap();
    let image = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(
        image.len() > 10_000,
        "a page, not a blank: {} bytes",
        image.len()
    );
    println!("screenshot: {}", png.display());
}
