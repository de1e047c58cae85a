//! Submit-then-poll with the shared job runner: a Genesys Cloud analytics
//! conversation-details job (with a 429 while polling) read page by page,
//! and a NICE CXone data-extraction job that fails, is re-run with a stable
//! idempotency key, and whose result is downloaded at once. Progress is
//! shown from the runner's `watch` channel.
//!
//! Run against the embedded mock (no credentials, no network; the poll
//! interval is shortened to 200 ms so it takes seconds):
//!
//! ```sh
//! cargo run --example poll_job
//! ```
//!
//! Run against the real vendors (either or both), with the default poll
//! interval (2 s doubling to 30 s):
//!
//! - Genesys Cloud: `GENESYS_REGION` (`us-east-1`, `mypurecloud.ie`, ...),
//!   `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET`, and optionally
//!   `GENESYS_QUERY` (the job's query as JSON; default: yesterday).
//! - NICE CXone: `CXONE_TENANT_ID`, `CXONE_CLIENT_ID`, `CXONE_CLIENT_SECRET`,
//!   `CXONE_ACCESS_KEY_ID`, `CXONE_ACCESS_KEY_SECRET`, and `CXONE_JOB` (the
//!   data-extraction job definition as JSON).

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::cxone::{discover, CxoneClient, CXONE_ISSUER};
use tower_cx::error::BoxError;
use tower_cx::genesys::{GenesysClient, Region};
use tower_cx::jobs::{JobProgress, JobRunner};
use tower_cx::mock::{Fault, JobScript, MockServer};
use tower_cx::stack::Stack;

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// Print each progress update until the sender is gone.
fn show(mut progress: watch::Receiver<Option<JobProgress>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            if let Some(p) = progress.borrow_and_update().clone() {
                println!(
                    "   job {}: {:<10} poll {:>2}, {:>5.1} s",
                    p.job_id,
                    p.vendor_state,
                    p.polls,
                    p.elapsed.as_secs_f64()
                );
            }
        }
    })
}

