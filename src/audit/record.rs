//! The per-request audit record that inner layers publish into.

use std::fmt;
use std::sync::{Arc, Mutex};
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
    timings: Mutex<Timings>,
}

#[derive(Default, Clone, Copy)]
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
                timings: Mutex::default(),
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
        *self.inner.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Timings)) {
        change(&mut self.inner.timings.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Count an attempt sent.
    pub(crate) fn attempt_started(&self) -> u32 {
        let mut attempt = 0;
        self.update(|t| {
            t.attempts += 1;
            attempt = t.attempts;
        });
        attempt
    }

    /// Add time spent in backoff.
    pub(crate) fn add_backoff(&self, wait: Duration) {
        self.update(|t| t.backoff += wait);
    }

    /// Add time spent in the limiter's queue.
    pub(crate) fn add_queue(&self, wait: Duration) {
        self.update(|t| t.queue += wait);
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
