//! Adapters for the layers' own `on_event` callbacks: what a breaker, a
//! limiter, a token cache or a fleet reports about no particular request,
//! or in full only there.
//!
//! Each adapter takes a `name`, the `name` label of what it records, to
//! tell several breakers (limiters, caches, fleets) apart; use the same
//! name with the [`MetricsSampler`](super::MetricsSampler).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::metrics::{counter, gauge, histogram, SharedString};
use tokio::time::Instant;

use super::names;
use crate::observe::{AuthEvent, BreakerEvent, BreakerState, FleetEvent, LimiterEvent};

/// The label value of a name, cheap to clone.
fn shared(name: impl Into<String>) -> SharedString {
    SharedString::from_shared(Arc::<str>::from(name.into()))
}

/// The breaker state as the [`BREAKER_STATE`](names::BREAKER_STATE) gauge
/// reports it: 0 closed, 1 half-open, 2 open, 3 isolated.
pub(super) fn state_value(state: &BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open { .. } => 2.0,
        BreakerState::Isolated => 3.0,
    }
}

/// A callback for
/// [`CircuitBreakerLayer::on_event`](crate::breaker::CircuitBreakerLayer::on_event):
/// counts each transition in `tower_cx.breaker.transitions` (`name`,
/// `from`, `to`, `reason`) and sets the `tower_cx.breaker.state` gauge to
/// the state entered.
///
/// ```
/// use tower_cx::breaker::CircuitBreakerLayer;
/// use tower_cx::metrics;
///
/// let breaker = CircuitBreakerLayer::new().on_event(metrics::breaker_events("genesys"));
/// # let _ = breaker;
/// ```
pub fn breaker_events(name: impl Into<String>) -> impl Fn(&BreakerEvent) + Send + Sync + 'static {
    let name = shared(name);
    move |event: &BreakerEvent| {
        counter!(
            names::BREAKER_TRANSITIONS,
            "name" => name.clone(),
            "from" => event.from.as_str(),
            "to" => event.to.as_str(),
            "reason" => event.reason.as_str()
        )
        .increment(1);
        gauge!(names::BREAKER_STATE, "name" => name.clone()).set(state_value(&event.to));
    }
}

/// A callback for
/// [`PriorityLimitLayer::on_event`](crate::priority::PriorityLimitLayer::on_event):
/// counts sheds in `tower_cx.requests.shed` (`name`, `priority`,
/// `reason`), and records in `tower_cx.gate.closed_duration` (`name`,
/// `source`) the closed time each closure of the rate gate adds: a
/// closure that extends one still running adds only the extension, so
/// that the histogram's sum is the time the gate was announced closed;
/// sets `tower_cx.pacing.rate` (`name`) when the learned rate changes;
/// counts each entry into the quota-exhausted state in
/// `tower_cx.quota.exhaustions` (`name`, `source`).
///
/// Give each limiter an adapter of its own (it remembers that limiter's
/// gate).
///
/// ```
/// use tower_cx::metrics;
/// use tower_cx::priority::PriorityLimitLayer;
///
/// let limiter = PriorityLimitLayer::new(16).on_event(metrics::limiter_events("genesys"));
/// # let _ = limiter;
/// ```
pub fn limiter_events(name: impl Into<String>) -> impl Fn(&LimiterEvent) + Send + Sync + 'static {
    let name = shared(name);
    let closed_until = Mutex::new(None::<Instant>);
    move |event: &LimiterEvent| {
        let (for_, source) = match event {
            LimiterEvent::Shed { priority, reason } => {
                counter!(
                    names::REQUESTS_SHED,
                    "name" => name.clone(),
                    "priority" => priority.as_str(),
                    "reason" => reason.as_str()
                )
                .increment(1);
                return;
            }
            LimiterEvent::GateClosed { for_, source } => (*for_, source.as_str()),
            LimiterEvent::GateClosedElsewhere { for_ } => (*for_, "shared"),
            LimiterEvent::QuotaExhausted { source, .. } => {
                counter!(
                    names::QUOTA_EXHAUSTIONS,
                    "name" => name.clone(),
                    "source" => source.map_or("shared", |s| s.as_str())
                )
                .increment(1);
                return;
            }
            LimiterEvent::PacingChanged { interval, .. } => {
                let per_minute = interval.map_or(0.0, crate::observe::per_minute);
                gauge!(names::PACING_RATE, "name" => name.clone()).set(per_minute);
                return;
            }
            _ => return,
        };
        let added = {
            let mut until = closed_until.lock().unwrap_or_else(|e| e.into_inner());
            extend(&mut until, Instant::now(), for_)
        };
        histogram!(
            names::GATE_CLOSED_DURATION,
            "name" => name.clone(),
            "source" => source
        )
        .record(added.as_secs_f64());
    }
}

