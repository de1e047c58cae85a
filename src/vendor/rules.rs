//! Which vendor errors are worth another attempt: [`RetryRules`], by error
//! code, over any [`VendorError`].

use std::any::TypeId;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::VendorError;
use crate::classify::{classify_status, Class, Classify, FailureKind};

/// How [`RetryRules`] treats an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Another attempt may succeed.
    Retry,
    /// Another attempt may succeed only if the remote endpoint (a data
    /// action's backend) failed with 5xx, 408 or 429.
    RetryOnRemoteFailure,
    /// Another attempt will not help.
    Final,
}

/// Which vendor errors are worth another attempt, by error code.
///
/// The codes of an error are its `code`, every `details[].errorCode` and the
/// codes of its nested `errors` (Genesys), or its code and
/// `icStatusDescription` (CXone); codes compare case-insensitively. A
/// [`Rule::Final`] on any code wins; otherwise any retry rule makes the
/// error retryable. An error no rule matches is retryable only when its
/// status is (408, 429, 5xx) and [`statuses`](Self::statuses) is on.
///
/// Status-level failures are the transport stack's job: the canonical
/// stack already retried 429s and 5xx (honouring `Retry-After`) before the
/// client sees them, so `statuses` is off by default and these rules retry
/// only what the body alone reveals (a data action's remote 503 inside a
/// 400, a business error inside a 200). Turn it on when the client runs
/// over a bare HTTP client.
///
/// It is the [`Classify`] of the clients' own
/// [`RetryLayer`](crate::retry::RetryLayer), which wraps a service that
/// turns vendor failures into typed errors: `classify_error` finds a
/// [`VendorError`] of one of its [error types](Self::error_type) in the
/// error's source chain ([`GenesysError`](crate::genesys::GenesysError)
/// for [`genesys`](Self::genesys), [`CxoneError`](crate::cxone::CxoneError)
/// for [`cxone`](Self::cxone); a client adds its own vendor's type to any
/// rules it is given); any other error (a timeout, a refused connection) is
/// final there, since the stack below already retried it. (In a
/// transport-level retry layer, use the default classifier instead.)
#[derive(Debug, Clone, Default)]
pub struct RetryRules {
    codes: HashMap<String, Rule>,
    statuses: bool,
    business: Option<Rule>,
    errors: Vec<ErrorType>,
}

/// One vendor error type the rules read: a downcast to it.
#[derive(Clone, Copy)]
pub(crate) struct ErrorType {
    id: TypeId,
    name: &'static str,
    find: for<'a> fn(&'a (dyn StdError + 'static)) -> Option<&'a dyn VendorError>,
}

impl ErrorType {
    /// The error type `E`.
    pub(crate) fn of<E: VendorError>() -> Self {
        fn find<'a, E: VendorError>(
            error: &'a (dyn StdError + 'static),
        ) -> Option<&'a dyn VendorError> {
            error.downcast_ref::<E>().map(|e| e as &dyn VendorError)
        }
        Self {
            id: TypeId::of::<E>(),
            name: std::any::type_name::<E>(),
            find: find::<E>,
        }
    }
}

impl fmt::Debug for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl RetryRules {
    /// No code rules at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the rule for `code` (replacing an earlier one).
    pub fn code(mut self, code: impl AsRef<str>, rule: Rule) -> Self {
        self.codes.insert(code.as_ref().to_ascii_lowercase(), rule);
        self
    }

    /// Retry errors no code rule matches when their status is 408, 429 or
    /// 5xx (default off: the stack below does that).
    pub fn statuses(mut self, enabled: bool) -> Self {
        self.statuses = enabled;
        self
    }

    /// Read errors of type `E` (found anywhere in an error's source chain)
    /// as vendor errors; repeat for several types. [`genesys`](Self::genesys)
    /// and [`cxone`](Self::cxone) read their vendor's error, and a client
    /// reads its own vendor's error whatever rules it is given.
    pub fn error_type<E: VendorError>(self) -> Self {
        self.with_error_type(ErrorType::of::<E>())
    }

    /// Read errors of `error_type` too (once).
    pub(crate) fn with_error_type(mut self, error_type: ErrorType) -> Self {
        if self.errors.iter().all(|known| known.id != error_type.id) {
            self.errors.push(error_type);
        }
        self
    }

