//! The fleet's events: shared state (Redis) lost, restored and used.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::event::Fields;

/// Something the fleet state did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetEvent {
    /// Redis could not be used for `component` (`token`, `gate`,
    /// `breaker`, `pacer`, `retry_budget` or `members`): this instance goes
    /// on with its local state
    /// (`fleet.degraded`: `component`, `reason`).
    Degraded {
        /// The part that fell back.
        component: &'static str,
        /// Why: the kind of failure, never a URL or a secret.
        reason: String,
    },
    /// Redis works again for `component`; shared state is used again
    /// (`fleet.restored`: `component`).
    Restored {
        /// The part that recovered.
        component: &'static str,
    },
    /// This instance held the refresh lock and fetched a token for the
    /// fleet (`fleet.token_fetched`).
    TokenFetched,
    /// This instance took a token another instance fetched
    /// (`fleet.token_shared`).
    TokenShared,
    /// The stored token was one the API refused: this instance removed it
    /// (compare-and-delete) so that the fleet fetches a new one
    /// (`fleet.rejected_token_removed`).
    RejectedTokenRemoved,
    /// A refresh lock expired without a new token (its holder died): this
    /// instance took over (`fleet.lock_taken_over`).
    LockTakenOver,
    /// Another instance announced a pause: a closed rate gate
    /// (`component` is `gate`) or a tripped breaker (`breaker`)
    /// (`fleet.pause_received`: `component`, `for_ms`).
    PauseReceived {
        /// `gate` or `breaker`.
        component: &'static str,
        /// For how long.
        for_: Duration,
    },
}

impl FleetEvent {
    /// The event's name (`fleet.degraded`, `fleet.restored`,
    /// `fleet.token_fetched`, `fleet.token_shared`,
    /// `fleet.rejected_token_removed`, `fleet.lock_taken_over`,
    /// `fleet.pause_received`).
    pub fn name(&self) -> &'static str {
        match self {
            FleetEvent::Degraded { .. } => "fleet.degraded",
            FleetEvent::Restored { .. } => "fleet.restored",
            FleetEvent::TokenFetched => "fleet.token_fetched",
            FleetEvent::TokenShared => "fleet.token_shared",
            FleetEvent::RejectedTokenRemoved => "fleet.rejected_token_removed",
            FleetEvent::LockTakenOver => "fleet.lock_taken_over",
            FleetEvent::PauseReceived { .. } => "fleet.pause_received",
        }
    }
}

impl Serialize for FleetEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Fields::start(serializer, self.name())?;
        match self {
            FleetEvent::Degraded { component, reason } => fields
                .field("component", component)?
                .field("reason", reason)?,
            FleetEvent::Restored { component } => fields.field("component", component)?,
            FleetEvent::PauseReceived { component, for_ } => fields
                .field("component", component)?
                .millis("for_ms", *for_)?,
            FleetEvent::TokenFetched
            | FleetEvent::TokenShared
            | FleetEvent::RejectedTokenRemoved
            | FleetEvent::LockTakenOver => fields,
        }
        .end()
    }
}
