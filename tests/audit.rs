//! The audit layer: exact event sequences through the real layers, sinks,
//! stats, dead letters and redaction.

#[path = "support/events.rs"]
mod events;
#[path = "support/loopback.rs"]
mod loopback;
#[path = "support/upstream.rs"]
mod upstream;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use serde_json::json;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_cx::audit::{
    dead_letter_fn, AuditEvent, AuditLayer, AuditRecord, DeadLetter, EventKind, JsonLinesSink,
    NoopSink,
};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::BoxError;
use tower_cx::observe::{RequestEvent, RetryEventKind};
use tower_cx::origin::Origin;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::{RetryBudget, RetryLayer};

use events::{EventCapture, Written};
use upstream::{ok, status, Scripted};

type Events = EventCapture<AuditEvent>;

fn audit(events: &Events) -> AuditLayer {
    AuditLayer::new(events.sink())
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .backoff(Backoff::exponential(Duration::from_millis(500)).jitter(Jitter::None))
        .hint_jitter(0.0, Duration::ZERO)
        .budget(RetryBudget::unlimited())
}

/// `(event name, attempt)` of each event.
fn names(events: &Events) -> Vec<(&'static str, Option<u32>)> {
    events.all().iter().map(|e| (e.name(), e.attempt)).collect()
}

/// The last event (`request.finished`), as its JSON.
fn finished(events: &Events) -> serde_json::Value {
    json(&events.all().last().unwrap().kind)
}

/// An event as the sinks write it, without `ts`, `correlation_id` and
/// `attempt`.
fn json(kind: &EventKind) -> serde_json::Value {
    serde_json::to_value(kind).unwrap()
}

fn get() -> Request<Body> {
    Request::get("https://api.example.com/api/v2/users")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn success_on_the_first_attempt() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry())
        .service(Scripted::new([]));
    service.oneshot(get()).await.unwrap();
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("attempt.started", Some(1)),
            ("attempt.finished", Some(1)),
            ("request.finished", None),
        ]
    );
    assert_eq!(
        finished(&events),
        json!({
            "event": "request.finished",
            "outcome": "success",
            "status": 200,
            "attempts": 1,
            "total_ms": 0.0,
            "backoff_ms": 0.0,
            "queue_ms": 0.0,
            "wire_ms": 0.0,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_then_success() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry())
        .service(Scripted::new(
            [status(503).after(Duration::from_millis(20))],
        ));
    service.oneshot(get()).await.unwrap();
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("attempt.started", Some(1)),
            ("attempt.finished", Some(1)),
            ("retry.scheduled", Some(1)),
            ("attempt.started", Some(2)),
            ("attempt.finished", Some(2)),
            ("request.finished", None),
        ]
    );
    let events = events.all();
    assert_eq!(
        json(&events[2].kind),
        json!({
            "event": "attempt.finished",
            "status": 503,
            "class": "retryable",
            "failure": "status",
            "latency_ms": 20.0,
        })
    );
    assert_eq!(
        json(&events[3].kind),
        json!({"event": "retry.scheduled", "delay_ms": 500.0, "source": "backoff"})
    );
    assert_eq!(
        json(&events[6].kind),
        json!({
            "event": "request.finished",
            "outcome": "success",
            "status": 200,
            "attempts": 2,
            "total_ms": 520.0,
            "backoff_ms": 500.0,
            "queue_ms": 0.0,
            "wire_ms": 20.0,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_closes_the_gate() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry())
        .layer(PriorityLimitLayer::new(4))
        .service(Scripted::new([status(429).header("retry-after", "2")]));
    service.oneshot(get()).await.unwrap();
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("attempt.started", Some(1)),
            ("gate.closed", None),
            ("attempt.finished", Some(1)),
            ("retry.scheduled", Some(1)),
            ("attempt.started", Some(2)),
            ("attempt.finished", Some(2)),
            ("request.finished", None),
        ]
    );
    let events = events.all();
    assert_eq!(
        json(&events[2].kind),
        json!({"event": "gate.closed", "for_ms": 2000.0, "source": "retry-after"})
    );
    assert_eq!(
        json(&events[4].kind),
        json!({"event": "retry.scheduled", "delay_ms": 2000.0, "source": "retry-after"})
    );
}

