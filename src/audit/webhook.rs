//! A sink that POSTs batches of events to a URL from a background task.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, Uri};
use tokio::sync::{watch, Notify};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::event::AuditEvent;
use super::sink::AuditSink;
use crate::body::Body;
use crate::error::{BoxError, ConfigError};
use crate::retry::{RetryBudget, RetryLayer, RetryOverride};
use crate::transport::{buffered, hyper_client, Transport};

type Client = BoxCloneSyncService<Request<Body>, Response<Bytes>, BoxError>;

/// The most of a webhook's answer read (its body is not used).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// POSTs events in batches (a JSON array per request) to a URL from a
/// background task. Recording only queues the event: the request path never
/// waits for the webhook. The queue is bounded by events (10,000) and by
/// bytes (16 MiB); when it is full the oldest events are dropped and
/// counted. A batch that cannot be delivered (after
/// the crate's own retry layer, with an `Idempotency-Key` per batch, and a
/// per-request timeout) goes back to the front of the queue and is tried
/// again after the flush interval (never in a tight loop).
///
/// Needs a Tokio runtime when built.
#[derive(Clone)]
pub struct WebhookSink {
    shared: Arc<Shared>,
}

struct Shared {
    /// Events with their sequence numbers, oldest first.
    queue: Mutex<Queue>,
    capacity: usize,
    max_bytes: usize,
    /// Bytes of the events taken for the POST under way.
    sending_bytes: AtomicUsize,
    batch: usize,
    wake: Notify,
    dropped: AtomicU64,
    delivered: AtomicU64,
    /// Events taken for the POST under way.
    sending: AtomicU64,
    /// The highest sequence number tried so far (delivered, dropped or put
    /// back); the sender lives in the delivery task, so a gone task ends
    /// every `flush`.
    attempted: watch::Receiver<u64>,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<(u64, String)>,
    /// Bytes of the queued lines.
    bytes: usize,
    next_seq: u64,
}

/// Builds a [`WebhookSink`].
pub struct WebhookSinkBuilder {
    url: Uri,
    capacity: usize,
    max_bytes: usize,
    batch: usize,
    interval: Duration,
    timeout: Duration,
    retry: RetryLayer,
    client: Option<Client>,
}

