//! Genesys `inin-ratelimit-*` and the combined hint: never panic; a valid
//! count at the limit gives exactly the reset.
#![no_main]

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_cx::hint::{server_hint, SystemClock};
use tower_cx::internals::parse_genesys;

fuzz_target!(|data: &[u8]| {
    // three header values separated by 0xff (absent when not valid)
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let names = [
        "inin-ratelimit-count",
        "inin-ratelimit-allowed",
        "inin-ratelimit-reset",
    ];
    let mut headers = HeaderMap::new();
    let mut raw = Vec::new();
    for name in names {
        let part = parts.next().unwrap_or(&[]);
        raw.push(part);
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.insert(name, value);
        }
    }
    if let Some(rest) = parts.next() {
        for (name, part) in [("retry-after", rest), ("ratelimit", rest)] {
            if let Ok(value) = HeaderValue::from_bytes(part) {
                headers.insert(name, value);
            }
        }
    }
    let parsed = parse_genesys(&headers);
    let _ = server_hint(&headers, &SystemClock);
    let number = |b: &[u8]| -> Option<u64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    if let (Some(count), Some(allowed), Some(reset)) =
        (number(raw[0]), number(raw[1]), number(raw[2]))
    {
        let expected = (count >= allowed).then(|| Duration::from_secs(reset));
        assert_eq!(parsed.ok().flatten(), expected);
    }
});
