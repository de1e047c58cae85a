//! The refresh timer's word that a token is before its refresh point, so
//! that the bearer's hot path needs no clock read.
//!
//! Each stored token gets one timer (see `refresh_when_due`) that sleeps
//! until the token's `refresh_at`. While that timer is registered and has
//! not fired, the token is before its refresh point, hence valid and not
//! yet due: [`Vouch`] raises the token's flag for exactly that span.
//!
//! - The flag is lowered by the timer's own wake, which Tokio's time driver
//!   calls as it fires the timer, before any task runs (so a paused test
//!   that advances the clock past the point sees the flag down at once).
//! - It is lowered when the timer task ends for any reason: fired, aborted
//!   for a newer token, or dropped with its runtime.
//! - It is raised only for a token with at least [`MARGIN`] between its
//!   refresh point and its expiry: a timer would have to fire that late for
//!   an expired token to go out. Tokens with a smaller margin are checked
//!   against the clock on every request.
//! - It is raised only on a runtime whose timers fire on time while the
//!   application is idle: a multi-thread runtime, where an idle worker
//!   parks on the timer. A current-thread runtime drives its timers only
//!   inside `block_on`, and polls the caller's future before it fires the
//!   timers that fell due while nothing ran: after an idle gap a request
//!   could go out on a flag that should have been lowered. There every
//!   request reads the clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::cache::Cached;

/// The least time between a token's refresh point and its expiry for the
/// timer's word to stand in for the clock.
pub(super) const MARGIN: Duration = Duration::from_secs(5);

/// Sleeps until `cached`'s refresh point, vouching for the token while it
/// sleeps. The flag is down again when this returns or is dropped.
pub(super) async fn sleep_vouching(cached: &Arc<Cached>) {
    let vouch = Vouch(cached.clone());
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(cached.refresh_at));
    let margin = cached
        .expires_at
        .saturating_duration_since(cached.refresh_at);
    if timers_fire_on_time() && margin >= MARGIN && Instant::now() < cached.refresh_at {
        // raised before the timer is registered: any wake from here on
        // lowers it
        cached.before_refresh.store(true, Ordering::Release);
    }
    std::future::poll_fn(|cx| poll_lowering(sleep.as_mut(), cached, cx)).await;
    drop(vouch);
}

/// Whether the current runtime fires its timers on time while nothing
/// else runs on it (see the module docs): a multi-thread runtime.
fn timers_fire_on_time() -> bool {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread))
        || tests::current_thread_allowed()
}

/// Poll `sleep` with a waker that lowers `cached`'s flag before it wakes
/// the task.
fn poll_lowering(sleep: Pin<&mut Sleep>, cached: &Arc<Cached>, cx: &mut Context<'_>) -> Poll<()> {
    let waker = Waker::from(Arc::new(LowerOnWake {
        cached: cached.clone(),
        task: cx.waker().clone(),
    }));
    sleep.poll(&mut Context::from_waker(&waker))
}

/// Lowers the token's flag when dropped.
struct Vouch(Arc<Cached>);

impl Drop for Vouch {
    fn drop(&mut self) {
        self.0.before_refresh.store(false, Ordering::Release);
    }
}

/// The waker the refresh timer holds: lowers the flag as the timer fires,
/// then wakes the timer task.
struct LowerOnWake {
    cached: Arc<Cached>,
    task: Waker,
}

impl Wake for LowerOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.cached.before_refresh.store(false, Ordering::Release);
        self.task.wake_by_ref();
    }
}

#[cfg(not(test))]
mod tests {
    /// Outside the unit tests, never.
    pub(super) fn current_thread_allowed() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::MARGIN;
    use crate::auth::{source_fn, Token, TokenCache, TokenError};

    thread_local! {
        /// Set by a test that drives the mechanism on a paused
        /// current-thread runtime (whose timer task runs on the test's
        /// thread).
        static ALLOW_CURRENT_THREAD: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn current_thread_allowed() -> bool {
        ALLOW_CURRENT_THREAD.with(Cell::get)
    }

    /// Let the timer vouch on this thread's current-thread runtime: the
    /// mechanism is the same on either flavor; only its trigger differs.
    fn allow_current_thread() {
        ALLOW_CURRENT_THREAD.with(|allowed| allowed.set(true));
    }

    /// A cache whose source hands out one-hour tokens and counts fetches.
    fn cache(fetches: &Arc<AtomicUsize>, ahead: Duration) -> TokenCache {
        let fetches = fetches.clone();
        TokenCache::builder(source_fn(move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600))) }
        }))
        .refresh_ahead(ahead, 0.0)
        .build()
    }

    /// Whether the current token's timer vouches for it.
    fn vouched(cache: &TokenCache) -> bool {
        cache
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.before_refresh.load(Ordering::Acquire))
    }

    /// A cache on this thread's paused runtime, its first token stored
    /// and its timer registered; its fetch count.
    async fn vouching_cache() -> (TokenCache, Arc<AtomicUsize>) {
        allow_current_thread();
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = cache(&fetches, Duration::from_secs(600));
        cache.refresh().await.unwrap();
        tokio::task::yield_now().await;
        (cache, fetches)
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_vouches_until_the_refresh_point_and_the_firing_lowers_it_at_once() {
        let (cache, fetches) = vouching_cache().await;
        assert!(vouched(&cache), "the timer task is registered");
        assert!(cache.fresh().is_some());

        // refresh point at 3000 s
        tokio::time::advance(Duration::from_millis(2_999_999)).await;
        assert!(vouched(&cache));
        tokio::time::advance(Duration::from_millis(1)).await;
        // lowered by the timer's wake, before the timer task has run
        assert!(!vouched(&cache));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // the next read checks the clock and starts the refresh
        assert!(cache.fresh().is_some());
        tokio::task::yield_now().await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_timer_gone_with_its_runtime_vouches_for_nothing() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let first = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cache = first.block_on(async {
            let cache = cache(&fetches, Duration::from_secs(600));
            cache.refresh().await.unwrap();
            // the timer task registers on the worker
            for _ in 0..100_000 {
                if vouched(&cache) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            cache
        });
        assert!(vouched(&cache), "a multi-thread runtime's timer vouches");
        // the runtime that runs the timer goes away: its word goes with it
        drop(first);
        assert!(!vouched(&cache));

        // on another runtime's clock, two hours on, the token has expired
        // and must not be served
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        second.block_on(async {
            tokio::time::advance(Duration::from_secs(7200)).await;
            assert!(cache.fresh().is_none(), "an expired token was served");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_with_less_margin_than_the_minimum_is_always_checked_against_the_clock() {
        allow_current_thread();
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = cache(&fetches, MARGIN - Duration::from_millis(1));
        cache.refresh().await.unwrap();
        tokio::task::yield_now().await;
        assert!(!vouched(&cache));
        assert!(cache.fresh().is_some());
        tokio::time::advance(Duration::from_secs(3590)).await;
        assert!(!vouched(&cache));
        assert!(cache.fresh().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_current_thread_runtime_every_request_reads_the_clock() {
        // its timers fire only inside `block_on`, after the caller's first
        // poll: no word is given
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = cache(&fetches, Duration::from_secs(600));
        cache.refresh().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!vouched(&cache));
        assert!(cache.fresh().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_token_ends_the_old_ones_word() {
        let (cache, _) = vouching_cache().await;
        let old = cache.inner.current.load_full().unwrap();
        assert!(old.before_refresh.load(Ordering::Acquire));
        cache.refresh().await.unwrap();
        tokio::task::yield_now().await;
        assert!(!old.before_refresh.load(Ordering::Acquire));
        assert!(vouched(&cache));
    }
}
