//! Plumbing shared by the typed vendor clients ([`genesys`](crate::genesys)
//! and [`cxone`](crate::cxone)): the [`Transport`] they run over, body size
//! limits, vendor retry rules and the errors they share.
//!
//! ```
//! use tower_cx::classify::{Class, Classify};
//! use tower_cx::genesys::GenesysError;
//! use tower_cx::vendor::{BodyLimits, Rule, RetryRules};
//!
//! let limits = BodyLimits::default();
//! assert_eq!(limits.results, 16 * 1024 * 1024);
//! assert_eq!(limits.errors, 64 * 1024);
//!
//! // A data action whose remote endpoint answered 503: worth another attempt.
//! let body = br#"{"message":"remote failed","code":"bad.request","status":400,
//!     "details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],
//!     "errors":[{"message":"upstream","status":503}]}"#;
//! let error = GenesysError::from_body(http::StatusCode::BAD_REQUEST, &http::HeaderMap::new(), body);
//! let rules = RetryRules::genesys();
//! assert!(matches!(rules.classify_error(&error), Class::Retryable(_)));
//! // Made final by configuration:
//! let rules = rules.code("ACTION.REMOTE_ENDPOINT", Rule::Final);
//! assert!(matches!(rules.classify_error(&error), Class::Fatal(_)));
//! ```

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower::{Service, ServiceExt};

use crate::audit::{DeadLetter, DeadLetterSink};
use crate::body::{try_clone_request, Body};
use crate::classify::{classify_status, Class, Classify, FailureKind};
use crate::cxone::CxoneError;
use crate::error::BoxError;
use crate::genesys::GenesysError;
use crate::hint::{server_hint, SystemClock};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the typed clients run over: any cloneable, `Send + Sync` tower service taking
/// `Request<Body>` and returning `Response<B>` for some HTTP body `B`, such
/// as the stack's [`CxService`](crate::stack::CxService), a bare hyper-util
/// client, or your own `ServiceBuilder` stack. Implemented for every such
/// service; you never implement it yourself.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The response body type.
    type ResBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static;

    /// Send one request.
    fn send(&self, request: Request<Body>) -> BoxFuture<Result<Response<Self::ResBody>, BoxError>>;
}

impl<S, B> Transport for S
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type ResBody = B;

    fn send(&self, request: Request<Body>) -> BoxFuture<Result<Response<B>, BoxError>> {
        let service = self.clone();
        Box::pin(async move { service.oneshot(request).await.map_err(Into::into) })
    }
}

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

/// A response body was larger than the configured [`BodyLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: usize,
    status: StatusCode,
}

impl BodyTooLarge {
    /// The limit that was exceeded, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The status of the response whose body was too large.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body ({}) larger than the {} byte limit",
            self.status, self.limit
        )
    }
}

impl StdError for BodyTooLarge {}

/// A successful response whose body is not what the API documents (not
/// JSON, or missing a field).
#[derive(Debug)]
pub struct UnexpectedBody {
    what: &'static str,
    status: StatusCode,
    source: Option<serde_json::Error>,
    snippet: String,
}

impl UnexpectedBody {
    pub(crate) fn new(
        what: &'static str,
        status: StatusCode,
        body: &[u8],
        source: Option<serde_json::Error>,
    ) -> Self {
        Self {
            what,
            status,
            source,
            snippet: snippet(body),
        }
    }

    /// What the client expected (e.g. `"an analytics job id"`).
    pub fn expected(&self) -> &'static str {
        self.what
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The start of the body (at most 200 characters).
    pub fn snippet(&self) -> &str {
        &self.snippet
    }
}

impl fmt::Display for UnexpectedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected response body ({}): expected {}, got {:?}",
            self.status, self.what, self.snippet
        )
    }
}

impl StdError for UnexpectedBody {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The first 200 characters of a body, lossily decoded.
pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(800)])
        .chars()
        .take(200)
        .collect()
}

/// A URL the API handed back (a `nextUri`, a job's result link) that the
/// client refuses to follow, or a base URL it cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl {
    url: String,
    reason: &'static str,
}

