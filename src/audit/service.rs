use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::Service;

use super::future::Letters;
use super::future::ResponseFuture;
use super::observer::{AuditObserver, CountedDeadLetters};
use super::{AuditLayer, AuditRecord};
use crate::body::{try_clone_request, Body, ReplayBody};
use crate::dead_letter::{DeadLetterSink, DeadLettersHandled};
use crate::error::BoxError;
use crate::level::Priority;
use crate::observe::RequestEvent;
use crate::redact::{is_secret_key, redact_json, redact_uri_for_event, strip_userinfo};

/// Opens an [`AuditRecord`] per logical request and reports its end; see the
/// [module docs](crate::audit).
#[derive(Clone)]
pub struct Audit<S> {
    pub(crate) inner: S,
    /// The settings, behind one reference count: services are often cloned
    /// per request, and a clone then costs one count.
    shared: Arc<Shared>,
}

/// What every clone of one [`Audit`] service shares.
struct Shared {
    layer: AuditLayer,
    /// The layer's sink and stats, as the observer of each request's context.
    observer: Arc<AuditObserver>,
    /// The layer's dead-letter sink, counted in its stats.
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

impl<S> Audit<S> {
    /// Wrap `inner`, auditing into the layer's sink.
    pub fn new(inner: S, layer: AuditLayer) -> Self {
        let observer = Arc::new(AuditObserver {
            sink: layer.sink.clone(),
            stats: layer.stats.clone(),
        });
        let dead_letters = layer.dead_letters.clone().map(|inner| {
            Arc::new(CountedDeadLetters {
                inner,
                stats: layer.stats.clone(),
            }) as Arc<dyn DeadLetterSink>
        });
        Self {
            inner,
            shared: Arc::new(Shared {
                layer,
                observer,
                dead_letters,
            }),
        }
    }

    /// Whether a request needs a context: a sink wants events, somebody
    /// holds the stats handle, or failures go to a dead-letter sink (which
    /// reads the attempts the context counts).
    fn observed(&self, enabled: bool) -> bool {
        let shared = &*self.shared;
        enabled || shared.dead_letters.is_some() || shared.layer.stats.wanted()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Audit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .field("layer", &self.shared.layer)
            .finish()
    }
}

const INCOMING_IDS: [HeaderName; 2] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("inin-correlation-id"),
];

/// A fresh correlation id in UUID layout: 64 random bits drawn once per
/// process, then a counter. Unique within the process, unlikely to collide
/// across processes, and cheap: each thread formats ids [`IDS_PER_BLOCK`]
/// at a time into one shared buffer (one allocation, one step of the
/// process-wide counter per block), and each id is a slice of it.
fn new_correlation_id() -> HeaderValue {
    use std::cell::RefCell;

    thread_local! {
        /// The current block of formatted ids, and how many are used.
        static BLOCK: RefCell<(bytes::Bytes, usize)> =
            const { RefCell::new((bytes::Bytes::new(), IDS_PER_BLOCK)) };
    }
    let id = BLOCK.with(|block| {
        let mut block = block.borrow_mut();
        if block.1 == IDS_PER_BLOCK {
            *block = (id_block(), 0);
        }
        let at = block.1 * ID_LEN;
        block.1 += 1;
        block.0.slice(at..at + ID_LEN)
    });
    // a slice of a shared buffer: the header and the record each keep a
    // reference, and cloning it allocates nothing
    HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static(
        "00000000-0000-0000-0000-000000000000",
    ))
}

/// Ids formatted per block by [`new_correlation_id`].
const IDS_PER_BLOCK: usize = 64;
/// The length of an id in UUID layout.
const ID_LEN: usize = 36;

/// [`IDS_PER_BLOCK`] consecutive ids, formatted back to back.
fn id_block() -> bytes::Bytes {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<[u8; 19]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        // `xxxxxxxx-xxxx-xxxx-`: the random 64 bits
        let hex = hex16(rand::random());
        let mut text = [b'-'; 19];
        text[..8].copy_from_slice(&hex[..8]);
        text[9..13].copy_from_slice(&hex[8..12]);
        text[14..18].copy_from_slice(&hex[12..]);
        text
    });
    let first = COUNTER.fetch_add(IDS_PER_BLOCK as u64, Ordering::Relaxed);
    let mut block = Vec::with_capacity(IDS_PER_BLOCK * ID_LEN);
    let mut id = [b'-'; ID_LEN];
    id[..19].copy_from_slice(prefix);
    // `xxxx-xxxxxxxxxxxx`: the counter, formatted once, then counted up
    // in place
    let hex = hex16(first);
    id[19..23].copy_from_slice(&hex[..4]);
    id[24..].copy_from_slice(&hex[4..]);
    for _ in 0..IDS_PER_BLOCK {
        block.extend_from_slice(&id);
        increment_hex_counter(&mut id);
    }
    bytes::Bytes::from(block)
}

/// Add one to the counter half of an id (`xxxx-xxxxxxxxxxxx`, lower-case
/// hex), carrying across the dash; past `ffff-ffffffffffff` it wraps to 0.
fn increment_hex_counter(id: &mut [u8; ID_LEN]) {
    for at in (19..ID_LEN).rev() {
        match id[at] {
            b'-' => continue,
            b'f' => id[at] = b'0',
            b'9' => {
                id[at] = b'a';
                return;
            }
            digit => {
                id[at] = digit + 1;
                return;
            }
        }
    }
}