    /// The first error in `error`'s source chain that is of one of the
    /// rules' error types, as a [`VendorError`]: the one way the shared code
    /// finds a vendor's error.
    pub(crate) fn find<'a>(
        &self,
        error: &'a (dyn StdError + 'static),
    ) -> Option<&'a dyn VendorError> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(found) = self.errors.iter().find_map(|t| (t.find)(err)) {
                return Some(found);
            }
            current = err.source();
        }
        None
    }

    /// The rule for business errors (a failure reported inside a 200) whose
    /// codes match no rule. Default: final.
    pub fn business(mut self, rule: Rule) -> Self {
        self.business = Some(rule);
        self
    }

    /// Classify by codes, status, remote status and business flag.
    fn decide<'a>(
        &self,
        status: StatusCode,
        codes: impl Iterator<Item = &'a str>,
        remote_failed: bool,
        business: bool,
    ) -> Class {
        let kind = FailureKind::Status(status);
        let mut retry = false;
        let mut matched = false;
        for code in codes {
            match self.codes.get(&code.to_ascii_lowercase()) {
                Some(Rule::Final) => return Class::Fatal(kind),
                Some(Rule::Retry) => {
                    matched = true;
                    retry = true;
                }
                Some(Rule::RetryOnRemoteFailure) => {
                    matched = true;
                    retry |= remote_failed;
                }
                None => {}
            }
        }
        if matched {
            return if retry {
                Class::Retryable(kind)
            } else {
                Class::Fatal(kind)
            };
        }
        if business {
            return match self.business {
                Some(Rule::Retry) | Some(Rule::RetryOnRemoteFailure) => Class::Retryable(kind),
                _ => Class::Fatal(kind),
            };
        }
        match classify_status(status) {
            Class::Retryable(kind) if self.statuses => Class::Retryable(kind),
            _ => Class::Fatal(kind),
        }
    }

    /// The class of a vendor error: by its codes, status, remote status and
    /// business flag.
    pub fn classify_vendor(&self, error: &dyn VendorError) -> Class {
        self.decide(
            error.status(),
            error.codes(),
            error.remote_failed(),
            error.is_business(),
        )
    }
}

impl Classify for RetryRules {
    /// The default status table (in the clients, only decoded successes
    /// reach it: failures arrive as typed errors).
    fn classify_response(&self, status: StatusCode, _headers: &HeaderMap) -> Class {
        classify_status(status)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Class {
        if crate::error::OutcomeUnknown::find(error).is_some() {
            // a retry layer inside the transport gave up on an unknown outcome
            return Class::Fatal(FailureKind::OutcomeUnknown);
        }
        match self.find(error) {
            Some(vendor) => self.classify_vendor(vendor),
            None => Class::Fatal(FailureKind::Other),
        }
    }

    fn error_retry_after(&self, error: &(dyn StdError + 'static)) -> Option<Duration> {
        self.find(error).and_then(VendorError::retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vendor error of a vendor the rules know nothing about.
    #[derive(Debug)]
    struct Fake {
        code: &'static str,
        remote_failed: bool,
    }

    impl fmt::Display for Fake {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fake {}", self.code)
        }
    }

    impl StdError for Fake {}

    impl VendorError for Fake {
        fn status(&self) -> StatusCode {
            StatusCode::BAD_REQUEST
        }
        fn codes(&self) -> Box<dyn Iterator<Item = &str> + '_> {
            Box::new(std::iter::once(self.code))
        }
        fn remote_failed(&self) -> bool {
            self.remote_failed
        }
        fn is_business(&self) -> bool {
            false
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(Duration::from_secs(9))
        }
        fn dead_letter_code(&self) -> &str {
            self.code
        }
    }

    /// `Fake` as the source of another error.
    #[derive(Debug)]
    struct Wrapped(Fake);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_vendor_error_is_read_only_when_its_type_is_known_anywhere_in_the_chain() {
        let error = Wrapped(Fake {
            code: "remote",
            remote_failed: true,
        });
        let rules = RetryRules::new().code("REMOTE", Rule::RetryOnRemoteFailure);
        assert_eq!(
            rules.classify_error(&error),
            Class::Fatal(FailureKind::Other)
        );
        assert_eq!(rules.error_retry_after(&error), None);

        let rules = rules.error_type::<Fake>().error_type::<Fake>();
        assert_eq!(rules.errors.len(), 1, "a type is read once");
        assert_eq!(
            rules.classify_error(&error),
            Class::Retryable(FailureKind::Status(StatusCode::BAD_REQUEST))
        );
        assert_eq!(
            rules.error_retry_after(&error),
            Some(Duration::from_secs(9))
        );
        let local = Fake {
            code: "remote",
            remote_failed: false,
        };
        assert_eq!(
            rules.classify_error(&local),
            Class::Fatal(FailureKind::Status(StatusCode::BAD_REQUEST))
        );
    }
}