#[tokio::test(start_paused = true)]
async fn a_401_refreshes_the_token_and_replays() {
    let events = Events::default();
    let issued = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = issued.clone();
    let tokens = TokenCache::new(source_fn(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, TokenError>(Token::new(format!("tok-{n}"), Duration::from_secs(3600)))
        }
    }));
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry())
        .layer(BearerLayer::new(tokens))
        .service(Scripted::answering(|request| {
            // 401 unless the request carries the second token
            if request.header("authorization") == Some("Bearer tok-2") {
                status(200)
            } else {
                status(401)
            }
        }));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // under a retry layer the bearer leaves the replay to it
    // (`tower_cx::replay`): the replay is the retry layer's second attempt
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("attempt.started", Some(1)),
            ("token.refreshed", None),
            ("token.invalidated", None),
            ("attempt.finished", Some(1)),
            ("retry.scheduled", Some(1)),
            ("attempt.started", Some(2)),
            ("token.refreshed", None),
            ("attempt.finished", Some(2)),
            ("request.finished", None),
        ]
    );
    assert_eq!(
        json(&events.all()[5].kind),
        json!({"event": "retry.scheduled", "delay_ms": 0.0, "source": "token-rejected"})
    );
    assert_eq!(
        json(&events.all()[2].kind),
        json!({"event": "token.refreshed", "wait_ms": 100.0})
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_reported_and_the_request_ends_not_sent() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry().deadline(Duration::from_secs(5)))
        .layer(
            CircuitBreakerLayer::new()
                .consecutive_failures(1)
                .open_duration(Backoff::constant(Duration::from_secs(10))),
        )
        .service(Scripted::new([status(503)]));
    let err = service.oneshot(get()).await.unwrap_err();
    assert!(err.is::<tower_cx::error::CircuitOpen>());
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("attempt.started", Some(1)),
            ("breaker.transition", None),
            ("attempt.finished", Some(1)),
            ("retry.scheduled", Some(1)),
            ("attempt.started", Some(2)),
            ("attempt.finished", Some(2)),
            ("retry.gave_up", Some(2)),
            ("request.finished", None),
        ]
    );
    let events = events.all();
    assert_eq!(
        json(&events[2].kind),
        json!({
            "event": "breaker.transition",
            "from": "closed",
            "to": "open",
            "reason": "consecutive_failures",
        })
    );
    assert_eq!(
        json(&events[7].kind),
        json!({"event": "retry.gave_up", "reason": "hint_past_deadline"})
    );
    let end = json(&events[8].kind);
    assert_eq!(
        (
            &end["event"],
            &end["outcome"],
            &end["error_kind"],
            &end["attempts"]
        ),
        (
            &json!("request.finished"),
            &json!("error"),
            &json!("not_sent"),
            &json!(2)
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_shed_request_is_reported() {
    let events = Events::default();
    let limiter = PriorityLimitLayer::new(1).max_queue(0);
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(limiter)
        .service(Scripted::new([status(200).after(Duration::from_secs(5))]));
    let holder = tokio::spawn(service.clone().oneshot(get()));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    events.clear();
    let err = service.oneshot(get()).await.unwrap_err();
    assert!(err.is::<tower_cx::error::Overloaded>());
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("request.shed", None),
            ("request.finished", None),
        ]
    );
    assert_eq!(
        json(&events.all()[1].kind),
        json!({"event": "request.shed", "priority": "normal", "reason": "queue_full"})
    );
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn queue_time_is_measured_and_reported() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(PriorityLimitLayer::new(1))
        .service(Scripted::new([status(200).after(Duration::from_secs(3))]));
    let holder = tokio::spawn(service.clone().oneshot(get()));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    events.clear();
    service.oneshot(get()).await.unwrap();
    holder.await.unwrap().unwrap();
    // only the queued request's own events (the holder finishes meanwhile)
    let all = events.all();
    let id = all[0].correlation_id.clone();
    let events: Vec<_> = all.iter().filter(|e| e.correlation_id == id).collect();
    assert_eq!(events.len(), 3);
    assert_eq!(
        json(&events[1].kind),
        json!({"event": "queue.waited", "wait_ms": 3000.0, "priority": "normal"})
    );
    let end = json(&events[2].kind);
    assert_eq!(
        (&end["queue_ms"], &end["total_ms"], &end["wire_ms"]),
        (&json!(3000.0), &json!(3000.0), &json!(0.0))
    );
}

#[tokio::test(start_paused = true)]
async fn the_correlation_id_comes_from_the_request_or_is_generated_and_sent_upstream() {
    let events = Events::default();
    let upstream = Scripted::new([]);
    let service = audit(&events).layer(upstream.clone());
    let request = Request::get("https://x/")
        .header("ININ-Correlation-Id", "abc-123")
        .body(Body::empty())
        .unwrap();
    service.clone().oneshot(request).await.unwrap();
    service.oneshot(get()).await.unwrap();
    let seen = upstream.header_values("x-correlation-id");
    assert_eq!(seen[0].as_deref(), Some("abc-123"));
    let generated = seen[1].clone().unwrap();
    assert_eq!(generated.len(), 36);
    let events = events.all();
    assert_eq!(&*events[0].correlation_id, "abc-123");
    assert_eq!(&*events[2].correlation_id, generated.as_str());
}

#[tokio::test(start_paused = true)]
async fn stats_count_requests_and_latencies() {
    let layer = audit(&Events::default());
    let stats = layer.stats_handle();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(retry().max_attempts(2))
        .service(Scripted::new([
            status(200).after(Duration::from_millis(10)),
            status(503),
            status(503),
            status(200).after(Duration::from_millis(30)),
        ]));
    for _ in 0..3 {
        service.clone().oneshot(get()).await.unwrap();
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.requests, 3);
    assert_eq!(snapshot.successes, 2);
    assert_eq!(snapshot.http_errors, 1);
    assert_eq!(snapshot.attempts, 4);
    assert_eq!(snapshot.retries, 1);
    assert_eq!(snapshot.p50_ms, 30.0);
}

