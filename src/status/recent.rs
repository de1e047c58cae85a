//! What the board hears from the audit stream: recent retries and sheds,
//! their totals, and the fleet components that fell back to local state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::audit::{AuditEvent, AuditSink};
use crate::observe::{Event, FleetEvent, LimiterEvent, RetryEventKind};

use super::snapshot::{DegradedView, RecentEvent, RecentView};

/// How many retries and sheds the board keeps by default.
pub(super) const DEFAULT_CAPACITY: usize = 50;

/// The recent events, shared by a board's clones.
#[derive(Debug, Clone, Default)]
pub(super) struct Recent(Arc<Mutex<Heard>>);

#[derive(Debug, Default)]
pub(super) struct Heard {
    pub(super) capacity: usize,
    pub(super) events: VecDeque<RecentEvent>,
    pub(super) retries_total: u64,
    pub(super) sheds_total: u64,
    pub(super) degraded: Vec<DegradedView>,
}

impl Recent {
    pub(super) fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Heard {
            capacity,
            ..Heard::default()
        })))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Heard> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The retries and sheds heard, newest first.
    pub(super) fn view(&self) -> RecentView {
        let heard = self.lock();
        RecentView {
            retries_total: heard.retries_total,
            sheds_total: heard.sheds_total,
            events: heard.events.iter().rev().cloned().collect(),
        }
    }
}

impl Heard {
    fn push(&mut self, event: &AuditEvent, detail: String) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(RecentEvent {
            ts: event.ts.to_string(),
            event: event.name().to_owned(),
            correlation_id: event.correlation_id.to_string(),
            attempt: event.attempt,
            detail,
        });
    }
}

impl AuditSink for Recent {
    fn record(&self, event: &AuditEvent) {
        match &event.kind {
            Event::Retry(RetryEventKind::RetryScheduled { delay, source }) => {
                let mut heard = self.lock();
                heard.retries_total += 1;
                let detail = format!("in {} ms ({})", delay.as_millis(), source.as_str());
                heard.push(event, detail);
            }
            Event::Limiter(LimiterEvent::Shed { priority, reason }) => {
                let mut heard = self.lock();
                heard.sheds_total += 1;
                let detail = format!("{} priority, {}", priority.as_str(), reason.as_str());
                heard.push(event, detail);
            }
            Event::Fleet(FleetEvent::Degraded { component, reason }) => {
                let mut heard = self.lock();
                heard.degraded.retain(|d| d.component != *component);
                heard.degraded.push(DegradedView {
                    component: (*component).to_owned(),
                    reason: reason.clone(),
                    since: event.ts.to_string(),
                });
            }
            Event::Fleet(FleetEvent::Restored { component }) => {
                self.lock().degraded.retain(|d| d.component != *component);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::error::OverloadReason;
    use crate::level::Priority;
    use crate::observe::DelaySource;

    fn heard(recent: &Recent, n: u32) {
        for attempt in 1..=n {
            let kind = RetryEventKind::RetryScheduled {
                delay: Duration::from_millis(u64::from(attempt)),
                source: DelaySource::Backoff,
            };
            recent.record(&AuditEvent::new(Arc::from("c"), Some(attempt), kind.into()));
        }
    }

    #[test]
    fn keeps_the_newest_up_to_its_capacity_and_counts_them_all() {
        let recent = Recent::new(3);
        heard(&recent, 5);
        let shed = LimiterEvent::Shed {
            priority: Priority::Low,
            reason: OverloadReason::Evicted,
        };
        recent.record(&AuditEvent::new(Arc::from("d"), None, shed.into()));
        let view = recent.view();
        assert_eq!((view.retries_total, view.sheds_total), (5, 1));
        let details: Vec<_> = view.events.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "low priority, evicted",
                "in 5 ms (backoff)",
                "in 4 ms (backoff)"
            ]
        );
    }

    #[test]
    fn a_capacity_of_zero_keeps_no_event_but_counts() {
        let recent = Recent::new(0);
        heard(&recent, 2);
        let view = recent.view();
        assert_eq!(view.retries_total, 2);
        assert!(view.events.is_empty());
    }
}
