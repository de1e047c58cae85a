//! Analytics conversation-details jobs.

#![allow(
    clippy::manual_async_fn,
    reason = "the calls return `impl Future + Send`: an `async fn` over a boxed transport is not provably `Send` at the caller (its error type's lifetime is erased there)"
)]

use std::collections::HashSet;
use std::future::Future;

use futures_util::Stream;
use http::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{parse, CallOptions, GenesysClient};
use super::error::GenesysError;
use crate::body::Body;
use crate::error::BoxError;
use crate::jobs::{JobState, JobStatus, Observation};
use crate::vendor::{check_id, copy_request, StatusRead, Transport, UnexpectedBody};

const JOBS: &str = "/api/v2/analytics/conversations/details/jobs";

/// Analytics conversation-details jobs: submit a query, wait for it, read
/// the results page by page.
///
/// ```no_run
/// use futures_util::TryStreamExt;
/// use serde_json::json;
/// use tower_cx::genesys::{GenesysClient, Region};
/// use tower_cx::stack::Stack;
///
/// # async fn run() -> Result<(), tower_cx::error::BoxError> {
/// let region = Region::UsEast1;
/// let genesys = GenesysClient::new(Stack::genesys(&region, "id", "secret")?.build(), &region);
/// let jobs = genesys.analytics();
/// let job_id = jobs.run(&json!({"interval": "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z"})).await?;
/// let pages: Vec<_> = jobs.results(&job_id).try_collect().await?;
/// println!("{} pages", pages.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AnalyticsJobs<T> {
    pub(crate) client: GenesysClient<T>,
}

/// The status body of an analytics job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AnalyticsJobStatus {
    /// `QUEUED`, `PENDING`, `FULFILLED`, `FAILED`, `CANCELLED` or `EXPIRED`.
    pub state: String,
    /// Why it failed.
    pub error_message: Option<String>,
    /// When it was submitted.
    pub submission_date: Option<String>,
    /// When its results expire.
    pub expiration_date: Option<String>,
}

/// One page of an analytics job's results.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ResultsPage {
    /// The conversations on this page.
    #[serde(default)]
    pub conversations: Vec<Value>,
    /// The cursor of the next page; `None` on the last page.
    pub cursor: Option<String>,
    /// Up to when the data is complete.
    pub data_availability_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Submitted {
    job_id: String,
}

/// The common state of a Genesys job state name.
pub(crate) fn job_state(state: &str) -> JobState {
    match state {
        "QUEUED" => JobState::Queued,
        "FULFILLED" => JobState::Succeeded,
        "FAILED" => JobState::Failed,
        "CANCELLED" => JobState::Cancelled,
        "EXPIRED" => JobState::Expired,
        _ => JobState::Running,
    }
}

impl<T: Transport> AnalyticsJobs<T> {
    fn submit_request<Q: Serialize + ?Sized>(&self, query: &Q) -> Result<Request<Body>, BoxError> {
        let body = serde_json::to_vec(query)?;
        self.client
            .json_request(Method::POST, self.client.url(JOBS), Some(body))
    }

    async fn submit_with(&self, request: Request<Body>, letter: bool) -> Result<String, BoxError> {
        let response = self
            .client
            .call(
                request,
                CallOptions {
                    business_rule: false,
                    dead_letter: letter,
                },
            )
            .await?;
        let submitted: Submitted = parse(response, "an analytics job id")?;
        check_id("job id", &submitted.job_id)?;
        Ok(submitted.job_id)
    }

