use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use super::cache::{Issued, Rejection};
use super::{TokenCache, TokenError};
use crate::body::{try_clone_request, ReplayBody};
use crate::error::BoxError;
use crate::observe::AuthEvent;
use crate::observe::RequestContext;
use crate::replay::TokenRejected;

type Acquire = Pin<Box<dyn Future<Output = Result<Issued, TokenError>> + Send>>;

/// What the bearer does with a 401 to a request it sent with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On401 {
    /// Drop the token, get a fresh one and send the request once more
    /// (when its body can be sent again).
    Replay,
    /// Drop the token and return the 401 marked [`TokenRejected`].
    Mark,
}

/// A request with the service to send it through: the copy kept for a
/// replay, or a request waiting for its first token.
///
/// Boxed, and made only when needed (a replay of our own, or no cached
/// token): the future of a request sent with a cached token and no copy
/// stays the size of the upstream's future plus three words, cheap to move
/// and to drop. The replay path already allocates for its copy.
pub(crate) struct Pending<S, B> {
    pub(crate) service: S,
    pub(crate) request: Request<B>,
}

impl<S, B> Pending<S, B> {
    pub(crate) fn boxed(service: S, request: Request<B>) -> Box<Self> {
        Box::new(Self { service, request })
    }
}

pin_project! {
    /// Response future of [`Bearer`](super::Bearer).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
        audit: Option<RequestContext>,
        // The first send's answer was returned; its state is dropped with
        // the future (see `poll`).
        answered: bool,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<S, B, F> {
        // Waiting for a token (no valid one was cached) before the first send.
        Acquiring {
            acquire: Acquire,
            since: Option<Instant>,
            cache: TokenCache,
            pending: Box<Pending<S, B>>,
            on_401: On401,
        },
        // The first send is in flight; `replay` is the copy for a replay of
        // our own (`None`: a 401 is returned marked `TokenRejected`).
        Sent {
            #[pin]
            future: F,
            cache: TokenCache,
            token_id: u64,
            replay: Option<Box<Pending<S, B>>>,
        },
        // A 401 dropped the token: waiting for a fresh one to replay.
        Reacquiring {
            acquire: Acquire,
            since: Option<Instant>,
            pending: Box<Pending<S, B>>,
        },
        // Waiting for the inner service to be ready for the replay.
        Replaying { pending: Box<Pending<S, B>> },
        // A replay, or a request sent without a token: its response is the
        // answer, a 401 included.
        Final { #[pin] future: F },
        // Failed before sending.
        Failed { error: BoxError },
        // The output was returned.
        Done,
    }
}

fn acquire(cache: &TokenCache) -> Acquire {
    let cache = cache.clone();
    Box::pin(async move { cache.token().await })
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// The first send is in flight with a cached token (and a copy for a
    /// replay of our own, if `replay`).
    pub(crate) fn sent(
        future: S::Future,
        cache: TokenCache,
        token_id: u64,
        replay: Option<Box<Pending<S, B>>>,
        audit: Option<RequestContext>,
    ) -> Self {
        Self {
            state: State::Sent {
                future,
                cache,
                token_id,
                replay,
            },
            audit,
            answered: false,
        }
    }

    /// No valid token is cached: `pending` is sent once one is issued.
    pub(crate) fn acquiring(
        pending: Box<Pending<S, B>>,
        cache: TokenCache,
        on_401: On401,
        audit: Option<RequestContext>,
    ) -> Self {
        Self {
            state: State::Acquiring {
                acquire: acquire(&cache),
                since: audit.as_ref().map(|_| Instant::now()),
                cache,
                pending,
                on_401,
            },
            audit,
            answered: false,
        }
    }

    /// Sent without a token: the response, a 401 included, is the answer.
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Final { future },
            audit: None,
            answered: false,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error },
            audit: None,
            answered: false,
        }
    }
}

