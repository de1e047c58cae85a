//! The priority limiter's events: the rate gate, the queue, sheds.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::event::Fields;
use crate::error::OverloadReason;
use crate::hint::{HintSource, QuotaSource};
use crate::level::Priority;

/// Something the limiter did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterEvent {
    /// A server hint in a response closed the rate gate: nothing is
    /// dispatched for `for_` (`gate.closed`: `for_ms`, `source`).
    GateClosed {
        /// How long the gate stays closed from now.
        for_: Duration,
        /// The header the hint came from.
        source: HintSource,
    },
    /// Another limiter sharing this one's gate (see
    /// [`PauseShare`](crate::share::PauseShare)) saw a server hint: the gate
    /// is closed for `for_` (`gate.closed_elsewhere`: `for_ms`).
    GateClosedElsewhere {
        /// How long the gate stays closed from now.
        for_: Duration,
    },
    /// A server hint longer than the limiter's
    /// [`max_gate`](crate::priority::PriorityLimitLayer::max_gate) (a daily
    /// cap) put the limiter in the exhausted state: every request fails at
    /// once with [`QuotaExhausted`](crate::error::QuotaExhausted) for `for_`
    /// (`quota.exhausted`: `for_ms`, `source`; `source` is `shared` when a
    /// limiter sharing this one's gate saw the hint).
    QuotaExhausted {
        /// How long the state lasts from now.
        for_: Duration,
        /// The header the hint came from; `None` when another limiter
        /// sharing the gate saw it.
        source: Option<HintSource>,
    },
    /// The rate gate reopened and a request that waited behind it was let
    /// through (`gate.opened`).
    GateOpened,
    /// A request waited in the queue, a closed gate included
    /// (`queue.waited`: `wait_ms`, `priority`).
    QueueWaited {
        /// For how long.
        wait: Duration,
        /// The priority it waited at.
        priority: Priority,
    },
    /// A request was shed without being sent (`request.shed`: `priority`,
    /// `reason`).
    Shed {
        /// Its priority.
        priority: Priority,
        /// Why.
        reason: OverloadReason,
    },
    /// The limiter's external [`Pacer`](crate::priority::Pacer) kept the
    /// next slot from its best waiter's priority, for higher priorities:
    /// the limiter asks again after `for_` (`pacer.deferred`: `for_ms`,
    /// `priority`).
    PacerDeferred {
        /// The priority the limiter asked at (its best waiter's, aging
        /// included).
        priority: Priority,
        /// When it asks again, from now.
        for_: Duration,
    },
    /// The learned pacing rate changed (`pacing.changed`: `interval_ms`
    /// and `per_minute` when paced, `source`): the server advertised a new
    /// limit, or a `429` from a server that advertises none cut the rate.
    /// The gradual recovery after a cut is not reported event by event;
    /// [`PriorityLimitHandle::pacing`](crate::priority::PriorityLimitHandle::pacing)
    /// reads it at any time.
    PacingChanged {
        /// The time between dispatches now; `None`: not paced.
        interval: Option<Duration>,
        /// Where the rate comes from.
        source: PacingSource,
    },
}

/// Where the pacing rate in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacingSource {
    /// Not paced: no rate configured, none learned yet.
    Off,
    /// The rate configured on the layer.
    Configured,
    /// The quota the server advertises, in these headers.
    Advertised(QuotaSource),
    /// Adapted from `429` answers of a server that advertises no quota
    /// (cut on a `429`, recovering over time).
    Adapted,
}

impl PacingSource {
    /// A short, stable name: `"off"`, `"configured"`, `"inin-ratelimit"`,
    /// `"ratelimit"`, `"x-ratelimit"` or `"adapted"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PacingSource::Off => "off",
            PacingSource::Configured => "configured",
            PacingSource::Advertised(source) => source.as_str(),
            PacingSource::Adapted => "adapted",
        }
    }
}

/// Requests per minute at one per `interval`, to a tenth.
pub(crate) fn per_minute(interval: Duration) -> f64 {
    if interval.is_zero() {
        return f64::INFINITY;
    }
    (600.0 / interval.as_secs_f64()).round() / 10.0
}

impl LimiterEvent {
    /// The event's name (`gate.closed`, `gate.closed_elsewhere`,
    /// `gate.opened`, `quota.exhausted`, `queue.waited`, `request.shed`,
    /// `pacer.deferred`, `pacing.changed`).
    pub fn name(&self) -> &'static str {
        match self {
            LimiterEvent::GateClosed { .. } => "gate.closed",
            LimiterEvent::GateClosedElsewhere { .. } => "gate.closed_elsewhere",
            LimiterEvent::GateOpened => "gate.opened",
            LimiterEvent::QuotaExhausted { .. } => "quota.exhausted",
            LimiterEvent::QueueWaited { .. } => "queue.waited",
            LimiterEvent::Shed { .. } => "request.shed",
            LimiterEvent::PacerDeferred { .. } => "pacer.deferred",
            LimiterEvent::PacingChanged { .. } => "pacing.changed",
        }
    }
}

impl Serialize for LimiterEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Fields::start(serializer, self.name())?;
        match self {
            LimiterEvent::GateClosed { for_, source } => fields
                .millis("for_ms", *for_)?
                .field("source", source.as_str())?,
            LimiterEvent::GateClosedElsewhere { for_ } => fields.millis("for_ms", *for_)?,
            LimiterEvent::GateOpened => fields,
            LimiterEvent::QuotaExhausted { for_, source } => fields
                .millis("for_ms", *for_)?
                .field("source", source.map_or("shared", |s| s.as_str()))?,
            LimiterEvent::QueueWaited { wait, priority } => fields
                .millis("wait_ms", *wait)?
                .field("priority", priority.as_str())?,
            LimiterEvent::Shed { priority, reason } => fields
                .field("priority", priority.as_str())?
                .field("reason", reason.as_str())?,
            LimiterEvent::PacerDeferred { priority, for_ } => fields
                .millis("for_ms", *for_)?
                .field("priority", priority.as_str())?,
            LimiterEvent::PacingChanged { interval, source } => fields
                .some("interval_ms", interval.map(super::event::ms))?
                .some("per_minute", interval.map(per_minute))?
                .field("source", source.as_str())?,
        }
        .end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_quota_serializes_flat() {
        let event = LimiterEvent::QuotaExhausted {
            for_: Duration::from_secs(3600),
            source: Some(HintSource::RetryAfter),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"quota.exhausted","for_ms":3600000.0,"source":"retry-after"}"#
        );
        let shared = LimiterEvent::QuotaExhausted {
            for_: Duration::from_millis(1500),
            source: None,
        };
        assert_eq!(
            serde_json::to_string(&shared).unwrap(),
            r#"{"event":"quota.exhausted","for_ms":1500.0,"source":"shared"}"#
        );
    }

    #[test]
    fn a_deferral_by_the_pacer_serializes_flat() {
        let event = LimiterEvent::PacerDeferred {
            priority: Priority::Low,
            for_: Duration::from_millis(400),
        };
        assert_eq!(event.name(), "pacer.deferred");
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"pacer.deferred","for_ms":400.0,"priority":"low"}"#
        );
    }
}
