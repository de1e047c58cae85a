//! The layers whose state can live in Redis (`--redis`): this instance's
//! own, or the fleet's.

use std::sync::Arc;

use tower_cx::audit::AuditLayer;
use tower_cx::auth::{ClientCredentials, TokenCache};
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::BoxError;
use tower_cx::metrics;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::Budget;

use super::flags::Flags;

/// The limiter, the breaker, the token cache and the retry budget, with
/// their state here or in the fleet.
pub struct Shared {
    pub limiter: PriorityLimitLayer,
    pub breaker: CircuitBreakerLayer,
    pub tokens: Option<TokenCache>,
    /// The fleet's retry budget; `None`: the retry layer's own.
    pub retry_budget: Option<Arc<dyn Budget>>,
    /// This member of the fleet, beating, for the status page.
    #[cfg(feature = "redis")]
    pub membership: Option<tower_cx::fleet::Membership>,
}

/// The name the layers' metrics carry (`name="upstream"`).
pub const METRICS_NAME: &str = "upstream";

/// The layers for `flags`: shared through Redis with `--redis`, this
/// instance's own otherwise. Fleet degradations and recoveries go to `audit`;
/// every layer's events also go to the metrics.
pub fn layers(
    flags: &Flags,
    audit: &AuditLayer,
    upstream: &str,
    credentials: Option<ClientCredentials>,
) -> Result<Shared, BoxError> {
    let limiter = PriorityLimitLayer::new(flags.concurrency)
        .max_queue(flags.queue_depth)
        .on_event(metrics::limiter_events(METRICS_NAME));
    match flags.redis.as_deref() {
        None => Ok(Shared {
            // pace to what the upstream advertises, or to its 429s; never
            // faster than `--rate`
            limiter: match flags.rate {
                Some((n, per)) => limiter.pacing(n, per).learn_rate(),
                None => limiter.learn_rate(),
            },
            breaker: breaker(),
            tokens: credentials.map(|c| {
                TokenCache::builder(c)
                    .on_event(metrics::auth_events(METRICS_NAME))
                    .build()
            }),
            retry_budget: None,
            #[cfg(feature = "redis")]
            membership: None,
        }),
        Some(url) => fleet(url, flags, audit, upstream, limiter, credentials),
    }
}

/// The breaker, its transitions counted in the metrics.
fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new().on_event(metrics::breaker_events(METRICS_NAME))
}

#[cfg(feature = "redis")]
fn fleet(
    url: &str,
    flags: &Flags,
    audit: &AuditLayer,
    upstream: &str,
    limiter: PriorityLimitLayer,
    credentials: Option<ClientCredentials>,
) -> Result<Shared, BoxError> {
    let to_audit = audit.emitter().handler();
    let to_metrics = metrics::fleet_events(METRICS_NAME);
    let fleet = tower_cx::fleet::RedisFleet::new(url)?.on_event(move |event| {
        to_audit(event);
        to_metrics(event);
    });
    println!("fleet state in Redis (shared token, rate gate, pacing and retry budget)");
    // Shared state is named after the OAuth client (vendors limit per client).
    let name = flags.client_id.as_deref().unwrap_or(upstream);
    let limiter = match flags.rate {
        Some((n, per)) => limiter.pacer(fleet.pacer(name, n, per)),
        // what any member learns paces the whole fleet
        None => limiter.learn_rate().pacer(fleet.learned_pacer(name)),
    };
    // the status page's list of members: this one by its host name
    let member = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("gateway-{}", std::process::id()));
    let membership = fleet.membership(member);
    membership.spawn();
    Ok(Shared {
        membership: Some(membership),
        limiter: limiter.share_gate(fleet.gate(name)),
        // one member finding the upstream down opens every member's breaker
        breaker: breaker().share_state(fleet.breaker(upstream)),
        tokens: credentials.map(|c| {
            TokenCache::builder(fleet.client_credentials(c))
                .on_event(metrics::auth_events(METRICS_NAME))
                .build()
        }),
        // the retry layer's default budget (10 s, 10/s, 20 %), for the
        // whole fleet: retries to this upstream, whichever member makes them
        retry_budget: Some(Arc::new(fleet.retry_budget(
            upstream,
            std::time::Duration::from_secs(10),
            10,
            0.2,
        )?)),
    })
}

#[cfg(not(feature = "redis"))]
fn fleet(
    _url: &str,
    _flags: &Flags,
    _audit: &AuditLayer,
    _upstream: &str,
    _limiter: PriorityLimitLayer,
    _credentials: Option<ClientCredentials>,
) -> Result<Shared, BoxError> {
    Err("--redis needs the redis feature: cargo install tower-cx --features gateway,redis".into())
}
