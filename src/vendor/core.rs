//! What every typed client holds and its one way to send: [`ClientCore`],
//! the [`Decode`] service its retry layer wraps, JSON requests, and dead
//! letters.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower::{Service, ServiceExt};

use super::checks::resolve_link;
use super::rules::ErrorType;
use super::{BusinessFailure, BusinessRule, RetryRules, UnexpectedBody, VendorError};
use crate::body::{try_clone_request, Body};
use crate::dead_letter::{DeadLetter, DeadLetterSink, DeadLettersHandled};
use crate::error::BoxError;
use crate::hint::{server_hint, SystemClock};
use crate::transport::{collect_limited, BoxFuture, Transport};

/// Size limits for the response bodies the clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest successful body (a page, an action's output, a job's result
    /// file). Default 16 MiB.
    pub results: usize,
    /// Largest error body read to build a typed error. Default 64 KiB.
    pub errors: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            results: 16 * 1024 * 1024,
            errors: 64 * 1024,
        }
    }
}

/// One read of a job's status by a vendor client.
pub(crate) enum StatusRead<S> {
    /// 429 or 503: poll again after the server's hint (if it gave one).
    Wait(Option<std::time::Duration>),
    /// The status document.
    Status(S),
}

/// Counts the attempts of one logical call, across the client's retries.
#[derive(Clone, Default)]
pub(crate) struct AttemptCounter(pub(crate) Arc<AtomicU32>);

impl AttemptCounter {
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A decoder turns a vendor response into `Ok(body)` or a typed error.
pub(crate) type Decoder =
    Arc<dyn Fn(StatusCode, &HeaderMap, Bytes) -> Result<Bytes, BoxError> + Send + Sync>;

/// A decoder for one vendor: an error status becomes `failed(..)`, a 200
/// that `business` flags becomes `business_error(..)`, anything else passes.
pub(crate) fn decoder<E>(
    business: Option<BusinessRule>,
    failed: fn(StatusCode, &HeaderMap, &[u8]) -> E,
    business_error: fn(BusinessFailure, serde_json::Value) -> E,
) -> Decoder
where
    E: Into<BoxError> + 'static,
{
    Arc::new(move |status, headers, bytes: Bytes| {
        if !status.is_success() {
            return Err(failed(status, headers, &bytes).into());
        }
        if let Some(rule) = &business {
            if let Ok(output) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if let Some(failure) = rule.check(&output) {
                    return Err(business_error(failure, output).into());
                }
            }
        }
        Ok(bytes)
    })
}

/// The service the client's retry layer wraps: sends through the transport,
/// reads the body within the limits, decodes vendor errors.
#[derive(Clone)]
pub(crate) struct Decode<T> {
    pub(crate) transport: T,
    pub(crate) limits: BodyLimits,
    pub(crate) decoder: Decoder,
}

impl<T> Service<Request<Body>> for Decode<T>
where
    T: Transport,
{
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<Bytes>, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(counter) = request.extensions().get::<AttemptCounter>() {
            counter.0.fetch_add(1, Ordering::Relaxed);
        }
        let sending = self.transport.send(request);
        let limits = self.limits;
        let decoder = self.decoder.clone();
        Box::pin(async move {
            let response = match sending.await {
                Ok(response) => response,
                Err(error) => {
                    return Err(vendor_unknown::<T::ResBody>(error, limits, &decoder).await)
                }
            };
            let (parts, body) = response.into_parts();
            let limit = if parts.status.is_success() {
                limits.results
            } else {
                limits.errors
            };
            let bytes = collect_limited(parts.status, body, limit).await?;
            let decoded = decoder(parts.status, &parts.headers, bytes)?;
            Ok(Response::from_parts(parts, decoded))
        })
    }
}

/// An [`OutcomeUnknown`](crate::error::OutcomeUnknown) from a retry layer
/// inside the transport keeps the vendor's answer unread: read it into the
/// vendor's typed error, kept as the unknown outcome's source, so that
/// nothing the vendor said is lost. Any other error passes through.
async fn vendor_unknown<B>(error: BoxError, limits: BodyLimits, decoder: &Decoder) -> BoxError
where
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    let unknown = match error.downcast::<crate::error::OutcomeUnknown>() {
        Ok(unknown) => unknown,
        Err(other) => return other,
    };
    let Some(response) = unknown.take_response::<B>() else {
        return unknown;
    };
    let (parts, body) = response.into_parts();
    let vendor = match collect_limited(parts.status, body, limits.errors).await {
        Ok(bytes) => match decoder(parts.status, &parts.headers, bytes) {
            Err(vendor) => vendor,
            Ok(_) => return unknown,
        },
        Err(read) => read,
    };
    Box::new((*unknown).with_source(vendor))
}