impl InvalidUrl {
    pub(crate) fn new(url: &str, reason: &'static str) -> Self {
        Self {
            url: crate::audit::redact_uri(&url.parse().unwrap_or_default()),
            reason,
        }
    }

    /// Why it was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL {:?}: {}", self.url, self.reason)
    }
}

impl StdError for InvalidUrl {}

/// An argument the client refuses before sending anything (an empty or
/// path-breaking id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgument {
    name: &'static str,
    reason: &'static str,
}

impl InvalidArgument {
    /// The argument's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for InvalidArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.name, self.reason)
    }
}

impl StdError for InvalidArgument {}

/// Check an id that goes into a URL path: non-empty, at most 200
/// characters of `[A-Za-z0-9._~-]`.
pub(crate) fn check_id(name: &'static str, id: &str) -> Result<(), InvalidArgument> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > 200 {
        "longer than 200 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        || id == "."
        || id == ".."
    {
        "only letters, digits, '.', '_', '~' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(InvalidArgument { name, reason })
}

/// Resolve a link the API returned (absolute, or a path) against `base`,
/// refusing any other origin: the bearer token must not leave the API host.
pub(crate) fn resolve_link(base: &str, link: &str) -> Result<String, InvalidUrl> {
    if link.starts_with('/') && !link.starts_with("//") {
        return Ok(format!("{base}{link}"));
    }
    let same_origin = link
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
    if same_origin {
        Ok(link.to_owned())
    } else {
        Err(InvalidUrl::new(link, "not on the API host"))
    }
}

/// The builder methods both vendor clients share: the same fields with the
/// same meaning, documented once.
macro_rules! shared_client_settings {
    (rules: $rules:literal, jobs: $jobs:literal) => {
        /// Body size limits (default 16 MiB for results, 64 KiB for errors).
        pub fn limits(mut self, limits: $crate::vendor::BodyLimits) -> Self {
            self.core.limits = limits;
            self
        }

        #[doc = concat!(
                            "Which errors the client retries (default [`RetryRules::", $rules,
                            "`](crate::vendor::RetryRules::", $rules, "))."
                        )]
        pub fn retry_rules(mut self, rules: $crate::vendor::RetryRules) -> Self {
            self.core.rules = rules;
            self
        }

        /// The client's retry layer (default: 3 attempts, backoff from 1 s).
        /// Its classifier is replaced by the client's retry rules.
        pub fn retry(mut self, retry: $crate::retry::RetryLayer) -> Self {
            self.core.retry = retry;
            self
        }

        /// Look for business errors in 200 outputs (e.g. `{"success":
        /// false}`); they are classified by the same retry rules.
        pub fn business_rule(mut self, rule: $crate::genesys::BusinessRule) -> Self {
            self.core.business = Some(rule);
            self
        }

        /// Where calls and jobs that fail for good go, once per logical
        /// call after the client's retries, with a request that re-runs
        /// them. The client's requests carry
        /// [`DeadLettersHandled`](crate::audit::DeadLettersHandled), so an
        /// audit layer below that shares the sink does not letter each
        /// attempt again.
        pub fn dead_letters(mut self, sink: impl $crate::audit::DeadLetterSink) -> Self {
            self.core.dead_letters = Some(::std::sync::Arc::new(sink));
            self
        }

        #[doc = concat!("The runner that waits for ", $jobs, ".")]
        pub fn job_runner(mut self, runner: $crate::jobs::JobRunner) -> Self {
            self.core.runner = runner;
            self
        }
    };
}
pub(crate) use shared_client_settings;

/// Read a whole body, failing with [`BodyTooLarge`] past `limit` bytes.
pub(crate) async fn read_limited<B>(
    status: StatusCode,
    body: B,
    limit: usize,
) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyTooLarge { limit, status }.into())
        }
        Err(error) => Err(error),
    }
}

/// One read of a job's status by a vendor client.
pub(crate) enum StatusRead<S> {
    /// 429 or 503: poll again after the server's hint (if it gave one).
    Wait(Option<std::time::Duration>),
    /// The status document.
    Status(S),
}

/// How [`RetryRules`] treats an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Another attempt may succeed.
    Retry,
    /// Another attempt may succeed only if the remote endpoint (a data
    /// action's backend) failed with 5xx, 408 or 429.
    RetryOnRemoteFailure,
    /// Another attempt will not help.
    Final,
}

