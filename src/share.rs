//! "Stop for a while" signals shared between layers: a rate gate closed by
//! a server hint, a circuit breaker that tripped. One limiter or breaker
//! announces; every other one subscribed to the same share pauses too. In
//! one process with [`LocalPauseShare`]; across a fleet through Redis with
//! the `redis` feature (`fleet::RedisFleet::gate` and `::breaker`).
//!
//! ```
//! use std::time::Duration;
//!
//! use tower_cx::breaker::CircuitBreakerLayer;
//! use tower_cx::priority::PriorityLimitLayer;
//! use tower_cx::share::LocalPauseShare;
//!
//! // Two stacks calling the same vendor (say, two API hosts of one
//! // account): a 429 seen by either pauses both, and so does an upstream
//! // outage found by either breaker.
//! let gates = LocalPauseShare::new();
//! let breakers = LocalPauseShare::new();
//! let limiter_a = PriorityLimitLayer::new(8).share_gate(gates.clone());
//! let limiter_b = PriorityLimitLayer::new(8).share_gate(gates);
//! let breaker_a = CircuitBreakerLayer::new().share_state(breakers.clone());
//! let breaker_b = CircuitBreakerLayer::new().share_state(breakers);
//! # let _ = (limiter_a, limiter_b, breaker_a, breaker_b);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// Spreads pauses between limiters (closed rate gates) or breakers (open
/// circuits).
///
/// A limiter or breaker calls [`announce`](Self::announce) when it pauses
/// on its own (a server hint, a trip), [`subscribe`](Self::subscribe) once
/// when it is built (before its first request) to receive the pause running
/// now and those announced later, and [`start`](Self::start) once on its
/// first request, inside the runtime.
pub trait PauseShare: Send + Sync + 'static {
    /// The member with id `from` (see [`PauseTarget::id`]) paused for
    /// `pause`.
    fn announce(&self, from: u64, pause: Duration);
    /// The limiter with id `from` saw the server's quota run out (a daily
    /// cap) for `exhausted`: put every other member in the exhausted state
    /// ([`PauseTarget::exhaust`]) until the same time, now and on
    /// subscription while it lasts. [`LocalPauseShare`] and the Redis share
    /// do; by default a share does not spread it.
    fn announce_exhausted(&self, from: u64, exhausted: Duration) {
        let _ = (from, exhausted);
    }
    /// Deliver to `target` the pause running now, if any, and every pause
    /// announced elsewhere later, for as long as it lives. A share that
    /// cannot tell at once whether a pause is running (it must ask a
    /// server) holds the target ([`PauseTarget::hold`]) until it knows.
    fn subscribe(&self, target: PauseTarget);
    /// Start what [`subscribe`](Self::subscribe) could not start outside a
    /// runtime (a listener task). Called by each member on its first
    /// request; nothing by default.
    fn start(&self) {}
}

impl<P: PauseShare + ?Sized> PauseShare for Arc<P> {
    fn announce(&self, from: u64, pause: Duration) {
        (**self).announce(from, pause)
    }

    fn announce_exhausted(&self, from: u64, exhausted: Duration) {
        (**self).announce_exhausted(from, exhausted)
    }

    fn subscribe(&self, target: PauseTarget) {
        (**self).subscribe(target)
    }

    fn start(&self) {
        (**self).start()
    }
}

/// Something that can be paused from outside: a limiter's gate, a breaker.
pub(crate) trait Pausable: Send + Sync + 'static {
    /// Pause for `pause` because another member announced it (never
    /// shortening a longer pause, never announcing again).
    fn pause_from_share(&self, pause: Duration);

    /// Enter the exhausted state for `exhausted` because another member
    /// saw the quota run out (never shortening it, never announcing
    /// again). Nothing by default (a breaker has no quota).
    fn exhaust_from_share(&self, _exhausted: Duration) {}

    /// Hold still for at most `at_most`, until the share knows whether a
    /// pause runs elsewhere ([`release_from_share`](Self::release_from_share)).
    /// Nothing by default.
    fn hold_for_share(&self, _at_most: Duration) {}

    /// End a hold; a pause delivered meanwhile stays. Nothing by default.
    fn release_from_share(&self) {}
}

