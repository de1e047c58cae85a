//! Server "wait" hints parsed from HTTP response headers (formerly the
//! `retry_after` module, a name still accepted).
//!
//! A retry layer or a rate gate asks [`server_hint`] how long the server
//! wants the client to wait before the next request:
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{header::RETRY_AFTER, HeaderMap, HeaderValue};
//! use tower_cx::hint::{server_hint, HintSource, SystemClock};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
//!
//! let report = server_hint(&headers, &SystemClock);
//! let hint = report.hint.expect("a valid Retry-After header");
//! assert_eq!(hint.delay, Duration::from_secs(120));
//! assert_eq!(hint.source, HintSource::RetryAfter);
//! assert!(report.malformed.is_empty());
//! ```
//!
//! Three kinds of hint are understood, in this order of precedence:
//!
//! 1. `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
//! 2. `RateLimit` (IETF httpapi ratelimit-headers draft): the structured-field
//!    list form `"default";r=0;t=30`, and the dictionary form of earlier drafts,
//!    `limit=100, remaining=0, reset=30`.
//! 3. Genesys Cloud's `inin-ratelimit-count`, `inin-ratelimit-allowed` and
//!    `inin-ratelimit-reset`.
//!
//! A header that is present but cannot be understood is reported as a
//! [`MalformedHint`] and otherwise ignored, so the caller's own backoff applies.
//! All parsers are total: they never panic, and the only allocation they make
//! for an input is a [`MalformedHint`] whose copied value is capped at
//! [`MalformedHint::MAX_VALUE_CHARS`] characters.
//!
//! Besides waits, servers advertise their quota (limit, remaining, reset):
//! [`advertised_quota`] reads it, for pacing to a limit nobody configured.
//!
//! Files: the `Retry-After` parser (`parse_retry_after`), the `RateLimit`
//! and Genesys parsers (`parse_ratelimit`, `parse_genesys`) and the
//! injectable wall clock ([`Clock`]) each live in their own file; this one
//! holds what they share and [`server_hint`], which asks all three.

mod clock;
mod quota;
mod ratelimit;
mod retry_after;

use std::fmt;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::HeaderMap;

pub use clock::{Clock, FixedClock, SystemClock};
pub use quota::{advertised_quota, Quota, QuotaSource};
pub(crate) use ratelimit::{parse_genesys, parse_ratelimit};
use ratelimit::{GENESYS_ALLOWED, GENESYS_COUNT, RATELIMIT};
pub(crate) use retry_after::parse_retry_after;

/// Which header a hint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HintSource {
    /// The `Retry-After` header.
    RetryAfter,
    /// The `RateLimit` header.
    RateLimit,
    /// Genesys Cloud's `inin-ratelimit-*` headers.
    GenesysReset,
    /// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (seconds, or a
    /// Unix time).
    XRateLimit,
    /// Not a header: the limiter's rate gate, closed by an earlier hint,
    /// opens only past the request's deadline
    /// ([`Overloaded::retry_in`](crate::error::Overloaded::retry_in)).
    RateGate,
    /// Not a header: a [`CircuitOpen`](crate::error::CircuitOpen) error
    /// saying when the breaker lets a probe through.
    CircuitBreaker,
}

impl HintSource {
    /// A short, stable name for logs and metrics: `"retry-after"`,
    /// `"ratelimit"`, `"inin-ratelimit-reset"`, `"x-ratelimit-reset"`,
    /// `"rate-gate"` or `"circuit-breaker"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HintSource::RetryAfter => "retry-after",
            HintSource::RateLimit => "ratelimit",
            HintSource::GenesysReset => "inin-ratelimit-reset",
            HintSource::XRateLimit => "x-ratelimit-reset",
            HintSource::RateGate => "rate-gate",
            HintSource::CircuitBreaker => "circuit-breaker",
        }
    }
}

impl fmt::Display for HintSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long the server asked the client to wait, and which header said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHint {
    /// The time to wait before the next request.
    pub delay: Duration,
    /// The header the delay was read from.
    pub source: HintSource,
}

/// A hint header that was present but could not be understood; it is ignored and backoff applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedHint {
    /// The header the value was read from.
    pub source: HintSource,
    /// The raw header value, decoded as lossy UTF-8 and cut to at most
    /// [`MalformedHint::MAX_VALUE_CHARS`] characters so that a hostile header
    /// cannot flood the logs. Empty when the problem is a missing header.
    pub value: String,
    /// Why the value was rejected.
    pub reason: &'static str,
}

