//! The retry policy: configuration, per-request overrides and the decision
//! taken after each attempt.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use super::event::{DelaySource, EventHandler, GiveUpReason, RetryEvent, RetryEventKind};
use super::RetryBudget;
use crate::audit::ms as audit_ms;
use crate::audit::{AuditRecord, EventKind as AuditKind};
use crate::backoff::{between, Backoff, BackoffState, SharedRng};
use crate::classify::{Class, Classify, DefaultClassifier, FailureKind};
use crate::error::{BoxError, RetryDeadlineExceeded};
use crate::origin::Origin;
use crate::retry_after::{server_hint, Clock, HintSource, ServerHint, SystemClock};

/// The `Idempotency-Key` header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Settings shared by every service made by one [`RetryLayer`](super::RetryLayer).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_server_hint: Duration,
    pub(crate) hint_jitter_ratio: f64,
    pub(crate) hint_jitter_max: Duration,
    pub(crate) budget: RetryBudget,
    pub(crate) classifier: Arc<dyn Classify>,
    /// `classifier` is the [`DefaultClassifier`]: a status under 400 is a
    /// success without asking it.
    pub(crate) default_classifier: bool,
    pub(crate) rng: SharedRng,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auto_idempotency_key: bool,
    /// Origins declared to honour `Idempotency-Key`: a keyed request to one
    /// of them may be retried after any retryable failure.
    pub(crate) key_origins: Arc<[Origin]>,
    pub(crate) replay_rejected_token: bool,
    pub(crate) on_event: Option<EventHandler>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            deadline: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_server_hint: Duration::from_secs(180),
            hint_jitter_ratio: 0.1,
            hint_jitter_max: Duration::from_secs(1),
            budget: RetryBudget::default(),
            classifier: Arc::new(DefaultClassifier),
            default_classifier: true,
            rng: SharedRng::from_os(),
            clock: Arc::new(SystemClock),
            auto_idempotency_key: false,
            key_origins: Arc::from(Vec::new()),
            replay_rejected_token: true,
            on_event: None,
        }
    }
}

/// Per-request changes to the layer's policy, set as a request extension.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::retry::RetryOverride;
///
/// let mut request = http::Request::new(());
/// // A bulk export: one retry at most, and give up after 5 s.
/// request.extensions_mut().insert(
///     RetryOverride::new()
///         .max_attempts(2)
///         .deadline(Duration::from_secs(5)),
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryOverride {
    max_attempts: Option<u32>,
    deadline: Option<Duration>,
    backoff: Option<Backoff>,
    max_server_hint: Option<Duration>,
    idempotent: Option<bool>,
}

impl RetryOverride {
    /// An override that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send this request once, never retry it.
    pub fn no_retry() -> Self {
        Self::new().max_attempts(1)
    }

    /// Total attempts for this request (1 = no retry; 0 is taken as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Total deadline for this request.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Declare whether this request may be sent twice, whatever its method.
    ///
    /// `true` suits requests that are safe to repeat but use `POST`, such as
    /// an OAuth2 token request; `false` forbids retries that the method
    /// would allow.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    pub(crate) fn idempotency(&self) -> Option<bool> {
        self.idempotent
    }

    pub(crate) fn attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Backoff for this request.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Largest server hint this request will wait for.
    pub fn max_server_hint(mut self, cap: Duration) -> Self {
        self.max_server_hint = Some(cap);
        self
    }
}

/// Whether RFC 9110 makes `method` idempotent (safe to send twice).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A fresh idempotency key: a random (version 4) UUID in its usual text form.
///
/// It always comes from the operating system's seeded thread generator, never
/// from the layer's (possibly seeded) jitter generator: two processes seeded
/// alike must not send the same key for different requests.
pub fn new_idempotency_key() -> HeaderValue {
    HeaderValue::from_str(&uuid_v4()).expect("hex digits and dashes are a valid header value")
}

