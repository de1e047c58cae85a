//! One pacing schedule for the fleet: GCRA with per-priority horizons in a
//! Lua script.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RedisFleet;
use crate::priority::{LocalPacer, Pacer, PacerFuture, Priority, Reservation};

/// Reserves the next slot of the schedule on the Redis clock (GCRA), if the
/// asking priority's horizon allows. KEYS: the schedule, and the interval a
/// member learned from the server (if set, slots are at least that far
/// apart). ARGV: interval, burst tolerance and horizon in microseconds (a
/// horizon of -1: no limit; -2: one interval in force; -3: reserve
/// nothing), and the slots this member owes for costly requests, which move
/// the schedule on first. Returns `{1, wait}` for a slot after `wait`,
/// `{0, retry}` for none (ask again after `retry`), in microseconds; a
/// deferral writes only what was owed.
const RESERVE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local learned = tonumber(redis.call('GET', KEYS[2]) or '0')
if learned > interval then interval = learned end
local tolerance = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
if horizon == -2 then horizon = interval end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local owed = tonumber(ARGV[4])
if owed > 0 then
  tat = tat + owed * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
if horizon == -3 then
  return {0, 0}
end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if horizon >= 0 and wait > horizon then
  return {0, wait - horizon}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return {1, wait}";

/// A fleet-wide [`Pacer`]: `requests` per `per` for every instance
/// together, each slot reserved atomically in Redis (GCRA on the Redis
/// clock, so instances' clocks do not matter). Made by
/// [`RedisFleet::pacer`]; give it to
/// [`PriorityLimitLayer::pacer`](crate::priority::PriorityLimitLayer::pacer).
///
/// Priorities book the shared schedule to different horizons, as with
/// [`LocalPacer`]: by default a low priority request takes a slot only when
/// one is free now, a normal one books at most one slot ahead, a high one
/// any slot. So a high priority request on one instance never waits behind
/// the low priority backlog of the others: it waits at most about one slot
/// per instance. A deferred instance asks again when the schedule is near
/// enough for its priority: one round trip per reservation, plus one per
/// deferral (an instance saturating the schedule with low requests alone
/// asks twice per slot). [`horizon`](Self::horizon) changes the horizons.
///
/// Without Redis, the instance paces itself alone at the same rate (its
/// local state), and says so with a [`FleetEvent`](super::FleetEvent).
#[derive(Clone)]
pub struct RedisPacer {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    fleet: RedisFleet,
    key: String,
    /// The interval learned by a member (µs), shared: `key:learned`.
    learned_key: String,
    /// The last learned interval written, and when (throttles writes).
    written: Arc<Mutex<Option<(u64, tokio::time::Instant)>>>,
    interval_us: u64,
    tolerance_us: u64,
    /// Per priority (`Priority::index`); -1 for no limit.
    horizons_us: [i64; 3],
    script: redis::Script,
    local: LocalPacer,
    /// Slots charged for costly requests and not yet in Redis: taken by
    /// the next script call, a charge's own or a reservation's.
    owed: Arc<AtomicU64>,
}

