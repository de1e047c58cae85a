//! Finding a CXone tenant: the issuers (commercial, FedRAMP, sovereign),
//! the tenant's claims in its access token, and discovery.

#![allow(
    clippy::manual_async_fn,
    reason = "the calls return `impl Future + Send`: an `async fn` over a boxed transport is not provably `Send` at the caller (its error type's lifetime is erased there)"
)]

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

use base64::Engine as _;
use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::error::CxoneError;
use crate::error::{BoxError, InsecureUrl};
use crate::transport::collect_limited;
use crate::vendor::{check_id, json_request, BodyLimits, InvalidUrl, Transport, UnexpectedBody};

/// Where a CXone tenant lives, from discovery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Discovery {
    /// The area (`na1`, `eu1`, ...).
    pub area: String,
    /// The API endpoint (`https://api-na1.niceincontact.com`).
    pub api_endpoint: String,
    /// The OAuth token endpoint (from the OpenID configuration).
    #[serde(default)]
    pub token_endpoint: String,
}

/// The commercial CXone discovery host.
pub const CXONE_ISSUER: &str = "https://cxone.niceincontact.com";

/// A CXone authentication issuer: the host that serves discovery and
/// tokens for a family of tenants.
///
/// ```
/// use tower_cx::cxone::Issuer;
///
/// assert_eq!(Issuer::FedRamp.url(), "https://cxone-gov.niceincontact.com");
/// assert_eq!("sov-eu".parse::<Issuer>().unwrap(), Issuer::SovereignEu);
/// assert_eq!(Issuer::all().count(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Issuer {
    /// The commercial cloud, `cxone.niceincontact.com`.
    Commercial,
    /// FedRAMP (US government), `cxone-gov.niceincontact.com`.
    FedRamp,
    /// The Australian sovereign cloud, `cxone.nicecxone-sov1.au`.
    SovereignAu,
    /// The EU sovereign cloud, `cxone.nicecxone-sov1.eu`.
    SovereignEu,
    /// The UK sovereign cloud, `cxone.nicecxone-sov1.uk`.
    SovereignUk,
}

const ISSUERS: &[(Issuer, &str, &str)] = &[
    (Issuer::Commercial, "commercial", CXONE_ISSUER),
    (
        Issuer::FedRamp,
        "fedramp",
        "https://cxone-gov.niceincontact.com",
    ),
    (
        Issuer::SovereignAu,
        "sov-au",
        "https://cxone.nicecxone-sov1.au",
    ),
    (
        Issuer::SovereignEu,
        "sov-eu",
        "https://cxone.nicecxone-sov1.eu",
    ),
    (
        Issuer::SovereignUk,
        "sov-uk",
        "https://cxone.nicecxone-sov1.uk",
    ),
];

impl Issuer {
    /// Every issuer.
    pub fn all() -> impl Iterator<Item = Issuer> {
        ISSUERS.iter().map(|(issuer, _, _)| *issuer)
    }

    fn row(self) -> &'static (Issuer, &'static str, &'static str) {
        ISSUERS
            .iter()
            .find(|(issuer, _, _)| *issuer == self)
            .expect("every issuer has a row")
    }

    /// The issuer's base URL, for [`discover`].
    pub fn url(self) -> &'static str {
        self.row().2
    }

    /// Its short name (`commercial`, `fedramp`, `sov-au`, `sov-eu`, `sov-uk`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The token URL: `{url}/auth/token`.
    pub fn token_url(self) -> String {
        format!("{}/auth/token", self.url())
    }
}

impl FromStr for Issuer {
    type Err = InvalidUrl;

    /// A short name, or the issuer's URL or host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().trim_end_matches('/').to_ascii_lowercase();
        ISSUERS
            .iter()
            .find(|(_, name, url)| {
                *name == wanted || *url == wanted || url.trim_start_matches("https://") == wanted
            })
            .map(|(issuer, _, _)| *issuer)
            .ok_or_else(|| InvalidUrl::new(s, "not a known CXone issuer"))
    }
}

/// What a CXone access token says about its tenant (its JWT claims, read
/// without verifying the signature: the token came from the token
/// endpoint over TLS, and is only read, never trusted for access).
///
/// ```
/// use base64::Engine as _;
/// use tower_cx::cxone::TokenClaims;
///
/// let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
/// let token = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#),
///     b64(r#"{"tenantId":"11eb-42","area":"eu1","sub":"user"}"#));
/// let claims = TokenClaims::from_access_token(&token).unwrap();
/// assert_eq!(claims.tenant_id, "11eb-42");
/// assert_eq!(claims.area.as_deref(), Some("eu1"));
/// assert!(TokenClaims::from_access_token("opaque").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenClaims {
    /// The `tenantId` claim.
    pub tenant_id: String,
    /// The `area` claim, when present.
    pub area: Option<String>,
}

/// An access token whose claims cannot be read (not a JWT, or no tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableToken {
    reason: &'static str,
}

impl UnreadableToken {
    /// Why.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for UnreadableToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read the CXone access token's claims: {}",
            self.reason
        )
    }
}

impl StdError for UnreadableToken {}

