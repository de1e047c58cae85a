//! [`MeteredDeadLetters`]: a dead-letter sink that counts what it passes on.

use std::fmt;

use ::metrics::{counter, SharedString};
use http::StatusCode;

use super::labels::{self, OTHER};
use crate::dead_letter::{DeadLetter, DeadLetterSink};

/// Wraps a [`DeadLetterSink`], counting each dead letter in
/// `tower_cx.dead_letters` by `error.type` before handing it on: the last
/// status when it was 400 or above, else the letter's code if it is one of
/// this crate's (`timeout`, `connect`, `not_sent`, `transport`,
/// `outcome_unknown`, ...), else `_OTHER`.
///
/// Give it to the [`AuditLayer`](crate::audit::AuditLayer) or to a typed
/// client, wherever the dead letters go. To count them without keeping
/// them, wrap a sink that drops them: the layer still makes each failed
/// request's replayable copy.
///
/// ```
/// use tower_cx::audit::{dead_letter_fn, AuditLayer, JsonLinesDeadLetters, NoopSink};
/// use tower_cx::metrics::MeteredDeadLetters;
///
/// let kept = AuditLayer::new(NoopSink)
///     .dead_letters(MeteredDeadLetters::new(JsonLinesDeadLetters::new(std::io::stderr())));
/// let counted_only = AuditLayer::new(NoopSink)
///     .dead_letters(MeteredDeadLetters::new(dead_letter_fn(|_letter| {})));
/// # let _ = (kept, counted_only);
/// ```
#[derive(Clone)]
pub struct MeteredDeadLetters<D> {
    inner: D,
}

impl<D: DeadLetterSink> MeteredDeadLetters<D> {
    /// Count the dead letters handed to `inner`.
    pub fn new(inner: D) -> Self {
        super::describe();
        Self { inner }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }
}

impl<D: DeadLetterSink> DeadLetterSink for MeteredDeadLetters<D> {
    fn dead_letter(&self, letter: DeadLetter) {
        counter!(super::names::DEAD_LETTERS, labels::ERROR_TYPE => error_type(&letter))
            .increment(1);
        self.inner.dead_letter(letter);
    }
}

/// The `error.type` of a dead letter, from a bounded set.
fn error_type(letter: &DeadLetter) -> SharedString {
    const CODES: [&str; 7] = [
        "connect",
        "not_sent",
        "timeout",
        "transport",
        "outcome_unknown",
        "other",
        "http_error",
    ];
    let status = letter
        .last_status
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|status| status.as_u16() >= 400);
    if let Some(status) = status {
        return labels::code(status);
    }
    let code = CODES
        .into_iter()
        .find(|code| *code == letter.error_code)
        .unwrap_or(OTHER);
    SharedString::const_str(code)
}

impl<D: fmt::Debug> fmt::Debug for MeteredDeadLetters<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredDeadLetters")
            .field("inner", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(last_status: Option<u16>, code: &str) -> DeadLetter {
        DeadLetter {
            correlation_id: "req-1".into(),
            attempts: 1,
            last_status,
            error_code: code.into(),
            message: String::new(),
            request: None,
        }
    }

    #[test]
    fn error_types_stay_in_a_bounded_set() {
        let of = |status, code| error_type(&letter(status, code)).to_string();
        assert_eq!(of(Some(503), "http_error"), "503");
        assert_eq!(of(None, "timeout"), "timeout");
        assert_eq!(of(None, "outcome_unknown"), "outcome_unknown");
        // a vendor's own code is not a label value
        assert_eq!(of(None, "conversation.not.found.for.id.123"), "_OTHER");
        assert_eq!(of(Some(200), "business_rule"), "_OTHER");
    }
}
