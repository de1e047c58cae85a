//! The storm simulation's **Priority** scenario (issue 20), beside
//! `storm_sim.rs` whose simulated API it uses: a fleet of members (each its
//! own `PriorityLimitLayer`, as separate gateways would be) shares one
//! pacing schedule at the API's capacity C, a shared in-process
//! `LocalPacer` standing for the fleet's Redis schedule. Requests of mixed
//! priorities arrive at a steady 2 C, spread over the members, so that
//! pacing is what they wait for.
//!
//! Measured per priority: p50 and p95 time to a response, and sheds; and
//! whether any high request was shed while a low one was queued on any
//! member. Paused time makes a run deterministic.

#![allow(dead_code)] // each includer uses a different part

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use tower_cx::priority::{
    LimiterEvent, LocalPacer, Priority, PriorityLimitHandle, PriorityLimitLayer,
};

use crate::storm_sim::{request, Scenario, SimApi};

/// The fleet and its load.
#[derive(Debug, Clone, Copy)]
pub struct PriorityScenario {
    /// Requests the API accepts per one-second window (C), and the shared
    /// pacing rate.
    pub capacity: u32,
    /// Fleet members (limiters) sharing the pacer.
    pub members: u32,
    /// Offered load, as a multiple of C.
    pub load: u32,
    /// How long requests keep arriving.
    pub duration: Duration,
    /// Each member's concurrency (the gateway's default is 16).
    pub concurrency: usize,
    /// Each member's queue bound.
    pub max_queue: usize,
    /// Time from a request reaching the API to its response arriving.
    pub latency: Duration,
    /// Each member's aging step (the limiter's default: 30 s).
    pub aging: Option<Duration>,
}

impl PriorityScenario {
    /// 3 members sharing C = 5 requests per second (Genesys' 300 per
    /// minute), 2 C offered for 60 s (600 requests, a third each of high,
    /// normal and low on every member), 16 in flight and a queue of 50 per
    /// member (so that the queues overflow and requests are shed), 20 ms
    /// latency, the default aging.
    pub fn fleet() -> Self {
        Self {
            capacity: 5,
            members: 3,
            load: 2,
            duration: Duration::from_secs(60),
            concurrency: 16,
            max_queue: 50,
            latency: Duration::from_millis(20),
            aging: Some(Duration::from_secs(30)),
        }
    }

    /// Every request of the scenario.
    pub fn requests(&self) -> u64 {
        (self.duration.as_secs_f64() * f64::from(self.capacity * self.load)).round() as u64
    }

