//! The storm simulation's **Daily cap** scenario (issue 20), beside
//! `storm_sim.rs`: an API allows a fixed number of requests per day (a
//! shortened day here), and once they are used answers `429` with a
//! `Retry-After` until the day resets (over the limiter's 180 s
//! `max_gate`: a daily cap). A fleet of members, each its own stack (a
//! retry layer over a `PriorityLimitLayer`, as separate gateways would be),
//! sends a steady load through the cap, sharing its gate (and so the
//! exhausted state) through a `LocalPauseShare` standing for the fleet's
//! Redis, or each alone.
//!
//! Measured: what the API saw (requests it answered, `429`s it sent, and
//! requests sent after a member already had the cap's answer, before the
//! reset), and what callers got (`QuotaExhausted` at once, or not).
//! Paused time makes a run deterministic.

#![allow(dead_code)] // each includer uses a different part

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use tower_cx::body::Body;
use tower_cx::error::{BoxError, QuotaExhausted};
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::share::LocalPauseShare;

/// The cap and the load.
#[derive(Debug, Clone, Copy)]
pub struct CapScenario {
    /// Requests the API allows per day.
    pub quota: u64,
    /// The (shortened) day: the quota resets at each multiple of it.
    pub day: Duration,
    /// Fleet members.
    pub members: u32,
    /// Requests per second offered, spread over the members.
    pub rate: u32,
    /// How long requests keep arriving.
    pub duration: Duration,
    /// Time from a request reaching the API to its answer.
    pub latency: Duration,
    /// Whether the members share their gate (and the exhausted state).
    pub shared: bool,
}

impl CapScenario {
    /// 600 requests a 30-minute day, 3 members, 2 requests per second for
    /// 40 minutes (4,800 requests): the cap is hit after 5 minutes of each
    /// day, and the first day's 25 minutes without quota are crossed.
    pub fn fleet() -> Self {
        Self {
            quota: 600,
            day: Duration::from_secs(1800),
            members: 3,
            rate: 2,
            duration: Duration::from_secs(2400),
            latency: Duration::from_millis(50),
            shared: true,
        }
    }

    /// The same fleet, each member on its own.
    pub fn alone() -> Self {
        Self {
            shared: false,
            ..Self::fleet()
        }
    }

    pub fn requests(&self) -> u64 {
        self.duration.as_secs() * u64::from(self.rate)
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CapReport {
    pub shared: bool,
    pub requests: u64,
    /// Answered 200.
    pub ok: u64,
    /// Requests the API received.
    pub sent: u64,
    /// `429`s the API sent (each one a request sent into the cap).
    pub rejected: u64,
    /// Requests the API received after a member of the fleet had the
    /// cap's answer, before the day reset.
    pub sent_after_cap: u64,
    /// Callers answered `QuotaExhausted`.
    pub exhausted: u64,
    /// The longest a `QuotaExhausted` caller waited for it.
    pub exhausted_wait_max: Duration,
    /// Callers that got a `QuotaExhausted` whose `until` was not the
    /// day's reset (to the `Retry-After`'s whole second: at most 1 s
    /// after it, never before).
    pub wrong_until: u64,
    /// The first request the API received after the first day's reset,
    /// from that reset.
    pub resumed_after: Option<Duration>,
}

impl CapReport {
    pub fn table_header() -> &'static str {
        "| members | requests | answered 200 | sent to the API | 429s sent | sent after the cap was known | `QuotaExhausted` | longest wait for it |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    }
}

impl fmt::Display for CapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} s |",
            if self.shared {
                "share the exhausted state"
            } else {
                "each alone"
            },
            self.requests,
            self.ok,
            self.sent,
            self.rejected,
            self.sent_after_cap,
            self.exhausted,
            self.exhausted_wait_max.as_secs_f64()
        )
    }
}

