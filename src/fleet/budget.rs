//! One retry budget for the fleet: a local view on the request path,
//! settled with Redis in the background.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{RedisDown, RedisFleet};
use crate::error::ConfigError;
use crate::retry::{Budget, BudgetUnits, RetryBudget};

/// Adds this member's unsettled deposits and withdrawals to the current
/// slot of the window (on the Redis clock), drops the slots that left the
/// window, and returns the fleet's balance over the window. KEYS: the
/// budget's hash (slot number -> units). ARGV: slot length in ms, slots in
/// the window, the change in units, the key's expiry in ms.
const SETTLE: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slots = tonumber(ARGV[2])
local current = math.floor(now_ms / tonumber(ARGV[1]))
local delta = tonumber(ARGV[3])
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], string.format('%d', current), delta)
end
local balance = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local slot = tonumber(fields[i])
  if slot == nil or current - slot >= slots then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    balance = balance + tonumber(fields[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return balance";

/// A retry budget shared by a fleet: retries across all members together
/// stay within `percent` of all first attempts plus one reserve of
/// `min_per_sec` per second, where a [`RetryBudget`] per member would allow
/// one reserve per member (and, in a storm, each member's own share). Made
/// by [`RedisFleet::retry_budget`]; give it to
/// [`RetryLayer::budget`](crate::retry::RetryLayer::budget). Clones share.
///
/// The request path never waits for Redis: each member decides on its own
/// view (the fleet's balance at its last settlement, plus what it deposited
/// and withdrew since), and a background task settles with Redis every
/// [`settle_every`](Self::settle_every) (100 ms by default), or at once
/// when [`batch`](Self::batch) retries are unsettled. A member idle for an
/// interval stops settling, and settles at once on its next deposit or
/// retry (its first decisions after a rest use the view of its last
/// settlement, within the same `batch` bound). A budget that outlives the
/// runtime its settling task ran on starts a new task on its next use.
/// The window is kept in
/// Redis on the Redis clock, in the slots a [`RetryBudget`] uses.
///
/// **Overshoot.** A member allows at most `batch` retries (8 by default)
/// that the fleet has not seen yet; beyond them it refuses retries until
/// its settlement is back. So over the window the fleet makes at most
/// `reserve + percent * first attempts + members * batch` retries: the
/// budget, plus `batch` per member.
///
/// **Without Redis**, each member falls back to its own [`RetryBudget`]
/// with the same settings (which has seen its own deposits and retries) and
/// reports [`FleetEvent::Degraded`](super::FleetEvent::Degraded) with the
/// component `retry_budget`; the fleet's budget resumes at the next
/// settlement that reaches Redis. Members sharing a budget should use the
/// same settings: each deposits with its own `percent`.
#[derive(Clone)]
pub struct RedisRetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    key: String,
    script: redis::Script,
    local: RetryBudget,
    units: BudgetUnits,
    ttl: Duration,
    every: Duration,
    batch: u32,
    state: Mutex<View>,
    wake: Arc<Notify>,
    started: AtomicBool,
    /// Deposited or withdrew since the settling task last looked.
    used: AtomicBool,
    /// The settling task rests until the next use.
    parked: AtomicBool,
    /// Settlements begun (for the tests).
    #[cfg(test)]
    settlements: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // a resting settling task wakes, finds the budget gone and ends
        self.wake.notify_one();
    }
}

/// What this member knows of the fleet's budget, in the budget's units.
#[derive(Debug, Default)]
struct View {
    /// The last settlement failed: the local budget decides.
    degraded: bool,
    /// The fleet's balance at the last settlement (without the reserve).
    fleet: i64,
    /// Deposits minus withdrawals not sent to Redis yet.
    pending: i64,
    /// Sent, not answered yet.
    in_flight: i64,
    pending_withdrawals: u32,
    in_flight_withdrawals: u32,
}

impl View {
    fn unsettled_withdrawals(&self) -> u32 {
        self.pending_withdrawals + self.in_flight_withdrawals
    }
}

