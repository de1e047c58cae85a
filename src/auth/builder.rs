//! The [`TokenCache`] builder: its settings, and the cache it builds.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};

use super::cache::{EventHandler, Inner, State, TokenCache};
use super::source::TokenSource;
use crate::backoff::{Backoff, SharedRng};
use crate::observe::AuthEvent;

/// Builds a [`TokenCache`].
pub struct TokenCacheBuilder {
    pub(super) source: Box<dyn TokenSource>,
    pub(super) settings: Settings,
}

/// What a builder sets, kept by the cache as it is.
pub(super) struct Settings {
    pub(super) ahead_min: Duration,
    pub(super) ahead_ratio: f64,
    pub(super) backoff: Backoff,
    pub(super) rng: SharedRng,
    pub(super) on_event: Option<EventHandler>,
    pub(super) rejection_cooldown: Duration,
}

impl TokenCacheBuilder {
    /// After a 401 has dropped a token, further 401s within `cooldown`
    /// keep the (new) token and are returned as they are, without a token
    /// request or a replay (default 30 s): a path that always answers 401
    /// (a permission problem, a hostile upstream) costs at most one token
    /// request per `cooldown`, not one per request. The first 401 after a
    /// quiet period always drops the token at once, so a revoked or
    /// poisoned token is replaced right away.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::auth::{source_fn, Token, TokenCache, TokenError};
    ///
    /// let cache = TokenCache::builder(source_fn(|| async {
    ///     Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600)))
    /// }))
    /// .rejection_cooldown(Duration::from_secs(60))
    /// .build();
    /// # let _ = cache;
    /// ```
    pub fn rejection_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.rejection_cooldown = cooldown;
        self
    }

    /// Refresh once less than `max(min, ratio * lifetime)` is left (never
    /// earlier than half the lifetime). Default 60 s and 10 %.
    pub fn refresh_ahead(mut self, min: Duration, ratio: f64) -> Self {
        self.settings.ahead_min = min;
        self.settings.ahead_ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Backoff between failed refreshes. Default exponential from 1 s,
    /// capped at 60 s, equal jitter.
    pub fn refresh_backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// The random source for the refresh backoff's jitter.
    pub fn rng(mut self, rng: SharedRng) -> Self {
        self.settings.rng = rng;
        self
    }

    /// Receive every [`AuthEvent`]. Keep the callback short.
    pub fn on_event<F>(mut self, handler: F) -> Self
    where
        F: Fn(&AuthEvent) + Send + Sync + 'static,
    {
        self.settings.on_event = Some(Arc::new(handler));
        self
    }

    /// The cache.
    pub fn build(self) -> TokenCache {
        let (done, _) = watch::channel(0);
        TokenCache {
            inner: Arc::new(Inner {
                source: self.source,
                current: ArcSwapOption::empty(),
                generation: AtomicU64::new(0),
                refreshing: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                done,
                wake: Notify::new(),
                next_id: AtomicU64::new(1),
                refresh_count: AtomicU64::new(0),
                settings: self.settings,
            }),
        }
    }
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("ahead_min", &self.settings.ahead_min)
            .field("ahead_ratio", &self.settings.ahead_ratio)
            .field("backoff", &self.settings.backoff)
            .field("rejection_cooldown", &self.settings.rejection_cooldown)
            .finish_non_exhaustive()
    }
}
