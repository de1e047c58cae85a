//! The stack the gateway forwards through, from the flags, with the audit
//! fanned out to the file (`--audit-file`) and the metrics.

use http::header::HeaderName;
use http::Uri;
use tower::Layer;
use tower_cx::audit::{AuditLayer, FanOut, JsonLinesDeadLetters, JsonLinesSink};
use tower_cx::auth::ClientCredentials;
use tower_cx::error::BoxError;
use tower_cx::metrics::MetricsSink;
use tower_cx::origin::Origin;
use tower_cx::priority::PriorityFromHeaderLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::{Stack, StackHandles};
use tower_cx::status::StatusBoard;

use super::flags::Flags;
use super::proxy::Upstream;
use super::shared;

/// The stack with what the gateway reads of it.
pub struct Assembled {
    /// The stack as the gateway calls it.
    pub upstream: Upstream,
    /// Its token cache, breaker, limiter and statistics.
    pub handles: StackHandles,
    /// The `--audit-file` sink, to flush at exit.
    pub audit_file: Option<JsonLinesSink>,
    /// The operator's status page (`/_cx/status`).
    pub board: StatusBoard,
}

/// The whole stack, outermost first: priority from `x-priority`, then
/// Audit -> Retry -> Breaker -> PriorityLimit -> Bearer -> Timeout.
pub fn build_stack(flags: &Flags, upstream: &Uri) -> Result<Assembled, BoxError> {
    let origin = upstream.to_string();
    let board = StatusBoard::new().title("tower-cx-gateway");
    let mut sinks = FanOut::new().with(MetricsSink::new()).with(board.clone());
    let audit_file = match &flags.audit_file {
        Some(path) => {
            let file =
                JsonLinesSink::file(path).map_err(|e| format!("--audit-file {path}: {e}"))?;
            sinks = sinks.with(file.clone());
            Some(file)
        }
        None => None,
    };
    let mut audit = AuditLayer::new(sinks);
    if let Some(path) = &flags.dead_letter_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--dead-letter-file {path}: {e}"))?;
        // unbuffered: a letter is on disk when the request ends, shutdown
        // or not
        audit = audit
            .dead_letters(JsonLinesDeadLetters::new(file))
            .dead_letter_dropped(true);
    }
    let mut retry = RetryLayer::new()
        .max_attempts(flags.max_attempts)
        .deadline(flags.deadline)
        .auto_idempotency_key(true);
    if flags.upstream_honours_keys {
        retry = retry.idempotency_keys_honoured_by(Origin::parse(&origin)?);
    }
    let shared = shared::layers(flags, &audit, &origin, credentials(flags)?)?;
    #[cfg(feature = "redis")]
    let membership = shared.membership;
    if let Some(budget) = shared.retry_budget {
        retry = retry.budget(budget);
    }
    let mut stack = Stack::new()
        .audit(audit)
        .retry(retry)
        .breaker(shared.breaker)
        .limiter(shared.limiter)
        .timeout(flags.timeout);
    if let Some(tokens) = shared.tokens {
        // the token goes to the upstream's origin and nowhere else
        stack = stack.bearer(tokens).allow_origin(&origin)?;
    }
    let handles = stack.handles();
    // the board's clone in the audit sinks shares what it hears
    let mut board = board.stack(shared::METRICS_NAME, &handles);
    if flags.redis.is_some() {
        board = board.fleet(flags.client_id.as_deref().unwrap_or(&origin));
    }
    #[cfg(feature = "redis")]
    if let Some(membership) = membership {
        board = board.fleet_membership(membership);
    }
    let priority = PriorityFromHeaderLayer::new(HeaderName::from_static("x-priority"));
    Ok(Assembled {
        upstream: Upstream::new(priority.layer(stack.build())),
        handles,
        audit_file,
        board,
    })
}

/// The OAuth client credentials, with `--token-url`.
fn credentials(flags: &Flags) -> Result<Option<ClientCredentials>, BoxError> {
    let Some(token_url) = &flags.token_url else {
        return Ok(None);
    };
    let client_id = flags
        .client_id
        .clone()
        .ok_or("--client-id is required with --token-url")?;
    let secret = flags
        .client_secret
        .clone()
        .ok_or("--client-secret or TOWER_CX_CLIENT_SECRET is required with --token-url")?;
    let mut credentials =
        ClientCredentials::new(token_url, client_id, secret)?.client_auth(flags.auth_style);
    if let Some(scope) = &flags.scope {
        credentials = credentials.scope(scope.clone());
    }
    Ok(Some(credentials))
}
