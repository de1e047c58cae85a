//! Metrics (feature `metrics`): scripted scenarios through the layers,
//! recorded by a `DebuggingRecorder`, with exact names, labels and values.
//!
//! Each test installs its own recorder as the thread's default
//! (`set_default_local_recorder`) on a current-thread runtime in paused
//! time: every task of the runtime, the token cache's refresh task
//! included, runs on that thread, so everything is recorded there.

#[path = "support/upstream.rs"]
mod upstream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tower::{ServiceBuilder, ServiceExt};
use tower_cx::audit::{callback, dead_letter_fn, AuditLayer, DeadLetter, FanOut};
use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::metrics::{self, MeteredDeadLetters, MetricsSampler, MetricsSink};
use tower_cx::observe::FleetEvent;
use tower_cx::priority::{Priority, PriorityLimitLayer};
use tower_cx::retry::RetryLayer;

use upstream::{ok, status, Scripted};

/// What a test recorded: counters and histograms summed over the
/// snapshots taken, and the last snapshot's gauges.
///
/// A `DebuggingRecorder` snapshot resets what it reads: counters report
/// their change since the last snapshot, histograms their new values, and
/// gauges start again from 0 (an up-down gauge then reports its change,
/// a set gauge the value set).
struct Recorded {
    snapshots: Snapshotter,
    counters: BTreeMap<String, u64>,
    histograms: BTreeMap<String, Vec<f64>>,
    gauges: BTreeMap<String, f64>,
    /// Every label value seen, for the checks on what labels may hold.
    label_values: Vec<String>,
    /// The unit each instrument was described with.
    units: BTreeMap<String, String>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshots: recorder.snapshotter(),
            counters: BTreeMap::new(),
            histograms: BTreeMap::new(),
            gauges: BTreeMap::new(),
            label_values: Vec::new(),
            units: BTreeMap::new(),
        }
    }

    /// Take a snapshot: add its counters and histograms, keep its gauges.
    fn take(&mut self) {
        self.gauges.clear();
        for (key, unit, _, value) in self.snapshots.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let labels: Vec<(&str, &str)> = key
                .labels()
                .map(|label| (label.key(), label.value()))
                .collect();
            self.label_values
                .extend(labels.iter().map(|(_, value)| (*value).to_owned()));
            let id = id(key.name(), &labels);
            if let Some(unit) = unit {
                self.units
                    .insert(key.name().to_owned(), unit.as_str().to_owned());
            }
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    *self.counters.entry(id).or_default() += n;
                }
                (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                    self.gauges.insert(id, v.into_inner());
                }
                (MetricKind::Histogram, DebugValue::Histogram(values)) => self
                    .histograms
                    .entry(id)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
                (kind, value) => panic!("{kind:?} with {value:?}"),
            }
        }
    }

    /// Every counter that counted, by [`id`].
    fn counters(&self) -> Vec<(String, u64)> {
        self.counters
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    }

    /// Every histogram with values, by [`id`], to the microsecond.
    fn histograms(&self) -> Vec<(String, Vec<f64>)> {
        self.histograms
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(id, values)| (id.clone(), values.iter().map(|v| round(*v)).collect()))
            .collect()
    }

    /// The last snapshot's gauges, by [`id`], to the microsecond.
    fn gauges(&self) -> Vec<(String, f64)> {
        self.gauges
            .iter()
            .map(|(id, v)| (id.clone(), round(*v)))
            .collect()
    }

    /// No label holds a path id, a query or a correlation id.
    fn assert_labels_bounded(&self, forbidden: &[&str]) {
        assert!(!self.label_values.is_empty());
        for value in &self.label_values {
            for bad in forbidden {
                assert!(!value.contains(bad), "label value {value:?} holds {bad:?}");
            }
            assert!(!value.contains('/'), "label value {value:?} holds a path");
        }
    }
}

