//! The typed Genesys Cloud client against the embedded mock, over the
//! canonical stack and real loopback TCP.
#![cfg(feature = "mock")]

#[path = "support/events.rs"]
mod events;
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_cx::audit::DeadLetter;
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::error::{BodyTooLarge, BoxError};
use tower_cx::genesys::{BusinessRule, DataActions, EntityPage, GenesysClient, GenesysError};
use tower_cx::hint::QuotaSource;
use tower_cx::jobs::JobRunner;
use tower_cx::mock::{Fault, JobScript, MockServer};
use tower_cx::observe::PacingSource;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::{RetryLayer, RetryOverride, IDEMPOTENCY_KEY};
use tower_cx::stack::{CxService, Stack};
use tower_cx::transport::read_limited;
use tower_cx::vendor::{BodyLimits, InvalidArgument, RetryRules, Rule};

use events::EventCapture;

const EXECUTE: &str = "/api/v2/integrations/actions/lookup/execute";

fn fast() -> RetryLayer {
    RetryLayer::new()
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .auto_idempotency_key(true)
}

/// The canonical stack against the mock; `attempts` for its retry layer.
fn stack(mock: &MockServer, attempts: u32) -> CxService {
    vendor_stacks::genesys(mock)
        .retry(fast().max_attempts(attempts))
        .build()
}

/// The client over [`stack`] with 4 attempts. The `lookup` action is
/// read-only: declared idempotent, so its failures may be retried.
fn client(mock: &MockServer) -> GenesysClient<CxService> {
    client_over(mock, 4)
}

/// The client (3 attempts of its own) over [`stack`] with `stack_attempts`.
fn client_over(mock: &MockServer, stack_attempts: u32) -> GenesysClient<CxService> {
    GenesysClient::new(stack(mock, stack_attempts), &mock.genesys_region())
        .retry(fast().max_attempts(3))
        .idempotent_action("lookup")
}

type Letters = EventCapture<DeadLetter>;

fn with_letters(client: GenesysClient<CxService>) -> (GenesysClient<CxService>, Letters) {
    let letters = Letters::new();
    let client = client.dead_letters(letters.dead_letters());
    (client, letters)
}

/// Runs the `lookup` action with `{}`, which must fail: the error.
async fn failed_lookup(actions: &DataActions<CxService>) -> BoxError {
    actions
        .execute::<_, Value>("lookup", &json!({}))
        .await
        .unwrap_err()
}

/// The vendor's typed error, itself or as the source of an
/// [`OutcomeUnknown`](tower_cx::error::OutcomeUnknown).
fn genesys_error(err: &tower_cx::error::BoxError) -> &GenesysError {
    tower_cx::error::find::<GenesysError>(err.as_ref())
        .unwrap_or_else(|| panic!("not a GenesysError: {err:?}"))
}

#[derive(Debug, Deserialize, PartialEq)]
struct Echo {
    ok: bool,
    input: Value,
}

#[tokio::test]
async fn execute_returns_the_typed_output_with_an_idempotency_key() {
    let mock = MockServer::start().await.unwrap();
    let genesys = client(&mock);
    let out: Echo = genesys
        .data_actions()
        .execute("lookup", &json!({"customerId": "42"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        Echo {
            ok: true,
            input: json!({"customerId": "42"})
        }
    );
    assert_eq!(mock.idempotency_keys(EXECUTE).len(), 1);
}

#[tokio::test]
async fn a_remote_5xx_inside_a_400_is_retried_with_the_same_key() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(503), 2);
    let out: Value = client(&mock)
        .data_actions()
        .execute("lookup", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(out["input"]["n"], 1);
    let keys = mock.idempotency_keys(EXECUTE);
    assert_eq!(keys.len(), 3, "two failures, one success");
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(mock.counters().duplicate_idempotency_keys, 0);
}

#[tokio::test]
async fn a_remote_4xx_and_an_authentication_failure_are_final() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(404), 1);
    let err = failed_lookup(&client(&mock).data_actions()).await;
    let e = genesys_error(&err);
    assert_eq!(e.remote_status().map(|s| s.as_u16()), Some(404));
    assert_eq!(mock.counters().requests[EXECUTE], 1);

    mock.fault(
        Some(EXECUTE),
        Fault::DataActionError("ACTION.AUTHENTICATION".into()),
        1,
    );
    let err = failed_lookup(&client(&mock).data_actions()).await;
    let e = genesys_error(&err);
    assert_eq!(e.status().as_u16(), 400);
    assert_eq!(e.code(), Some("bad.request"));
    assert_eq!(e.context_id(), Some("mock-context"));
    assert_eq!(
        e.detail_codes().collect::<Vec<_>>(),
        ["ACTION.AUTHENTICATION"]
    );
    assert_eq!(mock.counters().requests[EXECUTE], 2, "no retry");
}