    /// Submit a query; the job id. The submission is never declared
    /// idempotent (a duplicate job costs quota and load): it is retried
    /// only on proof that it was not processed (a 429, a 503 with
    /// `Retry-After`, a connection never made, a refusal by the crate's own
    /// layers).
    pub fn submit<Q: Serialize + ?Sized>(
        &self,
        query: &Q,
    ) -> impl Future<Output = Result<String, BoxError>> + Send + '_ {
        let request = self.submit_request(query);
        async move { self.submit_with(request?, false).await }
    }

    /// Read the job's status once. A 429 or 503 comes back as
    /// [`Observation::Wait`] with the server's hint.
    pub fn observe(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<Observation<AnalyticsJobStatus>, BoxError>> + Send + '_ {
        let url = check_id("job id", job_id).map(|()| self.client.url(&format!("{JOBS}/{job_id}")));
        async move {
            let status: AnalyticsJobStatus = match self
                .client
                .core
                .read_job_status(url?, "an analytics job status", GenesysError::from_body)
                .await?
            {
                StatusRead::Wait(hint) => return Ok(Observation::Wait(hint)),
                StatusRead::Status(status) => status,
            };
            let message = status.error_message.clone();
            Ok(Observation::Status(
                JobStatus::new(job_state(&status.state), status.state.clone(), status)
                    .message(message),
            ))
        }
    }

    /// Wait until the job is `FULFILLED`; its last status. `FAILED`,
    /// `CANCELLED` and `EXPIRED` end in [`JobFailed`](crate::jobs::JobFailed) (a `FAILED` without
    /// a message is re-read once first).
    pub fn wait<'a>(
        &'a self,
        job_id: &'a str,
    ) -> impl Future<Output = Result<JobStatus<AnalyticsJobStatus>, BoxError>> + Send + 'a {
        let runner = &self.client.core.runner;
        runner.run_to_success("Genesys Cloud analytics", job_id, || self.observe(job_id))
    }

    /// Submit and wait; the id of the fulfilled job. A job that fails is
    /// dead-lettered with its submission, for [`replay`](Self::replay).
    pub fn run<Q: Serialize + ?Sized>(
        &self,
        query: &Q,
    ) -> impl Future<Output = Result<String, BoxError>> + Send + '_ {
        let request = self.submit_request(query);
        async move { self.run_request(request?).await }
    }

    /// Submit a dead letter's submission again, and wait.
    pub fn replay(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<String, BoxError>> + Send + '_ {
        async move {
            let request = self.client.check_replay(request)?;
            self.run_request(request).await
        }
    }

    async fn run_request(&self, request: Request<Body>) -> Result<String, BoxError> {
        let copy = copy_request(&request);
        let job_id = self.submit_with(request, true).await?;
        match self.wait(&job_id).await {
            Ok(_) => Ok(job_id),
            Err(error) => {
                self.client.core.dead_letter(copy, 1, &error);
                Err(error)
            }
        }
    }

    /// The results of a fulfilled job, page by page, following `cursor`
    /// until a page has none (an empty cursor counts as none). A page whose
    /// cursor was followed before is the last one, then the stream ends
    /// with [`UnexpectedBody`]: the pages would repeat forever.
    pub fn results(
        &self,
        job_id: &str,
    ) -> impl Stream<Item = Result<ResultsPage, BoxError>> + Send + 'static {
        let client = self.client.clone();
        let checked = check_id("job id", job_id).map(|()| job_id.to_owned());
        let start = Cursors {
            job_id: checked.map_err(Into::into),
            next: None,
            seen: HashSet::new(),
        };
        futures_util::stream::try_unfold(Some(start), move |state| {
            let client = client.clone();
            async move {
                let Some(mut state) = state else {
                    return Ok(None);
                };
                let job_id = state.job_id?;
                let mut url = client.url(&format!("{JOBS}/{job_id}/results"));
                if let Some(cursor) = &state.next {
                    url.push_str("?cursor=");
                    url.extend(form_urlencoded::byte_serialize(cursor.as_bytes()));
                }
                let mut page: ResultsPage =
                    client.get_json(url, "an analytics results page").await?;
                page.cursor = page.cursor.filter(|c| !c.is_empty());
                let Some(cursor) = page.cursor.clone() else {
                    return Ok(Some((page, None)));
                };
                // a cursor followed before ends the stream after this page
                state.job_id = if state.seen.insert(cursor.clone()) {
                    Ok(job_id)
                } else {
                    Err(UnexpectedBody::new(
                        "a new cursor",
                        StatusCode::OK,
                        b"a cursor already followed",
                        None,
                    )
                    .into())
                };
                state.next = Some(cursor);
                Ok(Some((page, Some(state))))
            }
        })
    }
}

/// Where [`AnalyticsJobs::results`] is: the job, the cursor to follow, and
/// every cursor followed so far.
struct Cursors {
    job_id: Result<String, BoxError>,
    next: Option<String>,
    seen: HashSet<String>,
}
