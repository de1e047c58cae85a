//! The embedded vendor mock, driven by the ready-made stack over real TCP.
#![cfg(feature = "mock")]

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_cx::auth::{ClientCredentials, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::mock::{Fault, MockConfig, MockServer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

fn fast_retry() -> RetryLayer {
    RetryLayer::new()
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .auto_idempotency_key(true)
}

async fn json(response: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_genesys_stack_lists_users_through_faults() {
    let mock = MockServer::start().await.unwrap();
    let config = mock.config().clone();
    let stack = Stack::genesys(
        &mock.genesys_region(),
        config.client_id,
        config.client_secret,
    )
    .unwrap()
    .retry(fast_retry());
    let handles = stack.handles();
    let client = stack.build();
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
    mock.fault(Some("/api/v2/users"), Fault::Reset, 1);

    let mut uri = Some(format!("{}/api/v2/users?pageSize=100", mock.base_url()));
    let mut users = 0;
    while let Some(next) = uri.take() {
        let response = client
            .clone()
            .oneshot(Request::get(next).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("inin-ratelimit-allowed"));
        let page = json(response).await;
        users += page["entities"].as_array().unwrap().len();
        uri = page["nextUri"]
            .as_str()
            .map(|path| format!("{}{path}", mock.base_url()));
    }
    assert_eq!(users, 250);
    let counters = mock.counters();
    assert_eq!(counters.tokens_issued, 1);
    assert_eq!(
        counters.requests["/api/v2/users"],
        3 + 2,
        "3 pages, 2 faulted attempts"
    );
    assert_eq!(counters.retry_after_violations, 0);
    assert_eq!(handles.stats.snapshot().retries, 2);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_genesys_headers_and_counts_violations() {
    let mock = MockServer::start_with(MockConfig {
        rate_limit: 3,
        in_flight_grace: Duration::ZERO,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = mock.config().clone();
    let tokens = TokenCache::new(
        ClientCredentials::genesys(&mock.genesys_region(), c.client_id, c.client_secret).unwrap(),
    );
    // a bare client with the bearer layer only: nothing paces it
    let client = tower::ServiceBuilder::new()
        .layer(tower_cx::auth::BearerLayer::new(tokens))
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Body>(),
        );
    let url = format!("{}/api/v2/users", mock.base_url());
    let send = || {
        client
            .clone()
            .oneshot(Request::get(url.clone()).body(Body::empty()).unwrap())
    };
    for _ in 0..3 {
        assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    }
    let limited = send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(limited.headers()["inin-ratelimit-allowed"], "3");
    assert_eq!(json(limited).await["code"], "too.many.requests.retry.after");
    // the third answer said count = allowed: the fourth request ignored it,
    // and so does the fifth (no in-flight grace in this test)
    assert_eq!(mock.counters().retry_after_violations, 1);
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(mock.counters().retry_after_violations, 2);
}

#[tokio::test]
async fn the_stack_paces_itself_by_the_genesys_headers_and_never_sees_a_429() {
    let mock = MockServer::start_with(MockConfig {
        rate_limit: 3,
        rate_window: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = mock.config().clone();
    let client = Stack::genesys(&mock.genesys_region(), c.client_id, c.client_secret)
        .unwrap()
        .build();
    for _ in 0..7 {
        let request = Request::get(format!("{}/api/v2/users", mock.base_url()))
            .body(Body::empty())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // the third answer of each window says count = allowed: the rate gate
    // holds the next request until the window resets
    assert_eq!(mock.counters().retry_after_violations, 0);
    assert_eq!(mock.counters().requests["/api/v2/users"], 7);
}

#[tokio::test]
async fn wrong_credentials_get_an_rfc6749_error() {
    let mock = MockServer::start().await.unwrap();
    let credentials = ClientCredentials::genesys(&mock.genesys_region(), "mock-client", "wrong")
        .unwrap()
        .retry(RetryLayer::new().max_attempts(1));
    let err = TokenCache::new(credentials).refresh().await.unwrap_err();
    assert!(
        matches!(err, TokenError::Rejected { ref error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    assert_eq!(mock.counters().tokens_issued, 0);
}

#[tokio::test]
async fn cxone_access_keys_and_completed_contacts_pages_end_with_204() {
    let mock = MockServer::start().await.unwrap();
    let c = mock.config().clone();
    let client = Stack::cxone(
        &mock.cxone_token_url(),
        c.client_id,
        c.client_secret,
        c.access_key_id,
        c.access_key_secret,
    )
    .unwrap()
    .build();
    let mut skip = 0;
    let mut contacts = 0;
    loop {
        let url = format!(
            "{}/incontactapi/services/v31.0/contacts/completed?skip={skip}&top=50",
            mock.base_url()
        );
        let response = client
            .clone()
            .oneshot(Request::get(url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        if response.status() == StatusCode::NO_CONTENT {
            break;
        }
        let page = json(response).await;
        let n = page["completedContacts"].as_array().unwrap().len();
        contacts += n;
        skip += n;
    }
    assert_eq!(contacts, 120);
    assert_eq!(mock.counters().tokens_issued, 1);
}

#[tokio::test]
async fn a_keyed_post_retried_after_a_fault_is_applied_once() {
    let mock = MockServer::start().await.unwrap();
    let c = mock.config().clone();
    let client = Stack::genesys(&mock.genesys_region(), c.client_id, c.client_secret)
        .unwrap()
        .retry(fast_retry())
        .build();
    mock.fault(Some("/api/v2/integrations"), Fault::Status(502), 2);
    let url = format!(
        "{}/api/v2/integrations/actions/action-1/execute",
        mock.base_url()
    );
    let response = client
        .oneshot(Request::post(url).body(Body::from(r#"{"x":1}"#)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["input"]["x"], 1);
    let counters = mock.counters();
    assert_eq!(
        counters.requests["/api/v2/integrations/actions/action-1/execute"],
        3
    );
    assert_eq!(counters.duplicate_idempotency_keys, 0);
}
