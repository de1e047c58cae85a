//! The circuit breaker, in paused time with exact expectations.

#[path = "support/events.rs"]
mod events;
#[path = "support/upstream.rs"]
mod upstream;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::{advance, Instant};
use tower::{Layer, ServiceExt};
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::breaker::{
    BreakerEvent, BreakerState, CircuitBreaker, CircuitBreakerLayer, TransitionReason,
};
use tower_cx::error::{BoxError, CircuitOpen, OverloadReason, Overloaded};
use tower_cx::retry::{RetryBudget, RetryLayer};

use events::EventCapture;
use upstream::{error, status, timeout, Answer, Scripted};

/// A limiter below refused the request: it was never sent.
fn shed() -> Answer {
    error(|| Overloaded::new(OverloadReason::QueueFull).into())
}

type Events = EventCapture<BreakerEvent>;

/// 3 failures in a row trip it; open 5 s doubling up to 60 s, no jitter; the
/// failure-rate window off unless a test turns it on.
fn layer(events: &Events) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new()
        .consecutive_failures(3)
        .failure_rate(0.0, Duration::from_secs(30), 20)
        .open_duration(
            Backoff::exponential(secs(5))
                .max_delay(secs(60))
                .jitter(Jitter::None),
        )
        .on_event(events.recorder())
}

/// Only the failure rate trips it: half of at least 20 calls in 30 s.
fn half_failing_in_30s_of_20_calls() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new()
        .consecutive_failures(0)
        .failure_rate(0.5, secs(30), 20)
}

/// Two 503s, then a 503 with `Retry-After: value` (three failures in a
/// row trip the breaker of `layer`); then 200s.
fn tripping_with_hint(value: &str) -> Scripted {
    Scripted::new([
        status(503),
        status(503),
        status(503).header("retry-after", value),
    ])
}

fn get() -> Request<Body> {
    Request::get("http://127.0.0.1/")
        .body(Body::empty())
        .unwrap()
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

async fn send(service: &CircuitBreaker<Scripted>) -> Result<Response<()>, BoxError> {
    service.clone().oneshot(Request::new(Body::empty())).await
}

/// Sends `n` requests one after the other; each gets an answer.
async fn send_n(service: &CircuitBreaker<Scripted>, n: usize) {
    for _ in 0..n {
        send(service).await.unwrap();
    }
}

fn open_error(result: Result<Response<()>, BoxError>) -> CircuitOpen {
    let err = result.expect_err("the breaker refuses");
    err.downcast_ref::<CircuitOpen>()
        .expect("a CircuitOpen error")
        .clone()
}

fn reasons(events: &Events) -> Vec<(&'static str, &'static str, TransitionReason)> {
    events
        .all()
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.reason))
        .collect()
}

