//! The board: the handles it reads and the audit events it hears, turned
//! into a [`Status`] on demand.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::audit::{AuditEvent, AuditSink, Timestamp};
use crate::auth::TokenCache;
use crate::breaker::CircuitBreakerHandle;
use crate::level::Priority;
use crate::observe::BreakerState;
use crate::priority::PriorityLimitHandle;
use crate::stack::StackHandles;

use super::recent::{Recent, DEFAULT_CAPACITY};
use super::service::StatusService;
use super::snapshot::{
    BreakerView, FleetView, GateView, LimiterView, PacingView, QueuedView, Status, TokenView,
};

/// Collects what an operator's status page shows: the handles of the
/// layers to read when asked, and (as an [`AuditSink`]) the retries, sheds
/// and fleet degradations of the audit stream.
///
/// Clones share what the board heard. Add the layers with the builder
/// methods before serving it; give a clone to the audit layer as a sink
/// (beside others, in a [`FanOut`](crate::audit::FanOut)).
#[derive(Clone)]
pub struct StatusBoard {
    title: Arc<str>,
    refresh: Duration,
    limiters: Vec<(String, PriorityLimitHandle)>,
    breakers: Vec<(String, CircuitBreakerHandle)>,
    tokens: Vec<(String, TokenCache)>,
    fleet: Option<String>,
    #[cfg(feature = "redis")]
    membership: Option<crate::fleet::Membership>,
    recent: Recent,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusBoard {
    /// A board of nothing yet, keeping the last 50 retries and sheds, its
    /// HTML page refreshing every 2 s.
    pub fn new() -> Self {
        Self {
            title: Arc::from("tower-cx status"),
            refresh: Duration::from_secs(2),
            limiters: Vec::new(),
            breakers: Vec::new(),
            tokens: Vec::new(),
            fleet: None,
            #[cfg(feature = "redis")]
            membership: None,
            recent: Recent::new(DEFAULT_CAPACITY),
        }
    }

    /// The page's title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Arc::from(title.into());
        self
    }

    /// How often the HTML page reloads itself (whole seconds, at least 1).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_secs(1));
        self
    }

    /// Keep the last `n` retries and sheds (0 keeps none; the totals are
    /// counted still). Clones made before this call keep their own list.
    pub fn recent(mut self, n: usize) -> Self {
        self.recent = Recent::new(n);
        self
    }

    /// Show this limiter under `name`.
    pub fn limiter(mut self, name: impl Into<String>, handle: PriorityLimitHandle) -> Self {
        self.limiters.push((name.into(), handle));
        self
    }

    /// Show this breaker under `name`. Reading it moves an open breaker
    /// whose time has come to half-open, as a request would.
    pub fn breaker(mut self, name: impl Into<String>, handle: CircuitBreakerHandle) -> Self {
        self.breakers.push((name.into(), handle));
        self
    }

    /// Show this token cache's expiry under `name` (never the token).
    pub fn tokens(mut self, name: impl Into<String>, cache: TokenCache) -> Self {
        self.tokens.push((name.into(), cache));
        self
    }

    /// Show a [`Stack`](crate::stack::Stack)'s limiter, breaker and token
    /// cache (if it has one), all under `name`.
    pub fn stack(self, name: impl Into<String>, handles: &StackHandles) -> Self {
        let name: String = name.into();
        let board = self
            .limiter(name.clone(), handles.limiter.clone())
            .breaker(name.clone(), handles.breaker.clone());
        match &handles.tokens {
            Some(cache) => board.tokens(name, cache.clone()),
            None => board,
        }
    }

    /// Show a fleet's state under `name`: which shared components fell back
    /// to local state, as the fleet's events say. The board hears them
    /// through the audit stream: send the fleet's events to the audit layer
    /// (`fleet.on_event(audit.emitter().handler())`).
    pub fn fleet(mut self, name: impl Into<String>) -> Self {
        self.fleet = Some(name.into());
        self
    }

    /// Show the fleet's members as `membership` last saw them (feature
    /// `redis`; spawn its heartbeat, see
    /// [`Membership::spawn`](crate::fleet::Membership::spawn)). Shows the
    /// fleet under this member's name unless [`fleet`](Self::fleet) named
    /// it.
    #[cfg(feature = "redis")]
    pub fn fleet_membership(mut self, membership: crate::fleet::Membership) -> Self {
        if self.fleet.is_none() {
            self.fleet = Some(membership.member().to_owned());
        }
        self.membership = Some(membership);
        self
    }

    /// This instance's name and the members it saw, with a membership.
    fn members(&self) -> (Option<String>, Option<Vec<String>>) {
        #[cfg(feature = "redis")]
        if let Some(membership) = &self.membership {
            return (Some(membership.member().to_owned()), membership.members());
        }
        (None, None)
    }

    /// A tower service answering with this board's page (HTML) or its JSON:
    /// see [`StatusService`].
    pub fn service(&self) -> StatusService {
        StatusService::new(self.clone())
    }

    /// The page's title.
    pub(super) fn page_title(&self) -> &str {
        &self.title
    }

    /// The page's refresh period in whole seconds.
    pub(super) fn refresh_secs(&self) -> u64 {
        self.refresh.as_secs().max(1)
    }

    /// Every layer's state now.
    pub fn snapshot(&self) -> Status {
        let now = Instant::now();
        let wall = SystemTime::now();
        let degraded = self.recent.lock().degraded.clone();
        let (member, members) = self.members();
        Status {
            generated_at: Timestamp(wall).to_string(),
            tokens: self
                .tokens
                .iter()
                .map(|(name, cache)| token_view(name, cache, now, wall))
                .collect(),
            breakers: self
                .breakers
                .iter()
                .map(|(name, handle)| breaker_view(name, handle))
                .collect(),
            limiters: self
                .limiters
                .iter()
                .map(|(name, handle)| limiter_view(name, handle))
                .collect(),
            fleet: self.fleet.as_ref().map(|name| FleetView {
                name: name.clone(),
                state: if degraded.is_empty() {
                    "shared"
                } else {
                    "degraded"
                }
                .to_owned(),
                member,
                members,
                degraded,
            }),
            recent: self.recent.view(),
        }
    }
}

