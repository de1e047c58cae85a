//! A fleet of independent stack instances (each on its own thread and Tokio
//! runtime, as separate processes would be) sharing one token, one rate
//! gate and one pacing schedule through a real `redis-server`, against the
//! embedded mock.
//!
//! The tests start their own `redis-server` (from `PATH`) on a free
//! loopback port and stop it afterwards; `.ci/run` installs it. Without
//! `redis-server` they fail under CI (`CI` set) and are skipped with a
//! message elsewhere.
#![cfg(all(feature = "redis", feature = "mock"))]

#[path = "support/events.rs"]
mod events;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/upstream.rs"]
mod upstream;
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_cx::auth::{source_fn, ClientCredentials, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::fleet::{Deployment, FleetEvent, RedisFleet};
use tower_cx::mock::MockServer;
use tower_cx::priority::{
    LimiterEvent, Pacer, PacerFuture, Priority, PriorityLimitHandle, PriorityLimitLayer,
    Reservation,
};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::{CxService, Stack};
use tower_cx::status::StatusBoard;

use events::EventCapture;
use redis_server::{prefix, Backend, RedisServer};
use upstream::{status, Scripted};

/// What the tests need to reach the mock from another runtime.
#[derive(Clone)]
struct Upstream {
    base: String,
    token_url: String,
    client_id: String,
    client_secret: String,
}

impl Upstream {
    fn of(mock: &MockServer) -> Self {
        let config = mock.config();
        Self {
            base: mock.base_url(),
            token_url: format!("{}/oauth/token", mock.base_url()),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        }
    }

    fn users(&self) -> Request<Body> {
        Request::get(format!("{}/api/v2/users?pageSize=1", self.base))
            .body(Body::empty())
            .unwrap()
    }
}

type Events = EventCapture<FleetEvent>;

/// One fleet member: its own Redis connection, token cache and limiter.
struct Member {
    client: CxService,
    tokens: TokenCache,
    limiter_events: EventCapture<LimiterEvent>,
}

fn member(fleet: &RedisFleet, upstream: &Upstream, pacing: Option<u32>) -> Member {
    let credentials = ClientCredentials::new(
        &upstream.token_url,
        upstream.client_id.clone(),
        upstream.client_secret.clone(),
    )
    .unwrap();
    let tokens = TokenCache::new(fleet.client_credentials(credentials));
    let limiter_events = EventCapture::new();
    let mut limiter = PriorityLimitLayer::new(8)
        .share_gate(fleet.gate("api"))
        .on_event(limiter_events.recorder());
    if let Some(per_second) = pacing {
        limiter = limiter.pacer(fleet.pacer("api", per_second, Duration::from_secs(1)));
    }
    let client = Stack::new()
        .retry(
            RetryLayer::new()
                .max_attempts(6)
                .backoff(Backoff::exponential(Duration::from_millis(20))),
        )
        .limiter(limiter)
        .bearer(tokens.clone())
        .timeout(Duration::from_secs(5))
        .build();
    Member {
        client,
        tokens,
        limiter_events,
    }
}

fn fleet(url: &str, prefix: &str, events: &Events) -> RedisFleet {
    RedisFleet::new(url)
        .unwrap()
        .prefix(prefix)
        .on_event(events.recorder())
}

/// The members of one test's fleet: the Redis server and key prefix they
/// share, the fleet events they report, and the mock they call.
#[derive(Clone)]
struct TestFleet {
    backend: Backend,
    url: String,
    prefix: String,
    events: Events,
    upstream: Upstream,
}

impl TestFleet {
    fn new(backend: &Backend, test: &str, mock: &MockServer) -> Self {
        Self {
            backend: backend.clone(),
            url: backend.url().to_owned(),
            prefix: prefix(test),
            events: Events::new(),
            upstream: Upstream::of(mock),
        }
    }

    /// A new member, with its own Redis connection; pacing at `pacing` per
    /// second if any.
    fn member(&self, pacing: Option<u32>) -> Member {
        member(&self.fleet(), &self.upstream, pacing)
    }

    /// A new member's own connection to the fleet's Redis.
    fn fleet(&self) -> RedisFleet {
        self.backend
            .connect()
            .prefix(self.prefix.clone())
            .on_event(self.events.recorder())
    }

    /// Run `work` for `n` new members, each on its own thread and Tokio
    /// runtime (as separate processes would be), and collect what each
    /// returns.
    async fn run<T, F, Fut>(&self, n: usize, pacing: Option<u32>, work: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(Member, Upstream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let work = Arc::new(work);
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (work, members) = (work.clone(), self.clone());
                std::thread::spawn(move || {
                    let member = members.member(pacing);
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(work(member, members.upstream))
                })
            })
            .collect();
        let joined = move || threads.into_iter().map(|t| t.join().unwrap()).collect();
        tokio::task::spawn_blocking(joined).await.unwrap()
    }
}

/// Whether `condition` holds within `tries` looks, `step` apart (real time:
/// the fleet's state lives in a Redis server outside the test's clock).
async fn eventually(tries: u32, step: Duration, mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if condition() {
            return true;
        }
        tokio::time::sleep(step).await;
    }
    condition()
}

#[tokio::test]
async fn the_fleet_makes_one_token_request_per_refresh() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    one_token_request_per_refresh(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_the_fleet_makes_one_token_request_per_refresh() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    one_token_request_per_refresh(cluster).await;
}

