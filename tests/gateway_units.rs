//! The `tower-cx-gateway` binary's unit tests (flags, limits, error
//! answers). The binary is started as a process by `tests/gateway.rs`; its
//! modules are compiled here too, so that `cargo test` runs their tests.
#![cfg(all(feature = "gateway", feature = "mock"))]
#![allow(dead_code)]

#[path = "../src/bin/tower-cx-gateway/main.rs"]
mod gateway;