/// A random (version 4) UUID in its usual text form, from the operating
/// system's seeded thread generator.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    text
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Return this attempt's outcome.
    Return,
    /// Start another attempt after the delay.
    Retry(Duration),
    /// Return [`OutcomeUnknown`](crate::error::OutcomeUnknown) for this
    /// attempt instead of its outcome: it failed in a way that does not
    /// prove the server left it alone (`kind`), and it may not be sent
    /// again.
    Unknown(FailureKind),
}

/// What an attempt ended with, as the retry decision reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    /// A response: its status and headers.
    Response(StatusCode, &'a HeaderMap),
    /// An error, with the wait it announces, if any: a breaker's next
    /// probe, or the `Retry-After` a vendor error kept.
    Error { wait: Option<ServerHint> },
}

impl Outcome<'_> {
    /// Whether the server said when to come back with `Retry-After` (a
    /// response's header, or one a vendor error kept): a `503` with one
    /// proves the request was not processed.
    fn carries_retry_after(&self) -> bool {
        match self {
            Outcome::Response(_, headers) => headers.contains_key(http::header::RETRY_AFTER),
            Outcome::Error { wait } => wait.is_some_and(|w| w.source == HintSource::RetryAfter),
        }
    }
}

/// Whether a request may be sent more than once, decided when it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Safety {
    pub(crate) repeatable: bool,
    pub(crate) keys_honoured: bool,
}

impl Safety {
    /// The rule for `request`: a caller's declaration wins; otherwise its
    /// method (RFC 9110), or an `Idempotency-Key` to an origin that is
    /// declared to honour keys.
    pub(crate) fn of<B>(
        config: &Config,
        overrides: Option<&RetryOverride>,
        request: &http::Request<B>,
    ) -> Self {
        let keys_honoured = !config.key_origins.is_empty()
            && request.headers().contains_key(IDEMPOTENCY_KEY)
            && Origin::of(request.uri()).is_some_and(|o| config.key_origins.contains(&o));
        let repeatable = overrides
            .and_then(RetryOverride::idempotency)
            .unwrap_or_else(|| is_idempotent(request.method()) || keys_honoured);
        Self {
            repeatable,
            keys_honoured,
        }
    }
}

/// Whether a failure proves that the server did not process the request:
/// it was never sent or nothing of it was written (a connect error,
/// [`RequestNotSent`](crate::error::RequestNotSent)), this crate's own
/// layers refused it (breaker open, queue, rate gate), or the server
/// refused it before acting: a `429`, or a `503` that carries
/// `Retry-After`.
pub(crate) fn proves_not_processed(kind: FailureKind, retry_after: bool) -> bool {
    match kind {
        FailureKind::Connect | FailureKind::NotSent => true,
        FailureKind::Status(StatusCode::TOO_MANY_REQUESTS) => true,
        FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE) => retry_after,
        _ => false,
    }
}

/// The retry bookkeeping of one logical request: a small part made for
/// every request, and what only a retry needs ([`Retrying`]), made on the
/// first outcome that is not a success.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub(crate) attempt: u32,
    /// When the logical request started: the deadline counts from here.
    started: Instant,
    /// The request may be sent again after any retryable failure: its
    /// method is idempotent, the caller declared it so, or it carries an
    /// `Idempotency-Key` for an origin that honours keys.
    repeatable: bool,
    /// It carries an `Idempotency-Key` for an origin declared to honour
    /// keys (a `409` then means "still in progress": retried).
    keys_honoured: bool,
    replayable: bool,
    /// Whether the request was already sent again after a rejected token.
    token_replayed: bool,
    /// The request's audit record, if an audit layer is outside.
    audit: Option<AuditRecord>,
    /// When the current attempt started (only tracked for the audit).
    attempt_started: Option<Instant>,
    /// The request's [`RetryOverride`], if it has one.
    overrides: Option<Box<RetryOverride>>,
    retrying: Option<Box<Retrying>>,
}