/// Tell the audit record how getting a token went.
fn audit_token(
    audit: Option<&RequestContext>,
    since: Option<Instant>,
    result: &Result<Issued, TokenError>,
) {
    let Some(audit) = audit else {
        return;
    };
    match (result, since) {
        (Ok(_), Some(since)) => audit.publish(
            None,
            AuthEvent::TokenAwaited {
                wait: since.elapsed(),
            }
            .into(),
        ),
        (Ok(_), None) => {}
        (Err(error), _) => audit.publish(
            None,
            AuthEvent::TokenAwaitFailed {
                error: error.clone(),
            }
            .into(),
        ),
    }
}

const AFTER_COMPLETION: &str = "bearer future polled after completion";

type Output<ResB> = Result<Response<ResB>, BoxError>;

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: ReplayBody,
{
    type Output = Output<ResB>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if *this.answered {
            return Poll::Ready(Err(AFTER_COMPLETION.into()));
        }
        let audit = this.audit.as_ref();
        loop {
            // The hot path, kept small here: the answer to a request sent
            // with a token. A 401 and every other state are handled out of
            // line.
            if let StateProj::Sent { future, .. } = this.state.as_mut().project() {
                match ready!(future.poll(cx)) {
                    Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                        if let Some(output) = rejected(this.state.as_mut(), audit, response) {
                            return Poll::Ready(output);
                        }
                    }
                    other => {
                        // The state is left for the future's drop: dropping
                        // it here, between taking the response and returning
                        // it, would move the response twice more.
                        *this.answered = true;
                        return Poll::Ready(other.map_err(Into::into));
                    }
                }
            }
            if let Some(output) = ready!(poll_other(this.state.as_mut(), audit, cx)) {
                return Poll::Ready(output);
            }
        }
    }
}

/// A 401 answered the first send: drop the token and end with the 401, or
/// move on to a replay (`None`).
#[cold]
fn rejected<S, B, ResB>(
    mut state: Pin<&mut State<S, B, S::Future>>,
    audit: Option<&RequestContext>,
    mut response: Response<ResB>,
) -> Option<Output<ResB>>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    let StateOwned::Sent {
        cache,
        token_id,
        replay,
        ..
    } = state.as_mut().project_replace(State::Done)
    else {
        unreachable!("the state was Sent")
    };
    if cache.invalidate(token_id, StatusCode::UNAUTHORIZED) == Rejection::Kept {
        // within the rejection cooldown: the 401 is the answer (a replay
        // would carry the same token)
        return Some(Ok(response));
    }
    let invalidated = || {
        if let Some(audit) = audit {
            let status = StatusCode::UNAUTHORIZED;
            audit.publish(None, AuthEvent::TokenInvalidated { status }.into());
        }
    };
    match replay {
        None => {
            // no replay of our own: the 401 is the answer, marked so that
            // a layer above may replay it
            response.extensions_mut().insert(TokenRejected);
            invalidated();
            Some(Ok(response))
        }
        Some(pending) => {
            cache.emit(AuthEvent::RequestReplayed);
            invalidated();
            state.set(State::Reacquiring {
                acquire: acquire(&cache),
                since: audit.map(|_| Instant::now()),
                pending,
            });
            None
        }
    }
}