/// What every typed vendor client holds, and its one way to send: the
/// transport, the API base URL, body limits, retry layer and rules, the
/// business rule, the dead-letter sink and the job runner. The clients'
/// shared settings ([`shared_client_settings`]) write these fields.
#[derive(Clone)]
pub(crate) struct ClientCore<T> {
    pub(crate) transport: T,
    pub(crate) base: Arc<str>,
    pub(crate) limits: BodyLimits,
    pub(crate) rules: RetryRules,
    pub(crate) retry: crate::retry::RetryLayer,
    pub(crate) business: Option<BusinessRule>,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterSink>>,
    pub(crate) runner: crate::jobs::JobRunner,
    /// The client's own vendor error type, read by any rules it is given.
    pub(crate) vendor_error: ErrorType,
}

impl<T> ClientCore<T> {
    /// A client's defaults over `transport` for `base` (a trailing `/`
    /// dropped), whose vendor errors are `E`: default limits, 3 attempts
    /// with backoff from 1 s, no business rule, no dead letters, the
    /// default job runner.
    pub(crate) fn new<E: VendorError>(transport: T, base: &str, rules: RetryRules) -> Self {
        let vendor_error = ErrorType::of::<E>();
        Self {
            transport,
            base: base.trim_end_matches('/').into(),
            limits: BodyLimits::default(),
            rules: rules.with_error_type(vendor_error),
            retry: crate::retry::RetryLayer::new().max_attempts(3).backoff(
                crate::backoff::Backoff::exponential(std::time::Duration::from_secs(1)),
            ),
            business: None,
            dead_letters: None,
            runner: crate::jobs::JobRunner::new(),
            vendor_error,
        }
    }

    /// Classify by `rules`, which read the client's own vendor errors too.
    pub(crate) fn set_rules(&mut self, rules: RetryRules) {
        self.rules = rules.with_error_type(self.vendor_error);
    }

    /// Hand a failed logical call to the dead-letter sink, if one is
    /// configured, with a replayable copy of the request.
    pub(crate) fn dead_letter(
        &self,
        request: Option<Request<Body>>,
        attempts: u32,
        error: &BoxError,
    ) {
        if let Some(sink) = &self.dead_letters {
            dead_letter(sink, &self.rules, request, attempts, error);
        }
    }

    /// `path` on the API base URL.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The settings a client's `Debug` shows (never the transport).
    pub(crate) fn debug_fields(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("base", &self.base)
            .field("limits", &self.limits)
            .field("rules", &self.rules)
            .field("business", &self.business)
            .field("dead_letters", &self.dead_letters.is_some())
            .field("runner", &self.runner);
    }
}

impl<T: Transport> ClientCore<T> {
    /// GET a job's status at `url`, sent once (the job runner paces the
    /// reads): a 429 or 503 is a wait with the server's hint; a success is
    /// parsed as `S` (`what` names it in the error if it cannot be); any
    /// other answer is the vendor's typed error, made by `error`.
    pub(crate) async fn read_job_status<S, E>(
        &self,
        url: String,
        what: &'static str,
        error: fn(StatusCode, &HeaderMap, &[u8]) -> E,
    ) -> Result<StatusRead<S>, BoxError>
    where
        S: serde::de::DeserializeOwned,
        E: Into<BoxError>,
    {
        let request = json_request(http::Method::GET, url, None)?;
        let response = self.transport.send(request).await?;
        let (parts, body) = response.into_parts();
        if matches!(parts.status.as_u16(), 429 | 503) {
            // drain what fits, so that the connection can be reused
            let _ = collect_limited(parts.status, body, self.limits.errors).await;
            let hint = server_hint(&parts.headers, &SystemClock).hint;
            return Ok(StatusRead::Wait(hint.map(|h| h.delay)));
        }
        if !parts.status.is_success() {
            let bytes = collect_limited(parts.status, body, self.limits.errors).await?;
            return Err(error(parts.status, &parts.headers, &bytes).into());
        }
        let bytes = collect_limited(parts.status, body, self.limits.results).await?;
        let status = serde_json::from_slice(&bytes)
            .map_err(|e| UnexpectedBody::new(what, parts.status, &bytes, Some(e)))?;
        Ok(StatusRead::Status(status))
    }

