//! Where audit events go.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::event::AuditEvent;
use super::EventKind;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::observe::{AuthEvent, LimiterEvent, RequestEvent, RequestOutcome};

/// Receives audit events. Recording must never block the request path and
/// never fail it: a sink that cannot keep up drops events and counts them.
pub trait AuditSink: Send + Sync + 'static {
    /// Record one event. Called on the request path: return quickly.
    fn record(&self, event: &AuditEvent);

    /// Whether events should be built at all (a no-op sink says no, and the
    /// audit layer then only keeps stats).
    fn enabled(&self) -> bool {
        true
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    fn record(&self, event: &AuditEvent) {
        (**self).record(event);
    }

    fn enabled(&self) -> bool {
        (**self).enabled()
    }
}

/// Records nothing. Stats are still kept once their handle is taken
/// ([`AuditLayer::stats_handle`](super::AuditLayer::stats_handle)).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl AuditSink for NoopSink {
    fn record(&self, _event: &AuditEvent) {}

    fn enabled(&self) -> bool {
        false
    }
}

/// Hands each event to a closure. Made by [`callback`].
#[derive(Clone)]
pub struct CallbackSink<F> {
    f: F,
}

/// A sink that calls `f` with each event, on the request path.
pub fn callback<F>(f: F) -> CallbackSink<F>
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    CallbackSink { f }
}

impl<F> AuditSink for CallbackSink<F>
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        (self.f)(event);
    }
}

impl<F> fmt::Debug for CallbackSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSink").finish_non_exhaustive()
    }
}

/// Writes each event as one JSON line to any writer (stdout, a file), from a
/// background thread: the request path only queues a copy of the event;
/// formatting and writing happen on the writer thread, which is woken only
/// when it sleeps. When the writer falls behind by more than the buffer
/// (default 8192 events, and 16 MiB: see [`max_bytes`](Self::max_bytes)),
/// new events are dropped and counted.
#[derive(Clone)]
pub struct JsonLinesSink {
    shared: Arc<LinesShared>,
}

struct LinesShared {
    queue: Mutex<LinesQueue>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes callers of `flush`.
    written: Condvar,
    writer_idle: AtomicBool,
    capacity: usize,
    max_bytes: AtomicUsize,
    dropped: AtomicU64,
}

/// The default byte cap of the audit queues (JSON lines, webhook).
pub(crate) const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct LinesQueue {
    events: Vec<AuditEvent>,
    /// About how many bytes the queued events hold.
    bytes: usize,
    /// Events handed over so far, and events written so far.
    queued: u64,
    done: u64,
    closed: bool,
}

