//! Where tokens come from: the [`TokenSource`] trait and OAuth2
//! client credentials.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::scrub::{url_without_secrets, Scrubber};
use super::token::{parse_scrubbed, LifetimePolicy, Secret, Token, TokenError};
use crate::backoff::Backoff;
use crate::body::Body;
use crate::error::{BodyTooLarge, BoxError, InsecureUrl};
use crate::retry::{RetryBudget, RetryLayer, RetryOverride};
use crate::transport::hyper_client;
use crate::transport::Transport;

/// The future a [`TokenSource`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'static>>;

/// Fetches a new access token.
pub trait TokenSource: Send + Sync + 'static {
    /// Fetch a new token. The cache calls this at most once at a time.
    fn fetch_token(&self) -> TokenFuture;

    /// The API refused `token` (a 401): a source that keeps tokens (a
    /// shared store, a cache of its own) forgets exactly that token, so
    /// that the next [`fetch_token`](Self::fetch_token) never hands it back.
    /// The [`TokenCache`](super::TokenCache) calls this before the refresh
    /// a 401 starts. The default does nothing (a source that fetches a new
    /// token each time has nothing to forget).
    fn invalidate(&self, token: &Secret) {
        let _ = token;
    }
}

/// A [`TokenSource`] from a closure returning a future. Made by [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    f: F,
}

/// Use a closure as a [`TokenSource`].
///
/// ```
/// use std::time::Duration;
/// use tower_cx::auth::{source_fn, Token, TokenError};
///
/// let source = source_fn(|| async { Ok::<_, TokenError>(Token::new("t", Duration::from_secs(60))) });
/// # let _ = source;
/// ```
pub fn source_fn<F, Fut>(f: F) -> SourceFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    SourceFn { f }
}

impl<F, Fut> TokenSource for SourceFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    fn fetch_token(&self) -> TokenFuture {
        Box::pin((self.f)())
    }
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFn").finish_non_exhaustive()
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (the default,
    /// and what Genesys Cloud and NICE CXone expect).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// The HTTP client a token source sends its requests with: any service
/// taking a request with this crate's [`Body`], boxed, returning the body
/// collected.
pub type TokenHttpClient = BoxCloneSyncService<Request<Body>, Response<Bytes>, BoxError>;

/// The largest token response body read (bigger is a typed error).
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// The token endpoint of NICE CXone (found by discovery at
/// `/.well-known/openid-configuration`).
pub const CXONE_TOKEN_URL: &str = "https://cxone.niceincontact.com/auth/token";

/// OAuth2 client credentials (RFC 6749 §4.4) against any token URL, plus the
/// Genesys Cloud and NICE CXone flavours.
///
/// The token request goes through its own retry layer: 429 and 5xx are
/// retried with `Retry-After` and backoff (3 attempts, 20 s deadline by
/// default); RFC 6749 errors such as `invalid_client` are final.
///
/// ```
/// use tower_cx::auth::ClientCredentials;
///
/// let genesys = ClientCredentials::new(
///     "https://login.mypurecloud.com/oauth/token",
///     "my-client-id",
///     "my-client-secret",
/// )
/// .unwrap()
/// .scope("analytics");
///
/// // Plain HTTP is refused unless the host is loopback.
/// assert!(ClientCredentials::new("http://login.example.com/token", "id", "secret").is_err());
/// # let _ = genesys;
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    token_url: Uri,
    client_id: String,
    client_secret: Secret,
    auth: ClientAuth,
    grant_type: String,
    scopes: Vec<String>,
    params: Vec<(String, Secret)>,
    lifetime: LifetimePolicy,
    client: TokenHttpClient,
    retry: RetryLayer,
    timeout: Duration,
}

impl ClientCredentials {
    /// Client credentials for `token_url`. Fails with
    /// [`TokenError::Insecure`] for `http://` to a non-loopback host, and
    /// with [`TokenError::InvalidUrl`] for a URL that is not absolute.
    pub fn new(
        token_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        let token_url: Uri = token_url
            .parse()
            .map_err(|_| TokenError::invalid_url(token_url))?;
        if token_url.scheme().is_none() || token_url.host().is_none() {
            return Err(TokenError::invalid_url(&token_url.to_string()));
        }
        InsecureUrl::check(&token_url).map_err(TokenError::Insecure)?;
        Ok(Self {
            token_url,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            auth: ClientAuth::Basic,
            grant_type: "client_credentials".into(),
            scopes: Vec::new(),
            params: Vec::new(),
            lifetime: LifetimePolicy::default(),
            client: default_client(),
            retry: RetryLayer::new()
                .max_attempts(3)
                .deadline(Duration::from_secs(20))
                .backoff(Backoff::exponential(Duration::from_millis(500)))
                .budget(RetryBudget::unlimited()),
            timeout: Duration::from_secs(10),
        })
    }

    /// Genesys Cloud: `https://login.{region}/oauth/token`, Basic client
    /// authentication, `grant_type=client_credentials`.
    pub fn genesys(
        region: &crate::genesys::Region,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        Self::new(&region.token_url(), client_id, client_secret)
    }

