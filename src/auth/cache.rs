//! The shared token cache: refresh ahead of expiry, single flight, stale but
//! valid tokens served while a refresh fails.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderValue, StatusCode};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::source::TokenSource;
use super::token::{LifetimeNote, Token, TokenError};
use crate::backoff::{Backoff, BackoffState, Jitter, SharedRng};

/// Something that happened to the cached token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AuthEvent {
    /// A new token was stored.
    TokenRefreshed {
        /// Its lifetime (after sanitising).
        lifetime: Duration,
        /// How many tokens the cache has stored so far.
        refresh_count: u64,
    },
    /// The announced lifetime was missing or out of bounds.
    LifetimeAdjusted(LifetimeNote),
    /// A refresh failed.
    RefreshFailed {
        /// Why.
        error: TokenError,
        /// Whether the current token is still valid (and still served).
        token_still_valid: bool,
        /// When the next refresh attempt is made (`None`: the next caller
        /// starts it).
        retry_in: Option<Duration>,
    },
    /// The token a request carried was refused (401) and dropped.
    TokenInvalidated {
        /// The status that caused it.
        status: StatusCode,
    },
    /// A request refused with 401 was sent again with a fresh token.
    RequestReplayed,
}

type EventHandler = Arc<dyn Fn(&AuthEvent) + Send + Sync>;

const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

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

/// The cached token with its timings, on the local monotonic clock.
pub(crate) struct Cached {
    issued: Issued,
    expires_at: Instant,
    refresh_at: Instant,
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
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn TokenSource>,
    current: ArcSwapOption<Cached>,
    refreshing: AtomicBool,
    state: Mutex<State>,
    done: watch::Sender<u64>,
    wake: Notify,
    next_id: AtomicU64,
    refresh_count: AtomicU64,
    ahead_min: Duration,
    ahead_ratio: f64,
    backoff: Backoff,
    rng: SharedRng,
    on_event: Option<EventHandler>,
}

#[derive(Default)]
struct State {
    refreshing: bool,
    last_error: Option<TokenError>,
    failures: u32,
    backoff: BackoffState,
    /// With no valid token, no new fetch before this instant.
    retry_at: Option<Instant>,
}

/// Builds a [`TokenCache`].
pub struct TokenCacheBuilder {
    source: Box<dyn TokenSource>,
    ahead_min: Duration,
    ahead_ratio: f64,
    backoff: Backoff,
    rng: SharedRng,
    on_event: Option<EventHandler>,
}