async fn one_token_request_per_refresh(backend: Backend) {
    // 6 s tokens are due for refresh with 3 s left: over 4.5 s the fleet
    // needs exactly two tokens, however many members it has.
    let mock = vendor_stacks::mock_with(|c| c.token_lifetime = Duration::from_secs(6)).await;
    let members = TestFleet::new(&backend, "token", &mock);
    let refreshes = members
        .run(3, None, |member, upstream| async move {
            let started = tokio::time::Instant::now();
            while started.elapsed() < Duration::from_millis(4500) {
                let response = member
                    .client
                    .clone()
                    .oneshot(upstream.users())
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            member.tokens.status().refresh_count
        })
        .await;
    let counters = mock.counters();
    assert_eq!(
        counters.tokens_issued, 2,
        "one token request per refresh for the fleet"
    );
    assert_eq!(counters.expired_token_requests, 0);
    assert_eq!(refreshes, [2, 2, 2], "every member took both tokens");
    let events = members.events.all();
    let fetched = events
        .iter()
        .filter(|e| **e == FleetEvent::TokenFetched)
        .count();
    assert_eq!(fetched, 2);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, FleetEvent::Degraded { .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_seen_by_one_member_pauses_the_others() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    a_rate_limit_pauses_the_fleet(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_a_rate_limit_seen_by_one_member_pauses_the_others() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    a_rate_limit_pauses_the_fleet(cluster).await;
}

async fn a_rate_limit_pauses_the_fleet(backend: Backend) {
    // One token for the fleet, 8 requests per 2 s window; 6 workers with
    // think time send about 24 per window: the fleet runs into the limit,
    // and whoever is told to wait tells the others.
    let mock = vendor_stacks::mock_with(|c| {
        c.rate_limit = 8;
        c.rate_window = Duration::from_secs(2);
    })
    .await;
    let members = TestFleet::new(&backend, "gate", &mock);
    let reports = members
        .run(3, None, |member, upstream| async move {
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..2 {
                let (client, upstream) = (member.client.clone(), upstream.clone());
                workers.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let mut ok = 0;
                    while started.elapsed() < Duration::from_secs(5) {
                        let response = client.clone().oneshot(upstream.users()).await.unwrap();
                        if response.status() == StatusCode::OK {
                            ok += 1;
                        }
                        // Think time: a member that learns of the wait
                        // only from its own 429 would send into it.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    ok
                });
            }
            let mut ok = 0;
            while let Some(n) = workers.join_next().await {
                ok += n.unwrap();
            }
            let received = member
                .limiter_events
                .all()
                .iter()
                .filter(|e| matches!(e, LimiterEvent::GateClosedElsewhere { .. }))
                .count();
            (ok, received)
        })
        .await;
    let counters = mock.counters();
    assert_eq!(counters.tokens_issued, 1);
    assert_eq!(
        counters.retry_after_violations, 0,
        "no member sent inside an announced wait: {counters:?}"
    );
    let ok: u64 = reports.iter().map(|(ok, _)| *ok as u64).sum();
    assert!(ok >= 16, "the fleet used the windows it had: {reports:?}");
    let informed = reports.iter().filter(|(_, received)| *received > 0).count();
    assert!(informed >= 2, "members were paused by others: {reports:?}");
    assert!(members.events.all().iter().any(|e| matches!(
        e,
        FleetEvent::PauseReceived {
            component: "gate",
            ..
        }
    )));
}

#[tokio::test]
async fn fleet_pacing_holds_the_configured_rate_over_a_minute() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    pacing_holds_the_rate(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_fleet_pacing_holds_the_configured_rate_over_a_minute() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    pacing_holds_the_rate(cluster).await;
}

async fn pacing_holds_the_rate(backend: Backend) {
    let mock = vendor_stacks::mock_with(|c| c.rate_limit = 1_000_000).await;
    let members = TestFleet::new(&backend, "pace", &mock);
    // 20 per second for the fleet; each member alone would happily send
    // far more (8 workers, no latency).
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let counts = members
        .run(3, Some(20), move |member, upstream| async move {
            // warm up the token and the connections before the clock starts
            member
                .client
                .clone()
                .oneshot(upstream.users())
                .await
                .unwrap();
            tokio::time::sleep_until(start).await;
            let end = start + Duration::from_secs(60);
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (client, upstream) = (member.client.clone(), upstream.clone());
                workers.spawn(async move {
                    let mut done = 0u64;
                    loop {
                        let call = client.clone().oneshot(upstream.users());
                        match tokio::time::timeout_at(end, call).await {
                            Ok(response) => {
                                assert_eq!(response.unwrap().status(), StatusCode::OK);
                                done += 1;
                            }
                            Err(_) => return done,
                        }
                    }
                });
            }
            let mut done = 0;
            while let Some(n) = workers.join_next().await {
                done += n.unwrap();
            }
            done
        })
        .await;
    let total: u64 = counts.iter().sum();
    let rate = total as f64 / 60.0;
    println!("fleet pacing: {total} requests in 60 s = {rate:.2}/s (configured 20/s), per member {counts:?}");
    assert!(
        (rate - 20.0).abs() <= 0.4,
        "within 2 % of 20/s: {rate:.2}/s ({counts:?})"
    );
    assert!(
        counts.iter().all(|&n| n > 200),
        "every member got a share: {counts:?}"
    );
    assert!(!members
        .events
        .all()
        .iter()
        .any(|e| matches!(e, FleetEvent::Degraded { .. })));
}

#[tokio::test]
async fn a_dead_lock_holder_is_taken_over_after_its_lock_expires() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let mock = MockServer::start().await.unwrap();
    let upstream = Upstream::of(&mock);
    let (url, prefix) = (redis.url(), prefix("lock"));
    let events = Events::new();

    // Member A takes the refresh lock, then dies mid-refresh: its token
    // request never ends and its runtime (its process) goes away.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let a_fleet = fleet(&url, &prefix, &events).lock_ttl(Duration::from_millis(800));
    let a = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let started_tx = Mutex::new(Some(started_tx));
            let hanging = source_fn(move || {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    tx.send(()).unwrap();
                }
                std::future::pending::<Result<tower_cx::auth::Token, TokenError>>()
            });
            let cache = TokenCache::new(a_fleet.token_source(hanging, "shared"));
            let _ = tokio::time::timeout(Duration::from_millis(300), cache.refresh()).await;
        });
        drop(runtime); // the member is gone, its lock stays behind
    });
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    a.join().unwrap();

    // Member B needs a token now: it waits for the lock to expire, then
    // fetches it itself.
    let b_fleet = fleet(&url, &prefix, &events).lock_ttl(Duration::from_millis(800));
    let credentials = ClientCredentials::new(
        &upstream.token_url,
        upstream.client_id.clone(),
        upstream.client_secret.clone(),
    )
    .unwrap();
    let tokens = TokenCache::new(b_fleet.token_source(credentials, "shared"));
    tokens.refresh().await.unwrap();
    assert_eq!(mock.counters().tokens_issued, 1);
    let events = events.all();
    assert!(events.contains(&FleetEvent::LockTakenOver), "{events:?}");
    assert!(events.contains(&FleetEvent::TokenFetched), "{events:?}");
}

