use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tokio::time::Instant;

use super::registry::Registry;
use crate::priority::{LimiterStatus, PriorityLimitHandle};

/// Inspection of a [`KeyedLimitLayer`](super::KeyedLimitLayer)'s keys.
/// Clones look at the same keys.
pub struct KeyedLimitHandle<K> {
    pub(super) registry: Arc<Registry<K>>,
}

impl<K: Hash + Eq + Clone> KeyedLimitHandle<K> {
    /// How many keys are kept now (idle keys past the idle timeout are
    /// dropped first).
    pub fn len(&self) -> usize {
        let mut keys = self.registry.lock();
        self.registry.sweep(&mut keys, Instant::now());
        keys.map.len()
    }

    /// Whether no key is kept (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys kept now, in no particular order (idle keys past the idle
    /// timeout are dropped first).
    pub fn keys(&self) -> Vec<K> {
        let mut keys = self.registry.lock();
        self.registry.sweep(&mut keys, Instant::now());
        keys.map.keys().cloned().collect()
    }

    /// A handle on `key`'s limiter, if the key is kept. It shows (and
    /// controls) that limiter as long as the key is kept; a key dropped and
    /// used again gets a new limiter, which a new handle shows.
    pub fn get(&self, key: &K) -> Option<PriorityLimitHandle> {
        let keys = self.registry.lock();
        let entry = keys.map.get(key)?;
        Some(PriorityLimitHandle::fixed(entry.limiter.clone()))
    }

    /// Every key kept now with its limiter's status.
    pub fn statuses(&self) -> Vec<(K, LimiterStatus)> {
        let limiters: Vec<_> = {
            let mut keys = self.registry.lock();
            self.registry.sweep(&mut keys, Instant::now());
            keys.map
                .iter()
                .map(|(key, entry)| (key.clone(), entry.limiter.clone()))
                .collect()
        };
        limiters
            .into_iter()
            .map(|(key, limiter)| (key, limiter.snapshot()))
            .collect()
    }

    /// Keys dropped so far (idle past the timeout, or evicted to make room).
    pub fn dropped(&self) -> u64 {
        self.registry.lock().dropped
    }
}

impl<K> Clone for KeyedLimitHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimitHandle")
            .field("keys", &self.registry.lock().map.len())
            .finish()
    }
}
