//! The limiter's side of learning: each response's quota headers, or its
//! `429`, go to the pacing schedule under the limiter's lock; the pacing in
//! force is read back for the handle.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::super::limiter::{Limiter, Permit};
use super::super::PacingStatus;
use crate::hint::advertised_quota;
use crate::observe::{LimiterEvent, PacingSource};

impl Limiter {
    /// Learn from a response to the request holding `permit`: its quota
    /// headers, or, without any, a `429` (at most one cut per feedback
    /// window: a `429` to a request sent before the last cut is ignored).
    /// The event to report when the rate changed.
    pub(crate) fn learn_from(
        &self,
        permit: &Permit,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<LimiterEvent> {
        let quota = advertised_quota(headers, self.config.clock.as_ref());
        if quota.is_none() && status != StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        let now = Instant::now();
        let others = self.in_flight_now().saturating_sub(1) as u64;
        let mut state = self.lock();
        let pacing = state.pacing.as_mut()?;
        let before = pacing.status(now).0;
        let configured = pacing.configured();
        let learner = pacing.learner()?;
        let changed = match &quota {
            Some(quota) => learner.advertised(quota, others, now),
            None => {
                learner.adapts()
                    && self
                        .cuts
                        .compare_exchange(
                            permit.epoch,
                            permit.epoch + 1,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok()
                    && learner.throttled(configured, now)
            }
        };
        pacing.rate_changed(before, now);
        let (interval, source, _) = pacing.status(now);
        let event = changed.then_some(LimiterEvent::PacingChanged { interval, source });
        if let (Some(event), Some(_)) = (&event, &self.config.on_event) {
            state.events.push(event.clone());
        }
        self.unlock(state);
        // a pacer outside paces by what was learned (the fleet's, shared),
        // unless the limiter has a rate of its own beside it (a keyed
        // limiter's, whose key is not the pacer's)
        if let (Some(pacer), None) = (&self.config.pacer, self.config.pacing) {
            pacer.learned(interval);
        }
        event
    }

    /// The pacing in force.
    pub(crate) fn pacing_status(&self) -> PacingStatus {
        let now = Instant::now();
        let state = self.lock();
        let (interval, source, ceiling) = match &state.pacing {
            Some(pacing) => pacing.status(now),
            None => (None, PacingSource::Off, None),
        };
        PacingStatus {
            interval,
            source,
            ceiling,
        }
    }

    /// Smooth pacing's interval in force (learned, else configured).
    pub(crate) fn pacing_interval(&self) -> Option<Duration> {
        self.pacing_status().interval
    }
}