#[tokio::test]
async fn requests_keep_succeeding_while_redis_is_down_and_shared_state_resumes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let port = redis.port;
    let mock = MockServer::start().await.unwrap();
    let upstream = Upstream::of(&mock);
    let events = Events::new();
    let audited = EventCapture::<tower_cx::audit::AuditEvent>::new();
    let audit = tower_cx::audit::AuditLayer::new(audited.sink());
    let record = audit.emitter().handler();
    let seen = events.clone();
    let fleet = fleet(&redis.url(), &prefix("down"), &events)
        .op_timeout(Duration::from_millis(200))
        .retry_redis_after(Duration::from_millis(200))
        .on_event(move |event: &FleetEvent| {
            seen.push(event.clone());
            record(event);
        });
    let member = member(&fleet, &upstream, Some(50));
    let call = |member: &Member| {
        let request = upstream.users();
        let client = member.client.clone();
        async move { client.oneshot(request).await.unwrap().status() }
    };
    for _ in 0..5 {
        assert_eq!(call(&member).await, StatusCode::OK);
    }
    redis.stop();
    for _ in 0..20 {
        assert_eq!(
            call(&member).await,
            StatusCode::OK,
            "requests go on without Redis"
        );
    }
    // A new token is needed while Redis is down: fetched locally.
    member.tokens.refresh().await.unwrap();
    {
        let events = events.all();
        let degraded: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                FleetEvent::Degraded { component, reason } => Some((*component, reason.clone())),
                _ => None,
            })
            .collect();
        assert!(degraded.iter().any(|(c, _)| *c == "pacer"), "{events:?}");
        assert!(degraded.iter().any(|(c, _)| *c == "token"), "{events:?}");
        assert!(
            degraded.iter().all(|(_, why)| why.starts_with("redis")),
            "{degraded:?}"
        );
    }
    let _redis = RedisServer::start_on(port).unwrap();
    // Shared state resumes once Redis is back (after the retry wait).
    let mut restored = false;
    for _ in 0..100 {
        assert_eq!(call(&member).await, StatusCode::OK);
        restored = events
            .all()
            .contains(&FleetEvent::Restored { component: "pacer" });
        if restored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restored, "{:?}", events.all());
    // The audit stream says why, and when it ended.
    let degraded = audited.named("fleet.degraded");
    assert!(
        degraded.iter().any(|e| e["component"] == "pacer"),
        "{:?}",
        audited.json()
    );
    assert!(!audited.named("fleet.restored").is_empty());
}

