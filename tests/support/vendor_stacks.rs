//! The embedded mock for the tests: one way to start it with a setting or
//! two changed, to build each vendor's canonical stack against it with the
//! mock's own credentials, and a job runner whose poll times are exact.
#![allow(dead_code)] // each test file uses what it needs

use std::time::Duration;

use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::jobs::JobRunner;
use tower_cx::mock::{MockConfig, MockServer};
use tower_cx::stack::Stack;

/// The mock, started with `change` made to its default configuration.
pub async fn mock_with(change: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut config = MockConfig::default();
    change(&mut config);
    MockServer::start_with(config)
        .await
        .expect("the mock starts")
}

/// `Stack::genesys` for the mock's region and client.
pub fn genesys(mock: &MockServer) -> Stack {
    let c = mock.config();
    Stack::genesys(
        &mock.genesys_region(),
        c.client_id.clone(),
        c.client_secret.clone(),
    )
    .expect("the mock's region and credentials are valid")
}

/// `Stack::cxone` for the mock's token endpoint, client and access key.
pub fn cxone(mock: &MockServer) -> Stack {
    let c = mock.config();
    Stack::cxone(
        &mock.cxone_token_url(),
        c.client_id.clone(),
        c.client_secret.clone(),
        c.access_key_id.clone(),
        c.access_key_secret.clone(),
    )
    .expect("the mock's token URL and credentials are valid")
}

/// A job runner polling 2 s after the start, then doubling to 30 s, with
/// no jitter: exact poll times (2, 6, 14, 30, 60, 90 s ...).
pub fn exact_job_runner() -> JobRunner {
    JobRunner::new().backoff(
        Backoff::exponential(Duration::from_secs(2))
            .max_delay(Duration::from_secs(30))
            .jitter(Jitter::None),
    )
}