#[tokio::test]
async fn a_failure_after_retries_is_dead_lettered_and_replays_with_its_key() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(502), 3);
    let (genesys, letters) = with_letters(client(&mock));
    let err = genesys
        .data_actions()
        .execute::<_, Value>("lookup", &json!({"order": 9}))
        .await
        .unwrap_err();
    assert_eq!(genesys_error(&err).remote_status().unwrap().as_u16(), 502);
    let mut taken = letters.take();
    let letter = taken.pop().expect("one dead letter");
    assert!(taken.is_empty());
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_status, Some(400));
    assert_eq!(letter.error_code, "ACTION.REMOTE_ENDPOINT");
    let request = letter.request.expect("a replayable request");
    assert!(!request.headers().contains_key("authorization"));
    let key = request.headers()[IDEMPOTENCY_KEY]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(letter.correlation_id, key);
    let body: Value = serde_json::from_slice(request.body().as_bytes().unwrap()).unwrap();
    assert_eq!(body, json!({"order": 9}));

    // later, the remote endpoint is back: re-run it
    let out: Value = genesys.data_actions().replay(request).await.unwrap();
    assert_eq!(out["input"]["order"], 9);
    let keys = mock.idempotency_keys(EXECUTE);
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|k| *k == key));
    assert!(letters.is_empty());
}

#[tokio::test]
async fn replay_refuses_a_request_for_another_host() {
    let mock = MockServer::start().await.unwrap();
    let request =
        http::Request::post("https://elsewhere.example/api/v2/integrations/actions/a/execute")
            .body(tower_cx::body::Body::from("{}"))
            .unwrap();
    let err = client(&mock)
        .data_actions()
        .replay::<Value>(request)
        .await
        .unwrap_err();
    assert!(err.is::<tower_cx::vendor::InvalidUrl>(), "{err}");
    assert_eq!(mock.counters().total_requests, 0);
}

