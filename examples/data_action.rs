//! Execute a Genesys Cloud data action through the resilient stack: retries
//! of what only the error body reveals (a remote endpoint's 503 inside a
//! 400), a dead letter for a call that fails after its retries, and a
//! re-run of that dead letter later.
//!
//! Run against the embedded mock (no credentials, no network):
//!
//! ```sh
//! cargo run --example data_action
//! ```
//!
//! Run against Genesys Cloud by setting:
//!
//! - `GENESYS_REGION`: `us-east-1`, `eu-west-1`, `mypurecloud.ie`, ...
//! - `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET`: an OAuth client
//!   (client credentials grant) allowed to execute data actions
//! - `GENESYS_ACTION_ID`: the data action's id
//! - `GENESYS_ACTION_INPUT`: its input as JSON (default `{}`)
//!
//! Against the real vendor the example executes the action once; a failure
//! is dead-lettered and re-run once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tower_cx::audit::{dead_letter_fn, DeadLetter};
use tower_cx::backoff::Backoff;
use tower_cx::error::BoxError;
use tower_cx::genesys::{BusinessRule, GenesysClient, GenesysError, Region};
use tower_cx::mock::{Fault, MockServer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let real = std::env::var("GENESYS_CLIENT_ID").is_ok();
    // the mock must live as long as the client
    let mut _mock = None;
    let (region, id, secret, action, input) = if real {
        let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        (
            env("GENESYS_REGION")?.parse::<Region>()?,
            env("GENESYS_CLIENT_ID")?,
            env("GENESYS_CLIENT_SECRET")?,
            env("GENESYS_ACTION_ID")?,
            serde_json::from_str::<Value>(
                &std::env::var("GENESYS_ACTION_INPUT").unwrap_or_else(|_| "{}".into()),
            )?,
        )
    } else {
        let mock = MockServer::start().await?;
        println!("embedded Genesys Cloud mock on {}", mock.base_url());
        let c = mock.config().clone();
        let region = mock.genesys_region();
        _mock = Some(mock);
        (
            region,
            c.client_id,
            c.client_secret,
            "custom_-_lookup".to_owned(),
            json!({"customerId": "42"}),
        )
    };

    let letters: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let sink = letters.clone();
    let stack = Stack::genesys(&region, id, secret)?.build();
    let genesys = GenesysClient::new(stack, &region)
        .retry(
            RetryLayer::new()
                .max_attempts(3)
                .backoff(Backoff::exponential(Duration::from_millis(200))),
        )
        .business_rule(BusinessRule::success_flag())
        // a lookup: safe to repeat, so its failures may be retried (an
        // action not declared idempotent is retried only on proof that it
        // was not processed)
        .idempotent_action(action.clone())
        .dead_letters(dead_letter_fn(move |letter| {
            sink.lock().unwrap().push(letter)
        }));
    let actions = genesys.data_actions();
    let path = format!("/api/v2/integrations/actions/{action}/execute");

    if let Some(mock) = &_mock {
        // 1. the remote endpoint answers 503 twice: the client retries
        mock.fault(Some(&path), Fault::RemoteEndpoint(503), 2);
        let output: Value = actions.execute(&action, &input).await?;
        println!("1. executed after 2 remote 503s: {output}");
        // 2. it keeps failing: three attempts, then a dead letter
        mock.fault(Some(&path), Fault::RemoteEndpoint(502), 3);
    }

    match actions.execute::<_, Value>(&action, &input).await {
        Ok(output) => println!("2. executed: {output}"),
        Err(error) => match error.downcast_ref::<GenesysError>() {
            Some(e) => println!(
                "2. failed for good: {e}\n   codes {:?}, remote status {:?}",
                e.codes().collect::<Vec<_>>(),
                e.remote_status().map(|s| s.as_u16()),
            ),
            None => println!("2. failed for good: {error}"),
        },
    }

    // 3. later: re-run what was dead-lettered, with its idempotency key
    let pending: Vec<DeadLetter> = std::mem::take(&mut *letters.lock().unwrap());
    for letter in pending {
        println!(
            "3. dead letter {} after {} attempts ({}): re-running",
            letter.correlation_id, letter.attempts, letter.error_code
        );
        let Some(request) = letter.request else {
            continue;
        };
        match actions.replay::<Value>(request).await {
            Ok(output) => println!("   re-run succeeded: {output}"),
            Err(error) => println!("   re-run failed: {error}"),
        }
    }

    if let Some(mock) = &_mock {
        let counters = mock.counters();
        println!(
            "mock: {} execute requests, {} side effects applied twice, {} Retry-After violations",
            counters.requests.get(&path).copied().unwrap_or(0),
            counters.duplicate_applications,
            counters.retry_after_violations
        );
    }
    Ok(())
}
