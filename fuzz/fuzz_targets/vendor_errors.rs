//! Genesys and CXone error bodies (and the `icStatusDescription` header):
//! never panic, the status is kept, the message stays bounded.
#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_cx::cxone::CxoneError;
use tower_cx::internals::IC_STATUS_DESCRIPTION;
use tower_cx::genesys::GenesysError;

fuzz_target!(|data: &[u8]| {
    // first byte: status; up to the first 0xff: the header; the rest: body
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(400 + u16::from(first) % 200).unwrap();
    let (header, body) = match rest.iter().position(|b| *b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        headers.insert(IC_STATUS_DESCRIPTION, value);
    }
    let genesys = GenesysError::from_body(status, &headers, body);
    assert_eq!(genesys.status(), status);
    let _ = (genesys.codes().count(), genesys.remote_status());
    assert!(genesys.to_string().len() <= body.len() + 1024);
    let cxone = CxoneError::from_response(status, &headers, body);
    assert_eq!(cxone.status(), status);
    assert!(cxone.to_string().len() <= body.len() + header.len() + 1024);
});
