//! One event capture for the tests: collects, in order, what a layer's
//! `on_event` hook, an audit sink or a dead-letter sink is handed.
//!
//! Audit events can be read by their name and as JSON (the stable audit
//! shape: `event`, `attempt` and the kind's fields), so that a test need
//! not match the event types' variants.
//!
//! [`Written`] is the same for what a writer is given (a JSON-lines sink,
//! JSON-lines dead letters, a tracing subscriber): the text, shared.
//!
//! ```ignore
//! let events = EventCapture::<AuditEvent>::new();
//! let service = AuditLayer::new(events.sink()).layer(upstream);
//! // ... send through `service` ...
//! assert_eq!(events.named("retry.scheduled")[0]["delay_ms"], 500.0);
//!
//! let retries = EventCapture::<RetryEvent>::new();
//! let layer = RetryLayer::new().on_event(retries.recorder());
//! ```
#![allow(dead_code)] // each test file uses what it needs

use std::io::Write;
use std::sync::{Arc, Mutex};

use tower_cx::audit::{
    callback, dead_letter_fn, AuditEvent, AuditSink, DeadLetter, DeadLetterSink,
};

/// Everything captured so far, shared by every clone.
pub struct EventCapture<T> {
    events: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for EventCapture<T> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
        }
    }
}

impl<T> Default for EventCapture<T> {
    fn default() -> Self {
        Self {
            events: Arc::default(),
        }
    }
}

impl<T: Send + 'static> EventCapture<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `event`.
    pub fn push(&self, event: T) {
        self.events.lock().unwrap().push(event);
    }

    /// How many were captured.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything captured so far.
    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }

    /// Everything captured so far, in order, leaving the capture empty.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl<T: Clone + Send + 'static> EventCapture<T> {
    /// A handler for a layer's `on_event`: keeps a copy of each event.
    pub fn recorder(&self) -> impl Fn(&T) + Clone + Send + Sync + 'static {
        let events = self.events.clone();
        move |event: &T| events.lock().unwrap().push(event.clone())
    }

    /// A copy of everything captured so far, in order.
    pub fn all(&self) -> Vec<T> {
        self.events.lock().unwrap().clone()
    }
}

impl EventCapture<AuditEvent> {
    /// An audit sink that keeps every event.
    pub fn sink(&self) -> impl AuditSink + Clone {
        callback(self.recorder())
    }

    /// Each event's name (`request.started`, `retry.scheduled`, ...).
    pub fn names(&self) -> Vec<&'static str> {
        let events = self.events.lock().unwrap();
        events.iter().map(AuditEvent::name).collect()
    }

    /// Each event as its JSON object.
    pub fn json(&self) -> Vec<serde_json::Value> {
        let events = self.events.lock().unwrap();
        events.iter().map(json).collect()
    }

    /// The events called `name`, as JSON objects.
    pub fn named(&self, name: &str) -> Vec<serde_json::Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.name() == name)
            .map(json)
            .collect()
    }
}

fn json(event: &AuditEvent) -> serde_json::Value {
    serde_json::from_str(&event.to_json()).expect("an audit event is one JSON object")
}

impl EventCapture<DeadLetter> {
    /// A dead-letter sink that keeps every letter.
    pub fn dead_letters(&self) -> impl DeadLetterSink + Clone {
        let letters = self.clone();
        dead_letter_fn(move |letter| letters.push(letter))
    }
}

/// A writer that keeps what it is given; its clones share it.
#[derive(Clone, Default)]
pub struct Written(Arc<Mutex<Vec<u8>>>);

impl Written {
    /// Adds `text` and a newline.
    pub fn push_line(&self, text: impl AsRef<str>) {
        let mut written = self.0.lock().unwrap();
        written.extend_from_slice(text.as_ref().as_bytes());
        written.push(b'\n');
    }

    /// Everything written so far (it must be UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 text")
    }
}

impl Write for Written {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
