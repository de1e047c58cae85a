//! Fleet scale (feature `redis`): several instances behind a load balancer
//! behave like one API client, with their shared state in Redis.
//!
//! - [`SharedTokenSource`]: one token per (token URL, client id, scopes)
//!   for the whole fleet. The refresh is single-flight across processes (a
//!   short Redis lock with expiry, renewed while the fetch runs); the others
//!   read the new token; it is stored with a TTL matching its lifetime. If
//!   the lock holder dies, another instance takes over once the lock
//!   expires. A token the API refuses (401) is removed from Redis
//!   (compare-and-delete) and replaced once for the fleet.
//! - [`RedisPauseShare`] from [`RedisFleet::gate`]: a server hint seen by
//!   any instance closes the rate gate of all of them (a key with expiry,
//!   plus pub/sub so that waiters do not poll).
//! - [`RedisPauseShare`] from [`RedisFleet::breaker`] (optional): a breaker
//!   that trips on one instance opens every instance's breaker.
//! - [`RedisPacer`]: a fleet-wide pacing schedule (GCRA, atomic in a Lua
//!   script on the Redis clock), used by the priority limiter.
//!
//! Each piece plugs into the same trait as its in-memory counterpart
//! ([`TokenSource`],
//! [`PauseShare`](crate::share::PauseShare),
//! [`Pacer`](crate::priority::Pacer)). When Redis is unreachable, each
//! instance falls back to its local state and requests keep flowing; a
//! [`FleetEvent`] (and, with `on_event(audit.emitter().handler())`, an audit event)
//! says why, and shared state resumes when Redis returns. An idle pub/sub
//! subscription is checked with a `PING` ([`RedisFleet::keepalive`]), so a
//! half-open connection is noticed and replaced.
//!
//! Redis Cluster is not supported yet: a cluster is refused, with
//! [`ClusterUnsupported`] from [`RedisFleet::check`] at start-up and as the
//! reason of every [`FleetEvent::Degraded`] after, never used half-working.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use tower_cx::auth::{ClientCredentials, TokenCache};
//! use tower_cx::fleet::RedisFleet;
//! use tower_cx::genesys::Region;
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::stack::Stack;
//!
//! # fn main() -> Result<(), tower_cx::error::BoxError> {
//! let fleet = RedisFleet::new("redis://127.0.0.1:6379")?;
//! let credentials = ClientCredentials::genesys(&Region::EuWest1, "client-id", "secret")?;
//! let client = Stack::new()
//!     .bearer(TokenCache::new(fleet.client_credentials(credentials)))
//!     .limiter(
//!         PriorityLimitLayer::new(16)
//!             // 300 requests a minute for the whole fleet, not per instance
//!             .pacer(fleet.pacer("genesys:client-id", 300, Duration::from_secs(60)))
//!             .share_gate(fleet.gate("genesys:client-id")),
//!     )
//!     .build();
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

mod pacer;
mod pause;
mod token;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

pub use pacer::RedisPacer;
pub use pause::RedisPauseShare;
pub use token::SharedTokenSource;

use crate::auth::{ClientCredentials, TokenSource};
use crate::error::ConfigError;
pub use crate::observe::FleetEvent;

type EventHandler = Arc<dyn Fn(&FleetEvent) + Send + Sync>;

/// Settings of a [`RedisFleet`].
#[derive(Clone)]
struct Config {
    prefix: String,
    op_timeout: Duration,
    retry_redis_after: Duration,
    lock_ttl: Duration,
    keepalive: Duration,
    on_event: Option<EventHandler>,
}

/// The connection to the fleet's Redis and the factory of the shared
/// pieces. Clones share the connection. Nothing connects until first use;
/// a Redis that is down at start is retried, never fatal.
#[derive(Clone)]
pub struct RedisFleet {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    config: Config,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    health: Mutex<Health>,
    /// The server turned out to be a cluster: refused for good.
    cluster: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Health {
    /// After a failure, Redis is not tried again before this instant.
    down_until: Option<Instant>,
    /// Components currently on their local fallback.
    degraded: Vec<&'static str>,
}

/// Why a Redis operation did not happen.
#[derive(Debug, Clone)]
pub(crate) struct RedisDown(pub(crate) String);

/// The Redis server is a Redis Cluster node, which the fleet state does not
/// support yet: its scripts and pub/sub expect one node, and the client
/// does not follow `MOVED` redirections. Returned by
/// [`RedisFleet::check`]; while it holds, every component uses its local
/// state and reports [`FleetEvent::Degraded`] with this reason (never
/// silently). Use a standalone Redis (or a primary with replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterUnsupported;

impl fmt::Display for ClusterUnsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis: cluster mode is not supported for fleet state (use a standalone redis)")
    }
}

