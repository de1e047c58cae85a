//! One way for the tests to build each vendor's canonical stack against
//! the embedded mock, with the mock's own credentials.
#![allow(dead_code)] // each test file uses what it needs

use tower_cx::mock::MockServer;
use tower_cx::stack::Stack;

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
