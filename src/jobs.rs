//! Submit-then-poll: the job runner shared by the Genesys Cloud analytics
//! jobs and the NICE CXone data-extraction jobs.
//!
//! [`JobRunner::run`] polls a job until it reaches a terminal state: the
//! interval starts at 2 s and doubles up to 30 s (equal jitter by default),
//! a `Retry-After` the poll reports is honoured instead, the whole wait is
//! bounded by a maximum, a `FAILED` without a message is re-read once after
//! a short wait, and each observation is reported to a progress callback
//! (state, polls, elapsed). Dropping the future stops polling at once: it
//! holds nothing but a timer.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use tower_cx::backoff::{Backoff, Jitter};
//! use tower_cx::jobs::{JobRunner, JobState, JobStatus, Observation};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_cx::error::BoxError> {
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let runner = JobRunner::new()
//!     .backoff(Backoff::exponential(Duration::from_secs(2)).jitter(Jitter::None))
//!     .on_progress({
//!         let seen = seen.clone();
//!         move |p| seen.lock().unwrap().push((p.state, p.elapsed.as_secs()))
//!     });
//! let mut polls = 0;
//! let done = runner
//!     .run("job-1", || {
//!         polls += 1;
//!         let state = if polls < 3 { JobState::Running } else { JobState::Succeeded };
//!         async move { Ok(Observation::Status(JobStatus::new(state, "x", ()))) }
//!     })
//!     .await?;
//! assert_eq!(done.state, JobState::Succeeded);
//! // polls after 2 s, then 4 s more, then 8 s more
//! assert_eq!(
//!     *seen.lock().unwrap(),
//!     [(JobState::Running, 2), (JobState::Running, 6), (JobState::Succeeded, 14)]
//! );
//! # Ok(())
//! # }
//! ```
//!
//! A token that expires during a long job is the bearer layer's business:
//! each poll goes through the stack, which reads the token when the request
//! is sent and refreshes it ahead of expiry.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffState, Jitter, SharedRng};
use crate::error::BoxError;

/// A job's state, common to both vendors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Accepted, not started (Genesys `QUEUED`).
    Queued,
    /// In progress (Genesys `PENDING`, CXone `RUNNING`).
    Running,
    /// Done; results ready (Genesys `FULFILLED`, CXone `SUCCEEDED`).
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Expired (results no longer available, or never picked up).
    Expired,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// A short stable name: `queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`, `expired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reading of a job's status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus<T> {
    /// The common state.
    pub state: JobState,
    /// The vendor's own name for it (`FULFILLED`, `SUCCEEDED`, ...).
    pub vendor_state: String,
    /// The vendor's error message, if any (empty strings are `None`).
    pub message: Option<String>,
    /// The vendor's status body, typed.
    pub detail: T,
}

impl<T> JobStatus<T> {
    /// A status without a message.
    pub fn new(state: JobState, vendor_state: impl Into<String>, detail: T) -> Self {
        Self {
            state,
            vendor_state: vendor_state.into(),
            message: None,
            detail,
        }
    }

    /// With the vendor's error message (an empty one is kept as `None`).
    pub fn message(mut self, message: Option<String>) -> Self {
        self.message = message.filter(|m| !m.trim().is_empty());
        self
    }
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation<T> {
    /// The job's status.
    Status(JobStatus<T>),
    /// The server asked to wait (a 429 or 503) this long (`None`: no usable
    /// hint, the runner's own interval applies). The runner waits at least
    /// its base interval.
    Wait(Option<Duration>),
}

/// Progress of a job, reported after every status read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// The job id.
    pub job_id: String,
    /// The common state.
    pub state: JobState,
    /// The vendor's state name.
    pub vendor_state: String,
    /// Status reads so far.
    pub polls: u32,
    /// Time since the runner started waiting.
    pub elapsed: Duration,
}

type ProgressFn = Arc<dyn Fn(&JobProgress) + Send + Sync>;

/// Polls a job to a terminal state. Cheap to clone; clones share the
/// progress callback and the random source.
#[derive(Clone)]
pub struct JobRunner {
    max_wait: Duration,
    backoff: Backoff,
    rng: SharedRng,
    reread_failed: Duration,
    progress: Option<ProgressFn>,
}

impl Default for JobRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl JobRunner {
    /// Poll after 2 s, doubling to 30 s with equal jitter (each wait in
    /// `[interval/2, interval]`), for at most one hour; re-read a `FAILED`
    /// without a message after 2 s.
    pub fn new() -> Self {
        Self {
            max_wait: Duration::from_secs(3600),
            backoff: Backoff::exponential(Duration::from_secs(2))
                .max_delay(Duration::from_secs(30))
                .jitter(Jitter::Equal),
            rng: SharedRng::from_os(),
            reread_failed: Duration::from_secs(2),
            progress: None,
        }
    }

