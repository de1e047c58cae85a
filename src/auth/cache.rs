//! The shared token cache: refresh ahead of expiry, single flight, stale but
//! valid tokens served while a refresh fails.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderValue, StatusCode};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::builder::{Settings, TokenCacheBuilder};
use super::source::TokenSource;
use super::token::{Secret, TokenError};
use crate::backoff::{Backoff, BackoffState, Jitter, SharedRng};
use crate::observe::AuthEvent;
use tokio::task::AbortHandle;

/// What the cache did with a token a request reported as refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The token was dropped and a fresh one will be fetched: replay.
    Dropped,
    /// A newer token already replaced it (or a refresh is under way):
    /// replay with that one.
    Newer,
    /// Within the rejection cooldown: the token is kept; do not replay.
    Kept,
}

pub(super) type EventHandler = Arc<dyn Fn(&AuthEvent) + Send + Sync>;

pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// What the cache knows, without the token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// When the current token expires, if there is one.
    pub expires_at: Option<Instant>,
    /// When a background refresh of the current token starts.
    pub refresh_at: Option<Instant>,
    /// Tokens stored so far.
    pub refresh_count: u64,
    /// Refreshes that failed in a row.
    pub consecutive_failures: u32,
    /// Whether a refresh is in flight.
    pub refreshing: bool,
}

/// A token ready to send: the `Authorization` value and an id that tells
/// this token apart from the next.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) header: HeaderValue,
    pub(crate) id: u64,
}

/// What a [`Bearer`](super::Bearer) last read from its cache: the token
/// (if any) with the cache's generation at the time.
///
/// Each bearer service keeps one: while the generation has not moved (no
/// token stored or dropped since), its token is the cache's current one,
/// read without the shared pointer's load. Validity is still checked on
/// every read: against the clock, unless the watcher thread vouches that
/// the token is before its refresh point (`auth::vouch`).
#[derive(Clone, Default)]
pub(crate) struct Seen {
    generation: u64,
    cached: Option<Arc<Cached>>,
}

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seen")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The cached token with its timings, on the local monotonic clock.
pub(crate) struct Cached {
    pub(super) issued: Issued,
    /// The token text, to tell the source which one was refused.
    pub(super) token: Secret,
    pub(super) expires_at: Instant,
    pub(super) refresh_at: Instant,
    /// Up from the token's storing until its refresh point, lowered then by
    /// the process's watcher thread (see `auth::vouch`): the hot path then
    /// reads no clock.
    pub(super) before_refresh: AtomicBool,
}

/// Shared token cache. Clones share the token, the refresh and the counts;
/// it is also the handle to inspect the cache and force a refresh.
///
/// - Expiry is measured on the local monotonic clock from the token's
///   receipt, never from the server's clock.
/// - Once less than `max(60 s, 10 % of the lifetime)` is left (see
///   [`refresh_ahead`](TokenCacheBuilder::refresh_ahead)), one background
///   refresh starts; callers keep the current token with no added latency.
/// - At most one token request is in flight at any moment, however many
///   callers wait.
/// - While a refresh fails and the token is still valid, the token is served
///   and the refresh retried with backoff; once it has expired, callers get
///   [`TokenError::Unavailable`] with the cause until a refresh succeeds.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::auth::{source_fn, Token, TokenCache, TokenError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let cache = TokenCache::new(source_fn(|| async {
///     Ok::<_, TokenError>(Token::new("secret-token", Duration::from_secs(3600)))
/// }));
/// cache.refresh().await.unwrap();
/// assert_eq!(cache.status().refresh_count, 1);
/// // Debug never shows the token.
/// assert!(!format!("{cache:?}").contains("secret-token"));
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) source: Box<dyn TokenSource>,
    pub(super) current: ArcSwapOption<Cached>,
    /// Moves on after every change of `current` (see [`Seen`]).
    pub(super) generation: AtomicU64,
    pub(super) refreshing: AtomicBool,
    pub(super) state: Mutex<State>,
    pub(super) done: watch::Sender<u64>,
    pub(super) wake: Notify,
    pub(super) next_id: AtomicU64,
    pub(super) refresh_count: AtomicU64,
    pub(super) settings: Settings,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) refreshing: bool,
    pub(super) last_error: Option<TokenError>,
    pub(super) failures: u32,
    pub(super) backoff: BackoffState,
    /// With no valid token, no new fetch before this instant.
    pub(super) retry_at: Option<Instant>,
    /// When a 401 last dropped a token.
    pub(super) last_rejection: Option<Instant>,
    /// The task that refreshes the current token when it is due (one per
    /// cache: a new token aborts the previous one's).
    pub(super) timer: Option<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let timer = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .timer
            .take();
        if let Some(timer) = timer {
            timer.abort();
        }
    }
}