impl RedisRetryBudget {
    pub(crate) fn new(
        fleet: RedisFleet,
        name: &str,
        ttl: Duration,
        min_per_sec: u32,
        percent: f32,
    ) -> Result<Self, ConfigError> {
        let local = RetryBudget::new(ttl, min_per_sec, percent)?;
        let units = local.units().expect("a windowed budget");
        Ok(Self {
            inner: Arc::new(Inner {
                key: fleet.key("budget", name),
                fleet,
                script: redis::Script::new(SETTLE),
                local,
                units,
                ttl,
                every: Duration::from_millis(100),
                batch: 8,
                state: Mutex::default(),
                wake: Arc::new(Notify::new()),
                started: AtomicBool::new(false),
                used: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                #[cfg(test)]
                settlements: Default::default(),
            }),
        })
    }

    fn with(self, change: impl FnOnce(&mut Duration, &mut u32)) -> Self {
        let inner = &self.inner;
        let (mut every, mut batch) = (inner.every, inner.batch);
        change(&mut every, &mut batch);
        Self {
            inner: Arc::new(Inner {
                fleet: inner.fleet.clone(),
                key: inner.key.clone(),
                script: inner.script.clone(),
                local: inner.local.clone(),
                units: inner.units,
                ttl: inner.ttl,
                every,
                batch,
                state: Mutex::default(),
                wake: Arc::new(Notify::new()),
                started: AtomicBool::new(false),
                used: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                #[cfg(test)]
                settlements: Default::default(),
            }),
        }
    }

    /// How often the member settles with Redis while it is in use (default
    /// 100 ms; at least 1 ms): how stale its view of the others can be.
    pub fn settle_every(self, every: Duration) -> Self {
        self.with(|e, _| *e = every.max(Duration::from_millis(1)))
    }

    /// How many retries a member may allow before the fleet has seen them
    /// (default 8, at least 1): the bound of the overshoot, per member.
    pub fn batch(self, batch: u32) -> Self {
        self.with(|_, b| *b = batch.max(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.view()
    }

    /// Start the settling task on first use, inside the runtime.
    fn ensure_started(&self) {
        if self.inner.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            let (weak, wake) = (Arc::downgrade(&self.inner), self.inner.wake.clone());
            runtime.spawn(settle_while_used(weak, wake, self.inner.every));
        }
    }
}

/// Settle now, then every `every` or when woken, as long as the budget
/// lives; after an interval without a deposit or a withdrawal, rest until
/// the next one (an idle member sends Redis nothing).
async fn settle_while_used(budget: Weak<Inner>, wake: Arc<Notify>, every: Duration) {
    let _restart = Restart(budget.clone());
    loop {
        let Some(inner) = budget.upgrade() else {
            return;
        };
        inner.used.store(false, Ordering::SeqCst);
        inner.settle().await;
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
        }
        let Some(inner) = budget.upgrade() else {
            return;
        };
        if inner.used.load(Ordering::SeqCst) {
            continue;
        }
        // idle since the last settlement: rest; the next use wakes us (a
        // use between the two checks is seen by one side or the other)
        inner.parked.store(true, Ordering::SeqCst);
        if inner.used.load(Ordering::SeqCst) {
            inner.parked.store(false, Ordering::SeqCst);
            continue;
        }
        drop(inner);
        wake.notified().await;
    }
}

/// Dropped with the settling task: if the budget outlives it (its runtime
/// shut down), the next use starts a new one on the runtime it runs on.
struct Restart(Weak<Inner>);

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.parked.store(false, Ordering::SeqCst);
            inner.started.store(false, Ordering::SeqCst);
        }
    }
}