/// An instrument's name and labels, as `name{key=value,...}` with the
/// labels sorted by key.
fn id(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn status_code(code: &'static str) -> (&'static str, &'static str) {
    ("http.response.status_code", code)
}

fn error_type(kind: &'static str) -> (&'static str, &'static str) {
    ("error.type", kind)
}

/// `expected`, in the order the records are listed.
fn sorted<T, const N: usize>(expected: [(String, T); N]) -> Vec<(String, T)> {
    let mut expected = Vec::from(expected);
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

/// To the microsecond: what paused time makes exact.
fn round(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// The HTTP labels of a GET to `https://api.example.com`.
const API: [(&str, &str); 3] = [
    ("http.request.method", "GET"),
    ("server.address", "api.example.com"),
    ("server.port", "443"),
];

fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Body::empty()).unwrap()
}

fn token_source() -> TokenCache {
    TokenCache::builder(source_fn(|| async {
        Ok::<_, TokenError>(Token::new("t0k3n", Duration::from_secs(3600)))
    }))
    .on_event(metrics::auth_events("api"))
    .build()
}

/// One GET through audit, retry, breaker, limiter and bearer: a 503, a 429
/// with `Retry-After: 2`, then a 200, each answered after 100 ms.
#[tokio::test(start_paused = true)]
async fn one_request_through_the_whole_stack() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);

    let latency = Duration::from_millis(100);
    let upstream = Scripted::new([
        status(503).after(latency),
        status(429).header("retry-after", "2").after(latency),
    ])
    .then(ok().after(latency));
    let breaker = CircuitBreakerLayer::new().on_event(metrics::breaker_events("api"));
    let limiter = PriorityLimitLayer::new(4).on_event(metrics::limiter_events("api"));
    let tokens = token_source();
    let sampler = MetricsSampler::new()
        .breaker("api", breaker.handle())
        .limiter("api", limiter.handle())
        .tokens("api", tokens.clone());
    let client = ServiceBuilder::new()
        .layer(AuditLayer::new(MetricsSink::new()))
        .layer(
            RetryLayer::new()
                .backoff(Backoff::constant(Duration::from_millis(500)))
                .hint_jitter(0.0, Duration::ZERO),
        )
        .layer(breaker)
        .layer(limiter)
        .layer(BearerLayer::new(tokens))
        .service(upstream.clone());

    let mut request = get("https://API.example.com/api/v2/users/8d9f0b2e-77aa?expand=presence");
    request
        .headers_mut()
        .insert("x-request-id", "corr-5e1f9c".parse().unwrap());
    request.extensions_mut().insert(Priority::High);
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.count(), 3);
    sampler.sample();
    recorded.take();

    let with = |more: &[(&'static str, &'static str)]| [&API[..], more].concat();
    assert_eq!(
        recorded.histograms(),
        sorted([
            (
                id(
                    "http.client.request.duration",
                    &with(&[status_code("503"), error_type("503")])
                ),
                vec![0.1],
            ),
            (
                id(
                    "http.client.request.duration",
                    &with(&[status_code("429"), error_type("429")])
                ),
                vec![0.1],
            ),
            (
                id("http.client.request.duration", &with(&[status_code("200")])),
                vec![0.1],
            ),
            // 3 attempts of 100 ms, 500 ms of backoff, 2 s of Retry-After
            (
                id("tower_cx.request.duration", &with(&[status_code("200")])),
                vec![2.8],
            ),
            (
                id(
                    "tower_cx.gate.closed_duration",
                    &[("name", "api"), ("source", "retry-after")],
                ),
                vec![2.0],
            ),
        ])
    );
    assert_eq!(
        recorded.counters(),
        sorted([
            (id("tower_cx.retries", &[("source", "backoff")]), 1),
            (id("tower_cx.retries", &[("source", "retry-after")]), 1),
            (id("tower_cx.token.issued", &[("name", "api")]), 1),
        ])
    );
    let name = [("name", "api")];
    let queue = |priority| {
        id(
            "tower_cx.queue.depth",
            &[("name", "api"), ("priority", priority)],
        )
    };
    assert_eq!(
        recorded.gauges(),
        sorted([
            (id("http.client.active_requests", &API), 0.0),
            (id("tower_cx.breaker.state", &name), 0.0),
            (id("tower_cx.limiter.in_flight", &name), 0.0),
            (id("tower_cx.pacing.rate", &name), 0.0),
            (queue("low"), 0.0),
            (queue("normal"), 0.0),
            (queue("high"), 0.0),
            (id("tower_cx.token.consecutive_failures", &name), 0.0),
            // fetched at 0, sampled at 2.8 s
            (id("tower_cx.token.expires_in", &name), 3597.2),
        ])
    );
    assert_eq!(recorded.units["http.client.request.duration"], "seconds");
    assert_eq!(recorded.units["tower_cx.gate.closed_duration"], "seconds");
    recorded.assert_labels_bounded(&["8d9f0b2e", "77aa", "expand", "presence", "corr-5e1f9c"]);
}