/// `value` as 16 lower-case hex digits, most significant first.
fn hex16(value: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// A correlation id from the request, if it carries a sane one.
#[inline]
fn incoming_id(headers: &HeaderMap, own: &HeaderName) -> Option<HeaderValue> {
    // one pass over the (usually few) names is cheaper than hashing each
    // candidate name, and most requests carry none: that pass is inlined
    // into the call, the reading of one out of it
    if !headers
        .keys()
        .any(|name| name == own || INCOMING_IDS.contains(name))
    {
        return None;
    }
    read_incoming_id(headers, own)
}

/// The sane correlation id the request carries, if any: in the layer's own
/// correlation header (`own`), else in one of [`INCOMING_IDS`].
#[inline(never)]
fn read_incoming_id(headers: &HeaderMap, own: &HeaderName) -> Option<HeaderValue> {
    std::iter::once(own).chain(&INCOMING_IDS).find_map(|name| {
        let value = headers.get(name)?;
        let text = value.to_str().ok()?;
        let trimmed = text.trim();
        let sane = !trimmed.is_empty()
            && trimmed.len() <= 128
            && trimmed.bytes().all(|b| b.is_ascii_graphic());
        if !sane {
            return None;
        }
        if trimmed.len() == text.len() {
            // a fresh value, as before: not marked sensitive even if the
            // incoming header was
            let mut id = value.clone();
            id.set_sensitive(false);
            Some(id)
        } else {
            HeaderValue::from_str(trimmed).ok()
        }
    })
}

impl<S, B, ResB> Service<Request<B>> for Audit<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: ReplayBody + Into<Body>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let layer = &self.shared.layer;
        let correlation_id =
            incoming_id(request.headers(), &layer.header).unwrap_or_else(new_correlation_id);
        // asked once per request: the context keeps the answer
        let enabled = self.shared.observer.sink.enabled();
        if !self.observed(enabled) {
            // nobody reads what a context would carry: the id goes upstream,
            // and the request costs nothing more
            request
                .headers_mut()
                .insert(layer.header.clone(), correlation_id);
            return ResponseFuture::unobserved(self.inner.call(request));
        }
        request
            .headers_mut()
            .insert(layer.header.clone(), correlation_id.clone());
        let observer: Arc<dyn crate::observe::Observer> = self.shared.observer.clone();
        let record = AuditRecord::new(correlation_id, observer, enabled);
        if record.enabled() {
            let priority = request.extensions().get::<Priority>().copied();
            let body = if layer.record_bodies {
                request
                    .body()
                    .try_clone_body()
                    .map(Into::<Body>::into)
                    .and_then(|b| b.as_bytes().and_then(|bytes| redact_json(bytes)))
            } else {
                None
            };
            record.publish(
                None,
                RequestEvent::Started {
                    method: request.method().to_string(),
                    url: redact_uri_for_event(request.uri()),
                    body,
                    priority,
                }
                .into(),
            );
        }
        request.extensions_mut().insert(record.clone());
        // the caller dead-letters this request itself (a typed client,
        // after its own retries)
        let dead_letters = self
            .shared
            .dead_letters
            .clone()
            .filter(|_| request.extensions().get::<DeadLettersHandled>().is_none());
        let copy = dead_letters
            .as_ref()
            .and_then(|_| try_clone_request(&request))
            .map(|copy| {
                let (mut parts, body) = copy.into_parts();
                strip_credentials(&mut parts.headers);
                parts.uri = strip_userinfo(&parts.uri);
                parts.extensions = http::Extensions::new();
                Box::new(Request::from_parts(parts, body.into()))
            });
        let future = self.inner.call(request);
        let letters = dead_letters.map(|sink| Letters {
            sink,
            copy,
            on_drop: self.shared.layer.letter_dropped,
        });
        ResponseFuture::new(future, record, self.shared.observer.clone(), letters)
    }
}

/// Remove credentials from a dead letter's copy: the usual headers, any
/// header marked sensitive, and any whose name looks like a secret.
fn strip_credentials(headers: &mut HeaderMap) {
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
        headers.remove(&name);
    }
    let doomed: Vec<HeaderName> = headers
        .iter()
        .filter(|(name, value)| {
            value.is_sensitive()
                || (is_secret_key(name.as_str()) && name.as_str() != "idempotency-key")
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_uuid_layout(id: &str) -> bool {
        id.len() == ID_LEN
            && id.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
            })
    }

    #[test]
    fn counting_up_in_place_matches_formatting_each_number() {
        let format = |n: u64| {
            let hex = hex16(n);
            let mut id = [b'-'; ID_LEN];
            id[19..23].copy_from_slice(&hex[..4]);
            id[24..].copy_from_slice(&hex[4..]);
            id
        };
        for start in [0, 9, 15, 0xfff, 0x0fff_ffff_ffff, 0xffff_ffff_ffff_fffe] {
            let mut id = format(start);
            for n in start..start.saturating_add(40) {
                assert_eq!(id, format(n), "{n:#x}");
                increment_hex_counter(&mut id);
            }
        }
        let mut last = format(u64::MAX);
        increment_hex_counter(&mut last);
        assert_eq!(last, format(0), "wraps around");
    }

    #[test]
    fn generated_ids_are_unique_across_blocks_and_threads() {
        let per_thread = IDS_PER_BLOCK * 3 + 5;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| new_correlation_id().to_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert!(is_uuid_layout(&id), "{id}");
                assert!(seen.insert(id.clone()), "{id} generated twice");
            }
        }
        assert_eq!(seen.len(), 4 * per_thread);
        // one process-wide random half
        let prefixes: HashSet<_> = seen.iter().map(|id| id[..19].to_owned()).collect();
        assert_eq!(prefixes.len(), 1);
    }
}
