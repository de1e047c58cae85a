//! `RateLimit` (structured-field list and dictionary forms): never panics,
//! a rejected value is kept short.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_cx::hint::MalformedHint;
use tower_cx::internals::parse_ratelimit;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    if let Err(malformed) = parse_ratelimit(&value) {
        assert!(malformed.value.chars().count() <= MalformedHint::MAX_VALUE_CHARS);
    }
});
