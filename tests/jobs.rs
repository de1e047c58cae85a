//! The shared job runner driving Genesys Cloud analytics jobs against the
//! embedded mock, on paused time: every state, exact poll times, a 429
//! while polling, a job that outlives its token, cancellation. And the one
//! job-status read both vendor clients share, over fixed answers.
#![cfg(feature = "mock")]

#[path = "support/events.rs"]
mod events;
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::json;
use tokio::time::Instant;
use tower_cx::audit::DeadLetter;
use tower_cx::genesys::GenesysClient;
use tower_cx::jobs::{JobFailed, JobProgress, JobState, JobTimedOut};
use tower_cx::mock::{Fault, JobScript, MockServer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::CxService;

use events::EventCapture;

const JOBS: &str = "/api/v2/analytics/conversations/details/jobs";

fn stack(mock: &MockServer, attempts: u32) -> CxService {
    vendor_stacks::genesys(mock)
        .retry(
            RetryLayer::new()
                .max_attempts(attempts)
                .auto_idempotency_key(true),
        )
        .build()
}

type Seen = EventCapture<JobProgress>;

fn client(mock: &MockServer, attempts: u32) -> (GenesysClient<CxService>, Seen) {
    let seen = Seen::new();
    let runner = vendor_stacks::exact_job_runner().on_progress(seen.recorder());
    let client =
        GenesysClient::new(stack(mock, attempts), &mock.genesys_region()).job_runner(runner);
    (client, seen)
}

fn timeline(seen: &Seen) -> Vec<(String, u64)> {
    seen.all()
        .iter()
        .map(|p| (p.vendor_state.clone(), p.elapsed.as_secs()))
        .collect()
}

fn at(states: &[(&str, u64)]) -> Vec<(String, u64)> {
    states.iter().map(|(s, t)| (s.to_string(), *t)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_fulfilled_job_then_its_results_to_the_last_cursor() {
    let mock = MockServer::start().await.unwrap();
    let (genesys, seen) = client(&mock, 4);
    let jobs = genesys.analytics();
    let started = Instant::now();
    let job_id = jobs.run(&json!({"interval": "x/y"})).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(14));
    assert_eq!(
        timeline(&seen),
        at(&[("QUEUED", 2), ("PENDING", 6), ("FULFILLED", 14)])
    );
    let pages: Vec<_> = jobs.results(&job_id).try_collect().await.unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].cursor.as_deref(), Some("mock-cursor"));
    assert!(pages[1].cursor.is_none());
    assert_eq!(
        pages.iter().map(|p| p.conversations.len()).sum::<usize>(),
        6
    );
    let results = format!("{JOBS}/{job_id}/results");
    assert_eq!(mock.counters().requests[&results], 2);
}

