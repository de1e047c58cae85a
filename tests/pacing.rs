//! Pacing learned from the server (`PriorityLimitLayer::learn_rate`): the
//! quota each header family advertises, the remaining quota spread over the
//! window, the configured rate as a ceiling, cuts on `429`s, priority order
//! of paced slots, the event and the handle. Paused time, exact
//! expectations.

#[path = "support/events.rs"]
mod events;
#[path = "support/upstream.rs"]
mod upstream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use serde_json::json;
use tower::{Layer, ServiceExt};
use tower_cx::body::Body;
use tower_cx::hint::QuotaSource;
use tower_cx::observe::PacingSource;
use tower_cx::priority::{LimiterEvent, PacingStatus, Priority, PriorityLimitLayer};

use events::EventCapture;
use upstream::{ok, status, Answer, Scripted};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

fn req(id: &str, priority: Priority) -> Request<Body> {
    let mut request = Request::get("http://127.0.0.1/")
        .header("x-id", id)
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(priority);
    request
}

fn with(answer: Answer, headers: &[(&str, &str)]) -> Answer {
    headers
        .iter()
        .fold(answer, |answer, (name, value)| answer.header(name, value))
}

/// Sends `n` requests one after the other; the upstream's arrival times.
async fn one_by_one<S>(service: &S, upstream: &Scripted, n: usize) -> Vec<Duration>
where
    S: tower::Service<Request<Body>, Error = tower_cx::error::BoxError> + Clone,
    S::Response: std::fmt::Debug,
{
    for i in 0..n {
        service
            .clone()
            .oneshot(req(&i.to_string(), Priority::Normal))
            .await
            .unwrap();
    }
    upstream.arrivals()
}

#[tokio::test(start_paused = true)]
async fn each_header_family_paces_from_the_first_advertising_answer() {
    // 120 per 60 s, all of it left: one every 500 ms
    let families: [(&[(&str, &str)], QuotaSource); 4] = [
        (
            &[
                ("inin-ratelimit-allowed", "120"),
                ("inin-ratelimit-count", "0"),
                ("inin-ratelimit-reset", "60"),
            ],
            QuotaSource::Genesys,
        ),
        (
            &[
                ("ratelimit-policy", "\"default\";q=120;w=60"),
                ("ratelimit", "\"default\";r=120;t=60"),
            ],
            QuotaSource::RateLimit,
        ),
        (
            &[("ratelimit", "limit=120, remaining=120, reset=60")],
            QuotaSource::RateLimit,
        ),
        (
            &[
                ("x-ratelimit-limit", "120"),
                ("x-ratelimit-remaining", "120"),
                ("x-ratelimit-reset", "60"),
            ],
            QuotaSource::XRateLimit,
        ),
    ];
    for (headers, source) in families {
        let upstream = Scripted::always(with(ok(), headers));
        let layer = PriorityLimitLayer::new(4).learn_rate();
        let handle = layer.handle();
        assert_eq!(handle.pacing().source, PacingSource::Off);
        let service = layer.layer(upstream.clone());
        let arrivals = one_by_one(&service, &upstream, 4).await;
        // the first goes unpaced and teaches the rate; the first paced slot
        // is free, then one every 500 ms
        assert_eq!(arrivals, [0, 0, 500, 1000].map(ms), "{source:?}");
        assert_eq!(
            handle.pacing(),
            PacingStatus {
                interval: Some(ms(500)),
                source: PacingSource::Advertised(source),
                ceiling: None,
            }
        );
        assert_eq!(handle.pacing().per_minute(), Some(120.0));
    }
}

