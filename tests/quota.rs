//! Quota exhaustion as a state of the limiter (a daily cap), and the
//! reserve of remaining quota kept for higher priorities, in paused time
//! with exact expectations.

#[path = "support/events.rs"]
mod events;
#[path = "support/instructed.rs"]
mod instructed;
#[path = "support/upstream.rs"]
mod upstream;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::{advance, Instant};
use tower::{Layer, ServiceExt};
use tower_cx::body::Body;
use tower_cx::error::{BoxError, OverloadReason, QuotaExhausted};
use tower_cx::hint::HintSource;
use tower_cx::priority::{LimiterEvent, Priority, PriorityLimitLayer};
use tower_cx::share::LocalPauseShare;

use events::EventCapture;
use instructed::{instructed, overload_reason, req, secs, settle, spawn, throttled_req};
use upstream::Scripted;
use Priority::{High, Low, Normal};

/// A request answered with `left` requests remaining in the window.
fn leaving(id: &str, priority: Priority, latency_ms: u64, left: u64) -> Request<Body> {
    let mut request = req(id, priority, latency_ms);
    let value = left.to_string().parse().unwrap();
    request.headers_mut().insert("x-remaining", value);
    request
}

fn ids(upstream: &Scripted) -> Vec<String> {
    let seen = upstream.seen().into_iter();
    seen.map(|s| s.header("x-id").unwrap_or_default().to_owned())
        .collect()
}

fn exhausted(result: Result<Response<()>, BoxError>) -> QuotaExhausted {
    *result
        .expect_err("refused")
        .downcast_ref::<QuotaExhausted>()
        .expect("a QuotaExhausted error")
}

#[tokio::test(start_paused = true)]
async fn a_daily_cap_fails_every_queued_and_new_request_at_once_until_its_time() {
    let start = Instant::now();
    let upstream = instructed();
    let events = EventCapture::<LimiterEvent>::new();
    let layer = PriorityLimitLayer::new(1).on_event(events.recorder());
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let cap = spawn(&service, throttled_req("cap", 100, "3600"));
    settle().await;
    let queued = [
        spawn(&service, req("high", High, 0)),
        spawn(&service, req("low", Low, 0)),
    ];
    settle().await;
    assert_eq!(handle.status().queued, [1, 0, 1]);
    advance(Duration::from_millis(100)).await;
    settle().await;
    // the cap's own answer comes back as it is
    let response = cap.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let until = start + Duration::from_millis(100) + secs(3600);
    for task in queued {
        assert!(task.is_finished(), "a waiter fails at once");
        assert_eq!(exhausted(task.await.unwrap()).until(), until);
    }
    assert_eq!(
        events.all().as_slice(),
        [LimiterEvent::QuotaExhausted {
            for_: secs(3600),
            source: Some(HintSource::RetryAfter),
        }]
    );
    // a new request an hour later, a nanosecond early, fails at once
    advance(secs(3600) - Duration::from_nanos(1)).await;
    assert_eq!(handle.quota_exhausted_until(), Some(until));
    assert_eq!(
        handle.status().quota_exhausted_for,
        Some(Duration::from_nanos(1))
    );
    let err = exhausted(service.clone().oneshot(req("early", High, 0)).await);
    assert_eq!(err.retry_after(), Duration::from_nanos(1));
    assert_eq!(ids(&upstream), ["cap"], "nothing sent before the time");
    // at its time the state ends
    advance(Duration::from_nanos(1)).await;
    assert_eq!(handle.quota_exhausted_until(), None);
    assert_eq!(handle.status().quota_exhausted_for, None);
    service.oneshot(req("after", Low, 0)).await.unwrap();
    assert_eq!(ids(&upstream), ["cap", "after"]);
}

#[tokio::test(start_paused = true)]
async fn a_cap_over_max_gate_exhausts_and_one_under_it_only_closes_the_gate() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(2).max_gate(secs(10));
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    service
        .clone()
        .oneshot(throttled_req("c1", 0, "10"))
        .await
        .unwrap();
    assert_eq!(handle.status().gate_closed_for, Some(secs(10)));
    assert_eq!(handle.status().quota_exhausted_for, None);
    advance(secs(10)).await;
    service
        .clone()
        .oneshot(throttled_req("c2", 0, "11"))
        .await
        .unwrap();
    assert_eq!(handle.status().gate_closed_for, None);
    assert_eq!(handle.status().quota_exhausted_for, Some(secs(11)));
    // a hint too far to represent is ignored: nothing freezes for ever
    advance(secs(11)).await;
    let absurd = throttled_req("c3", 0, "99999999999999999999");
    service.clone().oneshot(absurd).await.unwrap();
    assert_eq!(handle.status().quota_exhausted_for, None);
    service.oneshot(req("next", Normal, 0)).await.unwrap();
    assert_eq!(ids(&upstream), ["c1", "c2", "c3", "next"]);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_granted_before_the_cap_but_not_yet_sent_fails_too() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(1);
    let service = layer.layer(upstream.clone());
    // two requests in flight would need two permits: the second waits,
    // and is granted the permit the instant the cap's answer frees it
    let cap = spawn(&service, throttled_req("cap", 100, "600"));
    settle().await;
    let waiter = spawn(&service, req("waiter", High, 0));
    settle().await;
    advance(Duration::from_millis(100)).await;
    settle().await;
    cap.await.unwrap().unwrap();
    exhausted(waiter.await.unwrap());
    assert_eq!(ids(&upstream), ["cap"]);
}

