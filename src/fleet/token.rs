//! One token for the fleet, refreshed by one instance at a time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{FleetEvent, RedisDown, RedisFleet};
use crate::auth::{Secret, Token, TokenError, TokenFuture, TokenSource};

/// Releases the lock only if this instance still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Extends the lock only if this instance still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the stored token only if it is still exactly the refused one
/// (compare-and-delete): a newer token stored meanwhile by another
/// instance is kept.
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A [`TokenSource`] whose tokens are shared by every instance of a fleet
/// through Redis. Made by [`RedisFleet::token_source`] or
/// [`RedisFleet::client_credentials`]; put it in a
/// [`TokenCache`](crate::auth::TokenCache) as usual.
///
/// When the cache asks for a token:
/// 1. a stored token that is not yet due for refresh is taken as it is,
///    with the lifetime Redis says it has left;
/// 2. otherwise the instance takes the refresh lock (`SET NX PX`) and asks
///    the real source, stores the result with a TTL equal to its lifetime,
///    and releases the lock; the lock is renewed every third of its TTL
///    while the fetch runs, so a slow fetch is not taken over;
/// 3. if another instance holds the lock, it waits for that token; a lock
///    whose holder died expires and the next instance takes over.
///
/// A stored token is due for refresh once less than `max(60 s, 10 %)` of
/// its lifetime is left (at most half of it), as in the token cache. When
/// Redis cannot be used, the instance asks the real source itself.
///
/// A token the API refuses (a 401, reported through
/// [`TokenSource::invalidate`] by the token cache) is removed from Redis
/// with compare-and-delete, so only that exact token goes, never a newer
/// one; the refresh that follows is single-flight as above, so the fleet
/// makes one token request per refused token. The source never hands back
/// the token it was last told was refused.
/// The token text is never logged; Redis holds it for its lifetime.
#[derive(Clone)]
pub struct SharedTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: RedisFleet,
    source: Box<dyn TokenSource>,
    key: String,
    lock: String,
    release: redis::Script,
    delete_if: redis::Script,
    renew: redis::Script,
    /// The last token the API refused: never handed back.
    rejected: std::sync::Mutex<Option<Secret>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    /// Due for refresh when this little is left, in milliseconds.
    due_ms: u64,
}

/// How a shared fetch ended without a token.
enum Failure {
    Redis(RedisDown),
    Token(TokenError),
}

impl SharedTokenSource {
    pub(crate) fn new(fleet: RedisFleet, source: Box<dyn TokenSource>, key: &str) -> Self {
        let key = fleet.key("token", key);
        Self {
            inner: Arc::new(Inner {
                lock: RedisFleet::derived(&key, "lock"),
                key,
                fleet,
                source,
                release: redis::Script::new(RELEASE),
                delete_if: redis::Script::new(DELETE_IF),
                renew: redis::Script::new(RENEW),
                rejected: std::sync::Mutex::new(None),
            }),
        }
    }
}

impl TokenSource for SharedTokenSource {
    fn fetch_token(&self) -> TokenFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.fetch().await })
    }

    fn invalidate(&self, token: &Secret) {
        *self
            .inner
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        self.inner.source.invalidate(token);
    }
}

impl Inner {
    async fn fetch(&self) -> Result<Token, TokenError> {
        match self.fetch_shared().await {
            Ok(token) => {
                self.fleet.restored("token");
                Ok(token)
            }
            Err(Failure::Token(error)) => Err(error),
            Err(Failure::Redis(down)) => {
                self.fleet.degraded("token", &down);
                self.source.fetch_token().await
            }
        }
    }

    async fn fetch_shared(&self) -> Result<Token, Failure> {
        let owner = format!("{:032x}", rand::random::<u128>());
        let lock_ttl = self.fleet.lock_ttl_value();
        // A holder that is alive but stuck is not waited for forever.
        let give_up = Instant::now() + lock_ttl * 2 + self.fleet.op_timeout_value();
        let mut poll = Duration::from_millis(10);
        let mut waited_for_lock = false;
        loop {
            if let Some(token) = self.read().await.map_err(Failure::Redis)? {
                self.fleet.emit(FleetEvent::TokenShared);
                return Ok(token);
            }
            if self
                .try_lock(&owner, lock_ttl)
                .await
                .map_err(Failure::Redis)?
            {
                if waited_for_lock {
                    self.fleet.emit(FleetEvent::LockTakenOver);
                }
                return self.fetch_locked(&owner).await;
            }
            waited_for_lock = true;
            if Instant::now() >= give_up {
                return Err(Failure::Redis(RedisDown(
                    "the token refresh lock was held too long".into(),
                )));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(200));
        }
    }