/// The failure-rate window is the one `failure_rate` sets: failures older
/// than it no longer count.
#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_no_longer_count() {
    let layer = CircuitBreakerLayer::new()
        .consecutive_failures(0)
        .failure_rate(0.5, secs(1), 4);
    let handle = layer.handle();
    let service = layer.layer(Scripted::new([
        status(502),
        status(502),
        status(502),
        status(200),
        status(502),
        status(502),
        status(200),
        status(502),
    ]));

    send_n(&service, 3).await; // 3 failures of 3 calls: under the minimum
    advance(secs(1)).await; // out of the window
    send_n(&service, 2).await; // 1 failure of 2 calls in the window
    assert_eq!(handle.state(), BreakerState::Closed);
    send_n(&service, 1).await; // 2 failures of 3 calls: still under 4 calls
    assert_eq!(handle.state(), BreakerState::Closed);
    send_n(&service, 1).await; // a success: 2 of 4 (a success never trips)
    assert_eq!(handle.state(), BreakerState::Closed);
    send_n(&service, 1).await; // 3 failures of 5 calls
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn every_transition_happens_at_the_exact_instant() {
    let events = Events::default();
    let layer = layer(&events);
    let handle = layer.handle();
    let upstream = Scripted::always(status(502));
    let service = layer.layer(upstream.clone());

    send(&service).await.unwrap();
    send(&service).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    send(&service).await.unwrap(); // third failure in a row
    assert_eq!(handle.state(), BreakerState::Open { retry_in: secs(5) });

    assert_eq!(open_error(send(&service).await).retry_in(), Some(secs(5)));
    advance(secs(5) - ms(1)).await;
    assert_eq!(open_error(send(&service).await).retry_in(), Some(ms(1)));
    assert_eq!(upstream.arrivals().len(), 3, "nothing sent while open");

    advance(ms(1)).await;
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    upstream.push([status(200)]);
    send(&service).await.unwrap(); // the probe succeeds
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(
        reasons(&events),
        [
            ("closed", "open", TransitionReason::ConsecutiveFailures),
            ("open", "half_open", TransitionReason::OpenElapsed),
            ("half_open", "closed", TransitionReason::ProbesSucceeded),
        ]
    );
    let counts = handle.counts();
    assert_eq!(counts.rejected, 2);
    assert_eq!(counts.trips, 1);
    assert_eq!((counts.successes, counts.failures), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let events = Events::default();
    let layer = layer(&events);
    let handle = layer.handle();
    let upstream = Scripted::new([
        status(500),
        status(500),
        status(200),
        status(500),
        status(500),
    ])
    .then(status(500));
    let service = layer.layer(upstream);
    send_n(&service, 5).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.counts().consecutive_failures, 2);
    send(&service).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn failure_ratio_needs_the_minimum_throughput() {
    let layer = half_failing_in_30s_of_20_calls();
    let handle = layer.handle();
    let upstream = Scripted::always(status(200));
    let service = layer.layer(upstream.clone());
    // 10 successes and 9 failures: 19 calls, under the minimum of 20
    send_n(&service, 10).await;
    upstream.push(vec![status(503); 10]);
    send_n(&service, 9).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    // the 20th call is a failure: 10 of 20 = 50 %
    send(&service).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn failure_ratio_window_slides() {
    let layer = half_failing_in_30s_of_20_calls();
    let handle = layer.handle();
    let upstream = Scripted::always(status(503));
    let service = layer.layer(upstream.clone());
    send_n(&service, 19).await;
    // 30 s later the first bucket has left the window: only new calls count
    advance(secs(30)).await;
    send_n(&service, 19).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    send(&service).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
    // 19 + 20 failures went out, all below or at the window's reach
    assert_eq!(upstream.arrivals().len(), 39);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_with_trips_in_a_row_and_resets_on_close() {
    let events = Events::default();
    let layer = layer(&events);
    let handle = layer.handle();
    let upstream = Scripted::always(status(503));
    let service = layer.layer(upstream.clone());
    send_n(&service, 3).await;
    assert_eq!(handle.state(), BreakerState::Open { retry_in: secs(5) });
    for expected in [10, 20, 40, 60, 60] {
        let BreakerState::Open { retry_in } = handle.state() else {
            panic!("open")
        };
        advance(retry_in).await;
        send(&service).await.unwrap(); // the probe fails
        assert_eq!(
            handle.state(),
            BreakerState::Open {
                retry_in: secs(expected)
            }
        );
    }
    advance(secs(60)).await;
    upstream.push([status(200)]);
    send(&service).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    send_n(&service, 3).await;
    assert_eq!(handle.state(), BreakerState::Open { retry_in: secs(5) });
}

#[tokio::test(start_paused = true)]
async fn a_server_hint_sets_the_open_duration() {
    let layer = layer(&Events::default());
    let handle = layer.handle();
    let upstream = tripping_with_hint("42");
    let service = layer.layer(upstream);
    send_n(&service, 3).await;
    assert_eq!(handle.state(), BreakerState::Open { retry_in: secs(42) });
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let layer = layer(&Events::default());
    let handle = layer.handle();
    let upstream = Scripted::always(status(500));
    let service = layer.layer(upstream.clone());
    send_n(&service, 3).await;
    advance(secs(5)).await;
    upstream.push([status(200).after(secs(10))]);
    let mut probe = tokio_test::task::spawn(send(&service));
    assert!(probe.poll().is_pending(), "the probe is in flight");
    // the single probe slot is taken: others fail fast
    assert_eq!(open_error(send(&service).await).retry_in(), Some(secs(1)));
    drop(probe);
    upstream.push([status(200)]);
    send(&service).await.unwrap(); // a new probe gets the slot
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn two_probes_and_two_successes_to_close() {
    let layer = layer(&Events::default()).half_open(2, 2);
    let handle = layer.handle();
    let upstream = Scripted::always(status(500));
    let service = layer.layer(upstream.clone());
    send_n(&service, 3).await;
    advance(secs(5)).await;
    upstream.push([status(200).after(secs(1)), status(200).after(secs(2))]);
    let a = tokio::spawn({
        let s = service.clone();
        async move { send(&s).await }
    });
    let b = tokio::spawn({
        let s = service.clone();
        async move { send(&s).await }
    });
    tokio::task::yield_now().await;
    assert!(send(&service).await.is_err(), "a third call is refused");
    a.await.unwrap().unwrap();
    assert_eq!(
        handle.state(),
        BreakerState::HalfOpen,
        "one success is not enough"
    );
    b.await.unwrap().unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn rate_limiting_is_not_breakage() {
    let layer = layer(&Events::default());
    let handle = layer.handle();
    let service = layer.layer(Scripted::always(status(429)));
    send_n(&service, 50).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.counts().failures, 0);

    let layer = layer_429();
    let handle = layer.handle();
    let service = layer.layer(Scripted::always(status(429)));
    send_n(&service, 3).await;
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

fn layer_429() -> CircuitBreakerLayer {
    layer(&Events::default()).count_429_as_failure(true)
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_501_and_not_sent_errors_do_not() {
    let layer = layer(&Events::default());
    let handle = layer.handle();
    let upstream = Scripted::new([
        timeout(),
        status(501),
        shed(),
        timeout(),
        status(404),
        timeout(),
    ]);
    let service = layer.layer(upstream);
    let mut states = Vec::new();
    for _ in 0..6 {
        let _ = send(&service).await;
        states.push(handle.counts().consecutive_failures);
    }
    // 501 and 404 are answers (successes for the breaker); not-sent counts nothing
    assert_eq!(states, [1, 0, 0, 1, 0, 1]);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_as_failures() {
    let layer = layer(&Events::default()).slow_call(secs(2));
    let handle = layer.handle();
    let upstream = Scripted::new([status(200).after(secs(2))]).then(status(200).after(secs(3)));
    let service = layer.layer(upstream);
    send(&service).await.unwrap();
    assert_eq!(
        handle.counts().failures,
        0,
        "exactly at the threshold is not slow"
    );
    send(&service).await.unwrap();
    send(&service).await.unwrap();
    send(&service).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn isolate_refuses_everything_until_reset() {
    let events = Events::default();
    let layer = layer(&events);
    let handle = layer.handle();
    let upstream = Scripted::always(status(200));
    let service = layer.layer(upstream.clone());
    handle.isolate();
    let err = open_error(send(&service).await);
    assert_eq!(err.retry_in(), None);
    advance(secs(3600)).await;
    assert_eq!(handle.state(), BreakerState::Isolated);
    handle.reset();
    send(&service).await.unwrap();
    assert_eq!(upstream.arrivals().len(), 1);
    assert_eq!(
        reasons(&events),
        [
            ("closed", "isolated", TransitionReason::Isolated),
            ("isolated", "closed", TransitionReason::Reset),
        ]
    );
}

/// A retry layer (constant 500 ms backoff, no budget, no hint jitter, at
/// most `attempts`) over a breaker that opens for 2 s on one failure, over
/// `upstream`; and a `GET` through it.
async fn through_retry_and_breaker(
    upstream: &Scripted,
    attempts: u32,
) -> Result<Response<()>, BoxError> {
    let breaker = CircuitBreakerLayer::new()
        .consecutive_failures(1)
        .open_duration(Backoff::constant(secs(2)));
    let retry = RetryLayer::new()
        .max_attempts(attempts)
        .backoff(Backoff::constant(ms(500)))
        .budget(RetryBudget::unlimited())
        .hint_jitter(0.0, Duration::ZERO);
    retry
        .layer(breaker.layer(upstream.clone()))
        .oneshot(get())
        .await
}

#[tokio::test(start_paused = true)]
async fn the_retry_layer_waits_for_the_breaker_probe_time() {
    let upstream = Scripted::new([status(503)]);
    let start = Instant::now();
    let response = through_retry_and_breaker(&upstream, 4).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // 503 at 0 opens the breaker for 2 s; the retry at 0.5 s is refused with
    // "1.5 s to the probe"; the retry layer waits exactly that
    assert_eq!(upstream.arrivals(), [secs(0), secs(2)]);
    assert_eq!(start.elapsed(), secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_isolated_breaker_is_final_for_the_retry_layer() {
    let breaker = CircuitBreakerLayer::new();
    breaker.handle().isolate();
    let upstream = Scripted::always(status(200));
    let service = RetryLayer::new().layer(breaker.layer(upstream.clone()));
    let start = Instant::now();
    let err = service.oneshot(get()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(upstream.arrivals().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_probe_from_an_earlier_round_does_not_free_a_slot_of_this_round() {
    let layer = layer(&Events::default()).half_open(2, 2);
    let handle = layer.handle();
    let upstream = Scripted::always(status(500));
    let service = layer.layer(upstream.clone());
    send_n(&service, 3).await;
    advance(secs(5)).await;
    // round 1: A is slow, B fails and reopens the breaker
    upstream.push([status(200).after(secs(100)), status(500)]);
    let a = tokio::spawn({
        let s = service.clone();
        async move { send(&s).await }
    });
    tokio::task::yield_now().await;
    send(&service).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
    // round 2: C and D take both slots
    advance(secs(10)).await;
    upstream.push([status(200).after(secs(100)), status(200).after(secs(100))]);
    let c = tokio::spawn({
        let s = service.clone();
        async move { send(&s).await }
    });
    let d = tokio::spawn({
        let s = service.clone();
        async move { send(&s).await }
    });
    tokio::task::yield_now().await;
    a.abort();
    let _ = a.await;
    // A belonged to round 1: its end frees nothing in round 2
    assert!(open_error(send(&service).await).retry_in().is_some());
    c.abort();
    d.abort();
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_open_duration_with_a_huge_hint_does_not_overflow() {
    let layer = layer(&Events::default()).max_open(Duration::MAX);
    let handle = layer.handle();
    let service = layer.layer(tripping_with_hint("99999999999999999999"));
    send_n(&service, 3).await;
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_trip_opens_every_breaker_sharing_the_state_for_as_long() {
    use tower_cx::share::LocalPauseShare;
    let share = LocalPauseShare::new();
    let (a_events, b_events): (Events, Events) = Default::default();
    let a = layer(&a_events)
        .share_state(share.clone())
        .layer(Scripted::always(status(503)));
    let b_layer = layer(&b_events).share_state(share.clone());
    let b_handle = b_layer.handle();
    let b_upstream = Scripted::always(status(200));
    let b = b_layer.layer(b_upstream.clone());
    // b joins the share with its first request
    assert_eq!(send(&b).await.unwrap().status(), StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(
            send(&a).await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        reasons(&b_events),
        [("closed", "open", TransitionReason::Shared)]
    );
    assert_eq!(open_error(send(&b).await).retry_in(), Some(secs(5)));
    assert_eq!(b_upstream.arrivals().len(), 1, "b failed fast");
    assert_eq!(b_handle.counts().trips, 0, "b did not trip by itself");
    // after the shared open time, b probes its (healthy) upstream itself
    advance(secs(5)).await;
    assert_eq!(send(&b).await.unwrap().status(), StatusCode::OK);
    assert_eq!(b_handle.state(), BreakerState::Closed);
    // and a shared open never travels back to the breaker that tripped
    assert_eq!(
        reasons(&a_events),
        [("closed", "open", TransitionReason::ConsecutiveFailures),]
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_breaker_does_not_use_up_attempts() {
    let upstream = Scripted::new([status(503)]);
    // two attempts: the 503, then the one after the breaker's wait; the
    // refusal in between was never sent and does not count
    let response = through_retry_and_breaker(&upstream, 2).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.arrivals(), [secs(0), secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_stays_open_still_ends_the_request() {
    // every probe fails: the breaker reopens each time
    let upstream = Scripted::always(status(503));
    let result = through_retry_and_breaker(&upstream, 3).await;
    // 3 real attempts (each a 503 that reopens the breaker), each followed
    // by a refused try that waits for the probe time
    assert_eq!(result.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.arrivals(), [secs(0), secs(2), secs(4)]);
}

#[tokio::test(start_paused = true)]
async fn a_shared_pause_is_capped_at_max_open() {
    use tower_cx::share::{LocalPauseShare, PauseShare};
    let share = LocalPauseShare::new();
    let layer = layer(&Events::default())
        .max_open(secs(300))
        .share_state(share.clone());
    let handle = layer.handle();
    let service = layer.layer(Scripted::new([]));
    // the first request subscribes the breaker to the share
    assert_eq!(send(&service).await.unwrap().status(), StatusCode::OK);
    // one bad message: ten years
    share.announce(0, secs(10 * 365 * 86_400));
    assert_eq!(
        handle.state(),
        BreakerState::Open {
            retry_in: secs(300)
        }
    );
    advance(secs(300)).await;
    assert_eq!(send(&service).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_http_date_hint_sets_the_open_duration_by_the_injected_clock() {
    use std::time::UNIX_EPOCH;
    use tower_cx::retry_after::FixedClock;
    // Tue, 14 Nov 2023 22:13:20 GMT; the hint is 90 s later
    let now = UNIX_EPOCH + secs(1_700_000_000);
    let layer = layer(&Events::default()).clock(FixedClock::new(now));
    let handle = layer.handle();
    let upstream = tripping_with_hint("Tue, 14 Nov 2023 22:14:50 GMT");
    let service = layer.layer(upstream);
    send_n(&service, 3).await;
    assert_eq!(handle.state(), BreakerState::Open { retry_in: secs(90) });
}

#[tokio::test(start_paused = true)]
async fn a_handle_taken_before_any_setting_watches_the_built_breaker() {
    let events = Events::default();
    let early = CircuitBreakerLayer::new();
    let first_handle = early.handle();
    let early = early.consecutive_failures(3);
    let middle_handle = early.handle();
    let layer = early
        .open_duration(Backoff::constant(secs(5)))
        .on_event(events.recorder())
        .failure_rate(0.0, secs(30), 20);
    let service = layer.layer(Scripted::always(status(503)));
    send_n(&service, 3).await;
    let open = BreakerState::Open { retry_in: secs(5) };
    assert_eq!(first_handle.state(), open);
    assert_eq!(middle_handle.state(), open);
    assert_eq!(first_handle.counts().trips, 1);
    // the handler set after the handles were taken hears their calls too
    first_handle.reset();
    assert_eq!(
        reasons(&events),
        [
            ("closed", "open", TransitionReason::ConsecutiveFailures),
            ("open", "closed", TransitionReason::Reset),
        ]
    );
    assert_eq!(middle_handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_has_not_sent_yet_sees_a_shared_trip_on_its_first_request() {
    use tower_cx::share::LocalPauseShare;
    let share = LocalPauseShare::new();
    let (a_events, b_events): (Events, Events) = Default::default();
    let a = layer(&a_events)
        .share_state(share.clone())
        .layer(Scripted::always(status(503)));
    let b_upstream = Scripted::always(status(200));
    let b = layer(&b_events)
        .share_state(share)
        .layer(b_upstream.clone());
    // a trips before b has sent anything
    send_n(&a, 3).await;
    advance(secs(2)).await;
    // b's very first request fails fast, for the rest of a's open time
    assert_eq!(open_error(send(&b).await).retry_in(), Some(secs(3)));
    assert_eq!(b_upstream.arrivals(), []);
    assert_eq!(
        reasons(&b_events),
        [("closed", "open", TransitionReason::Shared)]
    );
    advance(secs(3)).await;
    assert_eq!(send(&b).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_layer_that_has_not_made_a_service_yet_sees_a_shared_trip() {
    use tower_cx::share::LocalPauseShare;
    let share = LocalPauseShare::new();
    let a = layer(&Events::default())
        .share_state(share.clone())
        .layer(Scripted::always(status(503)));
    let b_layer = layer(&Events::default()).share_state(share);
    let b_handle = b_layer.handle();
    send_n(&a, 3).await;
    assert_eq!(b_handle.state(), BreakerState::Open { retry_in: secs(5) });
    let b = b_layer.layer(Scripted::always(status(200)));
    assert_eq!(open_error(send(&b).await).retry_in(), Some(secs(5)));
}
