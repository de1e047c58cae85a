//! Fleet-wide pauses (a closed rate gate, an open breaker): a key with
//! expiry plus pub/sub.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{FleetEvent, RedisDown, RedisFleet};
use crate::share::{PauseShare, PauseTarget};

/// Sets the gate key (or the exhausted key beside it) unless it is already
/// set for longer, and tells the fleet. ARGV: wait in ms, the message, the channel. The channel is not a
/// key: a classic `PUBLISH` reaches every node of a cluster.
const ANNOUNCE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
  return 1
end
return 0";

/// The longest pause taken from the fleet (a message or the key), as the
/// limiter caps server hints: a bad message cannot pause a member for
/// years. Each member also applies its own cap (the limiter's `max_gate`,
/// the breaker's `max_open`).
pub(crate) const MAX_SHARED_PAUSE: Duration = Duration::from_secs(180);

/// The longest exhausted state taken from the fleet (a message or the
/// key): a week, past any daily or weekly cap, so that a bad message
/// cannot stop a member for years.
pub(crate) const MAX_SHARED_EXHAUSTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The suffix of an announcement of the exhausted state (`instance:ms:`
/// this); an instance that does not know it ignores the message.
const EXHAUSTED: &str = "exhausted";

/// A [`PauseShare`] through Redis.
///
/// - Made by [`RedisFleet::gate`] for
///   [`PriorityLimitLayer::share_gate`](crate::priority::PriorityLimitLayer::share_gate):
///   a server hint seen by any instance closes the rate gate of every
///   instance until it passes.
/// - Made by [`RedisFleet::breaker`] for
///   [`CircuitBreakerLayer::share_state`](crate::breaker::CircuitBreakerLayer::share_state):
///   a breaker that trips on one instance opens the breakers of all of them
///   for the same time; each then probes on its own.
///
/// A daily cap seen by one limiter (a hint over its
/// [`max_gate`](crate::priority::PriorityLimitLayer::max_gate)) puts every
/// instance's limiter in the exhausted state until the same time, through
/// a second key beside the gate's (same hash slot) and the same channel;
/// a state longer than a week is taken as a week.
///
/// An announcement sets a key that expires with the pause (so an instance
/// that starts, or reconnects, during it finds it) and publishes it; each
/// instance listens on the channel, so waiting costs no polling. Members of
/// this process that share the same value are paused directly. A member
/// that subscribes before the share has read the key (a new instance) is
/// held until it has (at most twice the fleet's operation timeout), so its
/// first request never goes into a pause already running. Without Redis,
/// each instance keeps its own state.
#[derive(Clone)]
pub struct RedisPauseShare {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    /// `gate` or `breaker`, for events.
    component: &'static str,
    key: String,
    /// The exhausted state's key, beside `key`.
    exhausted_key: String,
    channel: String,
    /// Tells this process's own announcements apart.
    instance: String,
    announce: redis::Script,
    gates: Mutex<Vec<PauseTarget>>,
    sync: Mutex<Sync>,
}

/// What this process knows of the fleet's pause. Locked before `gates`.
#[derive(Default)]
struct Sync {
    /// A listener task runs.
    listening: bool,
    /// The listener is subscribed and has read the key: `paused_until` is
    /// the fleet's pause.
    synced: bool,
    /// The end of the longest pause known.
    paused_until: Option<Instant>,
    /// The end of the longest exhausted state known.
    exhausted_until: Option<Instant>,
}

/// The later of `current` and `now + wait`.
fn extend(current: &mut Option<Instant>, wait: Duration) {
    if let Some(until) = Instant::now().checked_add(wait) {
        *current = Some(current.map_or(until, |u| u.max(until)));
    }
}

/// What is left until `until`.
fn left(until: Option<Instant>) -> Option<Duration> {
    until
        .map(|until| until.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
}

impl Sync {
    fn paused_for(&mut self, wait: Duration) {
        extend(&mut self.paused_until, wait);
    }

    fn exhausted_for(&mut self, wait: Duration) {
        extend(&mut self.exhausted_until, wait);
    }

    /// What is left of the known pause.
    fn left(&self) -> Option<Duration> {
        left(self.paused_until)
    }
}

impl RedisPauseShare {
    pub(crate) fn new(fleet: RedisFleet, component: &'static str, name: &str) -> Self {
        let key = fleet.key(component, name);
        Self {
            inner: Arc::new(Inner {
                component,
                channel: RedisFleet::derived(&key, "closed"),
                exhausted_key: RedisFleet::derived(&key, EXHAUSTED),
                key,
                fleet,
                instance: format!("{:016x}", rand::random::<u64>()),
                announce: redis::Script::new(ANNOUNCE),
                gates: Mutex::default(),
                sync: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    fn sync(&self) -> std::sync::MutexGuard<'_, Sync> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a member waits at most for the share to read the key:
    /// a subscription and a read.
    fn hold_bound(&self) -> Duration {
        self.fleet.op_timeout_value().saturating_mul(2)
    }

    /// Start the listener if none runs and a runtime is at hand; hold the
    /// members until it has read the key. Called with `sync` locked.
    fn ensure_listening(self: &Arc<Self>, sync: &mut Sync) {
        if sync.listening {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let gates = self.gates();
        if gates.is_empty() {
            return;
        }
        sync.listening = true;
        for gate in &gates {
            gate.hold(self.hold_bound());
        }
        runtime.spawn(self.clone().listen());
    }

    fn gates(&self) -> Vec<PauseTarget> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.retain(PauseTarget::is_alive);
        gates.clone()
    }

    /// Close this process's gates, except the one with id `except`.
    fn close_local(&self, wait: Duration, except: Option<u64>) {
        for gate in self.gates() {
            if Some(gate.id()) != except {
                gate.pause(wait);
            }
        }
    }

    /// Put this process's limiters in the exhausted state, except the one
    /// with id `except`.
    fn exhaust_local(&self, wait: Duration, except: Option<u64>) {
        for gate in self.gates() {
            if Some(gate.id()) != except {
                gate.exhaust(wait);
            }
        }
    }

    /// Tell the fleet of a pause, or with `exhausted` of the exhausted
    /// state.
    async fn publish(&self, wait: Duration, exhausted: bool) -> Result<(), RedisDown> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let (key, message) = if exhausted {
            let message = format!("{}:{wait_ms}:{EXHAUSTED}", self.instance);
            (self.exhausted_key.clone(), message)
        } else {
            (self.key.clone(), format!("{}:{wait_ms}", self.instance))
        };
        let (channel, script) = (self.channel.clone(), self.announce.clone());
        let _: i64 = self
            .fleet
            .run(|mut conn| async move {
                script
                    .key(&key)
                    .arg(wait_ms)
                    .arg(&message)
                    .arg(&channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Listen for announcements while any gate lives; reconnect with backoff.
    async fn listen(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            {
                let mut sync = self.sync();
                if self.gates().is_empty() {
                    sync.listening = false;
                    sync.synced = false;
                    return;
                }
            }
            match self.listen_once().await {
                Ok(()) => continue,
                Err(down) => {
                    // Redis cannot tell: nobody is held for it any longer
                    let gates = {
                        let mut sync = self.sync();
                        sync.synced = false;
                        self.gates()
                    };
                    for gate in &gates {
                        gate.release();
                    }
                    self.fleet.degraded(self.component, &down);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One subscription: catch up with a gate closed meanwhile, then apply
    /// every announcement. `Ok` when no gate is left to serve.
    async fn listen_once(&self) -> Result<(), RedisDown> {
        let timeout = self.fleet.op_timeout_value();
        let connect = async {
            let mut pubsub = self.fleet.pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(super::conn::describe(&e)),
            Err(_) => return Err(RedisDown("redis: timed out".into())),
        };
        // Subscribed: a gate closed (or a quota exhausted) before now is in
        // the keys, which share a hash slot.
        let (key, exhausted_key) = (self.key.clone(), self.exhausted_key.clone());
        let (left, exhausted_left): (i64, i64) = self
            .fleet
            .run(|mut conn| async move {
                redis::pipe()
                    .cmd("PTTL")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&exhausted_key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        self.fleet.restored(self.component);
        let millis = |left: i64, max: Duration| {
            u64::try_from(left)
                .ok()
                .filter(|left| *left > 0)
                .map(|left| Duration::from_millis(left).min(max))
        };
        let wait = millis(left, MAX_SHARED_PAUSE);
        let exhausted = millis(exhausted_left, MAX_SHARED_EXHAUSTION);
        if let Some(wait) = wait {
            self.fleet.emit(FleetEvent::PauseReceived {
                component: self.component,
                for_: wait,
            });
        }
        // From now on the share knows the fleet's pause: deliver it, then
        // let the members held for it go.
        let gates = {
            let mut sync = self.sync();
            sync.synced = true;
            if let Some(wait) = wait {
                sync.paused_for(wait);
            }
            if let Some(exhausted) = exhausted {
                sync.exhausted_for(exhausted);
            }
            self.gates()
        };
        for gate in &gates {
            if let Some(wait) = wait {
                gate.pause(wait);
            }
            if let Some(exhausted) = exhausted {
                gate.exhaust(exhausted);
            }
            gate.release();
        }
        let (mut sink, mut messages) = pubsub.split();
        let keepalive = self.fleet.keepalive_value();
        loop {
            // A half-open connection (a dead peer, a dropped NAT entry)
            // delivers nothing and reports nothing: a PING that gets no
            // answer within the operation timeout ends the subscription,
            // and `listen` subscribes again.
            let message = tokio::select! {
                message = messages.next() => message,
                _ = tokio::time::sleep(keepalive) => {
                    let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                    match ping {
                        Ok(Ok(_)) if self.gates().is_empty() => return Ok(()),
                        Ok(Ok(_)) => continue,
                        _ => return Err(RedisDown("redis: the subscription did not answer a ping".into())),
                    }
                }
            };
            let Some(message) = message else {
                break;
            };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let Some((from, wait_ms)) = text.split_once(':') else {
                continue;
            };
            if from == self.instance {
                continue;
            }
            if let Some(wait_ms) = wait_ms.strip_suffix(EXHAUSTED) {
                let Some(Ok(wait_ms)) = wait_ms.strip_suffix(':').map(str::parse::<u64>) else {
                    continue;
                };
                let wait = Duration::from_millis(wait_ms).min(MAX_SHARED_EXHAUSTION);
                self.sync().exhausted_for(wait);
                self.exhaust_local(wait, None);
                continue;
            }
            let Ok(wait_ms) = wait_ms.parse::<u64>() else {
                continue;
            };
            let wait = Duration::from_millis(wait_ms).min(MAX_SHARED_PAUSE);
            self.sync().paused_for(wait);
            self.fleet.emit(FleetEvent::PauseReceived {
                component: self.component,
                for_: wait,
            });
            self.close_local(wait, None);
            if self.gates().is_empty() {
                return Ok(());
            }
        }
        Err(RedisDown("redis: subscription lost".into()))
    }
}

impl PauseShare for RedisPauseShare {
    fn announce(&self, from: u64, wait: Duration) {
        self.inner.sync().paused_for(wait);
        // Limiters of this process sharing this value close directly.
        self.inner.close_local(wait, Some(from));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            match inner.publish(wait, false).await {
                Ok(()) => inner.fleet.restored(inner.component),
                Err(down) => inner.fleet.degraded(inner.component, &down),
            }
        });
    }

    fn announce_exhausted(&self, from: u64, exhausted: Duration) {
        self.inner.sync().exhausted_for(exhausted);
        self.inner.exhaust_local(exhausted, Some(from));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            match inner.publish(exhausted, true).await {
                Ok(()) => inner.fleet.restored(inner.component),
                Err(down) => inner.fleet.degraded(inner.component, &down),
            }
        });
    }

    /// Deliver the pause known now to `gate`; if the share has not read
    /// the key yet, hold `gate` until it has (starting the listener if a
    /// runtime is at hand, else on the first request: [`start`](Self::start)).
    fn subscribe(&self, gate: PauseTarget) {
        let mut sync = self.inner.sync();
        self.inner
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(gate.clone());
        if sync.synced {
            if let Some(left) = sync.left() {
                gate.pause(left);
            }
            if let Some(exhausted) = left(sync.exhausted_until) {
                gate.exhaust(exhausted);
            }
        } else if sync.listening {
            gate.hold(self.inner.hold_bound());
        } else {
            self.inner.ensure_listening(&mut sync);
        }
    }

    fn start(&self) {
        let mut sync = self.inner.sync();
        self.inner.ensure_listening(&mut sync);
    }
}

impl fmt::Debug for RedisPauseShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPauseShare")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}
