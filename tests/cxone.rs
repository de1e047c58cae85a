//! The typed NICE CXone client against the embedded mock: discovery,
//! data-extraction jobs in every state with downloads and re-runs,
//! completed contacts, errors.
#![cfg(feature = "mock")]

#[path = "support/events.rs"]
mod events;
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{json, Value};
use tower_cx::audit::DeadLetter;
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::cxone::{
    discover, discover_from_token, CxoneApi, CxoneClient, CxoneError, Issuer, NotRerunnable,
    RerunRefusal, ResultExpired,
};
use tower_cx::error::BoxError;
use tower_cx::error::InsecureUrl;
use tower_cx::jobs::{JobFailed, JobRunner, JobState};
use tower_cx::mock::{Fault, JobScript, MockConfig, MockServer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::{CxService, Stack};

use events::EventCapture;

const JOBS: &str = "/data-extraction/v1/jobs";
const CONTACTS: &str = "/incontactapi/services/v31.0/contacts/completed";

fn stack(mock: &MockServer, attempts: u32) -> CxService {
    vendor_stacks::cxone(mock)
        .retry(
            RetryLayer::new()
                .max_attempts(attempts)
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .auto_idempotency_key(true),
        )
        .build()
}

type Letters = EventCapture<DeadLetter>;

fn client(mock: &MockServer) -> (CxoneClient<CxService>, Letters) {
    let letters = Letters::new();
    let client = CxoneClient::new(stack(mock, 4), &mock.base_url())
        .job_runner(vendor_stacks::exact_job_runner())
        .dead_letters(letters.dead_letters());
    (client, letters)
}

#[tokio::test]
async fn discovery_finds_the_area_api_endpoint_and_token_endpoint() {
    let mock = MockServer::start().await.unwrap();
    let tenant = discover(&Stack::new().build(), &mock.base_url(), "tenant-1")
        .await
        .unwrap();
    assert_eq!(tenant.area, "na1");
    assert_eq!(tenant.api_endpoint, mock.base_url());
    assert_eq!(tenant.token_endpoint, mock.cxone_token_url());
    let err = discover(&Stack::new().build(), &mock.base_url(), "a/b")
        .await
        .unwrap_err();
    assert!(err.is::<tower_cx::vendor::InvalidArgument>());
}

#[tokio::test]
async fn discovery_refuses_a_plain_http_api_endpoint_off_loopback() {
    // a discovery server (a custom one here) that points to plain HTTP
    let server = tower::service_fn(|req: http::Request<tower_cx::body::Body>| async move {
        let body = if req.uri().path().ends_with("openid-configuration") {
            json!({"token_endpoint": "https://login.example/auth/token"})
        } else {
            json!({"area": "na1", "api_endpoint": "http://api.example"})
        };
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body.to_string()),
        )))
    });
    let err = discover(&server, "https://cxone.example", "t")
        .await
        .unwrap_err();
    assert!(err.is::<InsecureUrl>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_and_its_result_is_downloaded_without_the_token() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    let extraction = cxone.data_extraction();
    let job = extraction
        .submit(&json!({"entityName": "contacts"}))
        .await
        .unwrap();
    assert!(job.id().starts_with("dx-"));
    let started = tokio::time::Instant::now();
    let done = extraction.wait(&job).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(14),
        "RUNNING, RUNNING, SUCCEEDED"
    );
    let csv = extraction.download(&done).await.unwrap();
    let text = std::str::from_utf8(&csv).unwrap();
    assert!(text.starts_with("contactId,agentId,skill\n"));
    assert_eq!(text.lines().count(), 6);
    assert_eq!(mock.counters().credentials_sent_to_files, 0);
}

#[tokio::test(start_paused = true)]
async fn an_expired_result_url_is_replaced_once_then_reported() {
    let mock = vendor_stacks::mock_with(|c| c.result_url_ttl = Duration::from_secs(5)).await;
    let (cxone, _) = client(&mock);
    let extraction = cxone.data_extraction();
    let job = extraction.submit(&json!({})).await.unwrap();
    let done = extraction.wait(&job).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // expired: the client reads the job again for a fresh URL
    let csv = extraction.download(&done).await.unwrap();
    assert!(!csv.is_empty());

    let mock = vendor_stacks::mock_with(|c| c.result_url_ttl = Duration::ZERO).await;
    let (cxone, _) = client(&mock);
    let extraction = cxone.data_extraction();
    let job = extraction.submit(&json!({})).await.unwrap();
    let done = extraction.wait(&job).await.unwrap();
    let err = extraction.download(&done).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<ResultExpired>().unwrap().job_id(),
        job.id()
    );
}