#[tokio::test]
async fn a_business_error_in_a_200_follows_the_retry_rules() {
    let mock = MockServer::start().await.unwrap();
    // final by default: one attempt, typed, with the output kept
    mock.fault(Some(EXECUTE), Fault::BusinessError200, 1);
    let (genesys, letters) =
        with_letters(client(&mock).business_rule(BusinessRule::success_flag()));
    let err = failed_lookup(&genesys.data_actions()).await;
    let e = genesys_error(&err);
    assert!(e.is_business());
    assert_eq!(e.code(), Some("business.error"));
    assert_eq!(e.message(), "mock business error");
    assert_eq!(e.output().unwrap()["success"], false);
    assert_eq!(mock.counters().requests[EXECUTE], 1);
    assert_eq!(letters.len(), 1);

    // made retryable by configuration: the next attempt succeeds
    mock.fault(Some(EXECUTE), Fault::BusinessError200, 1);
    let genesys = genesys.retry_rules(RetryRules::genesys().business(Rule::Retry));
    let out: Value = genesys
        .data_actions()
        .execute("lookup", &json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(out["input"]["x"], 1);
    assert_eq!(mock.counters().requests[EXECUTE], 3);
}

#[tokio::test]
async fn the_test_endpoint_reports_each_step() {
    let mock = MockServer::start().await.unwrap();
    let actions = client(&mock).data_actions();
    let report = actions.test("lookup", &json!({"id": 3})).await.unwrap();
    assert!(report.success);
    assert_eq!(report.operations.len(), 3);
    assert_eq!(report.final_result.as_ref().unwrap()["input"]["id"], 3);
    assert!(report.error().is_none());

    let report = actions.test("fail-lookup", &json!({})).await.unwrap();
    assert!(!report.success);
    let error = report.error().unwrap();
    assert_eq!(
        error.detail_codes().collect::<Vec<_>>(),
        ["ACTION.REMOTE_ENDPOINT"]
    );
    assert_eq!(error.remote_status().unwrap().as_u16(), 503);
}

#[tokio::test]
async fn error_shapes_are_typed() {
    let mock = MockServer::start().await.unwrap();
    // nothing retries, so the client sees each shape
    let genesys = GenesysClient::new(stack(&mock, 1), &mock.genesys_region())
        .retry(RetryLayer::new().max_attempts(1));
    let actions = genesys.data_actions();

    mock.fault(
        Some(EXECUTE),
        Fault::Body(502, "<html>Bad Gateway</html>".into()),
        1,
    );
    let err = failed_lookup(&actions).await;
    let e = genesys_error(&err);
    assert_eq!(
        (e.status().as_u16(), e.message()),
        (502, "<html>Bad Gateway</html>")
    );
    // a 502 to an action not declared idempotent: it may have run
    let unknown = tower_cx::error::OutcomeUnknown::find(err.as_ref()).expect("unknown outcome");
    assert_eq!(unknown.attempt(), 1);

    mock.fault(
        Some(EXECUTE),
        Fault::Body(
            400,
            json!({"message":"outer","code":"bad.request","status":400,
                "errors":[{"message":"inner","code":"inner.code","status":422,
                    "errors":[{"errorCode":"DEEPEST","status":500}]}]})
            .to_string(),
        ),
        1,
    );
    let err = failed_lookup(&actions).await;
    let e = genesys_error(&err);
    assert_eq!(
        e.codes().collect::<Vec<_>>(),
        ["bad.request", "inner.code", "DEEPEST"]
    );
    assert_eq!(e.errors()[0].errors()[0].status().as_u16(), 500);

    // a 200 that is not JSON
    mock.fault(Some(EXECUTE), Fault::Body(200, "not json".into()), 1);
    let err = failed_lookup(&actions).await;
    let e = err
        .downcast_ref::<tower_cx::vendor::UnexpectedBody>()
        .unwrap();
    assert_eq!(e.snippet(), "not json");
    assert!(e.source().is_some());

    // last: the 429 closes the stack's rate gate for 5 s
    mock.fault(Some(EXECUTE), Fault::RetryAfterSecs(5), 1);
    let err = failed_lookup(&actions).await;
    let e = genesys_error(&err);
    assert_eq!(e.status().as_u16(), 429);
    assert_eq!(e.code(), Some("too.many.requests.retry.after"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
}

#[tokio::test]
async fn bodies_over_the_limits_are_typed_errors() {
    let mock = MockServer::start().await.unwrap();
    let genesys = client(&mock).limits(BodyLimits {
        results: 1024,
        errors: 256,
    });
    let big = json!({"blob": "x".repeat(2000)}).to_string();
    mock.fault(Some(EXECUTE), Fault::Body(200, big.clone()), 1);
    let err = failed_lookup(&genesys.data_actions()).await;
    let e = err.downcast_ref::<BodyTooLarge>().expect("BodyTooLarge");
    assert_eq!((e.limit(), e.status().as_u16()), (1024, 200));

    mock.fault(Some(EXECUTE), Fault::Body(400, big), 1);
    let err = failed_lookup(&genesys.data_actions()).await;
    assert_eq!(err.downcast_ref::<BodyTooLarge>().unwrap().limit(), 256);
}

#[tokio::test]
async fn a_bad_action_id_is_refused_before_sending() {
    let mock = MockServer::start().await.unwrap();
    for id in ["", "../users", "a/b", "a?b"] {
        let err = client(&mock)
            .data_actions()
            .execute::<_, Value>(id, &json!({}))
            .await
            .unwrap_err();
        assert!(err.is::<InvalidArgument>(), "{id}: {err}");
    }
    assert_eq!(mock.counters().total_requests, 0);
}

#[tokio::test]
async fn entity_listings_stream_every_page_to_the_end() {
    let mock = MockServer::start().await.unwrap();
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
    let pages: Vec<_> = client(&mock)
        .list::<Value>("/api/v2/users?pageSize=100")
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages
            .iter()
            .map(|p| p.page_number.unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(pages.iter().map(|p| p.entities.len()).sum::<usize>(), 250);
    assert_eq!(pages[2].entities[49]["id"], "user-249");
    assert!(pages[2].next_uri.is_none());
    assert_eq!(mock.counters().requests["/api/v2/users"], 4);
}

/// A Genesys API that answers each path and query in `pages` with its JSON,
/// and counts the requests.
fn pages_api(
    pages: &'static [(&'static str, &'static str)],
) -> (
    GenesysClient<impl tower_cx::vendor::Transport>,
    Arc<AtomicUsize>,
) {
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let transport = tower::service_fn(move |req: http::Request<Body>| {
        count.fetch_add(1, Ordering::SeqCst);
        let target = req.uri().path_and_query().unwrap().as_str().to_owned();
        let body = pages
            .iter()
            .find(|(at, _)| *at == target)
            .unwrap_or_else(|| panic!("no page at {target}"))
            .1;
        async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(body.as_bytes()),
            )))
        }
    });
    let client = GenesysClient::with_base_url(transport, "https://api.example.com");
    (client, requests)
}

