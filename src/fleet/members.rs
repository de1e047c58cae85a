//! Fleet membership: each member announces itself in one sorted set (score:
//! the Redis clock in milliseconds) and reads who else did recently.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{RedisFleet, RedisUnavailable};

/// One heartbeat, atomic on the Redis clock: announce, forget members not
/// seen within the TTL, keep the set no longer than needed, list the rest.
const BEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// This instance's membership of a fleet, from
/// [`RedisFleet::membership`]: it announces itself every
/// [`keepalive`](RedisFleet::keepalive) period (30 s by default) once
/// [spawned](Membership::spawn), and knows the members seen within three
/// periods. Clones share what was last seen.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_cx::error::BoxError> {
/// use tower_cx::fleet::RedisFleet;
///
/// let fleet = RedisFleet::new("redis://127.0.0.1:6379")?;
/// let membership = fleet.membership("gateway-a");
/// let heartbeat = membership.spawn();
/// // ... later, e.g. on a status page
/// println!("members: {:?}", membership.members());
/// # heartbeat.abort();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    key: String,
    member: String,
    script: redis::Script,
    /// The members as of the last heartbeat that reached Redis.
    seen: Mutex<Option<Vec<String>>>,
}

impl RedisFleet {
    /// This instance's membership of the fleet, as `member` (a name unique
    /// in the fleet: a host name, a pod name). Nothing is sent until a
    /// [`beat`](Membership::beat) or [`spawn`](Membership::spawn).
    pub fn membership(&self, member: impl Into<String>) -> Membership {
        Membership {
            inner: Arc::new(Inner {
                fleet: self.clone(),
                key: self.key("members", "all"),
                member: member.into(),
                script: redis::Script::new(BEAT),
                seen: Mutex::new(None),
            }),
        }
    }
}

impl Membership {
    /// This instance's name in the fleet.
    pub fn member(&self) -> &str {
        &self.inner.member
    }

    /// How long a member stays listed after its last heartbeat: three
    /// keepalive periods.
    pub fn ttl(&self) -> Duration {
        self.inner.fleet.keepalive_value() * 3
    }

    /// The members seen at the last heartbeat that reached Redis, sorted
    /// (this one included); `None` before the first.
    pub fn members(&self) -> Option<Vec<String>> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Announce this member now and read the members: the
    /// [`members`](Self::members) from now on. When Redis cannot be used,
    /// the fleet reports `members` degraded (a `FleetEvent`) and the last
    /// list stays.
    pub async fn beat(&self) -> Result<Vec<String>, RedisUnavailable> {
        let inner = &self.inner;
        let (key, member, script) = (
            inner.key.clone(),
            inner.member.clone(),
            inner.script.clone(),
        );
        let ttl_ms = u64::try_from(self.ttl().as_millis()).unwrap_or(u64::MAX);
        let result: Result<Vec<String>, _> = inner
            .fleet
            .run(|mut conn| async move {
                script
                    .key(&key)
                    .arg(&member)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match result {
            Ok(mut members) => {
                members.sort();
                inner.fleet.restored("members");
                *inner.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(members.clone());
                Ok(members)
            }
            Err(down) => {
                inner.fleet.degraded("members", &down);
                Err(RedisUnavailable { reason: down.0 })
            }
        }
    }

    /// Beat now and then every keepalive period on a Tokio task, until the
    /// task is aborted. Call it within a Tokio runtime.
    pub fn spawn(&self) -> JoinHandle<()> {
        let membership = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(membership.inner.fleet.keepalive_value());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let _ = membership.beat().await;
            }
        })
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.inner.member)
            .field("members", &self.members())
            .finish_non_exhaustive()
    }
}
