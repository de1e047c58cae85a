//! The embedded vendor mock, driven by the ready-made stack over real TCP.
#![cfg(feature = "mock")]

#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_cx::auth::{ClientCredentials, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::mock::{Fault, JobScript, MockConfig, MockServer};
use tower_cx::retry::RetryLayer;

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
    let stack = vendor_stacks::genesys(&mock).retry(fast_retry());
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
    let mock = vendor_stacks::mock_with(|c| {
        c.rate_limit = 3;
        c.in_flight_grace = Duration::ZERO;
    })
    .await;
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
    let mock = vendor_stacks::mock_with(|c| {
        c.rate_limit = 3;
        c.rate_window = Duration::from_secs(1);
    })
    .await;
    let client = vendor_stacks::genesys(&mock).build();
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
    let client = vendor_stacks::cxone(&mock).build();
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
async fn a_keyed_post_to_a_key_honouring_origin_is_retried_and_applied_once() {
    let mock = MockServer::start_with(MockConfig::default().honour_idempotency_keys(true))
        .await
        .unwrap();
    let origin = tower_cx::origin::Origin::parse(&mock.base_url()).unwrap();
    let client = vendor_stacks::genesys(&mock)
        .retry(fast_retry().idempotency_keys_honoured_by(origin))
        .build();
    // applied, then the answer is lost: the retry with the same key gets
    // the first answer back
    mock.fault(Some("/api/v2/integrations"), Fault::ApplyThenStatus(502), 2);
    let url = format!(
        "{}/api/v2/integrations/actions/action-1/execute",
        mock.base_url()
    );
    let response = client
        .oneshot(
            Request::post(url)
                .body(Body::from(r#"{"x":1,"requestId":"r-1"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["input"]["x"], 1);
    let counters = mock.counters();
    assert_eq!(
        counters.requests["/api/v2/integrations/actions/action-1/execute"],
        3
    );
    assert_eq!(mock.applied("r-1"), 1);
    assert_eq!(counters.replayed_by_key, 2);
    assert_eq!(mock.duplicate_applications(), 0);
}

// ---- side effects: keys ignored, operations counted, apply-then-fail ----

type Bare = tower::util::BoxCloneSyncService<
    Request<Body>,
    http::Response<hyper::body::Incoming>,
    tower_cx::error::BoxError,
>;

/// A client with the bearer layer only: no retries, nothing hidden.
fn bare_genesys(mock: &MockServer) -> Bare {
    let c = mock.config().clone();
    let tokens = TokenCache::new(
        ClientCredentials::genesys(&mock.genesys_region(), c.client_id, c.client_secret).unwrap(),
    );
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(tower_cx::auth::BearerLayer::new(tokens))
            .service(http_client()),
    )
}

fn bare_cxone(mock: &MockServer) -> Bare {
    let c = mock.config().clone();
    let tokens = TokenCache::new(
        ClientCredentials::cxone(
            &mock.cxone_token_url(),
            c.client_id,
            c.client_secret,
            c.access_key_id,
            c.access_key_secret,
        )
        .unwrap(),
    );
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(tower_cx::auth::BearerLayer::new(tokens))
            .service(http_client()),
    )
}

const EXECUTE: &str = "/api/v2/integrations/actions/a-1/execute";

async fn post(
    client: &Bare,
    url: String,
    key: &str,
    body: &str,
) -> Result<http::Response<hyper::body::Incoming>, tower_cx::error::BoxError> {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_owned()))
        .unwrap();
    client.clone().oneshot(request).await
}