#[tokio::test]
async fn a_listing_whose_next_uri_returns_to_a_page_already_read_ends_with_an_error() {
    let (genesys, requests) = pages_api(&[
        ("/api/v2/a", r#"{"entities":[1],"nextUri":"/api/v2/b"}"#),
        ("/api/v2/b", r#"{"entities":[2],"nextUri":"/api/v2/a"}"#),
    ]);
    let pages: Vec<Result<EntityPage<u32>, BoxError>> = genesys.list("/api/v2/a").collect().await;
    assert_eq!(pages.len(), 3, "two pages, then the error: {pages:?}");
    let err = pages[2].as_ref().unwrap_err();
    assert!(err.is::<tower_cx::vendor::InvalidUrl>(), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn analytics_results_end_at_an_empty_cursor_and_refuse_a_cursor_seen_before() {
    let (genesys, _) = pages_api(&[
        (
            "/api/v2/analytics/conversations/details/jobs/j1/results",
            r#"{"conversations":[{}],"cursor":"c1"}"#,
        ),
        (
            "/api/v2/analytics/conversations/details/jobs/j1/results?cursor=c1",
            r#"{"conversations":[{}],"cursor":""}"#,
        ),
        (
            "/api/v2/analytics/conversations/details/jobs/j2/results",
            r#"{"conversations":[],"cursor":"c1"}"#,
        ),
        (
            "/api/v2/analytics/conversations/details/jobs/j2/results?cursor=c1",
            r#"{"conversations":[],"cursor":"c2"}"#,
        ),
        (
            "/api/v2/analytics/conversations/details/jobs/j2/results?cursor=c2",
            r#"{"conversations":[],"cursor":"c1"}"#,
        ),
    ]);
    let pages: Vec<_> = genesys
        .analytics()
        .results("j1")
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1].cursor, None, "an empty cursor is the last page");
    let pages: Vec<_> = genesys.analytics().results("j2").collect().await;
    assert_eq!(pages.len(), 4, "three pages, then the error");
    let err = pages[3].as_ref().unwrap_err();
    assert!(err.is::<tower_cx::vendor::UnexpectedBody>(), "{err}");
}

#[tokio::test]
async fn a_listing_error_ends_the_stream_with_a_typed_error() {
    let mock = MockServer::start().await.unwrap();
    let genesys = GenesysClient::new(stack(&mock, 1), &mock.genesys_region());
    mock.fault(Some("/api/v2/users"), Fault::Status(403), 1);
    let mut pages = Box::pin(genesys.list::<Value>("/api/v2/users"));
    let err = pages.try_next().await.unwrap_err();
    assert_eq!(genesys_error(&err).status().as_u16(), 403);
    // an answer from the API carries the platform's correlation id
    let mut pages = Box::pin(genesys.list::<Value>("/api/v2/no-such-thing"));
    let err = pages.try_next().await.unwrap_err();
    let e = genesys_error(&err);
    assert_eq!((e.status().as_u16(), e.code()), (404, Some("not.found")));
    assert!(e.correlation_id().unwrap().starts_with("mock-corr-"));
}

#[tokio::test]
async fn one_dead_letter_per_failed_action_when_the_audit_layer_shares_the_sink() {
    let mock = MockServer::start().await.unwrap();
    let letters = Letters::new();
    let stack = vendor_stacks::genesys(&mock)
        .retry(fast().max_attempts(1))
        .audit(
            tower_cx::audit::AuditLayer::new(tower_cx::audit::NoopSink)
                .dead_letters(letters.dead_letters()),
        )
        .build();
    let genesys = GenesysClient::new(stack, &mock.genesys_region())
        .retry(fast().max_attempts(3))
        .idempotent_action("lookup")
        .dead_letters(letters.dead_letters());
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(503), 3);
    failed_lookup(&genesys.data_actions()).await;
    let action_letters = letters.take();
    assert_eq!(action_letters.len(), 1, "the client's, not one per attempt");
    assert_eq!(action_letters[0].error_code, "ACTION.REMOTE_ENDPOINT");
    assert_eq!(action_letters[0].attempts, 3);
    // a listing is not the client's to dead-letter: the audit layer does
    mock.fault(Some("/api/v2/users"), Fault::Status(500), 1);
    let mut pages = Box::pin(genesys.list::<Value>("/api/v2/users"));
    pages.try_next().await.unwrap_err();
    let listing_letters = letters.take();
    assert_eq!(listing_letters.len(), 1);
    assert_eq!(listing_letters[0].last_status, Some(500));
}

#[tokio::test]
async fn a_listing_without_next_uri_follows_page_number_up_to_page_count() {
    let mock = MockServer::start().await.unwrap();
    // the first page names no nextUri: the client asks for pageNumber=2
    mock.fault(
        Some("/api/v2/users"),
        Fault::Body(
            200,
            json!({"entities": [{"id": "first"}], "pageNumber": 1, "pageSize": 100, "pageCount": 3})
                .to_string(),
        ),
        1,
    );
    let pages: Vec<_> = client(&mock)
        .list::<Value>("/api/v2/users?pageSize=100")
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].entities[0]["id"], "first");
    assert_eq!(pages[1].page_number, Some(2));
    assert_eq!(pages[1].entities[0]["id"], "user-100");
    assert_eq!(pages[1].page_size, Some(100), "pageSize kept");
}

