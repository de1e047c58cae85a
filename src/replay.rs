//! The 401 replay: one protocol between the bearer and a retry layer above
//! it, documented here, where it lives.
//!
//! A `401` means the server refused the request's token before acting on
//! the request, so sending it once more with a fresh token is safe whatever
//! its method. It is sent once more, never twice, and copied once:
//!
//! - **A bearer alone** ([`BearerLayer`](crate::auth::BearerLayer)) keeps a
//!   copy of each request whose body can be replayed. On a `401` it drops
//!   the token (and tells its token source), fetches a fresh one and sends
//!   the copy once.
//! - **Under a retry layer** ([`RetryLayer`](crate::retry::RetryLayer),
//!   with [`replay_rejected_token`](crate::retry::RetryLayer::replay_rejected_token),
//!   on by default), the retry layer keeps a copy of each request anyway. It
//!   marks the request [`ReplayedAbove`]; a bearer that sees the mark keeps
//!   no copy of its own and does not replay: it drops the token and returns
//!   the `401` marked [`TokenRejected`]. The retry layer then sends its copy
//!   once more at once, using neither an attempt nor its budget, and not
//!   again for the same logical request.
//! - The mark travels in the request's
//!   [`RequestContext`] when it has one (an
//!   audit layer outside), else as the [`ReplayedAbove`] extension, put only
//!   into extensions the request already has: making a map for the mark
//!   alone would cost more than the copy it saves. Without either, the
//!   bearer replays itself, and a `401` to its replay comes back unmarked,
//!   so the retry layer does not send it a third time.
//!
//! - [`Stack`](crate::stack::Stack), which composes both layers itself,
//!   says it once when it builds: its bearer is built with
//!   [`replay_on_401(false)`](crate::auth::BearerLayer::replay_on_401)
//!   while its retry layer replays rejected tokens, so its requests need no
//!   mark.
//!
//! Every composition gets one replay: `Stack`, a `ServiceBuilder` or a
//! hand-made stack. It gets one copy when the request carries the mark
//! (or in `Stack`); two when it cannot, for a bearer that cannot know
//! (in a hand-made stack, `replay_on_401(false)` on a bearer under a retry
//! layer saves its copy as `Stack` does). A layer of your own that replays
//! requests can take part the same way.
//!
//! ```
//! use tower_cx::replay::{self, ReplayedAbove, TokenRejected};
//!
//! // a layer above that will replay a rejected token marks the request
//! // (a request with no context and no extensions cannot carry the mark:
//! // the bearer then replays by itself)
//! let mut request = http::Request::new(());
//! assert!(!replay::mark(&mut request));
//! request.extensions_mut().insert(ReplayedAbove);
//! assert!(replay::is_marked(&request));
//!
//! // the bearer marks a 401 whose token it dropped without replaying
//! let mut response = http::Response::new(());
//! response.extensions_mut().insert(TokenRejected);
//! assert!(response.extensions().get::<TokenRejected>().is_some());
//! ```

use http::Request;

use crate::observe::RequestContext;

/// Mark `request`: a layer above the bearer (yours) keeps a copy and will
/// replay it after a rejected token. Returns whether the mark was made: in
/// the request's [`RequestContext`] if it has one, else as
/// [`ReplayedAbove`] into extensions it already has; not otherwise.
pub fn mark<B>(request: &mut Request<B>) -> bool {
    let context = request.extensions().get::<RequestContext>().cloned();
    mark_with(request, context.as_ref())
}

/// Whether a layer above marked `request` ([`mark`]).
pub fn is_marked<B>(request: &Request<B>) -> bool {
    let context = request.extensions().get::<RequestContext>();
    is_marked_with(request, context)
}

/// [`mark`], for a layer that holds the request's context already.
pub(crate) fn mark_with<B>(request: &mut Request<B>, context: Option<&RequestContext>) -> bool {
    if let Some(context) = context {
        context.mark_replayed_above();
        return true;
    }
    if request.extensions().is_empty() {
        return false;
    }
    request.extensions_mut().insert(ReplayedAbove);
    true
}

/// [`is_marked`], for a layer that holds the request's context already.
pub(crate) fn is_marked_with<B>(request: &Request<B>, context: Option<&RequestContext>) -> bool {
    context.is_some_and(RequestContext::replayed_above)
        || request.extensions().get::<ReplayedAbove>().is_some()
}

/// Request extension: a layer above the bearer keeps a replayable copy of
/// this request and sends it once more when the answer comes back marked
/// [`TokenRejected`]. A bearer that finds it keeps no copy and does not
/// replay the request itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayedAbove;

/// Response extension: the bearer dropped the token this `401` rejected and
/// did not send the request again itself; a layer above may send it once
/// more, with a fresh token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenRejected;
