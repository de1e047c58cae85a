//! The retry decision taken after each attempt, and the bookkeeping of one
//! logical request.

use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use tokio::time::Instant;

use super::config::{Config, RetryOverride};
use super::safety::{proves_not_processed, Safety, IDEMPOTENCY_KEY};
use super::template::Template;
use crate::backoff::{between, Backoff, BackoffState};
use crate::classify::{Class, FailureKind};
use crate::error::{BoxError, RetryDeadlineExceeded};
use crate::hint::{server_hint, HintSource, ServerHint};
use crate::observe::{DelaySource, GiveUpReason, RequestContext, RetryEvent, RetryEventKind};
use crate::replay::ReplayedAbove;

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

/// The retry bookkeeping of one logical request: a small part made for
/// every request, and what only a retry needs ([`Retrying`]), made on the
/// first outcome that is not a success.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub(crate) attempt: u32,
    /// When the logical request started: the deadline counts from here.
    started: Instant,
    /// The side-effect rule for this request ([`Safety::of`]): whether it
    /// may be sent again after any retryable failure, and whether its
    /// `Idempotency-Key` is honoured. Read from the copy kept for retries
    /// at the first failure ([`settle_safety`](Self::settle_safety)), so a
    /// request that succeeds at once never reads it; read at the call
    /// when no copy could be kept.
    safety: Option<Safety>,
    replayable: bool,
    /// Whether the request was already sent again after a rejected token.
    token_replayed: bool,
    /// The request's context, if an observing layer is outside: put on
    /// each attempt.
    audit: Option<RequestContext>,
    /// Each attempt is marked [`ReplayedAbove`]: a bearer below leaves the
    /// 401 replay to this layer (see [`crate::replay`]).
    mark_replay: bool,
    /// When the current attempt started (only tracked when somebody
    /// listens).
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

/// The deadline of a logical request, as a length from its start.
fn deadline_of(config: &Config, overrides: Option<&RetryOverride>) -> Duration {
    overrides
        .and_then(|o| o.deadline)
        .unwrap_or(config.deadline)
}

