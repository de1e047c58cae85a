//! Tokens, secrets, token errors, and the parsing of token responses.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

use super::scrub::Scrubber;
use crate::error::cut;

/// A secret string (client secret, access key secret, access token) whose
/// `Debug` and `Display` print a placeholder, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The secret value itself. Call it only where the value is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// An access token with its lifetime, as received.
#[derive(Clone)]
pub struct Token {
    access_token: Secret,
    lifetime: Duration,
    scope: Option<String>,
    received_at: Instant,
    notes: Vec<LifetimeNote>,
}

impl Token {
    /// A bearer token valid for `lifetime` from now.
    pub fn new(access_token: impl Into<Secret>, lifetime: Duration) -> Self {
        Self {
            access_token: access_token.into(),
            lifetime,
            scope: None,
            received_at: Instant::now(),
            notes: Vec::new(),
        }
    }

    /// Set the granted scope.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Set when the token was received (its lifetime counts from there, on
    /// the local monotonic clock).
    pub fn received_at(mut self, at: Instant) -> Self {
        self.received_at = at;
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &Secret {
        &self.access_token
    }

    /// How long the token is valid from [`receipt`](Self::receipt).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The granted scope, if the server said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// When the token was received, on the local monotonic clock.
    pub fn receipt(&self) -> Instant {
        self.received_at
    }

    /// Adjustments made to the lifetime the server announced.
    pub fn lifetime_notes(&self) -> &[LifetimeNote] {
        &self.notes
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("lifetime", &self.lifetime)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

pub use crate::observe::LifetimeNote;

/// How announced token lifetimes are sanitised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// Assumed when `expires_in` is missing. Default 300 s.
    pub default: Duration,
    /// Used for a zero, negative or non-numeric `expires_in`. A positive
    /// lifetime, however short, is taken as announced. Default 30 s.
    pub min: Duration,
    /// The longest lifetime accepted. Default 365 days.
    pub max: Duration,
}

impl Default for LifetimePolicy {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(300),
            min: Duration::from_secs(30),
            max: Duration::from_secs(365 * 86_400),
        }
    }
}

pub use crate::error::TokenError;

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    /// RFC 6749 says a space-separated string; some servers send an array.
    scope: Option<serde_json::Value>,
}

/// The granted scope as RFC 6749 writes it: a string as sent, an array of
/// strings joined by spaces; anything else is not kept (it is only
/// reported, never needed to use the token).
fn scope_text(scope: Option<serde_json::Value>) -> Option<String> {
    match scope? {
        serde_json::Value::String(scope) => Some(scope),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str())
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(" ")),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

/// Turn a token endpoint's answer into a [`Token`] or a typed error. Never
/// panics, whatever the bytes.
#[cfg(any(test, feature = "internals"))]
pub(crate) fn parse_token_response(
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    received_at: Instant,
    policy: &LifetimePolicy,
) -> Result<Token, TokenError> {
    parse_scrubbed(
        status,
        content_type,
        body,
        received_at,
        policy,
        &Scrubber::default(),
    )
}

/// [`parse_token_response`] with server text scrubbed by `scrub`.
pub(crate) fn parse_scrubbed(
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    received_at: Instant,
    policy: &LifetimePolicy,
    scrub: &Scrubber,
) -> Result<Token, TokenError> {
    let unexpected = |detail: &str| TokenError::UnexpectedResponse {
        status,
        content_type: content_type.map(|t| scrub.text(t)),
        detail: detail.to_owned(),
    };
    if !status.is_success() {
        return match serde_json::from_slice::<ErrorBody>(body) {
            Ok(err) => Err(TokenError::Rejected {
                status,
                error: scrub.text(&err.error),
                description: err.error_description.as_deref().map(|d| scrub.text(d)),
            }),
            Err(_) => Err(unexpected(&format!(
                "not an OAuth2 error body ({} bytes)",
                body.len()
            ))),
        };
    }
    let parsed: SuccessBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(_) => {
            // Some servers answer 200 with an RFC 6749 error body.
            if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
                return Err(TokenError::Rejected {
                    status,
                    error: scrub.text(&err.error),
                    description: err.error_description.as_deref().map(|d| scrub.text(d)),
                });
            }
            return Err(unexpected(&format!(
                "not a JSON token response ({} bytes)",
                body.len()
            )));
        }
    };
    let Some(access_token) = parsed.access_token.filter(|t| !t.is_empty()) else {
        return Err(unexpected("no access_token in the response"));
    };
    if let Some(token_type) = &parsed.token_type {
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::UnsupportedTokenType {
                token_type: scrub.text(token_type),
            });
        }
    }
    let (lifetime, note) = sanitise_lifetime(parsed.expires_in.as_ref(), policy);
    let mut token = Token::new(access_token, lifetime).received_at(received_at);
    token.scope = scope_text(parsed.scope);
    token.notes.extend(note);
    Ok(token)
}

fn sanitise_lifetime(
    expires_in: Option<&serde_json::Value>,
    policy: &LifetimePolicy,
) -> (Duration, Option<LifetimeNote>) {
    let seconds: Option<f64> = match expires_in {
        None | Some(serde_json::Value::Null) => {
            return (
                policy.default,
                Some(LifetimeNote::Missing {
                    assumed: policy.default,
                }),
            )
        }
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        // Some servers send the number as a string.
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let announced = expires_in.map(|v| cut(&v.to_string())).unwrap_or_default();
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => {
            let lifetime = Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
            // A short lifetime is taken as announced, never raised: using a
            // token longer than the server said would send it expired.
            if lifetime > policy.max {
                clamp(announced, policy.max)
            } else {
                (lifetime, None)
            }
        }
        // zero, negative, not a number
        _ => clamp(announced, policy.min),
    }
}

