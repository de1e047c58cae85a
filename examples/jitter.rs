//! The classic optimistic-concurrency backoff study, with this crate's
//! [`Backoff`]: N clients each make one conditional update to the same
//! record; an update whose version went stale in the meantime fails and the
//! client backs off. Base 5 ms, cap 2 s, network delay |N(10 ms, 4 ms)| per
//! hop. Reported: total attempts (the work) and the time until the last
//! client succeeded, averaged over many seeded runs.
//!
//! An attempt is a read (one hop to the store), then the conditional write
//! (the read's answer back plus the write's hop); it succeeds when no other
//! write landed between its read and its write. The client learns the
//! outcome one more hop later, then backs off.
//!
//! Besides the table, it writes `jitter.svg`, the time to the last
//! success per jitter mode as bars, into the directory named by the
//! `CHARTS_DIR` environment variable (by default `target/charts/`).
//!
//! Run: `cargo run --release --example jitter`
//! (`CHARTS_DIR=docs/charts cargo run --release --example jitter` renews the
//! chart `BENCHMARKS.md` shows)

#[path = "support/chart.rs"]
mod chart;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use chart::{GroupedBars, Series};
use tower_cx::backoff::{Backoff, BackoffState, Jitter, SharedRng};

const RUNS: u64 = 1000;

/// A network hop: |N(mean, sd)|, by Box-Muller from two uniform samples.
fn hop(rng: &SharedRng) -> u64 {
    let (mean, sd) = (10e6, 4e6); // nanoseconds
    let u1 = 1.0 - rng.unit(); // (0, 1]
    let u2 = rng.unit();
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mean + sd * normal).abs() as u64
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The client's read reaches the store.
    Read { client: usize },
    /// The client's conditional write reaches the store.
    Write { client: usize, seen: u64 },
    /// The outcome reaches the client.
    Outcome { client: usize, ok: bool },
}

struct Outcome {
    attempts: u64,
    last_success: Duration,
}

fn simulate(clients: usize, jitter: Jitter, seed: u64) -> Outcome {
    let backoff = Backoff::exponential(Duration::from_millis(5))
        .max_delay(Duration::from_secs(2))
        .jitter(jitter);
    let rng = SharedRng::seeded(seed);
    let mut states = vec![(0u32, BackoffState::default()); clients];
    let mut version = 0u64;
    let mut attempts = 0u64;
    let mut last = 0u64;
    let mut seq = 0u64;
    // (time in ns, tie-breaker, event), earliest first
    let mut queue = BinaryHeap::new();
    for client in 0..clients {
        seq += 1;
        attempts += 1;
        queue.push(Reverse((hop(&rng), seq, Event::Read { client })));
    }
    while let Some(Reverse((now, _, event))) = queue.pop() {
        let next = match event {
            Event::Read { client } => (
                now + hop(&rng) + hop(&rng),
                Event::Write {
                    client,
                    seen: version,
                },
            ),
            Event::Write { client, seen } => {
                let ok = seen == version;
                if ok {
                    version += 1;
                }
                (now + hop(&rng), Event::Outcome { client, ok })
            }
            Event::Outcome { ok: true, .. } => {
                last = last.max(now);
                continue;
            }
            Event::Outcome { client, ok: false } => {
                let (retry, state) = &mut states[client];
                *retry += 1;
                let delay = backoff.next_delay(*retry, state, &rng);
                attempts += 1;
                (
                    now + delay.as_nanos() as u64 + hop(&rng),
                    Event::Read { client },
                )
            }
        };
        seq += 1;
        queue.push(Reverse((next.0, seq, next.1)));
    }
    Outcome {
        attempts,
        last_success: Duration::from_nanos(last),
    }
}

/// The mean and its standard error.
fn mean_and_se(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let variance = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// (name in the table, in the chart's legend, the mode)
const JITTERS: [(&str, &str, Jitter); 4] = [
    ("none", "no jitter", Jitter::None),
    ("full", "full jitter", Jitter::Full),
    ("equal", "equal jitter", Jitter::Equal),
    ("decorrelated", "decorrelated jitter", Jitter::Decorrelated),
];
const CLIENTS: [usize; 2] = [50, 100];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // mean time to the last success in seconds, per jitter mode and client count
    let mut series: Vec<Series> = JITTERS
        .iter()
        .map(|(_, label, _)| Series {
            label: (*label).to_owned(),
            values: Vec::new(),
        })
        .collect();
    println!("| clients | jitter | attempts (mean ± s.e., {RUNS} runs) | attempts per client | time to last success (mean ± s.e.) |");
    println!("|---:|---|---:|---:|---:|");
    for clients in CLIENTS {
        for ((name, _, jitter), series) in JITTERS.into_iter().zip(&mut series) {
            let runs: Vec<Outcome> = (0..RUNS)
                .map(|seed| simulate(clients, jitter, seed))
                .collect();
            let (attempts, attempts_se) = mean_and_se(runs.iter().map(|o| o.attempts as f64));
            let (time, time_se) =
                mean_and_se(runs.iter().map(|o| o.last_success.as_secs_f64() * 1000.0));
            println!(
                "| {clients} | {name} | {attempts:.1} ± {attempts_se:.1} | {:.2} | {time:.0} ± {time_se:.0} ms |",
                attempts / clients as f64,
            );
            series.values.push(time / 1000.0);
        }
    }
    let svg = chart::grouped_bars(&GroupedBars {
        title: format!("Time until the last client succeeded (mean of {RUNS} seeded runs)"),
        x_desc: "clients contending for one record".to_owned(),
        y_desc: "time to the last success (s)".to_owned(),
        groups: CLIENTS.iter().map(|n| format!("{n} clients")).collect(),
        series,
        value_label: |s| format!("{s:.2} s"),
    })?;
    println!("\nChart: {}", chart::write("jitter.svg", &svg)?.display());
    Ok(())
}
