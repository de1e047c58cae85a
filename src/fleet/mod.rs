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
//! - [`RedisRetryBudget`] from [`RedisFleet::retry_budget`]: one retry
//!   budget for the fleet, so that a fleet in a storm adds at most the
//!   budget's share of retries in total, not per member; settled with
//!   Redis in the background, never waited for on the request path.
//! - [`Membership`] from [`RedisFleet::membership`]: which members are
//!   alive (a heartbeat every keepalive period), for a status page.
//!
//! Each piece plugs into the same trait as its in-memory counterpart
//! ([`TokenSource`],
//! [`PauseShare`](crate::share::PauseShare),
//! [`Pacer`](crate::priority::Pacer),
//! [`Budget`](crate::retry::Budget)). When Redis is unreachable, each
//! instance falls back to its local state and requests keep flowing; a
//! [`FleetEvent`] (and, with `on_event(audit.emitter().handler())`, an audit event)
//! says why, and shared state resumes when Redis returns. An idle pub/sub
//! subscription is checked with a `PING` ([`RedisFleet::keepalive`]), so a
//! half-open connection is noticed and replaced.
//!
//! # Deployments
//!
//! - **One server** (a primary, possibly with replicas):
//!   [`RedisFleet::new`]`("redis://host:6379")`.
//! - **Redis Cluster**: [`RedisFleet::new`] with any node's URL works too:
//!   at connect time the fleet asks the node (`INFO cluster`) and, if it is
//!   a cluster node, uses a cluster connection seeded by it, which follows
//!   the cluster's slots and `MOVED` redirections. [`RedisFleet::cluster`]
//!   names several nodes up front, so that the fleet can connect (and
//!   subscribe) while one of them is down. [`RedisFleet::check`] tells which
//!   it found.
//!
//! Every key carries a hash tag (`{...}`) that covers the whole name of
//! one shared piece, so each Lua script and each multi-command call touches
//! one slot, and different pieces spread over the cluster. Pauses travel
//! by classic pub/sub (`PUBLISH` inside the gate's script), which a cluster
//! forwards to every node; each member subscribes through a plain
//! connection to one node it was given (in turn, after a failure). The
//! redis crate's cluster client can subscribe only over RESP3 with a push
//! channel, and sharded pub/sub (`SSUBSCRIBE`) would need Redis 7 and a
//! subscription that follows slot moves; a plain subscription keeps one
//! listener for both deployments.
//!
//! # Keys
//!
//! With the default [`prefix`](RedisFleet::prefix) `tower-cx`:
//!
//! | key or channel | holds |
//! |---|---|
//! | `{tower-cx:token:KEY}` | the shared token (JSON, expires with it) |
//! | `{tower-cx:token:KEY}:lock` | the refresh lock (`SET NX PX`) |
//! | `{tower-cx:gate:NAME}` | a closed rate gate (expires with the pause) |
//! | `{tower-cx:gate:NAME}:closed` | the channel announcing gate pauses |
//! | `{tower-cx:breaker:NAME}`, `...:closed` | an open breaker, and its channel |
//! | `{tower-cx:pace:NAME}` | the pacing schedule (GCRA's next slot) |
//! | `{tower-cx:pace:NAME}:learned` | the interval a member learned from the server (µs; expires 10 s after the last write) |
//! | `{tower-cx:budget:NAME}` | a retry budget: a hash of window slot -> balance |
//! | `{tower-cx:members:all}` | the members: a sorted set of names by last heartbeat (ms) |
//!
//! `KEY` is the token source's key (for client credentials: token URL,
//! client id and scopes). This layout (the hash tags) is new in this
//! version: members of an older version use other keys, so during a
//! rolling upgrade the fleet runs two tokens, two gates and two pacing
//! schedules (each half at the full rate) until the last old member is
//! gone. Upgrade at a quiet time, or halve the rate while both run.
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

mod budget;
mod conn;
mod health;
mod members;
mod pacer;
mod pause;
mod token;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use budget::RedisRetryBudget;
pub use conn::Deployment;
use conn::{Conn, Seeds};
use health::Health;
pub(crate) use health::RedisDown;
pub use health::RedisUnavailable;
pub use members::Membership;
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
    seeds: Arc<Seeds>,
    config: Config,
    conn: tokio::sync::Mutex<Option<Conn>>,
    health: Mutex<Health>,
    /// The seed the next subscription goes through.
    next_seed: AtomicUsize,
}

