//! The storm simulation's **Layered limits** scenario (issue 20): one API
//! client whose vendor limits it twice, a route (the analytics queries) at
//! 100 requests a minute inside the client's 300 a minute, as Genesys
//! does. The simulated API counts both limits over sliding windows (the
//! strictest reading: no fixed window of any alignment sees more) and
//! answers `429` with `Retry-After` to a request over either; each such
//! request is a violation.
//!
//! Two ways to express the limits are compared:
//! - **within**: one `KeyedLimitLayer` keyed by route group, the analytics
//!   key paced to 100 in any minute (a sliding window), every key
//!   `within` one shared `LocalPacer` at 300 a minute (one each 200 ms);
//! - **stacked**: the same keyed layer (without `within`) over a separate
//!   client-wide `PriorityLimitLayer` paced at 300 a minute.
//!
//! Paused time makes a run deterministic.

#![allow(dead_code)] // each includer uses a different part

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use tower_cx::body::Body;
use tower_cx::error::BoxError;
use tower_cx::priority::keyed::KeyedLimitLayer;
use tower_cx::priority::{LocalPacer, PriorityLimitLayer};

/// The limits and the load.
#[derive(Debug, Clone, Copy)]
pub struct LayeredScenario {
    /// The route's limit per window.
    pub route_limit: u32,
    /// The client's limit per window (over every route).
    pub client_limit: u32,
    /// The vendor's window.
    pub window: Duration,
    /// Offered analytics requests per window.
    pub route_load: u32,
    /// Offered other requests per window.
    pub other_load: u32,
    /// How long requests keep arriving.
    pub duration: Duration,
    /// Time from a request reaching the API to its answer.
    pub latency: Duration,
}

impl LayeredScenario {
    /// Genesys-like: analytics at 100 a minute inside 300 a minute, 200
    /// analytics and 400 other requests offered a minute for 5 minutes,
    /// 50 ms latency.
    pub fn genesys() -> Self {
        Self {
            route_limit: 100,
            client_limit: 300,
            window: Duration::from_secs(60),
            route_load: 200,
            other_load: 400,
            duration: Duration::from_secs(300),
            latency: Duration::from_millis(50),
        }
    }
}

/// How the client expresses the two limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    /// A keyed layer whose keys are `within` one shared pacer.
    Within,
    /// A keyed layer over a separate client-wide limiter.
    Stacked,
}

impl fmt::Display for Layering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layering::Within => "keyed, `within` a shared pacer",
            Layering::Stacked => "keyed over a client limiter",
        })
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LayeredReport {
    /// The layering measured.
    pub layering: Layering,
    /// Requests offered.
    pub requests: u64,
    /// Answered 200.
    pub ok: u64,
    /// Of which analytics.
    pub route_ok: u64,
    /// Requests the API refused for the route limit.
    pub route_violations: u64,
    /// Requests the API refused for the client limit.
    pub client_violations: u64,
    /// Shed by a limiter (queue full).
    pub shed: u64,
    /// Analytics successes per window over the run, as a fraction of the
    /// route limit.
    pub route_goodput: f64,
    /// Successes per window over the run, as a fraction of the client
    /// limit.
    pub client_goodput: f64,
}

impl LayeredReport {
    /// The header of the table [`Display`](fmt::Display) writes a row of.
    pub fn table_header() -> &'static str {
        "| layering | requests | answered (analytics) | shed | route 429s | client 429s | goodput: route / client |\n|---|---:|---:|---:|---:|---:|---:|"
    }
}

impl fmt::Display for LayeredReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} ({}) | {} | {} | {} | {:.3} / {:.3} |",
            self.layering,
            self.requests,
            self.ok,
            self.route_ok,
            self.shed,
            self.route_violations,
            self.client_violations,
            self.route_goodput,
            self.client_goodput
        )
    }
}

/// One limit counted over a sliding window.
struct Window {
    limit: usize,
    per: Duration,
    sent: VecDeque<Instant>,
}

impl Window {
    fn new(limit: u32, per: Duration) -> Self {
        Self {
            limit: limit as usize,
            per,
            sent: VecDeque::new(),
        }
    }

    /// Whether a request at `now` fits; the seconds until one would.
    fn check(&mut self, now: Instant) -> Result<(), u64> {
        while self.sent.front().is_some_and(|s| *s + self.per <= now) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.limit {
            let wait = (self.sent[0] + self.per) - now;
            return Err(wait.as_secs_f64().ceil() as u64);
        }
        Ok(())
    }

