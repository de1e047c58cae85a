//! The refresh machinery of the [`TokenCache`](super::TokenCache): the
//! single-flight refresh task, the check of a new token, and the one timer
//! per cache that starts a refresh when the token is due.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::cache::{Cached, Inner, Issued, MAX_LIFETIME};
use super::token::{Token, TokenError};
use super::vouch::vouch;
use crate::backoff::BackoffState;
use crate::observe::AuthEvent;

impl Inner {
    pub(super) async fn run_refresh(self: Arc<Self>) {
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
                    // its word before it is current: no reader waits for it
                    vouch(&cached);
                    self.current.store(Some(cached.clone()));
                    // after the store: a bearer that sees the new
                    // generation loads this token or a newer one
                    self.generation.fetch_add(1, Ordering::Release);
                    // one timer per cache: the previous token's goes
                    let timer = tokio::spawn(refresh_when_due(Arc::downgrade(&self), cached));
                    if let Some(old) = self.lock().timer.replace(timer.abort_handle()) {
                        old.abort();
                    }
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
                        let delay = self.settings.backoff.next_delay(
                            failures,
                            &mut state.backoff,
                            &self.settings.rng,
                        );
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
            .settings
            .ahead_min
            .max(lifetime.mul_f64(self.settings.ahead_ratio))
            .min(lifetime / 2);
        let cached = Cached {
            token: token.access_token().clone(),
            issued: Issued {
                header,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
            },
            expires_at,
            refresh_at: expires_at - ahead,
            before_refresh: AtomicBool::new(false),
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
                state.last_error = Some(TokenError::transport("the token source panicked"));
                state.failures = state.failures.saturating_add(1);
                let failures = state.failures;
                let delay = inner.settings.backoff.next_delay(
                    failures,
                    &mut state.backoff,
                    &inner.settings.rng,
                );
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