// ---- idempotency declarations and the data-action error shapes ----

/// A transport that answers `{}` and records whether each request was
/// declared idempotent.
type Declarations = EventCapture<(String, Option<RetryOverride>)>;

fn recording() -> (impl tower_cx::vendor::Transport, Declarations) {
    let seen = Declarations::new();
    let log = seen.clone();
    let transport = tower::service_fn(move |req: http::Request<tower_cx::body::Body>| {
        log.push((
            req.uri().path().to_owned(),
            req.extensions().get::<RetryOverride>().cloned(),
        ));
        let body = if req.uri().path().ends_with("/jobs") {
            r#"{"jobId":"job-1"}"#
        } else {
            "{}"
        };
        async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body),
            )))
        }
    });
    (transport, seen)
}

#[tokio::test]
async fn data_actions_are_idempotent_only_when_declared_per_action_or_per_call() {
    let (transport, seen) = recording();
    let genesys = GenesysClient::with_base_url(transport, "https://api.mypurecloud.ie")
        .idempotent_action("lookup");
    let actions = genesys.data_actions();
    let _: Value = actions.execute("lookup", &json!({})).await.unwrap();
    let _: Value = actions.execute("create-ticket", &json!({})).await.unwrap();
    let _: Value = actions
        .clone()
        .idempotent(true)
        .execute("create-ticket", &json!({}))
        .await
        .unwrap();
    let _: Value = actions
        .idempotent(false)
        .execute("lookup", &json!({}))
        .await
        .unwrap();
    genesys.analytics().submit(&json!({})).await.unwrap();
    let declared = RetryOverride::new().idempotent(true);
    let seen = seen.all();
    let got: Vec<_> = seen
        .iter()
        .map(|(path, o)| (path.rsplit('/').nth(1).unwrap().to_owned(), o.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("lookup".to_owned(), Some(declared.clone())),
            ("create-ticket".to_owned(), None),
            ("create-ticket".to_owned(), Some(declared)),
            ("lookup".to_owned(), None),
            ("details".to_owned(), None),
        ],
        "per action, per call (both ways), never an analytics job"
    );
    assert!(genesys.is_idempotent_action("lookup"));
    assert!(!genesys.is_idempotent_action("create-ticket"));
}

