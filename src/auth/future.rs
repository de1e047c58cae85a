use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;

use super::cache::{AuthEvent, Issued, Rejection};
use super::{TokenCache, TokenError, TokenRejected};
use crate::audit::{ms, AuditRecord, EventKind as AuditKind};
use crate::body::{try_clone_request, ReplayBody};
use crate::error::BoxError;
use tokio::time::Instant;

type Acquire = Pin<Box<dyn Future<Output = Result<Issued, TokenError>> + Send>>;

pin_project! {
    /// Response future of [`Bearer`](super::Bearer).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        service: Option<S>,
        cache: Option<TokenCache>,
        // the request still to send (waiting for a token), or the copy kept
        // for a replay after a 401
        request: Option<Request<B>>,
        replay_on_401: bool,
        replayed: bool,
        token_id: u64,
        audit: Option<AuditRecord>,
        acquiring_since: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Waiting for a token (no valid one was cached).
        Acquiring { acquire: Acquire },
        // Waiting for the inner service to be ready for the replay.
        Ready,
        // The request is in flight.
        Called { #[pin] future: F },
        // Failed before sending.
        Failed { error: Option<BoxError> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(
        future: S::Future,
        service: Option<S>,
        cache: TokenCache,
        template: Option<Request<B>>,
        token_id: u64,
        audit: Option<AuditRecord>,
    ) -> Self {
        Self {
            state: State::Called { future },
            service,
            cache: Some(cache),
            request: template,
            replay_on_401: true,
            replayed: false,
            token_id,
            audit,
            acquiring_since: None,
        }
    }

    pub(crate) fn acquiring(
        service: S,
        cache: TokenCache,
        request: Request<B>,
        replay_on_401: bool,
        audit: Option<AuditRecord>,
    ) -> Self {
        let acquire = {
            let cache = cache.clone();
            Box::pin(async move { cache.token().await }) as Acquire
        };
        Self {
            state: State::Acquiring { acquire },
            service: Some(service),
            cache: Some(cache),
            request: Some(request),
            replay_on_401,
            // the first send happens from this state: not a replay
            replayed: false,
            token_id: 0,
            acquiring_since: audit.as_ref().map(|_| Instant::now()),
            audit,
        }
    }

    /// Sent without a token: the response, a 401 included, is the answer.
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
            service: None,
            cache: None,
            request: None,
            replay_on_401: false,
            replayed: true,
            token_id: 0,
            audit: None,
            acquiring_since: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            service: None,
            cache: None,
            request: None,
            replay_on_401: false,
            replayed: false,
            token_id: 0,
            audit: None,
            acquiring_since: None,
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: ReplayBody,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "polled after completion".into());
                    return Poll::Ready(Err(error));
                }
                StateProj::Acquiring { acquire } => {
                    let token = match ready!(acquire.as_mut().poll(cx)) {
                        Ok(token) => {
                            if let (Some(audit), Some(since)) =
                                (this.audit.as_ref(), this.acquiring_since.take())
                            {
                                audit.publish(
                                    None,
                                    AuditKind::TokenRefreshed {
                                        wait_ms: ms(since.elapsed()),
                                    },
                                );
                            }
                            token
                        }
                        Err(error) => {
                            if let Some(audit) = this.audit.as_ref() {
                                audit.publish(
                                    None,
                                    AuditKind::TokenRefreshFailed {
                                        error: error.to_string(),
                                    },
                                );
                            }
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let Some(mut request) = this.request.take() else {
                        return Poll::Ready(Err("bearer future polled after completion".into()));
                    };
                    // keep a copy for a replay, unless this already is one
                    if *this.replay_on_401 && !*this.replayed {
                        *this.request = try_clone_request(&request);
                    }
                    request.headers_mut().insert(AUTHORIZATION, token.header);
                    *this.token_id = token.id;
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err("bearer future polled after completion".into()));
                    };
                    if *this.replayed {
                        // a replay needs the service ready again
                        *this.request = Some(request);
                        this.state.set(State::Ready);
                    } else {
                        let future = service.call(request);
                        this.state.set(State::Called { future });
                    }
                }
                StateProj::Ready => {
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err("bearer future polled after completion".into()));
                    };
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(Err("bearer future polled after completion".into()));
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() != StatusCode::UNAUTHORIZED || *this.replayed {
                        return Poll::Ready(Ok(response));
                    }
                    let (Some(cache), Some(_), Some(_)) = (
                        this.cache.as_ref(),
                        this.request.as_ref(),
                        this.service.as_ref(),
                    ) else {
                        // no replay of our own: the 401 is the answer, marked
                        // so that a layer above may replay it (unless the
                        // token was kept: a replay would carry it again)
                        if let Some(cache) = this.cache.as_ref() {
                            let rejection =
                                cache.invalidate(*this.token_id, StatusCode::UNAUTHORIZED);
                            if rejection == Rejection::Kept {
                                return Poll::Ready(Ok(response));
                            }
                            response.extensions_mut().insert(TokenRejected);
                        }
                        if let Some(audit) = this.audit.as_ref() {
                            audit.publish(None, AuditKind::TokenInvalidated { status: 401 });
                        }
                        return Poll::Ready(Ok(response));
                    };
                    if cache.invalidate(*this.token_id, StatusCode::UNAUTHORIZED) == Rejection::Kept
                    {
                        // within the rejection cooldown: the 401 is the answer
                        return Poll::Ready(Ok(response));
                    }
                    cache.emit(AuthEvent::RequestReplayed);
                    if let Some(audit) = this.audit.as_ref() {
                        audit.publish(None, AuditKind::TokenInvalidated { status: 401 });
                        *this.acquiring_since = Some(Instant::now());
                    }
                    *this.replayed = true;
                    let acquire = {
                        let cache = cache.clone();
                        Box::pin(async move { cache.token().await }) as Acquire
                    };
                    this.state.set(State::Acquiring { acquire });
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}