/// The settings and state of a request that is being retried.
#[derive(Debug)]
struct Retrying {
    max_attempts: u32,
    deadline_at: Instant,
    backoff: Backoff,
    backoff_state: BackoffState,
    max_server_hint: Duration,
    /// Refusals by an open or half-open breaker waited out so far: they
    /// were never sent, so up to `max_attempts` of them do not use up an
    /// attempt.
    breaker_waits: u32,
}

impl Retrying {
    fn new(config: &Config, overrides: Option<&RetryOverride>, started: Instant) -> Self {
        let deadline = overrides
            .and_then(|o| o.deadline)
            .unwrap_or(config.deadline);
        Self {
            max_attempts: overrides
                .and_then(|o| o.max_attempts)
                .unwrap_or(config.max_attempts)
                .max(1),
            // A deadline too far to represent is no deadline.
            deadline_at: started
                .checked_add(deadline)
                .unwrap_or_else(|| started + Duration::from_secs(86_400 * 365 * 30)),
            backoff: overrides.and_then(|o| o.backoff).unwrap_or(config.backoff),
            backoff_state: BackoffState::default(),
            max_server_hint: overrides
                .and_then(|o| o.max_server_hint)
                .unwrap_or(config.max_server_hint),
            breaker_waits: 0,
        }
    }
}

impl Attempts {
    /// The bookkeeping of a request whose first attempt starts at `now`.
    pub(crate) fn new(
        overrides: Option<Box<RetryOverride>>,
        safety: Safety,
        replayable: bool,
        now: Instant,
        audit: Option<AuditRecord>,
    ) -> Self {
        Self {
            attempt: 1,
            started: now,
            repeatable: safety.repeatable,
            keys_honoured: safety.keys_honoured,
            replayable,
            token_replayed: false,
            audit,
            attempt_started: None,
            overrides,
            retrying: None,
        }
    }

    /// The retry state, made on first use.
    fn retrying(&mut self, config: &Config) -> &mut Retrying {
        let (overrides, started) = (self.overrides.as_deref(), self.started);
        self.retrying
            .get_or_insert_with(|| Box::new(Retrying::new(config, overrides, started)))
    }

    /// An attempt is handed to the inner service at `now` (the caller's
    /// clock reading, so the first attempt costs no second one).
    pub(crate) fn attempt_started(&mut self, now: Instant) {
        if let Some(audit) = &self.audit {
            audit.attempt_started();
            audit.publish(Some(self.attempt), AuditKind::AttemptStarted {});
            self.attempt_started = Some(now);
        }
    }

    /// Whether anybody hears of an attempt's outcome: the layer's event
    /// handler, or an audit sink that records events (the audit's stats do
    /// not count finished attempts).
    pub(crate) fn listened(&self, config: &Config) -> bool {
        config.on_event.is_some() || self.audit.as_ref().is_some_and(AuditRecord::enabled)
    }

    /// How long the attempt that just ended took, if a sink wants events
    /// (only they carry it; the stats do not, so no clock is read for them).
    fn attempt_latency(&self) -> Option<Duration> {
        let started = self.attempt_started?;
        self.audit
            .as_ref()
            .is_some_and(AuditRecord::enabled)
            .then(|| started.elapsed())
    }

    /// The instant after which no attempt starts.
    pub(crate) fn deadline_at(&mut self, config: &Config) -> Instant {
        self.retrying(config).deadline_at
    }

    /// The deadline passed while the next attempt waited for the service to
    /// be ready: report it and make the error.
    pub(crate) fn deadline_passed(&self, config: &Config) -> BoxError {
        let before = self.attempt.saturating_sub(1);
        if let Some(audit) = &self.audit {
            audit.publish(
                Some(before),
                AuditKind::RetryGaveUp {
                    reason: GiveUpReason::DeadlineReached.as_str(),
                },
            );
        }
        if let Some(handler) = &config.on_event {
            handler(&RetryEvent {
                attempt: before,
                kind: RetryEventKind::GaveUp(GiveUpReason::DeadlineReached),
            });
        }
        RetryDeadlineExceeded::new(before).into()
    }

