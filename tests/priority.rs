//! The priority limiter and its rate gate, in paused time with exact
//! expectations.

#[path = "support/events.rs"]
mod events;
#[path = "support/instructed.rs"]
mod instructed;
#[path = "support/upstream.rs"]
mod upstream;

use std::time::Duration;

use http::{HeaderName, Request, StatusCode};
use tokio::time::{advance, Instant};
use tower::{Layer, ServiceExt};
use tower_cx::body::Body;
use tower_cx::error::OverloadReason;
use tower_cx::priority::{LimiterEvent, Priority, PriorityFromHeaderLayer, PriorityLimitLayer};

use events::EventCapture;
use instructed::{instructed, overload_reason, req, secs, settle, spawn, throttled_req};
use upstream::{ok, Scripted};

/// The `x-id` of each request the upstream saw, in order.
fn order(upstream: &Scripted) -> Vec<String> {
    arrivals(upstream).into_iter().map(|(id, _)| id).collect()
}

/// `(x-id, arrival time)` of each request the upstream saw.
fn arrivals(upstream: &Scripted) -> Vec<(String, Duration)> {
    let seen = upstream.seen().into_iter();
    seen.map(|s| (s.header("x-id").unwrap_or_default().to_owned(), s.at))
        .collect()
}

use Priority::{High, Low, Normal};