/// Which vendor errors are worth another attempt, by error code.
///
/// The codes of an error are its `code`, every `details[].errorCode` and the
/// codes of its nested `errors` (Genesys), or its code and
/// `icStatusDescription` (CXone); codes compare case-insensitively. A
/// [`Rule::Final`] on any code wins; otherwise any retry rule makes the
/// error retryable. An error no rule matches is retryable only when its
/// status is (408, 429, 5xx) and [`statuses`](Self::statuses) is on.
///
/// Status-level failures are the transport stack's job: the canonical
/// stack already retried 429s and 5xx (honouring `Retry-After`) before the
/// client sees them, so `statuses` is off by default and these rules retry
/// only what the body alone reveals (a data action's remote 503 inside a
/// 400, a business error inside a 200). Turn it on when the client runs
/// over a bare HTTP client.
///
/// It is the [`Classify`] of the clients' own
/// [`RetryLayer`](crate::retry::RetryLayer), which wraps a service that
/// turns vendor failures into typed errors: `classify_error` finds a
/// [`GenesysError`] or [`CxoneError`] in the error's source chain; any
/// other error (a timeout, a refused connection) is final there, since the
/// stack below already retried it. (In a transport-level retry layer, use
/// the default classifier instead.)
#[derive(Debug, Clone, Default)]
pub struct RetryRules {
    codes: HashMap<String, Rule>,
    statuses: bool,
    business: Option<Rule>,
}

impl RetryRules {
    /// No code rules at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Genesys Cloud defaults. Retry: `ACTION.REMOTE_ENDPOINT` when the
    /// remote endpoint failed with 5xx/408/429, `too.many.requests` (the data
    /// action engine's concurrency limit), `request.timeout`,
    /// `gateway.timeout`, `service.unavailable`. Final:
    /// `ACTION.AUTHENTICATION`, `ACTION.CERTIFICATE`, `ACTION.PROCESSING`.
    /// Anything else (validation errors, `not.found`, ...) is final unless
    /// [`statuses`](Self::statuses) retries its status.
    pub fn genesys() -> Self {
        Self::new()
            .code("ACTION.REMOTE_ENDPOINT", Rule::RetryOnRemoteFailure)
            .code("too.many.requests", Rule::Retry)
            .code("too.many.requests.retry.after", Rule::Retry)
            .code("request.timeout", Rule::Retry)
            .code("gateway.timeout", Rule::Retry)
            .code("service.unavailable", Rule::Retry)
            .code("ACTION.AUTHENTICATION", Rule::Final)
            .code("ACTION.CERTIFICATE", Rule::Final)
            .code("ACTION.PROCESSING", Rule::Final)
    }

    /// NICE CXone defaults: no code rules (CXone errors carry free text),
    /// so only what [`statuses`](Self::statuses) and [`code`](Self::code)
    /// add is retried.
    pub fn cxone() -> Self {
        Self::new()
    }

    /// Set the rule for `code` (replacing an earlier one).
    pub fn code(mut self, code: impl AsRef<str>, rule: Rule) -> Self {
        self.codes.insert(code.as_ref().to_ascii_lowercase(), rule);
        self
    }

    /// Retry errors no code rule matches when their status is 408, 429 or
    /// 5xx (default off: the stack below does that).
    pub fn statuses(mut self, enabled: bool) -> Self {
        self.statuses = enabled;
        self
    }

    /// The rule for business errors (a failure reported inside a 200) whose
    /// codes match no rule. Default: final.
    pub fn business(mut self, rule: Rule) -> Self {
        self.business = Some(rule);
        self
    }

