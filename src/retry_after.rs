//! Server "wait" hints parsed from HTTP response headers.
//!
//! A retry layer or a rate gate asks [`server_hint`] how long the server
//! wants the client to wait before the next request:
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{header::RETRY_AFTER, HeaderMap, HeaderValue};
//! use tower_cx::retry_after::{server_hint, HintSource, SystemClock};
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

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Name of the `RateLimit` header field.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Name of the Genesys header holding the number of requests made in the window.
const GENESYS_COUNT: HeaderName = HeaderName::from_static("inin-ratelimit-count");
/// Name of the Genesys header holding the number of requests allowed in the window.
const GENESYS_ALLOWED: HeaderName = HeaderName::from_static("inin-ratelimit-allowed");
/// Name of the Genesys header holding the seconds until the window resets.
const GENESYS_RESET: HeaderName = HeaderName::from_static("inin-ratelimit-reset");

/// Wall clock, injectable so HTTP-date tests are exact.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock: [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still at a time the test chooses.
///
/// Clones share the same time, so a test can keep one handle and move the
/// clock that a layer under test holds.
#[derive(Debug, Clone)]
pub struct FixedClock {
    now: Arc<Mutex<SystemTime>>,
}

impl FixedClock {
    /// A clock that reads `now` until [`set`](FixedClock::set) moves it.
    pub fn new(now: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves this clock, and every clone of it, to `now`.
    pub fn set(&self, now: SystemTime) {
        // A poisoned lock still holds a plain `SystemTime`; keep going.
        let mut guard = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *guard = now;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

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
    /// Not a header: a [`CircuitOpen`](crate::error::CircuitOpen) error
    /// saying when the breaker lets a probe through.
    CircuitBreaker,
}

impl HintSource {
    /// A short, stable name for logs and metrics: `"retry-after"`,
    /// `"ratelimit"`, `"inin-ratelimit-reset"` or `"circuit-breaker"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HintSource::RetryAfter => "retry-after",
            HintSource::RateLimit => "ratelimit",
            HintSource::GenesysReset => "inin-ratelimit-reset",
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

/// Parses a `Retry-After` value (RFC 9110 §10.2.3) into a delay from `now`.
///
/// The value is either delay-seconds (`1*DIGIT`, ASCII digits only, with
/// optional surrounding spaces or tabs) or an HTTP-date in any of the three
/// RFC 9110 formats. A delay too long for a `u64` saturates to
/// `Duration::from_secs(u64::MAX)`. A date at or before `now` gives
/// [`Duration::ZERO`]; a later date gives the time until it, rounded up to
/// whole seconds so the client never comes back before the date.
///
/// # Errors
///
/// A [`MalformedHint`] for anything else: signs, decimals, exponents, hex,
/// non-ASCII digits, digits with inner spaces, empty values and text that is
/// not an HTTP-date.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Result<Duration, MalformedHint> {
    let raw = value.as_bytes();
    let bad = |reason| MalformedHint::new(HintSource::RetryAfter, raw, reason);
    let trimmed = trim_ows(raw);
    if trimmed.is_empty() {
        return Err(bad("empty value"));
    }
    if trimmed.iter().all(u8::is_ascii_digit) {
        return Ok(Duration::from_secs(saturating_decimal(trimmed)));
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Err(bad("not valid UTF-8"));
    };
    if !text.is_ascii() {
        return Err(bad(
            "contains non-ASCII characters; delay-seconds must be ASCII digits",
        ));
    }
    match trimmed[0] {
        b'+' | b'-' => Err(bad("delay-seconds must not carry a sign")),
        b'0'..=b'9' => Err(bad(
            "delay-seconds must be ASCII digits only (no decimals, exponents, hex or inner spaces)",
        )),
        // `httpdate` accepts IMF-fixdate, RFC 850 and asctime dates (see the
        // tests). It reads two-digit RFC 850 years below 70 as 20xx, and it
        // rejects a date whose weekday does not match.
        _ => match httpdate::parse_http_date(text) {
            Ok(date) => Ok(time_until(date, now)),
            Err(_) => Err(bad("not delay-seconds or an HTTP-date")),
        },
    }
}

/// Parses a `RateLimit` header value into the time to wait, if a quota is spent.
///
/// Two forms are understood:
///
/// * The structured-field list of the current draft, such as
///   `"default";r=0;t=30` or `"a";r=5;t=10, "b";r=0;t=30`. Item names are
///   quoted strings or tokens; `r` (remaining) is required, `t` (seconds until
///   reset) is required when `r` is 0, and other parameters are ignored. The
///   result is the largest `t` among items with `r=0`, or `None` when no quota
///   is spent.
/// * The dictionary of earlier drafts, such as `limit=100, remaining=0, reset=30`:
///   `remaining=0` means wait `reset` seconds. Unknown keys are ignored.
///
/// # Errors
///
/// A [`MalformedHint`] when the value is empty, is not valid structured-field
/// syntax, has an item without parameters or without `r`, has `r=0` without
/// `t`, or gives `r`, `t`, `limit`, `remaining` or `reset` as anything but a
/// non-negative integer.
pub fn parse_ratelimit(value: &HeaderValue) -> Result<Option<Duration>, MalformedHint> {
    let raw = value.as_bytes();
    let mut cur = Cursor::new(raw);
    cur.skip_ows();
    let parsed = if cur.at_end() {
        Err("empty value")
    } else if cur.starts_dictionary_member() {
        parse_ratelimit_dictionary(&mut cur)
    } else {
        parse_ratelimit_list(&mut cur)
    };
    parsed
        .map(|secs| secs.map(Duration::from_secs))
        .map_err(|reason| MalformedHint::new(HintSource::RateLimit, raw, reason))
}

/// Reads Genesys Cloud's `inin-ratelimit-*` headers into the time to wait.
///
/// When `inin-ratelimit-count` has reached `inin-ratelimit-allowed`, the wait
/// is `inin-ratelimit-reset` seconds. Below the limit, or when neither count
/// nor allowed is present, there is no hint. The reset header is only read
/// when it is needed. The first value of each header is used.
///
/// # Errors
///
/// A [`MalformedHint`] with source [`HintSource::GenesysReset`] when only one
/// of count and allowed is present, when a value that is needed is not a
/// non-negative integer, or when the limit is reached but the reset header is
/// missing.
pub fn parse_genesys(headers: &HeaderMap) -> Result<Option<Duration>, MalformedHint> {
    let count = headers.get(&GENESYS_COUNT);
    let allowed = headers.get(&GENESYS_ALLOWED);
    let bad = |raw: &[u8], reason| MalformedHint::new(HintSource::GenesysReset, raw, reason);
    let (count, allowed) = match (count, allowed) {
        (None, None) => return Ok(None),
        (Some(count), None) => {
            return Err(bad(
                count.as_bytes(),
                "inin-ratelimit-count without inin-ratelimit-allowed",
            ))
        }
        (None, Some(allowed)) => {
            return Err(bad(
                allowed.as_bytes(),
                "inin-ratelimit-allowed without inin-ratelimit-count",
            ))
        }
        (Some(count), Some(allowed)) => (count, allowed),
    };
    let count = parse_plain_uint(count.as_bytes()).ok_or_else(|| {
        bad(
            count.as_bytes(),
            "inin-ratelimit-count is not a non-negative integer",
        )
    })?;
    let allowed = parse_plain_uint(allowed.as_bytes()).ok_or_else(|| {
        bad(
            allowed.as_bytes(),
            "inin-ratelimit-allowed is not a non-negative integer",
        )
    })?;
    if count < allowed {
        return Ok(None);
    }
    let Some(reset) = headers.get(&GENESYS_RESET) else {
        return Err(bad(
            b"",
            "limit reached but inin-ratelimit-reset is missing",
        ));
    };
    let secs = parse_plain_uint(reset.as_bytes()).ok_or_else(|| {
        bad(
            reset.as_bytes(),
            "inin-ratelimit-reset is not a non-negative integer",
        )
    })?;
    Ok(Some(Duration::from_secs(secs)))
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
/// Precedence is `Retry-After`, then `RateLimit`, then Genesys: the hint comes
/// from the first of these that is present, valid and asks for a wait. Every
/// present header is still evaluated, and each malformed one is listed in
/// [`HintReport::malformed`] in that order, so a malformed `Retry-After` falls
/// through to `RateLimit` and then to Genesys. When a header appears more than
/// once, its first value is used. `clock` supplies "now" for HTTP-dates.
pub fn server_hint(headers: &HeaderMap, clock: &dyn Clock) -> HintReport {
    let mut report = HintReport::default();
    // most responses carry no hint header at all: one pass over the names
    // decides that, before any lookup
    if !carries_hint_header(headers) {
        return report;
    }
    if let Some(value) = headers.get(RETRY_AFTER) {
        let parsed = parse_retry_after(value, clock.now()).map(Some);
        report.offer(HintSource::RetryAfter, parsed);
    }
    if let Some(value) = headers.get(&RATELIMIT) {
        report.offer(HintSource::RateLimit, parse_ratelimit(value));
    }
    report.offer(HintSource::GenesysReset, parse_genesys(headers));
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

/// Time from `now` until `date`, rounded up to whole seconds; zero if past.
fn time_until(date: SystemTime, now: SystemTime) -> Duration {
    match date.duration_since(now) {
        Ok(left) => {
            let secs = if left.subsec_nanos() > 0 {
                left.as_secs().saturating_add(1)
            } else {
                left.as_secs()
            };
            Duration::from_secs(secs)
        }
        Err(_) => Duration::ZERO,
    }
}

/// Why a `RateLimit` value was rejected.
type Reason = &'static str;

/// The list form: `"name";r=0;t=30, token;r=5;t=10`. Returns the largest `t`
/// among items with `r=0`.
fn parse_ratelimit_list(cur: &mut Cursor<'_>) -> Result<Option<u64>, Reason> {
    let mut wait: Option<u64> = None;
    loop {
        match cur.bare_item()? {
            BareItem::String | BareItem::Token => {}
            _ => return Err("quota policy name must be a token or a quoted string"),
        }
        let mut any = false;
        let mut remaining = None;
        let mut reset = None;
        cur.parameters(|key, value| {
            any = true;
            match key {
                b"r" => remaining = Some(value.non_negative("r must be a non-negative integer")?),
                b"t" => reset = Some(value.non_negative("t must be a non-negative integer")?),
                _ => {}
            }
            Ok(())
        })?;
        if !any {
            return Err("list item has no parameters");
        }
        let remaining = remaining.ok_or("list item has no r (remaining) parameter")?;
        if remaining == 0 {
            let reset = reset.ok_or("r=0 without a t (reset) parameter")?;
            wait = Some(wait.map_or(reset, |w| w.max(reset)));
        }
        if !cur.member_separator()? {
            return Ok(wait);
        }
    }
}

/// The dictionary form of earlier drafts: `limit=100, remaining=0, reset=30`.
fn parse_ratelimit_dictionary(cur: &mut Cursor<'_>) -> Result<Option<u64>, Reason> {
    let mut remaining = None;
    let mut reset = None;
    loop {
        let key = cur.key()?;
        let value = if cur.eat(b'=') {
            cur.bare_item()?
        } else {
            BareItem::Boolean
        };
        cur.parameters(|_, _| Ok(()))?;
        match key {
            b"limit" => {
                value.non_negative("limit must be a non-negative integer")?;
            }
            b"remaining" => {
                remaining = Some(value.non_negative("remaining must be a non-negative integer")?)
            }
            b"reset" => reset = Some(value.non_negative("reset must be a non-negative integer")?),
            _ => {}
        }
        if !cur.member_separator()? {
            break;
        }
    }
    match remaining.ok_or("dictionary form without a remaining member")? {
        0 => reset.ok_or("remaining=0 without a reset member").map(Some),
        _ => Ok(None),
    }
}

/// The kind of a structured-field bare item; only integers keep their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BareItem {
    Integer(i64),
    Decimal,
    String,
    Token,
    ByteSequence,
    Boolean,
    Date,
}

impl BareItem {
    fn non_negative(self, reason: Reason) -> Result<u64, Reason> {
        match self {
            BareItem::Integer(n) => u64::try_from(n).map_err(|_| reason),
            _ => Err(reason),
        }
    }
}

/// A read position in a header value, for structured-field syntax (RFC 8941).
///
/// Slightly lenient: spaces and tabs are allowed around `;` as well as `,`.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consumes bytes while `pred` holds; returns how many.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Whether the input here starts with `key=`, i.e. a dictionary member.
    fn starts_dictionary_member(&self) -> bool {
        let mut probe = Cursor {
            bytes: self.bytes,
            pos: self.pos,
        };
        probe.key().is_ok() && probe.peek() == Some(b'=')
    }

    /// After a member: `true` if a `,` and another member follow, `false` at the end.
    fn member_separator(&mut self) -> Result<bool, Reason> {
        self.skip_ows();
        if self.at_end() {
            return Ok(false);
        }
        if !self.eat(b',') {
            return Err("expected ',' between members");
        }
        self.skip_ows();
        if self.at_end() {
            return Err("trailing ','");
        }
        Ok(true)
    }

    /// A parameter or dictionary key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    fn key(&mut self) -> Result<&'a [u8], Reason> {
        let start = self.pos;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.pos += 1,
            _ => return Err("expected a lowercase key"),
        }
        self.take_while(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'));
        Ok(&self.bytes[start..self.pos])
    }

    /// Zero or more `;key[=value]` parameters, each handed to `each`.
    fn parameters(
        &mut self,
        mut each: impl FnMut(&[u8], BareItem) -> Result<(), Reason>,
    ) -> Result<(), Reason> {
        loop {
            let before = self.pos;
            self.skip_ows();
            if !self.eat(b';') {
                self.pos = before;
                return Ok(());
            }
            self.skip_ows();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare_item()?
            } else {
                BareItem::Boolean
            };
            each(key, value)?;
        }
    }