    /// Decide what follows the attempt that just ended, publishing every
    /// step of the reasoning.
    ///
    pub(crate) fn decide(
        &mut self,
        config: &Config,
        outcome: &Outcome<'_>,
        class: Class,
    ) -> Decision {
        let (status, headers, error_hint) = match *outcome {
            Outcome::Response(status, headers) => (Some(status), Some(headers), None),
            Outcome::Error { wait } => (None, None, wait),
        };
        // the happy path with nobody listening: nothing to report
        if class == Class::Success && !self.listened(config) {
            return Decision::Return;
        }
        let attempt = self.attempt;
        let latency = self.attempt_latency();
        let audit = self.audit.as_ref();
        let emit = |kind: RetryEventKind| emit_event(config, audit, attempt, latency, kind);
        emit(RetryEventKind::AttemptFinished { status, class });
        let give_up = |reason: GiveUpReason| {
            emit(RetryEventKind::GaveUp(reason));
            Decision::Return
        };

        let kind = match class {
            Class::Success => return Decision::Return,
            Class::Retryable(kind) => kind,
            // RFC 9110 + Idempotency-Key draft: a 409 on a keyed request means
            // "the first copy is still being processed": try again.
            Class::Fatal(FailureKind::Status(StatusCode::CONFLICT)) if self.keys_honoured => {
                FailureKind::Status(StatusCode::CONFLICT)
            }
            Class::Fatal(_) => return give_up(GiveUpReason::Fatal),
        };
        // A request that must not be applied twice, after a failure that
        // does not prove it was left alone: nothing may be sent again, and
        // the caller is told the outcome is unknown (whatever attempts,
        // budget or deadline remain).
        if !self.repeatable && !proves_not_processed(kind, outcome.carries_retry_after()) {
            emit(RetryEventKind::GaveUp(GiveUpReason::OutcomeUnknown));
            return Decision::Unknown(kind);
        }
        let (overrides, started) = (self.overrides.as_deref(), self.started);
        let r = self
            .retrying
            .get_or_insert_with(|| Box::new(Retrying::new(config, overrides, started)));
        // A breaker refusal was never sent and says when to come back:
        // waiting for it does not use up an attempt (up to `max_attempts`
        // such waits, so a flapping breaker cannot hold a request forever).
        let breaker_wait = kind == FailureKind::NotSent
            && error_hint.is_some_and(|h| h.source == HintSource::CircuitBreaker)
            && r.breaker_waits < r.max_attempts;
        if attempt >= r.max_attempts && !breaker_wait {
            return give_up(GiveUpReason::AttemptsExhausted);
        }
        if !self.replayable {
            return give_up(GiveUpReason::BodyNotReplayable);
        }

        let now = Instant::now();
        let remaining = r.deadline_at.saturating_duration_since(now);
        let report = headers.map(|h| server_hint(h, config.clock.as_ref()));
        let mut hint = error_hint;
        if let Some(report) = report {
            for malformed in report.malformed {
                emit(RetryEventKind::HintIgnored(malformed));
            }
            hint = report.hint;
        }
        let (delay, source) = match hint {
            Some(hint) => {
                if hint.delay > r.max_server_hint {
                    return give_up(GiveUpReason::HintOverCap {
                        hint,
                        cap: r.max_server_hint,
                    });
                }
                if hint.delay >= remaining {
                    return give_up(GiveUpReason::HintPastDeadline { hint });
                }
                // Never earlier than the server said; spread a little after it.
                let spread = hint
                    .delay
                    .mul_f64(config.hint_jitter_ratio)
                    .min(config.hint_jitter_max);
                let delay = between(hint.delay, hint.delay + spread, config.rng.unit());
                let latest = remaining.saturating_sub(Duration::from_nanos(1));
                (delay.min(latest).max(hint.delay), hint.source.into())
            }
            None => {
                let delay = r
                    .backoff
                    .next_delay(attempt, &mut r.backoff_state, &config.rng);
                if delay >= remaining {
                    return give_up(GiveUpReason::DeadlineReached);
                }
                (delay, DelaySource::Backoff)
            }
        };
        // (nothing reaches the server on a breaker wait: no budget needed)
        if !breaker_wait && !config.budget.withdraw(now) {
            return give_up(GiveUpReason::BudgetExhausted);
        }
        emit(RetryEventKind::RetryScheduled { delay, source });
        if breaker_wait {
            r.breaker_waits += 1;
            r.max_attempts = r.max_attempts.saturating_add(1);
        }
        self.attempt += 1;
        Decision::Retry(delay)
    }
}