    /// Classify by codes, status, remote status and business flag.
    fn decide<'a>(
        &self,
        status: StatusCode,
        codes: impl Iterator<Item = &'a str>,
        remote_failed: bool,
        business: bool,
    ) -> Class {
        let kind = FailureKind::Status(status);
        let mut retry = false;
        let mut matched = false;
        for code in codes {
            match self.codes.get(&code.to_ascii_lowercase()) {
                Some(Rule::Final) => return Class::Fatal(kind),
                Some(Rule::Retry) => {
                    matched = true;
                    retry = true;
                }
                Some(Rule::RetryOnRemoteFailure) => {
                    matched = true;
                    retry |= remote_failed;
                }
                None => {}
            }
        }
        if matched {
            return if retry {
                Class::Retryable(kind)
            } else {
                Class::Fatal(kind)
            };
        }
        if business {
            return match self.business {
                Some(Rule::Retry) | Some(Rule::RetryOnRemoteFailure) => Class::Retryable(kind),
                _ => Class::Fatal(kind),
            };
        }
        match classify_status(status) {
            Class::Retryable(kind) if self.statuses => Class::Retryable(kind),
            _ => Class::Fatal(kind),
        }
    }

    /// The class of a Genesys Cloud error.
    pub fn classify_genesys(&self, error: &GenesysError) -> Class {
        self.decide(
            error.status(),
            error.codes(),
            error.remote_failed(),
            error.is_business(),
        )
    }

    /// The class of a NICE CXone error.
    pub fn classify_cxone(&self, error: &CxoneError) -> Class {
        self.decide(error.status(), error.codes(), false, error.is_business())
    }
}

impl Classify for RetryRules {
    /// The default status table (in the clients, only decoded successes
    /// reach it: failures arrive as typed errors).
    fn classify_response(&self, status: StatusCode, _headers: &HeaderMap) -> Class {
        classify_status(status)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Class {
        if crate::error::OutcomeUnknown::find(error).is_some() {
            // a retry layer inside the transport gave up on an unknown outcome
            return Class::Fatal(FailureKind::OutcomeUnknown);
        }
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(genesys) = err.downcast_ref::<GenesysError>() {
                return self.classify_genesys(genesys);
            }
            if let Some(cxone) = err.downcast_ref::<CxoneError>() {
                return self.classify_cxone(cxone);
            }
            current = err.source();
        }
        Class::Fatal(FailureKind::Other)
    }