/// A server allowing `allowed` requests per fixed window of `window`,
/// counting every request and advertising it the Genesys way, answering
/// after 100 ms; a request over the limit gets a 429 with `Retry-After`.
fn windowed_server(allowed: u32, window: Duration) -> (Scripted, Arc<Mutex<Vec<u32>>>) {
    let counts = Arc::new(Mutex::new(Vec::new()));
    let books = counts.clone();
    let upstream = Scripted::answering(move |seen| {
        let index = (seen.at.as_nanos() / window.as_nanos()) as usize;
        let mut counts = books.lock().unwrap();
        if counts.len() <= index {
            counts.resize(index + 1, 0);
        }
        counts[index] += 1;
        let count = counts[index];
        let left = window * (index as u32 + 1) - seen.at;
        let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let answer = if count > allowed {
            status(429).header("retry-after", &reset.to_string())
        } else {
            ok()
        }
        .after(ms(100));
        answer
            .header("inin-ratelimit-allowed", &allowed.to_string())
            .header("inin-ratelimit-count", &count.min(allowed).to_string())
            .header("inin-ratelimit-reset", &reset.to_string())
    });
    (upstream, counts)
}

#[tokio::test(start_paused = true)]
async fn the_remaining_quota_is_spread_over_the_window_so_the_first_one_is_not_overrun() {
    // 10 per 10 s; 8 requests already went in this window before the
    // limiter learned anything (they went at once, unpaced)
    let (upstream, counts) = windowed_server(10, Duration::from_secs(10));
    let service = PriorityLimitLayer::new(8)
        .learn_rate()
        .layer(upstream.clone());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(
                service
                    .clone()
                    .oneshot(req(&i.to_string(), Priority::Normal)),
            )
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // never more than 10 in a window: no 429 at all
    let arrivals = upstream.arrivals();
    // never more than 10 in a window: no 429 at all. (The reset is given in
    // whole seconds, rounded up, so the time left looks longer than it is
    // and the spread errs on the slow side: 9 in the second window.)
    assert_eq!(*counts.lock().unwrap(), [10, 9, 1]);
    // 8 at once; their answers leave 2 (10 less 8) for the 10 s left: the
    // first paced slot at once, the next 5 s later; the tenth answer (at
    // 5.2 s) says none is left for 5 s, so the next goes at 10.2 s, then
    // at the steady 10 per 10 s
    assert_eq!(&arrivals[..8], [ms(0); 8]);
    assert_eq!(&arrivals[8..12], [0.1, 5.1, 10.2, 11.2].map(secs));
}