/// Every state but `Sent`: `Ready(None)` once the request is sent with a
/// token (the state is then `Sent`).
#[inline(never)]
fn poll_other<S, B, ResB>(
    mut state: Pin<&mut State<S, B, S::Future>>,
    audit: Option<&RequestContext>,
    cx: &mut Context<'_>,
) -> Poll<Option<Output<ResB>>>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: ReplayBody,
{
    loop {
        match state.as_mut().project() {
            StateProj::Sent { .. } => return Poll::Ready(None),
            StateProj::Done => return Poll::Ready(Some(Err(AFTER_COMPLETION.into()))),
            StateProj::Failed { .. } => {
                let StateOwned::Failed { error } = state.as_mut().project_replace(State::Done)
                else {
                    unreachable!("the state was Failed")
                };
                return Poll::Ready(Some(Err(error)));
            }
            StateProj::Acquiring { acquire, since, .. } => {
                let result = ready!(acquire.as_mut().poll(cx));
                audit_token(audit, since.take(), &result);
                let StateOwned::Acquiring {
                    cache,
                    mut pending,
                    on_401,
                    ..
                } = state.as_mut().project_replace(State::Done)
                else {
                    unreachable!("the state was Acquiring")
                };
                let token = match result {
                    Ok(token) => token,
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                };
                // keep a copy for a replay, in the box the request waited in
                let template = match on_401 {
                    On401::Replay => try_clone_request(&pending.request),
                    On401::Mark => None,
                };
                let (future, replay) = match template {
                    Some(template) => {
                        let mut request = std::mem::replace(&mut pending.request, template);
                        request.headers_mut().insert(AUTHORIZATION, token.header);
                        (pending.service.call(request), Some(pending))
                    }
                    None => {
                        let Pending {
                            mut service,
                            mut request,
                        } = *pending;
                        request.headers_mut().insert(AUTHORIZATION, token.header);
                        (service.call(request), None)
                    }
                };
                state.set(State::Sent {
                    future,
                    cache,
                    token_id: token.id,
                    replay,
                });
                return Poll::Ready(None);
            }
            StateProj::Reacquiring { acquire, since, .. } => {
                let result = ready!(acquire.as_mut().poll(cx));
                audit_token(audit, since.take(), &result);
                let StateOwned::Reacquiring { mut pending, .. } =
                    state.as_mut().project_replace(State::Done)
                else {
                    unreachable!("the state was Reacquiring")
                };
                let token = match result {
                    Ok(token) => token,
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                };
                pending
                    .request
                    .headers_mut()
                    .insert(AUTHORIZATION, token.header);
                // a replay needs the service ready again
                state.set(State::Replaying { pending });
            }
            StateProj::Replaying { pending } => {
                if let Err(error) = ready!(pending.service.poll_ready(cx)) {
                    state.set(State::Done);
                    return Poll::Ready(Some(Err(error.into())));
                }
                let StateOwned::Replaying { pending } = state.as_mut().project_replace(State::Done)
                else {
                    unreachable!("the state was Replaying")
                };
                let Pending {
                    mut service,
                    request,
                } = *pending;
                let future = service.call(request);
                state.set(State::Final { future });
            }
            StateProj::Final { future } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                state.set(State::Done);
                return Poll::Ready(Some(result));
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Sent { .. } => "sent",
            State::Reacquiring { .. } => "reacquiring",
            State::Replaying { .. } => "replaying",
            State::Final { .. } => "final",
            State::Failed { .. } => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::pin::pin;
    use std::time::Duration;

    use http::{Request, Response};
    use tower::{service_fn, Layer, Service, ServiceExt};

    use crate::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
    use crate::body::Body;
    use crate::error::BoxError;

    async fn polled_twice(layer: BearerLayer) -> (bool, String) {
        let api = service_fn(|_: Request<Body>| async { Ok::<_, BoxError>(Response::new(())) });
        let mut bearer = layer.layer(api);
        let request = Request::get("https://api.example.com/v2/users")
            .body(Body::empty())
            .unwrap();
        let mut future = pin!(bearer.ready().await.unwrap().call(request));
        let first = poll_fn(|cx| future.as_mut().poll(cx)).await;
        let second = poll_fn(|cx| future.as_mut().poll(cx)).await;
        (first.is_ok(), second.unwrap_err().to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn polled_again_after_its_answer_it_returns_an_error() {
        let cache = TokenCache::new(source_fn(|| async {
            Ok::<_, TokenError>(Token::new("t", Duration::from_secs(3600)))
        }));
        let after = "bearer future polled after completion".to_owned();
        // no token cached yet: waits for one, then sends
        let layer = BearerLayer::new(cache.clone());
        assert_eq!(polled_twice(layer.clone()).await, (true, after.clone()));
        // sent at once with the cached token
        assert_eq!(polled_twice(layer).await, (true, after.clone()));
        // another origin: sent without a token
        let elsewhere = BearerLayer::new(cache)
            .allow_origin("https://login.example.com")
            .unwrap();
        assert_eq!(polled_twice(elsewhere).await, (true, after));
    }
}