fn runner(fast: bool) -> JobRunner {
    if fast {
        JobRunner::new().backoff(
            Backoff::exponential(Duration::from_millis(200))
                .max_delay(Duration::from_secs(2))
                .jitter(Jitter::Equal),
        )
    } else {
        JobRunner::new()
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let real_genesys = std::env::var("GENESYS_CLIENT_ID").is_ok();
    let real_cxone = std::env::var("CXONE_TENANT_ID").is_ok();
    let mock = if real_genesys || real_cxone {
        None
    } else {
        let mock = MockServer::start().await?;
        println!(
            "embedded Genesys Cloud / NICE CXone mock on {}",
            mock.base_url()
        );
        Some(mock)
    };
    if real_genesys || mock.is_some() {
        genesys(mock.as_ref()).await?;
    }
    if real_cxone || mock.is_some() {
        cxone(mock.as_ref()).await?;
    }
    if let Some(mock) = &mock {
        let c = mock.counters();
        println!(
            "mock: {} requests, {} tokens, {} Retry-After violations, {} side effects applied twice, {} extraction-limit violations, {} tokens sent to the file host",
            c.total_requests,
            c.tokens_issued,
            c.retry_after_violations,
            c.duplicate_applications,
            c.extraction_limit_violations,
            c.credentials_sent_to_files
        );
    }
    Ok(())
}

async fn genesys(mock: Option<&MockServer>) -> Result<(), BoxError> {
    let (region, id, secret, query) = match mock {
        Some(mock) => {
            let c = mock.config().clone();
            (
                mock.genesys_region(),
                c.client_id,
                c.client_secret,
                json!({"interval": "mock"}),
            )
        }
        None => (
            env("GENESYS_REGION")?.parse::<Region>()?,
            env("GENESYS_CLIENT_ID")?,
            env("GENESYS_CLIENT_SECRET")?,
            match std::env::var("GENESYS_QUERY") {
                Ok(text) => serde_json::from_str(&text)?,
                Err(_) => json!({"interval": yesterday()}),
            },
        ),
    };
    println!("Genesys Cloud analytics conversation-details job");
    let (runner, progress) = runner(mock.is_some()).watch();
    let printer = show(progress);
    let stack = Stack::genesys(&region, id, secret)?.build();
    // the runner (and the progress sender in it) lives in the client: the
    // printer ends when the client is dropped at the end of this block
    let (n, conversations) = {
        let genesys = GenesysClient::new(stack, &region).job_runner(runner);
        let jobs = genesys.analytics();
        let job_id = jobs.submit(&query).await?;
        if let Some(mock) = mock {
            mock.fault(
                Some(&format!(
                    "/api/v2/analytics/conversations/details/jobs/{job_id}"
                )),
                Fault::RetryAfterSecs(1),
                1,
            );
        }
        jobs.wait(&job_id).await?;
        let mut pages = Box::pin(jobs.results(&job_id));
        let (mut n, mut conversations) = (0, 0);
        while let Some(page) = pages.try_next().await? {
            n += 1;
            conversations += page.conversations.len();
        }
        (n, conversations)
    };
    let _ = printer.await;
    println!("   {conversations} conversations in {n} pages");
    Ok(())
}

async fn cxone(mock: Option<&MockServer>) -> Result<(), BoxError> {
    let (issuer, tenant, id, secret, key_id, key_secret, definition) = match mock {
        Some(mock) => {
            let c = mock.config().clone();
            (
                mock.base_url(),
                "mock-tenant".to_owned(),
                c.client_id,
                c.client_secret,
                c.access_key_id,
                c.access_key_secret,
                json!({"entityName": "contacts", "version": "3"}),
            )
        }
        None => (
            CXONE_ISSUER.to_owned(),
            env("CXONE_TENANT_ID")?,
            env("CXONE_CLIENT_ID")?,
            env("CXONE_CLIENT_SECRET")?,
            env("CXONE_ACCESS_KEY_ID")?,
            env("CXONE_ACCESS_KEY_SECRET")?,
            serde_json::from_str::<Value>(&env("CXONE_JOB")?)?,
        ),
    };
    println!("NICE CXone data-extraction job");
    let found = discover(&Stack::new().build(), &issuer, &tenant).await?;
    println!("   tenant in area {} at {}", found.area, found.api_endpoint);
    let (runner, progress) = runner(mock.is_some()).watch();
    let printer = show(progress);
    // the token goes to the discovered API endpoint only
    let stack = Stack::cxone(&found.token_endpoint, id, secret, key_id, key_secret)?
        .allow_origin(&found.api_endpoint)?
        .build();
    let file = {
        let cxone = CxoneClient::new(stack, &found.api_endpoint).job_runner(runner);
        let extraction = cxone.data_extraction();
        if let Some(mock) = mock {
            // the first run fails; its re-run succeeds
            mock.script_cxone_job(JobScript::new([("RUNNING", ""), ("FAILED", "worker lost")]));
        }
        let job = extraction.submit(&definition).await?;
        let done = match extraction.wait(&job).await {
            Ok(done) => done,
            Err(error) => {
                println!("   {error}: re-running");
                let again = extraction.rerun(&job).await?;
                println!(
                    "   re-run as job {} (idempotency key {})",
                    again.id(),
                    again.idempotency_key()
                );
                extraction.wait(&again).await?
            }
        };
        extraction.download(&done).await?
    };
    let _ = printer.await;
    println!(
        "   downloaded {} bytes, {} lines",
        file.len(),
        file.iter().filter(|b| **b == b'\n').count()
    );
    Ok(())
}

/// Yesterday as an ISO-8601 interval, from the system clock.
fn yesterday() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let today = secs / 86_400;
    format!("{}/{}", iso_date(today - 1), iso_date(today))
}

/// `YYYY-MM-DDT00:00:00Z` for a day number since the Unix epoch.
fn iso_date(days: u64) -> String {
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
}