    /// The stored token, if it is not due for refresh.
    async fn read(&self) -> Result<Option<Token>, RedisDown> {
        let key = self.key.clone();
        let (value, pttl): (Option<String>, i64) = self
            .fleet
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let (Some(value), Ok(left)) = (value, u64::try_from(pttl)) else {
            return Ok(None);
        };
        // A value this crate did not write is not used (and not printed).
        let Ok(stored) = serde_json::from_str::<Stored>(&value) else {
            return Ok(None);
        };
        if self.is_rejected(&stored.access_token) {
            // refused by the API: remove exactly this value, then refresh
            self.delete_if(value).await?;
            return Ok(None);
        }
        if left <= stored.due_ms {
            return Ok(None);
        }
        let token = Token::new(stored.access_token, Duration::from_millis(left));
        Ok(Some(token))
    }

    fn is_rejected(&self, token: &str) -> bool {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|rejected| rejected.expose() == token)
    }

    /// Delete the token key if it still holds exactly `value`.
    async fn delete_if(&self, value: String) -> Result<(), RedisDown> {
        let (key, script) = (self.key.clone(), self.delete_if.clone());
        let deleted: i64 = self
            .fleet
            .run(
                |mut conn| async move { script.key(&key).arg(value).invoke_async(&mut conn).await },
            )
            .await?;
        if deleted == 1 {
            self.fleet.emit(FleetEvent::RejectedTokenRemoved);
        }
        Ok(())
    }

    async fn try_lock(&self, owner: &str, ttl: Duration) -> Result<bool, RedisDown> {
        let (lock, owner) = (self.lock.clone(), owner.to_owned());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .fleet
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Holding the lock: check once more, then fetch, store and release.
    async fn fetch_locked(&self, owner: &str) -> Result<Token, Failure> {
        // Another instance may have stored a token between our read and
        // our lock.
        match self.read().await {
            Ok(Some(token)) => {
                self.release(owner).await;
                self.fleet.emit(FleetEvent::TokenShared);
                return Ok(token);
            }
            Ok(None) => {}
            Err(down) => {
                // Redis went away while we hold its lock: fetch locally.
                self.fleet.degraded("token", &down);
            }
        }
        // The lock lives while the fetch runs (its retries may take longer
        // than the lock's TTL): renewed every third of it, so no other
        // instance takes over a live holder and fetches a second token.
        let ttl = self.fleet.lock_ttl_value();
        let fetch = self.source.fetch_token();
        tokio::pin!(fetch);
        let result = loop {
            tokio::select! {
                result = &mut fetch => break result,
                _ = tokio::time::sleep(ttl / 3) => self.renew_lock(owner, ttl).await,
            }
        };
        if let Ok(token) = &result {
            self.store(token).await;
            self.fleet.emit(FleetEvent::TokenFetched);
        }
        self.release(owner).await;
        result.map_err(Failure::Token)
    }

    async fn store(&self, token: &Token) {
        let lifetime = token.lifetime().saturating_sub(token.receipt().elapsed());
        let lifetime_ms = lifetime.as_millis() as u64;
        if lifetime_ms == 0 {
            return;
        }
        let ahead = Duration::from_secs(60)
            .max(lifetime.mul_f64(0.1))
            .min(lifetime / 2);
        let stored = Stored {
            access_token: token.access_token().expose().to_owned(),
            due_ms: ahead.as_millis() as u64,
        };
        let Ok(value) = serde_json::to_string(&stored) else {
            return;
        };
        let key = self.key.clone();
        let result: Result<(), RedisDown> = self
            .fleet
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(lifetime_ms)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if let Err(down) = result {
            self.fleet.degraded("token", &down);
        }
    }

    async fn renew_lock(&self, owner: &str, ttl: Duration) {
        let (lock, owner) = (self.lock.clone(), owner.to_owned());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let script = self.renew.clone();
        let _: Result<i64, RedisDown> = self
            .fleet
            .run(|mut conn| async move {
                script
                    .key(&lock)
                    .arg(&owner)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
    }

    async fn release(&self, owner: &str) {
        let (lock, owner) = (self.lock.clone(), owner.to_owned());
        let script = self.release.clone();
        let _: Result<i64, RedisDown> =
            self.fleet
                .run(|mut conn| async move {
                    script.key(&lock).arg(&owner).invoke_async(&mut conn).await
                })
                .await;
    }
}

impl fmt::Debug for SharedTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenSource")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}
