//! What one caller, or many, can make the gateway hold: connections, time
//! and buffered bytes.
//!
//! - Headers must arrive within `header_timeout` (hyper's header-read timer,
//!   which also closes a keep-alive connection idle that long).
//! - A request body must arrive within `body_timeout` of its headers: 408.
//! - A client that reads none of the answer for `send_timeout` is
//!   disconnected (`stall::SendTimeout`).
//! - At most `max_connections` connections are served at once; over that, new
//!   connections wait in the listen backlog (nothing is accepted, so no
//!   descriptor or memory is spent on them) until one closes.
//! - A body is buffered (so that a retry can replay it) only within
//!   `max_body_bytes` (413; a larger declared `Content-Length` is refused
//!   before a byte is read) and within a byte budget shared by all requests,
//!   `max_buffered_bytes` (503 with `Retry-After: 1`, at once, not queued).
//! - Accept errors (out of descriptors) pause accepting, with a growing
//!   delay, instead of spinning.
//! - After a spike of large bodies, freed memory goes back to the system.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The limits, with their defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub max_buffered_bytes: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_body_bytes: 8 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Bytes of request bodies buffered across all requests, within a total.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    total: usize,
    in_use: AtomicUsize,
    /// Bytes released since memory was last given back to the system.
    released: AtomicUsize,
}

/// Give memory back once this much was released and nothing is buffered.
const RELEASE_AFTER: usize = 16 * 1024 * 1024;

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                total,
                in_use: AtomicUsize::new(0),
                released: AtomicUsize::new(0),
            }),
        }
    }

    /// A share of `bytes` of the budget, or `None` when that would go over.
    pub fn reserve(&self, bytes: usize) -> Option<BudgetShare> {
        let mut share = BudgetShare {
            budget: self.inner.clone(),
            bytes: 0,
        };
        share.grow_to(bytes).then_some(share)
    }

    /// Bytes buffered now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Acquire)
    }
}

/// A share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<BudgetInner>,
    bytes: usize,
}

impl BudgetShare {
    /// Grow the share to `bytes`; `false` (and unchanged) if the budget
    /// cannot give that much.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&more| more > 0) else {
            return true;
        };
        let total = self.budget.total;
        let grown = self
            .budget
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&after| after <= total)
            })
            .is_ok();
        if grown {
            self.bytes = bytes;
        }
        grown
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let before = self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
        let released = self.budget.released.fetch_add(self.bytes, Ordering::AcqRel) + self.bytes;
        if before == self.bytes && released >= RELEASE_AFTER {
            self.budget.released.store(0, Ordering::Release);
            release_memory();
        }
    }
}

/// Why a request body was not buffered.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than `max_body_bytes` (declared or sent): 413.
    TooLarge,
    /// The shared budget is spent: 503.
    OverBudget,
    /// Not all of it arrived within `body_timeout`: 408.
    Timeout,
    /// The connection failed while reading: 400.
    Read(hyper::Error),
}

/// Whether a declared `Content-Length` is refused before reading.
pub fn declared_too_large(declared: Option<u64>, limits: &Limits) -> bool {
    declared.is_some_and(|n| n > limits.max_body_bytes as u64)
}

/// Buffer `body`, within the limits and the budget. The share holds the
/// body's bytes in the budget until it is dropped (when the request is done).
pub async fn read_body(
    body: Incoming,
    declared: Option<u64>,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<(Bytes, BudgetShare), BodyError> {
    if declared_too_large(declared, limits) {
        return Err(BodyError::TooLarge);
    }
    // checked above: the declared length fits `max_body_bytes`
    let declared = declared.map_or(0, |n| n as usize);
    let mut share = budget.reserve(declared).ok_or(BodyError::OverBudget)?;
    let read = async {
        let mut body = body;
        let mut buffer = BytesMut::with_capacity(declared);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
                continue; // trailers
            };
            let len = buffer.len() + data.len();
            if len > limits.max_body_bytes {
                return Err(BodyError::TooLarge);
            }
            if !share.grow_to(len) {
                return Err(BodyError::OverBudget);
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    let bytes = tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok((bytes, share))
}

/// Give freed heap memory back to the system. glibc keeps freed memory in
/// its arenas (a spike of large bodies would stay resident for the life of
/// the process); `malloc_trim(0)` returns the free pages. Other allocators
/// return memory on their own or offer no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_memory() {
    let trim = || {
        // SAFETY: malloc_trim only walks glibc's own allocator state, which
        // it locks; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(trim)),
        Err(_) => trim(),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_memory() {}

/// A pause after an accept error, growing while errors last.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
    errors: u64,
}

/// What to do after an accept error.
#[derive(Debug, PartialEq, Eq)]
pub struct Pause {
    pub wait: Duration,
    /// Log this one: the first error of a run, then once per longest pause.
    pub log: bool,
    /// Errors in this run so far.
    pub errors: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const LONGEST: Duration = Duration::from_secs(1);

    /// An accept failed: how long to pause, and whether to say so.
    pub fn failed(&mut self) -> Pause {
        let wait = self.delay.unwrap_or(Self::FIRST);
        self.delay = Some((wait * 2).min(Self::LONGEST));
        self.errors += 1;
        Pause {
            wait,
            log: self.errors == 1 || wait == Self::LONGEST,
            errors: self.errors,
        }
    }

    /// An accept succeeded: the errors of the run that ended, if any.
    pub fn succeeded(&mut self) -> Option<u64> {
        self.delay = None;
        let errors = std::mem::take(&mut self.errors);
        (errors > 0).then_some(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_pause_longer_and_log_rarely() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<Pause> = (0..20).map(|_| backoff.failed()).collect();
        let waits: Vec<u64> = pauses.iter().map(|p| p.wait.as_millis() as u64).collect();
        assert_eq!(
            &waits[..10],
            &[5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]
        );
        // 20 errors over about 12 s: the first, then one a second
        let logged: Vec<u64> = pauses.iter().filter(|p| p.log).map(|p| p.errors).collect();
        let expected: Vec<u64> = std::iter::once(1).chain(9..=20).collect();
        assert_eq!(logged, expected);
        assert_eq!(backoff.succeeded(), Some(20));
        assert_eq!(backoff.succeeded(), None);
        assert_eq!(backoff.failed().wait, Duration::from_millis(5));
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none(), "over the total");
        let mut b = budget.reserve(40).unwrap();
        assert!(!b.grow_to(41), "grows only within the total");
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert!(b.grow_to(90));
        assert_eq!(budget.in_use(), 90);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_oversized_declared_length_is_refused_before_reading() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        assert!(declared_too_large(Some(11), &limits));
        assert!(!declared_too_large(Some(10), &limits));
        assert!(!declared_too_large(None, &limits));
    }
}