impl MalformedHint {
    /// The most characters of a rejected header value kept in [`MalformedHint::value`].
    pub const MAX_VALUE_CHARS: usize = 64;

    fn new(source: HintSource, raw: &[u8], reason: &'static str) -> Self {
        // A char is at most 4 bytes and lossy decoding turns each bad byte into
        // one replacement char, so this prefix always yields enough chars.
        let prefix = &raw[..raw.len().min(Self::MAX_VALUE_CHARS * 4)];
        let value = String::from_utf8_lossy(prefix)
            .chars()
            .take(Self::MAX_VALUE_CHARS)
            .collect();
        Self {
            source,
            value,
            reason,
        }
    }
}

impl fmt::Display for MalformedHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} header {:?}: {}",
            self.source, self.value, self.reason
        )
    }
}

impl std::error::Error for MalformedHint {}

/// Everything [`server_hint`] learned from one response's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintReport {
    /// The delay from the highest-precedence header that could be understood,
    /// if any asked for one.
    pub hint: Option<ServerHint>,
    /// Every hint header that was present but malformed, in precedence order
    /// (`Retry-After`, `RateLimit`, Genesys).
    pub malformed: Vec<MalformedHint>,
}

impl HintReport {
    /// Records one header's outcome: the first wait offered becomes the hint.
    fn offer(&mut self, source: HintSource, parsed: Result<Option<Duration>, MalformedHint>) {
        match parsed {
            Ok(Some(delay)) => {
                if self.hint.is_none() {
                    self.hint = Some(ServerHint { delay, source });
                }
            }
            Ok(None) => {}
            Err(malformed) => self.malformed.push(malformed),
        }
    }
}

/// Reads every wait hint in `headers`.
///
/// Precedence is `Retry-After`, then `RateLimit`, then Genesys, then
/// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`: the hint comes
/// from the first of these that is present, valid and asks for a wait. Every
/// present header is still evaluated, and each malformed one is listed in
/// [`HintReport::malformed`] in that order, so a malformed `Retry-After` falls
/// through to `RateLimit` and then to Genesys. When a header appears more than
/// once, its first value is used. `clock` supplies "now" for HTTP-dates.
pub fn server_hint(headers: &HeaderMap, clock: &dyn Clock) -> HintReport {
    read_hints(headers, clock, true)
}

/// The hints of a response of `status` that hold for every request, not
/// just for the one answered: `Retry-After` only on a `429` or a `503`
/// (on a `202` it says when to poll that resource, on a redirect when to
/// follow it), the quota headers on any status.
pub(crate) fn client_wide_hint(
    status: http::StatusCode,
    headers: &HeaderMap,
    clock: &dyn Clock,
) -> HintReport {
    let retry_after = matches!(status.as_u16(), 429 | 503);
    read_hints(headers, clock, retry_after)
}

/// [`server_hint`], reading `Retry-After` only with `retry_after`.
fn read_hints(headers: &HeaderMap, clock: &dyn Clock, retry_after: bool) -> HintReport {
    let mut report = HintReport::default();
    // most responses carry no hint header at all: one pass over the names
    // decides that, before any lookup
    if !carries_hint_header(headers) {
        return report;
    }
    if let Some(value) = headers.get(RETRY_AFTER).filter(|_| retry_after) {
        let parsed = parse_retry_after(value, clock.now()).map(Some);
        report.offer(HintSource::RetryAfter, parsed);
    }
    if let Some(value) = headers.get(&RATELIMIT) {
        report.offer(HintSource::RateLimit, parse_ratelimit(value));
    }
    report.offer(HintSource::GenesysReset, parse_genesys(headers));
    report.offer(
        HintSource::XRateLimit,
        Ok(quota::x_ratelimit_wait(headers, clock)),
    );
    report
}

/// Whether any header a hint is read from is present. One pass over the
/// names (a response has a handful) costs less than hashing four names
/// that a typical 2xx response does not carry.
fn carries_hint_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        *name == RETRY_AFTER
            || *name == RATELIMIT
            || *name == GENESYS_COUNT
            || *name == GENESYS_ALLOWED
            || *name == quota::X_REMAINING
    })
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The value of a string of ASCII digits, saturating at `u64::MAX`.
fn saturating_decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// A non-negative decimal integer with optional surrounding spaces or tabs.
fn parse_plain_uint(bytes: &[u8]) -> Option<u64> {
    let digits = trim_ows(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(saturating_decimal(digits))
}

#[cfg(test)]
mod testing {
    //! Helpers the parsers' tests share.
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::HeaderValue;

    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    const DATE_SECS: u64 = 784_111_777;

    pub(super) fn date() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(DATE_SECS)
    }

    pub(super) fn hv(bytes: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(bytes).expect("test header value must be valid")
    }

    pub(super) fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}