/// What a [`PauseShare`] delivers pauses to: a weak handle on one limiter's
/// gate or one breaker. Pausing through it does not announce again.
#[derive(Clone)]
pub struct PauseTarget {
    target: Weak<dyn Pausable>,
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a pausable member.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl PauseTarget {
    pub(crate) fn new(target: Weak<dyn Pausable>, id: u64) -> Self {
        Self { target, id }
    }

    /// Pause for `pause` (never shortening a longer pause). Returns false
    /// once the member is gone: the subscription can end.
    pub fn pause(&self, pause: Duration) -> bool {
        match self.target.upgrade() {
            Some(target) => {
                target.pause_from_share(pause);
                true
            }
            None => false,
        }
    }

    /// Put the member in the exhausted state for `exhausted` (never
    /// shortening it): a limiter then fails every request at once with
    /// [`QuotaExhausted`](crate::error::QuotaExhausted); a breaker ignores
    /// it. Returns false once the member is gone.
    pub fn exhaust(&self, exhausted: Duration) -> bool {
        match self.target.upgrade() {
            Some(target) => {
                target.exhaust_from_share(exhausted);
                true
            }
            None => false,
        }
    }

    /// Hold the member still for at most `at_most`, while the share finds
    /// out whether a pause runs elsewhere; [`release`](Self::release) ends
    /// the hold. Returns false once the member is gone.
    pub fn hold(&self, at_most: Duration) -> bool {
        match self.target.upgrade() {
            Some(target) => {
                target.hold_for_share(at_most);
                true
            }
            None => false,
        }
    }

    /// End a [`hold`](Self::hold) (a pause delivered meanwhile stays).
    /// Returns false once the member is gone.
    pub fn release(&self) -> bool {
        match self.target.upgrade() {
            Some(target) => {
                target.release_from_share();
                true
            }
            None => false,
        }
    }

    /// Whether the member still exists.
    pub fn is_alive(&self) -> bool {
        self.target.strong_count() > 0
    }

    /// A process-unique id of the member, to recognise its own
    /// announcements.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl fmt::Debug for PauseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseTarget")
            .field("id", &self.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// An in-memory [`PauseShare`] for members of one process. Clones share.
///
/// It remembers the pause running now, so that a member that subscribes
/// during it (built after it was announced) pauses for what is left of it.
#[derive(Clone, Default)]
pub struct LocalPauseShare {
    inner: Arc<Mutex<Members>>,
}

#[derive(Default)]
struct Members {
    /// The members, and members gone since the last pruning.
    targets: Vec<PauseTarget>,
    /// Members left by the last pruning: the next one is due once the list
    /// has doubled, so that subscribing costs O(1) amortized, not a pass
    /// over every member.
    pruned_to: usize,
    /// The end of the longest pause announced.
    paused_until: Option<Instant>,
    /// The end of the longest exhausted state announced.
    exhausted_until: Option<Instant>,
}

impl Members {
    /// Forget the members that are gone.
    fn prune(&mut self) {
        self.targets.retain(PauseTarget::is_alive);
        self.pruned_to = self.targets.len();
    }
}

impl LocalPauseShare {
    /// A share with no member yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The later of `current` and `now + wait`.
fn extend(current: Option<Instant>, wait: Duration) -> Option<Instant> {
    match Instant::now().checked_add(wait) {
        Some(until) => Some(current.map_or(until, |u| u.max(until))),
        None => current,
    }
}

/// What is left of a state lasting until `until`.
fn left(until: Option<Instant>) -> Option<Duration> {
    until
        .map(|until| until.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
}

impl LocalPauseShare {
    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PauseShare for LocalPauseShare {
    fn announce(&self, from: u64, pause: Duration) {
        let targets = {
            let mut members = self.lock();
            members.paused_until = extend(members.paused_until, pause);
            // every member is visited anyway
            members.prune();
            members.targets.clone()
        };
        for target in targets.iter().filter(|t| t.id() != from) {
            target.pause(pause);
        }
    }

    fn announce_exhausted(&self, from: u64, exhausted: Duration) {
        let targets = {
            let mut members = self.lock();
            members.exhausted_until = extend(members.exhausted_until, exhausted);
            members.prune();
            members.targets.clone()
        };
        for target in targets.iter().filter(|t| t.id() != from) {
            target.exhaust(exhausted);
        }
    }

    fn subscribe(&self, target: PauseTarget) {
        let (running, exhausted) = {
            let mut members = self.lock();
            if members.targets.len() >= 2 * members.pruned_to {
                members.prune();
            }
            members.targets.push(target.clone());
            (left(members.paused_until), left(members.exhausted_until))
        };
        if let Some(left) = running {
            target.pause(left);
        }
        if let Some(left) = exhausted {
            target.exhaust(left);
        }
    }
}

impl fmt::Debug for LocalPauseShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().targets.len();
        f.debug_struct("LocalPauseShare")
            .field("members", &n)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Member(std::sync::atomic::AtomicU32);

    impl Pausable for Member {
        fn pause_from_share(&self, _pause: Duration) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn member() -> Arc<Member> {
        Arc::new(Member(std::sync::atomic::AtomicU32::new(0)))
    }

    fn subscribe(share: &LocalPauseShare, member: &Arc<Member>) {
        let weak: Weak<dyn Pausable> = Arc::downgrade(member) as Weak<dyn Pausable>;
        share.subscribe(PauseTarget::new(weak, next_id()));
    }

    #[test]
    fn members_gone_are_forgotten_without_a_pass_per_subscription() {
        let share = LocalPauseShare::new();
        let kept: Vec<_> = (0..100).map(|_| member()).collect();
        for m in &kept {
            subscribe(&share, m);
        }
        // members that come and go: the list never holds more than twice
        // the members left by the last pruning
        for _ in 0..1_000 {
            subscribe(&share, &member());
            let members = share.lock();
            assert!(members.targets.len() <= 2 * members.pruned_to + 1);
            assert!(members.pruned_to <= kept.len());
        }
        share.announce(0, Duration::from_secs(1));
        assert!(kept.iter().all(|m| m.0.load(Ordering::Relaxed) == 1));
        // an announcement visits every member, and forgets those gone
        assert_eq!(share.lock().targets.len(), kept.len());
    }
}
