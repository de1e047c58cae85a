//! A retry storm against a rate-limited API, four ways.
//!
//! 200 clients share one integration (one rate limit) against an API that
//! accepts C = 100 requests per second and answers 429 with `Retry-After`
//! over that. Compared: a naive per-request retry loop, `tower::retry` with
//! tower's `ExponentialBackoff` and `TpsBudget`, and the tower-cx stack
//! (retry + shared rate gate + budget + sliding-window pacing + adaptive
//! LIFO), plus tower-cx with first-come-first-served queues (window pacing,
//! then even pacing) and without pacing. Paused Tokio time makes the run
//! deterministic and quick.
//!
//! Then the **Priority** scenario: three fleet members share one pacer at
//! the API's rate under twice that load, with mixed priorities; p50 and p95
//! per priority, and sheds.
//!
//! Besides the tables, it writes one SVG chart per scenario,
//! `storm-sustained.svg` and `storm-bursts.svg`: the attempts reaching the
//! API in each second, one panel per strategy, into the directory named by
//! the `CHARTS_DIR` environment variable (by default `target/charts/`).
//!
//! Then the learned-limit scenarios (tables only): an unknown limit the
//! API advertises, a silent limit (429s only) with an AWS-adaptive-style
//! CUBIC client for comparison, and a rate set at twice and at half the
//! real one, with and without `learn_rate()`.
//! Last, the layered-limits scenario (a table): a route at 100 per
//! minute inside a client limit of 300 per minute.
//!
//! Last, the **Daily cap** scenario: an API with a daily quota (a
//! shortened day) answers 429 with a `Retry-After` until the reset; a
//! fleet of three members sharing the exhausted state, then each alone.
//!
//! Run: `cargo run --release --example storm`
//! (`CHARTS_DIR=docs/charts cargo run --release --example storm` renews the
//! charts `BENCHMARKS.md` shows)

#[path = "support/chart.rs"]
mod chart;
#[path = "../tests/support/storm_cap.rs"]
mod storm_cap;
#[path = "../tests/support/storm_layered.rs"]
mod storm_layered;
#[path = "../tests/support/storm_priority.rs"]
mod storm_priority;
#[path = "../tests/support/storm_sim.rs"]
mod storm_sim;

use std::time::Duration;

use chart::{Panels, Reference, Series};
use storm_cap::{run_cap, CapReport, CapScenario};
use storm_layered::{run_layered, LayeredReport, LayeredScenario, Layering};
use storm_priority::{run_priority, PriorityReport, PriorityScenario};
use storm_sim::{run, Report, Scenario, Strategy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a Tokio runtime");
    for (name, file, scenario) in [
        ("Sustained storm", "storm-sustained.svg", Scenario::storm()),
        (
            "Bursts with room between them",
            "storm-bursts.svg",
            Scenario::bursty(),
        ),
    ] {
        println!(
            "## {name}\n\n{} clients, C = {} requests/s, {} bursts of {} every {:?} (clients spread over {:?}), latency {:?}: {} requests\n",
            scenario.clients,
            scenario.capacity,
            scenario.bursts,
            scenario.burst_size,
            scenario.period,
            scenario.spread,
            scenario.latency,
            scenario.requests(),
        );
        println!("{}", Report::table_header());
        let mut series = Vec::new();
        for strategy in Strategy::ALL {
            let report = runtime.block_on(run(&scenario, strategy));
            println!("{report}");
            series.push(Series {
                label: strategy.label().to_owned(),
                values: (report.attempts_per_bin(Duration::from_secs(1)).iter())
                    .map(|&n| n as f64)
                    .collect(),
            });
        }
        let svg = chart::panels(&Panels {
            title: format!(
                "{name}: attempts reaching the API per second ({} clients, {} requests)",
                scenario.clients,
                scenario.requests()
            ),
            x_desc: "time since the first request (s)".to_owned(),
            y_desc: "attempts per second".to_owned(),
            bin: 1.0,
            series,
            reference: Some(Reference {
                label: format!("C = {} / s", scenario.capacity),
                y: f64::from(scenario.capacity),
            }),
        })?;
        println!("\nChart: {}\n", chart::write(file, &svg)?.display());
    }
    learning(&runtime);
    priority(&runtime);
    layered(&runtime);
    daily_cap(&runtime);
    Ok(())
}