impl TokenClaims {
    /// Read the claims of a JWT access token (never shown in errors).
    pub fn from_access_token(token: &str) -> Result<Self, UnreadableToken> {
        let fail = |reason| UnreadableToken { reason };
        let payload = token.split('.').nth(1).ok_or(fail("not a JWT"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| fail("the payload is not base64url"))?;
        let claims: Value =
            serde_json::from_slice(&bytes).map_err(|_| fail("the payload is not JSON"))?;
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| claims.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let tenant_id = text(&["tenantId", "tenant_id"]).ok_or(fail("no tenantId claim"))?;
        check_id("tenant id", &tenant_id).map_err(|_| fail("the tenantId is not an id"))?;
        Ok(Self {
            tenant_id,
            area: text(&["area"]),
        })
    }
}

/// Discover a tenant: `GET {issuer}/.well-known/openid-configuration` for
/// the token endpoint and `GET {issuer}/.well-known/cxone-configuration?tenantId=`
/// for the area and API endpoint. `issuer` is a URL such as
/// [`Issuer::url`]. `transport` needs no token (use a stack without the
/// bearer layer, e.g. `Stack::new().build()`). The endpoints must be HTTPS
/// (or loopback HTTP): [`InsecureUrl`] otherwise.
pub fn discover<'a, T>(
    transport: &'a T,
    issuer: &'a str,
    tenant_id: &'a str,
) -> impl Future<Output = Result<Discovery, BoxError>> + Send + 'a
where
    T: Transport,
{
    async move {
        check_id("tenant id", tenant_id)?;
        let issuer = issuer.trim_end_matches('/');
        let get = |url: String| async move {
            let response = transport
                .send(json_request(Method::GET, url, None)?)
                .await?;
            let (parts, body) = response.into_parts();
            let limits = BodyLimits::default();
            if !parts.status.is_success() {
                let bytes = collect_limited(parts.status, body, limits.errors).await?;
                return Err(CxoneError::from_response(parts.status, &parts.headers, &bytes).into());
            }
            let bytes = collect_limited(parts.status, body, limits.errors).await?;
            Ok::<_, BoxError>((parts.status, bytes))
        };
        let (status, bytes) = get(format!("{issuer}/.well-known/openid-configuration")).await?;
        let openid: Value = serde_json::from_slice(&bytes)
            .map_err(|e| UnexpectedBody::new("an OpenID configuration", status, &bytes, Some(e)))?;
        let (status, bytes) = get(format!(
            "{issuer}/.well-known/cxone-configuration?tenantId={tenant_id}"
        ))
        .await?;
        let mut discovery: Discovery = serde_json::from_slice(&bytes)
            .map_err(|e| UnexpectedBody::new("a CXone configuration", status, &bytes, Some(e)))?;
        discovery.token_endpoint = openid
            .get("token_endpoint")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{issuer}/auth/token"));
        discovery.api_endpoint = discovery.api_endpoint.trim_end_matches('/').to_owned();
        for url in [&discovery.api_endpoint, &discovery.token_endpoint] {
            let uri: http::Uri = url.parse().map_err(|_| InvalidUrl::new(url, "not a URL"))?;
            InsecureUrl::check(&uri)?;
        }
        Ok(discovery)
    }
}

/// [`discover`] for the tenant named in `access_token`'s claims, when the
/// tenant id is not given; an `area` claim fills an area discovery left
/// empty.
pub fn discover_from_token<'a, T>(
    transport: &'a T,
    issuer: &'a str,
    access_token: &'a str,
) -> impl Future<Output = Result<Discovery, BoxError>> + Send + 'a
where
    T: Transport,
{
    async move {
        let claims = TokenClaims::from_access_token(access_token)?;
        let mut discovery = discover(transport, issuer, &claims.tenant_id).await?;
        if discovery.area.is_empty() {
            discovery.area = claims.area.unwrap_or_default();
        }
        Ok(discovery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issuer_parses_by_name_url_and_host() {
        for issuer in Issuer::all() {
            assert_eq!(issuer.name().parse::<Issuer>().unwrap(), issuer);
            assert_eq!(issuer.url().parse::<Issuer>().unwrap(), issuer);
            let host = issuer.url().trim_start_matches("https://");
            assert_eq!(host.parse::<Issuer>().unwrap(), issuer);
            assert!(issuer.token_url().ends_with("/auth/token"));
        }
        assert_eq!(Issuer::SovereignUk.url(), "https://cxone.nicecxone-sov1.uk");
        assert!("cxone.example".parse::<Issuer>().is_err());
    }

    #[test]
    fn claims_need_a_tenant_id_and_never_show_the_token() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("h.{}.s", b64(r#"{"sub":"x"}"#));
        let err = TokenClaims::from_access_token(&token).unwrap_err();
        assert_eq!(err.reason(), "no tenantId claim");
        assert!(!err.to_string().contains(&token));
        let token = format!("h.{}.s", b64(r#"{"tenantId":"a/b"}"#));
        assert!(TokenClaims::from_access_token(&token).is_err());
        assert!(TokenClaims::from_access_token("a.!!!.c").is_err());
    }
}