#[tokio::test]
async fn a_remote_status_inside_an_outer_500_is_read_from_the_message() {
    let mock = MockServer::start().await.unwrap();
    // one attempt in the stack: the client's own rules decide
    let genesys = client_over(&mock, 1);
    mock.fault(Some(EXECUTE), Fault::RemoteEndpointInternal(404), 1);
    let err = failed_lookup(&genesys.data_actions()).await;
    let e = genesys_error(&err);
    assert_eq!(e.status().as_u16(), 500);
    assert_eq!(e.code(), Some("internal.server.error"));
    assert_eq!(e.remote_status().map(|s| s.as_u16()), Some(404));
    assert!(!e.remote_failed());
    assert_eq!(
        mock.counters().requests[EXECUTE],
        1,
        "a remote 404 is final"
    );

    mock.fault(Some(EXECUTE), Fault::RemoteEndpointInternal(503), 1);
    let out: Echo = genesys
        .data_actions()
        .execute("lookup", &json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(out.input["n"], 2);
    assert_eq!(
        mock.counters().requests[EXECUTE],
        3,
        "a remote 503 is retried once"
    );
}

#[tokio::test]
async fn a_remote_status_inside_an_outer_400_is_the_nested_status() {
    let mock = MockServer::start().await.unwrap();
    let genesys = client_over(&mock, 1);
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(429), 1);
    let _: Echo = genesys
        .data_actions()
        .execute("lookup", &json!({}))
        .await
        .unwrap();
    assert_eq!(mock.counters().requests[EXECUTE], 2);
    mock.fault(Some(EXECUTE), Fault::RemoteEndpoint(403), 1);
    let err = failed_lookup(&genesys.data_actions()).await;
    assert_eq!(
        genesys_error(&err).remote_status().map(|s| s.as_u16()),
        Some(403)
    );
    assert_eq!(mock.counters().requests[EXECUTE], 3);
}

// ---- the Genesys preset: long waits, learned pacing ----

fn preset(mock: &MockServer) -> Stack {
    vendor_stacks::genesys(mock)
}

async fn get_users(client: &CxService, mock: &MockServer) -> http::StatusCode {
    let request = http::Request::get(format!("{}/api/v2/users", mock.base_url()))
        .body(tower_cx::body::Body::empty())
        .unwrap();
    tower::ServiceExt::oneshot(client.clone(), request)
        .await
        .unwrap()
        .status()
}

