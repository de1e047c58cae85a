//! A token's word that it is before its refresh point, so that the
//! bearer's hot path needs no clock read.
//!
//! When a refresh running on a multi-thread runtime stores a token, the
//! token's flag goes up, and one watcher thread per process lowers it at
//! the token's refresh point. While the flag is up the token is before that
//! point, hence valid and not yet due: the cache serves it without reading
//! the clock.
//!
//! - The watcher is a plain thread waiting on a condition variable with a
//!   timeout, on the real monotonic clock. It fires on time whatever the
//!   runtimes do: a worker blocked by a task, a runtime shut down. (Tokio's
//!   own timers would not: a multi-thread runtime drives them from one
//!   parked worker at a time, and a current-thread runtime only inside
//!   `block_on`, after polling the caller's future.)
//! - Only a multi-thread runtime's refresh is vouched for: its clock is the
//!   real one (only a current-thread runtime can be paused). On a
//!   current-thread runtime every request reads Tokio's clock, so a paused
//!   test clock counts.
//! - A token with less than [`MARGIN`] between its refresh point and its
//!   expiry is not vouched for: the watcher would have to wake that late
//!   for an expired token to go out.
//! - If the watcher thread cannot be started, nothing is vouched for.

use std::cmp::Ordering as Order;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

use super::cache::Cached;

/// The least time between a token's refresh point and its expiry for the
/// watcher's word to stand in for the clock.
pub(super) const MARGIN: Duration = Duration::from_secs(5);

/// Vouch for `cached` until its refresh point, if the refresh runs on a
/// multi-thread runtime and the token's margin is wide enough.
pub(super) fn vouch(cached: &Arc<Cached>) {
    let real_clock = Handle::try_current()
        .is_ok_and(|runtime| matches!(runtime.runtime_flavor(), RuntimeFlavor::MultiThread));
    let margin = cached
        .expires_at
        .saturating_duration_since(cached.refresh_at);
    if !real_clock || margin < MARGIN || Instant::now() >= cached.refresh_at {
        return;
    }
    let Some(watch) = Watch::started() else {
        return;
    };
    // up before the watcher knows of it: it can only be lowered after
    cached.before_refresh.store(true, Ordering::Release);
    watch.add(cached.refresh_at.into_std(), Arc::downgrade(cached));
}

/// A flag to lower at `at`.
struct Due {
    at: std::time::Instant,
    cached: Weak<Cached>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// The earliest first in a `BinaryHeap` (a max-heap).
    fn cmp(&self, other: &Self) -> Order {
        other.at.cmp(&self.at)
    }
}

/// The watcher's deadlines, and the condition it waits on.
struct Watch {
    due: Mutex<BinaryHeap<Due>>,
    changed: Condvar,
}

static WATCH: Watch = Watch {
    due: Mutex::new(BinaryHeap::new()),
    changed: Condvar::new(),
};