impl Inner {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn settle(&self) {
        #[cfg(test)]
        self.settlements.fetch_add(1, Ordering::Relaxed);
        let delta = self.begin_settlement();
        let (key, script) = (self.key.clone(), self.script.clone());
        let slot_ms = self.units.slot.as_millis().max(1) as u64;
        let slots = self.units.slots;
        // the hash outlives the window a little, then goes with its users
        let expire_ms = (self.ttl.as_millis() as u64).saturating_mul(2);
        let settled = self
            .fleet
            .run(|mut conn| async move {
                script
                    .key(&key)
                    .arg(slot_ms)
                    .arg(slots)
                    .arg(delta)
                    .arg(expire_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        self.end_settlement(settled);
    }

    /// A deposit or a withdrawal, called once its change is in the view:
    /// wake the settling task if it rests.
    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::SeqCst);
        }
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// What goes to Redis now: the unsettled change, then in flight.
    fn begin_settlement(&self) -> i64 {
        let mut view = self.view();
        view.in_flight = std::mem::take(&mut view.pending);
        view.in_flight_withdrawals = std::mem::take(&mut view.pending_withdrawals);
        view.in_flight
    }

    /// The fleet's balance, or why Redis could not tell it.
    fn end_settlement(&self, settled: Result<i64, RedisDown>) {
        let mut view = self.view();
        view.in_flight = 0;
        view.in_flight_withdrawals = 0;
        match settled {
            Ok(balance) => {
                view.fleet = balance;
                view.degraded = false;
                drop(view);
                self.fleet.restored("retry_budget");
            }
            Err(down) => {
                // what was not settled is dropped: the local budget has it
                view.degraded = true;
                view.pending = 0;
                view.pending_withdrawals = 0;
                drop(view);
                self.fleet.degraded("retry_budget", &down);
            }
        }
    }
}

impl Budget for RedisRetryBudget {
    fn deposit(&self, now: Instant) {
        self.ensure_started();
        Budget::deposit(&self.inner.local, now);
        {
            let mut view = self.lock();
            if !view.degraded {
                view.pending += self.inner.units.deposit;
            }
        }
        // after the change is in the view: a settling task that missed
        // this mark took the change in its settlement
        self.inner.mark_used();
    }