#[tokio::test(start_paused = true)]
async fn every_terminal_state_is_typed() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, letters) = client(&mock);
    let extraction = cxone.data_extraction();
    for (state, message, expected) in [
        ("FAILED", "quota exceeded", JobState::Failed),
        ("CANCELLED", "", JobState::Cancelled),
        ("EXPIRED", "", JobState::Expired),
    ] {
        mock.script_cxone_job(JobScript::new([("RUNNING", ""), (state, message)]));
        let job = extraction.submit(&json!({"state": state})).await.unwrap();
        let err = extraction.wait(&job).await.unwrap_err();
        let failed = err.downcast_ref::<JobFailed>().unwrap();
        assert_eq!((failed.state(), failed.vendor_state()), (expected, state));
        assert_eq!(failed.message(), (!message.is_empty()).then_some(message));
    }
    // each failed job was dead-lettered with its submission
    let letters = letters.take();
    assert_eq!(letters.len(), 3);
    let body: Value = serde_json::from_slice(
        letters[1]
            .request
            .as_ref()
            .unwrap()
            .body()
            .as_bytes()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body, json!({"state": "CANCELLED"}));
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_rerun_with_one_key_across_attempts() {
    // an origin that honours keys (CXone does not): the re-run's retry is
    // safe because its key is stable
    let mock = MockServer::start_with(MockConfig::default().honour_idempotency_keys(true))
        .await
        .unwrap();
    let origin = tower_cx::origin::Origin::parse(&mock.base_url()).unwrap();
    let stack = vendor_stacks::cxone(&mock)
        .retry(
            RetryLayer::new()
                .max_attempts(4)
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .idempotency_keys_honoured_by(origin),
        )
        .build();
    let letters = Letters::new();
    let cxone = CxoneClient::new(stack, &mock.base_url())
        .job_runner(vendor_stacks::exact_job_runner())
        .dead_letters(letters.dead_letters());
    let extraction = cxone.data_extraction();
    mock.script_cxone_job(JobScript::new([("RUNNING", ""), ("FAILED", "worker lost")]));
    let job = extraction
        .submit(&json!({"entityName": "agents"}))
        .await
        .unwrap();
    let err = extraction.wait(&job).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<JobFailed>().unwrap().message(),
        Some("worker lost")
    );
    assert_eq!(letters.len(), 1);

    // the re-run is applied, then its answer is lost in a 502: the stack
    // retries it with the same key and gets the first answer back
    mock.fault_on(http::Method::POST, JOBS, Fault::ApplyThenStatus(502), 1);
    let again = extraction.rerun(&job).await.unwrap();
    assert_ne!(again.id(), job.id());
    assert_eq!(again.reruns(), 1);
    let expected_key = format!("{}.rerun.1", job.idempotency_key());
    assert_eq!(again.idempotency_key(), expected_key);
    let keys = mock.idempotency_keys(JOBS);
    assert_eq!(
        keys,
        [
            job.idempotency_key().to_owned(),
            expected_key.clone(),
            expected_key
        ]
    );
    assert_eq!(mock.counters().duplicate_idempotency_keys, 0);
    assert_eq!(
        mock.duplicate_applications(),
        0,
        "a re-run of a job read as failed is not a duplicate"
    );
    assert_eq!(mock.counters().replayed_by_key, 1);
    assert_eq!(mock.counters().extraction_limit_violations, 0);
    let done = extraction.wait(&again).await.unwrap();
    assert!(!extraction.download(&done).await.unwrap().is_empty());

    // a succeeded job is not re-run
    let err = extraction.rerun(&again).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<NotRerunnable>().unwrap().reason(),
        RerunRefusal::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_that_cannot_be_rerun_say_why() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    let extraction = cxone.data_extraction();
    let reason =
        |err: tower_cx::error::BoxError| err.downcast_ref::<NotRerunnable>().unwrap().reason();

    mock.script_cxone_job(JobScript::new([("CANCELLED", "")]));
    let job = extraction.submit(&json!({})).await.unwrap();
    assert_eq!(
        reason(extraction.rerun(&job).await.unwrap_err()),
        RerunRefusal::Cancelled
    );

    mock.script_cxone_job(JobScript::new([("RUNNING", "")]));
    let job = extraction.submit(&json!({})).await.unwrap();
    assert_eq!(
        reason(extraction.rerun(&job).await.unwrap_err()),
        RerunRefusal::NotFinished
    );

    // failing again and again: at most one re-run with max_reruns(1)
    let extraction = cxone.clone().max_reruns(1).data_extraction();
    mock.script_cxone_job(JobScript::new([("FAILED", "x")]));
    mock.script_cxone_job(JobScript::new([("EXPIRED", "")]));
    let job = extraction.submit(&json!({})).await.unwrap();
    let again = extraction.rerun(&job).await.unwrap();
    let err = extraction.rerun(&again).await.unwrap_err();
    assert_eq!(reason(err), RerunRefusal::TooManyReruns);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_resubmits_with_its_key() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, letters) = client(&mock);
    let extraction = cxone.data_extraction();
    mock.script_cxone_job(JobScript::new([("FAILED", "boom")]));
    let job = extraction.submit(&json!({"n": 1})).await.unwrap();
    extraction.wait(&job).await.unwrap_err();
    let letter = letters.take().pop().unwrap();
    let replayed = extraction.replay(letter.request.unwrap()).await.unwrap();
    assert_eq!(replayed.idempotency_key(), job.idempotency_key());
    extraction.wait(&replayed).await.unwrap();
}