    fn error_retry_after(&self, error: &(dyn StdError + 'static)) -> Option<std::time::Duration> {
        if let Some(genesys) = crate::error::find::<GenesysError>(error) {
            return genesys.retry_after();
        }
        crate::error::find::<CxoneError>(error).and_then(CxoneError::retry_after)
    }
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
    business: Option<crate::genesys::BusinessRule>,
    failed: fn(StatusCode, &HeaderMap, &[u8]) -> E,
    business_error: fn(crate::genesys::BusinessFailure, serde_json::Value) -> E,
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
            let bytes = read_limited(parts.status, body, limit).await?;
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
    let vendor = match read_limited(parts.status, body, limits.errors).await {
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
    pub(crate) business: Option<crate::genesys::BusinessRule>,
    pub(crate) dead_letters: Option<Arc<dyn DeadLetterSink>>,
    pub(crate) runner: crate::jobs::JobRunner,
}

impl<T> ClientCore<T> {
    /// A client's defaults over `transport` for `base` (a trailing `/`
    /// dropped): default limits, 3 attempts with backoff from 1 s, no
    /// business rule, no dead letters, the default job runner.
    pub(crate) fn new(transport: T, base: &str, rules: RetryRules) -> Self {
        Self {
            transport,
            base: base.trim_end_matches('/').into(),
            limits: BodyLimits::default(),
            rules,
            retry: crate::retry::RetryLayer::new().max_attempts(3).backoff(
                crate::backoff::Backoff::exponential(std::time::Duration::from_secs(1)),
            ),
            business: None,
            dead_letters: None,
            runner: crate::jobs::JobRunner::new(),
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
            let _ = read_limited(parts.status, body, self.limits.errors).await;
            let hint = server_hint(&parts.headers, &SystemClock).hint;
            return Ok(StatusRead::Wait(hint.map(|h| h.delay)));
        }
        if !parts.status.is_success() {
            let bytes = read_limited(parts.status, body, self.limits.errors).await?;
            return Err(error(parts.status, &parts.headers, &bytes).into());
        }
        let bytes = read_limited(parts.status, body, self.limits.results).await?;
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
            request
                .extensions_mut()
                .insert(crate::audit::DeadLettersHandled);
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
            dead_letter(Some(sink), copy, counter.get(), error);
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

/// Hand a failed logical call to the dead-letter sink, with a replayable
/// copy of the request (no credentials: the client never adds any).
pub(crate) fn dead_letter(
    sink: Option<&Arc<dyn DeadLetterSink>>,
    request: Option<Request<Body>>,
    attempts: u32,
    error: &BoxError,
) {
    let Some(sink) = sink else { return };
    let (status, code) = error_status_and_code(error.as_ref());
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
fn error_status_and_code(error: &(dyn StdError + 'static)) -> (Option<u16>, String) {
    if let Some(unknown) = crate::error::OutcomeUnknown::find(error) {
        let (status, _) = vendor_status_and_code(error);
        let status = status.or(unknown.status().map(|s| s.as_u16()));
        return (status, "outcome_unknown".to_owned());
    }
    vendor_status_and_code(error)
}

fn vendor_status_and_code(error: &(dyn StdError + 'static)) -> (Option<u16>, String) {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(e) = err.downcast_ref::<GenesysError>() {
            let code = e
                .detail_codes()
                .next()
                .or(e.code())
                .unwrap_or("genesys_error")
                .to_owned();
            return (Some(e.status().as_u16()), code);
        }
        if let Some(e) = err.downcast_ref::<CxoneError>() {
            let code = e.codes().next().unwrap_or("cxone_error").to_owned();
            return (Some(e.status().as_u16()), code);
        }
        current = err.source();
    }
    (None, "error".to_owned())
}

/// Copy a request for a dead letter (body buffered, so always replayable).
pub(crate) fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let mut copy = try_clone_request(request)?;
    *copy.extensions_mut() = http::Extensions::new();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesys(status: u16, body: &str) -> GenesysError {
        GenesysError::from_body(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn remote_endpoint_is_retried_only_when_the_remote_failed() {
        let rules = RetryRules::genesys();
        let remote_503 = genesys(
            400,
            r#"{"code":"bad.request","status":400,"details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],"errors":[{"status":503}]}"#,
        );
        let remote_404 = genesys(
            400,
            r#"{"code":"x","status":400,"details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],"errors":[{"status":404}]}"#,
        );
        assert!(matches!(
            rules.classify_genesys(&remote_503),
            Class::Retryable(_)
        ));
        assert!(matches!(
            rules.classify_genesys(&remote_404),
            Class::Fatal(_)
        ));
        // a final rule on any code wins
        let rules = rules.code("bad.request", Rule::Final);
        assert!(matches!(
            rules.classify_genesys(&remote_503),
            Class::Fatal(_)
        ));
    }

    #[test]
    fn authentication_failures_are_final_and_unknown_codes_follow_statuses() {
        let rules = RetryRules::genesys();
        let auth = genesys(
            400,
            r#"{"status":400,"details":[{"errorCode":"ACTION.AUTHENTICATION"}]}"#,
        );
        assert!(matches!(rules.classify_genesys(&auth), Class::Fatal(_)));
        let unknown = genesys(503, r#"{"code":"weird","status":503}"#);
        assert!(matches!(rules.classify_genesys(&unknown), Class::Fatal(_)));
        assert!(matches!(
            rules.clone().statuses(true).classify_genesys(&unknown),
            Class::Retryable(_)
        ));
        // case-insensitive
        let rules = rules.code("WEIRD", Rule::Retry);
        assert!(matches!(
            rules.classify_genesys(&unknown),
            Class::Retryable(_)
        ));
    }

    #[test]
    fn other_errors_are_final_for_the_client_retry() {
        let err: BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(
            RetryRules::genesys().classify_error(err.as_ref()),
            Class::Fatal(FailureKind::Other)
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_typed_error() {
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 100]));
        let err = read_limited(StatusCode::OK, body, 99).await.unwrap_err();
        let too_large = err.downcast_ref::<BodyTooLarge>().unwrap();
        assert_eq!(too_large.limit(), 99);
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 100]));
        assert_eq!(
            read_limited(StatusCode::OK, body, 100).await.unwrap().len(),
            100
        );
    }
}
