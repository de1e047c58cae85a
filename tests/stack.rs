//! The ready-made stack over a real hyper client and a loopback server.

#[path = "support/loopback.rs"]
mod loopback;
#[cfg(feature = "mock")]
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceExt};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::genesys::Region;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

/// `/oauth/token` issues `tok`; `/flaky` answers 503 then 200; everything
/// else needs `Bearer tok`.
async fn serve() -> (String, Arc<AtomicU32>) {
    let flaky = Arc::new(AtomicU32::new(0));
    let calls = flaky.clone();
    let base = loopback::serve(service_fn(move |req: Request<Body>| {
        let (status, body) = match req.uri().path() {
            "/oauth/token" => (
                200,
                r#"{"access_token":"tok","token_type":"bearer","expires_in":3600}"#,
            ),
            "/flaky" if calls.fetch_add(1, Ordering::SeqCst) == 0 => (503, "{}"),
            "/flaky" => (200, "{\"ok\":true}"),
            _ if req.headers().get("authorization").map(|v| v.as_bytes())
                == Some(b"Bearer tok") =>
            {
                (200, "{\"me\":true}")
            }
            _ => (401, "{}"),
        };
        answer(status, body)
    }))
    .await;
    (base, flaky)
}

/// A response with this status and body.
fn answer(
    status: u16,
    body: impl Into<Bytes>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    std::future::ready(Ok(response))
}

#[tokio::test]
async fn the_genesys_stack_fetches_a_token_and_calls_the_api() {
    let (base, _) = serve().await;
    let stack = Stack::genesys(&Region::custom(&base, &base), "id", "secret").unwrap();
    let handles = stack.handles();
    let client = stack.timeout(Duration::from_secs(5)).build();
    let request = Request::get(format!("{base}/api/v2/users/me"))
        .body(Body::empty())
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"me\":true}");
    assert_eq!(handles.tokens.unwrap().status().refresh_count, 1);
    let stats = handles.stats.snapshot();
    assert_eq!((stats.requests, stats.successes, stats.attempts), (1, 1, 1));
    assert_eq!(handles.limiter.status().available, 16);
}

#[tokio::test]
async fn the_custom_stack_retries_over_real_tcp() {
    let (base, flaky) = serve().await;
    let stack =
        Stack::new().retry(RetryLayer::new().backoff(Backoff::constant(Duration::from_millis(1))));
    let handles = stack.handles();
    let client = stack.build();
    let request = Request::get(format!("{base}/flaky"))
        .body(Body::empty())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(flaky.load(Ordering::SeqCst), 2);
    let stats = handles.stats.snapshot();
    assert_eq!((stats.attempts, stats.retries), (2, 1));
}