/// Two 500s trip a breaker of two consecutive failures; the retry layer
/// gives up and the request is dead-lettered. Then the breaker is isolated
/// (a request is refused) and reset. The sink sits beside another in a
/// `FanOut`.
#[tokio::test(start_paused = true)]
async fn breaker_give_ups_and_dead_letters() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);

    let upstream = Scripted::always(status(500).after(Duration::from_millis(50)));
    let breaker = CircuitBreakerLayer::new()
        .consecutive_failures(2)
        .on_event(metrics::breaker_events("api"));
    let handle = breaker.handle();
    let sampler = MetricsSampler::new().breaker("api", handle.clone());
    let letters = Arc::new(Mutex::new(Vec::<DeadLetter>::new()));
    let kept = letters.clone();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let sinks = FanOut::new()
        .with(callback(move |event| {
            seen.lock().unwrap().push(event.to_json())
        }))
        .with(MetricsSink::new());
    let audit = AuditLayer::new(sinks).dead_letters(MeteredDeadLetters::new(dead_letter_fn(
        move |letter| kept.lock().unwrap().push(letter),
    )));
    let client = ServiceBuilder::new()
        .layer(audit)
        .layer(
            RetryLayer::new()
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_secs(1))),
        )
        .layer(breaker)
        .service(upstream.clone());
    let url = "https://api.example.com/api/v2/conversations/445566/participants";

    let response = client.clone().oneshot(get(url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.count(), 2);
    recorded.take();
    // the adapter set the state as the breaker opened
    assert_eq!(
        recorded.gauges(),
        sorted([
            (id("http.client.active_requests", &API), 0.0),
            (id("tower_cx.breaker.state", &[("name", "api")]), 2.0),
        ])
    );

    handle.isolate();
    sampler.sample();
    recorded.take();
    assert_eq!(
        recorded.gauges(),
        sorted([
            (id("http.client.active_requests", &API), 0.0),
            (id("tower_cx.breaker.state", &[("name", "api")]), 3.0),
        ])
    );
    let refused = client.clone().oneshot(get(url)).await;
    assert!(refused.is_err(), "an isolated breaker refuses");
    assert_eq!(upstream.count(), 2);
    handle.reset();
    recorded.take();
    assert_eq!(
        recorded.gauges(),
        sorted([
            // the change since the last snapshot: one in, one out
            (id("http.client.active_requests", &API), 0.0),
            (id("tower_cx.breaker.state", &[("name", "api")]), 0.0),
        ])
    );

    let with = |more: &[(&'static str, &'static str)]| [&API[..], more].concat();
    assert_eq!(
        recorded.histograms(),
        sorted([
            (
                id(
                    "http.client.request.duration",
                    &with(&[status_code("500"), error_type("500")])
                ),
                vec![0.05, 0.05],
            ),
            // refused by the isolated breaker: not a retryable refusal
            (
                id(
                    "http.client.request.duration",
                    &with(&[error_type("other")])
                ),
                vec![0.0],
            ),
            (
                id(
                    "tower_cx.request.duration",
                    &with(&[status_code("500"), error_type("500")])
                ),
                vec![1.1],
            ),
            (
                id("tower_cx.request.duration", &with(&[error_type("other")])),
                vec![0.0],
            ),
        ])
    );
    let transition = |from, to, reason| {
        id(
            "tower_cx.breaker.transitions",
            &[
                ("name", "api"),
                ("from", from),
                ("to", to),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(
        recorded.counters(),
        sorted([
            (transition("closed", "open", "consecutive_failures"), 1),
            (transition("open", "isolated", "isolated"), 1),
            (transition("isolated", "closed", "reset"), 1),
            (id("tower_cx.retries", &[("source", "backoff")]), 1),
            (
                id(
                    "tower_cx.retry.give_ups",
                    &[("reason", "attempts_exhausted")]
                ),
                1
            ),
            (id("tower_cx.retry.give_ups", &[("reason", "fatal")]), 1),
            (id("tower_cx.dead_letters", &[error_type("500")]), 1),
            (id("tower_cx.dead_letters", &[error_type("other")]), 1),
        ])
    );
    assert_eq!(
        letters.lock().unwrap().len(),
        2,
        "the letters were passed on"
    );
    let lines = lines.lock().unwrap();
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.contains(r#""event":"request.finished""#))
            .count(),
        2,
        "the other sink got the events too"
    );
    // the correlation ids the audit layer made are in the events, not the labels
    let ids: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(value["correlation_id"].as_str()?.to_owned())
        })
        .collect();
    let mut forbidden: Vec<&str> = ids.iter().map(String::as_str).collect();
    forbidden.push("445566");
    recorded.assert_labels_bounded(&forbidden);
}

/// A limiter of one permit and a queue of one, no retry layer: a normal
/// request takes the permit for 1 s, a high one queues behind it, a low
/// one finds the queue full and is shed. Without a retry layer each
/// logical request is its one attempt.
#[tokio::test(start_paused = true)]
async fn queue_waits_depths_and_sheds() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);

    let upstream = Scripted::always(ok().after(Duration::from_secs(1)));
    let limiter = PriorityLimitLayer::new(1)
        .max_queue(1)
        .on_event(metrics::limiter_events("queue"));
    let sampler = MetricsSampler::new().limiter("queue", limiter.handle());
    let client = ServiceBuilder::new()
        .layer(AuditLayer::new(MetricsSink::new()))
        .layer(limiter)
        .service(upstream.clone());
    let send = |priority| {
        let mut request = get("https://api.example.com/api/v2/analytics/jobs/9f8e7d");
        request.extensions_mut().insert(priority);
        tokio::spawn(client.clone().oneshot(request))
    };
    let normal = send(Priority::Normal);
    let high = send(Priority::High);
    let low = send(Priority::Low);

    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.sample();
    recorded.take();
    let queue = |priority| {
        id(
            "tower_cx.queue.depth",
            &[("name", "queue"), ("priority", priority)],
        )
    };
    assert_eq!(
        recorded.gauges(),
        sorted([
            // the low request is over; two are in flight
            (id("http.client.active_requests", &API), 2.0),
            (id("tower_cx.limiter.in_flight", &[("name", "queue")]), 1.0),
            (id("tower_cx.pacing.rate", &[("name", "queue")]), 0.0),
            (queue("low"), 0.0),
            (queue("normal"), 0.0),
            (queue("high"), 1.0),
        ])
    );

    assert_eq!(normal.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(high.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(low.await.unwrap().is_err(), "shed");
    recorded.take();
    let with = |more: &[(&'static str, &'static str)]| [&API[..], more].concat();
    assert_eq!(
        recorded.histograms(),
        sorted([
            (
                id("http.client.request.duration", &with(&[status_code("200")])),
                vec![1.0, 2.0],
            ),
            (
                id(
                    "http.client.request.duration",
                    &with(&[error_type("not_sent")])
                ),
                vec![0.0],
            ),
            (
                id("tower_cx.request.duration", &with(&[status_code("200")])),
                vec![1.0, 2.0],
            ),
            (
                id(
                    "tower_cx.request.duration",
                    &with(&[error_type("not_sent")])
                ),
                vec![0.0],
            ),
            (
                id("tower_cx.queue.wait", &[("priority", "high")]),
                vec![1.0]
            ),
        ])
    );
    assert_eq!(
        recorded.counters(),
        [(
            id(
                "tower_cx.requests.shed",
                &[
                    ("name", "queue"),
                    ("priority", "low"),
                    ("reason", "queue_full")
                ],
            ),
            1
        )]
    );
    recorded.assert_labels_bounded(&["9f8e7d"]);
}

/// A token endpoint that fails: the request that waited is left without a
/// token. Then a `401` drops a good token, and the bearer replays with a
/// fresh one.
#[tokio::test(start_paused = true)]
async fn token_failures_and_invalidations() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);

    let failing = TokenCache::builder(source_fn(|| async {
        Err::<Token, _>(TokenError::transport("token endpoint down"))
    }))
    .on_event(metrics::auth_events("down"))
    .build();
    let upstream = Scripted::new([status(401)]);
    let client = |tokens| {
        ServiceBuilder::new()
            .layer(AuditLayer::new(MetricsSink::new()))
            .layer(BearerLayer::new(tokens))
            .service(upstream.clone())
    };
    let url = "https://api.example.com/api/v2/users/me";
    assert!(client(failing).oneshot(get(url)).await.is_err());
    assert_eq!(upstream.count(), 0);
    let response = client(token_source()).oneshot(get(url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.count(), 2, "replayed once");
    recorded.take();

    assert_eq!(
        recorded.counters(),
        sorted([
            (
                id(
                    "tower_cx.token.fetch_failures",
                    &[("name", "down"), ("token_still_valid", "false")],
                ),
                1
            ),
            (id("tower_cx.token.refresh_failures", &[]), 1),
            (id("tower_cx.token.issued", &[("name", "api")]), 2),
            (id("tower_cx.token.invalidations", &[("name", "api")]), 1),
        ])
    );
    // no retry layer: each logical request is recorded as its one attempt
    // (the bearer's own replay included); a token error is no known kind
    let with = |more: &[(&'static str, &'static str)]| [&API[..], more].concat();
    assert_eq!(
        recorded.histograms(),
        sorted([
            (
                id(
                    "http.client.request.duration",
                    &with(&[error_type("other")])
                ),
                vec![0.0],
            ),
            (
                id("http.client.request.duration", &with(&[status_code("200")])),
                vec![0.0],
            ),
            (
                id("tower_cx.request.duration", &with(&[error_type("other")])),
                vec![0.0],
            ),
            (
                id("tower_cx.request.duration", &with(&[status_code("200")])),
                vec![0.0],
            ),
        ])
    );
    recorded.assert_labels_bounded(&[]);
}

