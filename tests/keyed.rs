//! Keyed limits (`priority::keyed`): a limiter per key read from the
//! request, keys paced and gated independently, a route limit inside a
//! client-wide one, idle keys dropped, the maximum of keys, and a request's
//! cost in pacing slots. Paused time, exact expectations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_cx::body::Body;
use tower_cx::error::{BoxError, OverloadReason, Overloaded};
use tower_cx::priority::keyed::{KeyedLimit, KeyedLimitLayer};
use tower_cx::priority::{Cost, LocalPacer, PriorityLimitLayer};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Who sends a request: the key the tests read from the extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Client(&'static str);

fn req(client: &'static str, path: &str) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    request.extensions_mut().insert(Client(client));
    request
}

fn by_client(req: &Request<Body>) -> Option<Client> {
    req.extensions().get::<Client>().copied()
}

/// Each request's arrival at the upstream: (client, path, time since the
/// start).
type Log = Arc<Mutex<Vec<(&'static str, String, Duration)>>>;

/// An upstream that logs what reaches it, answers after `latency`, and
/// answers `429` with `Retry-After: 10` to the path `/limited`.
fn upstream(
    log: Log,
    latency: Duration,
) -> impl Service<
    Request<Body>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let start = Instant::now();
    service_fn(move |req: Request<Body>| {
        let log = log.clone();
        async move {
            let client = by_client(&req).map_or("-", |c| c.0);
            let path = req.uri().path().to_owned();
            log.lock()
                .unwrap()
                .push((client, path.clone(), start.elapsed()));
            tokio::time::sleep(latency).await;
            let mut response = Response::new(());
            if path == "/limited" {
                *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                response
                    .headers_mut()
                    .insert("retry-after", "10".parse().unwrap());
            }
            Ok::<_, BoxError>(response)
        }
    })
}

fn sent(log: &Log) -> Vec<(&'static str, Duration)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(c, _, t)| (*c, *t))
        .collect()
}

/// Send every request at once, each in a task of its own; the answers in
/// order.
async fn send_all<S>(service: &S, requests: Vec<Request<Body>>) -> Vec<Result<StatusCode, BoxError>>
where
    S: Service<Request<Body>, Response = Response<()>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(request).await.map(|r| r.status()) })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn two_keys_are_paced_independently() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |_: &Client| {
        PriorityLimitLayer::new(8).pacing(1, Duration::from_secs(1))
    });
    let keys = layer.handle();
    let api = layer.layer(upstream(log.clone(), ms(10)));
    let answers = send_all(
        &api,
        vec![
            req("a", "/"),
            req("a", "/"),
            req("b", "/"),
            req("a", "/"),
            req("b", "/"),
        ],
    )
    .await;
    assert!(answers.iter().all(|a| matches!(a, Ok(StatusCode::OK))));
    let mut sent = sent(&log);
    sent.sort_by_key(|(c, t)| (*t, *c));
    // each key one a second, from its own start
    assert_eq!(
        sent,
        vec![
            ("a", ms(0)),
            ("b", ms(0)),
            ("a", ms(1000)),
            ("b", ms(1000)),
            ("a", ms(2000)),
        ]
    );
    let mut kept = keys.keys();
    kept.sort_by_key(|c| c.0);
    assert_eq!(kept, vec![Client("a"), Client("b")]);
}

#[tokio::test(start_paused = true)]
async fn a_429_closes_only_its_own_keys_gate() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |_: &Client| PriorityLimitLayer::new(8));
    let keys = layer.handle();
    let api = layer.layer(upstream(log.clone(), ms(10)));
    let first = api.clone().oneshot(req("a", "/limited")).await.unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    let a = keys.get(&Client("a")).unwrap();
    assert_eq!(a.status().gate_closed_for, Some(Duration::from_secs(10)));
    assert!(keys.get(&Client("b")).is_none());

    let answers = send_all(&api, vec![req("a", "/"), req("b", "/")]).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(StatusCode::OK))));
    let sent = sent(&log);
    // b went at once; a waited for its gate (closed at 10 ms, for 10 s)
    assert_eq!(sent, vec![("a", ms(0)), ("b", ms(10)), ("a", ms(10_010))]);
}

/// The largest number of log entries matching `which` inside any window of
/// `window` (half-open).
fn most_in_any_window(times: &[Duration], window: Duration) -> usize {
    let mut most = 0;
    for (i, start) in times.iter().enumerate() {
        let count = times[i..]
            .iter()
            .take_while(|t| **t < *start + window)
            .count();
        most = most.max(count);
    }
    most
}

