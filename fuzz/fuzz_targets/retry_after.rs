//! `Retry-After`: never panics; delay-seconds are exact; an HTTP-date gives
//! whole seconds; a rejected value is kept short.
#![no_main]

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_cx::hint::MalformedHint;
use tower_cx::internals::parse_retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match parse_retry_after(&value, now) {
        Ok(delay) => {
            let text = String::from_utf8_lossy(data);
            let trimmed = text.trim_matches(|c| c == ' ' || c == '\t');
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
                assert_eq!(delay, Duration::from_secs(secs));
            } else {
                assert_eq!(delay.subsec_nanos(), 0);
                assert!(delay <= Duration::from_secs(10_000 * 366 * 86_400));
            }
        }
        Err(malformed) => {
            assert!(malformed.value.chars().count() <= MalformedHint::MAX_VALUE_CHARS)
        }
    }
});
