//! The audit sinks' queues: JSON lines and webhook, growing and full by
//! their byte caps.

use std::future::pending;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use http::{Request, Response};
use tower::{service_fn, BoxError, Layer};
use tower_cx::audit::{callback, AuditLayer, AuditSink, JsonLinesSink, WebhookSink};
use tower_cx::body::Body;

use super::{best, call, header, paused_runtime, per_item, request, row, upstream, us, SIZES};

/// A writer that blocks until opened: the JSON-lines queue only grows.
#[derive(Clone, Default)]
struct Blocked {
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Blocked {
    /// Let the writer write.
    fn open(&self) {
        *self.open.0.lock().expect("not poisoned") = true;
        self.open.1.notify_all();
    }
}

impl Write for Blocked {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut open = self.open.0.lock().expect("not poisoned");
        while !*open {
            open = self.open.1.wait(open).expect("not poisoned");
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Events per request, and their mean JSON and approximate sizes.
fn calibrate(runtime: &tokio::runtime::Runtime) -> (usize, usize, usize) {
    let counts = Arc::new((
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ));
    let sink = {
        let counts = counts.clone();
        callback(move |event| {
            counts.0.fetch_add(1, Ordering::Relaxed);
            counts.1.fetch_add(event.to_json().len(), Ordering::Relaxed);
            counts.2.fetch_add(event.approx_bytes(), Ordering::Relaxed);
        })
    };
    let requests = 100;
    runtime.block_on(async {
        let mut service = AuditLayer::new(sink).layer(upstream());
        for _ in 0..requests {
            call(&mut service, request()).await.expect("a response");
        }
    });
    let events = counts.0.load(Ordering::Relaxed);
    (
        events / requests,
        counts.1.load(Ordering::Relaxed) / events,
        counts.2.load(Ordering::Relaxed) / events,
    )
}

/// `n` requests through an audit layer into `sink`, untimed, then `n` more,
/// timed; per request.
fn fill_then_time(runtime: &tokio::runtime::Runtime, sink: impl AuditSink, n: usize) -> f64 {
    runtime.block_on(async {
        let mut service = AuditLayer::new(sink).layer(upstream());
        for _ in 0..n {
            call(&mut service, request()).await.expect("a response");
        }
        let start = Instant::now();
        for _ in 0..n {
            call(&mut service, request()).await.expect("a response");
        }
        per_item(start.elapsed(), n)
    })
}

/// A webhook sink whose POSTs never answer: its queue only grows.
fn stuck_webhook(runtime: &tokio::runtime::Runtime, max_bytes: usize) -> WebhookSink {
    let _guard = runtime.enter();
    let never = service_fn(|_req: Request<Body>| pending::<Result<Response<Body>, BoxError>>());
    WebhookSink::builder("http://127.0.0.1:9/audit")
        .expect("a valid URL")
        .capacity(usize::MAX / 2)
        .max_bytes(max_bytes)
        .http_client(never)
        .build()
}

/// The JSON-lines and webhook queues, growing and full.
pub(crate) fn sinks(runs: usize) {
    let runtime = paused_runtime();
    let (events, json, approx) = calibrate(&runtime);
    header(
        "The audit sinks' queues (`JsonLinesSink`, `WebhookSink`)",
        &format!(
            "Requests through an `AuditLayer` ({events} events each, about {json} \
             bytes of JSON and {approx} counted bytes per event) into a sink whose \
             writer (JSON lines) or webhook (POSTs that never answer) is stuck; per \
             request, timed while the queue goes from n to 2n requests' events \
             (growing), or while it is full by its byte cap at n requests' events \
             (JSON lines: each new event dropped; webhook: each new event drops \
             the oldest)."
        ),
        &[
            "JSON lines, growing",
            "JSON lines, full (bytes)",
            "webhook, growing",
            "webhook, full (bytes)",
        ],
    );
    for n in SIZES {
        let cells = best(runs, || {
            let lines = |max_bytes: usize| {
                let writer = Blocked::default();
                let sink = JsonLinesSink::with_capacity(writer.clone(), usize::MAX / 2)
                    .max_bytes(max_bytes);
                let cost = fill_then_time(&runtime, sink.clone(), n);
                writer.open();
                sink.flush();
                cost
            };
            let hook = |max_bytes: usize| {
                let sink = stuck_webhook(&runtime, max_bytes);
                fill_then_time(&runtime, sink, n)
            };
            [
                lines(usize::MAX / 2),
                lines(n * events * approx),
                hook(usize::MAX / 2),
                hook(n * events * json),
            ]
        });
        row(n, &cells.map(us));
    }
    println!();
}
