//! The keys and their limiters: made on first use from the layer's
//! factory, kept while used, dropped when idle for the idle timeout, and
//! the least recently used idle one evicted to make room at the maximum.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::super::limiter::Limiter;
use super::super::shared::Pacer;
use super::super::PriorityLimitLayer;
use crate::error::{OverloadReason, Overloaded};

/// Makes a key's limiter.
pub(super) type Factory<K> = Arc<dyn Fn(&K) -> PriorityLimitLayer + Send + Sync>;

/// How a key is used: requests holding it, and when the last one ended.
#[derive(Debug)]
pub(super) struct Usage {
    users: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// A request's hold on its key, released when dropped.
#[derive(Debug)]
pub(super) struct Hold(Arc<Usage>);

impl Drop for Hold {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct Entry {
    pub(super) limiter: Arc<Limiter>,
    usage: Arc<Usage>,
    /// The registry's use counter at its last use (least recently used:
    /// lowest).
    touched: u64,
}

impl Entry {
    /// Nothing uses it, and its limiter holds nothing a new one would not.
    fn is_idle(&self) -> bool {
        self.usage.users.load(Ordering::SeqCst) == 0 && self.limiter.is_idle()
    }

    fn idle_since(&self) -> Instant {
        *self
            .usage
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct Keys<K> {
    pub(super) map: HashMap<K, Entry>,
    uses: u64,
    last_sweep: Option<Instant>,
    pub(super) dropped: u64,
}

/// Settings and keys, shared by the layer, its services and handles.
pub(super) struct Registry<K> {
    keys: Mutex<Keys<K>>,
    pub(super) make: Factory<K>,
    pub(super) max_keys: usize,
    pub(super) idle_timeout: Duration,
    pub(super) within: Option<Arc<dyn Pacer>>,
}

impl<K> Registry<K> {
    pub(super) fn lock(&self) -> MutexGuard<'_, Keys<K>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq + Clone> Registry<K> {
    pub(super) fn new(
        make: Factory<K>,
        max_keys: usize,
        idle_timeout: Duration,
        within: Option<Arc<dyn Pacer>>,
    ) -> Self {
        Self {
            keys: Mutex::new(Keys {
                map: HashMap::new(),
                uses: 0,
                last_sweep: None,
                dropped: 0,
            }),
            make,
            max_keys: max_keys.max(1),
            idle_timeout,
            within,
        }
    }

    /// The limiter of `key` and a hold on it, made if new; `TooManyKeys`
    /// when the registry is full and no key is idle.
    ///
    /// The factory runs without the lock: a slow factory holds up no other
    /// key, and one that reads the layer's handle cannot deadlock. When two
    /// first requests of a key race, both may run it; the first limiter
    /// stored serves both.
    pub(super) fn acquire(&self, key: &K) -> Result<(Arc<Limiter>, Hold), Overloaded> {
        let now = Instant::now();
        {
            let mut keys = self.lock();
            if keys
                .last_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= self.idle_timeout)
            {
                self.sweep(&mut keys, now);
            }
            if let Some(known) = Self::known(&mut keys, key) {
                return Ok(known);
            }
        }
        let limiter = self.make(key);
        let mut keys = self.lock();
        if let Some(known) = Self::known(&mut keys, key) {
            // made meanwhile by another request: that one serves
            return Ok(known);
        }
        if keys.map.len() >= self.max_keys {
            self.sweep(&mut keys, now);
        }
        if keys.map.len() >= self.max_keys {
            // the least recently used idle key makes room
            let lru = keys
                .map
                .iter()
                .filter(|(_, entry)| entry.is_idle())
                .min_by_key(|(_, entry)| entry.touched)
                .map(|(key, _)| key.clone());
            let Some(lru) = lru else {
                return Err(Overloaded::new(OverloadReason::TooManyKeys));
            };
            keys.map.remove(&lru);
            keys.dropped += 1;
        }
        keys.uses += 1;
        let usage = Arc::new(Usage {
            users: AtomicUsize::new(1),
            last_used: Mutex::new(now),
        });
        let hold = Hold(usage.clone());
        let touched = keys.uses;
        keys.map.insert(
            key.clone(),
            Entry {
                limiter: limiter.clone(),
                usage,
                touched,
            },
        );
        Ok((limiter, hold))
    }

    /// `key`'s limiter and a hold on it, if the key is kept.
    fn known(keys: &mut Keys<K>, key: &K) -> Option<(Arc<Limiter>, Hold)> {
        keys.uses += 1;
        let uses = keys.uses;
        let entry = keys.map.get_mut(key)?;
        entry.touched = uses;
        entry.usage.users.fetch_add(1, Ordering::SeqCst);
        Some((entry.limiter.clone(), Hold(entry.usage.clone())))
    }

    /// A new limiter for `key` from the factory (called without the lock).
    fn make(&self, key: &K) -> Arc<Limiter> {
        let mut layer = (self.make)(key);
        if let Some(pacer) = &self.within {
            layer = layer.within(pacer.clone());
        }
        layer.into_limiter()
    }

    /// Drop the keys idle for the idle timeout.
    pub(super) fn sweep(&self, keys: &mut Keys<K>, now: Instant) {
        keys.last_sweep = Some(now);
        let before = keys.map.len();
        let timeout = self.idle_timeout;
        keys.map.retain(|_, entry| {
            !(entry.is_idle() && now.saturating_duration_since(entry.idle_since()) >= timeout)
        });
        keys.dropped += (before - keys.map.len()) as u64;
    }
}
