//! [`MetricsSampler`]: gauges read from the layers' handles.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{gauge, SharedString};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::events::state_value;
use super::names;
use crate::auth::TokenCache;
use crate::breaker::CircuitBreakerHandle;
use crate::priority::{Priority, PriorityLimitHandle};
use crate::stack::StackHandles;

/// Sets gauges from the handles of limiters, breakers and token caches,
/// each time it [samples](Self::sample): the queue depth by priority and
/// the permits in use (`tower_cx.queue.depth`, `tower_cx.limiter.in_flight`),
/// the breaker state (`tower_cx.breaker.state`: 0 closed, 1 half-open,
/// 2 open, 3 isolated), the token's time left and failed refreshes in a
/// row (`tower_cx.token.expires_in`, `tower_cx.token.consecutive_failures`),
/// each with the `name` given here.
///
/// Sample on your exporter's schedule, or [`spawn`](Self::spawn) a task
/// that samples at an interval.
///
/// ```
/// use tower_cx::breaker::CircuitBreakerLayer;
/// use tower_cx::metrics::MetricsSampler;
/// use tower_cx::priority::PriorityLimitLayer;
///
/// let breaker = CircuitBreakerLayer::new();
/// let limiter = PriorityLimitLayer::new(16);
/// let sampler = MetricsSampler::new()
///     .breaker("genesys", breaker.handle())
///     .limiter("genesys", limiter.handle());
/// sampler.sample();
/// ```
#[derive(Clone, Default)]
pub struct MetricsSampler {
    limiters: Vec<(SharedString, PriorityLimitHandle)>,
    breakers: Vec<(SharedString, CircuitBreakerHandle)>,
    tokens: Vec<(SharedString, TokenCache)>,
}

fn shared(name: impl Into<String>) -> SharedString {
    SharedString::from_shared(Arc::<str>::from(name.into()))
}

impl MetricsSampler {
    /// A sampler of nothing yet (it describes the instruments to the
    /// installed recorder: see [`describe`](super::describe)).
    pub fn new() -> Self {
        names::describe();
        Self::default()
    }

    /// Sample this limiter's queue and permits, labelled `name`.
    pub fn limiter(mut self, name: impl Into<String>, handle: PriorityLimitHandle) -> Self {
        self.limiters.push((shared(name), handle));
        self
    }

    /// Sample this breaker's state, labelled `name`. Reading it moves an
    /// open breaker whose time has come to half-open, as a request would.
    pub fn breaker(mut self, name: impl Into<String>, handle: CircuitBreakerHandle) -> Self {
        self.breakers.push((shared(name), handle));
        self
    }

    /// Sample this token cache, labelled `name`.
    pub fn tokens(mut self, name: impl Into<String>, cache: TokenCache) -> Self {
        self.tokens.push((shared(name), cache));
        self
    }

    /// Sample a [`Stack`](crate::stack::Stack)'s limiter, breaker and token
    /// cache (if it has one), all labelled `name`.
    pub fn stack(self, name: impl Into<String>, handles: &StackHandles) -> Self {
        let name: String = name.into();
        let sampler = self
            .limiter(name.clone(), handles.limiter.clone())
            .breaker(name.clone(), handles.breaker.clone());
        match &handles.tokens {
            Some(cache) => sampler.tokens(name, cache.clone()),
            None => sampler,
        }
    }

    /// Set every gauge now.
    pub fn sample(&self) {
        for (name, handle) in &self.limiters {
            let status = handle.status();
            for priority in [Priority::Low, Priority::Normal, Priority::High] {
                let depth = status.queued[priority_index(priority)];
                gauge!(
                    names::QUEUE_DEPTH,
                    "name" => name.clone(),
                    "priority" => priority.as_str()
                )
                .set(depth as f64);
            }
            gauge!(names::LIMITER_IN_FLIGHT, "name" => name.clone()).set(status.in_flight as f64);
            // the rate in force, recovery after a cut included
            let per_minute = handle.pacing().per_minute().unwrap_or(0.0);
            gauge!(names::PACING_RATE, "name" => name.clone()).set(per_minute);
        }
        for (name, handle) in &self.breakers {
            gauge!(names::BREAKER_STATE, "name" => name.clone()).set(state_value(&handle.state()));
        }
        for (name, cache) in &self.tokens {
            let status = cache.status();
            let left = status.expires_at.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
            gauge!(names::TOKEN_EXPIRES_IN, "name" => name.clone()).set(left.as_secs_f64());
            gauge!(names::TOKEN_CONSECUTIVE_FAILURES, "name" => name.clone())
                .set(f64::from(status.consecutive_failures));
        }
    }

    /// Sample now and then every `every` (at least 1 ms) on a Tokio task,
    /// until the task is aborted (`handle.abort()`). Call it within a Tokio
    /// runtime.
    pub fn spawn(self, every: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.sample();
            }
        })
    }
}

/// Where [`LimiterStatus::queued`](crate::priority::LimiterStatus::queued)
/// keeps a priority: `[low, normal, high]`.
fn priority_index(priority: Priority) -> usize {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

impl fmt::Debug for MetricsSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSampler")
            .field("limiters", &names(&self.limiters))
            .field("breakers", &names(&self.breakers))
            .field("tokens", &names(&self.tokens))
            .finish()
    }
}

/// The names in a list of named handles.
fn names<T>(list: &[(SharedString, T)]) -> Vec<&str> {
    list.iter().map(|(name, _)| &**name).collect()
}