#[tokio::test(start_paused = true)]
async fn failed_cancelled_and_expired_jobs_are_typed_failures() {
    let mock = MockServer::start().await.unwrap();
    let (genesys, _) = client(&mock, 4);
    for (state, message, expected) in [
        ("FAILED", "query too large", JobState::Failed),
        ("CANCELLED", "", JobState::Cancelled),
        ("EXPIRED", "", JobState::Expired),
    ] {
        mock.script_genesys_job(JobScript::new([("QUEUED", ""), (state, message)]));
        let err = genesys.analytics().run(&json!({})).await.unwrap_err();
        let failed = err.downcast_ref::<JobFailed>().expect("JobFailed");
        assert_eq!(failed.state(), expected);
        assert_eq!(failed.vendor_state(), state);
        assert_eq!(failed.message(), (!message.is_empty()).then_some(message));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_without_a_message_is_read_again_once_before_it_is_reported() {
    let mock = MockServer::start().await.unwrap();
    let (genesys, seen) = client(&mock, 4);
    mock.script_genesys_job(JobScript::new([
        ("QUEUED", ""),
        ("FAILED", ""),
        ("FAILED", "disk full"),
    ]));
    let err = genesys.analytics().run(&json!({})).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<JobFailed>().unwrap().message(),
        Some("disk full")
    );
    // the re-read comes 2 s after the bare FAILED
    assert_eq!(
        timeline(&seen),
        at(&[("QUEUED", 2), ("FAILED", 6), ("FAILED", 8)])
    );

    // a FAILED that turns out to be a glitch: the re-read says FULFILLED
    seen.clear();
    mock.script_genesys_job(JobScript::new([("FAILED", ""), ("FULFILLED", "")]));
    genesys.analytics().run(&json!({})).await.unwrap();
    assert_eq!(timeline(&seen), at(&[("FAILED", 2), ("FULFILLED", 4)]));

    // still no message after the re-read: reported as it is
    mock.script_genesys_job(JobScript::new([("FAILED", "")]));
    let err = genesys.analytics().run(&json!({})).await.unwrap_err();
    let failed = err.downcast_ref::<JobFailed>().unwrap();
    assert_eq!((failed.state(), failed.message()), (JobState::Failed, None));
}

/// The timeline of a job whose first status read is answered 429 with
/// `Retry-After: 7`, run by a client with `attempts` in its stack.
async fn through_a_429(mock: &MockServer, attempts: u32) -> Vec<(String, u64)> {
    let (genesys, seen) = client(mock, attempts);
    let jobs = genesys.analytics();
    let job_id = jobs.submit(&json!({})).await.unwrap();
    mock.fault(
        Some(&format!("{JOBS}/{job_id}")),
        Fault::RetryAfterSecs(7),
        1,
    );
    jobs.wait(&job_id).await.unwrap();
    timeline(&seen)
}

#[tokio::test(start_paused = true)]
async fn a_429_while_polling_is_waited_out_as_the_server_asks() {
    let mock = MockServer::start().await.unwrap();
    // one attempt in the stack: the runner itself sees the 429
    // 2 s: 429 (wait 7 s); 9 s: QUEUED; +4 s: PENDING; +8 s: FULFILLED
    assert_eq!(
        through_a_429(&mock, 1).await,
        at(&[("QUEUED", 9), ("PENDING", 13), ("FULFILLED", 21)])
    );
    assert_eq!(mock.counters().retry_after_violations, 0);

    // through the full stack the retry layer honours it instead
    let timeline = through_a_429(&mock, 4).await;
    assert_eq!(timeline[0].0, "QUEUED");
    assert!(timeline[0].1 >= 9, "{timeline:?}");
    assert_eq!(mock.counters().retry_after_violations, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_longer_than_the_token_lifetime_never_notices() {
    let mock = vendor_stacks::mock_with(|c| c.token_lifetime = Duration::from_secs(60)).await;
    let (genesys, seen) = client(&mock, 4);
    // 12 status reads: 2+4+8+16 + 8*30 = 270 s, four and a half token lifetimes
    let mut script = vec![("PENDING", ""); 11];
    script.push(("FULFILLED", ""));
    mock.script_genesys_job(JobScript::new(script));
    let job_id = genesys.analytics().run(&json!({})).await.unwrap();
    assert_eq!(seen.all().last().unwrap().elapsed, Duration::from_secs(270));
    let pages: Vec<_> = genesys
        .analytics()
        .results(&job_id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    let counters = mock.counters();
    assert!(counters.tokens_issued >= 4, "{counters:?}");
    assert_eq!(counters.expired_token_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn the_maximum_wait_ends_with_a_typed_timeout_and_a_dead_letter() {
    let mock = MockServer::start().await.unwrap();
    let letters = EventCapture::<DeadLetter>::new();
    let genesys = GenesysClient::new(stack(&mock, 4), &mock.genesys_region())
        .job_runner(vendor_stacks::exact_job_runner().max_wait(Duration::from_secs(60)))
        .dead_letters(letters.dead_letters());
    mock.script_genesys_job(JobScript::new([("PENDING", "")]));
    let started = Instant::now();
    let err = genesys.analytics().run(&json!({"q": 1})).await.unwrap_err();
    let timed_out = err.downcast_ref::<JobTimedOut>().unwrap();
    assert_eq!(timed_out.last_state(), Some(JobState::Running));
    // polls at 2, 6, 14, 30 and 60 s; the next (30 s later) would pass 60 s
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    let letter = letters.take().pop().unwrap();
    let request = letter.request.unwrap();
    assert_eq!(request.uri().path(), JOBS);
    assert_eq!(request.body().as_bytes().unwrap().as_ref(), br#"{"q":1}"#);

    // re-run from the dead letter: a new job, fulfilled this time
    let genesys = genesys.job_runner(vendor_stacks::exact_job_runner());
    let job_id = genesys.analytics().replay(request).await.unwrap();
    assert!(job_id.starts_with("job-"));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_wait_stops_polling() {
    let mock = MockServer::start().await.unwrap();
    let (genesys, seen) = client(&mock, 4);
    mock.script_genesys_job(JobScript::new([("PENDING", "")]));
    let jobs = genesys.analytics();
    let job_id = jobs.submit(&json!({})).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(20), jobs.wait(&job_id)).await;
    assert!(waited.is_err(), "still pending");
    let status_path = format!("{JOBS}/{job_id}");
    let polls = mock.counters().requests[&status_path];
    assert_eq!(polls, 3, "at 2, 6 and 14 s");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(mock.counters().requests[&status_path], polls);
    assert_eq!(seen.len(), 3);
}

/// A transport answering every request with one fixed response.
#[derive(Clone, Debug)]
struct Fixed {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

impl Fixed {
    fn new(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> Self {
        Self {
            status,
            headers: headers.to_vec(),
            body,
        }
    }
}

impl tower::Service<http::Request<tower_cx::body::Body>> for Fixed {
    type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tower_cx::body::Body>) -> Self::Future {
        let mut response = http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(*name, *value);
        }
        std::future::ready(Ok(response
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                self.body.as_bytes(),
            )))
            .unwrap()))
    }
}

/// What one job-status read gave, the same way for both vendors.
#[derive(Debug, PartialEq)]
enum Read {
    Wait(Option<Duration>),
    State(JobState),
    VendorError(u16),
    Unexpected(String),
}

fn read<T: std::fmt::Debug>(
    result: Result<tower_cx::jobs::Observation<T>, tower_cx::error::BoxError>,
) -> Read {
    use tower_cx::jobs::Observation;
    match result {
        Ok(Observation::Wait(hint)) => Read::Wait(hint),
        Ok(Observation::Status(status)) => Read::State(status.state),
        Err(error) => {
            if let Some(e) = error.downcast_ref::<tower_cx::genesys::GenesysError>() {
                Read::VendorError(e.status().as_u16())
            } else if let Some(e) = error.downcast_ref::<tower_cx::cxone::CxoneError>() {
                Read::VendorError(e.status().as_u16())
            } else if let Some(e) = error.downcast_ref::<tower_cx::vendor::UnexpectedBody>() {
                Read::Unexpected(e.to_string())
            } else {
                panic!("unexpected error: {error}")
            }
        }
    }
}

#[tokio::test]
async fn a_job_status_read_waits_fails_or_parses_alike_for_both_vendors() {
    use tower_cx::cxone::CxoneClient;
    const BASE: &str = "https://api.example.test";
    let observe = |transport: Fixed| async move {
        let genesys = GenesysClient::with_base_url(transport.clone(), BASE);
        let cxone = CxoneClient::new(transport, BASE);
        (
            read(genesys.analytics().observe("job-1").await),
            read(cxone.data_extraction().observe("job-1").await),
        )
    };

    // 429 and 503 are waits, with the server's hint when it gave one
    let busy = Fixed::new(503, &[("retry-after", "4")], "busy");
    let wait_4s = || Read::Wait(Some(Duration::from_secs(4)));
    assert_eq!(observe(busy).await, (wait_4s(), wait_4s()));
    let limited = Fixed::new(429, &[], "");
    assert_eq!(observe(limited).await, (Read::Wait(None), Read::Wait(None)));

    // any other failure is the vendor's typed error
    let missing = Fixed::new(404, &[], r#"{"message":"no such job","status":404}"#);
    assert_eq!(
        observe(missing).await,
        (Read::VendorError(404), Read::VendorError(404))
    );

    // a success that is not a status names what was expected
    let (genesys, cxone) = observe(Fixed::new(200, &[], "<html>")).await;
    let names = |read: &Read| match read {
        Read::Unexpected(text) => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(names(&genesys).contains("expected an analytics job status"));
    assert!(names(&cxone).contains("expected a data-extraction job status"));

    // and each vendor's own document is read
    let genesys =
        GenesysClient::with_base_url(Fixed::new(200, &[], r#"{"state":"FULFILLED"}"#), BASE);
    assert_eq!(
        read(genesys.analytics().observe("job-1").await),
        Read::State(JobState::Succeeded)
    );
    let cxone = CxoneClient::new(
        Fixed::new(
            200,
            &[],
            r#"{"jobStatus":{"id":"job-1","status":"RUNNING","result":null}}"#,
        ),
        BASE,
    );
    assert_eq!(
        read(cxone.data_extraction().observe("job-1").await),
        Read::State(JobState::Running)
    );
}

#[test]
fn a_client_debug_shows_its_settings_never_its_transport() {
    let transport = Fixed::new(200, &[], "transport-secret");
    let genesys = GenesysClient::with_base_url(transport.clone(), "https://api.example.test");
    let cxone = tower_cx::cxone::CxoneClient::new(transport, "https://api.example.test");
    for debug in [format!("{genesys:?}"), format!("{cxone:?}")] {
        assert!(debug.contains("https://api.example.test"), "{debug}");
        assert!(!debug.contains("transport-secret"), "{debug}");
    }
}
