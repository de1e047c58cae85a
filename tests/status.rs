//! The operator's status page: what it shows of each layer, in JSON and in
//! HTML, agreeing with each other, and mounted in axum.

#[path = "support/status_page.rs"]
mod status_page;
#[path = "support/upstream.rs"]
mod upstream;

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_cx::audit::AuditLayer;
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::Overloaded;
use tower_cx::observe::FleetEvent;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::status::{Status, StatusBoard, StatusService};

use upstream::{status, Scripted};

const TOKEN: &str = "tok-never-shown-9f2c";

/// GETs `path` from `service` with `accept`, as text.
async fn get<S>(service: S, path: &str, accept: &str) -> (StatusCode, String, String)
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<http_body_util::Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(path)
        .header(header::ACCEPT, accept)
        .body(Empty::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let code = response.status();
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        code,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn request() -> Request<Body> {
    Request::get("https://api.example.com/api/v2/users")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_page_shows_the_token_expiry_retries_sheds_the_queue_and_the_gate_a_hint_closed() {
    let limiter = PriorityLimitLayer::new(1)
        .max_queue(1)
        .pacing(10, Duration::from_secs(1));
    let breaker = CircuitBreakerLayer::new();
    let tokens = TokenCache::new(source_fn(|| async {
        Ok::<_, TokenError>(Token::new(TOKEN, Duration::from_secs(3600)))
    }));
    let board = StatusBoard::new()
        .limiter("api", limiter.handle())
        .breaker("api", breaker.handle())
        .tokens("api", tokens.clone());
    // a 503 (retried), a 429 asking for 30 s (closes the gate), then 200s
    let upstream = Scripted::new([status(503), status(429).header("retry-after", "30")]);
    let client = ServiceBuilder::new()
        .layer(AuditLayer::new(board.clone()))
        .layer(
            RetryLayer::new()
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(10))),
        )
        .layer(breaker)
        .layer(limiter)
        .layer(BearerLayer::new(tokens))
        .service(upstream.clone());

    // 503 then the 429: one retry scheduled after each
    let first = tokio::spawn(client.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(upstream.count(), 2);
    // the gate is closed for 30 s from the 429; the next request queues,
    // the one after it finds the queue full and is shed
    let queued = tokio::spawn(client.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let shed = client.clone().oneshot(request()).await.unwrap_err();
    assert!(shed.downcast_ref::<Overloaded>().is_some(), "{shed}");

    let status = board.snapshot();
    let limiter = &status.limiters[0];
    assert_eq!(limiter.name, "api");
    assert_eq!(limiter.queued.normal, 1);
    assert_eq!((limiter.queued.high, limiter.queued.low), (0, 0));
    assert!(limiter.gate.closed);
    assert_eq!(limiter.gate.reason.as_deref(), Some("retry-after"));
    // closed at the 429, which came after the 503, a 10 ms backoff and a
    // paced slot
    let reopens = limiter.gate.reopens_in_s.unwrap();
    assert!((29.0..=29.1).contains(&reopens), "{reopens}");
    let pacing = limiter.pacing.as_ref().unwrap();
    assert_eq!((pacing.per_second, pacing.interval_ms), (10.0, 100.0));
    assert_eq!(pacing.source, "configured");

    let token = &status.tokens[0];
    assert!(token.in_hand);
    let left = token.expires_in_s.unwrap();
    assert!((3598.9..=3599.0).contains(&left), "{left}");
    assert!(token.expires_at.is_some());
    assert_eq!((token.refresh_count, token.consecutive_failures), (1, 0));

    assert_eq!(status.breakers[0].state, "closed");
    // the 503's retry; the shed request's retry (a shed request was not
    // sent: safe to try again), shed again
    assert_eq!(status.recent.retries_total, 2);
    assert_eq!(status.recent.sheds_total, 2);
    let events: Vec<_> = status
        .recent
        .events
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "request.shed",
            "retry.scheduled",
            "request.shed",
            "retry.scheduled"
        ]
    );
    assert_eq!(
        status.recent.events[0].detail,
        "normal priority, queue_full"
    );
    assert_eq!(status.recent.events[1].detail, "in 10 ms (backoff)");
    assert_eq!(status.recent.events[3].attempt, Some(1));
    assert_ne!(
        status.recent.events[0].correlation_id,
        status.recent.events[3].correlation_id
    );

    // both pages, and never the token
    let (code, content_type, json) = get(board.service(), "/", "application/json").await;
    assert_eq!(
        (code, content_type.as_str()),
        (StatusCode::OK, "application/json")
    );
    let (_, content_type, html) = get(board.service(), "/", "text/html,*/*").await;
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(!json.contains(TOKEN) && !html.contains(TOKEN));
    let parsed: Status = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.limiters, status.limiters);

    // out of attempts, the first request got its 429; the gate reopens and
    // the queued request goes
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(queued.await.unwrap().unwrap().status(), StatusCode::OK);
    let status = board.snapshot();
    assert!(!status.limiters[0].gate.closed);
    assert_eq!(status.limiters[0].gate.reason, None);
    assert_eq!(status.limiters[0].queued.normal, 0);
}

