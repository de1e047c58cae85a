//! A sink that POSTs batches of events to a URL from a background task.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, Uri};
use tokio::sync::{watch, Notify};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::event::AuditEvent;
use super::sink::AuditSink;
use crate::auth::box_client;
use crate::body::Body;
use crate::error::{BoxError, ConfigError};
use crate::retry::{RetryBudget, RetryLayer};

type Client = BoxCloneSyncService<Request<Body>, Response<Bytes>, BoxError>;

/// POSTs events in batches (a JSON array per request) to a URL from a
/// background task. Recording only queues the event: the request path never
/// waits for the webhook. The queue is bounded; when it is full the oldest
/// events are dropped and counted. A batch that cannot be delivered (after
/// the crate's own retry layer, with an `Idempotency-Key` per batch, and a
/// per-request timeout) goes back to the front of the queue and is tried
/// again after the flush interval.
///
/// Needs a Tokio runtime when built.
#[derive(Clone)]
pub struct WebhookSink {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<VecDeque<String>>,
    capacity: usize,
    batch: usize,
    wake: Notify,
    dropped: AtomicU64,
    delivered: AtomicU64,
    /// Events taken for the POST under way.
    sending: AtomicU64,
    rounds: watch::Sender<u64>,
}

/// Builds a [`WebhookSink`].
pub struct WebhookSinkBuilder {
    url: Uri,
    capacity: usize,
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
        self.shared.lock().len() + self.shared.sending.load(Ordering::Relaxed) as usize
    }

    /// Send what is queued now and wait for that delivery round to end
    /// (delivered or put back).
    pub async fn flush(&self) {
        let mut rounds = self.shared.rounds.subscribe();
        rounds.mark_unchanged();
        self.shared.wake.notify_one();
        let _ = rounds.changed().await;
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WebhookSinkBuilder {
    /// At most this many events wait (default 10,000); beyond, the oldest go.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
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
    pub fn http_client<S, B>(mut self, client: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.client = Some(box_client(client));
        self
    }

    /// Start the background task and return the sink.
    pub fn build(self) -> WebhookSink {
        let (rounds, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            capacity: self.capacity,
            batch: self.batch,
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sending: AtomicU64::new(0),
            rounds,
        });
        let client = self
            .client
            .unwrap_or_else(crate::auth::default_token_client);
        let client: Client = BoxCloneSyncService::new(
            self.retry
                .layer(tower::timeout::Timeout::new(client, self.timeout)),
        );
        tokio::spawn(deliver(
            Arc::downgrade(&shared),
            client,
            self.url,
            self.interval,
        ));
        WebhookSink { shared }
    }
}

async fn deliver(shared: std::sync::Weak<Shared>, client: Client, url: Uri, interval: Duration) {
    loop {
        let Some(this) = shared.upgrade() else {
            return;
        };
        let batch: Vec<String> = {
            let mut queue = this.lock();
            let n = queue.len().min(this.batch);
            this.sending.store(n as u64, Ordering::Relaxed);
            queue.drain(..n).collect()
        };
        if !batch.is_empty() {
            let body = format!("[{}]", batch.join(","));
            let request = Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body));
            let ok = match request {
                Ok(request) => matches!(
                    client.clone().oneshot(request).await,
                    Ok(response) if response.status().is_success()
                ),
                Err(_) => false,
            };
            if ok {
                this.delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            } else {
                // put the batch back in front, within capacity: the oldest go
                let mut queue = this.lock();
                for line in batch.into_iter().rev() {
                    queue.push_front(line);
                }
                while queue.len() > this.capacity {
                    queue.pop_front();
                    this.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            this.sending.store(0, Ordering::Relaxed);
        }
        this.rounds.send_modify(|n| *n = n.wrapping_add(1));
        let more = this.lock().len() >= this.batch;
        if !more {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = this.wake.notified() => {}
            }
        }
    }
}

impl AuditSink for WebhookSink {
    fn record(&self, event: &AuditEvent) {
        let line = event.to_json();
        let full = {
            let mut queue = self.shared.lock();
            queue.push_back(line);
            let sending = self.shared.sending.load(Ordering::Relaxed) as usize;
            while !queue.is_empty() && queue.len() + sending > self.shared.capacity {
                queue.pop_front();
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.len() >= self.shared.batch
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
            .field("url", &self.url)
            .field("capacity", &self.capacity)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}