#[tokio::test]
async fn completed_contacts_page_until_204() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    let pages: Vec<_> = cxone
        .completed_contacts(&[("top", "50"), ("startDate", "2026-11-01T00:00:00Z")])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        pages
            .iter()
            .map(|p| p.completed_contacts.len())
            .collect::<Vec<_>>(),
        [50, 50, 20]
    );
    assert_eq!(pages[2].completed_contacts[19]["contactId"], 119);
    assert_eq!(pages[0].total_records, Some(120));
    // three pages and the 204 that ends them
    assert_eq!(mock.counters().requests[CONTACTS], 4);
}

#[tokio::test]
async fn errors_come_from_the_body_or_the_ic_status_description_header() {
    let mock = MockServer::start().await.unwrap();
    let cxone = CxoneClient::new(stack(&mock, 1), &mock.base_url());
    mock.fault(
        Some(CONTACTS),
        Fault::IcStatus(400, "Invalid startDate".into()),
        1,
    );
    let err = cxone
        .completed_contacts(&[])
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let e = err.downcast_ref::<CxoneError>().unwrap();
    assert_eq!(e.status().as_u16(), 400);
    assert_eq!(e.ic_status_description(), Some("Invalid startDate"));
    assert_eq!(e.message(), "Invalid startDate");

    mock.fault(
        Some(CONTACTS),
        Fault::Body(
            403,
            r#"{"error":"forbidden","error_description":"missing scope"}"#.into(),
        ),
        1,
    );
    let err = cxone
        .completed_contacts(&[])
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let e = err.downcast_ref::<CxoneError>().unwrap();
    assert_eq!(
        (e.code(), e.message()),
        (Some("forbidden"), "missing scope")
    );
    assert_eq!(e.to_string(), "NICE CXone error 403: missing scope");
}

#[tokio::test]
async fn a_business_error_in_a_200_is_a_typed_cxone_error() {
    let mock = MockServer::start().await.unwrap();
    let cxone = CxoneClient::new(stack(&mock, 4), &mock.base_url())
        .business_rule(tower_cx::genesys::BusinessRule::success_flag());
    mock.fault(Some(CONTACTS), Fault::BusinessError200, 1);
    let err = cxone
        .completed_contacts(&[])
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let e = err.downcast_ref::<CxoneError>().unwrap();
    assert!(e.is_business());
    assert_eq!(e.message(), "mock business error");
    assert_eq!(mock.counters().requests[CONTACTS], 1, "final by default");
}

// ---- CXone as CXone is: the extraction limit, discovery, paging, versions ----

