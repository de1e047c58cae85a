//! One scripted upstream for the tests: a service that answers from a
//! script (then one answer, or one rule, for every request after it) and
//! records each request it saw, with its arrival time in (paused) Tokio
//! time.
//!
//! ```ignore
//! // a 503, a 429 with a hint, then 200 to every later request
//! let upstream = Scripted::new([status(503), status(429).header("retry-after", "2")]);
//! let service = layer.layer(upstream.clone());
//! // ... send through `service` ...
//! assert_eq!(upstream.count(), 3);
//! assert_eq!(upstream.arrivals()[2], Duration::from_secs(2) + backoff);
//! assert_eq!(upstream.seen()[0].header("idempotency-key"), Some("k-1"));
//! ```
#![allow(dead_code)] // each test file uses what it needs

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tokio::time::Instant;
use tower::Service;
use tower_cx::body::Body;
use tower_cx::error::{BoxError, RequestNotSent};

/// What the upstream answers to one request: a response (a status and
/// headers) or an error, after an optional delay.
#[derive(Clone)]
pub struct Answer {
    after: Duration,
    outcome: Outcome,
}

#[derive(Clone)]
enum Outcome {
    Respond(StatusCode, HeaderMap),
    Fail(fn() -> BoxError),
}

/// `200 OK`.
pub fn ok() -> Answer {
    status(200)
}

/// A response with this status and no headers.
pub fn status(code: u16) -> Answer {
    let code = StatusCode::from_u16(code).expect("a valid status code");
    Answer {
        after: Duration::ZERO,
        outcome: Outcome::Respond(code, HeaderMap::new()),
    }
}

/// The inner service fails with the error `make` builds.
pub fn error(make: fn() -> BoxError) -> Answer {
    Answer {
        after: Duration::ZERO,
        outcome: Outcome::Fail(make),
    }
}

/// The request provably never left: [`RequestNotSent`].
pub fn not_sent() -> Answer {
    error(|| RequestNotSent::new("connection refused").into())
}

/// The attempt timed out (`tower::timeout`'s error).
pub fn timeout() -> Answer {
    error(|| tower::timeout::error::Elapsed::new().into())
}

/// The connection was reset after the request was written.
pub fn dropped() -> Answer {
    error(|| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )
        .into()
    })
}

impl Answer {
    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::try_from(name).expect("a valid header name");
        let value = HeaderValue::try_from(value).expect("a valid header value");
        if let Outcome::Respond(_, headers) = &mut self.outcome {
            headers.append(name, value);
        }
        self
    }

    /// Adds these response headers.
    pub fn headers(mut self, more: HeaderMap) -> Self {
        if let Outcome::Respond(_, headers) = &mut self.outcome {
            headers.extend(more);
        }
        self
    }

    /// Answers only after `latency` (a Tokio sleep: exact in paused time).
    pub fn after(mut self, latency: Duration) -> Self {
        self.after = latency;
        self
    }
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived, from the upstream's creation.
    pub at: Duration,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Seen {
    /// The value of header `name`, if it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Rule = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct Shared {
    script: Mutex<VecDeque<Answer>>,
    /// What every request after the script gets.
    then: Rule,
    seen: Mutex<Vec<Seen>>,
    start: Instant,
}

/// A service answering from a script, then by one answer or rule, that
/// records every request it saw. Clones share the script and the record.
#[derive(Clone)]
pub struct Scripted {
    shared: Arc<Shared>,
}

impl Scripted {
    /// Answers `script` in order, then `200 OK` to every request after it.
    pub fn new(script: impl IntoIterator<Item = Answer>) -> Self {
        Self::build(script, Arc::new(|_: &Seen| ok()))
    }

    /// Answers `answer` to every request.
    pub fn always(answer: Answer) -> Self {
        Self::new([]).then(answer)
    }

    /// Answers each request with what `rule` makes of it.
    pub fn answering(rule: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        Self::build([], Arc::new(rule))
    }

    /// Once the script runs out, answers `answer` instead of `200 OK`.
    pub fn then(mut self, answer: Answer) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("set before the upstream is cloned");
        shared.then = Arc::new(move |_: &Seen| answer.clone());
        self
    }

    fn build(script: impl IntoIterator<Item = Answer>, then: Rule) -> Self {
        Self {
            shared: Arc::new(Shared {
                script: Mutex::new(script.into_iter().collect()),
                then,
                seen: Mutex::default(),
                start: Instant::now(),
            }),
        }
    }

    /// Appends `answers` to what is left of the script.
    pub fn push(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.script.lock().unwrap().extend(answers);
    }

    /// Drops what is left of the script: every later request gets the
    /// answer after it.
    pub fn clear_script(&self) {
        self.shared.script.lock().unwrap().clear();
    }

    /// Every request seen, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// When each request arrived, from the upstream's creation.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.at)
            .collect()
    }

    /// Each request's value of header `name` (`None` where it had none).
    pub fn header_values(&self, name: &str) -> Vec<Option<String>> {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter()
            .map(|s| s.header(name).map(str::to_owned))
            .collect()
    }
}

impl Service<Request<Body>> for Scripted {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let seen = Seen {
            at: self.shared.start.elapsed(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        };
        let scripted = self.shared.script.lock().unwrap().pop_front();
        let answer = scripted.unwrap_or_else(|| (self.shared.then)(&seen));
        self.shared.seen.lock().unwrap().push(seen);
        Box::pin(async move {
            if !answer.after.is_zero() {
                tokio::time::sleep(answer.after).await;
            }
            match answer.outcome {
                Outcome::Respond(status, headers) => {
                    let mut response = Response::new(());
                    *response.status_mut() = status;
                    *response.headers_mut() = headers;
                    Ok(response)
                }
                Outcome::Fail(make) => Err(make()),
            }
        })
    }
}
