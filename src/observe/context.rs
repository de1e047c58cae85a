//! The per-request context layers report into.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::Event;

/// Receives what the layers report about the requests it has contexts for.
/// The audit layer is one ([`AuditLayer`](crate::audit::AuditLayer)); a
/// layer never knows which.
pub trait Observer: Send + Sync + 'static {
    /// Whether events are wanted as values. When not, layers skip the work
    /// of building what only an event carries (a latency reading, say), and
    /// [`observe`](Self::observe) still hears every event, to count it.
    fn enabled(&self) -> bool;

    /// One event about the request `context` stands for; `attempt` when it
    /// is about one attempt (1 for the first).
    fn observe(&self, context: &RequestContext, attempt: Option<u32>, event: Event);
}

/// The context of one logical request, placed in the request's extensions
/// by the layer that observes it (the audit layer). Inner layers find it
/// there and [`publish`](Self::publish) what they do; without one they
/// publish nothing. Clones share one context.
#[derive(Clone)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

struct Inner {
    /// The id as sent in the correlation header (visible ASCII, checked by
    /// the layer that made it); the `Arc<str>` events carry is made from it
    /// only once an event is built.
    correlation_id: HeaderValue,
    correlation_arc: OnceLock<Arc<str>>,
    started: Instant,
    observer: Arc<dyn Observer>,
    /// `observer.enabled()`, asked once per request (by its maker).
    enabled: bool,
    attempts: AtomicU32,
    backoff_ns: AtomicU64,
    /// When the last backoff scheduled ends, in nanoseconds from `started`.
    backoff_until_ns: AtomicU64,
    queue_ns: AtomicU64,
    /// The 401 replay mark ([`crate::replay`]), when the request has a
    /// context to carry it.
    replayed_above: AtomicBool,
    /// A header a layer below added to the request that any later send of
    /// it must carry too (the retry layer's `Idempotency-Key`); boxed, as
    /// few requests have one.
    kept_header: OnceLock<Box<(HeaderName, HeaderValue)>>,
}

/// What a context counted about its request.
#[derive(Clone, Copy)]
pub(crate) struct Timings {
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) queue: Duration,
}

impl RequestContext {
    /// A context for the request sent with `correlation_id`, starting now,
    /// reporting to `observer`, whose [`enabled`](Observer::enabled) is
    /// `enabled` (asked by the caller, which already needed it).
    pub(crate) fn new(
        correlation_id: HeaderValue,
        observer: Arc<dyn Observer>,
        enabled: bool,
    ) -> Self {
        debug_assert_eq!(enabled, observer.enabled());
        Self {
            inner: Arc::new(Inner {
                correlation_id,
                correlation_arc: OnceLock::new(),
                started: Instant::now(),
                observer,
                enabled,
                attempts: AtomicU32::new(0),
                backoff_ns: AtomicU64::new(0),
                backoff_until_ns: AtomicU64::new(0),
                queue_ns: AtomicU64::new(0),
                replayed_above: AtomicBool::new(false),
                kept_header: OnceLock::new(),
            }),
        }
    }

    /// The logical request's correlation id.
    pub fn correlation_id(&self) -> &str {
        // the layer that makes ids makes them of visible ASCII
        self.inner.correlation_id.to_str().unwrap_or("-")
    }

    /// The correlation id as events carry it, made once per request.
    pub fn correlation_arc(&self) -> Arc<str> {
        self.inner
            .correlation_arc
            .get_or_init(|| Arc::from(self.correlation_id()))
            .clone()
    }

    /// When the request entered the observing layer.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Publish an event about this request.
    pub fn publish(&self, attempt: Option<u32>, event: Event) {
        self.inner.observer.observe(self, attempt, event);
    }

    /// What was counted until `elapsed` from the start: a backoff still
    /// running then counts only as far as it went.
    pub(crate) fn timings(&self, elapsed: Duration) -> Timings {
        let inner = &self.inner;
        let backoff = inner.backoff_ns.load(Ordering::Relaxed);
        let until = inner.backoff_until_ns.load(Ordering::Relaxed);
        let unwaited = until.saturating_sub(nanos(elapsed));
        Timings {
            attempts: inner.attempts.load(Ordering::Relaxed),
            backoff: Duration::from_nanos(backoff.saturating_sub(unwaited)),
            queue: Duration::from_nanos(inner.queue_ns.load(Ordering::Relaxed)),
        }
    }

    /// Count an attempt sent.
    pub(crate) fn attempt_started(&self) -> u32 {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Add time spent in backoff.
    pub(crate) fn add_backoff(&self, wait: Duration) {
        let inner = &self.inner;
        inner.backoff_ns.fetch_add(nanos(wait), Ordering::Relaxed);
        let ends = inner.started.elapsed().saturating_add(wait);
        inner.backoff_until_ns.store(nanos(ends), Ordering::Relaxed);
    }

    /// Add time spent in the limiter's queue.
    pub(crate) fn add_queue(&self, wait: Duration) {
        self.inner
            .queue_ns
            .fetch_add(nanos(wait), Ordering::Relaxed);
    }

    /// Carry the 401 replay mark ([`crate::replay::mark`]).
    pub(crate) fn mark_replayed_above(&self) {
        self.inner.replayed_above.store(true, Ordering::Relaxed);
    }

    /// Whether the 401 replay mark is set ([`crate::replay::is_marked`]).
    pub(crate) fn replayed_above(&self) -> bool {
        self.inner.replayed_above.load(Ordering::Relaxed)
    }

    /// Note that a layer below added header `name` to the request, which a
    /// later send of it (a dead letter's replay) must carry too. Only the
    /// first header noted is kept.
    pub(crate) fn keep_header(&self, name: HeaderName, value: HeaderValue) {
        let _ = self.inner.kept_header.set(Box::new((name, value)));
    }

    /// Put the header a layer below added (see
    /// [`keep_header`](Self::keep_header)) into `headers`, unless they
    /// have it already.
    pub(crate) fn restore_kept_header(&self, headers: &mut HeaderMap) {
        if let Some(kept) = self.inner.kept_header.get() {
            let (name, value) = &**kept;
            headers.entry(name).or_insert_with(|| value.clone());
        }
    }

    /// Whether the observer wants events as values (asked once, when the
    /// context was made).
    pub(crate) fn enabled(&self) -> bool {
        self.inner.enabled
    }
}

/// `duration` in nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("correlation_id", &self.correlation_id())
            .finish_non_exhaustive()
    }
}