#[cfg(test)]
mod tests {
    use super::ratelimit::GENESYS_RESET;
    use super::testing::{date, hv, secs};
    use super::*;
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn hint_source_names() {
        assert_eq!(HintSource::RetryAfter.as_str(), "retry-after");
        assert_eq!(HintSource::RateLimit.as_str(), "ratelimit");
        assert_eq!(HintSource::GenesysReset.as_str(), "inin-ratelimit-reset");
        assert_eq!(HintSource::RateLimit.to_string(), "ratelimit");
    }

    #[test]
    fn x_ratelimit_remaining_0_waits_until_the_reset() {
        let clock = FixedClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let x = |remaining: &'static [u8], reset: &'static [u8]| {
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-limit", hv(b"60"));
            headers.insert("x-ratelimit-remaining", hv(remaining));
            headers.insert("x-ratelimit-reset", hv(reset));
            client_wide_hint(http::StatusCode::OK, &headers, &clock).hint
        };
        let wait = |secs_| {
            Some(ServerHint {
                delay: secs(secs_),
                source: HintSource::XRateLimit,
            })
        };
        assert_eq!(x(b"0", b"3"), wait(3), "seconds");
        assert_eq!(x(b"0", b"1700000030"), wait(30), "a Unix time");
        assert_eq!(x(b"5", b"3"), None, "requests left");
        assert_eq!(x(b"0", b"soon"), None, "no readable reset");
        assert_eq!(HintSource::XRateLimit.as_str(), "x-ratelimit-reset");
    }