    /// One logical call: the client's retry layer, classified by its
    /// rules, over [`Decode`] with `decoder`; a final failure is
    /// dead-lettered when `letter` is set and a sink is configured.
    pub(crate) async fn call(
        &self,
        mut request: Request<Body>,
        decoder: Decoder,
        letter: bool,
    ) -> Result<Response<Bytes>, BoxError> {
        use tower::Layer;
        let dead_letters = self.dead_letters.as_ref().filter(|_| letter);
        let counter = AttemptCounter::default();
        request.extensions_mut().insert(counter.clone());
        let copy = dead_letters.and_then(|_| copy_request(&request));
        if dead_letters.is_some() {
            request.extensions_mut().insert(DeadLettersHandled);
        }
        let decode = Decode {
            transport: self.transport.clone(),
            limits: self.limits,
            decoder,
        };
        let service = self
            .retry
            .clone()
            .classifier(self.rules.clone())
            .layer(decode);
        let result = service.oneshot(request).await;
        if let (Err(error), Some(sink)) = (&result, dead_letters) {
            dead_letter(sink, &self.rules, copy, counter.get(), error);
        }
        result
    }
}

/// A JSON request; POSTs get a content type and a fresh idempotency key.
pub(crate) fn json_request(
    method: http::Method,
    url: String,
    body: Option<Vec<u8>>,
) -> Result<Request<Body>, BoxError> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(url)
        .header(http::header::ACCEPT, "application/json");
    if method == http::Method::POST {
        builder = builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                crate::retry::IDEMPOTENCY_KEY,
                crate::retry::new_idempotency_key(),
            );
    }
    Ok(builder.body(body.map(Body::from).unwrap_or_else(Body::empty))?)
}

/// A dead letter's request, checked to target `base`, with a content type
/// and an idempotency key (kept if it has one).
pub(crate) fn check_replay(
    base: &str,
    mut request: Request<Body>,
) -> Result<Request<Body>, BoxError> {
    resolve_link(base, &request.uri().to_string())?;
    request
        .headers_mut()
        .entry(http::header::CONTENT_TYPE)
        .or_insert(http::HeaderValue::from_static("application/json"));
    if !request
        .headers()
        .contains_key(crate::retry::IDEMPOTENCY_KEY)
    {
        request.headers_mut().insert(
            crate::retry::IDEMPOTENCY_KEY,
            crate::retry::new_idempotency_key(),
        );
    }
    Ok(request)
}

/// Parse a decoded JSON body.
pub(crate) fn parse<O: serde::de::DeserializeOwned>(
    response: Response<Bytes>,
    what: &'static str,
) -> Result<O, BoxError> {
    let status = response.status();
    let body = response.into_body();
    serde_json::from_slice(&body)
        .map_err(|e| UnexpectedBody::new(what, status, &body, Some(e)).into())
}

/// Hand a failed logical call to `sink`, with a replayable copy of the
/// request (no credentials: the client never adds any); `rules` find the
/// vendor's error in it.
fn dead_letter(
    sink: &Arc<dyn DeadLetterSink>,
    rules: &RetryRules,
    request: Option<Request<Body>>,
    attempts: u32,
    error: &BoxError,
) {
    let (status, code) = error_status_and_code(rules, error.as_ref());
    let correlation_id = request
        .as_ref()
        .and_then(|r| r.headers().get(crate::retry::IDEMPOTENCY_KEY))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    sink.dead_letter(DeadLetter {
        correlation_id,
        attempts,
        last_status: status,
        error_code: code,
        message: error.to_string(),
        request,
    });
}

/// A dead letter's last status and code. An unknown outcome is coded
/// `outcome_unknown` whatever the vendor said, so that an operator checks
/// whether it was applied before replaying it.
fn error_status_and_code(
    rules: &RetryRules,
    error: &(dyn StdError + 'static),
) -> (Option<u16>, String) {
    let vendor = rules.find(error);
    let status = vendor.map(|e| e.status().as_u16());
    if let Some(unknown) = crate::error::OutcomeUnknown::find(error) {
        let status = status.or(unknown.status().map(|s| s.as_u16()));
        return (status, "outcome_unknown".to_owned());
    }
    match vendor {
        Some(vendor) => (status, vendor.dead_letter_code().to_owned()),
        None => (None, "error".to_owned()),
    }
}

/// Copy a request for a dead letter (body buffered, so always replayable).
pub(crate) fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let mut copy = try_clone_request(request)?;
    *copy.extensions_mut() = http::Extensions::new();
    Some(copy)
}
