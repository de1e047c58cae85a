//! The bearer's and its token cache's events.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::{Serialize, Serializer};

use super::event::Fields;
use crate::error::TokenError;

/// Something that happened to the cached token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AuthEvent {
    /// A new token was stored (`token.stored`: `lifetime_ms`,
    /// `refresh_count`).
    TokenRefreshed {
        /// Its lifetime (after sanitising).
        lifetime: Duration,
        /// How many tokens the cache has stored so far.
        refresh_count: u64,
    },
    /// The announced lifetime was missing or out of bounds
    /// (`token.lifetime_adjusted`: `note`).
    LifetimeAdjusted(LifetimeNote),
    /// A refresh failed (`token.fetch_failed`: `error`,
    /// `token_still_valid`, `retry_in_ms`).
    RefreshFailed {
        /// Why.
        error: TokenError,
        /// Whether the current token is still valid (and still served).
        token_still_valid: bool,
        /// When the next refresh attempt is made (`None`: the next caller
        /// starts it).
        retry_in: Option<Duration>,
    },
    /// The token a request carried was refused (401) and dropped
    /// (`token.invalidated`: `status`).
    TokenInvalidated {
        /// The status that caused it.
        status: StatusCode,
    },
    /// A request refused with 401 was sent again with a fresh token, by
    /// the bearer itself (`token.replayed`).
    RequestReplayed,
    /// A 401 came within the [rejection
    /// cooldown](crate::auth::TokenCacheBuilder::rejection_cooldown) of the last
    /// 401-driven refresh: the token is kept and the 401 returned as it is,
    /// so that a path that always answers 401 cannot drive the token
    /// endpoint (`token.rejection_deferred`: `status`, `cooldown_left_ms`).
    RejectionDeferred {
        /// The status that was not acted on.
        status: StatusCode,
        /// How long until a 401 may drop the token again.
        cooldown_left: Duration,
    },
    /// A request waited for a token and got a fresh one
    /// (`token.refreshed`: `wait_ms`).
    TokenAwaited {
        /// How long it waited.
        wait: Duration,
    },
    /// A request waited for a token and none could be had
    /// (`token.refresh_failed`: `error`).
    TokenAwaitFailed {
        /// Why (never a secret).
        error: TokenError,
    },
}

impl AuthEvent {
    /// The event's name (`token.stored`, `token.lifetime_adjusted`,
    /// `token.fetch_failed`, `token.invalidated`, `token.replayed`,
    /// `token.rejection_deferred`, `token.refreshed`,
    /// `token.refresh_failed`).
    pub fn name(&self) -> &'static str {
        match self {
            AuthEvent::TokenRefreshed { .. } => "token.stored",
            AuthEvent::LifetimeAdjusted(_) => "token.lifetime_adjusted",
            AuthEvent::RefreshFailed { .. } => "token.fetch_failed",
            AuthEvent::TokenInvalidated { .. } => "token.invalidated",
            AuthEvent::RequestReplayed => "token.replayed",
            AuthEvent::RejectionDeferred { .. } => "token.rejection_deferred",
            AuthEvent::TokenAwaited { .. } => "token.refreshed",
            AuthEvent::TokenAwaitFailed { .. } => "token.refresh_failed",
        }
    }
}

impl Serialize for AuthEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = Fields::start(serializer, self.name())?;
        match self {
            AuthEvent::TokenRefreshed {
                lifetime,
                refresh_count,
            } => fields
                .millis("lifetime_ms", *lifetime)?
                .field("refresh_count", refresh_count)?,
            AuthEvent::LifetimeAdjusted(note) => fields.field("note", &note.to_string())?,
            AuthEvent::RefreshFailed {
                error,
                token_still_valid,
                retry_in,
            } => fields
                .field("error", &error.to_string())?
                .field("token_still_valid", token_still_valid)?
                .some("retry_in_ms", retry_in.map(super::event::ms))?,
            AuthEvent::TokenInvalidated { status } => fields.field("status", &status.as_u16())?,
            AuthEvent::RejectionDeferred {
                status,
                cooldown_left,
            } => fields
                .field("status", &status.as_u16())?
                .millis("cooldown_left_ms", *cooldown_left)?,
            AuthEvent::RequestReplayed => fields,
            AuthEvent::TokenAwaited { wait } => fields.millis("wait_ms", *wait)?,
            AuthEvent::TokenAwaitFailed { error } => fields.field("error", &error.to_string())?,
        }
        .end()
    }
}

/// An adjustment to the lifetime a token response announced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifetimeNote {
    /// The response had no `expires_in`; a conservative default was assumed.
    Missing {
        /// The lifetime assumed.
        assumed: Duration,
    },
    /// `expires_in` was zero, negative, or absurdly long, and was clamped.
    Clamped {
        /// What the server said, in seconds (as text, it may not be a number
        /// that fits).
        announced: String,
        /// The lifetime used.
        used: Duration,
    },
}

impl fmt::Display for LifetimeNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifetimeNote::Missing { assumed } => {
                write!(f, "no expires_in: assumed {} s", assumed.as_secs())
            }
            LifetimeNote::Clamped { announced, used } => {
                write!(
                    f,
                    "expires_in {announced:?} clamped to {} s",
                    used.as_secs()
                )
            }
        }
    }
}
