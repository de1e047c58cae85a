//! The request quota a server advertises on its answers: how many requests
//! a window allows, how many are left and when the window resets. Read by
//! the limiter to pace to the server's limit without a configured rate.
//!
//! Three header families are understood, in this order of precedence:
//!
//! - Genesys Cloud's `inin-ratelimit-allowed`, `-count` and `-reset`;
//! - the IETF draft's `RateLimit` and `RateLimit-Policy`, in the newer
//!   structured-field forms (`"default";r=50;t=30` and
//!   `"default";q=100;w=60`) and the older ones (`limit=100, remaining=50,
//!   reset=30` and `100;w=60`);
//! - `X-RateLimit-Limit`, `-Remaining` and `-Reset` (the reset in seconds
//!   from now, or, for a value that can only be one, a Unix timestamp).

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ratelimit::{
    BareItem, Cursor, GENESYS_ALLOWED, GENESYS_COUNT, GENESYS_RESET, RATELIMIT,
};
use super::{parse_plain_uint, trim_ows, Clock};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub(super) const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// An `X-RateLimit-Reset` at least this large is a Unix timestamp (seconds),
/// not a delay: 10^9 s is over 31 years, 2001 as a date.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// An `X-RateLimit-Reset` at least this large is a Unix timestamp in
/// milliseconds, as some servers send it: 10^12 ms is 2001 as a date,
/// 10^12 s over 31,000 years.
const EPOCH_MS_THRESHOLD: f64 = 1e12;

/// A reset further away than this is not believed (a unit misread, a
/// clock far off): none is taken from it.
const MAX_RESET: Duration = Duration::from_secs(86_400);

/// The header family a quota was advertised in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaSource {
    /// Genesys Cloud's `inin-ratelimit-allowed`, `-count`, `-reset`.
    Genesys,
    /// The IETF draft's `RateLimit` and `RateLimit-Policy`.
    RateLimit,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    XRateLimit,
}

impl QuotaSource {
    /// A short, stable name: `"inin-ratelimit"`, `"ratelimit"` or
    /// `"x-ratelimit"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QuotaSource::Genesys => "inin-ratelimit",
            QuotaSource::RateLimit => "ratelimit",
            QuotaSource::XRateLimit => "x-ratelimit",
        }
    }
}

/// What one response said of the client's request quota. A field the
/// headers do not give is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The header family.
    pub source: QuotaSource,
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// The window's length, when the server says it (`RateLimit-Policy`'s
    /// `w`).
    pub window: Option<Duration>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// Time until the current window resets.
    pub reset: Option<Duration>,
}

/// The quota `headers` advertise, from the first family present (Genesys,
/// then `RateLimit`, then `X-RateLimit-*`) that gives at least a limit or a
/// remaining count; `None` when none does. Values that cannot be read are
/// left out (the wait hints in the same headers are
/// [`server_hint`](super::server_hint)'s to report). `clock` turns an
/// `X-RateLimit-Reset` timestamp into a delay.
///
/// ```
/// use std::time::Duration;
///
/// use http::{HeaderMap, HeaderValue};
/// use tower_cx::hint::{advertised_quota, QuotaSource, SystemClock};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit-policy", HeaderValue::from_static("\"default\";q=100;w=60"));
/// headers.insert("ratelimit", HeaderValue::from_static("\"default\";r=40;t=30"));
/// let quota = advertised_quota(&headers, &SystemClock).unwrap();
/// assert_eq!(quota.source, QuotaSource::RateLimit);
/// assert_eq!((quota.limit, quota.remaining), (Some(100), Some(40)));
/// assert_eq!(quota.window, Some(Duration::from_secs(60)));
/// assert_eq!(quota.reset, Some(Duration::from_secs(30)));
/// ```
pub fn advertised_quota(headers: &HeaderMap, clock: &dyn Clock) -> Option<Quota> {
    genesys(headers)
        .or_else(|| ietf(headers))
        .or_else(|| x_ratelimit(headers, clock))
        .filter(|q| q.limit.is_some() || q.remaining.is_some())
}

fn uint(value: Option<&HeaderValue>) -> Option<u64> {
    value.and_then(|v| parse_plain_uint(v.as_bytes()))
}

fn secs(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_secs)
}

fn genesys(headers: &HeaderMap) -> Option<Quota> {
    let limit = uint(headers.get(&GENESYS_ALLOWED))?;
    let count = uint(headers.get(&GENESYS_COUNT));
    Some(Quota {
        source: QuotaSource::Genesys,
        limit: Some(limit),
        window: None,
        remaining: count.map(|count| limit.saturating_sub(count)),
        reset: secs(uint(headers.get(&GENESYS_RESET))),
    })
}