    /// One bare item: integer, decimal, string, token, byte sequence, boolean or date.
    fn bare_item(&mut self) -> Result<BareItem, Reason> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'*') => {
                self.take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
                Ok(BareItem::Token)
            }
            Some(b':') => {
                self.pos += 1;
                self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                if self.eat(b':') {
                    Ok(BareItem::ByteSequence)
                } else {
                    Err("unterminated byte sequence")
                }
            }
            Some(b'?') => {
                self.pos += 1;
                if self.eat(b'0') || self.eat(b'1') {
                    Ok(BareItem::Boolean)
                } else {
                    Err("boolean must be ?0 or ?1")
                }
            }
            Some(b'@') => {
                self.pos += 1;
                match self.number()? {
                    BareItem::Integer(_) => Ok(BareItem::Date),
                    _ => Err("date must be an integer"),
                }
            }
            Some(_) => Err("unexpected character"),
            None => Err("unexpected end of value"),
        }
    }

    /// An integer (at most 15 digits) or a decimal (at most 12 + 3 digits).
    fn number(&mut self) -> Result<BareItem, Reason> {
        let negative = self.eat(b'-');
        let start = self.pos;
        let int_digits = self.take_while(|b| b.is_ascii_digit());
        if int_digits == 0 {
            return Err("expected a digit");
        }
        let int_part = &self.bytes[start..self.pos];
        if self.eat(b'.') {
            let frac_digits = self.take_while(|b| b.is_ascii_digit());
            if int_digits > 12 || frac_digits == 0 || frac_digits > 3 {
                return Err("malformed decimal");
            }
            return Ok(BareItem::Decimal);
        }
        if int_digits > 15 {
            return Err("integer has more than 15 digits");
        }
        // At most 15 digits, so this fits in an i64 without saturating.
        let magnitude = saturating_decimal(int_part) as i64;
        Ok(BareItem::Integer(if negative {
            -magnitude
        } else {
            magnitude
        }))
    }

    /// A quoted string with `\"` and `\\` escapes; only printable ASCII inside.
    fn string(&mut self) -> Result<BareItem, Reason> {
        self.pos += 1; // opening quote
        loop {
            match self.peek() {
                None => return Err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(BareItem::String);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    if !(self.eat(b'"') || self.eat(b'\\')) {
                        return Err("bad escape in string");
                    }
                }
                Some(0x20..=0x7e) => self.pos += 1,
                Some(_) => return Err("string holds a non-printable or non-ASCII byte"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    const DATE_SECS: u64 = 784_111_777;

    fn date() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(DATE_SECS)
    }

    fn hv(bytes: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(bytes).expect("test header value must be valid")
    }

    fn retry_after(bytes: &[u8]) -> Result<Duration, MalformedHint> {
        parse_retry_after(&hv(bytes), date())
    }

    fn ratelimit(s: &str) -> Result<Option<Duration>, MalformedHint> {
        parse_ratelimit(&hv(s.as_bytes()))
    }

    fn genesys(pairs: &[(&'static str, &str)]) -> Result<Option<Duration>, MalformedHint> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, hv(value.as_bytes()));
        }
        parse_genesys(&headers)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn retry_after_delay_seconds() {
        assert_eq!(retry_after(b"120"), Ok(secs(120)));
        assert_eq!(retry_after(b"  7\t"), Ok(secs(7)));
        assert_eq!(retry_after(b"0"), Ok(Duration::ZERO));
        assert_eq!(retry_after(b"007"), Ok(secs(7)));
    }

    #[test]
    fn retry_after_huge_saturates() {
        assert_eq!(retry_after(b"99999999999999999999999"), Ok(secs(u64::MAX)));
        assert_eq!(retry_after(b"18446744073709551615"), Ok(secs(u64::MAX)));
        assert_eq!(retry_after(b"18446744073709551616"), Ok(secs(u64::MAX)));
    }

    #[test]
    fn retry_after_all_three_date_formats() {
        let clock = FixedClock::new(date() - secs(100));
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(&hv(text.as_bytes()), clock.now()),
                Ok(secs(100)),
                "{text}"
            );
        }
    }

    #[test]
    fn retry_after_date_with_surrounding_whitespace() {
        let value = hv(b" \tSun, 06 Nov 1994 08:49:37 GMT\t ");
        assert_eq!(parse_retry_after(&value, date() - secs(5)), Ok(secs(5)));
    }

    #[test]
    fn retry_after_past_or_present_date_is_zero() {
        let value = hv(b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_retry_after(&value, date()), Ok(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&value, date() + secs(3600)),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_date_rounds_partial_seconds_up() {
        let value = hv(b"Sun, 06 Nov 1994 08:49:37 GMT");
        let now = date() - Duration::from_millis(99_500);
        assert_eq!(parse_retry_after(&value, now), Ok(secs(100)));
    }

    #[test]
    fn retry_after_malformed() {
        let cases: &[&[u8]] = &[
            b"-1",
            b"+1",
            b"1.0",
            b"1e3",
            b"0x10",
            "\u{0661}".as_bytes(), // Arabic-Indic digit one
            "\u{FF11}".as_bytes(), // fullwidth digit one
            b"",
            b"   ",
            b"\t \t",
            b"abc",
            b"soon",
            b"\xff\xfe",
            b"1\xff",
            b"1 0",
            b"1\t0",
            b"Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            b"Sun, 06 Nov 1994 08:49:37 UTC",
        ];
        for case in cases {
            let err = retry_after(case).expect_err(&String::from_utf8_lossy(case));
            assert_eq!(err.source, HintSource::RetryAfter);
            assert!(!err.reason.is_empty());
        }
        assert_eq!(
            retry_after(b"-1").unwrap_err().reason,
            "delay-seconds must not carry a sign"
        );
        assert_eq!(retry_after(b" ").unwrap_err().reason, "empty value");
        assert_eq!(retry_after(b"\xff").unwrap_err().reason, "not valid UTF-8");
    }

    #[test]
    fn malformed_display_and_value() {
        let err = retry_after(b"abc").unwrap_err();
        assert_eq!(err.value, "abc");
        assert_eq!(
            err.to_string(),
            "malformed retry-after header \"abc\": not delay-seconds or an HTTP-date"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.source().is_none());
    }

    #[test]
    fn malformed_value_is_truncated_on_char_boundaries() {
        let long = "x".repeat(10_000);
        let err = retry_after(long.as_bytes()).unwrap_err();
        assert_eq!(err.value, "x".repeat(64));

        let wide = "\u{00e9}".repeat(100); // two bytes each
        let err = retry_after(wide.as_bytes()).unwrap_err();
        assert_eq!(err.value, "\u{00e9}".repeat(64));

        let mut bytes = vec![0xffu8; 300];
        bytes.extend_from_slice(b"tail");
        let err = retry_after(&bytes).unwrap_err();
        assert_eq!(err.value, "\u{fffd}".repeat(64));
    }

    #[test]
    fn hint_source_names() {
        assert_eq!(HintSource::RetryAfter.as_str(), "retry-after");
        assert_eq!(HintSource::RateLimit.as_str(), "ratelimit");
        assert_eq!(HintSource::GenesysReset.as_str(), "inin-ratelimit-reset");
        assert_eq!(HintSource::RateLimit.to_string(), "ratelimit");
    }

    #[test]
    fn clocks() {
        let clock = FixedClock::new(date());
        let shared = clock.clone();
        assert_eq!(shared.now(), date());
        clock.set(date() + secs(1));
        assert_eq!(shared.now(), date() + secs(1));

        let arc: Arc<dyn Clock> = Arc::new(clock);
        assert_eq!(arc.now(), date() + secs(1));
        let arc_fixed = Arc::new(FixedClock::new(date()));
        assert_eq!(Clock::now(&arc_fixed), date());

        let before = SystemTime::now();
        let now = SystemClock.now();
        assert!(now >= before);
    }

    #[test]
    fn ratelimit_single_item() {
        assert_eq!(ratelimit("\"default\";r=0;t=30"), Ok(Some(secs(30))));
        assert_eq!(ratelimit("\"default\";r=0;t=0"), Ok(Some(Duration::ZERO)));
        assert_eq!(ratelimit("  \"default\";t=30;r=0  "), Ok(Some(secs(30))));
    }

    #[test]
    fn ratelimit_multiple_items_take_largest_spent_reset() {
        assert_eq!(
            ratelimit("\"a\";r=5;t=10, \"b\";r=0;t=30"),
            Ok(Some(secs(30)))
        );
        assert_eq!(
            ratelimit("\"a\";r=0;t=50,\"b\";r=0;t=30, \"c\";r=1;t=90"),
            Ok(Some(secs(50)))
        );
        assert_eq!(ratelimit("a;r=0;t=5,\tb;r=0;t=7"), Ok(Some(secs(7))));
    }

    #[test]
    fn ratelimit_remaining_quota_is_no_hint() {
        assert_eq!(ratelimit("\"default\";r=1;t=30"), Ok(None));
        assert_eq!(ratelimit("\"a\";r=5;t=10, \"b\";r=9;t=30"), Ok(None));
        assert_eq!(ratelimit("\"default\";r=50"), Ok(None));
    }

    #[test]
    fn ratelimit_token_and_quoted_names() {
        assert_eq!(ratelimit("default;r=0;t=12"), Ok(Some(secs(12))));
        assert_eq!(ratelimit("day/user:x;r=0;t=12"), Ok(Some(secs(12))));
        assert_eq!(ratelimit("\"per user\";r=0;t=12"), Ok(Some(secs(12))));
        assert_eq!(ratelimit(r#""a\"b\\c";r=0;t=12"#), Ok(Some(secs(12))));
    }

    #[test]
    fn ratelimit_unknown_parameters_are_ignored() {
        assert_eq!(
            ratelimit("\"default\";r=0;t=30;pk=:cHJvamVjdDEyMw==:;q=100;x=\"y\";z=?1;w=1.5;flag"),
            Ok(Some(secs(30)))
        );
        assert_eq!(ratelimit("\"default\" ; r=0 ; t=30"), Ok(Some(secs(30))));
    }

    #[test]
    fn ratelimit_dictionary_form() {
        assert_eq!(
            ratelimit("limit=100, remaining=0, reset=30"),
            Ok(Some(secs(30)))
        );
        assert_eq!(ratelimit("limit=100, remaining=7, reset=30"), Ok(None));
        assert_eq!(
            ratelimit("reset=9,remaining=0,policy=\"x\""),
            Ok(Some(secs(9)))
        );
        assert_eq!(ratelimit("remaining=3"), Ok(None));
    }

    #[test]
    fn ratelimit_malformed() {
        let cases = [
            "",
            "   ",
            "\"default\"",
            "default",
            "\"default\";r=0",
            "\"default\";r=0;t=abc",
            "\"default\";r=0;t=\"30\"",
            "\"default\";r=0;t=1.5",
            "\"default\";r=-1;t=30",
            "\"default\";r=0;t=-30",
            "\"default\";t=30",
            "\"default\";r=0;t=30,",
            "\"default\";r=0;t=30 junk",
            "\"a\";r=5;t=10, \"b\"",
            "\"unterminated;r=0;t=30",
            "42;r=0;t=30",
            "(a b);r=0;t=30",
            "\"default\";R=0;t=30",
            "\"default\";r=0;t=1234567890123456",
            "\"default\";r=0;t=",
            "\"default\";;r=0",
            "limit=100, remaining=0",
            "limit=100, reset=30",
            "limit=100, remaining=-1, reset=30",
            "limit=abc, remaining=0, reset=30",
            "limit=100, remaining=0, reset=soon",
            "!!!",
            "\u{00e9}",
        ];
        for case in cases {
            let err = parse_ratelimit(&hv(case.as_bytes())).expect_err(case);
            assert_eq!(err.source, HintSource::RateLimit, "{case}");
        }
        assert_eq!(
            ratelimit("\"default\";r=0").unwrap_err().reason,
            "r=0 without a t (reset) parameter"
        );
        assert_eq!(
            ratelimit("\"default\"").unwrap_err().reason,
            "list item has no parameters"
        );
    }

    #[test]
    fn genesys_limits() {
        let at = genesys(&[
            ("inin-ratelimit-count", "300"),
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-reset", "42"),
        ]);
        assert_eq!(at, Ok(Some(secs(42))));

        let over = genesys(&[
            ("inin-ratelimit-count", "301"),
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-reset", " 5 "),
        ]);
        assert_eq!(over, Ok(Some(secs(5))));

        let under = genesys(&[
            ("inin-ratelimit-count", "12"),
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-reset", "42"),
        ]);
        assert_eq!(under, Ok(None));

        let under_without_reset = genesys(&[
            ("inin-ratelimit-count", "12"),
            ("inin-ratelimit-allowed", "300"),
        ]);
        assert_eq!(under_without_reset, Ok(None));

        assert_eq!(genesys(&[]), Ok(None));
        assert_eq!(genesys(&[("inin-ratelimit-reset", "42")]), Ok(None));
    }

    #[test]
    fn genesys_first_value_wins() {
        let result = genesys(&[
            ("inin-ratelimit-count", "300"),
            ("inin-ratelimit-count", "1"),
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-reset", "8"),
            ("inin-ratelimit-reset", "junk"),
        ]);
        assert_eq!(result, Ok(Some(secs(8))));
    }

    #[test]
    fn genesys_malformed() {
        let missing_reset = genesys(&[
            ("inin-ratelimit-count", "300"),
            ("inin-ratelimit-allowed", "300"),
        ])
        .unwrap_err();
        assert_eq!(missing_reset.source, HintSource::GenesysReset);
        assert_eq!(
            missing_reset.reason,
            "limit reached but inin-ratelimit-reset is missing"
        );

        let cases: &[&[(&'static str, &str)]] = &[
            &[
                ("inin-ratelimit-count", "lots"),
                ("inin-ratelimit-allowed", "300"),
                ("inin-ratelimit-reset", "42"),
            ],
            &[
                ("inin-ratelimit-count", "300"),
                ("inin-ratelimit-allowed", "-1"),
                ("inin-ratelimit-reset", "42"),
            ],
            &[
                ("inin-ratelimit-count", "300"),
                ("inin-ratelimit-allowed", "300"),
                ("inin-ratelimit-reset", "4.2"),
            ],
            &[
                ("inin-ratelimit-count", "300"),
                ("inin-ratelimit-allowed", "300"),
                ("inin-ratelimit-reset", ""),
            ],
            &[("inin-ratelimit-count", "300")],
            &[("inin-ratelimit-allowed", "300")],
        ];
        for pairs in cases {
            let err = genesys(pairs).expect_err(&format!("{pairs:?}"));
            assert_eq!(err.source, HintSource::GenesysReset);
        }
        let garbage = genesys(&[
            ("inin-ratelimit-count", "300"),
            ("inin-ratelimit-allowed", "300"),
            ("inin-ratelimit-reset", "soon"),
        ])
        .unwrap_err();
        assert_eq!(garbage.value, "soon");
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
