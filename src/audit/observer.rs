//! The audit layer as an [`Observer`]: the events layers publish go to its
//! stats and, when it wants them, its sink.

use std::sync::Arc;

use super::event::AuditEvent;
use super::sink::AuditSink;
use super::stats::AuditStats;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::observe::{Event, Observer, RequestContext};

/// An [`AuditLayer`](super::AuditLayer)'s sink and stats, shared by every
/// request one audit service observes.
pub(crate) struct AuditObserver {
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) stats: AuditStats,
}

impl Observer for AuditObserver {
    fn enabled(&self) -> bool {
        self.sink.enabled()
    }

    fn observe(&self, context: &RequestContext, attempt: Option<u32>, event: Event) {
        self.stats.observe(&event);
        if context.enabled() {
            let id = context.correlation_arc();
            self.sink.record(&AuditEvent::new(id, attempt, event));
        }
    }
}

/// An [`AuditLayer`](super::AuditLayer)'s dead-letter sink, counted in its
/// stats.
pub(crate) struct CountedDeadLetters {
    pub(crate) inner: Arc<dyn DeadLetterSink>,
    pub(crate) stats: AuditStats,
}

impl DeadLetterSink for CountedDeadLetters {
    fn dead_letter(&self, letter: DeadLetter) {
        self.stats.count_dead_letter();
        self.inner.dead_letter(letter);
    }
}
