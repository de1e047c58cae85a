//! The `Retry-After` parser (RFC 9110 §10.2.3): delay-seconds or an
//! HTTP-date.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::{saturating_decimal, trim_ows, HintSource, MalformedHint};

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
pub(crate) fn parse_retry_after(
    value: &HeaderValue,
    now: SystemTime,
) -> Result<Duration, MalformedHint> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::testing::{date, hv, secs};
    use crate::hint::{Clock, FixedClock};

    fn retry_after(bytes: &[u8]) -> Result<Duration, MalformedHint> {
        parse_retry_after(&hv(bytes), date())
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
}
