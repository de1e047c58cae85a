//! The name of every instrument this module records, and their
//! descriptions for the recorder.
//!
//! OpenTelemetry's semantic conventions name the HTTP client's; the rest
//! are this crate's own, under `tower_cx.`.

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Histogram, seconds: one attempt, from its hand-off below the retry layer
/// to its outcome (the limiter's queue and a token wait included). Labels:
/// `http.request.method`, `server.address`, `server.port`,
/// `http.response.status_code`, `error.type`.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";

/// Gauge (up-down), requests: logical requests between their start and
/// their end in the audit layer. Labels: `http.request.method`,
/// `server.address`, `server.port`.
pub const HTTP_CLIENT_ACTIVE_REQUESTS: &str = "http.client.active_requests";

/// Histogram, seconds: one logical request, every attempt, backoff and
/// queue wait included. Labels as [`HTTP_CLIENT_REQUEST_DURATION`], with
/// `error.type` `cancelled` for a request its caller dropped.
pub const REQUEST_DURATION: &str = "tower_cx.request.duration";

/// Counter: retries scheduled, by `source` of the delay (`backoff`,
/// `retry-after`, `ratelimit`, `vendor-header`, `circuit-breaker`,
/// `token-rejected`).
pub const RETRIES: &str = "tower_cx.retries";

/// Counter: logical requests the retry layer stopped retrying, by `reason`
/// (`fatal`, `outcome_unknown`, `attempts_exhausted`, `budget_exhausted`,
/// `deadline_reached`, ...).
pub const RETRY_GIVE_UPS: &str = "tower_cx.retry.give_ups";

/// Histogram, seconds: the wait of a request that queued in the limiter
/// (a closed gate included), by `priority`.
pub const QUEUE_WAIT: &str = "tower_cx.queue.wait";

/// Counter: requests that waited for a token and got none
/// (`token.refresh_failed`).
pub const TOKEN_REFRESH_FAILURES: &str = "tower_cx.token.refresh_failures";

/// Counter: requests the limiter shed without sending them, by `name`,
/// `priority` and `reason` (`queue_full`, `queue_timeout`, ...).
pub const REQUESTS_SHED: &str = "tower_cx.requests.shed";

/// Histogram, seconds: how much closed time each closure of the rate gate
/// added (its sum is the time the gate was announced closed), by `name` and
/// `source` (the hint's header, or `shared` for a closure another limiter
/// announced).
pub const GATE_CLOSED_DURATION: &str = "tower_cx.gate.closed_duration";

/// Counter: times the limiter entered the exhausted state (a server hint
/// over its `max_gate`: a daily cap), by `name` and `source` (the hint's
/// header, or `shared` when another limiter saw it).
pub const QUOTA_EXHAUSTIONS: &str = "tower_cx.quota.exhaustions";

/// Gauge: the pacing rate in force, in requests per minute (0 when not
/// paced, and for a sliding window, which has no single rate), by `name`. Set on each `pacing.changed` event (a cut after a
/// `429`, or a new advertised limit); a [`MetricsSampler`](super::MetricsSampler)
/// that has the limiter sets it to the rate in force at each sample (the
/// recovery after a cut, a configured rate, a rate the remaining quota
/// sets).
pub const PACING_RATE: &str = "tower_cx.pacing.rate";

/// Gauge: the breaker's state, by `name`: 0 closed, 1 half-open, 2 open,
/// 3 isolated.
pub const BREAKER_STATE: &str = "tower_cx.breaker.state";

/// Counter: breaker state changes, by `name`, `from`, `to` and `reason`.
pub const BREAKER_TRANSITIONS: &str = "tower_cx.breaker.transitions";

/// Counter: tokens the cache stored (`token.stored`), by `name`.
pub const TOKENS_ISSUED: &str = "tower_cx.token.issued";

/// Counter: token requests that failed (`token.fetch_failed`), by `name`
/// and `token_still_valid` (`true`, `false`).
pub const TOKEN_FETCH_FAILURES: &str = "tower_cx.token.fetch_failures";

/// Counter: tokens dropped after a `401` (`token.invalidated`), by `name`.
pub const TOKEN_INVALIDATIONS: &str = "tower_cx.token.invalidations";