#[tokio::test]
async fn a_breaker_tripping_on_one_member_opens_the_breakers_of_the_fleet() {
    use tower_cx::breaker::{BreakerState, CircuitBreakerLayer};
    use tower_cx::error::CircuitOpen;

    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let (url, prefix) = (redis.url(), prefix("breaker"));
    let events = Events::new();
    // Three members, each with its own Redis connection and breaker; the
    // upstream of the first fails, the others' is healthy.
    let members: Vec<_> = (0..3)
        .map(|i| {
            let layer = CircuitBreakerLayer::new()
                .consecutive_failures(2)
                .share_state(fleet(&url, &prefix, &events).breaker("upstream"));
            let handle = layer.handle();
            let code = if i == 0 { 503 } else { 200 };
            let service = tower::Layer::layer(&layer, Scripted::always(status(code)));
            (service, handle)
        })
        .collect();
    // Every member joins with a first request (the others succeed).
    for (service, _) in &members[1..] {
        let response = service.clone().oneshot(Request::new(Body::empty())).await;
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    // No wait for the subscriptions: a member that subscribes after the
    // trip finds it in the key, which expires with the open time.
    let (failing, failing_handle) = &members[0];
    for _ in 0..2 {
        let response = failing.clone().oneshot(Request::new(Body::empty())).await;
        assert_eq!(response.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(matches!(failing_handle.state(), BreakerState::Open { .. }));
    // The others hear of it and fail fast, without a failure of their own.
    for (service, handle) in &members[1..] {
        let open = eventually(200, Duration::from_millis(10), || {
            matches!(handle.state(), BreakerState::Open { .. })
        })
        .await;
        assert!(open, "{:?}", handle.state());
        let refused = service
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap_err();
        assert!(refused.downcast_ref::<CircuitOpen>().is_some());
        assert_eq!(handle.counts().trips, 0);
        assert_eq!(handle.counts().failures, 0);
    }
    let received = events
        .all()
        .iter()
        .filter(|e| {
            matches!(
                e,
                FleetEvent::PauseReceived {
                    component: "breaker",
                    ..
                }
            )
        })
        .count();
    // (a member subscribing just then may hear it twice: from the key and
    // from the channel; a pause is idempotent)
    assert!(received >= 2, "each other member heard it");
}

/// Run one Redis command on the test's own connection.
async fn redis_cmd<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

/// The fleet's stored token key under `prefix` (not the lock).
async fn token_key(url: &str, prefix: &str) -> String {
    let keys: Vec<String> =
        redis_cmd(url, redis::cmd("KEYS").arg(format!("{{{prefix}:token:*"))).await;
    let mut keys: Vec<_> = keys.into_iter().filter(|k| !k.ends_with(":lock")).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.remove(0)
}

#[tokio::test]
async fn a_token_the_api_refuses_is_removed_from_redis_and_replaced_once_for_the_fleet() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let mock = MockServer::start().await.unwrap();
    let members = TestFleet::new(&Backend::server(&redis), "poison", &mock);
    // A first member stores a good token, then the stored token is
    // overwritten with one the API refuses (a revoked token does the same).
    let first = members.member(None);
    let response = first
        .client
        .clone()
        .oneshot(members.upstream.users())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let key = token_key(&members.url, &members.prefix).await;
    let bogus = r#"{"access_token":"bogus-token","due_ms":60000}"#;
    let _: () = redis_cmd(
        &members.url,
        redis::cmd("SET")
            .arg(&key)
            .arg(bogus)
            .arg("PX")
            .arg(3_600_000),
    )
    .await;

    // Three fresh members take the stored token, get 401 and recover: the
    // fleet makes one token request for the refused token.
    let statuses = members
        .run(3, None, |member, upstream| async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let response = member
                    .client
                    .clone()
                    .oneshot(upstream.users())
                    .await
                    .unwrap();
                statuses.push(response.status().as_u16());
            }
            statuses
        })
        .await;
    assert_eq!(statuses, vec![vec![200, 200, 200]; 3]);
    assert_eq!(
        mock.counters().tokens_issued,
        2,
        "one for the refused token"
    );
    let stored: String = redis_cmd(&redis.url(), redis::cmd("GET").arg(&key)).await;
    assert!(!stored.contains("bogus-token"));
    let events = members.events.all();
    let removed = events
        .iter()
        .filter(|e| **e == FleetEvent::RejectedTokenRemoved)
        .count();
    assert_eq!(removed, 1, "{events:?}");
}

#[tokio::test]
async fn a_slow_token_fetch_keeps_its_lock_and_the_fleet_fetches_once() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let (url, prefix) = (redis.url(), prefix("renew"));
    let events = Events::new();
    // The fetch takes three times the lock's TTL.
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let source = |fetches: Arc<std::sync::atomic::AtomicUsize>| {
        source_fn(move || {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(900)).await;
                Ok::<_, TokenError>(tower_cx::auth::Token::new(
                    format!("tok-{n}"),
                    Duration::from_secs(3600),
                ))
            }
        })
    };
    let ttl = Duration::from_millis(300);
    let a = TokenCache::new(
        fleet(&url, &prefix, &events)
            .lock_ttl(ttl)
            .token_source(source(fetches.clone()), "shared"),
    );
    let b = TokenCache::new(
        fleet(&url, &prefix, &events)
            .lock_ttl(ttl)
            .token_source(source(fetches.clone()), "shared"),
    );
    let first = tokio::spawn(async move { a.refresh().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.refresh().await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    let events = events.all();
    assert!(!events.contains(&FleetEvent::LockTakenOver), "{events:?}");
    assert!(events.contains(&FleetEvent::TokenShared), "{events:?}");
}

#[tokio::test]
async fn a_half_open_subscription_is_detected_by_its_keepalive() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let events = Events::new();
    let prefix = prefix("keepalive");
    let share = fleet(&redis.url(), &prefix, &events)
        .op_timeout(Duration::from_millis(200))
        .keepalive(Duration::from_millis(100))
        .gate("api");
    let limiter = PriorityLimitLayer::new(1).share_gate(share);
    let service = tower::Layer::layer(&limiter, Scripted::new([]));
    // the first request subscribes
    service
        .clone()
        .oneshot(Request::new(Body::empty()))
        .await
        .unwrap();
    // wait until the subscription stands
    let channel = format!("{{{prefix}:gate:api}}:closed");
    for _ in 0..250 {
        let (_, subscribers): (String, u32) = redis_cmd(
            &redis.url(),
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel),
        )
        .await;
        if subscribers == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let degraded = |events: &Events| {
        events.all().iter().any(|e| {
            matches!(e, FleetEvent::Degraded { component: "gate", reason }
                if reason.contains("ping"))
        })
    };
    // Redis stops answering without closing the connection.
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let detected = eventually(100, Duration::from_millis(20), || degraded(&events)).await;
    signal("-CONT");
    assert!(detected, "{:?}", events.all());
    // and it subscribes again once Redis answers
    let restored = eventually(200, Duration::from_millis(20), || {
        events
            .all()
            .contains(&FleetEvent::Restored { component: "gate" })
    })
    .await;
    assert!(restored, "{:?}", events.all());
    drop(service);
}

