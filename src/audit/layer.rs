use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tower::Layer;

use super::sink::{AuditSink, DeadLetterSink};
use super::stats::AuditStats;
use super::Audit;

/// Applies [`Audit`] to services: one record per logical request, one event
/// stream, shared [`AuditStats`].
#[derive(Clone)]
pub struct AuditLayer {
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) stats: AuditStats,
    pub(crate) header: HeaderName,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterSink>>,
    pub(crate) record_bodies: bool,
}

impl AuditLayer {
    /// Audit into `sink`. The outbound correlation header is
    /// `x-correlation-id` unless [`correlation_header`](Self::correlation_header)
    /// says otherwise.
    pub fn new(sink: impl AuditSink) -> Self {
        Self {
            sink: Arc::new(sink),
            stats: AuditStats::new(),
            header: HeaderName::from_static("x-correlation-id"),
            dead_letters: None,
            record_bodies: false,
        }
    }

    /// Record buffered JSON request bodies in `request.started`, with the
    /// values of secret-looking keys (`password`, `secret`, `token`,
    /// `access_token`, `client_secret`, ...) masked at any depth. Off by
    /// default; bodies that are not JSON are never recorded.
    pub fn record_bodies(mut self, enabled: bool) -> Self {
        self.record_bodies = enabled;
        self
    }

    /// The header that carries the correlation id to the upstream.
    pub fn correlation_header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Keep statistics in `stats` (share one handle across layers).
    pub fn stats(mut self, stats: AuditStats) -> Self {
        self.stats = stats;
        self
    }

    /// Hand requests that fail for good to `sink`, with a replayable copy
    /// when the body allows.
    pub fn dead_letters(mut self, sink: impl DeadLetterSink) -> Self {
        self.dead_letters = Some(Arc::new(sink));
        self
    }

    /// The statistics handle.
    pub fn stats_handle(&self) -> AuditStats {
        self.stats.clone()
    }

    /// A handle that records events belonging to no request (for example
    /// fleet state changes) into this layer's sink.
    pub fn emitter(&self) -> AuditEmitter {
        AuditEmitter {
            sink: self.sink.clone(),
        }
    }
}

/// Records events that belong to no request into an [`AuditLayer`]'s sink,
/// with the correlation id `-`. Made by [`AuditLayer::emitter`].
#[derive(Clone)]
pub struct AuditEmitter {
    sink: Arc<dyn AuditSink>,
}

impl AuditEmitter {
    /// Record `kind` now.
    pub fn emit(&self, kind: super::EventKind) {
        self.sink
            .record(&super::AuditEvent::new(Arc::from("-"), None, kind));
    }
}

impl fmt::Debug for AuditEmitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditEmitter").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::new(inner, self.clone())
    }
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("header", &self.header)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
