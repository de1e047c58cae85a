//! The fleet's Redis connection and its health: one operation run within
//! the timeout, the wait before trying a Redis that failed again, and the
//! components told to fall back to local state or back to shared state.

use std::fmt;
use std::future::Future;

use tokio::time::Instant;

use super::conn::{self, Conn, Deployment};
use super::{FleetEvent, RedisFleet};

#[derive(Default)]
pub(super) struct Health {
    /// After a failure, Redis is not tried again before this instant.
    down_until: Option<Instant>,
    /// Components currently on their local fallback.
    degraded: Vec<&'static str>,
}

/// Why a Redis operation did not happen.
#[derive(Debug, Clone)]
pub(crate) struct RedisDown(pub(crate) String);

/// The fleet's Redis cannot be used now, from [`RedisFleet::check`]: the
/// reason, with no URL or credentials in it. The fleet itself does not
/// fail for it: each member uses its local state and tries again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUnavailable {
    pub(super) reason: String,
}

impl RedisUnavailable {
    /// Why, e.g. `redis: connection refused`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for RedisUnavailable {}

impl RedisFleet {
    pub(crate) fn emit(&self, event: FleetEvent) {
        if let Some(handler) = &self.inner.config.on_event {
            handler(&event);
        }
    }

    /// Run `op` on the shared connection, within the operation timeout.
    /// While Redis is known to be down, fails at once.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisDown>
    where
        F: FnOnce(Conn) -> Fut,
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
            op(conn).await.map_err(|e| conn::describe(&e))
        })
        .await
        .unwrap_or_else(|_| Err(RedisDown(format!("redis timed out after {timeout:?}"))));
        if result.is_err() {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            health.down_until = Some(Instant::now() + self.inner.config.retry_redis_after);
        }
        result
    }

    /// Connect now and tell what the fleet's Redis is: one server or a
    /// cluster. A Redis that cannot be reached is not fatal to the fleet
    /// (it falls back to local state and retries, as always); call this at
    /// start-up to say early and clearly where the shared state lives.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_cx::error::BoxError> {
    /// use tower_cx::fleet::{Deployment, RedisFleet};
    ///
    /// let fleet = RedisFleet::new("redis://127.0.0.1:6379")?;
    /// match fleet.check().await? {
    ///     Deployment::Cluster => println!("fleet state in a Redis Cluster"),
    ///     _ => println!("fleet state in Redis"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check(&self) -> Result<Deployment, RedisUnavailable> {
        let timeout = self.inner.config.op_timeout;
        match tokio::time::timeout(timeout, self.connection()).await {
            Ok(Ok(conn)) => Ok(conn.deployment()),
            Ok(Err(down)) => Err(RedisUnavailable { reason: down.0 }),
            Err(_) => Err(RedisUnavailable {
                reason: format!("redis timed out after {timeout:?}"),
            }),
        }
    }

    async fn connection(&self) -> Result<Conn, RedisDown> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = &self.inner.config;
        let conn = self
            .inner
            .seeds
            .connect(config.op_timeout, config.retry_redis_after)
            .await?;
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