fn ietf(headers: &HeaderMap) -> Option<Quota> {
    let state = headers
        .get(&RATELIMIT)
        .and_then(|v| ratelimit(v.as_bytes()));
    let policy = headers
        .get(&RATELIMIT_POLICY)
        .and_then(|v| policy(v.as_bytes()));
    if state.is_none() && policy.is_none() {
        return None;
    }
    let state = state.unwrap_or_default();
    let (limit, window) = match policy {
        Some((quota, window)) => (Some(quota), window),
        None => (state.limit, None),
    };
    Some(Quota {
        source: QuotaSource::RateLimit,
        limit,
        window,
        remaining: state.remaining,
        reset: secs(state.reset),
    })
}

#[derive(Debug, Default)]
struct State {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
}

/// `RateLimit`: the list form (the item with the fewest requests left) or
/// the dictionary form of earlier drafts.
fn ratelimit(raw: &[u8]) -> Option<State> {
    let mut cur = Cursor::new(raw);
    cur.skip_ows();
    let mut state = State::default();
    if cur.starts_dictionary_member() {
        loop {
            let key = cur.key().ok()?;
            let value = if cur.eat(b'=') {
                cur.bare_item().ok()?
            } else {
                BareItem::Boolean
            };
            cur.parameters(|_, _| Ok(())).ok()?;
            let n = value.non_negative("");
            match key {
                b"limit" => state.limit = n.ok(),
                b"remaining" => state.remaining = n.ok(),
                b"reset" => state.reset = n.ok(),
                _ => {}
            }
            if !cur.member_separator().ok()? {
                return Some(state);
            }
        }
    }
    loop {
        cur.bare_item().ok()?;
        let (mut r, mut t) = (None, None);
        cur.parameters(|key, value| {
            match key {
                b"r" => r = value.non_negative("").ok(),
                b"t" => t = value.non_negative("").ok(),
                _ => {}
            }
            Ok(())
        })
        .ok()?;
        if let Some(r) = r {
            if state.remaining.is_none_or(|least| r < least) {
                state.remaining = Some(r);
                state.reset = t;
            }
        }
        if !cur.member_separator().ok()? {
            return Some(state);
        }
    }
}

/// `RateLimit-Policy`: `"name";q=100;w=60` or `100;w=60` items; the
/// tightest (fewest requests per second) wins.
fn policy(raw: &[u8]) -> Option<(u64, Option<Duration>)> {
    let mut cur = Cursor::new(raw);
    cur.skip_ows();
    let mut best: Option<(u64, Option<Duration>)> = None;
    loop {
        let item = cur.bare_item().ok()?;
        let (mut q, mut w) = (item.non_negative("").ok(), None);
        cur.parameters(|key, value| {
            match key {
                b"q" => q = value.non_negative("").ok(),
                b"w" => w = value.non_negative("").ok(),
                _ => {}
            }
            Ok(())
        })
        .ok()?;
        if let Some(q) = q {
            let candidate = (q, w.map(Duration::from_secs));
            let rate =
                |(q, w): (u64, Option<Duration>)| q as f64 / w.map_or(1.0, |w| w.as_secs_f64());
            if best.is_none_or(|best| rate(candidate) < rate(best)) {
                best = Some(candidate);
            }
        }
        if !cur.member_separator().ok()? {
            return best;
        }
    }
}

fn x_ratelimit(headers: &HeaderMap, clock: &dyn Clock) -> Option<Quota> {
    let limit = headers
        .get(&X_LIMIT)
        .and_then(|v| leading_uint(v.as_bytes()));
    let remaining = headers
        .get(&X_REMAINING)
        .and_then(|v| leading_uint(v.as_bytes()));
    if limit.is_none() && remaining.is_none() {
        return None;
    }
    let reset = headers.get(&X_RESET).and_then(|v| {
        let text = std::str::from_utf8(trim_ows(v.as_bytes())).ok()?;
        let secs: f64 = text
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
        let reset = if secs >= EPOCH_MS_THRESHOLD {
            let now = clock.now().duration_since(UNIX_EPOCH).ok()?;
            Duration::try_from_secs_f64(secs / 1000.0)
                .ok()?
                .saturating_sub(now)
        } else if secs >= EPOCH_THRESHOLD as f64 {
            let now = clock.now().duration_since(UNIX_EPOCH).ok()?;
            Duration::try_from_secs_f64(secs).ok()?.saturating_sub(now)
        } else {
            Duration::try_from_secs_f64(secs).ok()?
        };
        (reset <= MAX_RESET).then_some(reset)
    });
    Some(Quota {
        source: QuotaSource::XRateLimit,
        limit,
        window: None,
        remaining,
        reset,
    })
}

/// The wait `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` asks for
/// (`None` while requests remain, or without a readable reset).
pub(super) fn x_ratelimit_wait(headers: &HeaderMap, clock: &dyn Clock) -> Option<Duration> {
    let quota = x_ratelimit(headers, clock)?;
    quota.remaining.filter(|left| *left == 0)?;
    quota.reset.filter(|reset| !reset.is_zero())
}