impl RedisFleet {
    /// A fleet on the Redis at `url` (`redis://host:port/db`, or
    /// `rediss://` with TLS where the redis crate supports it): one server,
    /// or any node of a Redis Cluster (found at connect time). Fails only
    /// for a malformed URL; nothing connects yet.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let client = open(url)?;
        Ok(Self::on(Seeds {
            nodes: vec![client],
            cluster: false,
        }))
    }

    /// A fleet on the Redis Cluster with these nodes (`redis://host:port`
    /// each; one is enough, more let the fleet start and subscribe while
    /// some are down). The cluster's other nodes are found from them.
    /// Fails for no URL, a malformed one, or nodes with different
    /// credentials; nothing connects yet.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), tower_cx::error::ConfigError> {
    /// let fleet = tower_cx::fleet::RedisFleet::cluster(&[
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ])?;
    /// # let _ = fleet;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster<U: AsRef<str>>(urls: &[U]) -> Result<Self, ConfigError> {
        if urls.is_empty() {
            return Err(ConfigError::new("redis cluster", "no node URL given"));
        }
        let nodes = urls
            .iter()
            .map(|url| open(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        conn::cluster_client(&nodes, Duration::from_secs(1))
            .map_err(|e| ConfigError::new("redis cluster", format!("{:?}", e.kind())))?;
        Ok(Self::on(Seeds {
            nodes,
            cluster: true,
        }))
    }

    fn on(seeds: Seeds) -> Self {
        Self {
            inner: Arc::new(Inner {
                seeds: Arc::new(seeds),
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
                next_seed: AtomicUsize::new(0),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Self {
            inner: Arc::new(Inner {
                seeds: self.inner.seeds.clone(),
                config,
                conn: tokio::sync::Mutex::new(None),
                health: Mutex::default(),
                next_seed: AtomicUsize::new(0),
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

    /// A fleet-wide pacer called `name` with no rate of its own: it lets
    /// every slot go until a member that learns the rate
    /// ([`learn_rate`](crate::priority::PriorityLimitLayer::learn_rate))
    /// shares what it learned (see [`Pacer::learned`](crate::priority::Pacer::learned)),
    /// then paces the whole fleet to that rate: the advertised quota of a
    /// client is spent once by the fleet, not once per member.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), tower_cx::error::BoxError> {
    /// use tower_cx::fleet::RedisFleet;
    /// use tower_cx::priority::PriorityLimitLayer;
    ///
    /// let fleet = RedisFleet::new("redis://127.0.0.1:6379")?;
    /// let limiter = PriorityLimitLayer::new(16)
    ///     .learn_rate()
    ///     .pacer(fleet.learned_pacer("genesys:client-id"));
    /// # let _ = limiter;
    /// # Ok(())
    /// # }
    /// ```
    pub fn learned_pacer(&self, name: &str) -> RedisPacer {
        RedisPacer::new(self.clone(), name, u32::MAX, Duration::ZERO)
    }

    /// A retry budget shared by the fleet, called `name`: retries may add
    /// `percent` of the fleet's first attempts (0 to 1000, e.g. `0.2`),
    /// plus a reserve of `min_per_sec` per second, over a window of `ttl`
    /// (1 s to 60 s), as [`RetryBudget::new`](crate::retry::RetryBudget::new)
    /// but for all members together. Bad settings are a [`ConfigError`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), tower_cx::error::BoxError> {
    /// use std::time::Duration;
    /// use tower_cx::fleet::RedisFleet;
    /// use tower_cx::retry::RetryLayer;
    ///
    /// let fleet = RedisFleet::new("redis://127.0.0.1:6379")?;
    /// let budget = fleet.retry_budget("genesys", Duration::from_secs(10), 10, 0.2)?;
    /// let retry = RetryLayer::new().budget(budget);
    /// # let _ = retry;
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_budget(
        &self,
        name: &str,
        ttl: Duration,
        min_per_sec: u32,
        percent: f32,
    ) -> Result<RedisRetryBudget, ConfigError> {
        RedisRetryBudget::new(self.clone(), name, ttl, min_per_sec, percent)
    }

    /// The key of the shared piece `kind` called `name`: every key and
    /// channel of the fleet is built here, as this key or one of the
    /// [derived](Self::derived) names. The hash tag spans the whole key,
    /// from its first character: a `}` inside `name` only shortens the tag,
    /// equally for the key and its derived names, which stay in one slot.
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{{{}:{kind}:{name}}}", self.inner.config.prefix)
    }

    /// A further key or channel of the piece whose key is `key` (a lock, a
    /// channel): in the same hash slot.
    pub(crate) fn derived(key: &str, suffix: &str) -> String {
        format!("{key}:{suffix}")
    }

    /// A pub/sub connection through the next seed node (in a cluster,
    /// classic pub/sub reaches every node).
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let nodes = &self.inner.seeds.nodes;
        let next = self.inner.next_seed.fetch_add(1, Ordering::Relaxed);
        nodes[next % nodes.len()].get_async_pubsub().await
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
}

/// A client for `url`, or a typed error that does not print it.
fn open(url: &str) -> Result<redis::Client, ConfigError> {
    redis::Client::open(url).map_err(|e| ConfigError::new("redis url", format!("{:?}", e.kind())))
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
    fn every_key_of_a_piece_is_in_one_hash_slot() {
        let fleet = RedisFleet::new("redis://127.0.0.1:1").unwrap().prefix("p");
        let key = fleet.key("token", "https://login/oauth|id|");
        assert_eq!(key, "{p:token:https://login/oauth|id|}");
        let lock = RedisFleet::derived(&key, "lock");
        assert_eq!(lock, "{p:token:https://login/oauth|id|}:lock");
        // a brace in a name shortens the tag for the key and its derived
        // names alike
        let odd = fleet.key("gate", "a}b");
        let channel = RedisFleet::derived(&odd, "closed");
        let tag = |k: &str| k[..=k.find('}').unwrap()].to_string();
        assert_eq!(tag(&odd), tag(&channel));
        assert_eq!(tag(&odd), "{p:gate:a}");
    }

    #[test]
    fn bad_cluster_settings_are_typed_errors() {
        let none: [&str; 0] = [];
        assert_eq!(
            RedisFleet::cluster(&none).unwrap_err().setting(),
            "redis cluster"
        );
        let err =
            RedisFleet::cluster(&["redis://:secret-Q7Z@127.0.0.1:1", "not a url"]).unwrap_err();
        assert_eq!(err.setting(), "redis url");
        assert!(!err.to_string().contains("Q7Z"));
        assert!(RedisFleet::cluster(&["redis://127.0.0.1:1", "redis://127.0.0.1:2"]).is_ok());
    }
}