#[tokio::test(start_paused = true)]
async fn a_cap_seen_by_one_limiter_exhausts_every_limiter_sharing_the_gate() {
    let start = Instant::now();
    let upstream = instructed();
    let share = LocalPauseShare::new();
    let events = EventCapture::<LimiterEvent>::new();
    let a = PriorityLimitLayer::new(4)
        .share_gate(share.clone())
        .layer(upstream.clone());
    let b_layer = PriorityLimitLayer::new(4)
        .share_gate(share.clone())
        .on_event(events.recorder());
    let b_handle = b_layer.handle();
    let b = b_layer.layer(upstream.clone());
    a.clone()
        .oneshot(throttled_req("a0", 0, "3600"))
        .await
        .unwrap();
    let until = start + secs(3600);
    assert_eq!(b_handle.quota_exhausted_until(), Some(until));
    assert_eq!(
        events.all().as_slice(),
        [LimiterEvent::QuotaExhausted {
            for_: secs(3600),
            source: None,
        }]
    );
    assert_eq!(
        exhausted(b.clone().oneshot(req("b0", High, 0)).await).until(),
        until
    );
    // a limiter built during it is exhausted until the same time
    advance(secs(600)).await;
    let c_layer = PriorityLimitLayer::new(4).share_gate(share);
    let c_handle = c_layer.handle();
    let c = c_layer.layer(upstream.clone());
    assert_eq!(c_handle.quota_exhausted_until(), Some(until));
    assert_eq!(
        exhausted(c.clone().oneshot(req("c0", High, 0)).await).until(),
        until
    );
    assert_eq!(ids(&upstream), ["a0"]);
    advance(secs(3000)).await;
    b.oneshot(req("b1", Normal, 0)).await.unwrap();
    c.oneshot(req("c1", Normal, 0)).await.unwrap();
    assert_eq!(ids(&upstream), ["a0", "b1", "c1"]);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_sheds_low_then_normal_and_never_high() {
    let upstream = instructed();
    let events = EventCapture::<LimiterEvent>::new();
    let layer = PriorityLimitLayer::new(4)
        .quota_reserve(20, 5)
        .on_event(events.recorder());
    let service = layer.layer(upstream.clone());
    let send = |request| service.clone().oneshot(request);
    // nothing advertised yet: nothing is shed
    send(leaving("l0", Low, 0, 21)).await.unwrap();
    // 21 left: more than the low reserve, low goes; 20 left then
    send(req("l1", Low, 0)).await.unwrap();
    assert_eq!(
        overload_reason(send(req("l2", Low, 0)).await),
        OverloadReason::QuotaReserve
    );
    send(leaving("n0", Normal, 0, 6)).await.unwrap();
    send(req("n1", Normal, 0)).await.unwrap();
    assert_eq!(
        overload_reason(send(req("n2", Normal, 0)).await),
        OverloadReason::QuotaReserve
    );
    assert_eq!(
        overload_reason(send(req("l3", Low, 0)).await),
        OverloadReason::QuotaReserve
    );
    // high goes down to the last request, and past it
    send(leaving("h0", High, 0, 1)).await.unwrap();
    send(req("h1", High, 0)).await.unwrap();
    send(req("h2", High, 0)).await.unwrap();
    assert_eq!(ids(&upstream), ["l0", "l1", "n0", "n1", "h0", "h1", "h2"]);
    let sheds: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, LimiterEvent::Shed { .. }))
        .collect();
    assert_eq!(
        sheds,
        [Low, Normal, Low].map(|priority| LimiterEvent::Shed {
            priority,
            reason: OverloadReason::QuotaReserve
        })
    );
    // the window resets 60 s after the last count: low goes again
    advance(secs(60)).await;
    send(req("l4", Low, 0)).await.unwrap();
    assert_eq!(ids(&upstream).last().unwrap(), "l4");
}

#[tokio::test(start_paused = true)]
async fn waiters_the_reserve_no_longer_lets_through_are_shed_at_once() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(1).quota_reserve(10, 3);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    // the answer to the request in flight says 10 are left
    let holder = spawn(&service, leaving("holder", High, 100, 10));
    settle().await;
    let waiters = [
        spawn(&service, req("low", Low, 0)),
        spawn(&service, req("normal", Normal, 0)),
        spawn(&service, req("high", High, 0)),
    ];
    settle().await;
    assert_eq!(handle.status().queued, [1, 1, 1]);
    advance(Duration::from_millis(100)).await;
    settle().await;
    holder.await.unwrap().unwrap();
    let [low, normal, high] = waiters;
    assert!(low.is_finished());
    assert_eq!(
        overload_reason(low.await.unwrap()),
        OverloadReason::QuotaReserve
    );
    high.await.unwrap().unwrap();
    normal.await.unwrap().unwrap();
    assert_eq!(ids(&upstream), ["holder", "high", "normal"]);
}

#[tokio::test(start_paused = true)]
async fn a_low_reserve_under_the_normal_one_is_raised_to_it() {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1)
        .quota_reserve(2, 5)
        .layer(upstream.clone());
    let send = |request| service.clone().oneshot(request);
    send(leaving("h0", High, 0, 5)).await.unwrap();
    // 5 left: at the normal reserve, so low (raised to 5) is shed too
    assert_eq!(
        overload_reason(send(req("l0", Low, 0)).await),
        OverloadReason::QuotaReserve
    );
    assert_eq!(
        overload_reason(send(req("n0", Normal, 0)).await),
        OverloadReason::QuotaReserve
    );
    assert_eq!(ids(&upstream), ["h0"]);
}
