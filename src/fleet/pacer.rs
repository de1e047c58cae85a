//! One pacing schedule for the fleet: GCRA in a Lua script.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::RedisFleet;
use crate::priority::{LocalPacer, Pacer, PacerFuture};

/// Reserves the next slot of the schedule on the Redis clock (GCRA). KEYS:
/// the schedule. ARGV: interval and burst tolerance in microseconds.
/// Returns the wait in microseconds.
const RESERVE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return wait";

/// A fleet-wide [`Pacer`]: `requests` per `per` for every instance
/// together, each slot reserved atomically in Redis (GCRA on the Redis
/// clock, so instances' clocks do not matter). Made by
/// [`RedisFleet::pacer`]; give it to
/// [`PriorityLimitLayer::pacer`](crate::priority::PriorityLimitLayer::pacer).
///
/// Without Redis, the instance paces itself alone at the same rate (its
/// local state), and says so with a [`FleetEvent`](super::FleetEvent).
#[derive(Clone)]
pub struct RedisPacer {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    key: String,
    interval_us: u64,
    tolerance_us: u64,
    script: redis::Script,
    local: LocalPacer,
}

impl RedisPacer {
    pub(crate) fn new(fleet: RedisFleet, name: &str, requests: u32, per: Duration) -> Self {
        let local = LocalPacer::new(requests, per);
        Self {
            inner: Arc::new(Inner {
                key: fleet.key("pace", name),
                fleet,
                interval_us: local.interval().as_micros().max(1) as u64,
                tolerance_us: 0,
                script: redis::Script::new(RESERVE),
                local,
            }),
        }
    }

    /// Let up to `burst` requests go at once within the rate.
    pub fn burst(self, burst: u32) -> Self {
        let inner = &self.inner;
        let tolerance_us = inner.interval_us * u64::from(burst.max(1) - 1);
        Self {
            inner: Arc::new(Inner {
                fleet: inner.fleet.clone(),
                key: inner.key.clone(),
                interval_us: inner.interval_us,
                tolerance_us,
                script: inner.script.clone(),
                local: inner.local.clone().burst(burst),
            }),
        }
    }
}

impl Pacer for RedisPacer {
    fn reserve(&self) -> PacerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (key, script) = (inner.key.clone(), inner.script.clone());
            let (interval, tolerance) = (inner.interval_us, inner.tolerance_us);
            let reserved: Result<i64, _> = inner
                .fleet
                .run(|mut conn| async move {
                    script
                        .key(&key)
                        .arg(interval)
                        .arg(tolerance)
                        .invoke_async(&mut conn)
                        .await
                })
                .await;
            match reserved {
                Ok(wait_us) => {
                    inner.fleet.restored("pacer");
                    Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))
                }
                Err(down) => {
                    inner.fleet.degraded("pacer", &down);
                    inner.local.reserve_now()
                }
            }
        })
    }
}

impl fmt::Debug for RedisPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPacer")
            .field("key", &self.inner.key)
            .field("interval", &Duration::from_micros(self.inner.interval_us))
            .finish_non_exhaustive()
    }
}
