//! Tokens and rate limits: the tokens issued, each one's fixed rate window
//! (with the waits announced to it), and CXone's one data-extraction
//! submission per interval per tenant.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::config::MockConfig;
use super::ledger::MockCounters;
use super::reply::Vendor;

/// One issued token.
pub(crate) struct TokenState {
    pub(crate) vendor: Vendor,
    pub(crate) expires_at: Instant,
    window_start: Instant,
    used: u32,
    blocked_until: Option<Instant>,
    /// When the client was first told to wait (a 429, or a count at the
    /// limit); requests already in flight then are not violations.
    announced_at: Option<Instant>,
}

/// Why a request was refused before reaching its endpoint.
pub(crate) enum Refusal {
    /// No bearer token.
    Missing,
    /// Unknown or expired token.
    Invalid,
}

/// The rate-limit headers' values for an admitted request.
pub(crate) struct Admitted {
    pub(crate) used: u32,
    pub(crate) reset: u64,
    pub(crate) limited: bool,
    pub(crate) vendor: Vendor,
}

/// The issued tokens and the per-tenant extraction clock.
#[derive(Default)]
pub(crate) struct Limits {
    tokens: HashMap<String, TokenState>,
    last_extraction: HashMap<String, Instant>,
}

impl Limits {
    /// Record a token issued now by `vendor`, living `lifetime`.
    pub(crate) fn issue(&mut self, token: String, vendor: Vendor, lifetime: Duration) {
        let now = Instant::now();
        self.tokens.insert(
            token,
            TokenState {
                vendor,
                expires_at: now + lifetime,
                window_start: now,
                used: 0,
                blocked_until: None,
                announced_at: None,
            },
        );
    }

    /// Check `token` and count the request in its window: the header
    /// values (`limited` when over the limit), or why it is refused.
    pub(crate) fn admit(
        &mut self,
        config: &MockConfig,
        counters: &mut MockCounters,
        token: Option<&str>,
    ) -> Result<Admitted, Refusal> {
        let now = Instant::now();
        let token = token.ok_or(Refusal::Missing)?;
        let t = self.tokens.get_mut(token).ok_or(Refusal::Invalid)?;
        if now >= t.expires_at {
            counters.expired_token_requests += 1;
            return Err(Refusal::Invalid);
        }
        let violation = t.blocked_until.is_some_and(|until| now < until)
            && t.announced_at
                .is_some_and(|at| now.saturating_duration_since(at) > config.in_flight_grace);
        if violation {
            counters.retry_after_violations += 1;
        }
        if now.saturating_duration_since(t.window_start) >= config.rate_window {
            t.window_start = now;
            t.used = 0;
            t.blocked_until = None;
            t.announced_at = None;
        }
        let reset = (config.rate_window - now.saturating_duration_since(t.window_start))
            .as_secs_f64()
            .ceil() as u64;
        let limited = t.used >= config.rate_limit;
        if limited {
            t.blocked_until = Some(t.window_start + config.rate_window);
        } else {
            t.used += 1;
        }
        if t.used >= config.rate_limit {
            // this answer announces the wait (a 429, or a count at the limit)
            t.blocked_until = Some(t.window_start + config.rate_window);
            t.announced_at.get_or_insert(now);
        }
        Ok(Admitted {
            used: t.used,
            reset: reset.max(1),
            limited,
            vendor: t.vendor,
        })
    }

    /// CXone's data-extraction limit: `None` if `tenant` may submit now
    /// (the submission is recorded), else the seconds to wait.
    pub(crate) fn extraction(&mut self, config: &MockConfig, tenant: &str) -> Option<u64> {
        let now = Instant::now();
        if config.extraction_interval.is_zero() {
            return None;
        }
        if let Some(last) = self.last_extraction.get(tenant) {
            let since = now.saturating_duration_since(*last);
            if since < config.extraction_interval {
                let wait = (config.extraction_interval - since).as_secs_f64().ceil() as u64;
                return Some(wait.max(1));
            }
        }
        self.last_extraction.insert(tenant.to_owned(), now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_extraction_per_interval_per_tenant() {
        let config = MockConfig::default();
        let mut limits = Limits::default();
        assert_eq!(limits.extraction(&config, "a"), None);
        assert_eq!(limits.extraction(&config, "b"), None, "another tenant");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(limits.extraction(&config, "a"), Some(20));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(limits.extraction(&config, "a"), None);
    }
}