#[tokio::test(start_paused = true)]
async fn extraction_submissions_are_paced_30_s_apart_with_zero_violations() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    let extraction = cxone.data_extraction();
    let started = tokio::time::Instant::now();
    let mut at = Vec::new();
    for n in 0..3 {
        extraction.submit(&json!({"n": n})).await.unwrap();
        at.push(started.elapsed().as_secs());
    }
    assert_eq!(at, [0, 30, 60]);
    // a clone shares the pacing (one client per tenant)
    cxone
        .clone()
        .data_extraction()
        .submit(&json!({"n": 3}))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(90));
    assert_eq!(mock.counters().extraction_limit_violations, 0);
    assert_eq!(mock.counters().operations_applied, 4);
}

#[tokio::test(start_paused = true)]
async fn without_pacing_the_limit_answers_429_and_the_stack_waits_it_out() {
    let mock = MockServer::start().await.unwrap();
    let stack = vendor_stacks::cxone(&mock)
        .retry(RetryLayer::new().deadline(Duration::from_secs(60)))
        .build();
    let extraction = CxoneClient::new(stack, &mock.base_url())
        .extraction_interval(Duration::ZERO)
        .data_extraction();
    extraction.submit(&json!({"n": 1})).await.unwrap();
    let started = tokio::time::Instant::now();
    extraction.submit(&json!({"n": 2})).await.unwrap();
    // the 429 proves the submission was not processed: retried after 30 s
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(mock.counters().extraction_limit_violations, 1);
    assert_eq!(mock.duplicate_applications(), 0);
}

#[tokio::test]
async fn discovery_reads_the_tenant_from_the_access_token() {
    let mock = MockServer::start().await.unwrap();
    let c = mock.config().clone();
    use tower_cx::auth::TokenSource as _;
    let credentials = tower_cx::auth::ClientCredentials::cxone(
        &mock.cxone_token_url(),
        c.client_id,
        c.client_secret,
        c.access_key_id,
        c.access_key_secret,
    )
    .unwrap();
    let token = credentials.fetch_token().await.unwrap();
    assert_eq!(token.lifetime(), Duration::from_secs(3600));
    let access = token.access_token().expose();
    let tenant = discover_from_token(&Stack::new().build(), &mock.base_url(), access)
        .await
        .unwrap();
    assert_eq!(tenant.area, "na1");
    assert_eq!(tenant.api_endpoint, mock.base_url());
    let err = discover_from_token(&Stack::new().build(), &mock.base_url(), "opaque")
        .await
        .unwrap_err();
    assert!(err.is::<tower_cx::cxone::UnreadableToken>(), "{err}");
}

#[test]
fn the_fedramp_and_sovereign_issuers_are_known() {
    let urls: Vec<_> = Issuer::all().map(Issuer::url).collect();
    assert_eq!(
        urls,
        [
            "https://cxone.niceincontact.com",
            "https://cxone-gov.niceincontact.com",
            "https://cxone.nicecxone-sov1.au",
            "https://cxone.nicecxone-sov1.eu",
            "https://cxone.nicecxone-sov1.uk",
        ]
    );
    assert_eq!(
        Issuer::FedRamp.token_url(),
        "https://cxone-gov.niceincontact.com/auth/token"
    );
}

fn ids(pages: &[tower_cx::cxone::ContactsPage]) -> Vec<u64> {
    pages
        .iter()
        .flat_map(|p| p.completed_contacts.iter())
        .map(|c| c["contactId"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn completed_contacts_paging_is_stable_while_contacts_arrive() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    let mut stream = Box::pin(cxone.completed_contacts(&[("top", "50")]));
    let mut pages = vec![stream.try_next().await.unwrap().unwrap()];
    // ten contacts complete while the client pages
    mock.add_contacts(10);
    while let Some(page) = stream.try_next().await.unwrap() {
        pages.push(page);
    }
    let seen = ids(&pages);
    assert_eq!(
        seen,
        (0..130).collect::<Vec<u64>>(),
        "none missed, none twice"
    );
    assert_eq!(mock.counters().requests[CONTACTS], 4, "3 pages and a 204");
}

#[tokio::test]
async fn completed_contacts_follow_links_next_when_present() {
    let mock = MockServer::start_with(MockConfig::default().contact_links(true))
        .await
        .unwrap();
    let (cxone, _) = client(&mock);
    let pages: Vec<_> = cxone
        .completed_contacts(&[("top", "50"), ("updatedSince", "2026-11-22T00:00:10Z")])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&pages), (10..120).collect::<Vec<u64>>());
    assert!(pages[0].links.as_ref().unwrap().next.is_some());
    // the last page has no next link: no request for a 204
    assert_eq!(mock.counters().requests[CONTACTS], 3);
}

