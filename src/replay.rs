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
//! - The retry layer puts the mark only into extensions the request already
//!   has (an audit layer's record, say): making a map for the mark alone
//!   would cost more than the copy it saves. Without it the bearer replays
//!   itself, and a `401` to its replay comes back unmarked, so the retry
//!   layer does not send it a third time.
//!
//! No composition needs a special case: `Stack`, a `ServiceBuilder` or a
//! hand-made stack all get one replay, and one copy whenever the request
//! carries extensions (`Stack` always has an audit layer). A layer of your
//! own that replays requests can take part the same way.
//!
//! ```
//! use tower_cx::replay::{ReplayedAbove, TokenRejected};
//!
//! // a layer above that will replay a rejected token marks the request
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(ReplayedAbove);
//!
//! // the bearer marks a 401 whose token it dropped without replaying
//! let mut response = http::Response::new(());
//! response.extensions_mut().insert(TokenRejected);
//! assert!(response.extensions().get::<TokenRejected>().is_some());
//! ```

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