impl Attempts {
    /// The bearer layer below dropped the token a `401` rejected
    /// ([`TokenRejected`](crate::auth::TokenRejected)): send the request once
    /// more, at once, with a fresh token. Like the bearer's own replay, this
    /// happens once per logical request, whatever the method (the server
    /// refused the request before acting on it), and uses neither an
    /// attempt nor the retry budget. `None` when it does not apply: the
    /// layer's replay is off, the body cannot be replayed, or the request
    /// was replayed for a rejected token already.
    pub(crate) fn token_rejected(
        &mut self,
        config: &Config,
        status: StatusCode,
        class: Class,
    ) -> Option<Decision> {
        if !config.replay_rejected_token || !self.replayable || self.token_replayed {
            return None;
        }
        self.token_replayed = true;
        let latency = self.attempt_latency();
        let audit = self.audit.as_ref();
        let attempt = self.attempt;
        emit_event(
            config,
            audit,
            attempt,
            latency,
            RetryEventKind::AttemptFinished {
                status: Some(status),
                class,
            },
        );
        emit_event(
            config,
            audit,
            attempt,
            latency,
            RetryEventKind::RetryScheduled {
                delay: Duration::ZERO,
                source: DelaySource::TokenRejected,
            },
        );
        self.attempt += 1;
        let retrying = self.retrying(config);
        retrying.max_attempts = retrying.max_attempts.saturating_add(1);
        Some(Decision::Retry(Duration::ZERO))
    }
}

/// Report one retry event to the audit record and the layer's handler.
#[inline]
fn emit_event(
    config: &Config,
    audit: Option<&AuditRecord>,
    attempt: u32,
    latency: Option<Duration>,
    kind: RetryEventKind,
) {
    if let Some(audit) = audit {
        publish_to_audit(audit, attempt, &kind, latency.unwrap_or_default());
    }
    if let Some(handler) = &config.on_event {
        handler(&RetryEvent { attempt, kind });
    }
}

/// The audit view of a retry decision.
fn publish_to_audit(audit: &AuditRecord, attempt: u32, kind: &RetryEventKind, latency: Duration) {
    let event = match kind {
        RetryEventKind::AttemptFinished { status, class } => AuditKind::AttemptFinished {
            status: status.map(|s| s.as_u16()),
            class: match class {
                Class::Success => "success",
                Class::Retryable(_) => "retryable",
                Class::Fatal(_) => "fatal",
            },
            failure: class.failure().map(|f| f.as_str()),
            latency_ms: audit_ms(latency),
        },
        RetryEventKind::HintIgnored(malformed) => AuditKind::HintIgnored {
            header: malformed.source.as_str(),
            reason: malformed.reason,
        },
        RetryEventKind::RetryScheduled { delay, source } => {
            audit.add_backoff(*delay);
            AuditKind::RetryScheduled {
                delay_ms: audit_ms(*delay),
                source: source.as_str(),
            }
        }
        RetryEventKind::GaveUp(reason) => AuditKind::RetryGaveUp {
            reason: reason.as_str(),
        },
    };
    audit.publish(Some(attempt), event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn idempotency_keys_are_uuid_v4_and_distinct() {
        let a = new_idempotency_key();
        let b = new_idempotency_key();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(text.matches('-').count(), 4);
    }

    #[test]
    fn override_zero_attempts_means_one() {
        assert_eq!(
            RetryOverride::new().max_attempts(0),
            RetryOverride::no_retry()
        );
    }
}
