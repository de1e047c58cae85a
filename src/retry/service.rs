use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tokio::time::Instant;
use tower::Service;

use super::config::Config;
use super::future::{ResponseFuture, Shared};
use super::policy::Attempts;
use super::safety::{new_idempotency_key, Safety, IDEMPOTENCY_KEY};
use super::template::Template;
use super::{RetryLayer, RetryOverride};
use crate::body::ReplayBody;
use crate::error::BoxError;
use crate::observe::RequestContext;
use crate::{deadline, replay};

/// Retries requests that fail in a retryable way, honouring server hints.
///
/// See the [module docs](crate::retry) for the rules.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared<S>>,
}

impl<S> Retry<S> {
    /// Wrap `inner` with the default retry policy.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Config::default())
    }

    /// A [`RetryLayer`] with the default policy, to configure.
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
    }

    pub(crate) fn from_config(inner: S, config: Config) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably. First attempts go to it; later
    /// attempts go to a clone of it taken at the first call (kept once for
    /// this service and its clones), as clones of a tower service are
    /// expected to behave alike.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayBody,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let config = &self.shared.config;
        // the context stays on the first attempt, where the observing layer
        // put it; the copy kept for retries leaves it out when it is the
        // map's only entry (a copy of the map would cost more than putting
        // it back on a retry)
        let audit = request.extensions().get::<RequestContext>().cloned();
        // an audit layer just above read the clock a moment ago
        let now = audit
            .as_ref()
            .map_or_else(Instant::now, RequestContext::started);
        config.budget.deposit(now);

        // (boxed: most requests have none, and the future stays small)
        let overrides = request
            .extensions()
            .get::<RetryOverride>()
            .map(|o| Box::new(o.clone()));
        let overrides_ref = overrides.as_deref();
        if config.auto_idempotency_key
            && matches!(*request.method(), Method::POST | Method::PATCH)
            && !request.headers().contains_key(IDEMPOTENCY_KEY)
        {
            let key = new_idempotency_key();
            // a dead letter of the request must carry the same key
            if let Some(context) = &audit {
                context.keep_header(IDEMPOTENCY_KEY, key.clone());
            }
            request.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }

        // a copy is kept for a retry, or for a replay after a rejected token
        let replays_possible = config.replay_rejected_token
            || overrides_ref
                .and_then(RetryOverride::attempts)
                .unwrap_or(config.max_attempts)
                > 1;
        // the 401 replay (`crate::replay`): a bearer below leaves it to us
        // when it finds the mark
        let mark_replay =
            config.replay_rejected_token && replay::mark_with(&mut request, audit.as_ref());
        let template = if replays_possible {
            let only_context = audit.is_some() && request.extensions().len() == 1;
            Template::of(&request, !only_context)
        } else {
            None
        };
        // the side-effect rule, read from the copy at the first failure;
        // here only when there is no copy
        let safety = template
            .is_none()
            .then(|| Safety::of(config, overrides_ref, &request));
        let mut attempts = Attempts::new(
            overrides,
            safety,
            template.is_some(),
            now,
            audit,
            mark_replay,
        );
        attempts.attempt_started(config, now);
        // (no tag: the first attempt is the request itself, which carries
        // the context, and the replay mark if it has extensions to hold it)

        // Call the service that was driven to readiness; a retry takes a
        // clone of the spare, so a request that succeeds at once clones no
        // service
        self.shared.keep(&self.inner);
        // a layer below that would hold the request back (a limiter's
        // queue) holds it no later than the deadline (`crate::deadline`)
        let (started, within) = attempts.first_deadline(config);
        let _deadline = deadline::enter(started, within);
        let future = self.inner.call(request);
        ResponseFuture::new(future, self.shared.clone(), template, attempts)
    }
}