/// The limiter's adapter adds to the gate's closed time only what each
/// closure extends it by, whoever announced it; the fleet's sets a gauge
/// while a component is degraded.
#[tokio::test(start_paused = true)]
async fn gate_closed_time_and_fleet_health() {
    use tower_cx::hint::HintSource;
    use tower_cx::observe::LimiterEvent;

    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);

    let gate = metrics::limiter_events("gate");
    let secs = Duration::from_secs;
    gate(&LimiterEvent::GateClosed {
        for_: secs(5),
        source: HintSource::RetryAfter,
    });
    tokio::time::advance(secs(2)).await;
    // until 12 s: 7 s more
    gate(&LimiterEvent::GateClosedElsewhere { for_: secs(10) });
    tokio::time::advance(secs(20)).await;
    gate(&LimiterEvent::GateClosed {
        for_: secs(3),
        source: HintSource::RateLimit,
    });

    let fleet = metrics::fleet_events("fleet");
    fleet(&FleetEvent::Degraded {
        component: "gate",
        reason: "connection refused".into(),
    });
    recorded.take();
    let component = [("name", "fleet"), ("component", "gate")];
    assert_eq!(
        recorded.gauges(),
        [(id("tower_cx.fleet.degraded", &component), 1.0)]
    );
    fleet(&FleetEvent::Restored { component: "gate" });
    recorded.take();
    assert_eq!(
        recorded.gauges(),
        [(id("tower_cx.fleet.degraded", &component), 0.0)]
    );

    let closed = |source| {
        id(
            "tower_cx.gate.closed_duration",
            &[("name", "gate"), ("source", source)],
        )
    };
    assert_eq!(
        recorded.histograms(),
        sorted([
            (closed("retry-after"), vec![5.0]),
            (closed("shared"), vec![7.0]),
            (closed("ratelimit"), vec![3.0]),
        ])
    );
    assert_eq!(
        recorded.counters(),
        sorted([
            (id("tower_cx.fleet.degradations", &component), 1),
            (id("tower_cx.fleet.restorations", &component), 1),
        ])
    );
}