impl Retrying {
    fn new(config: &Config, overrides: Option<&RetryOverride>, started: Instant) -> Self {
        Self {
            max_attempts: overrides
                .and_then(|o| o.max_attempts)
                .unwrap_or(config.max_attempts)
                .max(1),
            // A deadline too far to represent is no deadline.
            deadline_at: started
                .checked_add(deadline_of(config, overrides))
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
        safety: Option<Safety>,
        replayable: bool,
        now: Instant,
        audit: Option<RequestContext>,
        mark_replay: bool,
    ) -> Self {
        Self {
            attempt: 1,
            started: now,
            safety,
            replayable,
            token_replayed: false,
            audit,
            mark_replay,
            attempt_started: None,
            overrides,
            retrying: None,
        }
    }

    /// Read the side-effect rule from `template` (the request's copy) if
    /// it was not read at the call: before the first decision on a
    /// failure.
    pub(crate) fn settle_safety<B>(&mut self, config: &Config, template: Option<&Template<B>>) {
        if self.safety.is_none() {
            if let Some(template) = template {
                self.safety = Some(Safety::of_parts(
                    config,
                    self.overrides.as_deref(),
                    template.method(),
                    template.uri(),
                    || template.has_header(&IDEMPOTENCY_KEY),
                ));
            }
        }
    }

    /// The side-effect rule (settled before any decision on a failure).
    fn safety(&self) -> Safety {
        self.safety.unwrap_or(Safety {
            repeatable: false,
            keys_honoured: false,
        })
    }

    /// The retry state, made on first use.
    fn retrying(&mut self, config: &Config) -> &mut Retrying {
        let (overrides, started) = (self.overrides.as_deref(), self.started);
        self.retrying
            .get_or_insert_with(|| Box::new(Retrying::new(config, overrides, started)))
    }

    /// An attempt is handed to the inner service at `now` (the caller's
    /// clock reading, so the first attempt costs no second one).
    pub(crate) fn attempt_started(&mut self, config: &Config, now: Instant) {
        if let Some(audit) = &self.audit {
            audit.attempt_started();
        }
        if self.listened(config) {
            self.attempt_started = Some(now);
        }
        // the audit's stats count attempts even when no sink wants events
        if self.audit.is_some() || config.on_event.is_some() {
            self.emit(config, RetryEventKind::AttemptStarted);
        }
    }

    /// Put the request's context on an attempt, and the replay mark when
    /// it travels as an extension (without a context).
    pub(crate) fn tag<B>(&self, request: &mut Request<B>) {
        match &self.audit {
            Some(audit) => {
                request.extensions_mut().insert(audit.clone());
            }
            None if self.mark_replay => {
                request.extensions_mut().insert(ReplayedAbove);
            }
            None => {}
        }
    }

    /// Whether anybody hears of what an attempt does: the layer's event
    /// handler, or an observer that wants events as values (the audit's
    /// stats count attempts started, and nothing that needs a clock).
    pub(crate) fn listened(&self, config: &Config) -> bool {
        config.on_event.is_some() || self.audit.as_ref().is_some_and(RequestContext::enabled)
    }

    /// How long the attempt that just ended took, if anybody listened when
    /// it started.
    fn attempt_latency(&self) -> Duration {
        self.attempt_started
            .map_or(Duration::ZERO, |started| started.elapsed())
    }

    /// Report one retry event about the current attempt to the request's
    /// context (the audit) and to the layer's handler: the same value.
    fn emit(&self, config: &Config, kind: RetryEventKind) {
        emit_event(config, self.audit.as_ref(), self.attempt, kind);
    }

    /// The instant after which no attempt starts.
    pub(crate) fn deadline_at(&mut self, config: &Config) -> Instant {
        self.retrying(config).deadline_at
    }

    /// The deadline as its start and length, without making the retry
    /// state or taking the sum (for the first attempt, which most requests
    /// end with).
    pub(crate) fn first_deadline(&self, config: &Config) -> (Instant, Duration) {
        (self.started, deadline_of(config, self.overrides.as_deref()))
    }

    /// The deadline passed while the next attempt waited for the service to
    /// be ready: report it and make the error.
    pub(crate) fn deadline_passed(&self, config: &Config) -> BoxError {
        let before = self.attempt.saturating_sub(1);
        emit_event(
            config,
            self.audit.as_ref(),
            before,
            RetryEventKind::GaveUp(GiveUpReason::DeadlineReached),
        );
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
        let audit = self.audit.as_ref();
        let emit = |kind: RetryEventKind| emit_event(config, audit, attempt, kind);
        emit(RetryEventKind::AttemptFinished {
            status,
            class,
            latency: self.attempt_latency(),
        });
        let give_up = |reason: GiveUpReason| {
            emit(RetryEventKind::GaveUp(reason));
            Decision::Return
        };

        let kind = match class {
            Class::Success => return Decision::Return,
            Class::Retryable(kind) => kind,
            // RFC 9110 + Idempotency-Key draft: a 409 on a keyed request means
            // "the first copy is still being processed": try again.
            Class::Fatal(FailureKind::Status(StatusCode::CONFLICT))
                if self.safety().keys_honoured =>
            {
                FailureKind::Status(StatusCode::CONFLICT)
            }
            Class::Fatal(_) => return give_up(GiveUpReason::Fatal),
        };
        // A request that must not be applied twice, after a failure that
        // does not prove it was left alone: nothing may be sent again, and
        // the caller is told the outcome is unknown (whatever attempts,
        // budget or deadline remain).
        if !self.safety().repeatable && !proves_not_processed(kind, outcome.carries_retry_after()) {
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
        self.emit(
            config,
            RetryEventKind::AttemptFinished {
                status: Some(status),
                class,
                latency: self.attempt_latency(),
            },
        );
        self.emit(
            config,
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

/// Report one retry event to the request's context and the layer's
/// handler.
#[inline]
fn emit_event(config: &Config, audit: Option<&RequestContext>, attempt: u32, kind: RetryEventKind) {
    if let Some(audit) = audit {
        if let RetryEventKind::RetryScheduled { delay, .. } = kind {
            audit.add_backoff(delay);
        }
        if let Some(handler) = &config.on_event {
            audit.publish(Some(attempt), kind.clone().into());
            handler(&RetryEvent { attempt, kind });
        } else {
            audit.publish(Some(attempt), kind.into());
        }
    } else if let Some(handler) = &config.on_event {
        handler(&RetryEvent { attempt, kind });
    }
}
