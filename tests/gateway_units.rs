//! The gateway example's unit tests (flags, limits, error answers). The
//! example stays a plain binary, which `tests/gateway.rs` starts as a
//! process; its modules are compiled here too, so that `cargo test` runs
//! their tests.
#![cfg(feature = "mock")]
#![allow(dead_code)]

#[path = "../examples/gateway/main.rs"]
mod gateway;