/// Close a gate closed until `until` (if at all) for `for_` from `now`:
/// the closed time added.
fn extend(until: &mut Option<Instant>, now: Instant, for_: Duration) -> Duration {
    let end = now + for_;
    let from = until.map_or(now, |until| until.max(now));
    if end <= from {
        return Duration::ZERO;
    }
    *until = Some(end);
    end - from
}

/// A callback for
/// [`TokenCacheBuilder::on_event`](crate::auth::TokenCacheBuilder::on_event):
/// counts tokens stored (`tower_cx.token.issued`), token requests that
/// failed (`tower_cx.token.fetch_failures`, with `token_still_valid`) and
/// tokens dropped after a `401` (`tower_cx.token.invalidations`), by
/// `name`.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::auth::{source_fn, Token, TokenCache, TokenError};
/// use tower_cx::metrics;
///
/// let source = source_fn(|| async { Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600))) });
/// let tokens = TokenCache::builder(source).on_event(metrics::auth_events("genesys")).build();
/// # let _ = tokens;
/// ```
pub fn auth_events(name: impl Into<String>) -> impl Fn(&AuthEvent) + Send + Sync + 'static {
    let name = shared(name);
    move |event: &AuthEvent| match event {
        AuthEvent::TokenRefreshed { .. } => {
            counter!(names::TOKENS_ISSUED, "name" => name.clone()).increment(1);
        }
        AuthEvent::RefreshFailed {
            token_still_valid, ..
        } => {
            let valid = if *token_still_valid { "true" } else { "false" };
            counter!(
                names::TOKEN_FETCH_FAILURES,
                "name" => name.clone(),
                "token_still_valid" => valid
            )
            .increment(1);
        }
        AuthEvent::TokenInvalidated { .. } => {
            counter!(names::TOKEN_INVALIDATIONS, "name" => name.clone()).increment(1);
        }
        _ => {}
    }
}

/// A callback for a fleet's `on_event` (feature `redis`): counts each
/// component that fell back to local state (`tower_cx.fleet.degradations`)
/// or recovered (`tower_cx.fleet.restorations`), and sets
/// `tower_cx.fleet.degraded` to 1 or 0, by `name` and `component`.
///
/// ```
/// use tower_cx::metrics;
/// use tower_cx::observe::FleetEvent;
///
/// let record = metrics::fleet_events("fleet");
/// record(&FleetEvent::Restored { component: "gate" });
/// ```
pub fn fleet_events(name: impl Into<String>) -> impl Fn(&FleetEvent) + Send + Sync + 'static {
    let name = shared(name);
    move |event: &FleetEvent| {
        let (component, counter_name, degraded) = match event {
            FleetEvent::Degraded { component, .. } => (*component, names::FLEET_DEGRADATIONS, 1.0),
            FleetEvent::Restored { component } => (*component, names::FLEET_RESTORATIONS, 0.0),
            _ => return,
        };
        counter!(counter_name, "name" => name.clone(), "component" => component).increment(1);
        gauge!(names::FLEET_DEGRADED, "name" => name.clone(), "component" => component)
            .set(degraded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_closures_add_only_what_they_extend() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let mut until = None;
        assert_eq!(extend(&mut until, now, secs(5)), secs(5));
        // at 2 s, closed for 10 s more: until 12 s, 7 s added
        assert_eq!(extend(&mut until, now + secs(2), secs(10)), secs(7));
        // within the closure: nothing added, the end kept
        assert_eq!(extend(&mut until, now + secs(3), secs(1)), Duration::ZERO);
        assert_eq!(until, Some(now + secs(12)));
        // after it reopened: all of it
        assert_eq!(extend(&mut until, now + secs(20), secs(4)), secs(4));
        assert_eq!(until, Some(now + secs(24)));
    }

    #[test]
    fn breaker_states_are_numbered_in_order_of_severity() {
        let open = BreakerState::Open {
            retry_in: Duration::from_secs(1),
        };
        let values: Vec<f64> = [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            open,
            BreakerState::Isolated,
        ]
        .iter()
        .map(state_value)
        .collect();
        assert_eq!(values, [0.0, 1.0, 2.0, 3.0]);
    }
}