    /// The longest the runner waits for a terminal state before failing
    /// with [`JobTimedOut`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The poll interval: the delay before poll `n` is the backoff's delay
    /// for retry `n`.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The random source of the jitter.
    pub fn rng(mut self, rng: SharedRng) -> Self {
        self.rng = rng;
        self
    }

    /// How long to wait before re-reading a `FAILED` that came without an
    /// error message (it sometimes arrives a moment later).
    pub fn reread_failed_after(mut self, delay: Duration) -> Self {
        self.reread_failed = delay;
        self
    }

    /// Call `f` after every status read (keep it quick).
    pub fn on_progress<F>(mut self, f: F) -> Self
    where
        F: Fn(&JobProgress) + Send + Sync + 'static,
    {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Report progress to a [`watch`] channel instead: the receiver always
    /// holds the latest [`JobProgress`] (`None` before the first read).
    pub fn watch(self) -> (Self, watch::Receiver<Option<JobProgress>>) {
        let (tx, rx) = watch::channel(None);
        let runner = self.on_progress(move |p| {
            tx.send_replace(Some(p.clone()));
        });
        (runner, rx)
    }

    /// [`run`](Self::run) until the job succeeds: any other terminal
    /// state is a [`JobFailed`] naming `vendor`'s job.
    pub(crate) async fn run_to_success<T, F, Fut>(
        &self,
        vendor: &'static str,
        job_id: &str,
        poll: F,
    ) -> Result<JobStatus<T>, BoxError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Observation<T>, BoxError>>,
    {
        let status = self.run(job_id, poll).await?;
        if status.state == JobState::Succeeded {
            Ok(status)
        } else {
            Err(JobFailed::new(vendor, job_id, &status).into())
        }
    }

    /// Poll with `poll` until the job reaches a terminal state, and return
    /// that status (failed ones included: the caller maps them to its
    /// error). Errors: [`JobTimedOut`] past the maximum wait, or the first
    /// error `poll` returns, wrapped in [`JobPollFailed`] (the job itself may
    /// still be running: wait for it again later).
    pub async fn run<T, F, Fut>(&self, job_id: &str, mut poll: F) -> Result<JobStatus<T>, BoxError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Observation<T>, BoxError>>,
    {
        let started = Instant::now();
        let mut state = BackoffState::default();
        let mut polls = 0u32;
        let mut step = 0u32;
        let mut last: Option<JobState> = None;
        let mut next: Option<Duration> = None;
        let mut reread = false;
        loop {
            let delay = match next.take() {
                Some(delay) => delay,
                None => {
                    step = step.saturating_add(1);
                    self.backoff.next_delay(step, &mut state, &self.rng)
                }
            };
            let elapsed = started.elapsed();
            if elapsed.saturating_add(delay) > self.max_wait {
                return Err(JobTimedOut {
                    job_id: job_id.to_owned(),
                    waited: elapsed,
                    last_state: last,
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            let observation = poll().await.map_err(|source| JobPollFailed {
                job_id: job_id.to_owned(),
                source,
            })?;
            let status = match observation {
                Observation::Wait(hint) => {
                    // never faster than the base interval: a `Retry-After: 0`
                    // loop must not become a hot loop
                    next = hint.map(|d| d.max(self.backoff.base_delay()));
                    continue;
                }
                Observation::Status(status) => status,
            };
            polls += 1;
            last = Some(status.state);
            if let Some(progress) = &self.progress {
                progress(&JobProgress {
                    job_id: job_id.to_owned(),
                    state: status.state,
                    vendor_state: status.vendor_state.clone(),
                    polls,
                    elapsed: started.elapsed(),
                });
            }
            if status.state == JobState::Failed && status.message.is_none() && !reread {
                reread = true;
                next = Some(self.reread_failed);
                continue;
            }
            if status.state.is_terminal() {
                return Ok(status);
            }
        }
    }
}

impl fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRunner")
            .field("max_wait", &self.max_wait)
            .field("backoff", &self.backoff)
            .field("reread_failed", &self.reread_failed)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The job did not reach a terminal state within the maximum wait. It may
/// still finish: wait for it again, or cancel it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTimedOut {
    job_id: String,
    waited: Duration,
    last_state: Option<JobState>,
}

impl JobTimedOut {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// How long the runner waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The last state read, if any.
    pub fn last_state(&self) -> Option<JobState> {
        self.last_state
    }
}

impl fmt::Display for JobTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} not finished after {:?} (last state: {})",
            self.job_id,
            self.waited,
            self.last_state.map_or("none", |s| s.as_str())
        )
    }
}

