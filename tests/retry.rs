//! The retry layer, end to end over a scripted service, in paused time.

#[path = "support/events.rs"]
mod events;
#[path = "support/upstream.rs"]
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_cx::backoff::{Backoff, Jitter, SharedRng};
use tower_cx::body::Body;
use tower_cx::classify::{Class, Classify, DefaultClassifier, FailureKind};
use tower_cx::error::{
    BoxError, CircuitOpen, OutcomeUnknown, OverloadReason, Overloaded, RequestNotSent, UnknownCause,
};
use tower_cx::observe::{RequestEvent, RequestOutcome};
use tower_cx::origin::Origin;
use tower_cx::retry::{
    DelaySource, GiveUpReason, RetryBudget, RetryEvent, RetryEventKind, RetryLayer, RetryOverride,
    IDEMPOTENCY_KEY,
};
use tower_cx::retry_after::{FixedClock, HintSource};

use events::EventCapture;
use upstream::{dropped, error, not_sent, ok, status, timeout, Scripted};

// ---------------------------------------------------------------- harness

/// An RNG that always yields the same word, so every unit sample is known:
/// `1 << 63` is exactly 0.5.
struct ConstRng(u64);

impl rand::TryRng for ConstRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0 >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill(0);
        Ok(())
    }
}

const HALF: u64 = 1 << 63;

type Events = EventCapture<RetryEvent>;

