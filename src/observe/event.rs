//! The one event vocabulary: every layer's own typed events, under one enum.

use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::breaker::BreakerEvent;
use super::fleet::FleetEvent;
use super::limiter::LimiterEvent;
use super::request::RequestEvent;
use super::retry::RetryEventKind;
use super::token::AuthEvent;

/// What happened, reported by the layer that did it: the one vocabulary
/// every layer reports in. Each variant holds a layer's own typed event,
/// the same value that layer's `on_event` callback receives.
///
/// Serialized flat: `event` (the [name](Self::name), e.g.
/// `retry.scheduled`) and the event's own fields, durations in
/// milliseconds (`delay_ms`). The audit layer's sinks add `ts`,
/// `correlation_id` and `attempt`
/// ([`AuditEvent`](crate::audit::AuditEvent)).
///
/// ```
/// use std::time::Duration;
/// use tower_cx::observe::{DelaySource, Event, RetryEventKind};
///
/// let event = Event::Retry(RetryEventKind::RetryScheduled {
///     delay: Duration::from_millis(250),
///     source: DelaySource::Backoff,
/// });
/// assert_eq!(event.name(), "retry.scheduled");
/// assert_eq!(
///     serde_json::to_string(&event).unwrap(),
///     r#"{"event":"retry.scheduled","delay_ms":250.0,"source":"backoff"}"#
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The observing layer's: a logical request started or finished.
    Request(RequestEvent),
    /// The retry layer's: attempts, delays, hints, giving up.
    Retry(RetryEventKind),
    /// The priority limiter's: the rate gate, the queue, sheds.
    Limiter(LimiterEvent),
    /// The circuit breaker's state changes.
    Breaker(BreakerEvent),
    /// The bearer's and its token cache's.
    Token(AuthEvent),
    /// The fleet's shared state (Redis); about no request.
    Fleet(FleetEvent),
}

impl Event {
    /// The event's name, as in its `event` field (e.g. `retry.scheduled`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Request(event) => event.name(),
            Event::Retry(event) => event.name(),
            Event::Limiter(event) => event.name(),
            Event::Breaker(event) => event.name(),
            Event::Token(event) => event.name(),
            Event::Fleet(event) => event.name(),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Request(event) => event.serialize(serializer),
            Event::Retry(event) => event.serialize(serializer),
            Event::Limiter(event) => event.serialize(serializer),
            Event::Breaker(event) => event.serialize(serializer),
            Event::Token(event) => event.serialize(serializer),
            Event::Fleet(event) => event.serialize(serializer),
        }
    }
}

macro_rules! into_event {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(
            impl From<$ty> for Event {
                fn from(event: $ty) -> Self {
                    Event::$variant(event)
                }
            }
        )*
    };
}

into_event!(
    Request(RequestEvent),
    Retry(RetryEventKind),
    Limiter(LimiterEvent),
    Breaker(BreakerEvent),
    Token(AuthEvent),
    Fleet(FleetEvent),
);

/// A duration in milliseconds, to the microsecond, as events carry them.
pub(crate) fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Writes one event as a flat map: `event`, then the fields
/// [`field`](Self::field) adds. What every event type's `Serialize` uses,
/// so that all share one shape.
pub(crate) struct Fields<M>(M);

impl<M: SerializeMap> Fields<M> {
    /// Start the map of the event named `name`.
    pub(crate) fn start<S>(serializer: S, name: &'static str) -> Result<Self, S::Error>
    where
        S: Serializer<SerializeMap = M, Error = M::Error>,
    {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", name)?;
        Ok(Self(map))
    }

    /// One field.
    pub(crate) fn field<T: Serialize + ?Sized>(
        mut self,
        key: &'static str,
        value: &T,
    ) -> Result<Self, M::Error> {
        self.0.serialize_entry(key, value)?;
        Ok(self)
    }

    /// A field left out when `None`.
    pub(crate) fn some<T: Serialize>(
        self,
        key: &'static str,
        value: Option<T>,
    ) -> Result<Self, M::Error> {
        match value {
            Some(value) => self.field(key, &value),
            None => Ok(self),
        }
    }

    /// A duration field, in milliseconds.
    pub(crate) fn millis(self, key: &'static str, value: Duration) -> Result<Self, M::Error> {
        self.field(key, &ms(value))
    }

    /// The end of the map.
    pub(crate) fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}
