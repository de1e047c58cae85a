use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::handle::KeyedLimitHandle;
use super::registry::{Factory, Registry};
use super::service::KeyedLimit;
use crate::priority::{Pacer, PriorityLimitLayer};

/// The most keys kept by default.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// How long an idle key is kept by default: 5 minutes, longer than the
/// minute windows vendors count in.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Applies [`KeyedLimit`] to services: a [`PriorityLimitLayer`] limiter per
/// key, the key read from each request. Every service made by one layer
/// (and its clones) shares the keys; [`handle`](Self::handle) lists them.
///
/// Defaults: at most [`DEFAULT_MAX_KEYS`] keys, an idle key dropped after
/// [`DEFAULT_IDLE_TIMEOUT`], no shared limit over the keys.
pub struct KeyedLimitLayer<K, F> {
    key: F,
    registry: Arc<Registry<K>>,
}

impl<K, F> KeyedLimitLayer<K, F>
where
    K: Hash + Eq + Clone + Send + 'static,
{
    /// Read each request's key with `key` (`None`: the request is not
    /// limited by this layer), and make a new key's limiter with `make`.
    ///
    /// `key` is a function of the request: of its method and path (a
    /// route group), or of an extension the caller sets (a client, a
    /// user). `make` is called once per key, whenever the key is new or was
    /// dropped; its layer's settings become the key's limiter (a
    /// [`handle`](PriorityLimitLayer::handle) taken from it inside `make`
    /// is of no use: see [`KeyedLimitHandle::get`]).
    pub fn new<M>(key: F, make: M) -> Self
    where
        M: Fn(&K) -> PriorityLimitLayer + Send + Sync + 'static,
    {
        let make: Factory<K> = Arc::new(make);
        Self {
            key,
            registry: Arc::new(Registry::new(
                make,
                DEFAULT_MAX_KEYS,
                DEFAULT_IDLE_TIMEOUT,
                None,
            )),
        }
    }

    fn rebuild(mut self, change: impl FnOnce(&mut Settings<K>)) -> Self {
        let registry = &self.registry;
        let mut settings = Settings {
            make: registry.make.clone(),
            max_keys: registry.max_keys,
            idle_timeout: registry.idle_timeout,
            within: registry.within.clone(),
        };
        change(&mut settings);
        self.registry = Arc::new(Registry::new(
            settings.make,
            settings.max_keys,
            settings.idle_timeout,
            settings.within,
        ));
        self
    }

    /// Keep at most `max` keys (at least 1). A new key beyond it takes the
    /// place of the least recently used idle key (nothing in flight or
    /// queued, its gate open, its pacing spent); when no key is idle, the
    /// request fails at once with [`Overloaded`](crate::error::Overloaded),
    /// reason [`TooManyKeys`](crate::error::OverloadReason::TooManyKeys).
    pub fn max_keys(self, max: usize) -> Self {
        self.rebuild(|s| s.max_keys = max.max(1))
    }

    /// Drop a key once it has been idle this long: nothing in flight or
    /// queued, its rate gate open, and its pacing schedule spent (so that
    /// its new limiter, if the key comes back, keeps the same rate). Keys
    /// are swept at the first request arriving at least `timeout` after the
    /// last sweep, when a new key meets the maximum, and when a handle
    /// lists the keys. A rate a key's limiter learned from the server is
    /// learned again by its new limiter.
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|s| s.idle_timeout = timeout)
    }

    /// Every key's requests also take a slot of `pacer`, a limit shared by
    /// all keys (a client-wide limit over per-route keys), at the same
    /// instant as the key's own paced slot: a request goes only when both
    /// are due, and waiting for one never spends the other. So a route at
    /// 100 per minute inside a client at 300 per minute overruns neither.
    /// A request of [`Cost`](crate::priority::Cost) `n` goes on one slot
    /// of `pacer` and charges it `n - 1` more
    /// ([`Pacer::charge`](crate::priority::Pacer::charge)), so the shared
    /// limit counts it as `n`.
    pub fn within(self, pacer: impl Pacer) -> Self {
        let pacer: Arc<dyn Pacer> = Arc::new(pacer);
        self.rebuild(|s| s.within = Some(pacer))
    }

    /// A handle on the keys of the layer's services (taken after the
    /// builder calls).
    pub fn handle(&self) -> KeyedLimitHandle<K> {
        KeyedLimitHandle {
            registry: self.registry.clone(),
        }
    }
}

struct Settings<K> {
    make: Factory<K>,
    max_keys: usize,
    idle_timeout: Duration,
    within: Option<Arc<dyn Pacer>>,
}

impl<K, F: Clone> Clone for KeyedLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedLimitLayer<K, F> {
    type Service = KeyedLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedLimit::from_parts(inner, self.key.clone(), self.registry.clone())
    }
}

impl<K, F> fmt::Debug for KeyedLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimitLayer")
            .field("max_keys", &self.registry.max_keys)
            .field("idle_timeout", &self.registry.idle_timeout)
            .field("within", &self.registry.within.is_some())
            .finish_non_exhaustive()
    }
}