impl TokenCache {
    /// A cache over `source` with the default settings.
    pub fn new(source: impl TokenSource) -> Self {
        Self::builder(source).build()
    }

    /// A builder over `source`.
    pub fn builder(source: impl TokenSource) -> TokenCacheBuilder {
        TokenCacheBuilder {
            source: Box::new(source),
            settings: Settings {
                ahead_min: Duration::from_secs(60),
                ahead_ratio: 0.1,
                backoff: Backoff::exponential(Duration::from_secs(1))
                    .max_delay(Duration::from_secs(60))
                    .jitter(Jitter::Equal),
                rng: SharedRng::from_os(),
                on_event: None,
                rejection_cooldown: Duration::from_secs(30),
            },
        }
    }

    /// What the cache knows now (never the token text).
    pub fn status(&self) -> TokenStatus {
        let current = self.inner.current.load();
        let state = self.inner.lock();
        TokenStatus {
            expires_at: current.as_ref().map(|c| c.expires_at),
            refresh_at: current.as_ref().map(|c| c.refresh_at),
            refresh_count: self.inner.refresh_count.load(Ordering::Relaxed),
            consecutive_failures: state.failures,
            refreshing: state.refreshing,
        }
    }

    /// Fetch a new token now (joining a refresh already in flight, cutting its
    /// backoff short) and wait for the outcome of that attempt.
    pub async fn refresh(&self) -> Result<(), TokenError> {
        let mut done = self.inner.done.subscribe();
        {
            let mut state = self.inner.lock();
            if !Inner::start(&self.inner, &mut state) {
                // cut a backoff sleep short: the caller wants a token now
                self.inner.wake.notify_one();
            }
        }
        let _ = done.changed().await;
        match &self.inner.lock().last_error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// The current token if it is valid, starting a background refresh when
    /// it is due. No lock, no allocation.
    pub(crate) fn fresh(&self) -> Option<Issued> {
        let guard = self.inner.current.load();
        self.check(guard.as_ref()?)
    }

    /// [`fresh`](Self::fresh), reading the token through `seen` (the
    /// caller's own): the hot path of the bearer layer. Only when the
    /// cache's generation has moved since is the current token loaded.
    #[inline]
    pub(crate) fn fresh_seen(&self, seen: &mut Seen) -> Option<Issued> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        if generation != seen.generation {
            self.reload(seen, generation);
        }
        self.check(seen.cached.as_ref()?)
    }

    /// Load the current token into `seen` (out of the hot path: once per
    /// change of the token).
    #[cold]
    #[inline(never)]
    fn reload(&self, seen: &mut Seen, generation: u64) {
        // loaded after the generation was read: at least as new
        *seen = Seen {
            generation,
            cached: self.inner.current.load_full(),
        };
    }

    /// `cached`'s header if it has not expired; starts the refresh when it
    /// is due.
    #[inline]
    fn check(&self, cached: &Cached) -> Option<Issued> {
        if cached.before_refresh.load(Ordering::Acquire) {
            // the watcher vouches: valid, and no refresh due yet
            return Some(cached.issued.clone());
        }
        let now = Instant::now();
        if now >= cached.expires_at {
            return None;
        }
        if now >= cached.refresh_at && !self.inner.refreshing.load(Ordering::Acquire) {
            self.start_if_due();
        }
        Some(cached.issued.clone())
    }