/// The full stack against the embedded Genesys mock under a scripted fault
/// mix: every request completes, and the mock counts no violation (no
/// request inside an announced wait, no expired token, no key applied twice).
#[cfg(feature = "mock")]
#[tokio::test(start_paused = true)]
async fn the_full_stack_completes_every_request_through_a_fault_mix_with_zero_violations() {
    use tower_cx::mock::Fault;
    use tower_cx::priority::{Priority, PriorityLimitLayer};

    let mock = vendor_stacks::mock_with(|c| {
        c.rate_limit = 40;
        c.rate_window = Duration::from_secs(5);
    })
    .await;
    let stack = vendor_stacks::genesys(&mock)
        .retry(
            RetryLayer::new()
                .max_attempts(5)
                .backoff(Backoff::exponential(Duration::from_millis(50)))
                .auto_idempotency_key(true),
        )
        .limiter(PriorityLimitLayer::new(4).max_queue(200));
    let handles = stack.handles();
    let client = stack.build();
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 5);
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(2), 2);
    mock.fault(Some("/api/v2/users"), Fault::Reset, 2);
    mock.fault(None, Fault::RetryAfterDate(Duration::from_secs(3)), 1);
    mock.fault(Some("/api/v2/integrations"), Fault::Status(502), 3);
    mock.fault(Some("/api/v2/integrations"), Fault::RateLimitHeader(1), 1);

    let base = mock.base_url();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut request = if i % 4 == 0 {
                    Request::post(format!("{base}/api/v2/integrations/actions/a1/execute"))
                        .header("content-type", "application/json")
                        .body(Body::from(format!("{{\"n\":{i}}}")))
                        .unwrap()
                } else {
                    Request::get(format!("{base}/api/v2/users?pageNumber={}", 1 + i % 5))
                        .body(Body::empty())
                        .unwrap()
                };
                let priority = [Priority::High, Priority::Normal, Priority::Low][i % 3];
                request.extensions_mut().insert(priority);
                client.oneshot(request).await.map(|r| r.status())
            })
        })
        .collect();
    // The mock ignores idempotency keys, as Genesys does: a data action
    // answered 502 may have run, so it is not sent again and its caller is
    // told the outcome is unknown; every other fault is retried.
    let mut unknown = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(status) => assert_eq!(status, StatusCode::OK),
            Err(err) => {
                let outcome = tower_cx::error::OutcomeUnknown::find(err.as_ref()).expect("typed");
                assert_eq!(outcome.status(), Some(StatusCode::BAD_GATEWAY));
                assert_eq!(outcome.attempt(), 1);
                unknown += 1;
            }
        }
    }
    assert_eq!(unknown, 3, "the three scripted 502s");
    let counters = mock.counters();
    assert_eq!(counters.retry_after_violations, 0, "{counters:?}");
    assert_eq!(counters.expired_token_requests, 0);
    assert_eq!(counters.duplicate_idempotency_keys, 0);
    let stats = handles.stats.snapshot();
    assert_eq!((stats.requests, stats.successes), (100, 97));
    assert!(
        stats.retries >= 11,
        "every other scripted fault was retried: {stats:?}"
    );
    let limiter = handles.limiter.status();
    assert_eq!((limiter.available, limiter.queued), (4, [0, 0, 0]));
}

/// Tokens live 3 s and the run lasts 20 s: the bearer layer refreshes ahead
/// of expiry and the mock never sees an expired token.
#[cfg(feature = "mock")]
#[tokio::test(start_paused = true)]
async fn a_token_lifetime_shorter_than_the_run_never_sends_an_expired_token() {
    let mock = vendor_stacks::mock_with(|c| c.token_lifetime = Duration::from_secs(3)).await;
    let client = vendor_stacks::genesys(&mock).build();
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let request = Request::get(format!("{}/api/v2/users", mock.base_url()))
                .body(Body::empty())
                .unwrap();
            calls.spawn(client.clone().oneshot(request));
        }
        while let Some(response) = calls.join_next().await {
            assert_eq!(response.unwrap().unwrap().status(), StatusCode::OK);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let counters = mock.counters();
    // Paced at the Genesys default of 300 per minute: 5 per second.
    assert_eq!(sent, 96);
    assert_eq!(counters.requests["/api/v2/users"], sent, "no 401 replays");
    assert_eq!(counters.expired_token_requests, 0);
    assert!(
        counters.tokens_issued >= 7,
        "a 3 s token over 20 s is refreshed at least 6 times: {counters:?}"
    );
}

