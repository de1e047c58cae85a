use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tower::Layer;

use super::sink::AuditSink;
use super::stats::AuditStats;
use super::Audit;
use crate::dead_letter::DeadLetterSink;
use crate::observe::Event;

/// Applies [`Audit`] to services: one record per logical request, one event
/// stream, shared [`AuditStats`].
#[derive(Clone)]
pub struct AuditLayer {
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) stats: AuditStats,
    pub(crate) header: HeaderName,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterSink>>,
    pub(crate) letter_dropped: bool,
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
            letter_dropped: false,
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
        stats.mark_wanted();
        self.stats = stats;
        self
    }

    /// Hand requests that fail for good to `sink`, with a replayable copy
    /// when the body allows.
    pub fn dead_letters(mut self, sink: impl DeadLetterSink) -> Self {
        self.dead_letters = Some(Arc::new(sink));
        self
    }

    /// Also dead-letter requests dropped before their outcome (their caller
    /// went away, or a server's shutdown grace period ran out), with the
    /// code `cancelled`, so that nothing that may not have been applied is
    /// lost silently. Off by default: a caller that drops a request usually
    /// meant to. No effect without [`dead_letters`](Self::dead_letters).
    pub fn dead_letter_dropped(mut self, enabled: bool) -> Self {
        self.letter_dropped = enabled;
        self
    }

    /// The statistics handle.
    ///
    /// Statistics are kept from the moment a handle is taken (here or with
    /// [`stats`](Self::stats)), by services made before or after: a layer
    /// whose numbers nobody can read keeps none, and pays nothing for them.
    pub fn stats_handle(&self) -> AuditStats {
        self.stats.mark_wanted();
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
    /// Record `event` now.
    pub fn emit(&self, event: impl Into<Event>) {
        self.sink
            .record(&super::AuditEvent::new(Arc::from("-"), None, event.into()));
    }

    /// A callback for a producer's `on_event` that records each of its
    /// events, e.g. a [`RedisFleet`](crate::fleet::RedisFleet)'s
    /// `fleet.degraded` and `fleet.restored`:
    /// `fleet.on_event(audit.emitter().handler())`.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower_cx::audit::{callback, AuditLayer};
    /// use tower_cx::observe::FleetEvent;
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let seen = lines.clone();
    /// let audit = AuditLayer::new(callback(move |e| seen.lock().unwrap().push(e.to_json())));
    /// let record = audit.emitter().handler();
    /// record(&FleetEvent::Restored { component: "gate" });
    /// assert!(lines.lock().unwrap()[0].contains(r#""event":"fleet.restored""#));
    /// ```
    pub fn handler<E>(&self) -> impl Fn(&E) + Send + Sync + 'static
    where
        E: Clone + Into<Event>,
    {
        let emitter = self.clone();
        move |event: &E| emitter.emit(event.clone())
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
