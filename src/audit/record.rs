//! The per-request audit record that inner layers publish into.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::event::{AuditEvent, EventKind};
use super::sink::AuditSink;
use super::stats::AuditStats;

/// The audit record of one logical request, placed in the request's
/// extensions by the [`AuditLayer`](super::AuditLayer). Inner layers find it
/// there and [`publish`](Self::publish) what they do; without an audit layer
/// there is no record and they publish nothing.
#[derive(Clone)]
pub struct AuditRecord {
    inner: Arc<Inner>,
}

struct Inner {
    correlation_id: Arc<str>,
    started: Instant,
    sink: Arc<dyn AuditSink>,
    stats: AuditStats,
    attempts: AtomicU32,
    backoff_ns: AtomicU64,
    queue_ns: AtomicU64,
}

#[derive(Clone, Copy)]
pub(crate) struct Timings {
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) queue: Duration,
}

impl AuditRecord {
    pub(crate) fn new(
        correlation_id: Arc<str>,
        sink: Arc<dyn AuditSink>,
        stats: AuditStats,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                correlation_id,
                started: Instant::now(),
                sink,
                stats,
                attempts: AtomicU32::new(0),
                backoff_ns: AtomicU64::new(0),
                queue_ns: AtomicU64::new(0),
            }),
        }
    }

    /// The logical request's correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.inner.correlation_id
    }

    /// When the request entered the audit layer.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Publish an event about this request (to the sink, and the stats).
    pub fn publish(&self, attempt: Option<u32>, kind: EventKind) {
        self.inner.stats.observe(&kind);
        if self.inner.sink.enabled() {
            let event = AuditEvent::new(self.inner.correlation_id.clone(), attempt, kind);
            self.inner.sink.record(&event);
        }
    }

    pub(crate) fn timings(&self) -> Timings {
        let inner = &self.inner;
        Timings {
            attempts: inner.attempts.load(Ordering::Relaxed),
            backoff: Duration::from_nanos(inner.backoff_ns.load(Ordering::Relaxed)),
            queue: Duration::from_nanos(inner.queue_ns.load(Ordering::Relaxed)),
        }
    }

    /// Count an attempt sent.
    pub(crate) fn attempt_started(&self) -> u32 {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Add time spent in backoff.
    pub(crate) fn add_backoff(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.inner.backoff_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Add time spent in the limiter's queue.
    pub(crate) fn add_queue(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.inner.queue_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> &AuditStats {
        &self.inner.stats
    }
}

impl fmt::Debug for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRecord")
            .field("correlation_id", &self.inner.correlation_id)
            .finish_non_exhaustive()
    }
}
