//! The per-request audit record that inner layers publish into.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;

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
    /// The id as sent in the correlation header (visible ASCII, checked by
    /// the audit layer); the `Arc<str>` events carry is made from it only
    /// once an event is built, so a sink that records nothing never pays
    /// for it.
    correlation_id: HeaderValue,
    correlation_arc: OnceLock<Arc<str>>,
    started: Instant,
    sink: Arc<dyn AuditSink>,
    /// `sink.enabled()`, asked once per request.
    enabled: bool,
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
        correlation_id: HeaderValue,
        sink: Arc<dyn AuditSink>,
        enabled: bool,
        stats: AuditStats,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                correlation_id,
                correlation_arc: OnceLock::new(),
                started: Instant::now(),
                sink,
                enabled,
                stats,
                attempts: AtomicU32::new(0),
                backoff_ns: AtomicU64::new(0),
                queue_ns: AtomicU64::new(0),
            }),
        }
    }

    /// The logical request's correlation id.
    pub fn correlation_id(&self) -> &str {
        // the audit layer only makes ids of visible ASCII
        self.inner.correlation_id.to_str().unwrap_or("-")
    }

    /// When the request entered the audit layer.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Publish an event about this request (to the sink, and the stats).
    pub fn publish(&self, attempt: Option<u32>, kind: EventKind) {
        let inner = &self.inner;
        inner.stats.observe(&kind);
        if inner.enabled {
            let id = inner
                .correlation_arc
                .get_or_init(|| Arc::from(self.correlation_id()))
                .clone();
            inner.sink.record(&AuditEvent::new(id, attempt, kind));
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

    /// Whether the sink wants events (asked once, when the record was made).
    pub(crate) fn enabled(&self) -> bool {
        self.inner.enabled
    }

    pub(crate) fn stats(&self) -> &AuditStats {
        &self.inner.stats
    }
}

impl fmt::Debug for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRecord")
            .field("correlation_id", &self.correlation_id())
            .finish_non_exhaustive()
    }
}
