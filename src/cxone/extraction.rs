//! Data-extraction jobs.

#![allow(
    clippy::manual_async_fn,
    reason = "the calls return `impl Future + Send`: an `async fn` over a boxed transport is not provably `Send` at the caller (its error type's lifetime is erased there)"
)]

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use super::client::{CxoneApi, CxoneClient};
use super::error::CxoneError;
use crate::body::Body;
use crate::error::{BoxError, InsecureUrl};
use crate::jobs::{JobFailed, JobState, JobStatus, Observation};
use crate::retry::IDEMPOTENCY_KEY;
use crate::transport::collect_limited;
use crate::vendor::{
    check_id, check_replay, copy_request, json_request, parse, InvalidUrl, StatusRead, Transport,
    UnexpectedBody,
};

/// NICE CXone data-extraction jobs: submit (202 with a bare JSON string id),
/// wait (`RUNNING` -> `SUCCEEDED` / `FAILED` / `CANCELLED` / `EXPIRED`),
/// download the result from its short-lived URL at once, and re-run a job
/// that failed.
///
/// ```no_run
/// use serde_json::json;
/// use tower_cx::cxone::CxoneClient;
/// use tower_cx::stack::{CxService, Stack};
///
/// # async fn run(stack: CxService) -> Result<(), tower_cx::error::BoxError> {
/// let cxone = CxoneClient::new(stack, "https://api-na1.niceincontact.com");
/// let extraction = cxone.data_extraction();
/// let job = extraction.submit(&json!({"entityName": "contacts"})).await?;
/// let csv = match extraction.wait(&job).await {
///     Ok(done) => extraction.download(&done).await?,
///     Err(_) => {
///         let again = extraction.rerun(&job).await?;
///         let done = extraction.wait(&again).await?;
///         extraction.download(&done).await?
///     }
/// };
/// # let _ = csv;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DataExtraction<T> {
    pub(crate) client: CxoneClient<T>,
}

/// A submitted job, with what it takes to submit it again.
#[derive(Debug, Clone)]
pub struct ExtractionJob {
    id: String,
    body: Bytes,
    key: String,
    reruns: u32,
}

