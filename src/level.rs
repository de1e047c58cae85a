//! A request's priority: the leaf the limiter, its events and the audit
//! layer share (users name it [`crate::priority::Priority`]).

use std::fmt;
use std::str::FromStr;

/// A request's priority, read from its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Served last (bulk exports, backfills).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Served first (an agent waiting on screen).
    High,
}

impl Priority {
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(index: usize) -> Self {
        match index {
            0 => Priority::Low,
            1 => Priority::Normal,
            _ => Priority::High,
        }
    }

    /// `low`, `normal` or `high`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not `low`, `normal` or `high`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPriority;

impl fmt::Display for UnknownPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown priority: expected low, normal or high")
    }
}

impl std::error::Error for UnknownPriority {}

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// `low`, `normal` or `high`, any case, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [Priority::Low, Priority::Normal, Priority::High]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownPriority)
    }
}
