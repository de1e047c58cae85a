//! The NICE CXone client, discovery and completed contacts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::Layer;

use super::error::CxoneError;
use super::extraction::DataExtraction;
use crate::body::Body;
use crate::error::{BoxError, InsecureUrl};
use crate::genesys::BusinessRule;
use crate::stack::CxService;
use crate::vendor::{
    check_id, json_request, parse, read_limited, BodyLimits, ClientCore, Decoder, InvalidUrl,
    RetryRules, Transport, UnexpectedBody,
};

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

/// The CXone discovery host.
pub const CXONE_ISSUER: &str = "https://cxone.niceincontact.com";

/// Discover a tenant: `GET {issuer}/.well-known/openid-configuration` for
/// the token endpoint and `GET {issuer}/.well-known/cxone-configuration?tenantId=`
/// for the area and API endpoint. `transport` needs no token (use a stack
/// without the bearer layer, e.g. `Stack::new().build()`). The endpoints
/// must be HTTPS (or loopback HTTP): [`InsecureUrl`] otherwise.
pub async fn discover<T>(
    transport: &T,
    issuer: &str,
    tenant_id: &str,
) -> Result<Discovery, BoxError>
where
    T: Transport,
{
    check_id("tenant id", tenant_id)?;
    let issuer = issuer.trim_end_matches('/');
    let get = |url: String| async move {
        let response = transport
            .send(json_request(Method::GET, url, None)?)
            .await?;
        let (parts, body) = response.into_parts();
        let limits = BodyLimits::default();
        if !parts.status.is_success() {
            let bytes = read_limited(parts.status, body, limits.errors).await?;
            return Err(CxoneError::from_response(parts.status, &parts.headers, &bytes).into());
        }
        let bytes = read_limited(parts.status, body, limits.errors).await?;
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

/// A typed NICE CXone client over any [`Transport`] (usually the stack from
/// [`Stack::cxone`](crate::stack::Stack::cxone)), for one API endpoint
/// (from [`discover`]).
///
/// ```
/// use futures_util::TryStreamExt;
/// use tower_cx::cxone::{discover, CxoneClient};
/// # #[cfg(feature = "mock")]
/// use tower_cx::mock::MockServer;
/// use tower_cx::stack::Stack;
///
/// # #[cfg(feature = "mock")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_cx::error::BoxError> {
/// let mock = MockServer::start().await?;
/// let tenant = discover(&Stack::new().build(), &mock.base_url(), "tenant-1").await?;
/// let c = mock.config().clone();
/// let stack = Stack::cxone(&tenant.token_endpoint, c.client_id, c.client_secret,
///     c.access_key_id, c.access_key_secret)?.build();
/// let cxone = CxoneClient::new(stack, &tenant.api_endpoint);
/// let pages: Vec<_> = cxone.completed_contacts(&[("top", "50")]).try_collect().await?;
/// assert_eq!(pages.iter().map(|p| p.completed_contacts.len()).sum::<usize>(), 120);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "mock"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct CxoneClient<T> {
    pub(crate) core: ClientCore<T>,
    pub(crate) version: Arc<str>,
    pub(crate) downloads: CxService,
    pub(crate) max_reruns: u32,
}

impl<T: Transport> CxoneClient<T> {
    /// A client for `api_endpoint` (`https://api-na1.niceincontact.com`).
    pub fn new(transport: T, api_endpoint: &str) -> Self {
        Self {
            core: ClientCore::new(transport, api_endpoint, RetryRules::cxone()),
            version: "v31.0".into(),
            downloads: BoxCloneSyncService::new(
                TimeoutLayer::new(Duration::from_secs(60)).layer(crate::auth::hyper_client()),
            ),
            max_reruns: 3,
        }
    }

    /// The Admin/Reporting API version in paths (default `v31.0`).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into().into();
        self
    }

    crate::vendor::shared_client_settings!(rules: "cxone", jobs: "data-extraction jobs");

    /// The service that downloads job results from their (pre-signed)
    /// URLs. It must not add the bearer token: the URL is another host.
    /// Default: the built-in hyper client with a 60 s timeout.
    pub fn downloads(mut self, service: CxService) -> Self {
        self.downloads = service;
        self
    }

    /// How many times one job may be re-run (default 3).
    pub fn max_reruns(mut self, max: u32) -> Self {
        self.max_reruns = max;
        self
    }

    /// The API endpoint.
    pub fn base_url(&self) -> &str {
        &self.core.base
    }

    /// Data-extraction jobs.
    pub fn data_extraction(&self) -> DataExtraction<T> {
        DataExtraction {
            client: self.clone(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.core.url(path)
    }

    fn decoder(business: Option<BusinessRule>) -> Decoder {
        crate::vendor::decoder(business, CxoneError::from_response, CxoneError::business)
    }

    pub(crate) async fn call(
        &self,
        request: Request<Body>,
        letter: bool,
    ) -> Result<Response<Bytes>, BoxError> {
        let decoder = Self::decoder(self.core.business.clone());
        self.core.call(request, decoder, letter).await
    }

    /// Completed contacts, page by page (`skip`/`top`, default `top` 100),
    /// until CXone answers 204. `query` adds parameters such as
    /// `startDate`/`endDate`; a `skip` in it is the starting point.
    pub fn completed_contacts(
        &self,
        query: &[(&str, &str)],
    ) -> impl Stream<Item = Result<ContactsPage, BoxError>> + Send + 'static {
        let client = self.clone();
        let mut skip = 0u64;
        let mut top = 100u64;
        let mut rest = Vec::new();
        for (k, v) in query {
            match *k {
                "skip" => skip = v.parse().unwrap_or(0),
                "top" => top = v.parse().unwrap_or(100).max(1),
                _ => rest.push((k.to_string(), v.to_string())),
            }
        }
        futures_util::stream::try_unfold(Some(skip), move |next| {
            let client = client.clone();
            let rest = rest.clone();
            async move {
                let Some(skip) = next else { return Ok(None) };
                let query = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(rest.iter())
                    .append_pair("skip", &skip.to_string())
                    .append_pair("top", &top.to_string())
                    .finish();
                let url = client.url(&format!(
                    "/incontactapi/services/{}/contacts/completed?{query}",
                    client.version
                ));
                let request = json_request(Method::GET, url, None)?;
                let response = client.call(request, false).await?;
                if response.status() == StatusCode::NO_CONTENT || response.body().is_empty() {
                    return Ok(None);
                }
                let page: ContactsPage = parse(response, "a completed contacts page")?;
                let n = page.completed_contacts.len() as u64;
                let next = (n > 0).then_some(skip + n);
                if n == 0 {
                    return Ok(None);
                }
                Ok(Some((page, next)))
            }
        })
    }
}

impl<T> fmt::Debug for CxoneClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("CxoneClient");
        self.core.debug_fields(&mut f);
        f.field("version", &self.version)
            .field("max_reruns", &self.max_reruns)
            .finish_non_exhaustive()
    }
}

/// One page of completed contacts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ContactsPage {
    /// The contacts.
    #[serde(default)]
    pub completed_contacts: Vec<Value>,
    /// All contacts matching the query.
    pub total_records: Option<u64>,
}