#[tokio::test(start_paused = true)]
async fn the_mock_ignores_idempotency_keys_like_the_vendors() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    let url = format!("{}{EXECUTE}", mock.base_url());
    for _ in 0..2 {
        let response = post(&client, url.clone(), "key-1", r#"{"requestId":"r-1"}"#)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(mock.applied("r-1"), 2, "the key did not stop the second");
    assert_eq!(mock.duplicate_applications(), 1);
    let counters = mock.counters();
    assert_eq!(counters.operations_applied, 2);
    assert_eq!(counters.duplicate_idempotency_keys, 1);
    assert_eq!(counters.replayed_by_key, 0);
}

#[tokio::test(start_paused = true)]
async fn with_the_switch_a_repeated_key_is_applied_once_and_the_first_answer_replayed() {
    let mock = MockServer::start_with(MockConfig::default().honour_idempotency_keys(true))
        .await
        .unwrap();
    let client = bare_genesys(&mock);
    let url = format!("{}{EXECUTE}", mock.base_url());
    let first = json(
        post(
            &client,
            url.clone(),
            "key-1",
            r#"{"requestId":"r-1","n":1}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    // same key, another body: the first answer comes back, nothing applied
    let second = post(
        &client,
        url.clone(),
        "key-1",
        r#"{"requestId":"r-1","n":2}"#,
    )
    .await
    .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(json(second).await, first);
    assert_eq!(first["input"]["n"], 1);
    assert_eq!(mock.applied("r-1"), 1);
    assert_eq!(mock.counters().replayed_by_key, 1);
    assert_eq!(mock.duplicate_applications(), 0);
    // a new key for the same operation is a new application: a duplicate
    post(&client, url, "key-2", r#"{"requestId":"r-1"}"#)
        .await
        .unwrap();
    assert_eq!(mock.applied("r-1"), 2);
    assert_eq!(mock.duplicate_applications(), 1);
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_counted_by_operation_whatever_the_keys() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    let url = format!("{}{EXECUTE}", mock.base_url());
    post(&client, url.clone(), "k-a", r#"{"requestId":"r-1"}"#)
        .await
        .unwrap();
    post(&client, url.clone(), "k-b", r#"{"requestId":"r-2"}"#)
        .await
        .unwrap();
    assert_eq!(mock.duplicate_applications(), 0, "two operations");
    post(&client, url.clone(), "k-c", r#"{"requestId":"r-1"}"#)
        .await
        .unwrap();
    assert_eq!(
        mock.duplicate_applications(),
        1,
        "r-1 again, under a new key"
    );
    // without a request id, the body names the operation
    post(&client, url.clone(), "k-d", r#"{"x":1}"#)
        .await
        .unwrap();
    post(&client, url.clone(), "k-e", r#"{"x":2}"#)
        .await
        .unwrap();
    assert_eq!(mock.duplicate_applications(), 1);
    post(&client, url, "k-f", r#"{"x":1}"#).await.unwrap();
    assert_eq!(mock.duplicate_applications(), 2);
    assert_eq!(
        mock.counters().duplicate_idempotency_keys,
        0,
        "keys all new"
    );
    // reads are not operations
    let users = format!("{}/api/v2/users", mock.base_url());
    client
        .clone()
        .oneshot(Request::get(users).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(mock.counters().operations_applied, 6);
}

#[tokio::test]
async fn a_job_submission_read_as_failed_may_be_submitted_again_without_a_duplicate() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    let jobs = format!(
        "{}/api/v2/analytics/conversations/details/jobs",
        mock.base_url()
    );
    let read = |id: String| {
        let request = Request::get(format!("{jobs}/{id}"))
            .body(Body::empty())
            .unwrap();
        client.clone().oneshot(request)
    };
    mock.script_genesys_job(JobScript::new([("FAILED", "disk full")]));
    let first = json(post(&client, jobs.clone(), "k-1", "{}").await.unwrap()).await;
    let first = first["jobId"].as_str().unwrap().to_owned();
    let status = json(read(first.clone()).await.unwrap()).await;
    assert_eq!(status["state"], "FAILED");
    post(&client, jobs.clone(), "k-2", "{}").await.unwrap();
    assert_eq!(
        mock.duplicate_applications(),
        0,
        "a re-run of a failed job is not a duplicate"
    );
    // reading the failed job again voids nothing more: the re-run is live
    read(first).await.unwrap();
    post(&client, jobs, "k-3", "{}").await.unwrap();
    assert_eq!(mock.duplicate_applications(), 1);
}

#[tokio::test]
async fn the_results_of_an_unknown_job_are_a_404() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    let url = format!(
        "{}/api/v2/analytics/conversations/details/jobs/nope-1/results",
        mock.base_url()
    );
    let request = Request::get(url).body(Body::empty()).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn apply_then_500_commits_the_operation_and_answers_500() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    mock.fault(Some(EXECUTE), Fault::ApplyThenStatus(500), 1);
    let url = format!("{}{EXECUTE}", mock.base_url());
    let response = post(&client, url.clone(), "k", r#"{"requestId":"r-9"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(response).await["code"], "internal.server.error");
    assert_eq!(mock.applied("r-9"), 1, "applied although the answer is 500");
    // a refusal before the endpoint is not applied
    mock.fault(Some(EXECUTE), Fault::Status(500), 1);
    let response = post(&client, url, "k2", r#"{"requestId":"r-10"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(mock.applied("r-10"), 0);
}

#[tokio::test(start_paused = true)]
async fn apply_then_drop_commits_the_operation_and_closes_the_connection() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_genesys(&mock);
    mock.fault(Some(EXECUTE), Fault::ApplyThenDrop, 1);
    let url = format!("{}{EXECUTE}", mock.base_url());
    let err = post(&client, url.clone(), "k", r#"{"requestId":"r-7"}"#)
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(mock.applied("r-7"), 1, "applied although no answer came");
    // Reset drops before applying
    mock.fault(Some(EXECUTE), Fault::Reset, 1);
    post(&client, url, "k2", r#"{"requestId":"r-8"}"#)
        .await
        .unwrap_err();
    assert_eq!(mock.applied("r-8"), 0);
    assert_eq!(mock.counters().operations_applied, 1);
}

// ---- CXone as CXone is ----

const DX_JOBS: &str = "/data-extraction/v1/jobs";

#[tokio::test(start_paused = true)]
async fn cxone_tokens_live_3600_s_and_carry_the_tenant_claims() {
    let mock = MockServer::start().await.unwrap();
    let c = mock.config().clone();
    let token_url = mock.cxone_token_url();
    let form = format!(
        "grant_type=password&username={}&password={}",
        c.access_key_id, c.access_key_secret
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", c.client_id, c.client_secret));
    let response = http_client()
        .oneshot(
            Request::post(token_url)
                .header("authorization", format!("Basic {basic}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap(),
        )
        .await
        .unwrap();
    let token = json(response).await;
    assert_eq!(token["expires_in"], 3600);
    assert_eq!(token["token_type"], "Bearer");
    let claims =
        tower_cx::cxone::TokenClaims::from_access_token(token["access_token"].as_str().unwrap())
            .unwrap();
    assert_eq!(claims.tenant_id, c.tenant_id);
    assert_eq!(claims.area.as_deref(), Some("na1"));
}

#[tokio::test(start_paused = true)]
async fn cxone_routes_send_no_genesys_headers_and_cxone_shaped_401_and_429() {
    let mock = vendor_stacks::mock_with(|c| c.rate_limit = 1).await;
    let client = bare_cxone(&mock);
    let url = format!(
        "{}/incontactapi/services/v31.0/contacts/completed",
        mock.base_url()
    );
    let get = |url: String| {
        client
            .clone()
            .oneshot(Request::get(url).body(Body::empty()).unwrap())
    };
    let ok = get(url.clone()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(!ok.headers().keys().any(|k| k.as_str().starts_with("inin-")));
    let limited = get(url.clone()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!limited
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("inin-")));
    assert_eq!(limited.headers()["retry-after"], "60");
    let (parts, body) = limited.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let err = tower_cx::cxone::CxoneError::from_response(parts.status, &parts.headers, &bytes);
    assert_eq!(err.code(), Some("TooManyRequests"));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert!(err.ic_status_description().is_some());

    let anonymous = http_client()
        .oneshot(Request::get(url).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(!anonymous.headers().contains_key("inin-correlation-id"));
    assert_eq!(json(anonymous).await["error"], "invalid_token");
}

#[tokio::test(start_paused = true)]
async fn cxone_allows_one_extraction_submission_per_30_s_per_tenant() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_cxone(&mock);
    let url = format!("{}{DX_JOBS}", mock.base_url());
    let first = post(&client, url.clone(), "k1", r#"{"entityName":"contacts"}"#)
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = post(&client, url.clone(), "k2", r#"{"entityName":"agents"}"#)
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "20");
    assert_eq!(mock.counters().extraction_limit_violations, 1);
    assert_eq!(mock.applied("agents"), 0, "refused, not applied");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let third = post(&client, url, "k3", r#"{"entityName":"agents"}"#)
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::ACCEPTED);
    assert_eq!(mock.counters().extraction_limit_violations, 1);
}

#[tokio::test(start_paused = true)]
async fn the_extraction_result_url_lives_30_s() {
    let mock = MockServer::start().await.unwrap();
    let client = bare_cxone(&mock);
    let jobs = format!("{}{DX_JOBS}", mock.base_url());
    let id: String =
        serde_json::from_value(json(post(&client, jobs.clone(), "k", "{}").await.unwrap()).await)
            .unwrap();
    mock.script_cxone_job(tower_cx::mock::JobScript::new([("SUCCEEDED", "")]));
    let _ = id;
    // the script applies to the next job: submit one after the interval
    tokio::time::sleep(Duration::from_secs(30)).await;
    let id: String = serde_json::from_value(
        json(
            post(&client, jobs.clone(), "k2", r#"{"n":2}"#)
                .await
                .unwrap(),
        )
        .await,
    )
    .unwrap();
    let status = json(
        client
            .clone()
            .oneshot(
                Request::get(format!("{jobs}/{id}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    let file = status["jobStatus"]["result"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let download =
        |url: String| http_client().oneshot(Request::get(url).body(Body::empty()).unwrap());
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(
        download(file.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        download(file).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

fn http_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>()
}