impl StdError for JobTimedOut {}

/// Reading a job's status failed (after the stack's own retries); the job
/// itself may still be running.
#[derive(Debug)]
pub struct JobPollFailed {
    job_id: String,
    source: BoxError,
}

impl JobPollFailed {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

impl fmt::Display for JobPollFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the status of job {} failed", self.job_id)
    }
}

impl StdError for JobPollFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A job ended in `FAILED`, `CANCELLED` or `EXPIRED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailed {
    vendor: &'static str,
    job_id: String,
    state: JobState,
    vendor_state: String,
    message: Option<String>,
}

impl JobFailed {
    pub(crate) fn new<T>(vendor: &'static str, job_id: &str, status: &JobStatus<T>) -> Self {
        Self {
            vendor,
            job_id: job_id.to_owned(),
            state: status.state,
            vendor_state: status.vendor_state.clone(),
            message: status.message.clone(),
        }
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The terminal state.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// The vendor's state name.
    pub fn vendor_state(&self) -> &str {
        &self.vendor_state
    }

    /// The vendor's error message, if it gave one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for JobFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} job {} ended {}",
            self.vendor, self.job_id, self.vendor_state
        )?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl StdError for JobFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> JobRunner {
        JobRunner::new().backoff(
            Backoff::exponential(Duration::from_secs(2))
                .max_delay(Duration::from_secs(30))
                .jitter(Jitter::None),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_doubles_to_30_s_and_the_max_wait_ends_it() {
        let runner = exact().max_wait(Duration::from_secs(100));
        let start = Instant::now();
        let mut at = Vec::new();
        let err = runner
            .run("j", || {
                at.push(start.elapsed().as_secs());
                async {
                    Ok(Observation::Status(JobStatus::new(
                        JobState::Running,
                        "RUNNING",
                        (),
                    )))
                }
            })
            .await
            .unwrap_err();
        // 2, 4, 8, 16, 30, 30: the next (30 s at 90 s) would pass 100 s
        assert_eq!(at, [2, 6, 14, 30, 60, 90]);
        let timed_out = err.downcast_ref::<JobTimedOut>().unwrap();
        assert_eq!(timed_out.waited(), Duration::from_secs(90));
        assert_eq!(timed_out.last_state(), Some(JobState::Running));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(90),
            "no pointless sleep"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_wait_replaces_the_interval_and_a_failed_without_message_is_reread() {
        let start = Instant::now();
        let mut at = Vec::new();
        let mut n = 0;
        let (runner, progress) = exact().watch();
        let done = runner
            .run("j", || {
                n += 1;
                at.push(start.elapsed().as_secs());
                let observation = match n {
                    1 => Observation::Wait(Some(Duration::from_secs(7))),
                    2 => Observation::Status(JobStatus::new(JobState::Failed, "FAILED", ())),
                    _ => Observation::Status(
                        JobStatus::new(JobState::Failed, "FAILED", ())
                            .message(Some("disk full".into())),
                    ),
                };
                async move { Ok(observation) }
            })
            .await
            .unwrap();
        // 2 s, then the server's 7 s, then the 2 s re-read of the FAILED
        assert_eq!(at, [2, 9, 11]);
        assert_eq!(done.message.as_deref(), Some("disk full"));
        let last = progress.borrow().clone().unwrap();
        assert_eq!((last.polls, last.elapsed), (2, Duration::from_secs(11)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_server_wait_is_no_hot_loop() {
        let start = Instant::now();
        let mut at = Vec::new();
        let mut n = 0;
        exact()
            .run("j", || {
                n += 1;
                at.push(start.elapsed().as_secs());
                let observation = if n < 3 {
                    Observation::Wait(Some(Duration::ZERO))
                } else {
                    Observation::Status(JobStatus::new(JobState::Succeeded, "DONE", ()))
                };
                async move { Ok(observation) }
            })
            .await
            .unwrap();
        assert_eq!(at, [2, 4, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_error_is_typed_and_keeps_its_cause() {
        let err = exact()
            .run::<(), _, _>("j-9", || async { Err("boom".into()) })
            .await
            .unwrap_err();
        let failed = err.downcast_ref::<JobPollFailed>().unwrap();
        assert_eq!(failed.job_id(), "j-9");
        assert_eq!(failed.source().unwrap().to_string(), "boom");
    }
}