/// The layer under test: no jitter on backoff or hints, an unlimited budget,
/// and events recorded.
fn layer(events: &Events) -> RetryLayer {
    RetryLayer::new()
        .backoff(Backoff::exponential(ms(500)).jitter(Jitter::None))
        .hint_jitter(0.0, Duration::ZERO)
        .budget(RetryBudget::unlimited())
        .on_event(events.recorder())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

fn get() -> Request<Body> {
    Request::get("http://127.0.0.1/api")
        .body(Body::empty())
        .unwrap()
}

fn post() -> Request<Body> {
    Request::post("http://127.0.0.1/api")
        .body(Body::from("{\"a\":1}"))
        .unwrap()
}

async fn send<S>(service: S, request: Request<Body>) -> Result<Response<()>, BoxError>
where
    S: Service<Request<Body>, Response = Response<()>, Error = BoxError>,
{
    service.oneshot(request).await
}

fn gave_up(events: &Events) -> Vec<GiveUpReason> {
    events
        .all()
        .iter()
        .filter_map(|e| match &e.kind {
            RetryEventKind::GaveUp(reason) => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn scheduled(events: &Events) -> Vec<(Duration, DelaySource)> {
    events
        .all()
        .iter()
        .filter_map(|e| match &e.kind {
            RetryEventKind::RetryScheduled { delay, source } => Some((*delay, *source)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- backoff

#[tokio::test(start_paused = true)]
async fn retries_with_exact_exponential_delays_and_returns_success() {
    let events = Events::default();
    let upstream = Scripted::new([status(503), status(502), status(504), ok()]);
    let service = layer(&events).layer(upstream.clone());

    let response = send(service, get()).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [0, 500, 1500, 3500].map(ms));
    let events = events.all();
    // each attempt: started, finished; and a delay between two
    assert_eq!(events.len(), 11, "{events:#?}");
    assert_eq!(
        events[0],
        RetryEvent {
            attempt: 1,
            kind: RetryEventKind::AttemptStarted,
        }
    );
    assert_eq!(
        events[1],
        RetryEvent {
            attempt: 1,
            kind: RetryEventKind::AttemptFinished {
                status: Some(StatusCode::SERVICE_UNAVAILABLE),
                class: Class::Retryable(FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE)),
                latency: Duration::ZERO,
            },
        }
    );
    assert_eq!(
        events[2],
        RetryEvent {
            attempt: 1,
            kind: RetryEventKind::RetryScheduled {
                delay: ms(500),
                source: DelaySource::Backoff,
            },
        }
    );
    assert_eq!(
        events[9..],
        [
            RetryEvent {
                attempt: 4,
                kind: RetryEventKind::AttemptStarted,
            },
            RetryEvent {
                attempt: 4,
                kind: RetryEventKind::AttemptFinished {
                    status: Some(StatusCode::OK),
                    class: Class::Success,
                    latency: Duration::ZERO,
                },
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn each_jitter_mode_gives_its_exact_delays() {
    // With every unit sample at exactly 0.5, each mode's delays are known:
    let cases = [
        (Jitter::None, [0, 500, 1500, 3500]),
        // half of 500, 1000, 2000
        (Jitter::Full, [0, 250, 750, 1750]),
        // 3/4 of 500, 1000, 2000
        (Jitter::Equal, [0, 375, 1125, 2625]),
        // rand(500, 1500)=1000, rand(500, 3000)=1750, rand(500, 5250)=2875
        (Jitter::Decorrelated, [0, 1000, 2750, 5625]),
    ];
    for (jitter, expected) in cases {
        let events = Events::default();
        let upstream = Scripted::always(status(503));
        let service = layer(&events)
            .backoff(Backoff::exponential(ms(500)).jitter(jitter))
            .rng(SharedRng::from_rng(ConstRng(HALF)))
            .layer(upstream.clone());
        let response = send(service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(upstream.arrivals(), expected.map(ms), "{jitter:?}");
        assert_eq!(gave_up(&events), [GiveUpReason::AttemptsExhausted]);
    }
}

#[tokio::test(start_paused = true)]
async fn final_response_is_returned_as_a_response_after_the_last_attempt() {
    let events = Events::default();
    let upstream = Scripted::always(status(500));
    let service = layer(&events).max_attempts(2).layer(upstream.clone());
    let response = send(service, get())
        .await
        .expect("a response, not an error");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.arrivals(), [0, 500].map(ms));
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_and_the_last_error_is_returned() {
    let events = Events::default();
    let upstream = Scripted::always(timeout());
    let service = layer(&events).max_attempts(3).layer(upstream.clone());
    let err = send(service, get()).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(upstream.arrivals(), [0, 500, 1500].map(ms));
}

#[tokio::test(start_paused = true)]
async fn fatal_statuses_are_not_retried() {
    for code in [400, 401, 403, 404, 409, 422, 501, 505] {
        let events = Events::default();
        let upstream = Scripted::always(status(code));
        let service = layer(&events).layer(upstream.clone());
        let response = send(service, get()).await.unwrap();
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(upstream.arrivals().len(), 1, "{code}");
        assert_eq!(gave_up(&events), [GiveUpReason::Fatal], "{code}");
    }
}

/// A classifier for an API that answers "accepted, try again" with a 202.
struct AcceptedIsRetryable;

impl Classify for AcceptedIsRetryable {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Class {
        if status == StatusCode::ACCEPTED {
            Class::Retryable(FailureKind::Status(status))
        } else {
            DefaultClassifier.classify_response(status, headers)
        }
    }

    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Class {
        DefaultClassifier.classify_error(error)
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_on_successful_statuses_too() {
    // the default table's shortcut for statuses under 400 must not skip a
    // classifier of the user's, with or without anybody listening
    for listening in [false, true] {
        let events = Events::default();
        let upstream = Scripted::new([status(202), status(202), ok()]);
        let retry = if listening {
            layer(&events)
        } else {
            RetryLayer::new()
                .backoff(Backoff::exponential(ms(500)).jitter(Jitter::None))
                .budget(RetryBudget::unlimited())
        };
        let service = retry
            .classifier(AcceptedIsRetryable)
            .layer(upstream.clone());
        let response = send(service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "listening: {listening}");
        assert_eq!(upstream.arrivals(), [0, 500, 1500].map(ms));
    }
}

#[tokio::test(start_paused = true)]
async fn with_the_default_table_a_success_is_returned_at_once_and_reported() {
    let events = Events::default();
    let upstream = Scripted::new([status(204)]);
    let service = layer(&events).layer(upstream.clone());
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(upstream.arrivals(), [ms(0)]);
    // a listener still hears of the attempt
    let finished: Vec<_> = events
        .all()
        .iter()
        .filter_map(|e| match e.kind {
            RetryEventKind::AttemptFinished { status, class, .. } => Some((status, class)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [(Some(StatusCode::NO_CONTENT), Class::Success)]);
}

// ---------------------------------------------------------------- server hints

#[tokio::test(start_paused = true)]
async fn retry_after_wins_over_backoff_and_is_never_undercut() {
    let events = Events::default();
    let upstream = Scripted::new([status(429).header("retry-after", "7"), ok()]);
    // default hint spread: up to 10 % of the hint, at most 1 s; sample 0.5
    let service = layer(&events)
        .hint_jitter(0.1, secs(1))
        .rng(SharedRng::from_rng(ConstRng(HALF)))
        .layer(upstream.clone());
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [ms(0), ms(7350)]);
    assert_eq!(scheduled(&events), [(ms(7350), DelaySource::RetryAfter)]);
}

#[tokio::test(start_paused = true)]
async fn hint_spread_is_capped_at_its_maximum() {
    let events = Events::default();
    let upstream = Scripted::new([status(503).header("retry-after", "100"), ok()]);
    let service = layer(&events)
        .deadline(secs(300))
        .hint_jitter(0.1, secs(1))
        .rng(SharedRng::from_rng(ConstRng(HALF)))
        .layer(upstream.clone());
    send(service, get()).await.unwrap();
    // 10 % of 100 s would be 10 s of spread; capped at 1 s, sample 0.5
    assert_eq!(upstream.arrivals(), [ms(0), ms(100_500)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_conformance_through_the_layer() {
    let date = SystemTime::UNIX_EPOCH + secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
                                                           // (header value, clock reading, expected delay of the retry, hint used?)
    let cases: Vec<(&str, SystemTime, Duration, bool)> = vec![
        ("3", date, secs(3), true),
        (" \t3 \t", date, secs(3), true),
        ("0", date, secs(0), true),
        (
            "Sun, 06 Nov 1994 08:49:37 GMT",
            date - secs(5),
            secs(5),
            true,
        ),
        (
            "Sunday, 06-Nov-94 08:49:37 GMT",
            date - secs(6),
            secs(6),
            true,
        ),
        ("Sun Nov  6 08:49:37 1994", date - secs(7), secs(7), true),
        // a date in the past means now
        (
            "Sun, 06 Nov 1994 08:49:37 GMT",
            date + secs(60),
            secs(0),
            true,
        ),
        // malformed: ignored, backoff (500 ms) applies
        ("-1", date, ms(500), false),
        ("+1", date, ms(500), false),
        ("1.0", date, ms(500), false),
        ("\u{0661}", date, ms(500), false),
        ("", date, ms(500), false),
        ("soon", date, ms(500), false),
        ("1 0", date, ms(500), false),
    ];
    for (value, now, expected, hint_used) in cases {
        let events = Events::default();
        let upstream = Scripted::new([status(503).header("retry-after", value), ok()]);
        let service = layer(&events)
            .clock(FixedClock::new(now))
            .layer(upstream.clone());
        let response = send(service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value:?}");
        assert_eq!(upstream.arrivals(), [ms(0), expected], "{value:?}");
        let source = if hint_used {
            DelaySource::RetryAfter
        } else {
            DelaySource::Backoff
        };
        assert_eq!(scheduled(&events), [(expected, source)], "{value:?}");
        let ignored = events
            .all()
            .iter()
            .filter(|e| matches!(e.kind, RetryEventKind::HintIgnored(_)))
            .count();
        assert_eq!(ignored, usize::from(!hint_used), "{value:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn ratelimit_and_genesys_reset_headers_are_honoured() {
    let events = Events::default();
    let upstream = Scripted::new([
        status(429).header("ratelimit", "\"default\";r=0;t=3"),
        status(429)
            .header("inin-ratelimit-count", "300")
            .header("inin-ratelimit-allowed", "300")
            .header("inin-ratelimit-reset", "4"),
        ok(),
    ]);
    let service = layer(&events).layer(upstream.clone());
    send(service, get()).await.unwrap();
    assert_eq!(upstream.arrivals(), [0, 3, 7].map(secs));
    assert_eq!(
        scheduled(&events),
        [
            (secs(3), DelaySource::RateLimit),
            (secs(4), DelaySource::VendorHeader)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn hint_over_the_cap_returns_the_response_at_once() {
    let events = Events::default();
    let upstream = Scripted::new([status(429).header("retry-after", "181"), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let start = Instant::now();
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "181");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(upstream.arrivals().len(), 1);
    match gave_up(&events).as_slice() {
        [GiveUpReason::HintOverCap { hint, cap }] => {
            assert_eq!(hint.delay, secs(181));
            assert_eq!(hint.source, HintSource::RetryAfter);
            assert_eq!(*cap, secs(180));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn huge_retry_after_is_over_the_cap_not_an_overflow() {
    let events = Events::default();
    let upstream = Scripted::new([status(503).header("retry-after", "99999999999999999999999999")]);
    let service = layer(&events).layer(upstream.clone());
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(
        gave_up(&events).as_slice(),
        [GiveUpReason::HintOverCap { .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn hint_past_the_deadline_returns_the_response_at_once() {
    let events = Events::default();
    let upstream = Scripted::new([status(429).header("retry-after", "11"), ok()]);
    let service = layer(&events).deadline(secs(10)).layer(upstream.clone());
    let start = Instant::now();
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(
        gave_up(&events).as_slice(),
        [GiveUpReason::HintPastDeadline { .. }]
    ));
}

// ---------------------------------------------------------------- deadline and budget

#[tokio::test(start_paused = true)]
async fn deadline_ends_the_retry_loop() {
    let events = Events::default();
    let upstream = Scripted::always(status(503));
    let service = layer(&events)
        .max_attempts(100)
        .deadline(secs(10))
        .backoff(Backoff::constant(secs(4)))
        .layer(upstream.clone());
    let start = Instant::now();
    let response = send(service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // attempts at 0, 4, 8; one at 12 would pass the 10 s deadline
    assert_eq!(upstream.arrivals(), [0, 4, 8].map(secs));
    assert_eq!(start.elapsed(), secs(8));
    assert_eq!(gave_up(&events), [GiveUpReason::DeadlineReached]);
}

#[tokio::test(start_paused = true)]
async fn budget_caps_retries_under_sustained_failure() {
    let events = Events::default();
    let upstream = Scripted::always(status(503));
    // 20 % of first attempts plus 10/s over 10 s: (1000 + 10*10*5)/5 = 300 retries
    let service = layer(&events)
        .budget(RetryBudget::new(secs(10), 10, 0.2).unwrap())
        .layer(upstream.clone());
    let requests = (0..1000).map(|_| send(service.clone(), get()));
    let responses = futures_join_all(requests).await;
    assert!(responses
        .iter()
        .all(|r| r.as_ref().unwrap().status() == StatusCode::SERVICE_UNAVAILABLE));
    let total = upstream.arrivals().len();
    assert_eq!(total, 1000 + 300, "unlimited would be 4000");
    assert_eq!(scheduled(&events).len(), 300);
    let exhausted = gave_up(&events)
        .iter()
        .filter(|r| **r == GiveUpReason::BudgetExhausted)
        .count();
    // 300 first retries fail again and find the budget empty; 700 never got one
    assert_eq!(exhausted, 1000);
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------- side effects
//
// One test per row of the rule in the `retry` module docs: what may be sent
// twice, by method, failure and origin.

/// The origin of `post()` and `get()`.
fn origin() -> Origin {
    Origin::parse("http://127.0.0.1").unwrap()
}

fn unknown(result: Result<Response<()>, BoxError>) -> OutcomeUnknown {
    let err = result.expect_err("an unknown outcome is an error");
    match err.downcast::<OutcomeUnknown>() {
        Ok(unknown) => *unknown,
        Err(other) => panic!("not an OutcomeUnknown: {other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_answered_500_is_sent_once_and_its_outcome_is_unknown() {
    let events = Events::default();
    let upstream = Scripted::new([status(500).header("x-request-id", "r-1")]);
    let service = layer(&events).layer(upstream.clone());
    let unknown = unknown(send(service, post()).await);
    assert_eq!(unknown.attempt(), 1);
    assert_eq!(
        unknown.cause(),
        UnknownCause::Status(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(unknown.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(unknown.headers()["x-request-id"], "r-1", "headers kept");
    let response = unknown.take_response::<()>().expect("the response is kept");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.arrivals(), [ms(0)], "never sent again");
    assert_eq!(gave_up(&events), [GiveUpReason::OutcomeUnknown]);
}

#[tokio::test(start_paused = true)]
async fn every_failure_that_proves_nothing_leaves_a_post_or_patch_unknown() {
    let cases = [
        (
            status(500),
            UnknownCause::Status(StatusCode::INTERNAL_SERVER_ERROR),
        ),
        (status(502), UnknownCause::Status(StatusCode::BAD_GATEWAY)),
        (
            status(504),
            UnknownCause::Status(StatusCode::GATEWAY_TIMEOUT),
        ),
        (
            status(503),
            UnknownCause::Status(StatusCode::SERVICE_UNAVAILABLE),
        ),
        (
            status(408),
            UnknownCause::Status(StatusCode::REQUEST_TIMEOUT),
        ),
        (timeout(), UnknownCause::Timeout),
        (dropped(), UnknownCause::ConnectionLost),
    ];
    for method in [Method::POST, Method::PATCH] {
        for (answer, cause) in cases.clone() {
            let events = Events::default();
            let upstream = Scripted::new([answer]);
            let service = layer(&events).layer(upstream.clone());
            let mut request = post();
            *request.method_mut() = method.clone();
            let unknown = unknown(send(service, request).await);
            assert_eq!(unknown.cause(), cause, "{method} {cause:?}");
            assert_eq!(upstream.arrivals().len(), 1, "{method} {cause:?}");
            assert_eq!(gave_up(&events), [GiveUpReason::OutcomeUnknown]);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_keeps_the_error_as_its_source() {
    let events = Events::default();
    let upstream = Scripted::new([dropped()]);
    let service = layer(&events).layer(upstream.clone());
    let err = send(service, post()).await.unwrap_err();
    let unknown = err.downcast_ref::<OutcomeUnknown>().unwrap();
    let source = std::error::Error::source(unknown).expect("the error is kept");
    let io = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("may have been applied"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_same_failures_are_retried_for_an_idempotent_method() {
    for answer in [status(500), status(502), status(504), timeout(), dropped()] {
        let events = Events::default();
        let upstream = Scripted::new([answer, ok()]);
        let service = layer(&events).layer(upstream.clone());
        let response = send(service, get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(upstream.arrivals(), [ms(0), ms(500)]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_answered_429_is_retried_after_the_hint() {
    let events = Events::default();
    let upstream = Scripted::new([status(429).header("retry-after", "2"), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let response = send(service, post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [secs(0), secs(2)]);
    assert!(gave_up(&events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_post_answered_503_with_retry_after_is_retried_and_without_is_not() {
    let events = Events::default();
    let upstream = Scripted::new([status(503).header("retry-after", "3"), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let response = send(service, post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [secs(0), secs(3)]);

    // a 503 with only the Genesys rate headers proves nothing
    let upstream = Scripted::new([status(503).header("inin-ratelimit-reset", "3"), ok()]);
    let service = layer(&events).layer(upstream.clone());
    unknown(send(service, post()).await);
    assert_eq!(upstream.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn refusals_by_this_crates_layers_make_a_post_retryable() {
    let refusals: [fn() -> BoxError; 3] = [
        || RequestNotSent::new("connection refused").into(),
        || Overloaded::new(OverloadReason::QueueTimeout).into(),
        || CircuitOpen::new(Some(ms(700))).into(),
    ];
    for refusal in refusals {
        let events = Events::default();
        let upstream = Scripted::new([error(refusal), ok()]);
        let service = layer(&events).layer(upstream.clone());
        let response = send(service, post()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(upstream.arrivals().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_that_was_provably_not_sent_is_retried() {
    let events = Events::default();
    let upstream = Scripted::new([not_sent(), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let response = send(service, post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [0, 500].map(ms));
}

#[tokio::test(start_paused = true)]
async fn a_post_declared_idempotent_is_retried_after_any_failure() {
    for answer in [status(500), timeout(), dropped()] {
        let events = Events::default();
        let upstream = Scripted::new([answer, ok()]);
        let service = layer(&events).layer(upstream.clone());
        let mut request = post();
        request
            .extensions_mut()
            .insert(RetryOverride::new().idempotent(true));
        let response = send(service, request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(upstream.arrivals().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_alone_unlocks_nothing_when_the_origin_does_not_honour_keys() {
    let events = Events::default();
    let upstream = Scripted::new([status(500), ok()]);
    let service = layer(&events)
        .auto_idempotency_key(true)
        // another origin honours keys; this one is not declared
        .idempotency_keys_honoured_by(Origin::parse("https://api.example.com").unwrap())
        .layer(upstream.clone());
    unknown(send(service, post()).await);
    assert_eq!(upstream.arrivals().len(), 1);
    assert!(upstream.seen()[0].headers.contains_key(IDEMPOTENCY_KEY));
}

#[tokio::test(start_paused = true)]
async fn an_origin_that_honours_keys_gets_keyed_posts_again_with_the_same_key() {
    let events = Events::default();
    let upstream = Scripted::new([status(500), dropped(), timeout(), ok(), ok()]);
    let service = layer(&events)
        .auto_idempotency_key(true)
        .idempotency_keys_honoured_by(origin())
        .layer(upstream.clone());
    let response = send(service.clone(), post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    send(service, post()).await.unwrap();

    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    let keys: Vec<&HeaderValue> = seen.iter().map(|s| &s.headers[IDEMPOTENCY_KEY]).collect();
    assert!(
        keys[..4].iter().all(|k| *k == keys[0]),
        "one key per request"
    );
    assert_ne!(keys[3], keys[4], "a new logical request gets a new key");
    assert_eq!(keys[0].len(), 36);
    assert!(seen.iter().all(|s| s.method == Method::POST));

    // a keyed POST without automatic keys: the caller's key is kept
    let upstream = Scripted::new([status(502), ok()]);
    let service = layer(&events)
        .auto_idempotency_key(true)
        .idempotency_keys_honoured_by(origin())
        .layer(upstream.clone());
    let mut request = post();
    request
        .headers_mut()
        .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("order-42"));
    send(service, request).await.unwrap();
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.headers[IDEMPOTENCY_KEY] == "order-42"));

    // an honouring origin does not make an unkeyed POST repeatable
    let upstream = Scripted::new([status(500), ok()]);
    let service = layer(&events)
        .idempotency_keys_honoured_by(origin())
        .layer(upstream.clone());
    unknown(send(service, post()).await);
    assert_eq!(upstream.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn keyed_409_is_retried_for_an_honouring_origin_and_422_never() {
    let events = Events::default();
    let honouring = || {
        layer(&events)
            .auto_idempotency_key(true)
            .idempotency_keys_honoured_by(origin())
    };
    let upstream = Scripted::new([status(409), ok()]);
    let service = honouring().layer(upstream.clone());
    assert_eq!(
        send(service, post()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(upstream.arrivals().len(), 2);

    let upstream = Scripted::new([status(422), ok()]);
    let service = honouring().layer(upstream.clone());
    assert_eq!(
        send(service, post()).await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(upstream.arrivals().len(), 1);

    // keyed, but the origin is not known to honour keys: a 409 is final
    let upstream = Scripted::new([status(409), ok()]);
    let service = layer(&events)
        .auto_idempotency_key(true)
        .layer(upstream.clone());
    assert_eq!(
        send(service, post()).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(upstream.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_names_the_attempt_it_came_from() {
    let events = Events::default();
    let upstream = Scripted::new([status(429).header("retry-after", "1"), status(504)]);
    let service = layer(&events).layer(upstream.clone());
    let unknown = unknown(send(service, post()).await);
    assert_eq!(unknown.attempt(), 2);
    assert_eq!(
        unknown.cause(),
        UnknownCause::Status(StatusCode::GATEWAY_TIMEOUT)
    );
    assert_eq!(upstream.arrivals(), [secs(0), secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_comes_whatever_attempts_remain_and_is_final_above() {
    // one attempt only: still unknown, not a plain 500
    let events = Events::default();
    let upstream = Scripted::new([status(500)]);
    let service = layer(&events).max_attempts(1).layer(upstream.clone());
    unknown(send(service, post()).await);

    // a retry layer above takes it as final
    let upstream = Scripted::new([status(500), ok()]);
    let inner = layer(&events).layer(upstream.clone());
    let outer = layer(&events).auto_idempotency_key(true).layer(inner);
    let unknown = unknown(send(outer, post()).await);
    assert_eq!(unknown.attempt(), 1);
    assert_eq!(upstream.arrivals().len(), 1);
    assert_eq!(
        DefaultClassifier.classify_error(&unknown),
        Class::Fatal(FailureKind::OutcomeUnknown)
    );
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_sent_once_and_never_retried() {
    let events = Events::default();
    let upstream = Scripted::always(status(503));
    let service = layer(&events).layer(upstream.clone());
    let body = Body::from_stream(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
    let request = Request::put("http://127.0.0.1/api").body(body).unwrap();
    let response = send(service, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.arrivals().len(), 1);
    assert_eq!(gave_up(&events), [GiveUpReason::BodyNotReplayable]);
}

#[tokio::test(start_paused = true)]
async fn per_request_override_changes_the_policy_for_that_request_only() {
    let events = Events::default();
    let upstream = Scripted::always(status(503));
    let service = layer(&events).layer(upstream.clone());

    let mut bulk = get();
    bulk.extensions_mut().insert(
        RetryOverride::new()
            .max_attempts(2)
            .backoff(Backoff::constant(secs(9))),
    );
    send(service.clone(), bulk).await.unwrap();
    assert_eq!(upstream.arrivals(), [secs(0), secs(9)]);

    let mut once = get();
    once.extensions_mut().insert(RetryOverride::no_retry());
    send(service.clone(), once).await.unwrap();
    assert_eq!(upstream.arrivals().len(), 3);

    // the next request has the layer's policy again: 4 attempts
    send(service, get()).await.unwrap();
    assert_eq!(upstream.arrivals().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_backoff_cancels_the_request() {
    let events = Events::default();
    let upstream = Scripted::always(status(503));
    let service = layer(&events).layer(upstream.clone());
    let mut future = tokio_test::task::spawn(send(service, get()));
    assert!(future.poll().is_pending(), "sleeping in backoff");
    assert_eq!(upstream.arrivals().len(), 1);
    drop(future);
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(upstream.arrivals().len(), 1, "nothing sent after the drop");
}

// ---------------------------------------------------------------- a real client

#[tokio::test(start_paused = true)]
async fn a_refused_connection_makes_even_a_post_retryable() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    // a loopback port with nothing listening on it
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let events = Events::default();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = layer(&events)
        .backoff(Backoff::constant(ms(10)))
        .layer(client);
    let request = Request::post(format!("http://{addr}/orders"))
        .body(Body::from("{}"))
        .unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    let err = err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .expect("the client's own error is returned");
    assert!(err.is_connect());
    let finished: Vec<Class> = events
        .all()
        .iter()
        .filter_map(|e| match e.kind {
            RetryEventKind::AttemptFinished { class, .. } => Some(class),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![Class::Retryable(FailureKind::Connect); 4]);
    assert_eq!(gave_up(&events), [GiveUpReason::AttemptsExhausted]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_dropped_after_the_post_was_written_is_an_unknown_outcome() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::AsyncReadExt;

    // a server that reads each request whole, then closes without answering
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(0u32));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"{\"order\":7}") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            *counter.lock().unwrap() += 1;
            drop(socket);
        }
    });

    let events = Events::default();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = layer(&events).layer(client);
    let request = Request::post(format!("http://{addr}/orders"))
        .body(Body::from("{\"order\":7}"))
        .unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    let unknown = err.downcast_ref::<OutcomeUnknown>().expect("typed");
    assert_eq!(unknown.cause(), UnknownCause::ConnectionLost);
    assert_eq!(unknown.attempt(), 1);
    assert_eq!(*received.lock().unwrap(), 1, "sent once, never again");
    assert_eq!(gave_up(&events), [GiveUpReason::OutcomeUnknown]);
}

#[tokio::test(start_paused = true)]
async fn override_can_declare_a_post_idempotent_or_a_get_not() {
    let events = Events::default();
    let upstream = Scripted::new([status(503), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let mut token_request = post();
    token_request
        .extensions_mut()
        .insert(RetryOverride::new().idempotent(true));
    let response = send(service.clone(), token_request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals().len(), 2);

    let upstream = Scripted::new([status(503), ok()]);
    let service = layer(&events).layer(upstream.clone());
    let mut unsafe_get = get();
    unsafe_get
        .extensions_mut()
        .insert(RetryOverride::new().idempotent(false));
    // declared not idempotent: a 503 without Retry-After proves nothing
    let unknown = unknown(send(service, unsafe_get).await);
    assert_eq!(
        unknown.cause(),
        UnknownCause::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(upstream.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_held_in_a_limiter_below_is_never_sent_past_the_deadline() {
    use tower_cx::priority::PriorityLimitLayer;
    let upstream = Scripted::answering(|seen| match seen.uri.path() {
        "/slow" => ok().after(secs(10)),
        _ => ok(),
    });
    let to = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let deadline_error = |result: Result<Response<()>, BoxError>| {
        let error = result.expect_err("failed at its deadline");
        let exceeded = error
            .downcast_ref::<tower_cx::error::RetryDeadlineExceeded>()
            .unwrap_or_else(|| panic!("a typed deadline error, not {error}"))
            .attempts();
        exceeded
    };

    // queued behind a request that holds the only permit for 10 s
    let events = Events::default();
    let limiter = PriorityLimitLayer::new(1);
    let handle = limiter.handle();
    let service = layer(&events)
        .deadline(secs(3))
        .layer(limiter.layer(upstream.clone()));
    let slow = tokio::spawn(send(service.clone(), to("/slow")));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let queued = send(service.clone(), to("/quick")).await;
    assert_eq!(start.elapsed(), secs(3), "given up at its deadline");
    // (none of its attempts was sent)
    assert_eq!(deadline_error(queued), 0);
    assert_eq!(gave_up(&events), [GiveUpReason::DeadlineReached]);
    assert_eq!(handle.status().queued, [0, 0, 0], "it left the queue");
    slow.await.unwrap().unwrap();
    assert_eq!(upstream.arrivals(), [secs(0)], "only the slow one was sent");

    // held by a rate gate another request's 429 closed for 8 s
    let upstream = Scripted::answering(|seen| match seen.uri.path() {
        "/limited" => status(429).header("retry-after", "8"),
        _ => ok(),
    });
    let gated = PriorityLimitLayer::new(4).layer(upstream.clone());
    let limited = send(gated.clone(), to("/limited")).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let hurried = layer(&Events::default())
        .deadline(secs(3))
        .layer(gated.clone());
    // the gate opens past the 3 s deadline: refused at once, saying when,
    // never slept on
    let start = Instant::now();
    let held = send(hurried, to("/next")).await.expect_err("refused");
    assert_eq!(start.elapsed(), secs(0));
    assert_eq!(gate_refusal(&held), secs(8));
    assert_eq!(upstream.arrivals(), [secs(0)], "nothing sent into the wait");
    // with a deadline past the gate's time, the request waits for it
    let patient = layer(&Events::default()).deadline(secs(30)).layer(gated);
    send(patient, to("/next")).await.unwrap();
    assert_eq!(upstream.arrivals(), [secs(0), secs(8)]);
}

/// `error` is the limiter's refusal for a rate gate that opens past the
/// deadline: when it opens.
fn gate_refusal(error: &BoxError) -> Duration {
    let refused = error
        .downcast_ref::<tower_cx::error::Overloaded>()
        .unwrap_or_else(|| panic!("the limiter's refusal, not {error}"));
    assert_eq!(
        refused.reason(),
        tower_cx::error::OverloadReason::GateClosed
    );
    refused.retry_in().expect("when the gate opens")
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_refused_when_the_gate_closes_past_its_deadline() {
    use tower_cx::priority::PriorityLimitLayer;
    let upstream = Scripted::answering(|seen| match seen.uri.path() {
        "/first" => status(429)
            .header("retry-after", "10")
            .after(Duration::from_millis(1500)),
        _ => ok(),
    });
    let to = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let limiter = PriorityLimitLayer::new(1);
    let service = layer(&Events::default())
        .deadline(secs(5))
        .layer(limiter.layer(upstream.clone()));
    let first = tokio::spawn(send(service.clone(), to("/first")));
    tokio::task::yield_now().await;
    // queued behind the first; its 429 closes the gate for 10 s, past the
    // 5 s deadline: refused then, not at the deadline
    let start = Instant::now();
    let error = send(service, to("/queued")).await.expect_err("refused");
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(gate_refusal(&error), secs(10));
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.arrivals(), [secs(0)], "nothing sent into the wait");
}

#[tokio::test(start_paused = true)]
async fn a_request_refused_for_a_gate_past_its_deadline_takes_no_place_from_a_waiter() {
    use tower_cx::priority::{Priority, PriorityLimitLayer};
    let upstream = Scripted::answering(|seen| match seen.uri.path() {
        "/limited" => status(429).header("retry-after", "10"),
        _ => ok(),
    });
    let limiter = PriorityLimitLayer::new(1).max_queue(1);
    let handle = limiter.handle();
    let gated = limiter.layer(upstream.clone());
    let to = |path: &str, priority| {
        let mut request = Request::get(path).body(Body::empty()).unwrap();
        request.extensions_mut().insert(priority);
        request
    };
    send(gated.clone(), to("/limited", Priority::Normal))
        .await
        .unwrap();
    // a patient low request waits for the gate in the only place
    let patient = layer(&Events::default())
        .deadline(secs(60))
        .layer(gated.clone());
    let low = tokio::spawn(send(patient, to("/low", Priority::Low)));
    tokio::task::yield_now().await;
    assert_eq!(handle.status().queued, [1, 0, 0]);
    // a hurried high one is refused, and evicts nobody
    let hurried = layer(&Events::default()).deadline(secs(2)).layer(gated);
    let error = send(hurried, to("/high", Priority::High))
        .await
        .unwrap_err();
    assert_eq!(gate_refusal(&error), secs(10));
    assert_eq!(
        handle.status().queued,
        [1, 0, 0],
        "the low one keeps its place"
    );
    low.await.unwrap().unwrap();
    assert_eq!(upstream.arrivals(), [secs(0), secs(10)]);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline_while_waiting_for_readiness() {
    let events = Events::default();
    let upstream = Scripted::new([status(503)]);
    let limited = tower::limit::ConcurrencyLimit::new(upstream.clone(), 1);
    let mut blocker = limited.clone();
    let service = layer(&events)
        .deadline(secs(1))
        .backoff(Backoff::constant(ms(100)))
        .layer(limited);
    let start = Instant::now();
    let task = tokio::spawn(send(service, get()));
    // during the backoff, someone else takes the only slot and keeps it
    tokio::time::sleep(ms(50)).await;
    std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut blocker, cx))
        .await
        .unwrap();
    let err = task.await.unwrap().unwrap_err();
    let err = err
        .downcast_ref::<tower_cx::error::RetryDeadlineExceeded>()
        .expect("a typed deadline error");
    assert_eq!(err.attempts(), 1);
    assert_eq!(start.elapsed(), secs(1), "given up exactly at the deadline");
    assert_eq!(upstream.arrivals(), [ms(0)], "the retry was never sent");
    assert_eq!(
        gave_up(&events),
        [GiveUpReason::DeadlineReached],
        "reported as a deadline"
    );
    drop(blocker);
}

// ---------------------------------------------------------------- the event stream

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_is_recorded_and_dead_lettered_by_the_audit_layer() {
    use tower_cx::audit::{AuditEvent, AuditLayer, DeadLetter, EventKind};

    let events = EventCapture::<AuditEvent>::new();
    let letters = EventCapture::<DeadLetter>::new();
    let upstream = Scripted::new([status(500)]);
    let service = AuditLayer::new(events.sink())
        .dead_letters(letters.dead_letters())
        .layer(layer(&Events::default()).layer(upstream.clone()));
    let err = send(service, post()).await.unwrap_err();
    assert!(OutcomeUnknown::find(err.as_ref()).is_some());
    assert_eq!(upstream.arrivals().len(), 1);

    let events = events.all();
    let gave_up: Vec<&GiveUpReason> = events
        .iter()
        .map(|e| &e.kind)
        .filter_map(|k| match k {
            EventKind::Retry(RetryEventKind::GaveUp(reason)) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(gave_up, [&GiveUpReason::OutcomeUnknown]);
    let finished = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Request(RequestEvent::Finished {
                outcome,
                error_kind,
                attempts,
                ..
            }) => Some((*outcome, *error_kind, *attempts)),
            _ => None,
        })
        .expect("request.finished");
    assert_eq!(
        finished,
        (RequestOutcome::Error, Some(FailureKind::OutcomeUnknown), 1)
    );

    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error_code, "outcome_unknown");
    assert!(letters[0].message.contains("may have been applied"));
    assert!(
        letters[0].request.is_some(),
        "kept for an operator to replay"
    );
}
