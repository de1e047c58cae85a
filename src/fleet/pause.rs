//! Fleet-wide pauses (a closed rate gate, an open breaker): a key with
//! expiry plus pub/sub.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use super::{FleetEvent, RedisDown, RedisFleet};
use crate::share::{PauseShare, PauseTarget};

/// Sets the gate key unless it is already closed for longer, and tells the
/// fleet. ARGV: wait in ms, the message, the channel. The channel is not a
/// key (a cluster would refuse a second key in another slot: `CROSSSLOT`).
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
/// An announcement sets a key that expires with the pause (so an instance
/// that starts, or reconnects, during it finds it) and publishes it; each
/// instance listens on the channel, so waiting costs no polling. Members of
/// this process that share the same value are paused directly. Without
/// Redis, each instance keeps its own state.
#[derive(Clone)]
pub struct RedisPauseShare {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    /// `gate` or `breaker`, for events.
    component: &'static str,
    key: String,
    channel: String,
    /// Tells this process's own announcements apart.
    instance: String,
    announce: redis::Script,
    gates: Mutex<Vec<PauseTarget>>,
    listening: Mutex<bool>,
}

impl RedisPauseShare {
    pub(crate) fn new(fleet: RedisFleet, component: &'static str, name: &str) -> Self {
        let key = fleet.key(component, name);
        Self {
            inner: Arc::new(Inner {
                component,
                channel: format!("{key}:closed"),
                key,
                fleet,
                instance: format!("{:016x}", rand::random::<u64>()),
                announce: redis::Script::new(ANNOUNCE),
                gates: Mutex::default(),
                listening: Mutex::new(false),
            }),
        }
    }
}

impl Inner {
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

    async fn publish(&self, wait: Duration) -> Result<(), RedisDown> {
        let wait_ms = wait.as_millis().max(1) as u64;
        let message = format!("{}:{wait_ms}", self.instance);
        let (key, channel, script) = (
            self.key.clone(),
            self.channel.clone(),
            self.announce.clone(),
        );
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
                let mut listening = self.listening.lock().unwrap_or_else(|e| e.into_inner());
                if self.gates().is_empty() {
                    *listening = false;
                    return;
                }
            }
            match self.listen_once().await {
                Ok(()) => continue,
                Err(down) => {
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
            let mut pubsub = self.fleet.client().get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(super::describe(&e)),
            Err(_) => return Err(RedisDown("redis: timed out".into())),
        };
        // Subscribed: a gate closed before now is in the key.
        let key = self.key.clone();
        let left: i64 = self
            .fleet
            .run(
                |mut conn| async move { redis::cmd("PTTL").arg(&key).query_async(&mut conn).await },
            )
            .await?;
        self.fleet.restored(self.component);
        if let Ok(left) = u64::try_from(left) {
            if left > 0 {
                let wait = Duration::from_millis(left).min(MAX_SHARED_PAUSE);
                self.fleet.emit(FleetEvent::PauseReceived {
                    component: self.component,
                    for_: wait,
                });
                self.close_local(wait, None);
            }
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
            let Ok(wait_ms) = wait_ms.parse::<u64>() else {
                continue;
            };
            let wait = Duration::from_millis(wait_ms).min(MAX_SHARED_PAUSE);
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
        // Limiters of this process sharing this value close directly.
        self.inner.close_local(wait, Some(from));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            match inner.publish(wait).await {
                Ok(()) => inner.fleet.restored(inner.component),
                Err(down) => inner.fleet.degraded(inner.component, &down),
            }
        });
    }

    fn subscribe(&self, gate: PauseTarget) {
        let mut listening = self
            .inner
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(gate);
        if !*listening {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                *listening = true;
                runtime.spawn(self.inner.clone().listen());
            }
        }
    }
}

impl fmt::Debug for RedisPauseShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPauseShare")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}
