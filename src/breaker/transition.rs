//! The breaker's state transitions, made under its lock: opening,
//! half-opening, closing, and the state as the handle reports it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::machine::{Hot, Inner, Phase};
use super::{BreakerEvent, BreakerState, TransitionReason};
use crate::backoff::BackoffState;

pub(super) fn emit(
    inner: &mut Inner,
    from: BreakerState,
    to: BreakerState,
    reason: TransitionReason,
) {
    inner.pending.push(BreakerEvent { from, to, reason });
}

/// Move Open to HalfOpen once its time has come.
pub(super) fn advance(inner: &mut Inner, now: Instant) {
    if let Phase::Open { until } = inner.phase {
        if now >= until {
            inner.phase = Phase::HalfOpen;
            inner.probes_in_flight = 0;
            inner.probe_successes = 0;
            inner.round += 1;
            emit(
                inner,
                BreakerState::Open {
                    retry_in: Duration::ZERO,
                },
                BreakerState::HalfOpen,
                TransitionReason::OpenElapsed,
            );
        }
    }
}

pub(super) fn trip(
    inner: &mut Inner,
    hot: &Hot,
    now: Instant,
    hint: Option<Duration>,
    reason: TransitionReason,
) {
    let from = public_state(inner, now);
    inner.trips_in_a_row += 1;
    inner.counts.trips += 1;
    let config = inner.config.clone();
    let backoff =
        config
            .open_backoff
            .next_delay(inner.trips_in_a_row, &mut inner.open_backoff, &config.rng);
    let open_for = hint.unwrap_or(backoff).min(config.max_open);
    inner.phase = Phase::Open {
        // a hint too far to represent is as good as forever
        until: now
            .checked_add(open_for)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
    };
    hot.consecutive.store(0, Ordering::Relaxed);
    hot.window.clear();
    if reason != TransitionReason::Shared {
        inner.announce = Some(open_for);
    }
    emit(
        inner,
        from,
        BreakerState::Open { retry_in: open_for },
        reason,
    );
}

pub(super) fn close(inner: &mut Inner, hot: &Hot, from: BreakerState, reason: TransitionReason) {
    inner.phase = Phase::Closed;
    hot.consecutive.store(0, Ordering::Relaxed);
    inner.trips_in_a_row = 0;
    inner.open_backoff = BackoffState::default();
    hot.window.clear();
    inner.probes_in_flight = 0;
    emit(inner, from, BreakerState::Closed, reason);
}

pub(super) fn public_state(inner: &Inner, now: Instant) -> BreakerState {
    match inner.phase {
        Phase::Closed => BreakerState::Closed,
        Phase::Open { until } => BreakerState::Open {
            retry_in: until.saturating_duration_since(now),
        },
        Phase::HalfOpen => BreakerState::HalfOpen,
        Phase::Isolated => BreakerState::Isolated,
    }
}
