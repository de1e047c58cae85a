//! The retry storm of `examples/storm.rs`, scaled down: the structural
//! properties the tower-cx stack promises under pushback, exact under paused
//! time.

#[path = "support/storm_cap.rs"]
mod storm_cap;
#[path = "support/storm_layered.rs"]
mod storm_layered;
#[path = "support/storm_priority.rs"]
mod storm_priority;
#[path = "support/storm_sim.rs"]
mod storm_sim;

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower::ServiceExt;

use storm_sim::{request, run, Report, Scenario, SimApi, Strategy};

/// 40 clients against C = 20 requests per second, 120 % of capacity on
/// average and 6 times it at the start of each period.
fn quick() -> Scenario {
    Scenario {
        capacity: 20,
        clients: 40,
        bursts: 4,
        burst_size: 3,
        period: Duration::from_secs(5),
        spread: Duration::from_secs(1),
        latency: Duration::from_millis(20),
        seed: 11,
        window: Duration::from_secs(1),
        advertise: false,
    }
}

#[tokio::test(start_paused = true)]
async fn the_api_counts_requests_sent_inside_an_announced_window() {
    let scenario = Scenario {
        capacity: 1,
        ..quick()
    };
    let origin = Instant::now();
    let api = SimApi::new(&scenario, origin);

    tokio::time::advance(Duration::from_millis(200)).await;
    let first = api.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // over capacity: 429 with the whole seconds left in the window (0.78 s)
    let limited = api.clone().oneshot(request()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(api.counters(), (2, 0, 1));

    // announced at 0.22 s until 1.22 s: a request at 1.1 s is inside it,
    // although the API's own window has reset and it is accepted
    tokio::time::advance(Duration::from_millis(860)).await;
    let inside = api.clone().oneshot(request()).await.unwrap();
    assert_eq!(inside.status(), StatusCode::OK);
    assert_eq!(api.counters(), (3, 1, 1));

    tokio::time::advance(Duration::from_millis(200)).await;
    api.clone().oneshot(request()).await.unwrap();
    assert_eq!(api.counters(), (4, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_when_a_429_arrives_are_not_counted() {
    let scenario = Scenario {
        capacity: 1,
        ..quick()
    };
    let api = SimApi::new(&scenario, Instant::now());
    // three requests sent at once: one accepted, two limited; none of them
    // could know of the others' 429s
    let (a, b, c) = tokio::join!(
        api.clone().oneshot(request()),
        api.clone().oneshot(request()),
        api.clone().oneshot(request()),
    );
    let statuses = [a, b, c].map(|r| r.unwrap().status().as_u16());
    assert_eq!(statuses, [200, 429, 429]);
    assert_eq!(api.counters(), (3, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn tower_cx_rides_out_the_storm_without_a_request_inside_a_window() {
    let scenario = quick();
    let report = run(&scenario, Strategy::TowerCx).await;
    println!("{}\n{report}", Report::table_header());
    assert_eq!(report.in_window, 0, "{report}");
    assert_eq!(report.successes, scenario.requests(), "{report}");
    assert!(report.goodput() >= 0.95, "{report}");
    assert!(report.attempts_per_success() <= 1.15, "{report}");
    // every request is served, so the tail is bounded by the backlog
    assert!(report.p99.is_some(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_naive_loop_and_tower_retry_need_more_attempts_serve_fewer_and_ignore_windows() {
    let scenario = quick();
    let ours = run(&scenario, Strategy::TowerCx).await;
    for strategy in [Strategy::Naive, Strategy::TowerRetry] {
        let theirs = run(&scenario, strategy).await;
        println!("{theirs}");
        assert!(theirs.in_window > 0, "{theirs}");
        assert!(
            theirs.attempts_per_success() > ours.attempts_per_success(),
            "{theirs}"
        );
        assert!(theirs.successes < ours.successes, "{theirs}");
        assert!(theirs.p99.is_none(), "more than 1 % failed: {theirs}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_is_deterministic() {
    let scenario = quick();
    for strategy in Strategy::ALL {
        let first = run(&scenario, strategy).await;
        let second = run(&scenario, strategy).await;
        assert_eq!(first, second);
    }
}

#[tokio::test(start_paused = true)]
async fn without_pacing_the_shared_gate_alone_keeps_every_request_out_of_the_windows() {
    let scenario = quick();
    let report = run(&scenario, Strategy::TowerCxNoPacing).await;
    println!("{}\n{report}", Report::table_header());
    // (it discovers the limit by 429s, so more attempts than with pacing,
    // but none of them inside an announced wait)
    assert_eq!(report.in_window, 0, "{report}");
}

/// The quick storm with bursts of 2: 80 % of capacity on average, 4 times
/// it at each burst, so that every strategy can serve every request.
fn quick_bursts() -> Scenario {
    Scenario {
        burst_size: 2,
        ..quick()
    }
}

#[tokio::test(start_paused = true)]
async fn window_pacing_fills_each_window_at_once_but_never_past_capacity() {
    for scenario in [quick(), quick_bursts()] {
        let even = run(&scenario, Strategy::TowerCxEvenFifo).await;
        for strategy in [Strategy::TowerCx, Strategy::TowerCxWindowFifo] {
            let report = run(&scenario, strategy).await;
            println!("{report}");
            // never more than C in any of the API's fixed windows: no 429 at all
            assert_eq!((report.rejected, report.in_window), (0, 0), "{report}");
            assert_eq!(report.successes, scenario.requests(), "{report}");
            assert_eq!(report.attempts, scenario.requests(), "{report}");
            // a window's allowance goes at its start, not spread over it
            assert!(report.makespan < even.makespan, "{report}\n{even}");
        }
        let window = run(&scenario, Strategy::TowerCxWindowFifo).await;
        assert!(window.p50 < even.p50, "{window}\n{even}");
        assert!(window.p99 < even.p99, "{window}\n{even}");
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_lifo_trades_the_tail_for_the_median_under_sustained_overload() {
    let scenario = quick();
    let lifo = run(&scenario, Strategy::TowerCx).await;
    let fifo = run(&scenario, Strategy::TowerCxWindowFifo).await;
    println!("{lifo}\n{fifo}");
    // the same requests served in the same time, in another order
    assert_eq!(
        (lifo.successes, lifo.attempts, lifo.makespan),
        (fifo.successes, fifo.attempts, fifo.makespan)
    );
    let (Some(lifo_p50), Some(fifo_p50)) = (lifo.p50, fifo.p50) else {
        panic!("every request is served");
    };
    // most callers wait far less; the oldest wait until the overload passes
    assert!(lifo_p50 * 4 < fifo_p50 * 3, "{lifo}\n{fifo}");
    assert!(lifo.p99 > fifo.p99, "{lifo}\n{fifo}");
}

#[tokio::test(start_paused = true)]
async fn in_bursts_tower_cx_beats_the_naive_loop_and_tower_retry_on_every_column() {
    let scenario = quick_bursts();
    let ours = run(&scenario, Strategy::TowerCx).await;
    println!("{ours}");
    assert_eq!(ours.successes, scenario.requests(), "{ours}");
    for strategy in [Strategy::Naive, Strategy::TowerRetry] {
        let theirs = run(&scenario, strategy).await;
        println!("{theirs}");
        assert!(ours.successes >= theirs.successes, "{theirs}");
        assert!(ours.goodput() > theirs.goodput(), "{theirs}");
        assert!(
            ours.attempts_per_success() < theirs.attempts_per_success(),
            "{theirs}"
        );
        assert!(ours.in_window < theirs.in_window, "{theirs}");
        assert!(ours.rejected < theirs.rejected, "{theirs}");
        // a failed percentile (None) is worse than any time
        for (ours_p, theirs_p) in [(ours.p50, theirs.p50), (ours.p99, theirs.p99)] {
            let ours_p = ours_p.expect("every request is served");
            assert!(theirs_p.is_none_or(|t| ours_p < t), "{theirs}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_per_second_count_every_attempt_and_show_who_stays_under_capacity() {
    let scenario = quick();
    let second = Duration::from_secs(1);
    let ours = run(&scenario, Strategy::TowerCx).await;
    let naive = run(&scenario, Strategy::Naive).await;
    for report in [&ours, &naive] {
        let bins = report.attempts_per_bin(second);
        assert_eq!(bins.iter().sum::<u64>(), report.attempts, "{report}");
        // the run ends with the last attempt's response
        assert_eq!(bins.len() as u64, report.makespan.as_secs() + 1, "{report}");
    }
    // bins of one second are the API's own windows: paced, never over C
    let capacity = u64::from(scenario.capacity);
    let ours = ours.attempts_per_bin(second);
    assert!(ours.iter().all(|&n| n <= capacity), "{ours:?}");
    assert_eq!(ours[0], capacity, "a window's allowance goes at once");
    // the naive loop sends its first burst, 3 per client, all at once
    let naive = naive.attempts_per_bin(second);
    assert!(
        naive[0] >= u64::from(scenario.clients * scenario.burst_size),
        "{naive:?}"
    );
    // finer bins split the same attempts
    let tenths = run(&scenario, Strategy::TowerCx).await;
    let tenths = tenths.attempts_per_bin(Duration::from_millis(100));
    let regrouped: Vec<u64> = tenths.chunks(10).map(|c| c.iter().sum()).collect();
    assert_eq!(regrouped, ours);
}

#[tokio::test(start_paused = true)]
async fn a_fleet_sharing_one_pacer_serves_high_priority_first_under_twice_its_rate() {
    use storm_priority::{run_priority, PriorityReport, PriorityScenario};
    use tower_cx::priority::Priority::{High, Low, Normal};
    let scenario = PriorityScenario::fleet();
    let report = run_priority(&scenario).await;
    println!("{}\n{report}", PriorityReport::table_header());
    let (high, normal, low) = (report.row(High), report.row(Normal), report.row(Low));
    assert_eq!(high.ok, high.requests, "{report}");
    let (Some(high_p50), Some(normal_p50), Some(low_p50)) = (high.p50, normal.p50, low.p50) else {
        panic!("every priority is served: {report}");
    };
    assert!(high_p50 * 5 <= low_p50, "{report}");
    assert!(high_p50 < normal_p50 && normal_p50 < low_p50, "{report}");
    // the queues overflowed: low was shed, never high while a low waited
    assert!(low.shed > 0, "{report}");
    assert_eq!(report.high_shed_over_low, 0, "{report}");
    // at the shared rate: no 429, none sent into a wait, C served
    assert_eq!((report.rejected, report.in_window), (0, 0), "{report}");
    assert!(report.goodput >= 0.95, "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_but_advertised_limit_is_learned_without_a_single_429() {
    let scenario = Scenario::unknown_limit();
    let report = run(&scenario, Strategy::TowerCxLearned).await;
    println!("{}\n{report}", Report::table_header());
    assert_eq!(report.successes, scenario.requests(), "{report}");
    assert!(report.goodput() >= 0.95, "{report}");
    assert!(report.attempts_per_success() <= 1.05, "{report}");
    assert_eq!((report.in_window, report.rejected), (0, 0), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_limit_is_learned_from_429s_better_than_an_aws_adaptive_style_client() {
    let scenario = Scenario::silent_limit();
    let ours = run(&scenario, Strategy::TowerCxLearned).await;
    let aws = run(&scenario, Strategy::AwsAdaptive).await;
    println!("{}\n{ours}\n{aws}", Report::table_header());
    assert_eq!(ours.successes, scenario.requests(), "{ours}");
    assert!(ours.goodput() >= 0.9, "{ours}");
    assert_eq!(ours.in_window, 0, "{ours}");
    // the cut after each 429 keeps them rare
    assert!(ours.attempts_per_success() <= 1.01, "{ours}");
    // the token bucket ignores Retry-After, and its cold start cuts deep
    assert!(aws.in_window > 0, "{aws}");
    assert!(aws.goodput() < ours.goodput(), "{aws}");
}

#[tokio::test(start_paused = true)]
async fn learning_corrects_a_rate_set_too_high_but_a_rate_set_too_low_stays_the_ceiling() {
    use storm_sim::RateSet::{Double, Half};
    for scenario in [Scenario::unknown_limit(), Scenario::silent_limit()] {
        let learned = run(&scenario, Strategy::TowerCxLearned).await;
        let fixed_double = run(&scenario, Strategy::TowerCxFixed(Double)).await;
        let double = run(&scenario, Strategy::TowerCxLearnedCeiling(Double)).await;
        let half = run(&scenario, Strategy::TowerCxLearnedCeiling(Half)).await;
        println!("{learned}\n{fixed_double}\n{double}\n{half}");
        for report in [&double, &half] {
            assert_eq!(report.in_window, 0, "{report}");
        }
        assert_eq!(double.successes, scenario.requests(), "{double}");
        // C / 2 may not carry the offered load within the retry layer's
        // 120 s deadline (the unknown-limit scenario's backlog grows for
        // three minutes): what would wait past it in the limiter's queue
        // fails there and is never sent, so every attempt sent succeeded
        assert_eq!(half.attempts, half.successes, "{half}");
        assert!(half.successes * 2 >= scenario.requests(), "{half}");
        if scenario.advertise {
            // 2 C as the ceiling: the advertised C paces, as with nothing set
            assert_eq!(
                (double.attempts, double.makespan),
                (learned.attempts, learned.makespan)
            );
        } else {
            // 2 C as the ceiling: 429s cut it, fewer than at a fixed 2 C
            assert!(
                double.rejected < fixed_double.rejected,
                "{double}\n{fixed_double}"
            );
            assert!(double.goodput() >= 0.9, "{double}");
        }
        // C / 2 as the ceiling: learning never goes above it
        assert!(half.goodput() <= 0.51, "{half}");
        assert_eq!(half.rejected, 0, "{half}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_limit_inside_a_client_limit_is_kept_with_goodput_near_each() {
    use storm_layered::{run_layered, LayeredScenario, Layering};

    let scenario = LayeredScenario::genesys();
    let within = run_layered(&scenario, Layering::Within).await;
    println!("{within}");
    assert_eq!(
        (within.route_violations, within.client_violations),
        (0, 0),
        "{within}"
    );
    assert_eq!(within.shed, 0, "{within}");
    assert_eq!(within.ok, within.requests, "{within}");
    assert!(within.route_goodput >= 0.95, "{within}");
    assert!(within.client_goodput >= 0.95, "{within}");
    let stacked = run_layered(&scenario, Layering::Stacked).await;
    println!("{stacked}");
}

#[tokio::test(start_paused = true)]
async fn after_a_daily_cap_nothing_is_sent_until_the_reset_and_every_caller_is_told_at_once() {
    use storm_cap::{run_cap, CapReport, CapScenario};
    let scenario = CapScenario::fleet();
    let shared = run_cap(&scenario).await;
    let alone = run_cap(&CapScenario::alone()).await;
    println!("{}\n{shared}\n{alone}", CapReport::table_header());
    // the day's quota is used, on both days
    assert_eq!(shared.ok, 2 * scenario.quota, "{shared}");
    // one 429 a day reaches the fleet; nothing is sent after it until the
    // reset, by any member
    assert_eq!((shared.rejected, shared.sent_after_cap), (2, 0), "{shared}");
    assert_eq!(shared.sent, shared.ok + shared.rejected, "{shared}");
    // every other caller is told at once, with the reset's time
    assert_eq!(
        shared.exhausted,
        shared.requests - shared.ok - shared.rejected,
        "{shared}"
    );
    assert_eq!(shared.exhausted_wait_max, Duration::ZERO, "{shared}");
    assert_eq!(shared.wrong_until, 0, "{shared}");
    // and the first request after the reset goes (within the Retry-After's
    // whole second)
    let resumed = shared.resumed_after.expect("sent after the reset");
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");
    // each member alone learns the cap from a 429 of its own
    assert_eq!(alone.rejected, 2 * u64::from(scenario.members), "{alone}");
    assert_eq!(
        alone.sent_after_cap,
        2 * u64::from(scenario.members - 1),
        "{alone}"
    );
    assert_eq!(alone.exhausted_wait_max, Duration::ZERO, "{alone}");
}