#[tokio::test]
async fn a_standalone_redis_passes_the_cluster_check() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let events = Events::new();
    let fleet = fleet(&redis.url(), &prefix("check"), &events);
    assert_eq!(fleet.check().await, Ok(Deployment::Standalone));
}

#[tokio::test]
async fn a_cluster_is_found_from_one_node_or_named_and_both_share_its_state() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    // the first member names the cluster, the second gives one node's URL
    let (named, found) = (cluster.connect(), cluster.connect());
    assert_eq!(named.check().await, Ok(Deployment::Cluster));
    assert_eq!(found.check().await, Ok(Deployment::Cluster));
    // a pause announced through one reaches a limiter on the other
    let prefix = prefix("cluster-check");
    let a = PriorityLimitLayer::new(1).share_gate(named.prefix(prefix.clone()).gate("api"));
    let b = PriorityLimitLayer::new(1).share_gate(found.prefix(prefix).gate("api"));
    let (a_handle, b_handle) = (a.handle(), b.handle());
    let a_service = tower::Layer::layer(&a, Scripted::new([]));
    let b_service = tower::Layer::layer(&b, Scripted::new([]));
    for service in [&a_service, &b_service] {
        service
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
    }
    // b's subscription stands once a pause announced now reaches it
    let reached = eventually(100, Duration::from_millis(50), || {
        a_handle.close_gate(Duration::from_secs(60));
        b_handle.status().gate_closed_for > Some(Duration::from_secs(30))
    })
    .await;
    assert!(reached, "{:?}", b_handle.status());
}

#[tokio::test]
async fn an_unreachable_redis_is_told_by_check_without_its_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fleet = RedisFleet::new(&format!("redis://:pw-Q7Z@127.0.0.1:{port}")).unwrap();
    let err = fleet.check().await.unwrap_err();
    assert!(err.reason().starts_with("redis"), "{err}");
    assert!(!err.to_string().contains("Q7Z"), "{err}");
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_wrong_redis_password_falls_back_without_printing_the_url() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let mock = MockServer::start().await.unwrap();
    let upstream = Upstream::of(&mock);
    let events = Events::new();
    // the test server has no password: AUTH with one fails
    let url = redis
        .url()
        .replacen("redis://", "redis://:wrong-pass-Q7Z@", 1);
    let fleet = fleet(&url, &prefix("password"), &events);
    assert!(!format!("{fleet:?}").contains("Q7Z"));
    let member = member(&fleet, &upstream, Some(50));
    for _ in 0..3 {
        let response = member
            .client
            .clone()
            .oneshot(upstream.users())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let events = events.all();
    assert!(
        events.iter().any(|e| matches!(
            e,
            FleetEvent::Degraded {
                component: "token",
                ..
            }
        )),
        "{events:?}"
    );
    assert!(!format!("{events:?}").contains("Q7Z"), "{events:?}");
    assert!(!format!("{events:?}").contains("127.0.0.1"), "{events:?}");
}

/// Three members, each on its own thread and runtime, send `requests`
/// requests one after another to an upstream that always answers 503,
/// each with the retry budget `budget()` makes (and, for a fleet's, its
/// fleet, connected before the storm starts); returns the first attempts
/// and the retries the upstream saw.
async fn storm<B, F>(requests: usize, budget: F) -> (usize, usize)
where
    B: tower_cx::retry::Budget,
    F: Fn() -> (B, Option<RedisFleet>) + Send + Sync + 'static,
{
    // (each answer takes a moment, as over a network: the members'
    // settling tasks get to run)
    let upstream = Scripted::always(status(503).after(Duration::from_millis(2)));
    let budget = Arc::new(budget);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (upstream, budget) = (upstream.clone(), budget.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let (budget, fleet) = budget();
                    if let Some(fleet) = fleet {
                        fleet.check().await.unwrap();
                    }
                    let retry = RetryLayer::new()
                        .max_attempts(4)
                        .backoff(Backoff::constant(Duration::from_millis(1)))
                        .budget(budget);
                    let service = tower::Layer::layer(&retry, upstream);
                    for _ in 0..requests {
                        let response = service
                            .clone()
                            .oneshot(
                                Request::get("http://upstream/")
                                    .body(Body::empty())
                                    .unwrap(),
                            )
                            .await
                            .unwrap();
                        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                    }
                })
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap()))
        .await
        .unwrap();
    let first = 3 * requests;
    (first, upstream.count() - first)
}

#[tokio::test]
async fn a_shared_retry_budget_holds_the_retries_of_the_whole_fleet() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    a_shared_retry_budget_holds_the_fleet(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_a_shared_retry_budget_holds_the_retries_of_the_whole_fleet() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    a_shared_retry_budget_holds_the_fleet(cluster).await;
}