    /// Start the refresh of the current token if it is due (once in its
    /// lifetime: out of the hot path).
    #[cold]
    fn start_if_due(&self) {
        let mut state = self.inner.lock();
        // a refresh may have just ended with a newer token: check again
        let due = self
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.refresh_at);
        if due {
            Inner::start(&self.inner, &mut state);
        }
    }

    /// A valid token, waiting for a refresh if there is none.
    pub(crate) async fn token(&self) -> Result<Issued, TokenError> {
        loop {
            if let Some(issued) = self.fresh() {
                return Ok(issued);
            }
            let mut done = self.inner.done.subscribe();
            {
                let mut state = self.inner.lock();
                // a refresh may have finished between `fresh` and the lock
                if let Some(issued) = self.fresh_now() {
                    return Ok(issued);
                }
                if !state.refreshing {
                    if let (Some(retry_at), Some(error)) = (state.retry_at, &state.last_error) {
                        if Instant::now() < retry_at {
                            return Err(TokenError::Unavailable {
                                cause: Box::new(error.clone()),
                            });
                        }
                    }
                    Inner::start(&self.inner, &mut state);
                }
            }
            let _ = done.changed().await;
            if self.fresh_now().is_none() {
                if let Some(error) = &self.inner.lock().last_error {
                    return Err(TokenError::Unavailable {
                        cause: Box::new(error.clone()),
                    });
                }
            }
        }
    }

    /// The current token if it has not expired, without starting anything.
    fn fresh_now(&self) -> Option<Issued> {
        let guard = self.inner.current.load();
        let cached = guard.as_ref()?;
        (Instant::now() < cached.expires_at).then(|| cached.issued.clone())
    }

    /// Drop the token with id `id` after the server refused it, unless a
    /// newer token has already replaced it or the rejection cooldown runs;
    /// the source is told which token was refused.
    pub(crate) fn invalidate(&self, id: u64, status: StatusCode) -> Rejection {
        let current = self.inner.current.load_full();
        let Some(cached) = current.as_ref().filter(|c| c.issued.id == id) else {
            return Rejection::Newer;
        };
        let now = Instant::now();
        let dropped = {
            let mut state = self.inner.lock();
            let ready_at = state
                .last_rejection
                .and_then(|at| at.checked_add(self.inner.settings.rejection_cooldown));
            match ready_at {
                Some(ready_at) if now < ready_at => Err(ready_at - now),
                _ => {
                    let previous = self.inner.current.compare_and_swap(&current, None);
                    let dropped = previous.as_ref().is_some_and(|c| c.issued.id == id);
                    if dropped {
                        self.inner.generation.fetch_add(1, Ordering::Release);
                        state.last_rejection = Some(now);
                    }
                    Ok(dropped)
                }
            }
        };
        match dropped {
            Err(cooldown_left) => {
                self.inner.emit(AuthEvent::RejectionDeferred {
                    status,
                    cooldown_left,
                });
                Rejection::Kept
            }
            Ok(false) => Rejection::Newer,
            Ok(true) => {
                self.inner.source.invalidate(&cached.token);
                self.inner.emit(AuthEvent::TokenInvalidated { status });
                self.inner.wake.notify_one();
                Rejection::Dropped
            }
        }
    }

    pub(crate) fn emit(&self, event: AuthEvent) {
        self.inner.emit(event);
    }
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn emit(&self, event: AuthEvent) {
        if let Some(handler) = &self.settings.on_event {
            handler(&event);
        }
    }

    /// Start a refresh task unless one runs. Returns whether it started one.
    pub(super) fn start(this: &Arc<Inner>, state: &mut State) -> bool {
        if state.refreshing {
            return false;
        }
        state.refreshing = true;
        this.refreshing.store(true, Ordering::Release);
        let inner = this.clone();
        // The refresh runs on its own task: no caller's cancellation can
        // abandon it half way or leave the single-flight flag set.
        tokio::spawn(async move { inner.run_refresh().await });
        true
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