    /// NICE CXone access-key flavour: Basic client authentication plus
    /// `grant_type=password&username={access_key_id}&password={access_key_secret}`
    /// against `token_url` (usually [`CXONE_TOKEN_URL`], or the one discovery
    /// returns).
    pub fn cxone(
        token_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<Secret>,
    ) -> Result<Self, TokenError> {
        let mut source = Self::new(token_url, client_id, client_secret)?;
        source.grant_type = "password".into();
        source
            .params
            .push(("username".into(), Secret::new(access_key_id.into())));
        source
            .params
            .push(("password".into(), access_key_secret.into()));
        Ok(source)
    }

    /// How the client authenticates (Basic by default).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Ask for a scope (repeat for several; sent space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// The scopes asked for.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Add a form parameter to the token request. Its value is treated as a
    /// secret: never printed.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// How announced lifetimes are sanitised (missing, zero, absurd).
    pub fn lifetime_policy(mut self, policy: LifetimePolicy) -> Self {
        self.lifetime = policy;
        self
    }

    /// The retry layer the token request goes through.
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// Send token requests with `client` (a proxy, custom TLS, or a test
    /// double). By default a hyper-util client is used that speaks HTTPS
    /// with the `tls` feature (on by default), plain HTTP only without it.
    pub fn http_client(mut self, client: impl Transport) -> Self {
        self.client = box_client(client);
        self
    }

    /// The timeout of each token request attempt (default 10 s): a token
    /// endpoint that accepts the connection and never answers costs this
    /// long per attempt, then the retry policy decides.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The token URL.
    pub fn token_url(&self) -> &Uri {
        &self.token_url
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn request(&self) -> Result<Request<Body>, TokenError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", &self.grant_type);
        if !self.scopes.is_empty() {
            form.append_pair("scope", &self.scopes.join(" "));
        }
        for (name, value) in &self.params {
            form.append_pair(name, value.expose());
        }
        if self.auth == ClientAuth::Post {
            form.append_pair("client_id", &self.client_id);
            form.append_pair("client_secret", self.client_secret.expose());
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Body::from(form.finish()))
            .map_err(TokenError::transport)?;
        if self.auth == ClientAuth::Basic {
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                self.client_id,
                self.client_secret.expose()
            ));
            let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(TokenError::transport)?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        // A token request is safe to repeat: at worst two tokens are issued.
        request
            .extensions_mut()
            .insert(RetryOverride::new().idempotent(true));
        Ok(request)
    }
}

impl TokenSource for ClientCredentials {
    fn fetch_token(&self) -> TokenFuture {
        let request = self.request();
        let client = self.client.clone();
        // Boxed so the future below names no generic bounds (which trips the
        // compiler's `Send` inference for async blocks).
        let client = tower::timeout::TimeoutLayer::new(self.timeout).layer(client);
        let client: TokenHttpClient = BoxCloneSyncService::new(self.retry.layer(client));
        let policy = self.lifetime;
        let scrub = self.scrubber();
        Box::pin(async move {
            let response = client.oneshot(request?).await.map_err(|error| {
                match error.downcast::<BodyTooLarge>() {
                    Ok(too_large) => TokenError::BodyTooLarge(*too_large),
                    Err(error) => {
                        // an error of the caller's own client might quote
                        // what it sent: kept only scrubbed
                        let text = crate::error::chain(error.as_ref()).to_string();
                        if scrub.finds(&text) {
                            TokenError::transport(scrub.text(&text))
                        } else {
                            TokenError::transport(error)
                        }
                    }
                }
            })?;
            let received_at = Instant::now();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            parse_scrubbed(
                response.status(),
                content_type.as_deref(),
                response.body(),
                received_at,
                &policy,
                &scrub,
            )
        })
    }
}

impl ClientCredentials {
    /// What no server text may carry into an error: the client secret, its
    /// Basic form (`base64(id:secret)`, and so the whole header value), and
    /// every form parameter's value (such as CXone's access key secret).
    fn scrubber(&self) -> Scrubber {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.client_id,
            self.client_secret.expose()
        ));
        let mut secrets = vec![self.client_secret.expose(), basic.as_str()];
        secrets.extend(self.params.iter().map(|(_, value)| value.expose()));
        Scrubber::new(secrets)
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &url_without_secrets(&self.token_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth", &self.auth)
            .field("grant_type", &self.grant_type)
            .field("scopes", &self.scopes)
            .field(
                "params",
                &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The built-in client: HTTPS (rustls, Mozilla roots) and plain HTTP (for
/// loopback) with the `tls` feature; plain HTTP only without it.
pub(crate) fn default_client() -> TokenHttpClient {
    box_client(hyper_client())
}

/// Box `client` as a [`TokenHttpClient`], collecting (at most 64 KiB of)
/// each response body: a longer body fails with
/// [`BodyTooLarge`](crate::error::BodyTooLarge).
pub fn box_client(client: impl Transport) -> TokenHttpClient {
    crate::transport::buffered(client, MAX_TOKEN_BODY)
}