/// Each entry into the quota-exhausted state is counted, by the hint's
/// header or `shared`.
#[tokio::test(start_paused = true)]
async fn quota_exhaustions_are_counted_by_source() {
    use tower_cx::hint::HintSource;
    use tower_cx::observe::LimiterEvent;

    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);
    let limiter = metrics::limiter_events("api");
    let for_ = Duration::from_secs(3600);
    limiter(&LimiterEvent::QuotaExhausted {
        for_,
        source: Some(HintSource::RetryAfter),
    });
    limiter(&LimiterEvent::QuotaExhausted { for_, source: None });
    limiter(&LimiterEvent::QuotaExhausted { for_, source: None });
    recorded.take();
    let exhaustions = |source| {
        id(
            "tower_cx.quota.exhaustions",
            &[("name", "api"), ("source", source)],
        )
    };
    assert_eq!(
        recorded.counters(),
        sorted([(exhaustions("retry-after"), 1), (exhaustions("shared"), 2)])
    );
    assert!(recorded.histograms().is_empty());
}

/// The learned pacing rate, in requests per minute, set when it changes.
#[tokio::test(start_paused = true)]
async fn the_learned_pacing_rate_is_a_gauge() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);
    let upstream = Scripted::always(
        ok().header("x-ratelimit-limit", "120")
            .header("x-ratelimit-remaining", "120")
            .header("x-ratelimit-reset", "60"),
    );
    let client = PriorityLimitLayer::new(4)
        .learn_rate()
        .on_event(metrics::limiter_events("learned"));
    let client = ServiceBuilder::new().layer(client).service(upstream);
    let response = client
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    recorded.take();
    assert_eq!(
        recorded.gauges(),
        [(id("tower_cx.pacing.rate", &[("name", "learned")]), 120.0)]
    );
}