    /// The priority of request `k`: high, normal, low in turn, shifted on
    /// each round of members so that every member gets every priority.
    fn priority(&self, k: u64) -> Priority {
        let round = k / u64::from(self.members);
        match (k + round) % 3 {
            0 => Priority::High,
            1 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

/// What one priority saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PriorityRow {
    /// Requests of this priority.
    pub requests: u64,
    /// Answered 200.
    pub ok: u64,
    /// Shed by a limiter (queue full, evicted).
    pub shed: u64,
    /// Median time from arrival to a 200.
    pub p50: Option<Duration>,
    /// 95th percentile of the same.
    pub p95: Option<Duration>,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityReport {
    /// Rows for low, normal and high (index order of `Priority`).
    pub rows: [PriorityRow; 3],
    /// High requests shed while a low request was queued on some member.
    pub high_shed_over_low: u64,
    /// 429s the API sent.
    pub rejected: u64,
    /// Requests sent inside an announced `Retry-After` window.
    pub in_window: u64,
    /// Successes per second over the run, as a fraction of C.
    pub goodput: f64,
}

impl PriorityReport {
    /// The row of `priority`.
    pub fn row(&self, priority: Priority) -> &PriorityRow {
        &self.rows[match priority {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }]
    }

    /// The header of the table [`Display`](fmt::Display) writes rows of.
    pub fn table_header() -> &'static str {
        "| priority | requests | answered | shed | p50 | p95 |\n|---|---:|---:|---:|---:|---:|"
    }
}

impl fmt::Display for PriorityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for priority in [Priority::High, Priority::Normal, Priority::Low] {
            let row = self.row(priority);
            writeln!(
                f,
                "| {priority} | {} | {} | {} | {} | {} |",
                row.requests,
                row.ok,
                row.shed,
                secs(row.p50),
                secs(row.p95)
            )?;
        }
        write!(
            f,
            "\ngoodput {:.3} C, {} 429s, {} requests inside an announced window, {} high requests shed while a low one was queued",
            self.goodput, self.rejected, self.in_window, self.high_shed_over_low
        )
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// Run `scenario`. Needs a Tokio runtime with paused time.
pub async fn run_priority(scenario: &PriorityScenario) -> PriorityReport {
    let origin = Instant::now();
    let api_scenario = Scenario {
        capacity: scenario.capacity,
        latency: scenario.latency,
        ..Scenario::storm()
    };
    let api = SimApi::new(&api_scenario, origin);
    let pacer = LocalPacer::new(scenario.capacity, Duration::from_secs(1));
    let handles: Arc<OnceLock<Vec<PriorityLimitHandle>>> = Arc::default();
    let high_shed_over_low = Arc::new(Mutex::new(0u64));
    let members: Vec<_> = (0..scenario.members)
        .map(|_| {
            let (handles, counter) = (handles.clone(), high_shed_over_low.clone());
            let layer = PriorityLimitLayer::new(scenario.concurrency)
                .max_queue(scenario.max_queue)
                .aging(scenario.aging)
                .pacer(pacer.clone())
                .on_event(move |event| {
                    if let LimiterEvent::Shed {
                        priority: Priority::High,
                        ..
                    } = event
                    {
                        let low_queued = handles
                            .get()
                            .is_some_and(|all| all.iter().any(|h| h.status().queued[0] > 0));
                        if low_queued {
                            *counter.lock().unwrap() += 1;
                        }
                    }
                });
            let handle = layer.handle();
            (layer.layer(api.clone()), handle)
        })
        .collect();
    let _ = handles.set(members.iter().map(|(_, h)| h.clone()).collect());

    let rate = f64::from(scenario.capacity * scenario.load);
    let mut tasks = Vec::new();
    for k in 0..scenario.requests() {
        let start = origin + Duration::from_secs_f64(k as f64 / rate);
        let priority = scenario.priority(k);
        let service = members[(k % u64::from(scenario.members)) as usize]
            .0
            .clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut req = request();
            req.extensions_mut().insert(priority);
            let result = service.oneshot(req).await;
            let ok = matches!(&result, Ok(r) if r.status() == StatusCode::OK);
            let end = Instant::now();
            (priority, ok, result.is_err(), end - start, end)
        }));
    }
    let mut rows = [PriorityRow::default(); 3];
    let mut waits: [Vec<Duration>; 3] = Default::default();
    let mut last = origin;
    for task in tasks {
        let (priority, ok, shed, wait, end) = task.await.expect("a request task panicked");
        let i = match priority {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        };
        rows[i].requests += 1;
        rows[i].ok += u64::from(ok);
        rows[i].shed += u64::from(shed);
        if ok {
            waits[i].push(wait);
        }
        last = last.max(end);
    }
    for (row, waits) in rows.iter_mut().zip(waits.iter_mut()) {
        waits.sort();
        let at = |p: f64| {
            let rank = (p * waits.len() as f64).ceil() as usize;
            waits.get(rank.clamp(1, waits.len().max(1)) - 1).copied()
        };
        (row.p50, row.p95) = (at(0.50), at(0.95));
    }
    let (attempts, in_window, rejected) = api.counters();
    let answered = attempts - rejected;
    let makespan = (last - origin).as_secs_f64();
    let high_shed_over_low = *high_shed_over_low.lock().unwrap();
    PriorityReport {
        rows,
        high_shed_over_low,
        rejected,
        in_window,
        goodput: answered as f64 / (makespan * f64::from(scenario.capacity)),
    }
}
