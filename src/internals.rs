//! The parsers the fuzz targets and property tests drive directly (feature
//! `internals`): not a stable API, not part of the documented surface.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::auth::{LifetimePolicy, Token, TokenError};
use crate::hint::MalformedHint;

/// The header CXone puts its error description in.
pub const IC_STATUS_DESCRIPTION: &str = crate::cxone::IC_STATUS_DESCRIPTION;

/// A `Retry-After` value as a delay from `now`.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Result<Duration, MalformedHint> {
    crate::hint::parse_retry_after(value, now)
}

/// A `RateLimit` header's reset, if it says the quota is exhausted.
pub fn parse_ratelimit(value: &HeaderValue) -> Result<Option<Duration>, MalformedHint> {
    crate::hint::parse_ratelimit(value)
}

/// The Genesys `inin-ratelimit-*` headers' reset, if the quota is exhausted.
pub fn parse_genesys(headers: &HeaderMap) -> Result<Option<Duration>, MalformedHint> {
    crate::hint::parse_genesys(headers)
}

/// A token endpoint's answer as a [`Token`] or a typed error.
pub fn parse_token_response(
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    received_at: Instant,
    policy: &LifetimePolicy,
) -> Result<Token, TokenError> {
    crate::auth::parse_token_response(status, content_type, body, received_at, policy)
}
