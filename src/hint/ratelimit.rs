//! The `RateLimit` parser (IETF httpapi ratelimit-headers draft, list and
//! dictionary forms) and Genesys Cloud's `inin-ratelimit-*` headers.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{parse_plain_uint, saturating_decimal, HintSource, MalformedHint};

/// Name of the `RateLimit` header field.
pub(super) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Name of the Genesys header holding the number of requests made in the window.
pub(super) const GENESYS_COUNT: HeaderName = HeaderName::from_static("inin-ratelimit-count");
/// Name of the Genesys header holding the number of requests allowed in the window.
pub(super) const GENESYS_ALLOWED: HeaderName = HeaderName::from_static("inin-ratelimit-allowed");
/// Name of the Genesys header holding the seconds until the window resets.
pub(super) const GENESYS_RESET: HeaderName = HeaderName::from_static("inin-ratelimit-reset");

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
pub(crate) fn parse_ratelimit(value: &HeaderValue) -> Result<Option<Duration>, MalformedHint> {
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
pub(crate) fn parse_genesys(headers: &HeaderMap) -> Result<Option<Duration>, MalformedHint> {
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

/// Why a `RateLimit` value was rejected.
pub(super) type Reason = &'static str;

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
pub(super) enum BareItem {
    Integer(i64),
    Decimal,
    String,
    Token,
    ByteSequence,
    Boolean,
    Date,
}

impl BareItem {
    pub(super) fn non_negative(self, reason: Reason) -> Result<u64, Reason> {
        match self {
            BareItem::Integer(n) => u64::try_from(n).map_err(|_| reason),
            _ => Err(reason),
        }
    }
}

/// A read position in a header value, for structured-field syntax (RFC 8941).
///
/// Slightly lenient: spaces and tabs are allowed around `;` as well as `,`.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(super) fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn skip_ows(&mut self) {
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
    pub(super) fn starts_dictionary_member(&self) -> bool {
        let mut probe = Cursor {
            bytes: self.bytes,
            pos: self.pos,
        };
        probe.key().is_ok() && probe.peek() == Some(b'=')
    }

    /// After a member: `true` if a `,` and another member follow, `false` at the end.
    pub(super) fn member_separator(&mut self) -> Result<bool, Reason> {
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
    pub(super) fn key(&mut self) -> Result<&'a [u8], Reason> {
        let start = self.pos;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.pos += 1,
            _ => return Err("expected a lowercase key"),
        }
        self.take_while(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'));
        Ok(&self.bytes[start..self.pos])
    }

    /// Zero or more `;key[=value]` parameters, each handed to `each`.
    pub(super) fn parameters(
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
    pub(super) fn bare_item(&mut self) -> Result<BareItem, Reason> {
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
    use crate::hint::testing::{hv, secs};

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
}