impl TokenCacheBuilder {
    /// Refresh once less than `max(min, ratio * lifetime)` is left (never
    /// earlier than half the lifetime). Default 60 s and 10 %.
    pub fn refresh_ahead(mut self, min: Duration, ratio: f64) -> Self {
        self.ahead_min = min;
        self.ahead_ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Backoff between failed refreshes. Default exponential from 1 s,
    /// capped at 60 s, equal jitter.
    pub fn refresh_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The random source for the refresh backoff's jitter.
    pub fn rng(mut self, rng: SharedRng) -> Self {
        self.rng = rng;
        self
    }

    /// Receive every [`AuthEvent`]. Keep the callback short.
    pub fn on_event<F>(mut self, handler: F) -> Self
    where
        F: Fn(&AuthEvent) + Send + Sync + 'static,
    {
        self.on_event = Some(Arc::new(handler));
        self
    }

    /// The cache.
    pub fn build(self) -> TokenCache {
        let (done, _) = watch::channel(0);
        TokenCache {
            inner: Arc::new(Inner {
                source: self.source,
                current: ArcSwapOption::empty(),
                refreshing: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                done,
                wake: Notify::new(),
                next_id: AtomicU64::new(1),
                refresh_count: AtomicU64::new(0),
                ahead_min: self.ahead_min,
                ahead_ratio: self.ahead_ratio,
                backoff: self.backoff,
                rng: self.rng,
                on_event: self.on_event,
            }),
        }
    }
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("ahead_min", &self.ahead_min)
            .field("ahead_ratio", &self.ahead_ratio)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
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
            ahead_min: Duration::from_secs(60),
            ahead_ratio: 0.1,
            backoff: Backoff::exponential(Duration::from_secs(1))
                .max_delay(Duration::from_secs(60))
                .jitter(Jitter::Equal),
            rng: SharedRng::from_os(),
            on_event: None,
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
    /// it is due. No lock, no allocation: the hot path of the bearer layer.
    pub(crate) fn fresh(&self) -> Option<Issued> {
        let guard = self.inner.current.load();
        let cached = guard.as_ref()?;
        let now = Instant::now();
        if now >= cached.expires_at {
            return None;
        }
        if now >= cached.refresh_at && !self.inner.refreshing.load(Ordering::Acquire) {
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
        Some(cached.issued.clone())
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
    /// newer token has already replaced it.
    pub(crate) fn invalidate(&self, id: u64, status: StatusCode) {
        let current = self.inner.current.load();
        if current.as_ref().is_some_and(|c| c.issued.id == id) {
            let previous = self.inner.current.compare_and_swap(&*current, None);
            if previous.as_ref().is_some_and(|c| c.issued.id == id) {
                self.inner.emit(AuthEvent::TokenInvalidated { status });
                self.inner.wake.notify_one();
            }
        }
    }

    pub(crate) fn emit(&self, event: AuthEvent) {
        self.inner.emit(event);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: AuthEvent) {
        if let Some(handler) = &self.on_event {
            handler(&event);
        }
    }

    /// Start a refresh task unless one runs. Returns whether it started one.
    fn start(this: &Arc<Inner>, state: &mut State) -> bool {
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

    async fn run_refresh(self: Arc<Self>) {
        // Whatever happens below, even a panic in the token source, the
        // single-flight flag is cleared and waiters are woken.
        let _finish = FinishRefresh(&self);
        loop {
            if Arc::strong_count(&self) == 1 {
                // every cache handle is gone: nobody needs a token any more
                break;
            }
            let result = self
                .source
                .fetch_token()
                .await
                .and_then(|token| self.prepare(token));
            match result {
                Ok((cached, lifetime)) => {
                    let cached = Arc::new(cached);
                    self.current.store(Some(cached.clone()));
                    tokio::spawn(refresh_when_due(Arc::downgrade(&self), cached));
                    let refresh_count = self.refresh_count.fetch_add(1, Ordering::Relaxed) + 1;
                    {
                        let mut state = self.lock();
                        state.last_error = None;
                        state.failures = 0;
                        state.backoff = BackoffState::default();
                        state.retry_at = None;
                    }
                    self.attempt_ended();
                    self.emit(AuthEvent::TokenRefreshed {
                        lifetime,
                        refresh_count,
                    });
                    break;
                }
                Err(error) => {
                    let now = Instant::now();
                    let valid_until = self
                        .current
                        .load()
                        .as_ref()
                        .map(|c| c.expires_at)
                        .filter(|at| *at > now);
                    let delay = {
                        let mut state = self.lock();
                        state.failures = state.failures.saturating_add(1);
                        let failures = state.failures;
                        let delay =
                            self.backoff
                                .next_delay(failures, &mut state.backoff, &self.rng);
                        state.last_error = Some(error.clone());
                        if valid_until.is_none() {
                            state.retry_at = Some(now + delay);
                        }
                        delay
                    };
                    self.attempt_ended();
                    match valid_until {
                        Some(expires_at) => {
                            // keep serving the valid token; try again before it expires
                            let wait = delay.min(expires_at - now);
                            self.emit(AuthEvent::RefreshFailed {
                                error,
                                token_still_valid: true,
                                retry_in: Some(wait),
                            });
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = self.wake.notified() => {}
                            }
                        }
                        None => {
                            self.emit(AuthEvent::RefreshFailed {
                                error,
                                token_still_valid: false,
                                retry_in: None,
                            });
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Tell waiters an attempt ended (its outcome is in the state).
    fn attempt_ended(&self) {
        self.done
            .send_modify(|round| *round = round.wrapping_add(1));
    }

    /// Check a new token and work out its header and timings.
    fn prepare(&self, token: Token) -> Result<(Cached, Duration), TokenError> {
        for note in token.lifetime_notes() {
            self.emit(AuthEvent::LifetimeAdjusted(note.clone()));
        }
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.access_token().expose())).map_err(
                |_| TokenError::UnexpectedResponse {
                    status: StatusCode::OK,
                    content_type: None,
                    detail: "the access token is not a valid header value".into(),
                },
            )?;
        header.set_sensitive(true);
        // A year at most: beyond that `Instant` arithmetic may overflow, and
        // no real token lives that long.
        let lifetime = token.lifetime().min(MAX_LIFETIME);
        let now = Instant::now();
        let expires_at = token
            .receipt()
            .checked_add(lifetime)
            .unwrap_or(now + MAX_LIFETIME);
        if expires_at <= now {
            return Err(TokenError::AlreadyExpired);
        }
        let ahead = self
            .ahead_min
            .max(lifetime.mul_f64(self.ahead_ratio))
            .min(lifetime / 2);
        let cached = Cached {
            issued: Issued {
                header,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
            },
            expires_at,
            refresh_at: expires_at - ahead,
        };
        Ok((cached, lifetime))
    }
}

/// Starts the refresh of a cached token at its `refresh_at` even when no
/// request comes (the request path starts it too, whichever is first), so a
/// client idle for a while finds a fresh token. Holds the cache only weakly:
/// a dropped cache ends it.
async fn refresh_when_due(cache: Weak<Inner>, cached: Arc<Cached>) {
    tokio::time::sleep_until(cached.refresh_at).await;
    let Some(inner) = cache.upgrade() else {
        return;
    };
    let is_current = inner
        .current
        .load()
        .as_ref()
        .is_some_and(|c| c.issued.id == cached.issued.id);
    if is_current {
        let mut state = inner.lock();
        Inner::start(&inner, &mut state);
    }
}

/// Ends a refresh round when dropped: clears the single-flight flag and
/// wakes every waiter.
struct FinishRefresh<'a>(&'a Inner);

impl Drop for FinishRefresh<'_> {
    fn drop(&mut self) {
        let inner = self.0;
        {
            let mut state = inner.lock();
            if std::thread::panicking() {
                state.last_error = Some(TokenError::transport("the token source panicked".into()));
                state.failures = state.failures.saturating_add(1);
                let failures = state.failures;
                let delay = inner
                    .backoff
                    .next_delay(failures, &mut state.backoff, &inner.rng);
                state.retry_at = Some(Instant::now() + delay);
            }
            state.refreshing = false;
            inner.refreshing.store(false, Ordering::Release);
        }
        inner
            .done
            .send_modify(|round| *round = round.wrapping_add(1));
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
