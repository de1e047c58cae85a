//! What the status page shows: one plain, serializable snapshot of every
//! layer's live state. The JSON answer is this type as it is; the HTML page
//! renders the same values.

use serde::{Deserialize, Serialize};

/// Every layer's state at one instant (`GET …/status.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// When the snapshot was taken (RFC 3339, UTC, milliseconds).
    pub generated_at: String,
    /// The token caches, in the order they were added.
    pub tokens: Vec<TokenView>,
    /// The circuit breakers.
    pub breakers: Vec<BreakerView>,
    /// The priority limiters: queue, gate, pacing.
    pub limiters: Vec<LimiterView>,
    /// The Redis fleet's state, if a fleet was added
    /// ([`StatusBoard::fleet`](super::StatusBoard::fleet)).
    pub fleet: Option<FleetView>,
    /// Recent retries and sheds, from the audit stream.
    pub recent: RecentView,
}

/// A token cache: when its token expires. Never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    /// The name it was added under.
    pub name: String,
    /// Whether a token that has not expired is in hand.
    pub in_hand: bool,
    /// When the token expires (RFC 3339), if there is one.
    pub expires_at: Option<String>,
    /// Seconds until it expires (0 once expired), if there is one.
    pub expires_in_s: Option<f64>,
    /// Seconds until the background refresh starts, if one is planned.
    pub refresh_in_s: Option<f64>,
    /// Whether a refresh is in flight.
    pub refreshing: bool,
    /// Tokens stored so far.
    pub refresh_count: u64,
    /// Refreshes that failed in a row.
    pub consecutive_failures: u32,
}

/// A circuit breaker: its state, and when it lets the next probe through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerView {
    /// The name it was added under.
    pub name: String,
    /// `closed`, `open`, `half_open` or `isolated`.
    pub state: String,
    /// Seconds until probes are let through, while open.
    pub next_probe_in_s: Option<f64>,
    /// Attempts counted as successes.
    pub successes: u64,
    /// Attempts counted as failures.
    pub failures: u64,
    /// Requests refused without being sent.
    pub rejected: u64,
    /// Times the breaker opened.
    pub trips: u64,
}

/// A priority limiter: permits, queue per priority, gate and pacing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterView {
    /// The name it was added under.
    pub name: String,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Permits free.
    pub available: usize,
    /// Waiting requests per priority.
    pub queued: QueuedView,
    /// The rate gate.
    pub gate: GateView,
    /// While the server's quota is exhausted (a daily cap: every request
    /// fails at once with
    /// [`QuotaExhausted`](crate::error::QuotaExhausted)): seconds until it
    /// resets.
    #[serde(default)]
    pub quota_exhausted_for_s: Option<f64>,
    /// The pacing in force, if the limiter paces.
    pub pacing: Option<PacingView>,
}

/// Waiting requests per priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedView {
    /// `High` waiters.
    pub high: usize,
    /// `Normal` waiters.
    pub normal: usize,
    /// `Low` waiters.
    pub low: usize,
}

/// The rate gate: whether it is closed, until when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    /// Whether nothing is dispatched now.
    pub closed: bool,
    /// Seconds until it reopens, while closed.
    pub reopens_in_s: Option<f64>,
    /// What closed it, while closed: the header of the server hint
    /// (`retry-after`, `ratelimit`, `inin-ratelimit-reset`), `shared` (a
    /// limiter sharing the gate, e.g. another fleet member), or `unknown`
    /// (closed by hand, or before the board listened).
    pub reason: Option<String>,
}

/// The pacing in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacingView {
    /// Dispatches per second.
    pub per_second: f64,
    /// Milliseconds between two dispatches.
    pub interval_ms: f64,
    /// Where the rate comes from: `configured`, or what it was learned
    /// from.
    pub source: String,
}

/// The Redis fleet: whether each shared component works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// The fleet's name on the page (e.g. its key prefix).
    pub name: String,
    /// `shared` while every component uses Redis, `degraded` while any
    /// falls back to this instance's own state.
    pub state: String,
    /// This instance's name in the fleet, with a membership
    /// ([`StatusBoard::fleet_membership`](super::StatusBoard::fleet_membership)).
    pub member: Option<String>,
    /// The members seen alive at the last heartbeat (sorted), with a
    /// membership; `None` before its first heartbeat.
    pub members: Option<Vec<String>>,
    /// The components that fell back, with why and since when.
    pub degraded: Vec<DegradedView>,
}

/// A fleet component that fell back to local state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DegradedView {
    /// `token`, `gate`, `breaker` or `pacer`.
    pub component: String,
    /// Why (the kind of failure).
    pub reason: String,
    /// Since when (RFC 3339).
    pub since: String,
}

/// Recent retries and sheds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentView {
    /// Retries scheduled since the board started.
    pub retries_total: u64,
    /// Requests shed since the board started.
    pub sheds_total: u64,
    /// The latest retries and sheds, newest first.
    pub events: Vec<RecentEvent>,
}

/// One retry or shed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// When (RFC 3339).
    pub ts: String,
    /// `retry.scheduled` or `request.shed`.
    pub event: String,
    /// The logical request's correlation id.
    pub correlation_id: String,
    /// The attempt it followed, for a retry.
    pub attempt: Option<u32>,
    /// What it was: the delay and its source, or the priority and reason.
    pub detail: String,
}