async fn a_shared_retry_budget_holds_the_fleet(backend: Backend) {
    use tower_cx::retry::RetryBudget;

    // 10 s window, a reserve of 2 retries per second (20), 10 % of first
    // attempts; each member wants 3 retries per request, far more.
    let (ttl, min_per_sec, percent, batch) = (Duration::from_secs(10), 2, 0.1, 4u32);
    let requests = 60;
    // Alone, each member has its own reserve: 3 x (20 + 6) retries.
    let (first, local) = storm(requests, move || {
        (RetryBudget::new(ttl, min_per_sec, percent).unwrap(), None)
    })
    .await;
    assert_eq!((first, local), (180, 78));
    // Shared: one reserve and 10 % of the fleet's first attempts (20 + 18),
    // plus at most `batch` retries per member the fleet had not seen yet.
    let events = Events::new();
    let prefix = prefix("budget");
    let (recorder, members) = (events.recorder(), backend.clone());
    let (first, shared) = storm(requests, move || {
        let fleet = members
            .connect()
            .prefix(prefix.clone())
            .on_event(recorder.clone());
        let budget = fleet
            .retry_budget("api", ttl, min_per_sec, percent)
            .unwrap()
            .batch(batch);
        (budget, Some(fleet))
    })
    .await;
    println!("retries against an always-failing upstream, 3 members x {requests} requests: {local} with local budgets, {shared} with one fleet budget");
    let budget = 20 + first / 10;
    assert!(
        shared <= budget + 3 * batch as usize,
        "{shared} retries for a fleet budget of {budget} (+ {})",
        3 * batch
    );
    // the reserve is the fleet's: used, once
    assert!(shared >= 20, "{shared}");
    assert!(
        !events
            .all()
            .iter()
            .any(|e| matches!(e, FleetEvent::Degraded { .. })),
        "{:?}",
        events.all()
    );
}

#[tokio::test]
async fn members_see_each_other_and_forget_one_that_stopped_beating() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    members_come_and_go(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_members_see_each_other_and_forget_one_that_stopped_beating() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    members_come_and_go(cluster).await;
}

async fn members_come_and_go(backend: Backend) {
    let mock = MockServer::start().await.unwrap();
    let fleet = TestFleet::new(&backend, "members", &mock);
    // a heartbeat every 200 ms: a member is listed for 600 ms after its last
    let memberships: Vec<_> = ["gw-b", "gw-a", "gw-c"]
        .into_iter()
        .map(|name| {
            fleet
                .fleet()
                .keepalive(Duration::from_millis(200))
                .membership(name)
        })
        .collect();
    assert_eq!(memberships[0].ttl(), Duration::from_millis(600));
    assert_eq!(memberships[0].members(), None, "nothing seen before a beat");
    for membership in &memberships {
        membership.beat().await.unwrap();
    }
    let everyone = memberships[0].beat().await.unwrap();
    assert_eq!(everyone, ["gw-a", "gw-b", "gw-c"]);
    assert_eq!(memberships[0].members().unwrap(), everyone);
    // as the status page shows them
    let board = StatusBoard::new().fleet_membership(memberships[0].clone());
    let shown = board.snapshot().fleet.unwrap();
    assert_eq!(shown.name, "gw-b");
    assert_eq!(shown.member.as_deref(), Some("gw-b"));
    assert_eq!(shown.members.unwrap(), everyone);

    // gw-a and gw-c stop; gw-b keeps beating past their time
    let beating = memberships[0].spawn();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        eventually(50, Duration::from_millis(20), || {
            memberships[0].members().as_deref() == Some(&["gw-b".to_owned()][..])
        })
        .await,
        "{:?}",
        memberships[0].members()
    );
    beating.abort();
}

/// A pacer that counts its questions (each one Redis round trip once the
/// script is loaded) and the deferrals among the answers.
struct Counted {
    pacer: tower_cx::fleet::RedisPacer,
    asked: Arc<AtomicU64>,
    deferred: Arc<AtomicU64>,
}

impl Pacer for Counted {
    fn reserve(&self, priority: Priority) -> PacerFuture {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let (answer, deferred) = (self.pacer.reserve(priority), self.deferred.clone());
        Box::pin(async move {
            let answer = answer.await;
            if matches!(answer, Reservation::Deferred(_)) {
                deferred.fetch_add(1, Ordering::Relaxed);
            }
            answer
        })
    }
}

async fn answer_at_once(_: Request<Body>) -> Result<http::Response<()>, std::convert::Infallible> {
    Ok(http::Response::new(()))
}