impl JsonLinesSink {
    /// JSON lines to `writer`, buffering up to 8192 events.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self::with_capacity(writer, 8192)
    }

    /// JSON lines to `writer`, buffering up to `capacity` events.
    pub fn with_capacity(mut writer: impl Write + Send + 'static, capacity: usize) -> Self {
        let shared = Arc::new(LinesShared {
            queue: Mutex::new(LinesQueue::default()),
            work: Condvar::new(),
            written: Condvar::new(),
            writer_idle: AtomicBool::new(false),
            capacity: capacity.max(1),
            max_bytes: AtomicUsize::new(DEFAULT_MAX_BYTES),
            dropped: AtomicU64::new(0),
        });
        // The writer keeps the queue alive until every event is written; it
        // stops once it is the only holder left and the queue is empty.
        let own = shared.clone();
        std::thread::Builder::new()
            .name("tower-cx-audit".into())
            .spawn(move || {
                let shared = own;
                let mut batch = Vec::new();
                loop {
                    {
                        let mut queue = shared.lock();
                        while queue.events.is_empty() && !queue.closed {
                            shared.writer_idle.store(true, Ordering::SeqCst);
                            // a timeout notices a sink dropped without a wake-up
                            let (next, _) = shared
                                .work
                                .wait_timeout(queue, Duration::from_millis(200))
                                .unwrap_or_else(|e| e.into_inner());
                            queue = next;
                            shared.writer_idle.store(false, Ordering::SeqCst);
                            if queue.events.is_empty() && Arc::strong_count(&shared) == 1 {
                                queue.closed = true;
                            }
                        }
                        if queue.events.is_empty() && queue.closed {
                            break;
                        }
                        std::mem::swap(&mut batch, &mut queue.events);
                        queue.bytes = 0;
                    }
                    // A failing writer loses lines, never the request; a
                    // panicking one closes the sink instead of hanging `flush`.
                    let written = batch.len() as u64;
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        for event in batch.drain(..) {
                            let _ = writer.write_all(event.to_json().as_bytes());
                            let _ = writer.write_all(b"\n");
                        }
                        let _ = writer.flush();
                    }));
                    let mut queue = shared.lock();
                    queue.done += written;
                    if outcome.is_err() {
                        queue.closed = true;
                        let lost = queue.events.len() as u64;
                        queue.events.clear();
                        queue.done += lost;
                        shared.dropped.fetch_add(lost, Ordering::Relaxed);
                        drop(queue);
                        shared.written.notify_all();
                        return;
                    }
                    drop(queue);
                    shared.written.notify_all();
                }
                let _ = writer.flush();
            })
            .expect("spawn the audit writer thread");
        Self { shared }
    }

    /// JSON lines to standard output.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }

    /// JSON lines appended to the file at `path` (created if missing).
    pub fn file(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::new(std::io::BufWriter::new(file)))
    }

    /// Queue at most about `bytes` of events (default 16 MiB; counted with
    /// [`AuditEvent::approx_bytes`]): beyond, new events are dropped and
    /// counted, whatever their number, so that huge events cannot fill
    /// memory while the writer is slow.
    pub fn max_bytes(self, bytes: usize) -> Self {
        self.shared.max_bytes.store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// Events dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every event handed over so far is written and flushed.
    /// Blocks: call it at shutdown or in tests, not on the request path.
    pub fn flush(&self) {
        let mut queue = self.shared.lock();
        let target = queue.queued;
        self.shared.work.notify_one();
        while queue.done < target {
            queue = self
                .shared
                .written
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl LinesShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinesQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: &AuditEvent) {
        let shared = &self.shared;
        {
            let size = event.approx_bytes();
            let mut queue = shared.lock();
            if queue.closed
                || queue.events.len() >= shared.capacity
                || queue.bytes + size > shared.max_bytes.load(Ordering::Relaxed)
            {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // `queued` counts only events that will be written, so that
            // `flush` can wait for exactly those
            queue.events.push(event.clone());
            queue.bytes += size;
            queue.queued += 1;
        }
        if shared.writer_idle.load(Ordering::SeqCst) {
            shared.work.notify_one();
        }
    }
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Emits each event as a `tracing` event (target `tower_cx::audit`, level
/// INFO, or WARN for failures), with `event`, `correlation_id`, `attempt` and
/// the whole JSON record as structured fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn record(&self, event: &AuditEvent) {
        let failed = matches!(
            event.kind,
            EventKind::Request(RequestEvent::Finished { outcome, .. })
                if outcome != RequestOutcome::Success
        ) || matches!(
            event.kind,
            EventKind::Limiter(LimiterEvent::Shed { .. })
                | EventKind::Token(AuthEvent::TokenAwaitFailed { .. })
        );
        let attempt = event.attempt.unwrap_or(0);
        let json = event.to_json();
        if failed {
            tracing::warn!(
                target: "tower_cx::audit",
                event = event.name(),
                correlation_id = &*event.correlation_id,
                attempt,
                record = %json,
            );
        } else {
            tracing::info!(
                target: "tower_cx::audit",
                event = event.name(),
                correlation_id = &*event.correlation_id,
                attempt,
                record = %json,
            );
        }
    }

    fn enabled(&self) -> bool {
        tracing::enabled!(target: "tower_cx::audit", tracing::Level::WARN)
    }
}

/// Sends each event to several sinks.
#[derive(Clone, Default)]
pub struct FanOut {
    sinks: Vec<Arc<dyn AuditSink>>,
}

impl FanOut {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sink.
    pub fn with(mut self, sink: impl AuditSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }
}

impl AuditSink for FanOut {
    fn record(&self, event: &AuditEvent) {
        for sink in &self.sinks {
            if sink.enabled() {
                sink.record(event);
            }
        }
    }

    fn enabled(&self) -> bool {
        self.sinks.iter().any(|s| s.enabled())
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

/// Appends dead letters as JSON lines (`correlation_id`, `attempts`,
/// `last_status`, `error_code`, `message`, and the request's `method`, `url`,
/// `headers` and UTF-8 `body`) to a writer, to be read back and re-submitted.
///
/// Credentials stay out: the copy has no `Authorization`, `Cookie`,
/// sensitive or secret-looking headers, no URL userinfo, and secret-looking
/// query values are written as `[redacted]` (add them back when
/// re-submitting). The body is written as sent: do not route requests whose
/// bodies carry secrets to a file-backed dead-letter sink.
pub struct JsonLinesDeadLetters {
    writer: Mutex<Box<dyn Write + Send>>,
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    correlation_id: &'a str,
    attempts: u32,
    last_status: Option<u16>,
    error_code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, &'a str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

impl JsonLinesDeadLetters {
    /// Dead letters to `writer`.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self {
            writer: Mutex::new(Box::new(writer)),
        }
    }
}

impl DeadLetterSink for JsonLinesDeadLetters {
    fn dead_letter(&self, letter: DeadLetter) {
        let request = letter.request.as_ref();
        let line = DeadLetterLine {
            correlation_id: &letter.correlation_id,
            attempts: letter.attempts,
            last_status: letter.last_status,
            error_code: &letter.error_code,
            message: &letter.message,
            method: request.map(|r| r.method().as_str()),
            // secret-looking query values do not go to disk: re-add them
            // when re-submitting
            url: request.map(|r| crate::redact::redact_uri(r.uri())),
            headers: request
                .map(|r| {
                    r.headers()
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
                        .collect()
                })
                .unwrap_or_default(),
            body: request
                .and_then(|r| r.body().as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(writer, "{text}");
            let _ = writer.flush();
        }
    }
}

impl fmt::Debug for JsonLinesDeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesDeadLetters")
            .finish_non_exhaustive()
    }
}
