//! Business errors: failures a vendor reports inside a successful answer.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// What a [`BusinessRule`] found wrong in a 200's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessFailure {
    /// A code the [`RetryRules`](super::RetryRules) can match.
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

/// A predicate over a successful JSON output that reports a failure hidden
/// in it (`{"success": false, ...}`), turning the 200 into a
/// vendor's typed error (a
/// [`GenesysError`](crate::genesys::GenesysError) or
/// [`CxoneError`](crate::cxone::CxoneError)) that the
/// client's retry rules then classify.
///
/// ```
/// use serde_json::json;
/// use tower_cx::vendor::BusinessRule;
///
/// let rule = BusinessRule::success_flag();
/// assert!(rule.check(&json!({"success": true})).is_none());
/// let failure = rule.check(&json!({"success": false, "code": "LOCKED", "error": "busy"})).unwrap();
/// assert_eq!((failure.code.as_str(), failure.message.as_str()), ("LOCKED", "busy"));
/// ```
#[derive(Clone)]
pub struct BusinessRule {
    check: Arc<BusinessCheck>,
}

type BusinessCheck = dyn Fn(&Value) -> Option<BusinessFailure> + Send + Sync;

impl BusinessRule {
    /// A rule from a closure.
    pub fn new<F>(check: F) -> Self
    where
        F: Fn(&Value) -> Option<BusinessFailure> + Send + Sync + 'static,
    {
        Self {
            check: Arc::new(check),
        }
    }

    /// `{"success": false}` is a failure; its code is the output's `code`
    /// or `errorCode` (else `business.error`), its message the output's
    /// `error` or `message`.
    pub fn success_flag() -> Self {
        Self::new(|output| {
            if output.get("success").and_then(Value::as_bool) != Some(false) {
                return None;
            }
            let text = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| output.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
            };
            Some(BusinessFailure {
                code: text(&["code", "errorCode"]).unwrap_or_else(|| "business.error".into()),
                message: text(&["error", "message"]).unwrap_or_default(),
            })
        })
    }

    /// Apply the rule.
    pub fn check(&self, output: &Value) -> Option<BusinessFailure> {
        (self.check)(output)
    }
}

impl fmt::Debug for BusinessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusinessRule").finish_non_exhaustive()
    }
}