    fn count(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

struct Api {
    route: Window,
    client: Window,
    route_violations: u64,
    client_violations: u64,
}

fn is_analytics(req: &Request<Body>) -> bool {
    req.uri().path().starts_with("/api/v2/analytics/")
}

/// Run `scenario` with `layering`. Needs a Tokio runtime with paused time.
pub async fn run_layered(scenario: &LayeredScenario, layering: Layering) -> LayeredReport {
    let origin = Instant::now();
    let api = Arc::new(Mutex::new(Api {
        route: Window::new(scenario.route_limit, scenario.window),
        client: Window::new(scenario.client_limit, scenario.window),
        route_violations: 0,
        client_violations: 0,
    }));
    let latency = scenario.latency;
    let upstream = {
        let api = api.clone();
        service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move {
                let now = Instant::now();
                let refused = {
                    let mut api = api.lock().unwrap();
                    let analytics = is_analytics(&req);
                    let route = if analytics {
                        api.route.check(now)
                    } else {
                        Ok(())
                    };
                    let client = api.client.check(now);
                    match (route, client) {
                        (Ok(()), Ok(())) => {
                            if analytics {
                                api.route.count(now);
                            }
                            api.client.count(now);
                            None
                        }
                        (Err(wait), _) => {
                            api.route_violations += 1;
                            Some(wait)
                        }
                        (_, Err(wait)) => {
                            api.client_violations += 1;
                            Some(wait)
                        }
                    }
                };
                tokio::time::sleep(latency).await;
                let mut response = Response::new(());
                if let Some(wait) = refused {
                    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                    response
                        .headers_mut()
                        .insert("retry-after", wait.to_string().parse().unwrap());
                }
                Ok::<_, BoxError>(response)
            }
        })
    };

    let (window, route_limit) = (scenario.window, scenario.route_limit);
    let route_group = |req: &Request<Body>| Some(is_analytics(req));
    let make = move |analytics: &bool| {
        if *analytics {
            PriorityLimitLayer::new(16).pacing_window(route_limit, window)
        } else {
            PriorityLimitLayer::new(16)
        }
    };
    let client = match layering {
        Layering::Within => tower::util::BoxCloneService::new(
            KeyedLimitLayer::new(route_group, make)
                .within(LocalPacer::new(scenario.client_limit, window))
                .layer(upstream),
        ),
        Layering::Stacked => {
            let client_wide = PriorityLimitLayer::new(16).pacing(scenario.client_limit, window);
            tower::util::BoxCloneService::new(
                KeyedLimitLayer::new(route_group, make).layer(client_wide.layer(upstream)),
            )
        }
    };

    // arrivals evenly spread, analytics and others interleaved
    let per_second = |load: u32| f64::from(load) / window.as_secs_f64();
    let mut arrivals = Vec::new();
    for (load, path) in [
        (
            scenario.route_load,
            "/api/v2/analytics/conversations/details/query",
        ),
        (scenario.other_load, "/api/v2/users/me"),
    ] {
        let rate = per_second(load);
        let count = (scenario.duration.as_secs_f64() * rate).round() as u64;
        arrivals.extend((0..count).map(|k| (Duration::from_secs_f64(k as f64 / rate), path)));
    }
    arrivals.sort();
    let tasks: Vec<_> = arrivals
        .into_iter()
        .map(|(at, path)| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(origin + at).await;
                let request = Request::post(path).body(Body::empty()).unwrap();
                let result = client.oneshot(request).await;
                let ok = matches!(&result, Ok(r) if r.status() == StatusCode::OK);
                (
                    path.contains("analytics"),
                    ok,
                    result.is_err(),
                    Instant::now(),
                )
            })
        })
        .collect();
    let requests = tasks.len() as u64;
    let (mut ok, mut route_ok, mut shed, mut last) = (0, 0, 0, origin);
    for task in tasks {
        let (analytics, answered, refused, end) = task.await.expect("a request task panicked");
        ok += u64::from(answered);
        route_ok += u64::from(answered && analytics);
        shed += u64::from(refused);
        last = last.max(end);
    }
    let api = api.lock().unwrap();
    let windows = (last - origin).as_secs_f64() / window.as_secs_f64();
    LayeredReport {
        layering,
        requests,
        ok,
        route_ok,
        route_violations: api.route_violations,
        client_violations: api.client_violations,
        shed,
        route_goodput: route_ok as f64 / (windows * f64::from(scenario.route_limit)),
        client_goodput: ok as f64 / (windows * f64::from(scenario.client_limit)),
    }
}