#[tokio::test(start_paused = true)]
async fn the_genesys_preset_waits_out_retry_after_of_60_and_45_s() {
    let mock = MockServer::start().await.unwrap();
    let client = preset(&mock).build();
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(60), 1);
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(45), 1);
    let started = tokio::time::Instant::now();
    assert_eq!(get_users(&client, &mock).await, http::StatusCode::OK);
    let waited = started.elapsed();
    // each hint is honoured exactly, then spread by at most 1 s of jitter
    assert!(
        waited >= Duration::from_secs(105) && waited <= Duration::from_secs(107),
        "{waited:?}"
    );
    assert_eq!(mock.counters().requests["/api/v2/users"], 3);
    assert_eq!(mock.counters().retry_after_violations, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hint_over_180_s_stays_final_and_the_deadline_is_configurable() {
    let mock = MockServer::start().await.unwrap();
    let client = preset(&mock).build();
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(181), 1);
    let started = tokio::time::Instant::now();
    assert_eq!(
        get_users(&client, &mock).await,
        http::StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "no pointless sleep");
    assert_eq!(mock.counters().requests["/api/v2/users"], 1);

    // a 30 s deadline cannot wait out a 60 s hint: the 429 comes back at once
    let short = preset(&mock)
        .retry(Stack::genesys_retry().deadline(Duration::from_secs(30)))
        .build();
    mock.fault(Some("/api/v2/users"), Fault::RetryAfterSecs(60), 1);
    let started = tokio::time::Instant::now();
    assert_eq!(
        get_users(&short, &mock).await,
        http::StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(tower_cx::stack::GENESYS_DEADLINE, Duration::from_secs(150));
}

#[tokio::test(start_paused = true)]
async fn the_genesys_preset_paces_to_the_advertised_limit() {
    // an organisation whose tokens get 5 requests a minute, not 300
    let mock = vendor_stacks::mock_with(|c| {
        c.rate_limit = 5;
        c.in_flight_grace = Duration::ZERO;
    })
    .await;
    let stack = preset(&mock);
    let limiter = stack.handles().limiter;
    assert_eq!(limiter.pacing_interval(), Some(Duration::from_millis(200)));
    let client = stack.build();
    let started = tokio::time::Instant::now();
    let mut sent = Vec::new();
    for _ in 0..6 {
        assert_eq!(get_users(&client, &mock).await, http::StatusCode::OK);
        sent.push(started.elapsed());
        if sent.len() == 1 {
            // 4 left of 5 for the 60 s left: one every 15 s
            let pacing = limiter.pacing();
            assert_eq!(pacing.interval, Some(Duration::from_secs(15)));
            assert_eq!(
                pacing.source,
                PacingSource::Advertised(QuotaSource::Genesys)
            );
        }
    }
    // 0, 0.2 (paced at the initial 300 a minute before the first answer),
    // then the remaining quota spread over the time left in the window
    // (3 left for 60 s: 20 s, 2 for 45 s, 1 for 25 s); the fifth answer
    // said none left, and the sixth goes one steady interval (60 s / 5)
    // after the fifth, in the next window
    let secs = Duration::from_secs_f64;
    assert_eq!(
        sent,
        [0.0, 0.2, 15.2, 35.2, 57.7, 69.7].map(secs),
        "5 per the 60 s window the headers imply"
    );
    assert_eq!(limiter.pacing_interval(), Some(Duration::from_secs(15)));
    let counters = mock.counters();
    assert_eq!(counters.requests["/api/v2/users"], 6, "no 429, no retry");
    assert_eq!(counters.retry_after_violations, 0);
}

/// The side-effect rule through the typed client: an action not declared
/// idempotent, applied by the API and then answered 500, is sent once, ends
/// in `OutcomeUnknown`, and is dead-lettered with that reason.
#[tokio::test]
async fn an_action_applied_then_answered_500_is_sent_once_and_dead_lettered_as_unknown() {
    let mock = MockServer::start().await.unwrap();
    let (genesys, letters) = with_letters(
        GenesysClient::new(stack(&mock, 4), &mock.genesys_region()).retry(fast().max_attempts(3)),
    );
    mock.fault(
        Some("/api/v2/integrations/actions/create-case/execute"),
        Fault::ApplyThenStatus(500),
        1,
    );
    let err = genesys
        .data_actions()
        .execute::<_, Value>("create-case", &json!({"requestId": "case-1"}))
        .await
        .unwrap_err();
    let unknown = tower_cx::error::OutcomeUnknown::find(err.as_ref()).expect("typed");
    assert_eq!(unknown.attempt(), 1);
    assert_eq!(genesys_error(&err).status().as_u16(), 500);
    assert_eq!(mock.applied("case-1"), 1, "applied once, never sent again");
    assert_eq!(mock.duplicate_applications(), 0);
    let letters = letters.take();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error_code, "outcome_unknown");
    assert_eq!(letters[0].last_status, Some(500));
    assert_eq!(letters[0].attempts, 1);

    // the same action declared idempotent for this call is retried
    mock.fault(
        Some("/api/v2/integrations/actions/create-case/execute"),
        Fault::Status(500),
        1,
    );
    let out: Value = genesys
        .data_actions()
        .idempotent(true)
        .execute("create-case", &json!({"requestId": "case-2"}))
        .await
        .unwrap();
    assert!(out.is_object());
    assert_eq!(mock.applied("case-2"), 1);
}