#[tokio::test]
async fn a_high_priority_request_never_waits_behind_the_low_priority_backlog_of_the_fleet() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    // 100 requests per second for the fleet of 3; 200 per second offered for
    // 1.5 s, high, normal and low in turn on every member; queues of 40
    const RATE: u32 = 100;
    const PER_MEMBER: u32 = 100;
    let prefix = prefix("priority");
    let events = Events::new();
    let (asked, deferred) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Arc<OnceLock<Vec<PriorityLimitHandle>>> = Arc::default();
    let high_shed_over_low = Arc::new(AtomicU64::new(0));
    let members: Vec<(RedisFleet, PriorityLimitLayer)> = (0..3)
        .map(|_| {
            let fleet = fleet(&redis.url(), &prefix, &events);
            let pacer = Counted {
                pacer: fleet.pacer("api", RATE, Duration::from_secs(1)),
                asked: asked.clone(),
                deferred: deferred.clone(),
            };
            let (handles, violations) = (handles.clone(), high_shed_over_low.clone());
            let layer = PriorityLimitLayer::new(8)
                .max_queue(40)
                .pacer(pacer)
                .on_event(move |event| {
                    if let LimiterEvent::Shed {
                        priority: Priority::High,
                        ..
                    } = event
                    {
                        let all = handles.get().expect("every member's handle");
                        if all.iter().any(|h| h.status().queued[0] > 0) {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            (fleet, layer)
        })
        .collect();
    let _ = handles.set(members.iter().map(|(_, l)| l.handle()).collect());
    let start = std::time::Instant::now() + Duration::from_millis(500);
    let step = Duration::from_secs(1) / (2 * RATE);
    let threads: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(m, (fleet, layer))| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    fleet.check().await.unwrap(); // connected before the clock starts
                    let service = layer.layer(tower::service_fn(answer_at_once));
                    let start = tokio::time::Instant::from_std(start);
                    let mut tasks = Vec::new();
                    for k in 0..PER_MEMBER {
                        let at = start + step * (3 * k + m as u32);
                        let priority =
                            [Priority::High, Priority::Normal, Priority::Low][(k as usize + m) % 3];
                        let service = service.clone();
                        tasks.push(tokio::spawn(async move {
                            tokio::time::sleep_until(at).await;
                            let mut request = Request::new(Body::empty());
                            request.extensions_mut().insert(priority);
                            let answered = service.oneshot(request).await.is_ok();
                            (priority, answered, at.elapsed())
                        }));
                    }
                    let mut seen = Vec::new();
                    for task in tasks {
                        seen.push(task.await.unwrap());
                    }
                    seen
                })
            })
        })
        .collect();
    let seen: Vec<_> = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
    .await
    .unwrap();
    let p50 = |priority: Priority| {
        let mut waits: Vec<_> = seen
            .iter()
            .filter(|(p, answered, _)| *p == priority && *answered)
            .map(|(_, _, wait)| *wait)
            .collect();
        waits.sort();
        (waits.len(), waits.get(waits.len() / 2).copied())
    };
    let (high, normal, low) = (
        p50(Priority::High),
        p50(Priority::Normal),
        p50(Priority::Low),
    );
    let answered = high.0 + normal.0 + low.0;
    let (asked, deferred) = (
        asked.load(Ordering::Relaxed),
        deferred.load(Ordering::Relaxed),
    );
    println!(
        "fleet priority: answered (count, p50) high {high:?}, normal {normal:?}, low {low:?}; \
         {asked} pacer round trips ({deferred} deferrals) for {answered} requests = {:.2} per request",
        asked as f64 / answered as f64
    );
    let events = events.all();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, FleetEvent::Degraded { .. })),
        "paced through Redis: {events:?}"
    );
    assert_eq!(high.0, PER_MEMBER as usize, "every high request answered");
    let (Some(high_p50), Some(low_p50)) = (high.1, low.1) else {
        panic!("some low requests answered: {low:?}");
    };
    assert!(high_p50 * 5 <= low_p50, "{high_p50:?} vs {low_p50:?}");
    assert!(normal.1.is_some_and(|n| high_p50 <= n && n <= low_p50));
    assert_eq!(high_shed_over_low.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_redis_schedule_keeps_its_near_future_for_higher_priorities() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let events = Events::new();
    let fleet = fleet(&redis.url(), &prefix("horizon"), &events);
    // one slot a second: the answers below come within it
    let second = Duration::from_secs(1);
    let pacer = fleet.pacer("api", 1, second);
    let near = |answer: Reservation| match answer {
        Reservation::Granted(wait) => ("granted", second.saturating_sub(wait)),
        Reservation::Deferred(wait) => ("deferred", second.saturating_sub(wait)),
    };
    assert_eq!(
        pacer.reserve(Priority::Low).await,
        Reservation::Granted(Duration::ZERO)
    );
    // the next slot is a second ahead: low is told to ask again then,
    // normal books it (one interval ahead), high books the one after
    let (low, normal) = (
        pacer.reserve(Priority::Low).await,
        pacer.reserve(Priority::Normal).await,
    );
    let (low, normal) = (near(low), near(normal));
    assert!(
        low.0 == "deferred" && low.1 < Duration::from_millis(200),
        "{low:?}"
    );
    assert!(
        normal.0 == "granted" && normal.1 < Duration::from_millis(200),
        "{normal:?}"
    );
    assert!(matches!(
        pacer.reserve(Priority::Normal).await,
        Reservation::Deferred(_)
    ));
    match pacer.reserve(Priority::High).await {
        Reservation::Granted(wait) => assert!(wait > second && wait <= 2 * second, "{wait:?}"),
        deferred => panic!("high is never deferred: {deferred:?}"),
    }
    // a lifted horizon books any slot
    let wide = pacer.horizon(Priority::Low, Duration::MAX);
    assert!(matches!(
        wide.reserve(Priority::Low).await,
        Reservation::Granted(wait) if wait > 2 * second
    ));
    assert!(events.all().is_empty(), "{:?}", events.all());
}

#[tokio::test]
async fn a_costly_request_moves_the_fleet_schedule_on_by_its_cost() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    let events = Events::new();
    let fleet = fleet(&redis.url(), &prefix("charge"), &events);
    // one slot a second: the answers below come within it
    let second = Duration::from_secs(1);
    let pacer = fleet.pacer("api", 1, second);
    assert_eq!(
        pacer.reserve(Priority::High).await,
        Reservation::Granted(Duration::ZERO)
    );
    // the request on that slot costs 3. Charged where no runtime runs a
    // task, the two slots wait for this member's next reservation, which
    // writes them first: the next slot is three seconds on, not one
    let charging = pacer.clone();
    std::thread::spawn(move || charging.charge(2))
        .join()
        .unwrap();
    match pacer.reserve(Priority::High).await {
        Reservation::Granted(wait) => {
            assert!(wait > 2 * second && wait <= 3 * second, "{wait:?}")
        }
        deferred => panic!("high is never deferred: {deferred:?}"),
    }
    // charged on a runtime, a task writes it: the schedule (a slot due in
    // four seconds) moves one more on, which a low request, told when to
    // ask again, sees
    pacer.charge(1);
    let mut seen = None;
    for _ in 0..100 {
        seen = Some(pacer.reserve(Priority::Low).await);
        if matches!(seen, Some(Reservation::Deferred(wait)) if wait > 4 * second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        matches!(seen, Some(Reservation::Deferred(wait)) if wait > 4 * second && wait <= 5 * second),
        "{seen:?}"
    );
    assert!(events.all().is_empty(), "{:?}", events.all());
}