/// The API's day: its count, and when the fleet first had the cap's
/// answer in it.
struct Day {
    origin: Instant,
    quota: u64,
    day: Duration,
    latency: Duration,
    /// The day (index) and its count.
    current: (u64, u64),
    /// When the first `429` of the current day reached its member.
    capped_at: Option<Instant>,
    sent: u64,
    rejected: u64,
    sent_after_cap: u64,
    first_after_reset: Option<Instant>,
}

/// The simulated API. Clones share its day.
#[derive(Clone)]
struct CapApi(Arc<Mutex<Day>>);

impl Service<Request<Body>> for CapApi {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Body>) -> Self::Future {
        let now = Instant::now();
        let mut day = self.0.lock().unwrap();
        let index = (now - day.origin).as_nanos() / day.day.as_nanos();
        let index = index as u64;
        if index != day.current.0 {
            day.current = (index, 0);
            day.capped_at = None;
        }
        if index == 1 && day.first_after_reset.is_none() {
            day.first_after_reset = Some(now);
        }
        day.sent += 1;
        if day.capped_at.is_some_and(|at| now >= at) {
            day.sent_after_cap += 1;
        }
        let latency = day.latency;
        let response = if day.current.1 < day.quota {
            day.current.1 += 1;
            Response::new(())
        } else {
            day.rejected += 1;
            let reset = day.origin + day.day * (index as u32 + 1);
            let answered = now + latency;
            day.capped_at = Some(day.capped_at.map_or(answered, |at| at.min(answered)));
            let secs = (reset - answered).as_secs_f64().ceil() as u64;
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", secs.to_string())
                .body(())
                .unwrap()
        };
        drop(day);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(response)
        })
    }
}

/// Run `scenario`. Needs a Tokio runtime with paused time.
pub async fn run_cap(scenario: &CapScenario) -> CapReport {
    let origin = Instant::now();
    let api = CapApi(Arc::new(Mutex::new(Day {
        origin,
        quota: scenario.quota,
        day: scenario.day,
        latency: scenario.latency,
        current: (0, 0),
        capped_at: None,
        sent: 0,
        rejected: 0,
        sent_after_cap: 0,
        first_after_reset: None,
    })));
    let share = LocalPauseShare::new();
    let members: Vec<_> = (0..scenario.members)
        .map(|_| {
            let mut limiter = PriorityLimitLayer::new(16);
            if scenario.shared {
                limiter = limiter.share_gate(share.clone());
            }
            let limited = limiter.layer(api.clone());
            RetryLayer::new().layer(limited)
        })
        .collect();
    let interval = Duration::from_secs(1) / scenario.rate;
    let mut tasks = Vec::new();
    for k in 0..scenario.requests() {
        let start = origin + interval * k as u32;
        let service = members[(k % u64::from(scenario.members)) as usize].clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let result = service.oneshot(crate::storm_sim::request()).await;
            let end = Instant::now();
            let ok = matches!(&result, Ok(r) if r.status() == StatusCode::OK);
            let exhausted = result
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<QuotaExhausted>())
                .map(QuotaExhausted::until);
            (ok, exhausted, end - start)
        }));
    }
    let mut report = CapReport {
        shared: scenario.shared,
        requests: scenario.requests(),
        ok: 0,
        sent: 0,
        rejected: 0,
        sent_after_cap: 0,
        exhausted: 0,
        exhausted_wait_max: Duration::ZERO,
        wrong_until: 0,
        resumed_after: None,
    };
    for task in tasks {
        let (ok, exhausted, wait) = task.await.expect("a request task panicked");
        report.ok += u64::from(ok);
        if let Some(until) = exhausted {
            report.exhausted += 1;
            report.exhausted_wait_max = report.exhausted_wait_max.max(wait);
            let since = until - origin;
            if since.as_nanos() % scenario.day.as_nanos() >= 1_000_000_000 {
                report.wrong_until += 1;
            }
        }
    }
    let day = api.0.lock().unwrap();
    report.sent = day.sent;
    report.rejected = day.rejected;
    report.sent_after_cap = day.sent_after_cap;
    report.resumed_after = day.first_after_reset.map(|at| at - (origin + scenario.day));
    report
}