/// The integer a value starts with (`100`, or `100, 100;w=60` as some
/// servers send).
fn leading_uint(raw: &[u8]) -> Option<u64> {
    let raw = trim_ows(raw);
    let end = raw
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(raw.len());
    parse_plain_uint(&raw[..end])
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::hint::FixedClock;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn quota(pairs: &[(&'static str, &str)]) -> Option<Quota> {
        advertised_quota(&headers(pairs), &FixedClock::new(UNIX_EPOCH))
    }

    fn q(
        source: QuotaSource,
        limit: Option<u64>,
        window: Option<u64>,
        remaining: Option<u64>,
        reset: Option<u64>,
    ) -> Option<Quota> {
        Some(Quota {
            source,
            limit,
            window: secs(window),
            remaining,
            reset: secs(reset),
        })
    }

    #[test]
    fn genesys_headers_give_limit_remaining_and_reset() {
        let got = quota(&[
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-count", "120"),
            ("inin-ratelimit-reset", "42"),
        ]);
        assert_eq!(
            got,
            q(QuotaSource::Genesys, Some(300), None, Some(180), Some(42))
        );
        // over the limit: none left
        let over = quota(&[
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-count", "301"),
        ]);
        assert_eq!(
            over,
            q(QuotaSource::Genesys, Some(300), None, Some(0), None)
        );
    }

    #[test]
    fn ietf_structured_fields_newer_form() {
        let got = quota(&[
            (
                "ratelimit-policy",
                "\"burst\";q=100;w=1, \"day\";q=1000;w=86400",
            ),
            ("ratelimit", "\"burst\";r=50;t=1, \"day\";r=20;t=3000"),
        ]);
        // the tightest policy, the item with the fewest requests left
        assert_eq!(
            got,
            q(
                QuotaSource::RateLimit,
                Some(1000),
                Some(86400),
                Some(20),
                Some(3000)
            )
        );
        let state_only = quota(&[("ratelimit", "\"default\";r=0;t=30")]);
        assert_eq!(
            state_only,
            q(QuotaSource::RateLimit, None, None, Some(0), Some(30))
        );
    }

    #[test]
    fn ietf_older_forms() {
        let got = quota(&[
            ("ratelimit", "limit=100, remaining=50, reset=30"),
            ("ratelimit-policy", "100;w=60"),
        ]);
        assert_eq!(
            got,
            q(
                QuotaSource::RateLimit,
                Some(100),
                Some(60),
                Some(50),
                Some(30)
            )
        );
        let no_policy = quota(&[("ratelimit", "limit=10, remaining=9, reset=1")]);
        assert_eq!(
            no_policy,
            q(QuotaSource::RateLimit, Some(10), None, Some(9), Some(1))
        );
    }

    #[test]
    fn x_ratelimit_reset_as_delay_or_timestamp() {
        let got = quota(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "59"),
            ("x-ratelimit-reset", "30"),
        ]);
        assert_eq!(
            got,
            q(QuotaSource::XRateLimit, Some(60), None, Some(59), Some(30))
        );
        let clock = FixedClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let stamped = headers(&[
            ("x-ratelimit-limit", "5000, 5000;w=3600"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700000042"),
        ]);
        assert_eq!(
            advertised_quota(&stamped, &clock),
            q(
                QuotaSource::XRateLimit,
                Some(5000),
                None,
                Some(4999),
                Some(42)
            )
        );
        // a timestamp in milliseconds
        let reset_of = |value: &'static str| {
            let headers = headers(&[("x-ratelimit-limit", "1"), ("x-ratelimit-reset", value)]);
            advertised_quota(&headers, &clock).unwrap().reset
        };
        assert_eq!(reset_of("1700000003000"), Some(Duration::from_secs(3)));
        // an absurd timestamp, or a reset over a day away, is no reset at all
        assert_eq!(reset_of("1e300"), None);
        assert_eq!(reset_of("1800000000"), None, "three years away");
        assert_eq!(reset_of("86401"), None);
        assert_eq!(reset_of("86400"), Some(Duration::from_secs(86_400)));
        // a timestamp already past is no wait at all
        clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        assert_eq!(
            advertised_quota(&stamped, &clock).unwrap().reset,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn precedence_and_unreadable_values() {
        let both = quota(&[
            ("x-ratelimit-limit", "60"),
            ("inin-ratelimit-allowed", "300"),
        ]);
        assert_eq!(both.unwrap().source, QuotaSource::Genesys);
        assert_eq!(quota(&[]), None);
        assert_eq!(quota(&[("inin-ratelimit-allowed", "lots")]), None);
        assert_eq!(quota(&[("ratelimit", "\"a\";t=3")]), None);
        assert_eq!(quota(&[("ratelimit", "!!!")]), None);
        let bad_reset = quota(&[("x-ratelimit-limit", "60"), ("x-ratelimit-reset", "soon")]);
        assert_eq!(
            bad_reset,
            q(QuotaSource::XRateLimit, Some(60), None, None, None)
        );
    }
}