/// Gauge, seconds: time until the cached token expires (0 without one), by
/// `name`.
pub const TOKEN_EXPIRES_IN: &str = "tower_cx.token.expires_in";

/// Gauge: token refreshes that failed in a row, by `name`.
pub const TOKEN_CONSECUTIVE_FAILURES: &str = "tower_cx.token.consecutive_failures";

/// Gauge: requests waiting in the limiter's queue, by `name` and
/// `priority`.
pub const QUEUE_DEPTH: &str = "tower_cx.queue.depth";

/// Gauge: requests holding one of the limiter's permits, by `name`.
pub const LIMITER_IN_FLIGHT: &str = "tower_cx.limiter.in_flight";

/// Counter: requests handed to a dead-letter sink, by `error.type`.
pub const DEAD_LETTERS: &str = "tower_cx.dead_letters";

/// Counter: fleet components that fell back to local state
/// (`fleet.degraded`), by `name` and `component`.
pub const FLEET_DEGRADATIONS: &str = "tower_cx.fleet.degradations";

/// Counter: fleet components that use shared state again
/// (`fleet.restored`), by `name` and `component`.
pub const FLEET_RESTORATIONS: &str = "tower_cx.fleet.restorations";

/// Gauge: 1 while a fleet component runs on local state, 0 once restored,
/// by `name` and `component`.
pub const FLEET_DEGRADED: &str = "tower_cx.fleet.degraded";

/// Describe every instrument (unit and description) to the recorder
/// installed now. The sink and the sampler call it when they are made;
/// call it again after installing a recorder later.
pub fn describe() {
    describe_histogram!(
        HTTP_CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of one HTTP attempt, queue wait included."
    );
    describe_gauge!(
        HTTP_CLIENT_ACTIVE_REQUESTS,
        Unit::Count,
        "Logical requests in flight."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of one logical request, every attempt and wait included."
    );
    describe_counter!(RETRIES, Unit::Count, "Retries scheduled, by delay source.");
    describe_counter!(
        RETRY_GIVE_UPS,
        Unit::Count,
        "Requests the retry layer stopped retrying, by reason."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a request waited in the limiter's queue."
    );
    describe_counter!(
        TOKEN_REFRESH_FAILURES,
        Unit::Count,
        "Requests that waited for a token and got none."
    );
    describe_counter!(REQUESTS_SHED, Unit::Count, "Requests shed by the limiter.");
    describe_histogram!(
        GATE_CLOSED_DURATION,
        Unit::Seconds,
        "Closed time each rate-gate closure added."
    );
    describe_counter!(
        QUOTA_EXHAUSTIONS,
        Unit::Count,
        "Times the limiter entered the quota-exhausted state."
    );
    describe_gauge!(
        BREAKER_STATE,
        Unit::Count,
        "Breaker state: 0 closed, 1 half-open, 2 open, 3 isolated."
    );
    describe_counter!(BREAKER_TRANSITIONS, Unit::Count, "Breaker state changes.");
    describe_counter!(TOKENS_ISSUED, Unit::Count, "Tokens stored by the cache.");
    describe_counter!(
        TOKEN_FETCH_FAILURES,
        Unit::Count,
        "Token requests that failed."
    );
    describe_counter!(
        TOKEN_INVALIDATIONS,
        Unit::Count,
        "Tokens dropped after a 401."
    );
    describe_gauge!(
        TOKEN_EXPIRES_IN,
        Unit::Seconds,
        "Time until the cached token expires."
    );
    describe_gauge!(
        TOKEN_CONSECUTIVE_FAILURES,
        Unit::Count,
        "Token refreshes that failed in a row."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Requests waiting in the limiter's queue."
    );
    describe_gauge!(
        LIMITER_IN_FLIGHT,
        Unit::Count,
        "Requests holding a limiter permit."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Requests handed to a dead-letter sink."
    );
    describe_counter!(
        FLEET_DEGRADATIONS,
        Unit::Count,
        "Fleet components that fell back to local state."
    );
    describe_counter!(
        FLEET_RESTORATIONS,
        Unit::Count,
        "Fleet components that use shared state again."
    );
    describe_gauge!(
        FLEET_DEGRADED,
        Unit::Count,
        "1 while a fleet component runs on local state."
    );
    describe_gauge!(
        PACING_RATE,
        "The pacing rate in force, in requests per minute (0: not paced)."
    );
}
