//! The wall clock, injectable so that HTTP-date hints are tested exactly.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Wall clock, injectable so HTTP-date tests are exact.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock: [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still at a time the test chooses.
///
/// Clones share the same time, so a test can keep one handle and move the
/// clock that a layer under test holds.
#[derive(Debug, Clone)]
pub struct FixedClock {
    now: Arc<Mutex<SystemTime>>,
}

impl FixedClock {
    /// A clock that reads `now` until [`set`](FixedClock::set) moves it.
    pub fn new(now: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves this clock, and every clone of it, to `now`.
    pub fn set(&self, now: SystemTime) {
        // A poisoned lock still holds a plain `SystemTime`; keep going.
        let mut guard = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *guard = now;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::testing::{date, secs};

    #[test]
    fn clocks() {
        let clock = FixedClock::new(date());
        let shared = clock.clone();
        assert_eq!(shared.now(), date());
        clock.set(date() + secs(1));
        assert_eq!(shared.now(), date() + secs(1));

        let arc: Arc<dyn Clock> = Arc::new(clock);
        assert_eq!(arc.now(), date() + secs(1));
        let arc_fixed = Arc::new(FixedClock::new(date()));
        assert_eq!(Clock::now(&arc_fixed), date());

        let before = SystemTime::now();
        let now = SystemClock.now();
        assert!(now >= before);
    }
}