impl RedisPacer {
    pub(crate) fn new(fleet: RedisFleet, name: &str, requests: u32, per: Duration) -> Self {
        let local = LocalPacer::new(requests, per);
        let interval_us = micros(local.interval()).max(1);
        let key = fleet.key("pace", name);
        Self {
            inner: Arc::new(Inner {
                learned_key: RedisFleet::derived(&key, "learned"),
                written: Arc::default(),
                key,
                fleet,
                interval_us: interval_us as u64,
                tolerance_us: 0,
                horizons_us: [0, HORIZON_ONE_INTERVAL, -1],
                script: redis::Script::new(RESERVE),
                local,
                owed: Arc::default(),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner::clone(&self.inner);
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Let up to `burst` requests go at once within the rate.
    pub fn burst(self, burst: u32) -> Self {
        self.with(|inner| {
            inner.tolerance_us = inner.interval_us * u64::from(burst.max(1) - 1);
            inner.local = inner.local.clone().burst(burst);
        })
    }

    /// A request of `priority` takes a slot only while it would wait at
    /// most `ahead` for it; otherwise its limiter asks again when it would
    /// (defaults: low zero, normal one interval, high no limit).
    /// `Duration::MAX` lifts the limit. Every instance sharing the schedule
    /// should use the same horizons.
    pub fn horizon(self, priority: Priority, ahead: Duration) -> Self {
        self.with(|inner| {
            inner.horizons_us[priority.index()] = if ahead == Duration::MAX {
                -1
            } else {
                micros(ahead)
            };
            inner.local = inner.local.clone().horizon(priority, ahead);
        })
    }
}

/// The horizon sentinel for "one interval in force" (normal's default),
/// which follows a learned rate.
const HORIZON_ONE_INTERVAL: i64 = -2;

/// The horizon sentinel for "reserve nothing": the call only charges what
/// is owed.
const CHARGE_ONLY: i64 = -3;

/// How long a learned interval stays in Redis after the last member wrote
/// it: while requests flow, advertising answers rewrite it every second.
const LEARNED_TTL_MS: u64 = 10_000;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl Inner {
    /// Run the script with `horizon`, first charging what is owed (to the
    /// local schedule instead when Redis is down).
    async fn call(&self, horizon: i64) -> Result<(i64, i64), ()> {
        let owed = self.owed.swap(0, Ordering::Relaxed);
        let (key, learned_key) = (self.key.clone(), self.learned_key.clone());
        let script = self.script.clone();
        let (interval, tolerance) = (self.interval_us, self.tolerance_us);
        let answer: Result<(i64, i64), _> = self
            .fleet
            .run(|mut conn| async move {
                script
                    .key(&key)
                    .key(&learned_key)
                    .arg(interval)
                    .arg(tolerance)
                    .arg(horizon)
                    .arg(owed)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match answer {
            Ok(answer) => {
                self.fleet.restored("pacer");
                Ok(answer)
            }
            Err(down) => {
                self.fleet.degraded("pacer", &down);
                self.local.charge(u32::try_from(owed).unwrap_or(u32::MAX));
                Err(())
            }
        }
    }
}

impl Pacer for RedisPacer {
    fn reserve(&self, priority: Priority) -> PacerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            match inner.call(inner.horizons_us[priority.index()]).await {
                Ok((1, us)) => Reservation::Granted(from_micros(us)),
                Ok((_, us)) => Reservation::Deferred(from_micros(us)),
                Err(()) => inner.local.try_reserve(priority),
            }
        })
    }

    /// Moves the fleet's schedule on by `units` slots: written to Redis by
    /// a task of its own, or by this member's next reservation if that
    /// comes first (or if there is no Tokio runtime to run the task on).
    /// With Redis down, the local fallback schedule is charged instead.
    fn charge(&self, units: u32) {
        if units == 0 {
            return;
        }
        self.inner
            .owed
            .fetch_add(u64::from(units), Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            if inner.owed.load(Ordering::Relaxed) > 0 {
                let _ = inner.call(CHARGE_ONLY).await;
            }
        });
    }

    /// Shares the learned interval with the fleet: written to Redis (at
    /// most once a second while it stays the same, kept 10 s after the last
    /// write), read by every member's reservations, which then space slots
    /// at least that far apart; never faster than the rate the pacer was
    /// made with. Also paces the local fallback.
    fn learned(&self, interval: Option<Duration>) {
        let inner = &self.inner;
        inner.local.learned(interval);
        let Some(interval) = interval else {
            // nothing learned: the last value expires by itself
            return;
        };
        let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        let now = tokio::time::Instant::now();
        {
            let mut written = inner.written.lock().unwrap_or_else(|e| e.into_inner());
            if written.is_some_and(|(last, at)| {
                last == us && now.saturating_duration_since(at) < Duration::from_secs(1)
            }) {
                return;
            }
            *written = Some((us, now));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = inner.clone();
        runtime.spawn(async move {
            let key = inner.learned_key.clone();
            let stored: Result<(), _> = inner
                .fleet
                .run(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(us)
                        .arg("PX")
                        .arg(LEARNED_TTL_MS)
                        .query_async(&mut conn)
                        .await
                })
                .await;
            match stored {
                Ok(()) => inner.fleet.restored("pacer"),
                Err(down) => inner.fleet.degraded("pacer", &down),
            }
        });
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