    fn all_three() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, hv(b"5"));
        headers.insert(RATELIMIT, hv(b"\"default\";r=0;t=30"));
        headers.insert(GENESYS_COUNT, hv(b"10"));
        headers.insert(GENESYS_ALLOWED, hv(b"10"));
        headers.insert(GENESYS_RESET, hv(b"60"));
        headers
    }

    #[test]
    fn server_hint_prefers_retry_after() {
        let report = server_hint(&all_three(), &FixedClock::new(date()));
        assert_eq!(
            report,
            HintReport {
                hint: Some(ServerHint {
                    delay: secs(5),
                    source: HintSource::RetryAfter
                }),
                malformed: vec![],
            }
        );
    }

    #[test]
    fn server_hint_uses_the_clock_for_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, hv(b"Sun, 06 Nov 1994 08:49:37 GMT"));
        let report = server_hint(&headers, &FixedClock::new(date() - secs(100)));
        assert_eq!(report.hint.map(|h| h.delay), Some(secs(100)));
    }

    #[test]
    fn server_hint_malformed_retry_after_falls_through() {
        let mut headers = all_three();
        headers.insert(RETRY_AFTER, hv(b"soon"));
        let report = server_hint(&headers, &SystemClock);
        assert_eq!(
            report.hint,
            Some(ServerHint {
                delay: secs(30),
                source: HintSource::RateLimit
            })
        );
        assert_eq!(report.malformed.len(), 1);
        assert_eq!(report.malformed[0].source, HintSource::RetryAfter);
        assert_eq!(report.malformed[0].value, "soon");
    }

    #[test]
    fn server_hint_falls_through_to_genesys_and_collects_in_order() {
        let mut headers = all_three();
        headers.insert(RETRY_AFTER, hv(b"-1"));
        headers.insert(RATELIMIT, hv(b"\"default\";r=0"));
        let report = server_hint(&headers, &SystemClock);
        assert_eq!(
            report.hint,
            Some(ServerHint {
                delay: secs(60),
                source: HintSource::GenesysReset
            })
        );
        let sources: Vec<_> = report.malformed.iter().map(|m| m.source).collect();
        assert_eq!(sources, [HintSource::RetryAfter, HintSource::RateLimit]);
    }

    #[test]
    fn server_hint_ratelimit_without_wait_falls_through() {
        let mut headers = all_three();
        headers.remove(RETRY_AFTER);
        headers.insert(RATELIMIT, hv(b"\"default\";r=3;t=30"));
        let report = server_hint(&headers, &SystemClock);
        assert_eq!(
            report.hint.map(|h| h.source),
            Some(HintSource::GenesysReset)
        );
        assert!(report.malformed.is_empty());
    }

    #[test]
    fn server_hint_reports_malformed_even_when_a_hint_wins() {
        let mut headers = all_three();
        headers.insert(GENESYS_RESET, hv(b"later"));
        let report = server_hint(&headers, &SystemClock);
        assert_eq!(report.hint.map(|h| h.source), Some(HintSource::RetryAfter));
        assert_eq!(report.malformed.len(), 1);
        assert_eq!(report.malformed[0].source, HintSource::GenesysReset);
    }

    #[test]
    fn server_hint_uses_first_value_of_repeated_header() {
        let mut headers = HeaderMap::new();
        headers.append(RETRY_AFTER, hv(b"3"));
        headers.append(RETRY_AFTER, hv(b"junk"));
        let report = server_hint(&headers, &SystemClock);
        assert_eq!(report.hint.map(|h| h.delay), Some(secs(3)));
        assert!(report.malformed.is_empty());
    }

    #[test]
    fn server_hint_without_headers_is_default() {
        let report = server_hint(&HeaderMap::new(), &SystemClock);
        assert_eq!(report, HintReport::default());
    }

    #[test]
    fn server_hint_finds_each_hint_header_among_ordinary_ones() {
        let ordinary = || {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, hv(b"application/json"));
            headers.insert("x-request-id", hv(b"abc"));
            headers.insert(GENESYS_RESET, hv(b"9"));
            headers
        };
        // none of them: no hint, nothing malformed (a lone reset says nothing)
        assert_eq!(
            server_hint(&ordinary(), &SystemClock),
            HintReport::default()
        );
        let cases: [(HeaderName, &[u8], HintSource); 4] = [
            (RETRY_AFTER, b"4", HintSource::RetryAfter),
            (RATELIMIT, b"junk", HintSource::RateLimit),
            (GENESYS_COUNT, b"5", HintSource::GenesysReset),
            (GENESYS_ALLOWED, b"5", HintSource::GenesysReset),
        ];
        for (name, value, source) in cases {
            let mut headers = ordinary();
            headers.insert(name.clone(), hv(value));
            let report = server_hint(&headers, &SystemClock);
            let seen = report
                .hint
                .map(|h| h.source)
                .or(report.malformed.first().map(|m| m.source));
            assert_eq!(seen, Some(source), "{name}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            if let Err(err) = parse_retry_after(&value, SystemTime::now()) {
                prop_assert!(err.value.chars().count() <= MalformedHint::MAX_VALUE_CHARS);
            }
            if let Err(err) = parse_ratelimit(&value) {
                prop_assert!(err.value.chars().count() <= MalformedHint::MAX_VALUE_CHARS);
            }
            let mut headers = HeaderMap::new();
            for name in [
                RETRY_AFTER,
                RATELIMIT,
                GENESYS_COUNT,
                GENESYS_ALLOWED,
                GENESYS_RESET,
            ] {
                headers.insert(name, value.clone());
            }
            let _ = parse_genesys(&headers);
            let report = server_hint(&headers, &FixedClock::new(UNIX_EPOCH));
            prop_assert!(report.malformed.len() <= 3);
            for name in [
                "ratelimit-policy",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ] {
                headers.insert(name, value.clone());
            }
            let _ = advertised_quota(&headers, &FixedClock::new(UNIX_EPOCH));
            headers.remove(GENESYS_ALLOWED);
            let _ = advertised_quota(&headers, &FixedClock::new(UNIX_EPOCH));
            headers.remove(RATELIMIT);
            headers.remove("ratelimit-policy");
            let _ = advertised_quota(&headers, &SystemClock);
        }

        #[test]
        fn ratelimit_structured_text_never_panics(
            text in "[\"a-z0-9;=,:?*@.\\-\\\\ \\t()]{0,60}"
        ) {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse_ratelimit(&value);
            }
        }

        #[test]
        fn retry_after_any_u64(n in any::<u64>()) {
            let value = HeaderValue::from_str(&n.to_string()).expect("digits are a valid header");
            prop_assert_eq!(parse_retry_after(&value, SystemTime::now()), Ok(Duration::from_secs(n)));
        }

        #[test]
        fn ratelimit_list_round_trip(r in 0u64..1_000_000, t in 0u64..1_000_000_000) {
            let value = HeaderValue::from_str(&format!("\"q\";r={r};t={t}")).expect("valid header");
            let expected = if r == 0 { Some(Duration::from_secs(t)) } else { None };
            prop_assert_eq!(parse_ratelimit(&value), Ok(expected));
        }
    }
}