/// The issue's gateway experiment, in process: an upstream allowing 40
/// requests per 2 s and advertising it the Genesys way, 16 in flight, 200
/// requests at once. Learning paces from the first answer on: no request
/// is refused; without it, the limit is found by 429s.
#[tokio::test(start_paused = true)]
async fn learned_pacing_meets_no_429_where_the_unpaced_limiter_meets_many() {
    let mut attempts = Vec::new();
    for learn in [true, false] {
        let mock = vendor_stacks::mock_with(|c| {
            c.rate_limit = 40;
            c.rate_window = Duration::from_secs(2);
        })
        .await;
        let limiter = PriorityLimitLayer::new(16);
        let limiter = if learn { limiter.learn_rate() } else { limiter };
        let client = preset(&mock).limiter(limiter).build();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (client, url) = (client.clone(), format!("{}/api/v2/users", mock.base_url()));
                tokio::spawn(async move {
                    let request = http::Request::get(url)
                        .body(tower_cx::body::Body::empty())
                        .unwrap();
                    tower::ServiceExt::oneshot(client, request)
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), http::StatusCode::OK);
        }
        let counters = mock.counters();
        assert_eq!(counters.retry_after_violations, 0);
        attempts.push(counters.requests["/api/v2/users"]);
    }
    println!("{attempts:?}");
    assert_eq!(attempts[0], 200, "learned: every request sent once");
    assert!(attempts[1] > 200, "unpaced: {} attempts", attempts[1]);
}

/// Every typed call over the stack's `CxService` is a `Send` future: it can
/// be spawned, or awaited in an axum handler, with no generic helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_over_the_stack_can_be_spawned() {
    let mock = MockServer::start().await.unwrap();
    // jobs done at their first read, polled 10 ms apart (a real clock here)
    mock.script_genesys_job(JobScript::new([("FULFILLED", "")]));
    let genesys = client(&mock).job_runner(
        JobRunner::new().backoff(Backoff::constant(Duration::from_millis(10)).jitter(Jitter::None)),
    );
    let service = stack(&mock, 1);
    let users_url = format!("{}/api/v2/users", genesys.base_url());
    let spawned = tokio::spawn(async move {
        let request = http::Request::get(users_url).body(Body::empty())?;
        let response = tower::ServiceExt::oneshot(service, request).await?;
        let body = read_limited(response, 1 << 20).await?;
        assert!(body.starts_with(b"{"));
        let actions = genesys.data_actions();
        let out: Echo = actions.execute("lookup", &json!({"n": 1})).await?;
        assert_eq!(out.input, json!({"n": 1}));
        let report = actions.test("lookup", &json!({"n": 2})).await?;
        assert!(report.error().is_none());
        let jobs = genesys.analytics();
        let job_id = jobs.submit(&json!({})).await?;
        jobs.observe(&job_id).await?;
        jobs.wait(&job_id).await?;
        let job_id = jobs.run(&json!({})).await?;
        let pages: Vec<_> = jobs.results(&job_id).try_collect().await?;
        let elsewhere = || http::Request::post("https://elsewhere.example/x").body(Body::empty());
        actions.replay::<Value>(elsewhere()?).await.unwrap_err();
        jobs.replay(elsewhere()?).await.unwrap_err();
        let users: Vec<EntityPage<Value>> = genesys.list("/api/v2/users").try_collect().await?;
        let users = users.iter().map(|page| page.entities.len()).sum::<usize>();
        Ok::<_, BoxError>((pages.len(), users))
    });
    let (pages, users) = spawned.await.unwrap().unwrap();
    assert_eq!((pages, users), (2, 250));
}
