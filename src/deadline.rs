//! The logical request's deadline: one protocol between the layer that
//! owns it (the retry layer, [`RetryLayer::deadline`](crate::retry::RetryLayer::deadline))
//! and the layers below it that hold a request back before sending it (the
//! priority limiter's queue and rate gate), documented here, where it
//! lives.
//!
//! The retry layer hands each attempt to the service below inside
//! [`scope`]; a layer below reads [`current`] while it is called, and keeps
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

use tokio::time::Instant;

thread_local! {
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Run `call` (the inner service's `call`) with `at` as the deadline of
/// the request it is given (or an earlier one already in force).
pub(crate) fn scope<R>(at: Instant, call: impl FnOnce() -> R) -> R {
    /// Puts the outer deadline back, also if `call` panics.
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let outer = CURRENT.get();
    let _restore = Restore(outer);
    CURRENT.set(Some(outer.map_or(at, |outer| outer.min(at))));
    call()
}

/// The deadline of the request being called, if a layer above set one.
pub(crate) fn current() -> Option<Instant> {
    CURRENT.get()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scope_sets_the_earliest_deadline_and_puts_the_outer_one_back() {
        let now = Instant::now();
        let (soon, late) = (now + Duration::from_secs(1), now + Duration::from_secs(9));
        assert_eq!(current(), None);
        scope(late, || {
            assert_eq!(current(), Some(late));
            // an inner retry layer with a later deadline does not extend it
            scope(late + Duration::from_secs(1), || {
                assert_eq!(current(), Some(late))
            });
            scope(soon, || assert_eq!(current(), Some(soon)));
            assert_eq!(current(), Some(late));
        });
        assert_eq!(current(), None);
        let panicked = std::panic::catch_unwind(|| scope(soon, || panic!("in call")));
        assert!(panicked.is_err());
        assert_eq!(current(), None);
    }
}
