//! What the clients check before they send: ids that go into a path, and
//! links the API hands back.

use std::error::Error as StdError;
use std::fmt;

/// A URL the API handed back (a `nextUri`, a job's result link) that the
/// client refuses to follow, or a base URL it cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl {
    url: String,
    reason: &'static str,
}

impl InvalidUrl {
    pub(crate) fn new(url: &str, reason: &'static str) -> Self {
        Self {
            url: crate::redact::redact_uri(&url.parse().unwrap_or_default()),
            reason,
        }
    }

    /// Why it was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL {:?}: {}", self.url, self.reason)
    }
}

impl StdError for InvalidUrl {}

/// An argument the client refuses before sending anything (an empty or
/// path-breaking id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgument {
    name: &'static str,
    reason: &'static str,
}

impl InvalidArgument {
    /// The argument's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for InvalidArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.name, self.reason)
    }
}

impl StdError for InvalidArgument {}

/// Check an id that goes into a URL path: non-empty, at most 200
/// characters of `[A-Za-z0-9._~-]`.
pub(crate) fn check_id(name: &'static str, id: &str) -> Result<(), InvalidArgument> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > 200 {
        "longer than 200 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        || id == "."
        || id == ".."
    {
        "only letters, digits, '.', '_', '~' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(InvalidArgument { name, reason })
}

/// Resolve a link the API returned (absolute, or a path) against `base`,
/// refusing any other origin: the bearer token must not leave the API host.
pub(crate) fn resolve_link(base: &str, link: &str) -> Result<String, InvalidUrl> {
    if link.starts_with('/') && !link.starts_with("//") {
        return Ok(format!("{base}{link}"));
    }
    let same_origin = link
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
    if same_origin {
        Ok(link.to_owned())
    } else {
        Err(InvalidUrl::new(link, "not on the API host"))
    }
}
