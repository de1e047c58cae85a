//! Token responses: never panic; a token's lifetime stays within the
//! policy; an error never echoes the access token and stays short.
#![no_main]

use std::time::Duration;

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use tower_cx::auth::LifetimePolicy;
use tower_cx::internals::parse_token_response;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = StatusCode::from_u16(100 + u16::from_le_bytes([data[0], data[1]]) % 500)
        .expect("100..600");
    let body = &data[2..];
    let policy = LifetimePolicy::default();
    match parse_token_response(
        status,
        Some("application/json"),
        body,
        tokio::time::Instant::now(),
        &policy,
    ) {
        Ok(token) => {
            assert!(status.is_success());
            assert!(token.lifetime() > Duration::ZERO && token.lifetime() <= policy.max);
            let shown = format!("{token:?}");
            let secret = token.access_token().expose();
            assert!(secret.len() < 12 || !shown.contains(secret));
        }
        Err(error) => {
            assert!(format!("{error} {error:?}").len() < 4_096);
        }
    }
});