impl Watch {
    /// The process's watch, its thread started on first use; `None` if the
    /// thread could not be started.
    fn started() -> Option<&'static Watch> {
        static STARTED: OnceLock<bool> = OnceLock::new();
        let started = STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("tower-cx-token-watch".into())
                .spawn(|| WATCH.run())
                .is_ok()
        });
        started.then_some(&WATCH)
    }

    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Due>> {
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, at: std::time::Instant, cached: Weak<Cached>) {
        let mut due = self.lock();
        forget_dropped(&mut due);
        let earliest = due.peek().is_none_or(|first| at < first.at);
        due.push(Due { at, cached });
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Lower each flag when its time comes, forever.
    fn run(&self) {
        let mut due = self.lock();
        loop {
            let now = std::time::Instant::now();
            due = match lower_due(&mut due, now) {
                Some(next) => {
                    let wait = next.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(due, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(due).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// The deadlines of tokens already dropped (a cache dropped, or its token
/// replaced) stay until their time; past 1,024 deadlines, each doubling
/// of their number drops them first, so that they stay at most about as
/// many as the live ones (and the work amortized over the additions).
fn forget_dropped(due: &mut BinaryHeap<Due>) {
    let len = due.len();
    if len >= 1024 && len.is_power_of_two() {
        due.retain(|d| d.cached.strong_count() > 0);
    }
}

/// Lower the flags due at `now`; when the next one is due.
fn lower_due(due: &mut BinaryHeap<Due>, now: std::time::Instant) -> Option<std::time::Instant> {
    while let Some(first) = due.peek() {
        if first.at > now {
            return Some(first.at);
        }
        if let Some(cached) = due.pop().and_then(|d| d.cached.upgrade()) {
            cached.before_refresh.store(false, Ordering::Release);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use super::{lower_due, Due, MARGIN, WATCH};
    use crate::auth::{source_fn, Token, TokenCache, TokenError};

    /// A cache whose source hands out one-hour tokens, refreshed `ahead`
    /// of expiry.
    fn cache(ahead: Duration) -> TokenCache {
        TokenCache::builder(source_fn(|| async {
            Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600)))
        }))
        .refresh_ahead(ahead, 0.0)
        .build()
    }

    /// Whether the current token is vouched for.
    fn vouched(cache: &TokenCache) -> bool {
        cache
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.before_refresh.load(Ordering::Acquire))
    }

    /// Whether the watcher holds a deadline for the current token, at its
    /// refresh point.
    fn watched(cache: &TokenCache) -> bool {
        let current = cache.inner.current.load_full().unwrap();
        let at = current.refresh_at.into_std();
        WATCH
            .lock()
            .iter()
            .any(|d| d.at == at && Weak::ptr_eq(&d.cached, &Arc::downgrade(&current)))
    }

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_refresh_on_a_multi_thread_runtime_is_vouched_for_until_its_refresh_point() {
        let runtime = multi_thread();
        let cache = cache(Duration::from_secs(600));
        runtime.block_on(cache.refresh()).unwrap();
        assert!(vouched(&cache));
        assert!(
            watched(&cache),
            "the watcher lowers it at the refresh point"
        );
        assert!(cache.fresh().is_some());
        // the word is the watcher's, not the runtime's
        drop(runtime);
        assert!(vouched(&cache));
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_current_thread_runtime_every_request_reads_the_clock() {
        let cache = cache(Duration::from_secs(600));
        cache.refresh().await.unwrap();
        assert!(!vouched(&cache));
        assert!(cache.fresh().is_some());
    }

    #[test]
    fn a_token_with_less_margin_than_the_minimum_is_not_vouched_for() {
        let runtime = multi_thread();
        let cache = cache(MARGIN - Duration::from_millis(1));
        runtime.block_on(cache.refresh()).unwrap();
        assert!(!vouched(&cache));
        let cache = self::cache(MARGIN);
        runtime.block_on(cache.refresh()).unwrap();
        assert!(vouched(&cache));
    }

    #[test]
    fn the_deadlines_of_dropped_tokens_do_not_pile_up() {
        let start = std::time::Instant::now();
        let runtime = multi_thread();
        let live = cache(Duration::from_secs(600));
        runtime.block_on(live.refresh()).unwrap();
        let live = live.inner.current.load_full().unwrap();
        let mut due = BinaryHeap::new();
        due.push(Due {
            at: start,
            cached: Arc::downgrade(&live),
        });
        for _ in 0..1023 {
            due.push(Due {
                at: start,
                cached: Weak::new(),
            });
            super::forget_dropped(&mut due);
        }
        assert_eq!(due.len(), 1);
        assert!(Weak::ptr_eq(
            &due.peek().unwrap().cached,
            &Arc::downgrade(&live)
        ));
    }

    #[test]
    fn the_watcher_lowers_each_flag_at_its_time_and_waits_for_the_next() {
        let runtime = multi_thread();
        let (a, b) = (
            cache(Duration::from_secs(600)),
            cache(Duration::from_secs(600)),
        );
        runtime.block_on(a.refresh()).unwrap();
        runtime.block_on(b.refresh()).unwrap();
        let (a, b) = (
            a.inner.current.load_full().unwrap(),
            b.inner.current.load_full().unwrap(),
        );
        let start = std::time::Instant::now();
        let s = Duration::from_secs;
        let mut due = BinaryHeap::new();
        // a token dropped before its time: skipped
        due.push(Due {
            at: start + s(1),
            cached: Weak::new(),
        });
        due.push(Due {
            at: start + s(2),
            cached: Arc::downgrade(&b),
        });
        due.push(Due {
            at: start + s(1),
            cached: Arc::downgrade(&a),
        });
        assert_eq!(lower_due(&mut due, start), Some(start + s(1)));
        assert!(a.before_refresh.load(Ordering::Acquire));
        assert_eq!(lower_due(&mut due, start + s(1)), Some(start + s(2)));
        assert!(!a.before_refresh.load(Ordering::Acquire));
        assert!(b.before_refresh.load(Ordering::Acquire));
        assert_eq!(lower_due(&mut due, start + s(3)), None);
        assert!(!b.before_refresh.load(Ordering::Acquire));
        assert!(due.is_empty());
    }
}