#[tokio::test]
async fn the_rate_one_member_learns_paces_every_member() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    rate_learned_by_one_paces_all(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_the_rate_one_member_learns_paces_every_member() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    rate_learned_by_one_paces_all(cluster).await;
}

async fn rate_learned_by_one_paces_all(backend: Backend) {
    let mock = MockServer::start().await.unwrap();
    let fleet = TestFleet::new(&backend, "learned-rate", &mock);
    // `a` calls a route that advertises the client's quota, 240 per 60 s
    // (one every 250 ms for the fleet); `b` calls one that advertises nothing
    let advertising = Scripted::always(
        upstream::ok()
            .header("x-ratelimit-limit", "240")
            .header("x-ratelimit-remaining", "240")
            .header("x-ratelimit-reset", "60"),
    );
    let silent = Scripted::always(upstream::ok());
    let member = |fleet: RedisFleet, upstream: &Scripted| {
        let layer = PriorityLimitLayer::new(4)
            .learn_rate()
            .pacer(fleet.learned_pacer("api"));
        (layer.handle(), layer.layer(upstream.clone()))
    };
    let (_, a) = member(fleet.fleet(), &advertising);
    let (b_handle, b) = member(fleet.fleet(), &silent);
    let get = || {
        Request::get("http://127.0.0.1/")
            .body(Body::empty())
            .unwrap()
    };
    // before anything is learned, `b` goes unpaced
    b.clone().oneshot(get()).await.unwrap();
    b.clone().oneshot(get()).await.unwrap();
    let unpaced = silent.arrivals();
    assert!(
        unpaced[1] - unpaced[0] < Duration::from_millis(200),
        "{unpaced:?}"
    );
    // one answer to `a` teaches it the rate, which it shares through Redis
    a.clone().oneshot(get()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `b` learned nothing itself, yet is paced at the rate `a` learned
    for _ in 0..4 {
        b.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(b_handle.pacing().interval, None, "b learned nothing itself");
    let arrivals = silent.arrivals();
    let gaps: Vec<_> = arrivals[2..].windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 3);
    for gap in gaps {
        // slots 250 ms apart on the Redis clock (a little scheduling slack)
        assert!(gap >= Duration::from_millis(235), "{arrivals:?}");
    }
}

#[tokio::test]
async fn a_daily_cap_seen_by_one_member_exhausts_the_fleet_until_the_same_time() {
    let Some(redis) = RedisServer::shared() else {
        return;
    };
    a_daily_cap_exhausts_the_fleet(Backend::server(&redis)).await;
}

#[tokio::test]
async fn on_a_cluster_a_daily_cap_seen_by_one_member_exhausts_the_fleet() {
    let Some(cluster) = Backend::cluster() else {
        return;
    };
    a_daily_cap_exhausts_the_fleet(cluster).await;
}

async fn a_daily_cap_exhausts_the_fleet(backend: Backend) {
    use tower_cx::error::QuotaExhausted;
    let prefix = prefix("exhausted");
    // each member has its own connection (and instance id): what one
    // learns reaches the others through Redis only
    let limiter = |upstream: Scripted| {
        let fleet = backend.connect().prefix(prefix.clone());
        let layer = PriorityLimitLayer::new(4).share_gate(fleet.gate("api"));
        let handle = layer.handle();
        (layer.layer(upstream.clone()), handle, upstream)
    };
    let request = || {
        Request::get("http://127.0.0.1/")
            .body(Body::empty())
            .unwrap()
    };
    let (a, _, _) = limiter(Scripted::always(status(429).header("retry-after", "3600")));
    let (b, b_handle, b_upstream) = limiter(Scripted::always(status(200)));
    // b has sent, so it listens and knows the fleet's state
    b.clone().oneshot(request()).await.unwrap();
    let response = a.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let told = eventually(100, Duration::from_millis(20), || {
        b_handle.quota_exhausted_until().is_some()
    })
    .await;
    assert!(told, "the other member is exhausted too");
    let err = b.oneshot(request()).await.unwrap_err();
    let exhausted = err.downcast_ref::<QuotaExhausted>().expect("typed");
    let left = exhausted.retry_after();
    assert!(
        left > Duration::from_secs(3590) && left <= Duration::from_secs(3600),
        "until the same time: {left:?}"
    );
    assert_eq!(b_upstream.count(), 1, "nothing sent after the cap");
    // a member that starts now reads the state from Redis before its
    // first request goes
    let (c, c_handle, c_upstream) = limiter(Scripted::always(status(200)));
    let err = c.oneshot(request()).await.unwrap_err();
    assert!(err.downcast_ref::<QuotaExhausted>().is_some(), "{err}");
    assert!(c_handle.quota_exhausted_until().is_some());
    assert_eq!(c_upstream.count(), 0);
    if let Backend::Server(url) = &backend {
        // beside the gate's key, in its hash slot
        let key = format!("{{{prefix}:gate:api}}:exhausted");
        let left: i64 = redis_cmd(url, redis::cmd("PTTL").arg(&key)).await;
        assert!(left > 3_590_000 && left <= 3_600_000, "{key}: {left}");
    }
}
