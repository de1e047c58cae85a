//! Why no token could be had, and how token-endpoint text is cut and
//! shown without credentials.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use super::{BodyTooLarge, BoxError, InsecureUrl};

/// Why no token could be had.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TokenError {
    /// The token endpoint refused with an RFC 6749 §5.2 error body.
    Rejected {
        /// The HTTP status of the refusal.
        status: StatusCode,
        /// The `error` code (`invalid_client`, `invalid_grant`, ...).
        error: String,
        /// The `error_description`, if any (cut to 256 characters).
        description: Option<String>,
    },
    /// The token endpoint answered something that is not a token response.
    UnexpectedResponse {
        /// The HTTP status received.
        status: StatusCode,
        /// The `Content-Type` received, if any.
        content_type: Option<String>,
        /// What was wrong with it.
        detail: String,
    },
    /// The token is not a bearer token.
    UnsupportedTokenType {
        /// The `token_type` received.
        token_type: String,
    },
    /// The token response body was longer than the limit read (64 KiB).
    BodyTooLarge(BodyTooLarge),
    /// The token request failed before a response (after its retries).
    Transport(Arc<dyn StdError + Send + Sync>),
    /// The token URL would send credentials over plain HTTP.
    Insecure(InsecureUrl),
    /// The token URL is not an absolute URL.
    InvalidUrl {
        /// The URL given, without user info or query (which may hold
        /// credentials), cut to 256 characters; a string that does not
        /// parse as a URL at all is not shown.
        url: String,
    },
    /// The token source returned a token that had already expired on
    /// receipt (a zero lifetime, or a receipt time too far in the past).
    AlreadyExpired,
    /// No valid token is cached and the last refresh failed; `cause` says why.
    Unavailable {
        /// The error of the last refresh.
        cause: Box<TokenError>,
    },
}

impl TokenError {
    /// Whether retrying the same token request cannot help: the endpoint
    /// refused the credentials or the grant (`invalid_client`,
    /// `invalid_grant`, `unauthorized_client`, `invalid_scope`,
    /// `unsupported_grant_type`, `invalid_request`, or a `401` or `403`
    /// whatever its body, such as a proxy's HTML page), or the URL is
    /// insecure.
    pub fn is_final(&self) -> bool {
        match self {
            TokenError::Rejected { status, error, .. } => {
                matches!(status.as_u16(), 401 | 403)
                    || matches!(
                        error.as_str(),
                        "invalid_client"
                            | "invalid_grant"
                            | "unauthorized_client"
                            | "invalid_scope"
                            | "unsupported_grant_type"
                            | "invalid_request"
                    )
            }
            TokenError::UnexpectedResponse { status, .. } => {
                matches!(status.as_u16(), 401 | 403)
            }
            TokenError::Insecure(_)
            | TokenError::InvalidUrl { .. }
            | TokenError::UnsupportedTokenType { .. } => true,
            TokenError::Unavailable { cause } => cause.is_final(),
            _ => false,
        }
    }

    /// An [`InvalidUrl`](TokenError::InvalidUrl) error for `url`, shown
    /// without its user info or query (which may hold credentials) and cut
    /// to 256 characters; a string that is not a URL at all is not shown.
    ///
    /// ```
    /// use tower_cx::auth::TokenError;
    ///
    /// let err = TokenError::invalid_url("/oauth/token?client_secret=s3cr3t");
    /// assert!(matches!(err, TokenError::InvalidUrl { .. }));
    /// assert!(!err.to_string().contains("s3cr3t"));
    /// ```
    pub fn invalid_url(url: &str) -> Self {
        let url = match url.parse::<http::Uri>() {
            Ok(uri) => cut(&url_without_secrets(&uri)),
            Err(_) => "[not a URL, not shown]".to_owned(),
        };
        TokenError::InvalidUrl { url }
    }

    /// A [`Transport`](TokenError::Transport) error: the token request
    /// failed before a response. For a custom [`TokenSource`](crate::auth::TokenSource)
    /// whose own client failed. The error's text is shown by `Display`:
    /// keep credentials out of it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cx::auth::{source_fn, Token, TokenError, TokenSource};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let source = source_fn(|| async {
    ///     let connected = false;
    ///     if !connected {
    ///         return Err(TokenError::transport("connection refused"));
    ///     }
    ///     Ok(Token::new("tok", Duration::from_secs(3600)))
    /// });
    /// let err = source.fetch_token().await.unwrap_err();
    /// assert!(matches!(err, TokenError::Transport(_)));
    /// assert_eq!(err.to_string(), "token request failed: connection refused");
    /// # }
    /// ```
    pub fn transport(error: impl Into<BoxError>) -> Self {
        TokenError::Transport(Arc::from(error.into()))
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Rejected {
                status,
                error,
                description,
            } => {
                write!(f, "token request rejected ({status}): {error}")?;
                if let Some(description) = description {
                    write!(f, ": {description}")?;
                }
                Ok(())
            }
            TokenError::UnexpectedResponse {
                status,
                content_type,
                detail,
            } => write!(
                f,
                "unexpected token response ({status}, content type {}): {detail}",
                content_type.as_deref().unwrap_or("none")
            ),
            TokenError::UnsupportedTokenType { token_type } => {
                write!(f, "unsupported token type {token_type:?}: expected bearer")
            }
            TokenError::Transport(error) => write!(f, "token request failed: {error}"),
            TokenError::Insecure(error) => error.fmt(f),
            TokenError::BodyTooLarge(error) => write!(f, "token response refused: {error}"),
            TokenError::InvalidUrl { url } => write!(f, "invalid token URL {url:?}: not absolute"),
            TokenError::AlreadyExpired => {
                f.write_str("the token source returned a token that had already expired")
            }
            TokenError::Unavailable { cause } => {
                write!(f, "no valid access token: last refresh failed: {cause}")
            }
        }
    }
}

impl StdError for TokenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TokenError::Transport(error) => Some(error.as_ref()),
            TokenError::Insecure(error) => Some(error),
            TokenError::BodyTooLarge(error) => Some(error),
            TokenError::Unavailable { cause } => Some(cause.as_ref()),
            _ => None,
        }
    }
}

const MAX_TEXT: usize = 256;

/// `text` cut to 256 characters, as kept in errors.
pub(crate) fn cut(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// `uri` as it may be shown: scheme, host, port and path; no user info,
/// no query (either may carry credentials).
pub(crate) fn url_without_secrets(uri: &http::Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(host) = uri.host() {
        out.push_str(host);
    }
    if let Some(port) = uri.port_u16() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(uri.path());
    out
}