#[tokio::test(start_paused = true)]
async fn every_value_on_the_html_page_is_the_json_value_at_its_field() {
    let limiter = PriorityLimitLayer::new(4);
    let limiter_handle = limiter.handle();
    let breaker = CircuitBreakerLayer::new();
    let breaker_handle = breaker.handle();
    let board = StatusBoard::new()
        .title("api <edge> & co")
        .limiter("edge <1>", limiter_handle.clone())
        .breaker("edge <1>", breaker_handle.clone())
        .fleet("prod");
    let audit = AuditLayer::new(board.clone());
    audit.emitter().handler()(&FleetEvent::Degraded {
        component: "gate",
        reason: "connection refused".into(),
    });
    limiter_handle.close_gate(Duration::from_secs(5));
    breaker_handle.isolate();

    let (_, _, html) = get(board.service(), "/", "text/html").await;
    let (_, _, json) = get(board.service(), "/status.json", "*/*").await;
    let json: Value = serde_json::from_str(&json).unwrap();
    let shown = status_page::fields(&html);
    assert!(shown.len() >= 15, "{shown:?}");
    assert_eq!(
        status_page::disagreements(&html, &json, &["generated_at"]),
        []
    );
    // names are escaped, never markup
    assert!(html.contains("edge &lt;1&gt;") && !html.contains("edge <1>"));
    assert!(html.contains("<title>api &lt;edge&gt; &amp; co</title>"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("http://"));
    assert_eq!(
        status_page::shown(&json, "limiters.0.gate.closed"),
        "closed"
    );
    assert_eq!(status_page::shown(&json, "breakers.0.state"), "isolated");
    assert_eq!(status_page::shown(&json, "fleet.state"), "degraded");
    assert_eq!(
        status_page::shown(&json, "fleet.degraded.0.reason"),
        "connection refused"
    );

    // a restored component takes the fleet back to shared
    audit.emitter().handler()(&FleetEvent::Restored { component: "gate" });
    assert_eq!(board.snapshot().fleet.unwrap().state, "shared");
}

#[tokio::test(start_paused = true)]
async fn the_page_shows_a_quota_exhausted_until_it_resets() {
    let limiter = PriorityLimitLayer::new(4);
    let board = StatusBoard::new().limiter("api", limiter.handle());
    // a daily cap: come back in two hours
    let upstream = Scripted::new([status(429).header("retry-after", "7200")]);
    let client = ServiceBuilder::new().layer(limiter).service(upstream);
    client.clone().oneshot(request()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(200)).await;
    let status = board.snapshot();
    assert_eq!(status.limiters[0].quota_exhausted_for_s, Some(7000.0));
    assert!(!status.limiters[0].gate.closed, "not the gate's");

    let (_, _, html) = get(board.service(), "/", "text/html").await;
    let (_, _, json) = get(board.service(), "/status.json", "*/*").await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        status_page::shown(&json, "limiters.0.quota_exhausted_for_s"),
        "7000"
    );
    assert!(html.contains("quota exhausted, resets in (s)"));
    assert!(html.contains("data-field=\"limiters.0.quota_exhausted_for_s\" class=\"bad\""));
    assert_eq!(
        status_page::disagreements(&html, &json, &["generated_at"]),
        []
    );
    // over at its time
    tokio::time::sleep(Duration::from_secs(7000)).await;
    assert_eq!(board.snapshot().limiters[0].quota_exhausted_for_s, None);
    client.oneshot(request()).await.unwrap();
}

#[tokio::test]
async fn axum_serves_it_where_it_is_mounted() {
    let board = StatusBoard::new().limiter("api", PriorityLimitLayer::new(2).handle());
    let app = Router::new().nest_service("/_cx/status", board.service());
    let call = |request: Request<axum::body::Body>| app.clone().oneshot(request);

    let response = call(
        Request::get("/_cx/status")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let html = response.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&html)
        .unwrap()
        .contains("data-field=\"limiters.0.available\">2<"));

    let response = call(
        Request::get("/_cx/status?format=json")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let status: Status = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.limiters[0].available, 2);

    let response = call(
        Request::post("/_cx/status")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
}

#[tokio::test]
async fn head_answers_without_a_body_and_json_is_chosen_by_path_query_or_accept_q_values() {
    let board = StatusBoard::new();
    let service: StatusService = board.service();
    for (path, accept, json) in [
        ("/", "text/html", false),
        ("/", "*/*", false),
        ("/", "application/json", true),
        ("/", "text/html, application/json", false),
        ("/", "application/json;q=0.9, text/html", false),
        ("/", "text/html;q=0.9, application/json", true),
        ("/", "application/json, text/html", true),
        ("/", "application/json; q=0", false),
        ("/", "text/html;q=0.5, application/json;q=0.5", false),
        ("/", "text/html;Q=0.1, application/json;q=0.5", true),
        ("/", "application/*", true),
        ("/", "text/html;q=0.2, */*", true),
        ("/", "*/*, text/html", false),
        ("/", "application/json;q=1.5, text/html", true),
        ("/status.json", "text/html", true),
        ("/json", "", true),
        ("/?format=json", "text/html", true),
        ("/?format=html", "", false),
    ] {
        let (code, content_type, _) = get(service.clone(), path, accept).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(content_type == "application/json", json, "{path} {accept}");
    }
    let request = Request::head("/").body(Empty::<Bytes>::new()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}