/// The scenarios where the limit is not configured, or wrongly.
fn learning(runtime: &tokio::runtime::Runtime) {
    let unknown = Scenario::unknown_limit();
    let silent = Scenario::silent_limit();
    let tables = [
        (
            "Unknown limit: no rate configured, the limit advertised (Genesys headers)",
            unknown,
            &[Strategy::TowerCxLearned, Strategy::TowerCxNoPacing][..],
        ),
        (
            "Silent limit: no rate configured, nothing advertised, 429 with Retry-After only",
            silent,
            &[
                Strategy::TowerCxLearned,
                Strategy::AwsAdaptive,
                Strategy::TowerCxNoPacing,
            ][..],
        ),
        (
            "A wrongly set rate, the limit advertised",
            unknown,
            &Strategy::WRONG_RATE[..],
        ),
        (
            "A wrongly set rate, nothing advertised",
            silent,
            &Strategy::WRONG_RATE[..],
        ),
    ];
    for (name, scenario, strategies) in tables {
        println!(
            "## {name}\n\n{} clients, C = {} requests/s in windows of {:?}, {} bursts of {} every {:?} (clients spread over {:?}), latency {:?}: {} requests\n",
            scenario.clients,
            scenario.capacity,
            scenario.window,
            scenario.bursts,
            scenario.burst_size,
            scenario.period,
            scenario.spread,
            scenario.latency,
            scenario.requests(),
        );
        println!("{}", Report::table_header());
        for &strategy in strategies {
            println!("{}", runtime.block_on(run(&scenario, strategy)));
        }
        println!();
    }
}

/// The Priority scenario: a fleet sharing one pacer under twice its rate.
fn priority(runtime: &tokio::runtime::Runtime) {
    let s = PriorityScenario::fleet();
    println!(
        "## Priority\n\n{} members sharing one pacer at C = {} requests/s (a LocalPacer standing for the fleet's Redis schedule), {} C offered for {:?} (high, normal and low in turn on every member), {} in flight and a queue of {} per member, latency {:?}: {} requests\n",
        s.members,
        s.capacity,
        s.load,
        s.duration,
        s.concurrency,
        s.max_queue,
        s.latency,
        s.requests(),
    );
    let report = runtime.block_on(run_priority(&s));
    println!("{}\n{report}\n", PriorityReport::table_header());
    let s = PriorityScenario { aging: None, ..s };
    let report = runtime.block_on(run_priority(&s));
    println!(
        "Without aging:\n\n{}\n{report}\n",
        PriorityReport::table_header()
    );
}

/// The Layered limits scenario: a route limit inside a client limit.
fn layered(runtime: &tokio::runtime::Runtime) {
    let s = LayeredScenario::genesys();
    println!(
        "## Layered limits\n\nAnalytics at {} per {:?} inside a client limit of {} per {:?} (both counted by the API over sliding windows), {} analytics and {} other requests offered per {:?} for {:?}, latency {:?}\n",
        s.route_limit,
        s.window,
        s.client_limit,
        s.window,
        s.route_load,
        s.other_load,
        s.window,
        s.duration,
        s.latency,
    );
    println!("{}", LayeredReport::table_header());
    for layering in [Layering::Within, Layering::Stacked] {
        println!("{}", runtime.block_on(run_layered(&s, layering)));
    }
    println!();
}

/// The Daily cap scenario: nothing sent between the cap and the reset.
fn daily_cap(runtime: &tokio::runtime::Runtime) {
    let s = CapScenario::fleet();
    println!(
        "## Daily cap\n\nAn API allowing {} requests a day (a day of {:?}), answering 429 with `Retry-After` until the reset once they are used; {} members (a retry layer over a limiter each), {} requests/s offered for {:?}, latency {:?}: {} requests\n",
        s.quota,
        s.day,
        s.members,
        s.rate,
        s.duration,
        s.latency,
        s.requests(),
    );
    println!("{}", CapReport::table_header());
    for scenario in [s, CapScenario::alone()] {
        println!("{}", runtime.block_on(run_cap(&scenario)));
    }
    println!();
}