impl WebhookSink {
    /// A builder for a webhook at `url` (absolute `http` or `https`).
    pub fn builder(url: &str) -> Result<WebhookSinkBuilder, ConfigError> {
        let url: Uri = url
            .parse()
            .map_err(|_| ConfigError::new("url", "not a valid URL"))?;
        if url.scheme().is_none() || url.host().is_none() {
            return Err(ConfigError::new("url", "must be absolute"));
        }
        Ok(WebhookSinkBuilder {
            url,
            capacity: 10_000,
            max_bytes: super::sink::DEFAULT_MAX_BYTES,
            batch: 100,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            retry: RetryLayer::new()
                .max_attempts(3)
                .deadline(Duration::from_secs(10))
                .auto_idempotency_key(true)
                .budget(RetryBudget::unlimited()),
            client: None,
        })
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Events delivered so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Events not delivered yet: queued, or in the POST under way.
    pub fn pending(&self) -> usize {
        self.shared.lock().events.len() + self.shared.sending.load(Ordering::Relaxed) as usize
    }

    /// Send now, and wait until every event recorded before this call has
    /// been tried: delivered, dropped, or kept for later because a delivery
    /// failed (a failing webhook settles everything queued). Returns at once
    /// if the delivery task is gone.
    pub async fn flush(&self) {
        let target = self.shared.lock().next_seq;
        let mut attempted = self.shared.attempted.clone();
        self.shared.wake.notify_one();
        while *attempted.borrow_and_update() < target {
            if attempted.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop the oldest queued events beyond capacity.
    fn trim(&self, queue: &mut Queue) {
        let sending = self.sending.load(Ordering::Relaxed) as usize;
        let sending_bytes = self.sending_bytes.load(Ordering::Relaxed);
        while !queue.events.is_empty()
            && (queue.events.len() + sending > self.capacity
                || queue.bytes + sending_bytes > self.max_bytes)
        {
            if let Some((_, line)) = queue.events.pop_front() {
                queue.bytes -= line.len();
            }
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WebhookSinkBuilder {
    /// At most this many events wait (default 10,000); beyond, the oldest go.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// At most about this many bytes of events wait (default 16 MiB);
    /// beyond, the oldest go, whatever their number.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// Events per POST (default 100); a full batch is sent at once.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// A partial batch is sent after this long (default 1 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Timeout of each POST attempt (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The retry layer each POST goes through.
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// Send with `client` instead of the built-in hyper client.
    pub fn http_client(mut self, client: impl Transport) -> Self {
        self.client = Some(buffered(client, MAX_RESPONSE_BODY));
        self
    }

    /// Start the background task and return the sink.
    pub fn build(self) -> WebhookSink {
        let (attempted_tx, attempted) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            capacity: self.capacity,
            max_bytes: self.max_bytes,
            sending_bytes: AtomicUsize::new(0),
            batch: self.batch,
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sending: AtomicU64::new(0),
            attempted,
        });
        let client = self
            .client
            .unwrap_or_else(|| buffered(hyper_client(), MAX_RESPONSE_BODY));
        let client: Client = BoxCloneSyncService::new(
            self.retry
                .layer(tower::timeout::Timeout::new(client, self.timeout)),
        );
        tokio::spawn(deliver(
            Arc::downgrade(&shared),
            attempted_tx,
            client,
            self.url,
            self.interval,
        ));
        WebhookSink { shared }
    }
}

async fn deliver(
    shared: std::sync::Weak<Shared>,
    attempted: watch::Sender<u64>,
    client: Client,
    url: Uri,
    interval: Duration,
) {
    loop {
        let Some(this) = shared.upgrade() else {
            return;
        };
        let batch: Vec<(u64, String)> = {
            let mut queue = this.lock();
            let n = queue.events.len().min(this.batch);
            this.sending.store(n as u64, Ordering::Relaxed);
            let batch: Vec<(u64, String)> = queue.events.drain(..n).collect();
            let bytes = batch.iter().map(|(_, line)| line.len()).sum::<usize>();
            queue.bytes -= bytes;
            this.sending_bytes.store(bytes, Ordering::Relaxed);
            batch
        };
        let mut failed = false;
        if let Some(last) = batch.last().map(|(seq, _)| *seq) {
            let lines: Vec<&str> = batch.iter().map(|(_, line)| line.as_str()).collect();
            let body = format!("[{}]", lines.join(","));
            let request = Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header(CONTENT_TYPE, "application/json")
                // delivery is at least once anyway (a failed batch goes back
                // to the queue): a batch may be sent again after any failure
                .extension(RetryOverride::new().idempotent(true))
                .body(Body::from(body));
            let ok = match request {
                Ok(request) => matches!(
                    client.clone().oneshot(request).await,
                    Ok(response) if response.status().is_success()
                ),
                Err(_) => false,
            };
            let mut queue = this.lock();
            if ok {
                this.delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            } else {
                // put the batch back in front, within capacity: the oldest go
                failed = true;
                for event in batch.into_iter().rev() {
                    queue.bytes += event.1.len();
                    queue.events.push_front(event);
                }
            }
            this.sending.store(0, Ordering::Relaxed);
            this.sending_bytes.store(0, Ordering::Relaxed);
            this.trim(&mut queue);
            // after a failure the webhook is down for everything queued:
            // all of it counts as tried, to be tried again later
            let settled = if failed { queue.next_seq } else { last };
            drop(queue);
            attempted.send_modify(|seq| *seq = (*seq).max(settled));
        } else {
            // nothing queued: everything recorded so far is settled
            let next = this.lock().next_seq;
            attempted.send_modify(|seq| *seq = (*seq).max(next));
        }
        let more = this.lock().events.len() >= this.batch;
        if failed {
            // a failing webhook is tried again after the interval, never in
            // a tight loop, whatever else is queued
            tokio::time::sleep(interval).await;
        } else if !more {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = this.wake.notified() => {}
            }
        }
        // yield even on the busy path, so a fast client cannot starve the runtime
        tokio::task::yield_now().await;
    }
}

impl AuditSink for WebhookSink {
    fn record(&self, event: &AuditEvent) {
        let line = event.to_json();
        let full = {
            let mut queue = self.shared.lock();
            queue.next_seq += 1;
            let seq = queue.next_seq;
            queue.bytes += line.len();
            queue.events.push_back((seq, line));
            self.shared.trim(&mut queue);
            queue.events.len() >= self.shared.batch
        };
        if full {
            self.shared.wake.notify_one();
        }
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("pending", &self.pending())
            .field("delivered", &self.delivered())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl fmt::Debug for WebhookSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSinkBuilder")
            // a webhook URL is a secret (Slack-style URLs carry their key
            // in the path): scheme and host only
            .field(
                "url",
                &format_args!(
                    "{}://{}/[redacted]",
                    self.url.scheme_str().unwrap_or("?"),
                    self.url.host().unwrap_or("?")
                ),
            )
            .field("capacity", &self.capacity)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}