/// A sampler sets the pacing rate in force at each sample: a configured
/// rate, and the recovery after a cut, which no event announces.
#[tokio::test(start_paused = true)]
async fn the_sampler_sets_the_pacing_rate_in_force() {
    let recorder = DebuggingRecorder::new();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::new(&recorder);
    let configured = PriorityLimitLayer::new(4).pacing(600, Duration::from_secs(60));
    let learned = PriorityLimitLayer::new(4)
        .learn_rate()
        .on_event(metrics::limiter_events("learned"));
    let sampler = MetricsSampler::new()
        .limiter("configured", configured.handle())
        .limiter("learned", learned.handle());
    let rate = |recorded: &mut Recorded, name: &str| {
        recorded.take();
        let key = id("tower_cx.pacing.rate", &[("name", name)]);
        recorded
            .gauges()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    sampler.sample();
    assert_eq!(rate(&mut recorded, "configured"), Some(600.0));
    assert_eq!(
        rate(&mut recorded, "learned"),
        Some(0.0),
        "nothing learned yet"
    );

    // a 429 cuts the learned rate; the recovery after it raises it again
    let upstream = Scripted::new([status(429).header("retry-after", "1")]);
    let client = ServiceBuilder::new()
        .layer(learned.clone())
        .service(upstream);
    let send = || client.clone().oneshot(get("https://api.example.com/"));
    send().await.unwrap();
    sampler.sample();
    let cut = rate(&mut recorded, "learned").unwrap();
    assert!(cut > 0.0, "paced after the 429");
    for _ in 0..40 {
        send().await.unwrap();
    }
    sampler.sample();
    let recovered = rate(&mut recorded, "learned").unwrap();
    assert_eq!(
        Some(recovered),
        learned.handle().pacing().per_minute(),
        "the rate in force"
    );
    assert!(recovered > cut, "{cut} -> {recovered}");
}
