use std::sync::Arc;

use tower::Layer;

use super::{Bearer, TokenCache};
use crate::error::ConfigError;
use crate::origin::Origin;

/// Applies [`Bearer`] to a service: every request gets
/// `Authorization: Bearer ...` from the shared [`TokenCache`].
#[derive(Debug, Clone)]
pub struct BearerLayer {
    cache: TokenCache,
    replay_on_401: bool,
    origins: Arc<[Origin]>,
}

impl BearerLayer {
    /// A bearer layer over `cache`.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            cache,
            replay_on_401: true,
            origins: Arc::from([]),
        }
    }

    /// Attach the token only to requests for this origin (and any others
    /// allowed the same way): `scheme://host[:port]`, a path is ignored.
    /// Requests to other origins, and relative URIs (which name no
    /// origin), pass through untouched, without a token.
    /// Fails with [`ConfigError`] (setting `origin`) for a URL that is not
    /// absolute.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_cx::auth::{source_fn, BearerLayer, Token, TokenCache, TokenError};
    ///
    /// # fn main() -> Result<(), tower_cx::error::ConfigError> {
    /// let cache = TokenCache::new(source_fn(|| async {
    ///     Ok::<_, TokenError>(Token::new("tok", Duration::from_secs(3600)))
    /// }));
    /// let layer = BearerLayer::new(cache).allow_origin("https://api.mypurecloud.ie")?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn allow_origin(mut self, url: &str) -> Result<Self, ConfigError> {
        let origin = Origin::parse(url)?;
        let mut origins = self.origins.to_vec();
        origins.push(origin);
        self.origins = origins.into();
        Ok(self)
    }

    /// On a 401, refresh the token and send the request once more (default
    /// on). Replaying needs a copy of each request made before it is sent;
    /// turn this off to save that copy when a 401 should simply be returned.
    /// A request marked ([`replay::mark`](crate::replay::mark)) (a
    /// retry layer above does) is never replayed here, whatever this says.
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
        let mut bearer = Bearer::new(inner, self.cache.clone()).replay_on_401(self.replay_on_401);
        bearer.origins = self.origins.clone();
        bearer
    }
}