impl std::error::Error for ClusterUnsupported {}

/// Whether an `INFO cluster` reply says cluster mode is on.
pub(crate) fn cluster_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .any(|(name, value)| name == "cluster_enabled" && value.trim() == "1")
}

impl RedisFleet {
    /// A fleet on the Redis at `url` (`redis://host:port/db`, or
    /// `rediss://` with TLS where the redis crate supports it). Fails only
    /// for a malformed URL; nothing connects yet.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError::new("redis url", format!("{:?}", e.kind())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config: Config {
                    prefix: "tower-cx".into(),
                    op_timeout: Duration::from_millis(500),
                    retry_redis_after: Duration::from_secs(1),
                    lock_ttl: Duration::from_secs(10),
                    keepalive: Duration::from_secs(30),
                    on_event: None,
                },
                conn: tokio::sync::Mutex::new(None),
                health: Mutex::default(),
                cluster: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Self {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                config,
                conn: tokio::sync::Mutex::new(None),
                health: Mutex::default(),
                cluster: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The prefix of every key and channel (default `tower-cx`); fleets
    /// sharing one Redis need different prefixes.
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|c| c.prefix = prefix)
    }

    /// The longest a Redis operation may take before this instance uses its
    /// local state instead (default 500 ms).
    pub fn op_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.op_timeout = timeout)
    }

    /// After a failure, how long to use local state before trying Redis
    /// again (default 1 s).
    pub fn retry_redis_after(self, wait: Duration) -> Self {
        self.with(|c| c.retry_redis_after = wait)
    }

    /// How long a token refresh lock lives (default 10 s): how long the
    /// fleet waits for a dead holder before another instance takes over.
    /// A live holder renews it every third of this while its token request
    /// runs, however long that takes.
    pub fn lock_ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.lock_ttl = ttl.max(Duration::from_millis(10)))
    }

    /// How often an idle pub/sub subscription is checked with a `PING`
    /// (default 30 s): one not answered within the
    /// [operation timeout](Self::op_timeout) is taken as half-open, and the
    /// instance subscribes again (reporting [`FleetEvent::Degraded`] until
    /// it can).
    pub fn keepalive(self, every: Duration) -> Self {
        self.with(|c| c.keepalive = every.max(Duration::from_millis(10)))
    }

    /// Receive every [`FleetEvent`].
    pub fn on_event<F>(self, handler: F) -> Self
    where
        F: Fn(&FleetEvent) + Send + Sync + 'static,
    {
        let handler: EventHandler = Arc::new(handler);
        self.with(|c| c.on_event = Some(handler))
    }

    /// A token source shared by the fleet: one token per `key`, fetched by
    /// one instance at a time from `source`.
    pub fn token_source(&self, source: impl TokenSource, key: &str) -> SharedTokenSource {
        SharedTokenSource::new(self.clone(), Box::new(source), key)
    }

    /// [`token_source`](Self::token_source) over OAuth2 client credentials,
    /// keyed by token URL, client id and scopes.
    pub fn client_credentials(&self, credentials: ClientCredentials) -> SharedTokenSource {
        // no user info or query in a key: keys show in `Debug` and in Redis
        let key = format!(
            "{}|{}|{}",
            crate::auth::url_without_secrets(credentials.token_url()),
            credentials.client_id(),
            credentials.scopes().join(" ")
        );
        self.token_source(credentials, &key)
    }

    /// The fleet's rate gate called `name` (use one per vendor limit, e.g.
    /// per OAuth client), for
    /// [`PriorityLimitLayer::share_gate`](crate::priority::PriorityLimitLayer::share_gate).
    pub fn gate(&self, name: &str) -> RedisPauseShare {
        RedisPauseShare::new(self.clone(), "gate", name)
    }

    /// The fleet's breaker state called `name` (one per upstream), for
    /// [`CircuitBreakerLayer::share_state`](crate::breaker::CircuitBreakerLayer::share_state).
    pub fn breaker(&self, name: &str) -> RedisPauseShare {
        RedisPauseShare::new(self.clone(), "breaker", name)
    }

    /// A fleet-wide pacing schedule called `name`: `requests` per `per` for
    /// all instances together.
    pub fn pacer(&self, name: &str, requests: u32, per: Duration) -> RedisPacer {
        RedisPacer::new(self.clone(), name, requests, per)
    }

    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.inner.config.prefix)
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    pub(crate) fn lock_ttl_value(&self) -> Duration {
        self.inner.config.lock_ttl
    }

    pub(crate) fn keepalive_value(&self) -> Duration {
        self.inner.config.keepalive
    }

    pub(crate) fn op_timeout_value(&self) -> Duration {
        self.inner.config.op_timeout
    }

    pub(crate) fn emit(&self, event: FleetEvent) {
        if let Some(handler) = &self.inner.config.on_event {
            handler(&event);
        }
    }

    /// Run `op` on the shared connection, within the operation timeout.
    /// While Redis is known to be down, fails at once.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.inner.config.op_timeout;
        {
            let health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            if health
                .down_until
                .is_some_and(|until| Instant::now() < until)
            {
                return Err(RedisDown(
                    "redis unavailable (waiting before the next try)".into(),
                ));
            }
        }
        let result = tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            op(conn).await.map_err(|e| describe(&e))
        })
        .await
        .unwrap_or_else(|_| Err(RedisDown(format!("redis timed out after {timeout:?}"))));
        if result.is_err() {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            health.down_until = Some(Instant::now() + self.inner.config.retry_redis_after);
        }
        result
    }

    /// Connect now and check the server: `Err` for a Redis Cluster, which
    /// is refused (see [`ClusterUnsupported`]). A Redis that cannot be
    /// reached is not an error here (the fleet falls back to local state
    /// and retries, as always); call this at start-up to refuse a cluster
    /// early and clearly.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_cx::error::BoxError> {
    /// let fleet = tower_cx::fleet::RedisFleet::new("redis://127.0.0.1:6379")?;
    /// fleet.check().await?; // a cluster is refused here
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check(&self) -> Result<(), ClusterUnsupported> {
        let timeout = self.inner.config.op_timeout;
        let _ = tokio::time::timeout(timeout, self.connection()).await;
        if self
            .inner
            .cluster
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ClusterUnsupported);
        }
        Ok(())
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisDown> {
        if self
            .inner
            .cluster
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(RedisDown(ClusterUnsupported.to_string()));
        }
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let timeout = self.inner.config.op_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.inner.config.retry_redis_after);
        let conn = self
            .inner
            .client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| describe(&e))?;
        // A cluster is refused, not used half-working (CROSSSLOT, MOVED).
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn.clone())
            .await
            .map_err(|e| describe(&e))?;
        if cluster_enabled(&info) {
            self.inner
                .cluster
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(RedisDown(ClusterUnsupported.to_string()));
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Note that `component` works (again) on shared state.
    pub(crate) fn restored(&self, component: &'static str) {
        let was_degraded = {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            health.down_until = None;
            let before = health.degraded.len();
            health.degraded.retain(|c| *c != component);
            health.degraded.len() != before
        };
        if was_degraded {
            tracing::info!(component, "fleet state restored");
            self.emit(FleetEvent::Restored { component });
        }
    }

    /// Note that `component` fell back to local state.
    pub(crate) fn degraded(&self, component: &'static str, why: &RedisDown) {
        let newly = {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            let newly = !health.degraded.contains(&component);
            if newly {
                health.degraded.push(component);
            }
            newly
        };
        if newly {
            tracing::warn!(component, reason = %why.0, "fleet state unavailable, using local state");
            self.emit(FleetEvent::Degraded {
                component,
                reason: why.0.clone(),
            });
        }
    }
}

/// A Redis error as text with no URL or credentials in it.
fn describe(error: &redis::RedisError) -> RedisDown {
    let kind = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connection_refusal() {
        "connection refused".to_string()
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost".to_string()
    } else {
        format!("{:?}", error.kind())
    };
    RedisDown(format!("redis: {kind}"))
}

impl fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleet")
            .field("prefix", &self.inner.config.prefix)
            .field("op_timeout", &self.inner.config.op_timeout)
            .field("lock_ttl", &self.inner.config.lock_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_recognised_in_the_info_reply() {
        let cluster = "# Cluster\r\ncluster_enabled:1\r\n";
        let standalone = "# Cluster\r\ncluster_enabled:0\r\n";
        assert!(cluster_enabled(cluster));
        assert!(!cluster_enabled(standalone));
        assert!(!cluster_enabled(""));
        assert!(!cluster_enabled("cluster_enabled:10\r\n"));
        assert_eq!(
            RedisDown(ClusterUnsupported.to_string()).0,
            "redis: cluster mode is not supported for fleet state (use a standalone redis)"
        );
    }
}