    fn withdraw(&self, now: Instant) -> bool {
        self.ensure_started();
        let allowed = self.withdraw_here(now);
        // after the change is in the view (see `deposit`)
        self.inner.mark_used();
        allowed
    }
}

impl RedisRetryBudget {
    /// [`Budget::withdraw`] without the mark for the settling task.
    fn withdraw_here(&self, now: Instant) -> bool {
        let units = self.inner.units;
        let mut view = self.lock();
        if view.degraded {
            drop(view);
            return Budget::withdraw(&self.inner.local, now);
        }
        if view.unsettled_withdrawals() >= self.inner.batch {
            // the fleet has not seen this member's last retries yet
            drop(view);
            self.inner.wake.notify_one();
            return false;
        }
        let balance = units.reserve + view.fleet + view.in_flight + view.pending;
        if balance < units.withdraw {
            return false;
        }
        view.pending -= units.withdraw;
        view.pending_withdrawals += 1;
        let full = view.unsettled_withdrawals() >= self.inner.batch;
        drop(view);
        if full {
            self.inner.wake.notify_one();
        }
        // the local budget follows, for a fallback that knows this member
        let _ = Budget::withdraw(&self.inner.local, now);
        true
    }
}

impl fmt::Debug for RedisRetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRetryBudget")
            .field("key", &self.inner.key)
            .field("local", &self.inner.local)
            .field("settle_every", &self.inner.every)
            .field("batch", &self.inner.batch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::FleetEvent;

    fn fleet(events: &Arc<Mutex<Vec<FleetEvent>>>) -> RedisFleet {
        let seen = events.clone();
        // nothing listens on port 1
        RedisFleet::new("redis://127.0.0.1:1")
            .unwrap()
            .on_event(move |e| seen.lock().unwrap().push(e.clone()))
    }

    fn budget(min_per_sec: u32, percent: f32) -> RedisRetryBudget {
        let events = Arc::default();
        fleet(&events)
            .retry_budget("api", Duration::from_secs(10), min_per_sec, percent)
            .unwrap()
    }

    // (no runtime: no settling task, the tests settle by hand)
    #[test]
    fn a_member_allows_at_most_batch_retries_the_fleet_has_not_seen() {
        let now = Instant::now();
        // a reserve of 100 retries, but at most 3 unsettled
        let budget = budget(10, 0.2).batch(3);
        assert_eq!((0..10).filter(|_| budget.withdraw(now)).count(), 3);
        // settled: the fleet has seen them, three more
        let delta = budget.inner.begin_settlement();
        assert_eq!(delta, -3000);
        assert!(!budget.withdraw(now), "in flight still counts");
        budget.inner.end_settlement(Ok(delta));
        assert_eq!((0..10).filter(|_| budget.withdraw(now)).count(), 3);
    }

    #[test]
    fn the_fleet_balance_decides_with_this_members_unsettled_change() {
        let now = Instant::now();
        let budget = budget(0, 0.5).batch(100);
        // no reserve: two first attempts here pay for one retry
        assert!(!budget.withdraw(now));
        budget.deposit(now);
        budget.deposit(now);
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
        // the others spent more than the fleet had: nothing left
        budget.inner.begin_settlement();
        budget.inner.end_settlement(Ok(-5_000));
        (0..4).for_each(|_| budget.deposit(now));
        assert!(!budget.withdraw(now), "-5000 + 2000 is not a retry");
        // the others' first attempts paid it back
        budget.inner.begin_settlement();
        budget.inner.end_settlement(Ok(1_500));
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }

    #[tokio::test]
    async fn without_redis_the_local_budget_decides_and_the_fleet_is_told() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let budget = fleet(&events)
            .retry_budget("api", Duration::from_secs(1), 1, 0.5)
            .unwrap();
        budget.inner.settle().await;
        let degraded = events.lock().unwrap().clone();
        assert!(
            matches!(
                degraded.as_slice(),
                [FleetEvent::Degraded { component: "retry_budget", reason }]
                    if reason.starts_with("redis")
            ),
            "{degraded:?}"
        );
        // the local budget: a reserve of one, then one per two requests
        let now = Instant::now();
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
        budget.deposit(now);
        budget.deposit(now);
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_member_stops_settling_and_its_next_use_settles_at_once() {
        let budget = budget(1, 0.2).settle_every(Duration::from_millis(100));
        let settlements = || budget.inner.settlements.load(Ordering::Relaxed);
        let now = Instant::now();
        // in use: a deposit every 50 ms for a second, a settlement every
        // 100 ms or so (each failed connection to the absent Redis takes
        // its own turn)
        for _ in 0..20 {
            budget.deposit(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let busy = settlements();
        assert_eq!(busy, 9);
        // idle for ten seconds: one more settlement (of the last deposit),
        // then nothing
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(settlements() - busy, 1);
        // the next use settles at once
        let before = settlements();
        budget.deposit(now);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(settlements(), before + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_budget_ends_its_resting_settling_task() {
        let budget = budget(1, 0.2);
        let weak = Arc::downgrade(&budget.inner);
        budget.deposit(Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(budget.inner.parked.load(Ordering::SeqCst), "resting");
        drop(budget);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(weak.upgrade().is_none());
        // the task ended: the runtime holds no other task
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(alive, 0);
    }

    #[test]
    fn a_budget_outliving_its_runtime_settles_again_on_the_next_one() {
        let budget = budget(1, 0.2);
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = paused();
        first.block_on(async {
            budget.deposit(Instant::now());
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
        assert_eq!(budget.inner.settlements.load(Ordering::Relaxed), 1);
        // the settling task goes with its runtime
        drop(first);
        paused().block_on(async {
            budget.deposit(Instant::now());
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
        assert_eq!(budget.inner.settlements.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let events = Arc::default();
        let err = fleet(&events)
            .retry_budget("api", Duration::ZERO, 1, 0.2)
            .unwrap_err();
        assert_eq!(err.setting(), "ttl");
        let err = fleet(&events)
            .retry_budget("api", Duration::from_secs(10), 1, -1.0)
            .unwrap_err();
        assert_eq!(err.setting(), "percent");
    }
}
