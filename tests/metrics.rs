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
use std::time::Duration;

use http::{Request, StatusCode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_cx::audit::{dead_letter_fn, AuditLayer, DeadLetter};
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

    let api = [
        ("http.request.method", "GET"),
        ("server.address", "api.example.com"),
        ("server.port", "443"),
    ];
    let with = |more: &[(&'static str, &'static str)]| [&api[..], more].concat();
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
            (id("http.client.active_requests", &api), 0.0),
            (id("tower_cx.breaker.state", &name), 0.0),
            (id("tower_cx.limiter.in_flight", &name), 0.0),
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