#[tokio::test(start_paused = true)]
async fn a_route_limit_inside_a_client_limit_overruns_neither() {
    let log = Log::default();
    let minute = Duration::from_secs(60);
    let layer = KeyedLimitLayer::new(
        |req: &Request<Body>| Some(req.uri().path().starts_with("/analytics")),
        move |analytics: &bool| {
            if *analytics {
                PriorityLimitLayer::new(16).pacing(100, minute)
            } else {
                PriorityLimitLayer::new(16)
            }
        },
    )
    .within(LocalPacer::new(300, minute));
    let api = layer.layer(upstream(log.clone(), ms(20)));
    // three minutes of offered load: 200 analytics and 400 other requests a
    // minute, in bursts every second
    let tasks: Vec<_> = (0..180u64)
        .flat_map(|second| {
            let analytics = (0..3).map(move |k| (second, k, "/analytics/query"));
            let other = (0..7).map(move |k| (second, 3 + k, "/users"));
            analytics.chain(other)
        })
        .map(|(second, _, path)| {
            let api = api.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(second)).await;
                api.oneshot(req("c", path)).await.map(|r| r.status())
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    let log = log.lock().unwrap().clone();
    let all: Vec<_> = log.iter().map(|(_, _, t)| *t).collect();
    let analytics: Vec<_> = log
        .iter()
        .filter(|(_, p, _)| p.starts_with("/analytics"))
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(most_in_any_window(&analytics, minute), 100);
    assert_eq!(most_in_any_window(&all, minute), 300);
    // every request went, one each 200 ms, analytics at most one each 600 ms
    assert_eq!(all.len(), 1800);
    assert!(all.windows(2).all(|w| w[1] - w[0] >= ms(200)));
    assert!(analytics.windows(2).all(|w| w[1] - w[0] >= ms(600)));
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_dropped_after_the_idle_timeout() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |_: &Client| {
        PriorityLimitLayer::new(8).pacing(1, Duration::from_secs(1))
    })
    .idle_timeout(Duration::from_secs(30));
    let keys = layer.handle();
    let api = layer.layer(upstream(log.clone(), ms(10)));
    let answers = send_all(&api, vec![req("a", "/"), req("b", "/")]).await;
    assert_eq!(answers.len(), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    api.clone().oneshot(req("b", "/")).await.unwrap();
    assert_eq!(keys.len(), 2);
    // a answered at 10 ms: idle 30 s later; b at 5.02 s
    tokio::time::advance(Duration::from_secs(25) - ms(11)).await;
    assert_eq!(keys.len(), 2);
    tokio::time::advance(ms(1)).await;
    assert_eq!(keys.keys(), vec![Client("b")]);
    tokio::time::advance(ms(5009)).await;
    assert_eq!(keys.len(), 1);
    tokio::time::advance(ms(1)).await;
    assert!(keys.is_empty());
    assert_eq!(keys.dropped(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_is_not_dropped_while_its_gate_is_closed_or_its_pacing_is_not_spent() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |client: &Client| match client.0 {
        "gated" => PriorityLimitLayer::new(8),
        _ => PriorityLimitLayer::new(8).pacing(1, Duration::from_secs(60)),
    })
    .idle_timeout(Duration::from_secs(1));
    let keys = layer.handle();
    let api = layer.layer(upstream(log.clone(), ms(10)));
    api.clone().oneshot(req("gated", "/limited")).await.unwrap();
    api.clone().oneshot(req("paced", "/")).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(keys.len(), 2);
    // the gate (10 s from 10 ms) reopens; the paced slot (60 s) is due later
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(keys.keys(), vec![Client("paced")]);
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(keys.is_empty());
}

#[tokio::test(start_paused = true)]
async fn at_the_maximum_a_new_key_evicts_the_least_recently_used_idle_one() {
    let log = Log::default();
    let layer =
        KeyedLimitLayer::new(by_client, |_: &Client| PriorityLimitLayer::new(8)).max_keys(2);
    let keys = layer.handle();
    let api = layer.layer(upstream(log.clone(), Duration::from_secs(1)));
    let (a, b) = (api.clone(), api.clone());
    let busy_a = tokio::spawn(a.oneshot(req("a", "/")));
    let busy_b = tokio::spawn(b.oneshot(req("b", "/")));
    tokio::task::yield_now().await;
    // both keys are in flight: no room
    let refused = api.clone().oneshot(req("c", "/")).await.unwrap_err();
    let overloaded = refused.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(overloaded.reason(), OverloadReason::TooManyKeys);
    assert_eq!(overloaded.reason().as_str(), "too_many_keys");
    busy_a.await.unwrap().unwrap();
    busy_b.await.unwrap().unwrap();
    // b was used after a: a makes room for c
    api.clone().oneshot(req("b", "/")).await.unwrap();
    api.clone().oneshot(req("c", "/")).await.unwrap();
    let mut kept = keys.keys();
    kept.sort_by_key(|c| c.0);
    assert_eq!(kept, vec![Client("b"), Client("c")]);
    assert_eq!(keys.dropped(), 1);
    // the refused request was never sent
    assert_eq!(sent(&log).iter().filter(|(c, _)| *c == "c").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_is_not_limited() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |_: &Client| {
        PriorityLimitLayer::new(1).pacing(1, Duration::from_secs(60))
    });
    let keys = layer.handle();
    let api: KeyedLimit<_, Client, _> = layer.layer(upstream(log.clone(), ms(10)));
    let unkeyed = || Request::get("/").body(Body::empty()).unwrap();
    let answers = send_all(&api, vec![unkeyed(), unkeyed(), unkeyed()]).await;
    assert_eq!(answers.len(), 3);
    assert!(sent(&log).iter().all(|(_, t)| *t == Duration::ZERO));
    assert!(keys.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_of_cost_three_takes_three_slots() {
    let log = Log::default();
    let layer = KeyedLimitLayer::new(by_client, |client: &Client| match client.0 {
        // smooth: one slot each 100 ms
        "smooth" => PriorityLimitLayer::new(8).pacing(10, Duration::from_secs(1)),
        // a window of 4 per second
        _ => PriorityLimitLayer::new(8).pacing_window(4, Duration::from_secs(1)),
    });
    let api = layer.layer(upstream(log.clone(), ms(10)));
    let costly = |client| {
        let mut request = req(client, "/");
        request.extensions_mut().insert(Cost::new(3).unwrap());
        request
    };
    send_all(
        &api,
        vec![
            costly("smooth"),
            req("smooth", "/"),
            req("smooth", "/"),
            req("window", "/"),
            costly("window"),
            req("window", "/"),
        ],
    )
    .await;
    let at = |client: &str| -> Vec<Duration> {
        sent(&log)
            .into_iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, t)| t)
            .collect()
    };
    // the costly one goes first, the next waits three intervals
    assert_eq!(at("smooth"), vec![ms(0), ms(300), ms(400)]);
    // 1 + 3 fill the window; the last waits for the first to leave it
    assert_eq!(at("window"), vec![ms(0), ms(0), ms(1000)]);
}

#[tokio::test(start_paused = true)]
async fn a_request_of_cost_three_takes_three_slots_of_the_shared_limit_too() {
    let log = Log::default();
    // the keys have no pacing of their own; together one slot each 100 ms
    let layer = KeyedLimitLayer::new(by_client, |_: &Client| PriorityLimitLayer::new(8))
        .within(LocalPacer::new(10, Duration::from_secs(1)));
    let api = layer.layer(upstream(log.clone(), ms(10)));
    let mut costly = req("a", "/query");
    costly.extensions_mut().insert(Cost::new(3).unwrap());
    let requests = vec![costly, req("b", "/"), req("a", "/"), req("b", "/")];
    send_all(&api, requests).await;
    let mut times: Vec<_> = sent(&log).into_iter().map(|(_, t)| t).collect();
    times.sort();
    // the query goes at once on one slot and is charged the two after it:
    // whichever key comes next waits three slots (one slot each before)
    assert_eq!(times, [ms(0), ms(300), ms(400), ms(500)]);
}

#[tokio::test(start_paused = true)]
async fn the_factory_may_read_the_layers_handle_and_racing_first_requests_share_one_limiter() {
    let log = Log::default();
    let handle = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = KeyedLimitLayer::new(by_client, {
        let (handle, seen) = (handle.clone(), seen.clone());
        move |_: &Client| {
            // the registry is not locked while a key's limiter is made
            let keys: &tower_cx::priority::keyed::KeyedLimitHandle<Client> =
                handle.get().expect("set before the first request");
            seen.lock().unwrap().push(keys.len());
            PriorityLimitLayer::new(1)
        }
    });
    handle.set(layer.handle()).ok().unwrap();
    let api: KeyedLimit<_, Client, _> = layer.layer(upstream(log.clone(), ms(10)));
    let answers = send_all(&api, vec![req("a", "/x"), req("a", "/y")]).await;
    assert!(answers
        .iter()
        .all(|a| a.as_ref().is_ok_and(|s| s.is_success())));
    // one limiter of one permit served both: the second waited for the first
    assert_eq!(sent(&log), vec![("a", ms(0)), ("a", ms(10))]);
    assert_eq!(handle.get().unwrap().len(), 1);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|n| *n == 0), "{seen:?}");
}