impl ExtractionJob {
    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `Idempotency-Key` its submission carried (the same on every
    /// attempt of that submission).
    pub fn idempotency_key(&self) -> &str {
        &self.key
    }

    /// How many re-runs led to this job (0 for the original).
    pub fn reruns(&self) -> u32 {
        self.reruns
    }
}

/// The status body of a data-extraction job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ExtractionStatus {
    /// The job id.
    #[serde(default)]
    pub id: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED` or `EXPIRED`.
    pub status: String,
    /// The result, when there is one.
    pub result: Option<ExtractionResult>,
}

/// A job's result: a download URL, or an error message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExtractionResult {
    /// The pre-signed download URL (it expires quickly).
    pub url: Option<String>,
    /// Why the job failed.
    pub error_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusEnvelope {
    job_status: ExtractionStatus,
}

/// A finished job whose result is ready to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedExtraction {
    /// The job id.
    pub id: String,
    /// The result URL (expires quickly: download it at once).
    pub url: String,
}

/// Why a job cannot be re-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RerunRefusal {
    /// It is still queued or running.
    NotFinished,
    /// It succeeded: download its result instead.
    Succeeded,
    /// It was cancelled on purpose.
    Cancelled,
    /// It was re-run the maximum number of times already.
    TooManyReruns,
}

/// A job that cannot be re-run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRerunnable {
    job_id: String,
    reason: RerunRefusal,
    reruns: u32,
}

impl NotRerunnable {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Why.
    pub fn reason(&self) -> RerunRefusal {
        self.reason
    }
}

impl fmt::Display for NotRerunnable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            RerunRefusal::NotFinished => "it has not finished",
            RerunRefusal::Succeeded => "it succeeded",
            RerunRefusal::Cancelled => "it was cancelled",
            RerunRefusal::TooManyReruns => "it was re-run too many times",
        };
        write!(
            f,
            "job {} cannot be re-run: {why} ({} re-runs so far)",
            self.job_id, self.reruns
        )
    }
}

impl StdError for NotRerunnable {}

/// A job's result URL expired before it could be downloaded, even after
/// reading a fresh one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultExpired {
    job_id: String,
}

impl ResultExpired {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

impl fmt::Display for ResultExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the result URL of job {} expired", self.job_id)
    }
}

impl StdError for ResultExpired {}

fn job_state(status: &str) -> JobState {
    match status {
        "SUCCEEDED" => JobState::Succeeded,
        "FAILED" => JobState::Failed,
        "CANCELLED" => JobState::Cancelled,
        "EXPIRED" => JobState::Expired,
        "QUEUED" | "PENDING" => JobState::Queued,
        _ => JobState::Running,
    }
}

impl<T: Transport> DataExtraction<T> {
    /// `/data-extraction/{version}/jobs` on the API endpoint.
    fn jobs_url(&self, rest: &str) -> String {
        let version = self.client.version_of(CxoneApi::DataExtraction);
        self.client
            .url(&format!("/data-extraction/{version}/jobs{rest}"))
    }

    /// Submit once CXone's per-tenant interval allows (see
    /// [`CxoneClient::extraction_interval`]). The submission is not
    /// declared idempotent: a duplicate job costs quota and load, so it is
    /// retried only on proof that it was not processed (the retry layer's
    /// rule); its key is stable across attempts for origins that honour
    /// keys.
    async fn submit_bytes(
        &self,
        body: Bytes,
        key: String,
        reruns: u32,
    ) -> Result<ExtractionJob, BoxError> {
        let mut request = json_request(Method::POST, self.jobs_url(""), Some(body.to_vec()))?;
        request
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&key)?);
        let interval = self.client.extraction_interval;
        let mut last = self.client.extraction_clock.lock().await;
        if let Some(at) = last.filter(|_| !interval.is_zero()) {
            tokio::time::sleep_until(at + interval).await;
        }
        *last = Some(tokio::time::Instant::now());
        let response = self.client.call(request, true).await;
        drop(last);
        let response = response?;
        let id: String = parse(response, "a job id (a JSON string)")?;
        check_id("job id", &id)?;
        Ok(ExtractionJob {
            id,
            body,
            key,
            reruns,
        })
    }

    /// Submit a job definition (202 with the job id).
    pub fn submit<B: Serialize + ?Sized>(
        &self,
        definition: &B,
    ) -> impl Future<Output = Result<ExtractionJob, BoxError>> + Send + '_ {
        let body = serde_json::to_vec(definition);
        async move {
            let body = Bytes::from(body?);
            let key = crate::retry::new_idempotency_key()
                .to_str()
                .map(str::to_owned)
                .unwrap_or_default();
            self.submit_bytes(body, key, 0).await
        }
    }

    /// Read the job's status once; a 429 or 503 comes back as
    /// [`Observation::Wait`] with the server's hint.
    pub fn observe<'a>(
        &'a self,
        job_id: &'a str,
    ) -> impl Future<Output = Result<Observation<ExtractionStatus>, BoxError>> + Send + 'a {
        async move {
            check_id("job id", job_id)?;
            let url = self.jobs_url(&format!("/{job_id}"));
            let envelope: StatusEnvelope = match self
                .client
                .core
                .read_job_status(
                    url,
                    "a data-extraction job status",
                    CxoneError::from_response,
                )
                .await?
            {
                StatusRead::Wait(hint) => return Ok(Observation::Wait(hint)),
                StatusRead::Status(envelope) => envelope,
            };
            let status = envelope.job_status;
            let message = status.result.as_ref().and_then(|r| r.error_message.clone());
            Ok(Observation::Status(
                JobStatus::new(job_state(&status.status), status.status.clone(), status)
                    .message(message),
            ))
        }
    }

    /// Wait until the job succeeds; its result URL. `FAILED`, `CANCELLED`
    /// and `EXPIRED` end in [`JobFailed`]; a failed job is dead-lettered with
    /// its submission.
    pub fn wait<'a>(
        &'a self,
        job: &'a ExtractionJob,
    ) -> impl Future<Output = Result<FinishedExtraction, BoxError>> + Send + 'a {
        async move {
            let outcome = self.wait_id(&job.id).await;
            if let Err(error) = &outcome {
                if error.is::<JobFailed>() {
                    let mut request =
                        json_request(Method::POST, self.jobs_url(""), Some(job.body.to_vec()))?;
                    if let Ok(key) = HeaderValue::from_str(&job.key) {
                        request.headers_mut().insert(IDEMPOTENCY_KEY, key);
                    }
                    self.client
                        .core
                        .dead_letter(copy_request(&request), 1, error);
                }
            }
            outcome
        }
    }

    async fn wait_id(&self, job_id: &str) -> Result<FinishedExtraction, BoxError> {
        let runner = &self.client.core.runner;
        let status = runner
            .run_to_success("NICE CXone data-extraction", job_id, || {
                self.observe(job_id)
            })
            .await?;
        finished(job_id, status.detail)
    }

    /// Download a finished job's result through the download service (no
    /// bearer token), within the result size limit. A URL that expired
    /// (403, 404 or 410) is replaced by a fresh one read from the job once;
    /// then [`ResultExpired`].
    pub fn download<'a>(
        &'a self,
        job: &'a FinishedExtraction,
    ) -> impl Future<Output = Result<Bytes, BoxError>> + Send + 'a {
        async move {
            match self.fetch(&job.url).await? {
                Some(bytes) => Ok(bytes),
                None => {
                    let fresh = match self.observe(&job.id).await? {
                        Observation::Status(status) if status.state == JobState::Succeeded => {
                            finished(&job.id, status.detail)?
                        }
                        _ => {
                            return Err(ResultExpired {
                                job_id: job.id.clone(),
                            }
                            .into())
                        }
                    };
                    self.fetch(&fresh.url).await?.ok_or_else(|| {
                        ResultExpired {
                            job_id: job.id.clone(),
                        }
                        .into()
                    })
                }
            }
        }
    }

    /// `None` when the link expired.
    async fn fetch(&self, url: &str) -> Result<Option<Bytes>, BoxError> {
        let uri: http::Uri = url.parse().map_err(|_| InvalidUrl::new(url, "not a URL"))?;
        InsecureUrl::check(&uri)?;
        let request = Request::get(uri).body(Body::empty())?;
        let response = self.client.downloads.clone().oneshot(request).await?;
        let (parts, body) = response.into_parts();
        if matches!(parts.status.as_u16(), 403 | 404 | 410) {
            let _ = collect_limited(parts.status, body, self.client.core.limits.errors).await;
            return Ok(None);
        }
        if !parts.status.is_success() {
            let bytes = collect_limited(parts.status, body, self.client.core.limits.errors).await?;
            return Err(CxoneError::from_response(parts.status, &parts.headers, &bytes).into());
        }
        Ok(Some(
            collect_limited(parts.status, body, self.client.core.limits.results).await?,
        ))
    }

    /// Submit, wait and download.
    pub fn run<B: Serialize + ?Sized>(
        &self,
        definition: &B,
    ) -> impl Future<Output = Result<Bytes, BoxError>> + Send + '_ {
        let submitted = self.submit(definition);
        async move {
            let job = submitted.await?;
            let done = self.wait(&job).await?;
            self.download(&done).await
        }
    }

    /// Submit a failed or expired job again. The re-submission's
    /// `Idempotency-Key` is derived from the original's and the re-run
    /// number, so every attempt of this re-run (the stack's retries, or a
    /// re-run repeated after a crash) carries the same key: an origin that
    /// honours keys (declared with
    /// [`RetryLayer::idempotency_keys_honoured_by`](crate::retry::RetryLayer::idempotency_keys_honoured_by))
    /// applies it once. NICE CXone ignores the key, so there the re-run
    /// follows the proof rule like any submission. Refused with [`NotRerunnable`] when the job is still running,
    /// succeeded, was cancelled, or was re-run too often.
    pub fn rerun<'a>(
        &'a self,
        job: &'a ExtractionJob,
    ) -> impl Future<Output = Result<ExtractionJob, BoxError>> + Send + 'a {
        async move {
            let refuse = |reason| NotRerunnable {
                job_id: job.id.clone(),
                reason,
                reruns: job.reruns,
            };
            if job.reruns >= self.client.max_reruns {
                return Err(refuse(RerunRefusal::TooManyReruns).into());
            }
            let mut waits = 0;
            let state = loop {
                match self.observe(&job.id).await? {
                    Observation::Status(status) => break status.state,
                    Observation::Wait(hint) if waits < 3 => {
                        waits += 1;
                        let wait = hint.unwrap_or(std::time::Duration::from_secs(1));
                        tokio::time::sleep(wait.max(std::time::Duration::from_secs(1))).await
                    }
                    Observation::Wait(_) => {
                        return Err(CxoneError::from_response(
                            StatusCode::TOO_MANY_REQUESTS,
                            &http::HeaderMap::new(),
                            b"",
                        )
                        .into())
                    }
                }
            };
            match state {
                JobState::Failed | JobState::Expired => {}
                JobState::Succeeded => return Err(refuse(RerunRefusal::Succeeded).into()),
                JobState::Cancelled => return Err(refuse(RerunRefusal::Cancelled).into()),
                _ => return Err(refuse(RerunRefusal::NotFinished).into()),
            }
            let base = job.key.split(".rerun.").next().unwrap_or(&job.key);
            let key = format!("{base}.rerun.{}", job.reruns + 1);
            self.submit_bytes(job.body.clone(), key, job.reruns + 1)
                .await
        }
    }

    /// Submit a dead letter's request again (same body and key); the new
    /// job.
    pub fn replay<'a>(
        &'a self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<ExtractionJob, BoxError>> + Send + 'a {
        async move {
            let request = check_replay(&self.client.core.base, request)?;
            let key = request
                .headers()
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = request
                .body()
                .as_bytes()
                .cloned()
                .ok_or_else(|| -> BoxError { "a dead letter's body must be buffered".into() })?;
            self.submit_bytes(body, key, 0).await
        }
    }
}

fn finished(job_id: &str, status: ExtractionStatus) -> Result<FinishedExtraction, BoxError> {
    let url = status
        .result
        .and_then(|r| r.url)
        .ok_or_else(|| UnexpectedBody::new("a result URL", StatusCode::OK, b"", None))?;
    Ok(FinishedExtraction {
        id: job_id.to_owned(),
        url,
    })
}
