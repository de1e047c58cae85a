//! Pacing that can live outside one limiter: shared by several limiters in
//! a process, or by a fleet of processes (see the `fleet` module with the
//! `redis` feature).
//!
//! ```
//! use std::time::Duration;
//!
//! use tower_cx::priority::{LocalPacer, Pacer, PriorityLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Two limiters (say, one per API host) that together send at most 5
//! // requests per second.
//! let pacer = LocalPacer::new(5, Duration::from_secs(1));
//! let a = PriorityLimitLayer::new(8).pacer(pacer.clone());
//! let b = PriorityLimitLayer::new(8).pacer(pacer.clone());
//! # let _ = (a, b);
//! // Reservations are spaced 200 ms apart, whoever makes them.
//! assert_eq!(pacer.reserve().await, Duration::ZERO);
//! assert_eq!(pacer.reserve().await, Duration::from_millis(200));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The future of a [`Pacer`] reservation: how long to wait before sending.
pub type PacerFuture = Pin<Box<dyn Future<Output = Duration> + Send + 'static>>;

/// Hands out dispatch slots at a fixed rate to one or more limiters.
///
/// A limiter with a pacer asks it for a slot once a request holds a
/// concurrency permit, waits the returned delay, then sends. A reservation
/// is never refused: it is a place in a schedule, so callers spread over the
/// rate exactly, however many limiters (or processes) share the pacer.
pub trait Pacer: Send + Sync + 'static {
    /// Reserve the next slot; resolves to how long to wait for it.
    fn reserve(&self) -> PacerFuture;
}

impl<P: Pacer + ?Sized> Pacer for Arc<P> {
    fn reserve(&self) -> PacerFuture {
        (**self).reserve()
    }
}

/// An in-memory [`Pacer`] (GCRA: a schedule of evenly spaced slots with an
/// optional burst). Clones share the schedule.
#[derive(Clone)]
pub struct LocalPacer {
    interval: Duration,
    tolerance: Duration,
    tat: Arc<Mutex<Option<Instant>>>,
}

impl LocalPacer {
    /// `requests` per `per`, evenly spaced (at least one request per
    /// `per`).
    pub fn new(requests: u32, per: Duration) -> Self {
        Self {
            interval: per / requests.max(1),
            tolerance: Duration::ZERO,
            tat: Arc::default(),
        }
    }

    /// Let up to `burst` requests go at once within the rate.
    pub fn burst(mut self, burst: u32) -> Self {
        self.tolerance = self.interval * burst.max(1).saturating_sub(1);
        self
    }

    /// The time between two slots.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserve a slot now; how long to wait for it.
    pub fn reserve_now(&self) -> Duration {
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let current = tat.unwrap_or(now).max(now);
        *tat = Some(current + self.interval);
        current
            .checked_sub(self.tolerance)
            .map_or(Duration::ZERO, |go| go.saturating_duration_since(now))
    }
}

impl Pacer for LocalPacer {
    fn reserve(&self) -> PacerFuture {
        let wait = self.reserve_now();
        Box::pin(std::future::ready(wait))
    }
}

impl fmt::Debug for LocalPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPacer")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_pacer_spaces_slots_and_allows_its_burst() {
        let pacer = LocalPacer::new(4, Duration::from_secs(1)).burst(2);
        let waits: Vec<_> = (0..5).map(|_| pacer.reserve_now()).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(0), ms(0), ms(250), ms(500), ms(750)]);
        tokio::time::advance(Duration::from_secs(10)).await;
        // idle time does not pile up beyond the burst
        let waits: Vec<_> = (0..3).map(|_| pacer.reserve_now()).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(250)]);
    }
}