#[tokio::test(start_paused = true)]
async fn failures_go_to_the_dead_letter_sink_with_a_replayable_request() {
    let letters = EventCapture::<DeadLetter>::new();
    let layer = audit(&Events::default()).dead_letters(letters.dead_letters());
    let stats = layer.stats_handle();
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(retry().max_attempts(2))
        .service(Scripted::new([status(503), status(503)]));
    let request = Request::put("https://api.example.com/api/v2/things/1")
        .header("authorization", "Bearer user-supplied-secret")
        .header("content-type", "application/json")
        .body(Body::from("{\"name\":\"x\"}"))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.attempts, 2);
    assert_eq!(letter.last_status, Some(503));
    assert_eq!(letter.error_code, "http_error");
    let copy = letter.request.as_ref().expect("a replayable copy");
    assert_eq!(copy.method(), http::Method::PUT);
    assert_eq!(copy.body().as_bytes().unwrap(), "{\"name\":\"x\"}");
    assert!(
        copy.headers().get("authorization").is_none(),
        "credentials removed"
    );
    assert_eq!(copy.headers()["content-type"], "application/json");
    assert_eq!(stats.snapshot().dead_letters, 1);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_the_servers_answer_made_unknown_is_dead_lettered_with_that_status() {
    let letters = EventCapture::<DeadLetter>::new();
    let layer = audit(&Events::default()).dead_letters(letters.dead_letters());
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(retry())
        .service(Scripted::new([status(500)]));
    let request = Request::post("https://api.example.com/api/v2/things")
        .body(Body::from("{\"name\":\"x\"}"))
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    assert!(tower_cx::error::OutcomeUnknown::find(error.as_ref()).is_some());
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error_code, "outcome_unknown");
    assert_eq!(
        (letters[0].attempts, letters[0].last_status),
        (1, Some(500))
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_carries_the_idempotency_key_a_layer_below_added() {
    let letters = EventCapture::<DeadLetter>::new();
    let upstream = Scripted::always(status(500));
    let service = ServiceBuilder::new()
        .layer(audit(&Events::default()).dead_letters(letters.dead_letters()))
        .layer(
            retry()
                .max_attempts(3)
                .auto_idempotency_key(true)
                .idempotency_keys_honoured_by(Origin::parse("https://api.example.com").unwrap()),
        )
        .service(upstream.clone());
    let request = Request::post("https://api.example.com/api/v2/things")
        .body(Body::from("{\"name\":\"x\"}"))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let sent = upstream.header_values("idempotency-key");
    assert_eq!(
        sent.len(),
        3,
        "a key the origin honours makes the POST retryable"
    );
    let key = sent[0].clone().expect("the retry layer added a key");
    assert!(sent.iter().all(|k| k.as_deref() == Some(key.as_str())));
    let letters = letters.take();
    let copy = letters[0].request.as_ref().expect("a replayable copy");
    assert_eq!(
        copy.headers()["idempotency-key"],
        key.as_str(),
        "a replay of the letter sends the key every attempt carried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_keeps_the_callers_own_idempotency_key() {
    let letters = EventCapture::<DeadLetter>::new();
    let upstream = Scripted::always(status(500));
    let service = ServiceBuilder::new()
        .layer(audit(&Events::default()).dead_letters(letters.dead_letters()))
        .layer(retry().auto_idempotency_key(true))
        .service(upstream.clone());
    let request = Request::post("https://api.example.com/api/v2/things")
        .header("idempotency-key", "mine-123")
        .body(Body::from("{}"))
        .unwrap();
    service.oneshot(request).await.unwrap_err();
    assert_eq!(
        upstream.header_values("idempotency-key"),
        [Some("mine-123".to_owned())]
    );
    let letters = letters.take();
    let copy = letters[0].request.as_ref().expect("a replayable copy");
    assert_eq!(copy.headers()["idempotency-key"], "mine-123");
    assert_eq!(copy.headers().get_all("idempotency-key").iter().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_during_a_backoff_is_recorded_with_the_time_it_waited() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(retry())
        .service(Scripted::new([status(503)
            .header("retry-after", "10")
            .after(Duration::from_millis(1500))]));
    let left = tokio::time::timeout(Duration::from_secs(4), service.oneshot(get())).await;
    assert!(left.is_err(), "the caller left during the 10 s wait");
    let record = finished(&events);
    assert_eq!(record["outcome"], "cancelled");
    assert_eq!(record["total_ms"], 4000.0);
    assert_eq!(record["backoff_ms"], 2500.0, "not the 10 s planned");
    assert_eq!(record["wire_ms"], 1500.0, "the attempt's answer took 1.5 s");
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_before_its_outcome_is_dead_lettered_only_when_asked() {
    for letter_dropped in [false, true] {
        let letters = EventCapture::<DeadLetter>::new();
        let layer = audit(&Events::default())
            .dead_letters(letters.dead_letters())
            .dead_letter_dropped(letter_dropped);
        let service = ServiceBuilder::new()
            .layer(layer)
            .layer(retry())
            .service(Scripted::always(ok().after(Duration::from_secs(60))));
        let request = Request::post("https://api.example.com/api/v2/things")
            .header("authorization", "Bearer user-supplied-secret")
            .body(Body::from("{\"name\":\"x\"}"))
            .unwrap();
        let pending = tokio::spawn(service.oneshot(request));
        tokio::time::sleep(Duration::from_secs(1)).await;
        pending.abort();
        let _ = pending.await;
        let letters = letters.take();
        if !letter_dropped {
            assert!(
                letters.is_empty(),
                "not asked: a dropped request is only audited"
            );
            continue;
        }
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert_eq!(letter.error_code, "cancelled");
        // the retry layer counted the attempt in flight
        assert_eq!((letter.attempts, letter.last_status), (1, None));
        let copy = letter.request.as_ref().expect("a replayable copy");
        assert_eq!(copy.method(), http::Method::POST);
        assert_eq!(copy.body().as_bytes().unwrap(), "{\"name\":\"x\"}");
        assert!(copy.headers().get("authorization").is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn json_lines_have_the_documented_shape() {
    let buffer = Written::default();
    let sink = JsonLinesSink::new(buffer.clone());
    let service = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone()))
        .layer(retry())
        .service(Scripted::new([status(502)]));
    let mut request = get();
    request
        .extensions_mut()
        .insert(tower_cx::priority::Priority::High);
    service.oneshot(request).await.unwrap();
    sink.flush();
    let text = buffer.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    for line in &lines {
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
        assert!(line["correlation_id"].is_string());
        assert!(line["event"].is_string());
    }
    assert_eq!(lines[0]["event"], "request.started");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["priority"], "high");
    assert_eq!(lines[2]["status"], 502);
    assert_eq!(lines[2]["attempt"], 1);
    assert_eq!(lines[6]["outcome"], "success");
    assert_eq!(sink.dropped(), 0);
}

mod redaction {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn secrets_never_reach_an_event(
            secret in "[A-Za-z0-9]{12,24}",
            key in prop::sample::select(vec!["access_token", "client_secret", "password", "apiKey", "code", "token"]),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let events = Events::default();
            let buffer = Written::default();
            runtime.block_on(async {
                let sink = JsonLinesSink::new(buffer.clone());
                let fan = tower_cx::audit::FanOut::new().with(sink.clone()).with(events.sink());
                let tokens = TokenCache::new(source_fn({
                    let secret = secret.clone();
                    move || {
                        let token = format!("tok{secret}");
                        async move { Ok::<_, TokenError>(Token::new(token, Duration::from_secs(60))) }
                    }
                }));
                let service = ServiceBuilder::new()
                    .layer(AuditLayer::new(fan).record_bodies(true))
                    .layer(retry().max_attempts(2))
                    .layer(BearerLayer::new(tokens))
                    .service(Scripted::new([status(429)]));
                let url = format!("https://user:{secret}@api.example.com/x?{key}={secret}&page=1");
                let request = Request::post(url)
                    .header("authorization", format!("Bearer {secret}"))
                    .header("cookie", format!("session={secret}"))
                    .header("x-api-key", secret.clone())
                    .header("idempotency-key", "k1")
                    .body(Body::from(format!("{{\"password\":\"{secret}\",\"client_secret\":\"{secret}\"}}")))
                    .unwrap();
                service.oneshot(request).await.unwrap();
                sink.flush();
            });
            let text = buffer.text();
            prop_assert!(text.lines().count() >= 6);
            prop_assert!(!text.contains(&secret), "{text}");
            for event in events.all().iter() {
                let shown = format!("{:?}", event);
                prop_assert!(!shown.contains(&secret), "{}", shown);
            }
        }
    }
}

mod webhook {
    use super::*;
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    use tokio::time::Instant;
    use tower_cx::audit::WebhookSink;

    const UP: u8 = 0;
    const DOWN: u8 = 1;
    const SLOW: u8 = 2;
    const REFUSE: u8 = 3;

    /// A webhook receiver: up, down (503) or slow (60 s); counts events.
    #[derive(Clone, Default)]
    struct Receiver {
        mode: Arc<AtomicU8>,
        events: Arc<AtomicUsize>,
        posts: Arc<AtomicUsize>,
    }

    impl Service<Request<Body>> for Receiver {
        type Response = Response<http_body_util::Full<bytes::Bytes>>;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                this.posts.fetch_add(1, Ordering::SeqCst);
                assert!(request.headers().contains_key("idempotency-key"));
                let status = match this.mode.load(Ordering::SeqCst) {
                    DOWN => 503,
                    REFUSE => 400,
                    SLOW => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        200
                    }
                    _ => {
                        let body = request.into_body().as_bytes().unwrap().clone();
                        let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                        this.events.fetch_add(batch.len(), Ordering::SeqCst);
                        200
                    }
                };
                Ok(Response::builder()
                    .status(status)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap())
            })
        }
    }

    fn sink(receiver: &Receiver) -> WebhookSink {
        WebhookSink::builder("http://127.0.0.1:9/audit")
            .unwrap()
            .batch_size(10)
            .capacity(20)
            .flush_interval(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .retry(
                RetryLayer::new()
                    .max_attempts(2)
                    .backoff(Backoff::constant(Duration::from_millis(100)))
                    .auto_idempotency_key(true)
                    .budget(RetryBudget::unlimited()),
            )
            .http_client(receiver.clone())
            .build()
    }

    async fn requests(service: &tower_cx::audit::Audit<Scripted>, n: usize) {
        for _ in 0..n {
            let start = Instant::now();
            service.clone().oneshot(get()).await.unwrap();
            assert_eq!(
                start.elapsed(),
                Duration::ZERO,
                "the request never waits for the webhook"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_webhook_queues_at_most_its_byte_cap() {
        use tower_cx::audit::AuditSink;
        let receiver = Receiver::default();
        receiver.mode.store(DOWN, Ordering::SeqCst);
        let event = big_event(60_000);
        let line = event.to_json().len();
        let sink = WebhookSink::builder("http://127.0.0.1:9/audit")
            .unwrap()
            .batch_size(10)
            .capacity(10_000)
            .max_bytes(10 * line)
            .http_client(receiver.clone())
            .build();
        for _ in 0..50 {
            sink.record(&event);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sink.pending(), 10, "10 lines fit the byte cap");
        assert_eq!(sink.dropped(), 40);
        assert_eq!(sink.delivered(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_webhook_drops_the_oldest_counts_them_and_recovers() {
        let receiver = Receiver::default();
        receiver.mode.store(DOWN, Ordering::SeqCst);
        let sink = sink(&receiver);
        let service = AuditLayer::new(sink.clone()).layer(Scripted::new([]));
        requests(&service, 10).await; // 20 events: the queue is full
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sink.delivered(), 0);
        assert_eq!(sink.dropped(), 0);
        requests(&service, 5).await; // 10 more: the 10 oldest go
        assert_eq!(sink.dropped(), 10);
        assert_eq!(sink.pending(), 20);

        receiver.mode.store(UP, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sink.delivered(), 20);
        assert_eq!(receiver.events.load(Ordering::SeqCst), 20);
        requests(&service, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            receiver.events.load(Ordering::SeqCst),
            22,
            "later events arrive"
        );
        assert_eq!(sink.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_webhook_is_retried_once_per_interval_not_in_a_loop() {
        let receiver = Receiver::default();
        receiver.mode.store(REFUSE, Ordering::SeqCst);
        let sink = sink(&receiver);
        let service = AuditLayer::new(sink.clone()).layer(Scripted::new([]));
        requests(&service, 15).await; // 30 events: 20 kept, 3 batches' worth
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        // one POST at 0 s, then one per 1 s interval
        assert_eq!(receiver.posts.load(Ordering::SeqCst), 11);
        assert_eq!(sink.pending(), 20);
        // flush returns once everything was tried, even though it failed
        sink.flush().await;
        assert_eq!(sink.delivered(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_webhook_times_out_without_slowing_requests() {
        let receiver = Receiver::default();
        receiver.mode.store(SLOW, Ordering::SeqCst);
        let sink = sink(&receiver);
        let service = AuditLayer::new(sink.clone()).layer(Scripted::new([]));
        requests(&service, 3).await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(sink.delivered(), 0);
        assert_eq!(sink.pending(), 6, "kept for later");
        // at 0 s the batch goes out: 5 s timeout, 100 ms backoff, 5 s timeout,
        // back in the queue at 10.1 s, out again at 11.1 s
        assert_eq!(
            receiver.posts.load(Ordering::SeqCst),
            3,
            "timed out, retried, kept"
        );
        receiver.mode.store(UP, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(receiver.events.load(Ordering::SeqCst), 6);
    }
}

#[tokio::test(start_paused = true)]
async fn the_tracing_sink_emits_structured_events() {
    let buffer = Written::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let service = AuditLayer::new(tower_cx::audit::TracingSink).layer(Scripted::new([status(500)]));
    let request = Request::get("https://x/")
        .header("x-request-id", "trace-1")
        .body(Body::empty())
        .unwrap();
    service.oneshot(request).await.unwrap();
    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("event=\"request.started\""),
        "{text}"
    );
    assert!(lines[0].contains("correlation_id=\"trace-1\""), "{text}");
    assert!(
        lines[1].contains("WARN") && lines[1].contains("event=\"request.finished\""),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_held_by_the_gate_sees_it_open() {
    let events = Events::default();
    let limiter = PriorityLimitLayer::new(4);
    let handle = limiter.handle();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(limiter)
        .service(Scripted::new([]));
    handle.close_gate(Duration::from_secs(7));
    service.oneshot(get()).await.unwrap();
    assert_eq!(
        names(&events),
        [
            ("request.started", None),
            ("gate.opened", None),
            ("queue.waited", None),
            ("request.finished", None),
        ]
    );
    assert_eq!(
        json(&events.all()[2].kind),
        json!({"event": "queue.waited", "wait_ms": 7000.0, "priority": "normal"})
    );
}

#[tokio::test(start_paused = true)]
async fn bodies_are_recorded_only_when_asked_and_masked() {
    for record in [false, true] {
        let events = Events::default();
        let service = audit(&events)
            .record_bodies(record)
            .layer(Scripted::new([]));
        let request = Request::post("https://x/login")
            .body(Body::from(r#"{"user":"ann","password":"hunter2"}"#))
            .unwrap();
        service.oneshot(request).await.unwrap();
        let line = events.all()[0].to_json();
        assert!(!line.contains("hunter2"), "{line}");
        assert_eq!(
            line.contains(r#""body":{"password":"[redacted]","user":"ann"}"#),
            record,
            "{line}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letters_as_json_lines_can_be_read_back() {
    let buffer = Written::default();
    let layer = audit(&Events::default())
        .dead_letters(tower_cx::audit::JsonLinesDeadLetters::new(buffer.clone()));
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(retry().max_attempts(1))
        .service(Scripted::new([status(422)]));
    let request = Request::post("https://api.example.com/api/v2/orders?page=1")
        .header("authorization", "Bearer never-kept")
        .header("idempotency-key", "k-7")
        .body(Body::from("{\"item\":1}"))
        .unwrap();
    service.oneshot(request).await.unwrap();
    let text = buffer.text();
    assert!(!text.contains("never-kept"));
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["last_status"], 422);
    assert_eq!(line["error_code"], "http_error");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["url"], "https://api.example.com/api/v2/orders?page=1");
    assert_eq!(line["body"], "{\"item\":1}");
    assert!(line["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "idempotency-key" && h[1] == "k-7"));
}

/// The webhook sink against a real hyper server on 127.0.0.1.
#[tokio::test]
async fn the_webhook_sink_posts_to_a_real_loopback_server() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let base = loopback::serve(tower::service_fn(move |req: Request<Body>| {
        let batch: Vec<serde_json::Value> =
            serde_json::from_slice(req.body().as_bytes().unwrap()).unwrap();
        counter.fetch_add(batch.len(), Ordering::SeqCst);
        let response = Response::new(http_body_util::Full::default());
        async { Ok::<_, std::convert::Infallible>(response) }
    }))
    .await;
    let sink = tower_cx::audit::WebhookSink::builder(&format!("{base}/audit"))
        .unwrap()
        .build();
    let service = AuditLayer::new(sink.clone()).layer(Scripted::new([]));
    for _ in 0..3 {
        service.clone().oneshot(get()).await.unwrap();
    }
    sink.flush().await;
    sink.flush().await;
    assert_eq!(received.load(Ordering::SeqCst), 6);
    assert_eq!(sink.delivered(), 6);
    assert_eq!(sink.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_keep_no_credentials() {
    let buffer = Written::default();
    let letters = EventCapture::<DeadLetter>::new();
    let fan = {
        let letters = letters.clone();
        let file = tower_cx::audit::JsonLinesDeadLetters::new(buffer.clone());
        dead_letter_fn(move |letter: DeadLetter| {
            let copy = DeadLetter {
                correlation_id: letter.correlation_id.clone(),
                attempts: letter.attempts,
                last_status: letter.last_status,
                error_code: letter.error_code.clone(),
                message: letter.message.clone(),
                request: None,
            };
            tower_cx::audit::DeadLetterSink::dead_letter(&file, letter);
            letters.push(copy);
        })
    };
    let service = ServiceBuilder::new()
        .layer(audit(&Events::default()).dead_letters(fan))
        .layer(retry().max_attempts(1))
        .service(Scripted::new([status(500)]));
    let mut sensitive = http::HeaderValue::from_static("opaque-sensitive");
    sensitive.set_sensitive(true);
    let request =
        Request::put("https://bob:hunter2@api.example.com/v1/x?access_token=SECRETTOK&page=2")
            .header("x-auth-token", "AUTHTOK")
            .header("api-key", "APIKEY")
            .header("x-custom", sensitive)
            .header("accept", "application/json")
            .body(Body::from("{}"))
            .unwrap();
    service.oneshot(request).await.unwrap();
    let text = buffer.text();
    for secret in [
        "hunter2",
        "SECRETTOK",
        "AUTHTOK",
        "APIKEY",
        "opaque-sensitive",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains("https://api.example.com/v1/x?access_token=[redacted]&page=2"),
        "{text}"
    );
    assert!(text.contains("accept"), "{text}");
    assert_eq!(letters.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_is_reported_as_cancelled() {
    let events = Events::default();
    let layer = audit(&events);
    let stats = layer.stats_handle();
    let service = layer.layer(Scripted::new([status(200).after(Duration::from_secs(60))]));
    let result = tokio::time::timeout(Duration::from_secs(1), service.oneshot(get())).await;
    assert!(result.is_err());
    assert_eq!(
        names(&events),
        [("request.started", None), ("request.finished", None)]
    );
    let end = finished(&events);
    assert_eq!(
        (&end["outcome"], &end["attempts"], &end["total_ms"]),
        (&json!("cancelled"), &json!(0), &json!(1000.0))
    );
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.cancelled, snapshot.requests), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_hint_the_gate_ignores_is_not_reported_as_closing_it() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(PriorityLimitLayer::new(4))
        .service(Scripted::new([status(429).header("retry-after", "3600")]));
    service.oneshot(get()).await.unwrap();
    assert!(!names(&events)
        .iter()
        .any(|(name, _)| *name == "gate.closed"));
}

#[tokio::test(start_paused = true)]
async fn time_queued_before_a_shed_counts_as_queue_time() {
    let events = Events::default();
    let service = ServiceBuilder::new()
        .layer(audit(&events))
        .layer(PriorityLimitLayer::new(1).max_queue_wait(Duration::from_secs(2)))
        .service(Scripted::new([status(200).after(Duration::from_secs(10))]));
    let holder = tokio::spawn(service.clone().oneshot(get()));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let err = service.oneshot(get()).await.unwrap_err();
    assert!(err.is::<tower_cx::error::Overloaded>());
    let end = finished(&events);
    assert_eq!(
        (&end["queue_ms"], &end["wire_ms"], &end["attempts"]),
        (&json!(2000.0), &json!(0.0), &json!(0))
    );
    holder.abort();
}

/// A writer that reports, when dropped, what it was given.
struct Reporting {
    data: Vec<u8>,
    done: std::sync::mpsc::Sender<Vec<u8>>,
}

impl Write for Reporting {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Reporting {
    fn drop(&mut self) {
        let _ = self.done.send(std::mem::take(&mut self.data));
    }
}

#[test]
fn dropping_the_json_lines_sink_writes_every_event_first() {
    use tower_cx::audit::AuditSink;
    let (done, report) = std::sync::mpsc::channel();
    let sink = JsonLinesSink::new(Reporting {
        data: Vec::new(),
        done,
    });
    let event = AuditEvent {
        ts: tower_cx::audit::Timestamp(std::time::SystemTime::UNIX_EPOCH),
        correlation_id: Arc::from("c"),
        attempt: None,
        kind: EventKind::Retry(RetryEventKind::AttemptStarted),
    };
    for _ in 0..10 {
        sink.record(&event);
    }
    drop(sink);
    let written = report
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer ends once the sink is gone");
    assert_eq!(String::from_utf8(written).unwrap().lines().count(), 10);
}

/// A sink that records nothing makes the layer skip building events; the
/// stats must not notice: the same traffic gives the same snapshot as with a
/// recording sink (successes, HTTP errors, retries, attempts,
/// cancellations and latency percentiles).
#[tokio::test(start_paused = true)]
async fn a_no_op_sink_keeps_the_same_stats_as_a_recording_one() {
    async fn run(layer: AuditLayer) -> tower_cx::audit::StatsSnapshot {
        let stats = layer.stats_handle();
        let service = ServiceBuilder::new()
            .layer(layer)
            .layer(retry().max_attempts(2))
            .layer(CircuitBreakerLayer::new())
            .service(Scripted::new([
                status(200).after(Duration::from_millis(10)),
                status(503),
                status(200).after(Duration::from_millis(30)),
                status(404),
                status(200).after(Duration::from_secs(60)),
            ]));
        for _ in 0..3 {
            service.clone().oneshot(get()).await.unwrap();
        }
        let cancelled =
            tokio::time::timeout(Duration::from_secs(1), service.clone().oneshot(get())).await;
        assert!(cancelled.is_err());
        stats.snapshot()
    }
    let recorded = run(audit(&Events::default())).await;
    let noop = run(AuditLayer::new(tower_cx::audit::NoopSink)).await;
    assert_eq!(noop, recorded);
    assert_eq!(
        (
            noop.requests,
            noop.successes,
            noop.http_errors,
            noop.cancelled
        ),
        (3, 2, 1, 1)
    );
    assert_eq!((noop.attempts, noop.retries), (5, 1));
    // 10 ms; 503, 500 ms backoff, 30 ms (530 ms, whose histogram bucket
    // starts at 529.92); 404 at once
    assert_eq!((noop.p50_ms, noop.p99_ms), (10.0, 529.92));
}

#[tokio::test(start_paused = true)]
async fn an_incoming_correlation_id_is_trimmed_and_sent_upstream_with_a_no_op_sink() {
    let upstream = Scripted::new([]);
    let service = AuditLayer::new(tower_cx::audit::NoopSink).layer(upstream.clone());
    let request = Request::get("https://x/")
        .header("x-request-id", " req-7 ")
        .header("inin-correlation-id", "other")
        .body(Body::empty())
        .unwrap();
    service.clone().oneshot(request).await.unwrap();
    service.clone().oneshot(get()).await.unwrap();
    service.oneshot(get()).await.unwrap();
    let seen = upstream.header_values("x-correlation-id");
    assert_eq!(seen[0].as_deref(), Some("req-7"));
    let (first, second) = (seen[1].clone().unwrap(), seen[2].clone().unwrap());
    for id in [&first, &second] {
        assert_eq!(id.len(), 36);
        let dashes: Vec<usize> = id.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }
    // same process prefix, a new counter
    assert_eq!(first[..19], second[..19]);
    assert_ne!(first, second);
}

#[tokio::test(start_paused = true)]
async fn an_id_arriving_in_the_correlation_header_itself_is_kept_and_comes_first() {
    let upstream = Scripted::new([]);
    let layer = AuditLayer::new(tower_cx::audit::NoopSink)
        .correlation_header(http::HeaderName::from_static("inin-correlation-id"));
    let service = layer.layer(upstream.clone());
    // a gateway's caller sends the header the gateway sends upstream
    let request = Request::get("https://x/")
        .header("x-request-id", "req-1")
        .header("inin-correlation-id", "caller-9")
        .body(Body::empty())
        .unwrap();
    service.clone().oneshot(request).await.unwrap();
    let with_default = AuditLayer::new(tower_cx::audit::NoopSink).layer(upstream.clone());
    let request = Request::get("https://x/")
        .header("x-correlation-id", "corr-abc")
        .body(Body::empty())
        .unwrap();
    with_default.oneshot(request).await.unwrap();
    assert_eq!(
        upstream.header_values("inin-correlation-id")[0].as_deref(),
        Some("caller-9")
    );
    assert_eq!(
        upstream.header_values("x-correlation-id")[1].as_deref(),
        Some("corr-abc")
    );
}

/// A `request.started` event with a URL of `len` bytes (as a sink might be
/// handed by a caller's own code; the audit layer cuts URLs at 2 KiB).
fn big_event(len: usize) -> AuditEvent {
    AuditEvent {
        ts: tower_cx::audit::Timestamp(std::time::SystemTime::UNIX_EPOCH),
        correlation_id: Arc::from("c"),
        attempt: None,
        kind: EventKind::Request(RequestEvent::Started {
            method: "GET".into(),
            url: format!("https://api.example.com/{}", "a".repeat(len)),
            body: None,
            priority: None,
        }),
    }
}

/// A writer that signals its first write, then blocks until released.
struct Stuck {
    entered: Option<std::sync::mpsc::Sender<()>>,
    release: std::sync::mpsc::Receiver<()>,
    lines: Arc<Mutex<usize>>,
}

impl Write for Stuck {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        *self.lines.lock().unwrap() += data.iter().filter(|b| **b == b'\n').count();
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stuck_json_lines_writer_queues_at_most_the_byte_cap() {
    use tower_cx::audit::AuditSink;
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let lines = Arc::new(Mutex::new(0));
    let event = big_event(60_000);
    let sink = JsonLinesSink::new(Stuck {
        entered: Some(entered_tx),
        release: release_rx,
        lines: lines.clone(),
    })
    .max_bytes(10 * event.approx_bytes());
    // the writer takes the first event and blocks writing it
    sink.record(&event);
    entered.recv_timeout(Duration::from_secs(30)).unwrap();
    for _ in 0..50 {
        sink.record(&event);
    }
    assert_eq!(sink.dropped(), 40, "10 events fit the byte cap, not 8192");
    release.send(()).unwrap();
    sink.flush();
    assert_eq!(*lines.lock().unwrap(), 11);
}

#[tokio::test(start_paused = true)]
async fn long_urls_are_cut_and_semicolon_parameters_redacted_in_events() {
    let events = Events::default();
    let service = audit(&events).layer(Scripted::new([]));
    let url = format!(
        "https://api.example.com/x?a=1;api_key=S3CR3T;b=2&q={}",
        "z".repeat(60_000)
    );
    service
        .oneshot(Request::get(url).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let events = events.all();
    let EventKind::Request(RequestEvent::Started { url, .. }) = &events[0].kind else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(url.len(), tower_cx::audit::MAX_EVENT_URL + "...[cut]".len());
    assert!(
        url.starts_with("https://api.example.com/x?a=1;api_key=[redacted];b=2&q=zzz"),
        "{}",
        &url[..80]
    );
    assert!(events.iter().all(|e| !e.to_json().contains("S3CR3T")));
}

/// An audit layer nothing reads (a sink that wants no events, no stats
/// handle taken, no dead-letter sink) still sends the correlation id
/// upstream, and costs nothing more: no context goes into the request.
/// Taking the stats handle later makes the services already built count
/// from then on.
#[tokio::test(start_paused = true)]
async fn an_audit_layer_nothing_reads_sends_the_id_and_keeps_no_context() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let seen = seen.clone();
        tower::service_fn(move |req: Request<Body>| {
            let id = req.headers().get("x-correlation-id").cloned();
            let context = req.extensions().get::<AuditRecord>().is_some();
            seen.lock().unwrap().push((id, context));
            std::future::ready(Ok::<_, BoxError>(Response::new(())))
        })
    };
    let layer = AuditLayer::new(NoopSink);
    let service = layer.layer(upstream);
    service.clone().oneshot(get()).await.unwrap();
    let stats = layer.stats_handle();
    service.clone().oneshot(get()).await.unwrap();
    let seen = seen.lock().unwrap();
    let first = seen[0].0.as_ref().expect("the id goes upstream");
    assert_eq!(first.len(), 36, "a generated id in UUID layout");
    assert!(!seen[0].1, "no context while nothing reads it");
    assert!(seen[1].0.is_some());
    assert!(seen[1].1, "a context once the stats are read");
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.requests, snapshot.successes), (1, 1));
}