#[tokio::test]
async fn each_api_has_its_own_version() {
    let mock = MockServer::start().await.unwrap();
    let (cxone, _) = client(&mock);
    assert_eq!(cxone.version_of(CxoneApi::CompletedContacts), "v31.0");
    assert_eq!(cxone.version_of(CxoneApi::DataExtraction), "v1");
    let cxone = cxone.api_version(CxoneApi::CompletedContacts, "v26.0");
    assert_eq!(
        cxone.version_of(CxoneApi::DataExtraction),
        "v1",
        "untouched"
    );
    let pages: Vec<_> = cxone
        .completed_contacts(&[("top", "100")])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&pages).len(), 120);
    let counters = mock.counters();
    assert_eq!(
        counters.requests["/incontactapi/services/v26.0/contacts/completed"], 3,
        "two pages and the 204"
    );
    assert!(!counters.requests.contains_key(CONTACTS));
    cxone.data_extraction().submit(&json!({})).await.unwrap();
    assert_eq!(mock.counters().requests[JOBS], 1);
}

/// Every typed call over the stack's `CxService` is a `Send` future: it can
/// be spawned, or awaited in an axum handler, with no generic helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_over_the_stack_can_be_spawned() {
    fn send<F: std::future::Future + Send>(future: F) -> F {
        future
    }
    let mock = MockServer::start().await.unwrap();
    // the job done at its first read, polls 10 ms apart (a real clock)
    mock.script_cxone_job(JobScript::new([("SUCCEEDED", "")]));
    let fast_polls = Backoff::constant(Duration::from_millis(10)).jitter(Jitter::None);
    let (cxone, _) = client(&mock);
    let cxone = cxone.job_runner(JobRunner::new().backoff(fast_polls));
    let base = mock.base_url();
    let spawned = tokio::spawn(async move {
        let transport = Stack::new().build();
        let tenant = discover(&transport, &base, "tenant-1").await?;
        assert_eq!(tenant.area, "na1");
        let extraction = cxone.data_extraction();
        let job = extraction.submit(&json!({"entityName": "agents"})).await?;
        extraction.observe(job.id()).await?;
        let done = extraction.wait(&job).await?;
        let bytes = extraction.download(&done).await?;
        let refused = extraction.rerun(&job).await.unwrap_err();
        assert!(refused.is::<NotRerunnable>(), "{refused}");
        let elsewhere = http::Request::post("https://elsewhere.example/x").body(Body::empty())?;
        extraction.replay(elsewhere).await.unwrap_err();
        // a second submission would wait out CXone's 30 s between jobs
        drop(send(extraction.run(&json!({"entityName": "agents"}))));
        drop(send(discover_from_token(&transport, &base, "opaque")));
        Ok::<_, BoxError>(bytes.is_empty())
    });
    assert!(
        !spawned.await.unwrap().unwrap(),
        "the result was downloaded"
    );
}

#[tokio::test]
async fn completed_contacts_whose_links_return_to_a_page_already_read_end_with_an_error() {
    const FIRST: &str =
        "/incontactapi/services/v31.0/contacts/completed?orderBy=lastUpdateTime&skip=0&top=100";
    let transport = tower::service_fn(|req: http::Request<Body>| async move {
        let target = req.uri().path_and_query().unwrap().as_str().to_owned();
        let body = if target == FIRST {
            json!({"completedContacts": [{"contactId": 1}], "_links": {"next": "/incontactapi/b"}})
        } else {
            assert_eq!(target, "/incontactapi/b");
            json!({"completedContacts": [{"contactId": 2}], "_links": {"next": FIRST}})
        };
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body.to_string()),
        )))
    });
    let cxone = CxoneClient::new(transport, "https://api.example.com");
    let pages: Vec<_> = futures_util::StreamExt::collect(cxone.completed_contacts(&[])).await;
    assert_eq!(pages.len(), 3, "two pages, then the error: {pages:?}");
    let err = pages[2].as_ref().unwrap_err();
    assert!(err.is::<tower_cx::vendor::InvalidUrl>(), "{err}");
}
