//! The logical request's deadline: one protocol between the layer that
//! owns it (the retry layer, [`RetryLayer::deadline`](crate::retry::RetryLayer::deadline))
//! and the layers below it that hold a request back before sending it (the
//! priority limiter's queue and rate gate), documented here, where it
//! lives.
//!
//! The retry layer hands each attempt to the service below after
//! [`enter`]; a layer below reads [`current`] while it is called, and keeps
//! the instant: a request it would hold past the deadline it fails instead
//! (the limiter sheds it with [`Overloaded`](crate::error::Overloaded),
//! reason `QueueTimeout`), and the retry layer then ends the logical
//! request with [`RetryDeadlineExceeded`](crate::error::RetryDeadlineExceeded).
//! So no attempt is started at or after the deadline, even when what holds
//! it back is below the retry layer.
//!
//! The deadline lives in a thread-local for the time of the inner `call`,
//! not in the request: putting it in the request's extensions would make a
//! map (three allocations) for most requests. So only layers that decide in
//! their `call`, on the caller's thread, see it (a `tower::buffer` in
//! between hides it); nested retry layers give the earliest of their
//! deadlines.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// A deadline kept as its start and length: the sum is only taken when a
/// layer below asks (most requests are never held back).
#[derive(Clone, Copy)]
struct Deadline {
    from: Instant,
    after: Duration,
}

impl Deadline {
    /// The instant, if it can be represented (else there is none).
    fn at(self) -> Option<Instant> {
        self.from.checked_add(self.after)
    }
}

thread_local! {
    static CURRENT: Cell<Option<Deadline>> = const { Cell::new(None) };
}

/// Make `after` past `from` the deadline of the request given to the inner
/// service's `call` (or an earlier one already in force), until the guard
/// is dropped, which puts the outer one back (also if `call` panics):
///
/// ```text
/// let _deadline = deadline::enter(started, within);
/// let future = inner.call(request);
/// ```
pub(crate) fn enter(from: Instant, after: Duration) -> Entered {
    let outer = CURRENT.get();
    let this = Deadline { from, after };
    let earliest = match outer {
        // (nested retry layers only: the sums are taken here)
        Some(outer) => match (outer.at(), this.at()) {
            (Some(o), Some(t)) if o <= t => outer,
            (Some(_), None) => outer,
            _ => this,
        },
        None => this,
    };
    CURRENT.set(Some(earliest));
    Entered(outer)
}

/// Puts the outer deadline back when dropped (see [`enter`]).
#[must_use = "the deadline holds until the guard is dropped"]
pub(crate) struct Entered(Option<Deadline>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

/// The deadline of the request being called, if a layer above set one.
pub(crate) fn current() -> Option<Instant> {
    CURRENT.get().and_then(Deadline::at)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entering_sets_the_earliest_deadline_and_the_guard_puts_the_outer_one_back() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let (soon, late) = (now + secs(1), now + secs(9));
        assert_eq!(current(), None);
        let within = |after, check: &dyn Fn()| {
            let _deadline = enter(now, after);
            check();
        };
        within(secs(9), &|| {
            assert_eq!(current(), Some(late));
            // an inner retry layer with a later deadline does not extend it
            within(secs(10), &|| assert_eq!(current(), Some(late)));
            within(secs(1), &|| assert_eq!(current(), Some(soon)));
            // nor does one too far to represent
            within(Duration::MAX, &|| assert_eq!(current(), Some(late)));
            assert_eq!(current(), Some(late));
        });
        // a deadline too far to represent is none
        within(Duration::MAX, &|| assert_eq!(current(), None));
        assert_eq!(current(), None);
        let panicked = std::panic::catch_unwind(|| within(secs(1), &|| panic!("in call")));
        assert!(panicked.is_err());
        assert_eq!(current(), None);
    }
}
