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
//! Run: `cargo run --release --example storm`

#[path = "../tests/support/storm_sim.rs"]
mod storm_sim;

use storm_sim::{run, Report, Scenario, Strategy};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a Tokio runtime");
    for (name, scenario) in [
        ("Sustained storm", Scenario::storm()),
        ("Bursts with room between them", Scenario::bursty()),
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
        for strategy in Strategy::ALL {
            let report = runtime.block_on(run(&scenario, strategy));
            println!("{report}");
        }
        println!();
    }
}
