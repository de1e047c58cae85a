//! The crate's layers and the typed Genesys Cloud client over your own
//! `reqwest::Client`, against the embedded mock (no credentials, no
//! network).
//!
//! The reqwest client is built here, with its own settings (a proxy, TLS
//! roots or a client certificate would go on the same builder); the token
//! requests and the API calls both go through it. The layers are composed
//! by hand in the canonical order, outermost first: Audit -> Retry ->
//! CircuitBreaker -> PriorityLimit -> Bearer -> Timeout -> reqwest. The
//! mock answers a 503 now and then; the retry layer sends the request
//! again, the same bytes each time.
//!
//! Run: `cargo run --example reqwest --features reqwest`.

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{BearerLayer, ClientCredentials, TokenCache};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::BoxError;
use tower_cx::genesys::GenesysClient;
use tower_cx::mock::{Fault, MockServer};
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::stack::{ServiceBuilderExt, Stack};
use tower_cx::transport::ReqwestTransport;

/// The layers over reqwest, boxed to give the client a nameable type.
type Service = BoxCloneSyncService<http::Request<Body>, http::Response<reqwest::Body>, BoxError>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockServer::start().await?;
    println!("embedded Genesys Cloud mock on {}", mock.base_url());
    let region = mock.genesys_region();
    let config = mock.config().clone();

    // Your reqwest client, configured as reqwest allows.
    let reqwest = reqwest::Client::builder()
        .user_agent("tower-cx-example")
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(8)
        // the layers see every 3xx (the crate's built-in client does not
        // follow redirects either)
        .redirect(reqwest::redirect::Policy::none())
        // the mock is on loopback: no proxy from the environment
        .no_proxy()
        .build()?;
    let transport = ReqwestTransport::new(reqwest);

    // Token requests over the same reqwest client; the token is sent to
    // the region's API origin only.
    let credentials = ClientCredentials::genesys(&region, config.client_id, config.client_secret)?
        .http_client(transport.clone());
    let bearer = BearerLayer::new(TokenCache::new(credentials)).allow_origin(&region.api_base())?;

    let audit = AuditLayer::new(NoopSink);
    let stats = audit.stats_handle();
    let service: Service = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .audit(audit)
            .with_retry(
                Stack::genesys_retry()
                    .max_attempts(4)
                    .backoff(Backoff::exponential(Duration::from_millis(50))),
            )
            .circuit_breaker(CircuitBreakerLayer::new())
            .priority_limit(PriorityLimitLayer::new(16))
            .layer(bearer)
            .timeout(Duration::from_secs(10))
            .service(transport),
    );
    let genesys = GenesysClient::new(service, &region).idempotent_action("lookup");

    // 1. an entity listing, its first answer a 503: the retry layer sends
    //    the GET again
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
    let pages: Vec<_> = genesys.list::<Value>("/api/v2/users").try_collect().await?;
    let users: usize = pages.iter().map(|page| page.entities.len()).sum();
    println!(
        "1. listed {users} users in {} pages, after one 503",
        pages.len()
    );

    // 2. a data action declared idempotent (a lookup), its first answer a
    //    503: sent again with the same body and idempotency key
    let execute = "/api/v2/integrations/actions/lookup/execute";
    mock.fault(Some(execute), Fault::Status(503), 1);
    let output: Value = genesys
        .data_actions()
        .execute("lookup", &json!({"customerId": "42"}))
        .await?;
    let keys = mock.idempotency_keys(execute);
    println!(
        "2. executed the lookup: {output}\n   {} attempts, one idempotency key: {}",
        keys.len(),
        keys.windows(2).all(|pair| pair[0] == pair[1]),
    );

    let s = stats.snapshot();
    let counters = mock.counters();
    println!(
        "audit: {} requests, {} attempts, {} retries, {} successes; \
         mock: {} tokens issued, {} side effects applied twice",
        s.requests,
        s.attempts,
        s.retries,
        s.successes,
        counters.tokens_issued,
        counters.duplicate_applications,
    );
    Ok(())
}