/// `/oauth/token` issues `tok-1`, `tok-2`, ...; the API rejects `tok-1` (as
/// if it had been revoked) and accepts any later token. Counts token
/// requests and API calls.
async fn serve_rotating() -> (String, Arc<AtomicU32>, Arc<AtomicU32>) {
    let (issued, calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let counters = (issued.clone(), calls.clone());
    let base = loopback::serve(service_fn(move |req: Request<Body>| {
        let (issued, calls) = &counters;
        if req.uri().path() == "/oauth/token" {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let body =
                format!(r#"{{"access_token":"tok-{n}","token_type":"bearer","expires_in":3600}}"#);
            return answer(200, body);
        }
        calls.fetch_add(1, Ordering::SeqCst);
        match req.headers().get("authorization").map(|v| v.as_bytes()) {
            Some(b"Bearer tok-1") | None => answer(401, "{}"),
            Some(_) => answer(200, "{\"ok\":true}"),
        }
    }))
    .await;
    (base, issued, calls)
}

/// In the stack the retry layer replays a request whose token was
/// rejected (the bearer's own copy is off): a POST goes through with a fresh
/// token after one 401, and the replay shows in the stats as a retry.
#[tokio::test]
async fn the_stack_replays_a_request_whose_token_was_rejected_once() {
    let (base, issued, calls) = serve_rotating().await;
    let stack = Stack::genesys(&Region::custom(&base, &base), "id", "secret").unwrap();
    let handles = stack.handles();
    let client = stack.build();
    let post = Request::post(format!(
        "{base}/api/v2/analytics/conversations/details/jobs"
    ))
    .body(Body::from("{}"))
    .unwrap();
    let response = client.clone().oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "tok-1 dropped, tok-2 fetched"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "sent twice, no more");
    let stats = handles.stats.snapshot();
    assert_eq!(
        (
            stats.requests,
            stats.successes,
            stats.attempts,
            stats.retries
        ),
        (1, 1, 2, 1)
    );
    // the next request goes out once, with tok-2
    let get = Request::get(format!("{base}/api/v2/users/me"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(client.oneshot(get).await.unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

/// Who sends a request once more after a rejected token, in a stack nobody
/// observes (no handles taken, so its requests carry no context for a
/// per-request mark): the retry layer, told at build time, or the bearer
/// when the retry layer's replay is off. Either way exactly once.
#[tokio::test]
async fn an_unobserved_stack_replays_a_rejected_token_once_from_one_layer() {
    use std::sync::Mutex;
    use tower_cx::retry::{DelaySource, RetryEventKind};

    for retry_replays in [true, false] {
        let (base, issued, calls) = serve_rotating().await;
        let replays = Arc::new(Mutex::new(0));
        let seen = replays.clone();
        let retry = Stack::genesys_retry()
            .replay_rejected_token(retry_replays)
            .on_event(move |event| {
                if let RetryEventKind::RetryScheduled {
                    source: DelaySource::TokenRejected,
                    ..
                } = event.kind
                {
                    *seen.lock().unwrap() += 1;
                }
            });
        let client = Stack::genesys(&Region::custom(&base, &base), "id", "secret")
            .unwrap()
            .retry(retry)
            .build();
        let post = Request::post(format!("{base}/api/v2/conversations/calls"))
            .body(Body::from("{}"))
            .unwrap();
        let response = client.oneshot(post).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{retry_replays}");
        assert_eq!(issued.load(Ordering::SeqCst), 2, "{retry_replays}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "sent twice, no more");
        let by_retry_layer = *replays.lock().unwrap();
        assert_eq!(
            by_retry_layer,
            usize::from(retry_replays),
            "{retry_replays}"
        );
    }
}

/// `allow_origin` on the stack: the token goes to the API origin only; a
/// request for another host goes out without it (and is not replayed).
#[tokio::test]
async fn the_stack_sends_its_token_only_to_the_allowed_origin() {
    use tower_cx::auth::{ClientCredentials, TokenCache};

    let (api, _) = serve().await;
    let (elsewhere, _) = serve().await;
    let credentials =
        ClientCredentials::new(&format!("{api}/oauth/token"), "id", "secret").unwrap();
    let client = Stack::new()
        .bearer(TokenCache::new(credentials))
        .allow_origin(&api)
        .unwrap()
        .build();
    let get = |base: &str| {
        Request::get(format!("{base}/api/v2/users/me"))
            .body(Body::empty())
            .unwrap()
    };
    let response = client.clone().oneshot(get(&api)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // the other server would accept the same token: it is simply not sent
    let response = client.clone().oneshot(get(&elsewhere)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let err = Stack::new().allow_origin(&api).unwrap_err();
    assert_eq!(err.setting(), "allow_origin");
}
