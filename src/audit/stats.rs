//! Counters and latency percentiles over every audited request.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::latency::Latencies;
use super::EventKind;
use crate::classify::FailureKind;
use crate::observe::{
    AuthEvent, BreakerEvent, BreakerState, LimiterEvent, RequestEvent, RequestOutcome,
    RetryEventKind,
};

/// A cloneable handle on audit statistics: counts and latency percentiles
/// (bounded memory: an HDR histogram from 1 µs to 1 h, 3 significant
/// digits). Clones share the numbers.
#[derive(Clone)]
pub struct AuditStats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    successes: AtomicU64,
    http_errors: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    connect_errors: AtomicU64,
    not_sent: AtomicU64,
    cancelled: AtomicU64,
    shed: AtomicU64,
    breaker_opens: AtomicU64,
    token_refreshes: AtomicU64,
    gate_closures: AtomicU64,
    dead_letters: AtomicU64,
}

struct Inner {
    counters: Counters,
    /// The latencies read so far ([`snapshot`](AuditStats::snapshot)
    /// folds `recent` in).
    latency_us: Mutex<Histogram<u64>>,
    /// The latencies recorded since, without a lock.
    recent: Latencies,
    /// Somebody holds a handle to read these numbers: until then an audit
    /// layer keeps no per-request context for them.
    wanted: AtomicBool,
}

/// A snapshot of [`AuditStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Logical requests finished.
    pub requests: u64,
    /// Attempts sent.
    pub attempts: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Requests that ended with a success status.
    pub successes: u64,
    /// Requests that ended with an error status (4xx, 5xx).
    pub http_errors: u64,
    /// Requests that ended with an error (no response).
    pub errors: u64,
    /// Of the errors: timeouts.
    pub timeouts: u64,
    /// Of the errors: connection failures.
    pub connect_errors: u64,
    /// Of the errors: not sent (shed, breaker open).
    pub not_sent: u64,
    /// Requests dropped by their caller before they ended (not counted in
    /// `requests` or the latencies).
    pub cancelled: u64,
    /// Requests shed by the limiter.
    pub shed: u64,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// Tokens fetched while a request waited.
    pub token_refreshes: u64,
    /// Times a response closed the rate gate.
    pub gate_closures: u64,
    /// Requests handed to the dead-letter sink.
    pub dead_letters: u64,
    /// Median total latency, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile total latency, in milliseconds.
    pub p90_ms: f64,
    /// 99th percentile total latency, in milliseconds.
    pub p99_ms: f64,
}

impl Default for AuditStats {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                counters: Counters::default(),
                latency_us: Mutex::new(Latencies::histogram()),
                recent: Latencies::new(),
                wanted: AtomicBool::new(false),
            }),
        }
    }

    /// The numbers now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.inner.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let mut histogram = self
            .inner
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.recent.fold_into(&mut histogram);
        let pct = |q: f64| {
            if histogram.is_empty() {
                0.0
            } else {
                // the bucket's lowest value: exact for values recorded
                // exactly, within 0.1 % otherwise
                histogram.lowest_equivalent(histogram.value_at_quantile(q)) as f64 / 1000.0
            }
        };
        StatsSnapshot {
            requests: get(&c.requests),
            attempts: get(&c.attempts),
            retries: get(&c.retries),
            successes: get(&c.successes),
            http_errors: get(&c.http_errors),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            connect_errors: get(&c.connect_errors),
            not_sent: get(&c.not_sent),
            cancelled: get(&c.cancelled),
            shed: get(&c.shed),
            breaker_opens: get(&c.breaker_opens),
            token_refreshes: get(&c.token_refreshes),
            gate_closures: get(&c.gate_closures),
            dead_letters: get(&c.dead_letters),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
        }
    }

    /// Note that somebody holds a handle to read these numbers.
    pub(crate) fn mark_wanted(&self) {
        self.inner.wanted.store(true, Ordering::Relaxed);
    }

    /// Whether somebody can read these numbers ([`mark_wanted`](Self::mark_wanted)).
    #[inline]
    pub(crate) fn wanted(&self) -> bool {
        self.inner.wanted.load(Ordering::Relaxed)
    }

    pub(crate) fn observe(&self, kind: &EventKind) {
        let c = &self.inner.counters;
        let bump = |n: &AtomicU64| {
            n.fetch_add(1, Ordering::Relaxed);
        };
        match kind {
            EventKind::Retry(RetryEventKind::AttemptStarted) => bump(&c.attempts),
            EventKind::Retry(RetryEventKind::RetryScheduled { .. }) => bump(&c.retries),
            EventKind::Limiter(LimiterEvent::Shed { .. }) => bump(&c.shed),
            EventKind::Limiter(LimiterEvent::GateClosed { .. }) => bump(&c.gate_closures),
            EventKind::Breaker(BreakerEvent {
                to: BreakerState::Open { .. },
                ..
            }) => bump(&c.breaker_opens),
            EventKind::Token(AuthEvent::TokenAwaited { .. }) => bump(&c.token_refreshes),
            EventKind::Request(RequestEvent::Finished {
                outcome,
                error_kind,
                total,
                ..
            }) => self.finished(*outcome, *error_kind, *total),
            _ => {}
        }
    }

    /// What observing a `request.finished` event with these fields counts.
    pub(crate) fn finished(
        &self,
        outcome: RequestOutcome,
        error_kind: Option<FailureKind>,
        total: Duration,
    ) {
        let c = &self.inner.counters;
        let bump = |n: &AtomicU64| {
            n.fetch_add(1, Ordering::Relaxed);
        };
        if outcome == RequestOutcome::Cancelled {
            bump(&c.cancelled);
            return;
        }
        bump(&c.requests);
        match outcome {
            RequestOutcome::Success => bump(&c.successes),
            RequestOutcome::HttpError => bump(&c.http_errors),
            _ => {
                bump(&c.errors);
                match error_kind {
                    Some(FailureKind::Timeout) => bump(&c.timeouts),
                    Some(FailureKind::Connect) => bump(&c.connect_errors),
                    Some(FailureKind::NotSent) => bump(&c.not_sent),
                    _ => {}
                }
            }
        }
        // whole microseconds, rounded (what events carry), in u64
        // arithmetic: whole seconds are whole microseconds
        let micros = total
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from((total.subsec_nanos() + 500) / 1000));
        self.inner.recent.record(micros);
    }

    pub(crate) fn count_dead_letter(&self) {
        self.inner
            .counters
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for AuditStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}