#[tokio::test(start_paused = true)]
async fn waiters_are_dispatched_by_priority_then_arrival() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(1).aging(None);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let holder = spawn(&service, req("holder", Normal, 1000));
    settle().await;
    let mut tasks = vec![holder];
    for (id, priority) in [
        ("L1", Low),
        ("N1", Normal),
        ("H1", High),
        ("L2", Low),
        ("H2", High),
        ("N2", Normal),
    ] {
        tasks.push(spawn(&service, req(id, priority, 0)));
        settle().await;
    }
    assert_eq!(handle.status().queued, [2, 2, 2]);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        order(&upstream),
        ["holder", "H1", "H2", "N1", "N2", "L1", "L2"]
    );
    let status = handle.status();
    assert_eq!(
        (status.in_flight, status.available, status.queued),
        (0, 1, [0, 0, 0])
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_evicts_the_newest_lower_priority_waiter_or_rejects() {
    let upstream = instructed();
    let shed = EventCapture::new();
    let layer = {
        let shed = shed.clone();
        PriorityLimitLayer::new(1)
            .max_queue(2)
            .aging(None)
            .on_event(move |e| {
                if let LimiterEvent::Shed { priority, reason } = e {
                    shed.push((*priority, *reason));
                }
            })
    };
    let service = layer.layer(upstream.clone());
    let holder = spawn(&service, req("holder", Normal, 1000));
    settle().await;
    let l1 = spawn(&service, req("L1", Low, 0));
    let l1b = spawn(&service, req("L1b", Low, 0));
    settle().await;
    // full (2): a High arrival evicts the newest Low
    let h1 = spawn(&service, req("H1", High, 0));
    settle().await;
    assert_eq!(overload_reason(l1b.await.unwrap()), OverloadReason::Evicted);
    // a Low arrival finds nothing lower: rejected at once
    let start = Instant::now();
    let rejected = service.clone().oneshot(req("L2", Low, 0)).await;
    assert_eq!(overload_reason(rejected), OverloadReason::QueueFull);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // a Normal arrival evicts the remaining Low
    let n1 = spawn(&service, req("N1", Normal, 0));
    settle().await;
    assert_eq!(overload_reason(l1.await.unwrap()), OverloadReason::Evicted);
    // an equal priority does not evict
    let rejected = service.clone().oneshot(req("N2", Normal, 0)).await;
    assert_eq!(overload_reason(rejected), OverloadReason::QueueFull);

    holder.await.unwrap().unwrap();
    h1.await.unwrap().unwrap();
    n1.await.unwrap().unwrap();
    assert_eq!(order(&upstream), ["holder", "H1", "N1"]);
    assert_eq!(
        shed.all(),
        [
            (Low, OverloadReason::Evicted),
            (Low, OverloadReason::QueueFull),
            (Low, OverloadReason::Evicted),
            (Normal, OverloadReason::QueueFull),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn aging_promotes_a_long_waiting_low_request() {
    for (aging, expected) in [
        (Some(secs(10)), ["holder", "L1", "H1", "N1"]),
        (None, ["holder", "H1", "N1", "L1"]),
    ] {
        let upstream = instructed();
        let service = PriorityLimitLayer::new(1)
            .aging(aging)
            .layer(upstream.clone());
        let mut tasks = vec![spawn(&service, req("holder", Normal, 25_000))];
        settle().await;
        tasks.push(spawn(&service, req("L1", Low, 0)));
        settle().await;
        advance(secs(15)).await;
        tasks.push(spawn(&service, req("H1", High, 0)));
        settle().await;
        tasks.push(spawn(&service, req("N1", Normal, 0)));
        settle().await;
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // at 25 s, L1 has waited 25 s: two steps, High, and it came first
        assert_eq!(order(&upstream), expected, "{aging:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_closes_the_gate_only_on_a_429_or_a_503() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(4);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let answered = |id: &str, status: &str, retry_after: &str| {
        let mut request = req(id, Normal, 0);
        let headers = request.headers_mut();
        headers.insert("x-status", status.parse().unwrap());
        headers.insert("x-retry-after", retry_after.parse().unwrap());
        request
    };
    // a job accepted, poll in 600 s; a redirect to follow in 30 s; a 200:
    // about that resource, not the client. Nothing closes, and a request
    // right after goes at once
    for (id, status) in [("accepted", "202"), ("moved", "301"), ("ok", "200")] {
        let response = service
            .clone()
            .oneshot(answered(id, status, "600"))
            .await
            .unwrap();
        assert_eq!(response.status().as_str(), status);
        assert_eq!(handle.status().gate_closed_for, None, "after a {status}");
        assert_eq!(
            handle.status().quota_exhausted_for,
            None,
            "after a {status}"
        );
    }
    service
        .clone()
        .oneshot(req("next", Normal, 0))
        .await
        .unwrap();
    assert!(arrivals(&upstream).iter().all(|(_, at)| *at == secs(0)));
    // a 503 asking for 30 s closes it for everyone
    let unavailable = answered("down", "503", "30");
    let response = service.clone().oneshot(unavailable).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(handle.status().gate_closed_for, Some(secs(30)));
    // the quota headers hold on any status: a 200 with none left closes it
    let layer = PriorityLimitLayer::new(4);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let mut last = req("last", Normal, 0);
    last.headers_mut()
        .insert("x-remaining", "0".parse().unwrap());
    let response = service.oneshot(last).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(handle.status().gate_closed_for, Some(secs(60)));
}

#[tokio::test(start_paused = true)]
async fn x_ratelimit_remaining_0_closes_the_gate_until_its_reset() {
    let upstream = Scripted::new([ok()
        .header("x-ratelimit-limit", "60")
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-reset", "3")]);
    let layer = PriorityLimitLayer::new(4);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let response = service
        .clone()
        .oneshot(req("last", Normal, 0))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(handle.status().gate_closed_for, Some(secs(3)));
    service.oneshot(req("next", Normal, 0)).await.unwrap();
    assert_eq!(upstream.arrivals(), [secs(0), secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn one_429_closes_the_gate_for_every_queued_request_until_the_hint_passes() {
    let upstream = instructed();
    let events = EventCapture::<LimiterEvent>::new();
    let layer = PriorityLimitLayer::new(4).on_event(events.recorder());
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());

    let limited = throttled_req("A", 0, "10");
    let response = service.clone().oneshot(limited).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    advance(secs(1)).await;
    let tasks: Vec<_> = [("L1", Low), ("N1", Normal), ("H1", High)]
        .into_iter()
        .map(|(id, p)| spawn(&service, req(id, p, 0)))
        .collect();
    settle().await;
    let status = handle.status();
    assert_eq!(status.queued, [1, 1, 1], "held although permits are free");
    assert_eq!(status.available, 4);
    assert_eq!(status.gate_closed_for, Some(secs(9)));
    advance(secs(9) - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        arrivals(&upstream).len(),
        1,
        "nothing before the hint passes"
    );
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        arrivals(&upstream),
        [
            ("A".to_string(), secs(0)),
            ("H1".to_string(), secs(10)),
            ("N1".to_string(), secs(10)),
            ("L1".to_string(), secs(10)),
        ]
    );
    assert!(matches!(
        events.all()[0],
        LimiterEvent::GateClosed { for_, .. } if for_ == secs(10)
    ));
}

#[tokio::test(start_paused = true)]
async fn pacing_is_exact_over_a_simulated_minute() {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1000)
        .max_queue(1000)
        .pacing(300, secs(60))
        .layer(upstream.clone());
    let tasks: Vec<_> = (0..400)
        .map(|i| spawn(&service, req(&i.to_string(), Normal, 0)))
        .collect();
    settle().await;
    // sleeping (not `advance`) lets paused time stop at every pacing timer
    tokio::time::sleep(secs(60) - Duration::from_millis(1)).await;
    settle().await;
    let seen = arrivals(&upstream);
    assert_eq!(seen.len(), 300, "300 per minute, not one more");
    for (k, (_, at)) in seen.iter().enumerate() {
        assert_eq!(*at, Duration::from_millis(200 * k as u64), "request {k}");
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(arrivals(&upstream).len(), 400);
}

#[tokio::test(start_paused = true)]
async fn max_queue_wait_sheds_at_the_exact_instant() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(1).max_queue_wait(secs(5));
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let holder = spawn(&service, req("holder", Normal, 60_000));
    settle().await;
    let start = Instant::now();
    let waiter = spawn(&service, req("W", Normal, 0));
    let result = waiter.await.unwrap();
    assert_eq!(overload_reason(result), OverloadReason::QueueTimeout);
    assert_eq!(start.elapsed(), secs(5));
    assert_eq!(handle.status().queued, [0, 0, 0]);
    holder.abort();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_future_releases_its_permit_or_its_place() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(1);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let mut in_flight = tokio_test::task::spawn(service.clone().oneshot(req("A", Normal, 10_000)));
    assert!(in_flight.poll().is_pending());
    let mut queued = tokio_test::task::spawn(service.clone().oneshot(req("B", Normal, 0)));
    assert!(queued.poll().is_pending());
    assert_eq!(handle.status().queued, [0, 1, 0]);
    drop(queued);
    assert_eq!(handle.status().queued, [0, 0, 0]);
    drop(in_flight);
    assert_eq!(handle.status().available, 1);
    service.oneshot(req("C", Normal, 0)).await.unwrap();
    assert_eq!(order(&upstream), ["A", "C"]);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_with_random_cancellation_leave_the_limiter_whole() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(16)
        .max_queue(20_000)
        .aging(Some(secs(1)));
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let priority = [Low, Normal, High][rng.random_range(0..3)];
        let latency = rng.random_range(0..50);
        let cancel_after = Duration::from_millis(rng.random_range(0..20_000));
        let cancel = rng.random_bool(0.5);
        let service = service.clone();
        let request = req(&i.to_string(), priority, latency);
        tasks.push(tokio::spawn(async move {
            let call = service.oneshot(request);
            if cancel {
                tokio::time::timeout(cancel_after, call).await.ok()
            } else {
                Some(call.await)
            }
        }));
    }
    let mut completed = 0;
    for task in tasks {
        if let Some(result) = task.await.unwrap() {
            result.unwrap();
            completed += 1;
        }
    }
    assert!(completed >= 5_000, "{completed}");
    let status = handle.status();
    assert_eq!(status.in_flight, 0);
    assert_eq!(status.available, 16);
    assert_eq!(status.queued, [0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_priority_can_come_from_a_header() {
    let upstream = instructed();
    let limit = PriorityLimitLayer::new(1).aging(None);
    let service = PriorityFromHeaderLayer::new(HeaderName::from_static("x-priority"))
        .layer(limit.layer(upstream.clone()));
    let send = |id: &str, priority: &str, latency: u64| {
        let service = service.clone();
        let request = Request::get("http://127.0.0.1/")
            .header("x-id", id)
            .header("x-priority", priority)
            .header("x-latency-ms", latency.to_string())
            .body(Body::empty())
            .unwrap();
        tokio::spawn(async move { service.oneshot(request).await })
    };
    let tasks = vec![
        send("first", "normal", 100),
        send("low", "LOW", 0),
        send("junk", "urgent!", 0),
        send("high", " High ", 0),
    ];
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(order(&upstream), ["first", "high", "junk", "low"]);
}

#[tokio::test(start_paused = true)]
async fn a_daily_cap_does_not_close_the_gate_and_an_absurd_hint_does_not_freeze_the_limiter() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(2);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    // a daily cap is the exhausted state's (tests/quota.rs), not the gate's
    let capped = throttled_req("cap", 0, "86400");
    service.clone().oneshot(capped).await.unwrap();
    assert_eq!(handle.status().gate_closed_for, None);
    assert_eq!(handle.status().quota_exhausted_for, Some(secs(86400)));
    advance(secs(86400)).await;
    let absurd = throttled_req("absurd", 0, "99999999999999999999");
    service.clone().oneshot(absurd).await.unwrap();
    assert_eq!(handle.status().gate_closed_for, None);
    assert_eq!(handle.status().quota_exhausted_for, None);
    service.oneshot(req("next", Normal, 0)).await.unwrap();
    assert_eq!(arrivals(&upstream).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_gate_can_be_reopened_by_hand() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(2);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    handle.close_gate(secs(60));
    let waiting = spawn(&service, req("W", High, 0));
    settle().await;
    assert_eq!(handle.status().queued, [0, 0, 1]);
    handle.open_gate();
    waiting.await.unwrap().unwrap();
    assert_eq!(arrivals(&upstream), [("W".to_string(), secs(0))]);
}

#[tokio::test(start_paused = true)]
async fn extreme_settings_do_not_overflow() {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1)
        .max_queue_wait(Duration::MAX)
        .layer(upstream.clone());
    let holder = spawn(&service, req("holder", Normal, 1000));
    settle().await;
    let waiter = spawn(&service, req("W", Normal, 0));
    holder.await.unwrap().unwrap();
    waiter.await.unwrap().unwrap();

    let paced = PriorityLimitLayer::new(4)
        .pacing(1, Duration::MAX)
        .layer(upstream.clone());
    paced
        .clone()
        .oneshot(req("first", Normal, 0))
        .await
        .unwrap();
    let second = tokio::time::timeout(secs(3600), paced.oneshot(req("second", Normal, 0))).await;
    assert!(second.is_err(), "one request per (practically) forever");
}

#[test]
fn a_limiter_outliving_its_runtime_still_dispatches_in_the_next_one() {
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(4);
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    first.block_on(async {
        handle.close_gate(secs(5));
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        tokio::time::sleep(secs(6)).await;
        let result =
            tokio::time::timeout(secs(3600), service.oneshot(req("late", Normal, 0))).await;
        assert!(result.is_ok(), "the request is dispatched, not stuck");
    });
}

#[tokio::test(start_paused = true)]
async fn two_limiters_sharing_a_pacer_send_at_one_rate_together() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    let pacer = LocalPacer::new(5, secs(1));
    let a = PriorityLimitLayer::new(4)
        .pacer(pacer.clone())
        .layer(upstream.clone());
    let b = PriorityLimitLayer::new(4)
        .pacer(pacer.clone())
        .layer(upstream.clone());
    let mut tasks = Vec::new();
    for i in 0..6 {
        let service = if i % 2 == 0 { &a } else { &b };
        tasks.push(spawn(service, req(&format!("r{i}"), Normal, 0)));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut times: Vec<Duration> = arrivals(&upstream).into_iter().map(|(_, at)| at).collect();
    times.sort();
    let ms = Duration::from_millis;
    assert_eq!(
        times,
        [ms(0), ms(200), ms(400), ms(600), ms(800), ms(1000)],
        "one schedule for both limiters"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shared_pacer_gives_each_slot_to_the_highest_priority_waiter_of_any_limiter() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    // 5 per second for both: a slot every 200 ms
    let pacer = LocalPacer::new(5, secs(1));
    let a = PriorityLimitLayer::new(4)
        .pacer(pacer.clone())
        .layer(upstream.clone());
    let b = PriorityLimitLayer::new(4)
        .pacer(pacer.clone())
        .layer(upstream.clone());
    let mut tasks = vec![
        spawn(&a, req("a-low-0", Low, 0)),
        spawn(&a, req("a-low-1", Low, 0)),
        spawn(&a, req("a-low-2", Low, 0)),
        spawn(&b, req("b-normal-0", Normal, 0)),
        spawn(&b, req("b-normal-1", Normal, 0)),
    ];
    settle().await;
    advance(ms(100)).await;
    tasks.push(spawn(&a, req("a-high", High, 0)));
    tasks.push(spawn(&b, req("b-high", High, 0)));
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let expected = [
        ("a-low-0", 0),
        // from the first slot after they arrived, the highs go first,
        // whichever limiter booked the slot
        ("b-high", 200),
        ("a-high", 400),
        // then normal, which books a slot ahead, before low, which takes
        // only a slot free now
        ("b-normal-0", 600),
        ("b-normal-1", 800),
        ("a-low-1", 1000),
        ("a-low-2", 1200),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(id, at)| (id.to_string(), ms(at)))
        .collect();
    assert_eq!(arrivals(&upstream), expected);
}

#[tokio::test(start_paused = true)]
async fn the_slot_booked_for_a_waiter_that_gives_up_goes_to_the_next_one() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    let layer = PriorityLimitLayer::new(4).pacer(LocalPacer::new(5, secs(1)));
    let handle = layer.handle();
    let limited = layer.layer(upstream.clone());
    let first = spawn(&limited, req("first", Normal, 0));
    // the limiter books the slot at 200 ms for the high waiter
    let high = spawn(&limited, req("high", High, 0));
    let low = spawn(&limited, req("low", Low, 0));
    settle().await;
    advance(ms(100)).await;
    high.abort();
    assert!(high.await.unwrap_err().is_cancelled());
    first.await.unwrap().unwrap();
    low.await.unwrap().unwrap();
    assert_eq!(
        arrivals(&upstream),
        [("first".to_string(), ms(0)), ("low".to_string(), ms(200))]
    );
    assert_eq!(handle.status().in_flight, 0);
    assert_eq!(handle.status().queued, [0, 0, 0]);
}

/// A pacer whose answer takes `delay` (a round trip to Redis, say).
struct SlowPacer {
    pacer: tower_cx::priority::LocalPacer,
    delay: Duration,
}

impl tower_cx::priority::Pacer for SlowPacer {
    fn reserve(&self, priority: Priority) -> tower_cx::priority::PacerFuture {
        let (pacer, delay) = (self.pacer.clone(), self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            pacer.try_reserve(priority)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_gate_closing_while_a_slot_is_being_booked_holds_every_request_until_it_reopens() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    let pacer = SlowPacer {
        pacer: LocalPacer::new(5, secs(1)),
        delay: ms(50),
    };
    let layer = PriorityLimitLayer::new(4).pacer(pacer);
    let handle = layer.handle();
    let limited = layer.layer(upstream.clone());
    let tasks = [
        spawn(&limited, req("r0", Normal, 0)),
        spawn(&limited, req("r1", Normal, 0)),
    ];
    settle().await;
    advance(ms(10)).await;
    // the answer for r0 (a slot at 50 ms) is on its way
    handle.close_gate(secs(1));
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The slot came due while the gate was closed: given up. When the gate
    // reopens (1010 ms) the pacer is asked again (50 ms), and the next slot
    // is 200 ms later.
    assert_eq!(
        arrivals(&upstream),
        [("r0".to_string(), ms(1060)), ("r1".to_string(), ms(1260))]
    );
}

#[test]
fn a_question_to_the_pacer_cut_short_by_its_runtime_is_asked_again_in_the_next() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    let pacer = SlowPacer {
        pacer: LocalPacer::new(5, secs(1)),
        delay: ms(50),
    };
    let layer = PriorityLimitLayer::new(4).pacer(pacer);
    let handle = layer.handle();
    let limited = layer.layer(upstream.clone());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(async {
        // queued, its slot being asked for when the runtime ends
        let waiting = spawn(&limited, req("lost", Normal, 0));
        settle().await;
        drop(waiting);
    });
    drop(first);
    assert_eq!(handle.status().queued, [0, 0, 0]);
    runtime().block_on(async {
        let result = tokio::time::timeout(secs(3600), limited.oneshot(req("next", Normal, 0)));
        assert!(result.await.is_ok(), "the request is dispatched, not stuck");
    });
    assert_eq!(order(&upstream), ["next"]);
}

#[tokio::test(start_paused = true)]
async fn a_limiter_reports_when_the_shared_pacer_keeps_a_slot_for_higher_priorities() {
    use tower_cx::priority::LocalPacer;
    let upstream = instructed();
    let events = EventCapture::<LimiterEvent>::new();
    let limited = PriorityLimitLayer::new(4)
        .pacer(LocalPacer::new(5, secs(1)))
        .on_event(events.recorder())
        .layer(upstream.clone());
    let tasks = [
        spawn(&limited, req("low-0", Low, 0)),
        spawn(&limited, req("low-1", Low, 0)),
    ];
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        events.all(),
        [LimiterEvent::PacerDeferred {
            priority: Low,
            for_: ms(200)
        }]
    );
    assert_eq!(arrivals(&upstream)[1], ("low-1".to_string(), ms(200)));
}

#[tokio::test(start_paused = true)]
async fn a_hint_seen_by_one_limiter_closes_the_gate_of_every_limiter_sharing_it() {
    use tower_cx::share::LocalPauseShare;
    let upstream = instructed();
    let share = LocalPauseShare::new();
    let events = EventCapture::<LimiterEvent>::new();
    let a_layer = PriorityLimitLayer::new(4).share_gate(share.clone());
    let b_layer = PriorityLimitLayer::new(4)
        .share_gate(share.clone())
        .on_event(events.recorder());
    let b_handle = b_layer.handle();
    let a = a_layer.layer(upstream.clone());
    let b = b_layer.layer(upstream.clone());
    let throttled = throttled_req("a1", 0, "3");
    let response = a.clone().oneshot(throttled).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b_handle.status().gate_closed_for, Some(secs(3)));
    assert_eq!(
        events.all().as_slice(),
        [LimiterEvent::GateClosedElsewhere { for_: secs(3) }]
    );
    b.oneshot(req("b1", Normal, 0)).await.unwrap();
    let seen = arrivals(&upstream);
    assert_eq!(seen.last().unwrap(), &("b1".to_string(), secs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_limiter_built_during_a_shared_pause_holds_its_first_request() {
    use tower_cx::share::LocalPauseShare;
    let upstream = instructed();
    let share = LocalPauseShare::new();
    let a = PriorityLimitLayer::new(4)
        .share_gate(share.clone())
        .layer(upstream.clone());
    let response = a.oneshot(throttled_req("a0", 0, "5")).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    advance(secs(2)).await;
    // b joins the share 2 s into a 5 s pause, and has never sent
    let b_layer = PriorityLimitLayer::new(4).share_gate(share);
    let b_handle = b_layer.handle();
    let b = b_layer.layer(upstream.clone());
    assert_eq!(b_handle.status().gate_closed_for, Some(secs(3)));
    b.oneshot(req("b0", Normal, 0)).await.unwrap();
    assert_eq!(
        arrivals(&upstream).last().unwrap(),
        &("b0".to_string(), secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn handles_taken_at_any_point_of_building_observe_the_built_limiter() {
    let upstream = instructed();
    let events = EventCapture::<LimiterEvent>::new();
    let layer = PriorityLimitLayer::new(1);
    let first = layer.handle();
    let layer = layer.max_queue(0);
    let second = layer.handle();
    let layer = layer.on_event(events.recorder());
    let service = layer.layer(upstream.clone());
    let busy = spawn(&service, req("busy", Normal, 1000));
    settle().await;
    for handle in [&first, &second, &layer.handle()] {
        assert_eq!(handle.status().in_flight, 1);
        assert_eq!(handle.status().available, 0);
    }
    // the settings of every call hold: no queue, and the event is seen
    let shed = service.clone().oneshot(req("shed", High, 0)).await;
    assert_eq!(overload_reason(shed), OverloadReason::QueueFull);
    assert_eq!(
        events.all().as_slice(),
        [LimiterEvent::Shed {
            priority: High,
            reason: OverloadReason::QueueFull
        }]
    );
    first.close_gate(secs(2));
    assert_eq!(second.status().gate_closed_for, Some(secs(2)));
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_clone_configured_apart_is_a_limiter_of_its_own() {
    let upstream = instructed();
    let base = PriorityLimitLayer::new(1);
    let handle = base.handle();
    let other = base.clone().max_queue(0);
    let service = base.layer(upstream.clone());
    let busy = spawn(&service, req("busy", Normal, 1000));
    settle().await;
    assert_eq!(handle.status().in_flight, 1);
    assert_eq!(other.handle().status().in_flight, 0);
    // the base kept its queue
    let queued = spawn(&service, req("queued", Normal, 0));
    settle().await;
    assert_eq!(handle.status().queued, [0, 1, 0]);
    busy.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn pacing_burst_holds_whether_set_before_or_after_pacing() {
    for burst_first in [true, false] {
        let upstream = instructed();
        let layer = PriorityLimitLayer::new(8);
        let layer = if burst_first {
            layer.pacing_burst(3).pacing(1, secs(1))
        } else {
            layer.pacing(1, secs(1)).pacing_burst(3)
        };
        let service = layer.layer(upstream.clone());
        let tasks: Vec<_> = (0..4)
            .map(|i| spawn(&service, req(&format!("r{i}"), Normal, 0)))
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let times: Vec<Duration> = arrivals(&upstream).into_iter().map(|(_, at)| at).collect();
        assert_eq!(
            times,
            [secs(0), secs(0), secs(0), secs(1)],
            "burst first: {burst_first}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_granted_just_before_the_gate_closed_waits_for_it() {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(2).layer(upstream.clone());
    // Two in flight end at the same instant: one frees a permit for the
    // waiter, the other brings a 429 that closes the gate for 3 s.
    let ok = spawn(&service, req("ok", Normal, 10));
    let throttled = throttled_req("throttled", 10, "3");
    let throttled = spawn(&service, throttled);
    settle().await;
    let waiter = spawn(&service, req("waiter", Normal, 0));
    settle().await;
    ok.await.unwrap().unwrap();
    throttled.await.unwrap().unwrap();
    waiter.await.unwrap().unwrap();
    let seen = arrivals(&upstream);
    assert_eq!(
        seen.last().unwrap(),
        &("waiter".to_string(), Duration::from_millis(3010)),
        "sent when the gate reopened, not into the wait: {seen:?}"
    );
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[tokio::test(start_paused = true)]
async fn window_pacing_sends_a_whole_allowance_at_once_and_never_more_in_any_window() {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(100)
        .pacing_window(3, secs(1))
        .layer(upstream.clone());
    let mut tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| spawn(&service, req(id, Normal, 0)))
        .collect();
    settle().await;
    tokio::time::sleep(ms(500)).await;
    for id in ["c", "d", "e", "f", "g", "h"] {
        tasks.push(spawn(&service, req(id, Normal, 0)));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // a and b go at once; c fills the allowance; d and e go the instant a
    // and b leave the window, f the instant c leaves it, and so on
    let expected = [
        ("a", 0),
        ("b", 0),
        ("c", 500),
        ("d", 1000),
        ("e", 1000),
        ("f", 1500),
        ("g", 2000),
        ("h", 2000),
    ];
    let seen = arrivals(&upstream);
    assert_eq!(
        seen,
        expected.map(|(id, at)| (id.to_owned(), ms(at))).to_vec()
    );
    // whatever a vendor's fixed windows are aligned to, none sees more than 3
    for start in (0..2500).step_by(10) {
        let window = ms(start)..ms(start + 1000);
        let sent = seen.iter().filter(|(_, at)| window.contains(at)).count();
        assert!(sent <= 3, "{sent} sent in {window:?}");
    }
}

/// One request in flight for `holding_ms` through a limit of 1 with
/// adaptive LIFO after `lifo_after`, then `a`, `b`, `c`, `d` queued behind it
/// (1 s each); everything run to the end.
async fn holder_then_four(lifo_after: Duration, holding_ms: u64) -> Scripted {
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1)
        .adaptive_lifo(lifo_after)
        .layer(upstream.clone());
    let mut tasks = vec![spawn(&service, req("holder", Normal, holding_ms))];
    settle().await;
    for id in ["a", "b", "c", "d"] {
        tasks.push(spawn(&service, req(id, Normal, 1000)));
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    upstream
}

#[tokio::test(start_paused = true)]
async fn adaptive_lifo_serves_the_newest_waiter_once_the_queue_has_stood() {
    // the queue stands for 3 s behind the holder: newest first
    let upstream = holder_then_four(secs(1), 3000).await;
    assert_eq!(order(&upstream), ["holder", "d", "c", "b", "a"]);

    // a threshold longer than any wait: first come, first served
    let upstream = holder_then_four(secs(10), 3000).await;
    assert_eq!(order(&upstream), ["holder", "a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn adaptive_lifo_switches_when_the_oldest_waiter_reaches_the_threshold() {
    let upstream = holder_then_four(secs(2), 1000).await;
    // at 1 s the oldest (a) has waited 1 s: it goes; at 2 s the oldest (b)
    // has waited 2 s: the newest goes from then on
    assert_eq!(
        arrivals(&upstream),
        [
            ("holder".to_owned(), secs(0)),
            ("a".to_owned(), secs(1)),
            ("d".to_owned(), secs(2)),
            ("c".to_owned(), secs(3)),
            ("b".to_owned(), secs(4)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_lifo_keeps_priorities_and_aging() {
    // priorities first, newest first within a standing priority
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1)
        .adaptive_lifo(secs(1))
        .aging(Some(secs(10)))
        .layer(upstream.clone());
    let mut tasks = vec![spawn(&service, req("holder", Normal, 5000))];
    settle().await;
    for (id, priority) in [("L1", Low), ("N1", Normal), ("N2", Normal), ("H1", High)] {
        tasks.push(spawn(&service, req(id, priority, 0)));
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(order(&upstream), ["holder", "H1", "N2", "N1", "L1"]);

    // a Low queue ages with its oldest waiter: after 12 s it is at the
    // Normal level, and its waiter came before N1 (waiting 7 s)
    let upstream = instructed();
    let service = PriorityLimitLayer::new(1)
        .adaptive_lifo(secs(1))
        .aging(Some(secs(10)))
        .layer(upstream.clone());
    let mut tasks = vec![spawn(&service, req("holder", Normal, 12_000))];
    settle().await;
    tasks.push(spawn(&service, req("L1", Low, 0)));
    tokio::time::sleep(secs(5)).await;
    for (id, priority) in [("N1", Normal), ("H1", High)] {
        tasks.push(spawn(&service, req(id, priority, 0)));
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(order(&upstream), ["holder", "H1", "L1", "N1"]);
}

/// A new instance of a fleet (its own `RedisFleet`) built while another
/// instance's pause runs holds its very first request until it has read the
/// pause, then keeps it for the pause. Needs `TOWER_CX_REDIS_URL`.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_new_fleet_instance_holds_its_first_request_during_a_running_pause() {
    use tower_cx::fleet::RedisFleet;
    let url = match std::env::var("TOWER_CX_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let prefix = format!("test-prio-{}-{nanos:08x}", std::process::id());
    let instance = |upstream: &Scripted| {
        let layer = PriorityLimitLayer::new(4).share_gate(
            RedisFleet::new(&url)
                .unwrap()
                .prefix(prefix.clone())
                .gate("api"),
        );
        let handle = layer.handle();
        (layer.layer(upstream.clone()), handle)
    };
    // Wait (polling, bounded) until a handle's gate is closed for the
    // announced pause, not just held while the share reads Redis.
    async fn paused(handle: &tower_cx::priority::PriorityLimitHandle) -> bool {
        for _ in 0..250 {
            if handle.status().gate_closed_for > Some(secs(30)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
    let upstream = instructed();
    let (_a, a_handle) = instance(&upstream);
    a_handle.close_gate(secs(60));
    // the announcement has reached Redis once a further instance reads it
    let (_probe, probe_handle) = instance(&upstream);
    assert!(paused(&probe_handle).await, "the pause reached Redis");
    let (b, b_handle) = instance(&upstream);
    let first = spawn(&b, req("b0", Normal, 0));
    assert!(paused(&b_handle).await, "b read the running pause");
    assert!(arrivals(&upstream).is_empty(), "b's first request waits");
    b_handle.open_gate();
    first.await.unwrap().unwrap();
    assert_eq!(order(&upstream), ["b0"]);
}