#[tokio::test(start_paused = true)]
async fn a_configured_rate_is_the_ceiling_and_a_lower_advertised_rate_wins() {
    let advertise = |allowed: &'static str| {
        with(
            ok(),
            &[
                ("x-ratelimit-limit", allowed),
                ("x-ratelimit-remaining", allowed),
                ("x-ratelimit-reset", "60"),
            ],
        )
    };
    let upstream = Scripted::new([advertise("120")]).then(advertise("30"));
    let layer = PriorityLimitLayer::new(4)
        .learn_rate()
        .pacing(60, Duration::from_secs(60));
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    service
        .clone()
        .oneshot(req("a", Priority::Normal))
        .await
        .unwrap();
    // 120 a minute advertised, 60 configured: the configured rate holds
    let ceiling = Some(Duration::from_secs(1));
    assert_eq!(
        handle.pacing(),
        PacingStatus {
            interval: ceiling,
            source: PacingSource::Configured,
            ceiling,
        }
    );
    service
        .clone()
        .oneshot(req("b", Priority::Normal))
        .await
        .unwrap();
    // 30 a minute advertised: slower than the ceiling, so it paces
    assert_eq!(
        handle.pacing(),
        PacingStatus {
            interval: Some(Duration::from_secs(2)),
            source: PacingSource::Advertised(QuotaSource::XRateLimit),
            ceiling,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_429s_cuts_the_rate_once_and_it_recovers_along_the_cubic_curve() {
    // 24 answered, then 4 refused with no header at all, then answered
    let script = (0..24)
        .map(|_| ok().after(ms(100)))
        .chain((0..4).map(|_| status(429).after(ms(100))));
    let start = tokio::time::Instant::now();
    let upstream = Scripted::new(script).then(ok().after(ms(100)));
    let events = EventCapture::new();
    let layer = PriorityLimitLayer::new(4)
        .learn_rate()
        .on_event(events.recorder());
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(
                service
                    .clone()
                    .oneshot(req(&i.to_string(), Priority::Normal)),
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // 4 at a time, 100 ms each: 28 sent in the second before the first 429
    // came back at 700 ms; cut to 80 % of that, 22.4 a second. The other
    // three 429s were to requests sent before the cut: no further cut.
    let cut = Duration::from_secs_f64(1.0 / 22.4);
    assert_eq!(
        events.take(),
        [LimiterEvent::PacingChanged {
            interval: Some(cut),
            source: PacingSource::Adapted,
        }]
    );
    let arrivals = upstream.arrivals();
    assert_eq!(
        &arrivals[..28],
        &(0..28).map(|i| ms(i / 4 * 100)).collect::<Vec<_>>()[..]
    );
    // after the cut, one at a time along the curve, no longer 4 at once
    assert!(
        arrivals[28..].windows(2).all(|w| w[1] > w[0]),
        "{arrivals:?}"
    );
    // back to the rate of the cut (28 a second) 10 s after it
    tokio::time::sleep_until(start + secs(10.7)).await;
    let status = handle.pacing();
    assert_eq!(status.source, PacingSource::Adapted);
    assert_eq!(status.per_minute(), Some(1680.0));
}

#[tokio::test(start_paused = true)]
async fn paced_slots_go_by_priority_also_when_the_gate_reopens() {
    // one a second advertised
    let upstream = Scripted::always(with(
        ok(),
        &[
            ("inin-ratelimit-allowed", "60"),
            ("inin-ratelimit-count", "0"),
            ("inin-ratelimit-reset", "60"),
        ],
    ));
    let layer = PriorityLimitLayer::new(8).learn_rate();
    let handle = layer.handle();
    let service = layer.layer(upstream.clone());
    service
        .clone()
        .oneshot(req("first", Priority::Normal))
        .await
        .unwrap();
    handle.close_gate(Duration::from_secs(5));
    let send =
        |id: &'static str, priority| tokio::spawn(service.clone().oneshot(req(id, priority)));
    let tasks = [
        send("low", Priority::Low),
        send("normal", Priority::Normal),
        send("high", Priority::High),
        send("high2", Priority::High),
    ];
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let order: Vec<_> = upstream
        .seen()
        .iter()
        .map(|s| (s.header("x-id").unwrap().to_owned(), s.at))
        .collect();
    // the gate reopens at 5 s: the waiters go one per paced slot, best first
    let expected = [
        ("first", 0.0),
        ("high", 5.0),
        ("high2", 6.0),
        ("normal", 7.0),
        ("low", 8.0),
    ];
    assert_eq!(order, expected.map(|(id, at)| (id.to_owned(), secs(at))));
}

#[tokio::test(start_paused = true)]
async fn a_change_of_the_advertised_rate_is_an_event_with_its_json_shape() {
    let advertise = |allowed: &'static str| {
        with(
            ok(),
            &[
                ("ratelimit-policy", allowed),
                ("ratelimit", "\"default\";r=100;t=60"),
            ],
        )
    };
    let upstream =
        Scripted::new([advertise("120;w=60"), advertise("120;w=60")]).then(advertise("60;w=60"));
    let events = EventCapture::new();
    let service = PriorityLimitLayer::new(4)
        .learn_rate()
        .on_event(events.recorder())
        .layer(upstream.clone());
    one_by_one(&service, &upstream, 3).await;
    // the same limit twice is one event; a new limit another
    let source = PacingSource::Advertised(QuotaSource::RateLimit);
    let seen = events.take();
    assert_eq!(
        seen,
        [
            LimiterEvent::PacingChanged {
                interval: Some(ms(600)),
                source,
            },
            LimiterEvent::PacingChanged {
                interval: Some(ms(1000)),
                source,
            },
        ]
    );
    assert_eq!(seen[0].name(), "pacing.changed");
    assert_eq!(
        serde_json::to_value(&seen[0]).unwrap(),
        json!({"event": "pacing.changed", "interval_ms": 600.0, "per_minute": 100.0, "source": "ratelimit"})
    );
    let off = LimiterEvent::PacingChanged {
        interval: None,
        source: PacingSource::Off,
    };
    assert_eq!(
        serde_json::to_value(&off).unwrap(),
        json!({"event": "pacing.changed", "source": "off"})
    );
}

#[tokio::test(start_paused = true)]
async fn an_initial_rate_paces_until_the_server_says_more() {
    let upstream = Scripted::always(with(
        ok(),
        &[
            ("x-ratelimit-limit", "600"),
            ("x-ratelimit-remaining", "600"),
            ("x-ratelimit-reset", "60"),
        ],
    ));
    let layer = PriorityLimitLayer::new(4)
        .learn_rate()
        .initial_rate(60, Duration::from_secs(60));
    let handle = layer.handle();
    assert_eq!(handle.pacing_interval(), Some(Duration::from_secs(1)));
    let service = layer.layer(upstream.clone());
    let arrivals = one_by_one(&service, &upstream, 3).await;
    // the first at once; from its answer on, 600 a minute, faster than the
    // initial rate (it is no ceiling), the next one included: it does not
    // wait the initial rate's second
    assert_eq!(arrivals, [0, 100, 200].map(ms));
    assert_eq!(handle.pacing().ceiling, None);
}

#[tokio::test(start_paused = true)]
async fn what_one_limiter_learns_paces_every_limiter_sharing_its_pacer() {
    use tower_cx::priority::{LocalPacer, Pacer};
    // a shared pacer with room for 1,000 a second: the ceiling
    let pacer = LocalPacer::new(1_000, Duration::from_secs(1));
    // the upstream both limiters call advertises 120 per 60 s: 500 ms
    let headers: &[(&str, &str)] = &[
        ("x-ratelimit-limit", "120"),
        ("x-ratelimit-remaining", "120"),
        ("x-ratelimit-reset", "60"),
    ];
    let upstream = Scripted::always(with(ok(), headers));
    let a = PriorityLimitLayer::new(4).learn_rate().pacer(pacer.clone());
    let b = PriorityLimitLayer::new(4).learn_rate().pacer(pacer.clone());
    let (a_handle, b_handle) = (a.handle(), b.handle());
    let (a, b) = (a.layer(upstream.clone()), b.layer(upstream.clone()));
    // one answer to `a` teaches the rate; `b` has seen nothing yet
    a.clone()
        .oneshot(req("a0", Priority::Normal))
        .await
        .unwrap();
    assert_eq!(pacer.interval(), ms(500));
    assert_eq!(a_handle.pacing().interval, Some(ms(500)));
    assert_eq!(b_handle.pacing().source, PacingSource::Off);
    // then both share the learned rate: one slot every 500 ms for the two
    let mut sent = Vec::new();
    for i in 0..4 {
        let (a, b) = (a.clone(), b.clone());
        sent.push(tokio::spawn(
            a.oneshot(req(&format!("a{}", i + 1), Priority::Normal)),
        ));
        sent.push(tokio::spawn(
            b.oneshot(req(&format!("b{i}"), Priority::Normal)),
        ));
    }
    for request in sent {
        request.await.unwrap().unwrap();
    }
    let arrivals = upstream.arrivals();
    assert_eq!(arrivals.len(), 9);
    let gaps: Vec<_> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    // the first paced slot is the one after a0's (1 ms later), then 500 ms each
    assert_eq!(gaps[0], ms(1));
    assert!(gaps[1..].iter().all(|gap| *gap == ms(500)), "{arrivals:?}");
    // a learned rate only slows the pacer: it never goes above its own
    pacer.learned(Some(Duration::from_micros(10)));
    assert_eq!(pacer.interval(), ms(1));
    pacer.learned(None);
    assert_eq!(pacer.interval(), ms(1));
}