fn clamp(announced: String, used: Duration) -> (Duration, Option<LifetimeNote>) {
    (used, Some(LifetimeNote::Clamped { announced, used }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(status: u16, ct: Option<&str>, body: &str) -> Result<Token, TokenError> {
        parse_token_response(
            StatusCode::from_u16(status).unwrap(),
            ct,
            body.as_bytes(),
            Instant::now(),
            &LifetimePolicy::default(),
        )
    }

    #[tokio::test]
    async fn genesys_response() {
        let t = parse(
            200,
            Some("application/json"),
            r#"{"access_token":"abc","token_type":"bearer","expires_in":86399}"#,
        )
        .unwrap();
        assert_eq!(t.access_token().expose(), "abc");
        assert_eq!(t.lifetime(), Duration::from_secs(86399));
        assert!(t.lifetime_notes().is_empty());
    }

    #[tokio::test]
    async fn lifetimes_are_defaulted_and_clamped() {
        let t = parse(200, None, r#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.lifetime(), Duration::from_secs(300));
        assert_eq!(
            t.lifetime_notes(),
            [LifetimeNote::Missing {
                assumed: Duration::from_secs(300)
            }]
        );
        for (value, used) in [
            ("0", 30),
            ("-5", 30),
            ("1e30", 365 * 86_400),
            ("40000000", 365 * 86_400),
            ("\"soon\"", 30),
        ] {
            let body =
                format!(r#"{{"access_token":"a","token_type":"bearer","expires_in":{value}}}"#);
            let t = parse(200, None, &body).unwrap();
            assert_eq!(t.lifetime(), Duration::from_secs(used), "{value}");
            assert!(
                matches!(&t.lifetime_notes()[0], LifetimeNote::Clamped { used: u, .. } if *u == Duration::from_secs(used)),
                "{value}"
            );
        }
        let t = parse(200, None, r#"{"access_token":"a","expires_in":"3600"}"#).unwrap();
        assert_eq!(t.lifetime(), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn token_type_must_be_bearer() {
        let err = parse(200, None, r#"{"access_token":"a","token_type":"mac"}"#).unwrap_err();
        assert!(
            matches!(err, TokenError::UnsupportedTokenType { ref token_type } if token_type == "mac")
        );
        assert!(err.is_final());
    }

    #[tokio::test]
    async fn rfc6749_error_body() {
        let err = parse(
            401,
            Some("application/json"),
            r#"{"error":"invalid_client","error_description":"bad secret"}"#,
        )
        .unwrap_err();
        match &err {
            TokenError::Rejected {
                status,
                error,
                description,
            } => {
                assert_eq!(*status, StatusCode::UNAUTHORIZED);
                assert_eq!(error, "invalid_client");
                assert_eq!(description.as_deref(), Some("bad secret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.is_final());
        let err = parse(400, None, r#"{"error":"slow_down"}"#).unwrap_err();
        assert!(!err.is_final());
        // a 401 or 403 is final whatever the code says
        let err = parse(401, None, r#"{"error":"temporarily_unavailable"}"#).unwrap_err();
        assert!(err.is_final());
        let err = parse(403, None, r#"{"error":"server_error"}"#).unwrap_err();
        assert!(err.is_final());
    }

    #[tokio::test]
    async fn html_and_garbage_say_what_was_received() {
        let err = parse(502, Some("text/html"), "<html>Bad Gateway</html>").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("502") && text.contains("text/html"), "{text}");
        let err = parse(200, Some("text/html"), "<html>login</html>").unwrap_err();
        assert!(matches!(err, TokenError::UnexpectedResponse { .. }));
        let err = parse(200, None, r#"{"token_type":"bearer"}"#).unwrap_err();
        assert!(err.to_string().contains("no access_token"), "{err}");
    }

    #[tokio::test]
    async fn a_401_or_403_is_final_whatever_its_body_and_a_502_is_not() {
        for (status, final_) in [(401, true), (403, true), (502, false), (500, false)] {
            let err = parse(status, Some("text/html"), "<html>no</html>").unwrap_err();
            assert!(matches!(err, TokenError::UnexpectedResponse { .. }));
            assert_eq!(err.is_final(), final_, "{status}");
        }
    }

    #[tokio::test]
    async fn a_scope_sent_as_an_array_is_kept_space_separated() {
        let t = parse(
            200,
            None,
            r#"{"access_token":"a","scope":["read","write"]}"#,
        )
        .unwrap();
        assert_eq!(t.scope(), Some("read write"));
        let t = parse(200, None, r#"{"access_token":"a","scope":"read write"}"#).unwrap();
        assert_eq!(t.scope(), Some("read write"));
        let t = parse(200, None, r#"{"access_token":"a","scope":{"odd":1}}"#).unwrap();
        assert_eq!((t.access_token().expose(), t.scope()), ("a", None));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
        let t = Token::new("tok-123", Duration::from_secs(1));
        assert!(!format!("{t:?}").contains("tok-123"));
    }

    #[tokio::test]
    async fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..256))| {
            let _ = parse_token_response(
                StatusCode::from_u16(status).unwrap(),
                Some("application/json"),
                &body,
                Instant::now(),
                &LifetimePolicy::default(),
            );
        });
    }
}
