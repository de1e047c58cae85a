use tower::Layer;

use super::{Bearer, TokenCache};

/// Applies [`Bearer`] to a service: every request gets
/// `Authorization: Bearer ...` from the shared [`TokenCache`].
#[derive(Debug, Clone)]
pub struct BearerLayer {
    cache: TokenCache,
    replay_on_401: bool,
}

impl BearerLayer {
    /// A bearer layer over `cache`.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            cache,
            replay_on_401: true,
        }
    }

    /// On a 401, refresh the token and send the request once more (default
    /// on). Replaying needs a copy of each request made before it is sent;
    /// turn this off to save that copy when a 401 should simply be returned.
    pub fn replay_on_401(mut self, enabled: bool) -> Self {
        self.replay_on_401 = enabled;
        self
    }

    /// The token cache (a handle: inspect it, force a refresh).
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bearer::new(inner, self.cache.clone()).replay_on_401(self.replay_on_401)
    }
}