impl AuditSink for StatusBoard {
    fn record(&self, event: &AuditEvent) {
        self.recent.record(event);
    }
}

impl fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusBoard")
            .field("title", &self.title)
            .field("limiters", &self.limiters.len())
            .field("breakers", &self.breakers.len())
            .field("tokens", &self.tokens.len())
            .field("fleet", &self.fleet)
            .finish_non_exhaustive()
    }
}

/// To three decimals, as shown.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Seconds, to the millisecond.
fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

fn token_view(name: &str, cache: &TokenCache, now: Instant, wall: SystemTime) -> TokenView {
    let status = cache.status();
    let wall_at = |at: Instant| {
        if at >= now {
            wall + (at - now)
        } else {
            wall - (now - at)
        }
    };
    TokenView {
        name: name.to_owned(),
        in_hand: status.expires_at.is_some_and(|at| at > now),
        expires_at: status
            .expires_at
            .map(|at| Timestamp(wall_at(at)).to_string()),
        expires_in_s: status
            .expires_at
            .map(|at| seconds(at.saturating_duration_since(now))),
        refresh_in_s: status
            .refresh_at
            .map(|at| seconds(at.saturating_duration_since(now))),
        refreshing: status.refreshing,
        refresh_count: status.refresh_count,
        consecutive_failures: status.consecutive_failures,
    }
}

fn breaker_view(name: &str, handle: &CircuitBreakerHandle) -> BreakerView {
    let state = handle.state();
    let counts = handle.counts();
    BreakerView {
        name: name.to_owned(),
        state: state.as_str().to_owned(),
        next_probe_in_s: match state {
            BreakerState::Open { retry_in } => Some(seconds(retry_in)),
            _ => None,
        },
        successes: counts.successes,
        failures: counts.failures,
        rejected: counts.rejected,
        trips: counts.trips,
    }
}

fn limiter_view(name: &str, handle: &PriorityLimitHandle) -> LimiterView {
    let status = handle.status();
    let queued = |priority: Priority| status.queued[priority as usize];
    let closed = status.gate_closed_for.is_some();
    LimiterView {
        name: name.to_owned(),
        in_flight: status.in_flight,
        available: status.available,
        queued: QueuedView {
            high: queued(Priority::High),
            normal: queued(Priority::Normal),
            low: queued(Priority::Low),
        },
        gate: GateView {
            closed,
            reopens_in_s: status.gate_closed_for.map(seconds),
            reason: closed.then(|| match status.gate_source {
                Some(source) => source.as_str().to_owned(),
                None => "shared".to_owned(),
            }),
        },
        quota_exhausted_for_s: status.quota_exhausted_for.map(seconds),
        pacing: handle.pacing_interval().map(|interval| PacingView {
            per_second: round3(1.0 / interval.max(Duration::from_micros(1)).as_secs_f64()),
            interval_ms: round3(interval.as_secs_f64() * 1000.0),
            source: handle.pacing().source.as_str().to_owned(),
        }),
    }
}
