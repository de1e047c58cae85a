//! The NICE CXone client and completed contacts.

use std::collections::HashSet;
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
use crate::error::BoxError;
use crate::stack::CxService;
use crate::vendor::{
    json_request, parse, resolve_link, BusinessRule, ClientCore, Decoder, InvalidUrl, RetryRules,
    Transport,
};

/// A CXone API whose version appears in its paths; each has its own
/// version (see [`CxoneClient::api_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CxoneApi {
    /// `GET /incontactapi/services/{version}/contacts/completed` (default
    /// `v31.0`).
    CompletedContacts,
    /// `/data-extraction/{version}/jobs` (default `v1`).
    DataExtraction,
}

impl CxoneApi {
    /// The version used unless [`CxoneClient::api_version`] sets another.
    pub fn default_version(self) -> &'static str {
        match self {
            CxoneApi::CompletedContacts => "v31.0",
            CxoneApi::DataExtraction => "v1",
        }
    }
}

/// The version of each API, by [`CxoneApi`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Versions(Vec<(CxoneApi, Arc<str>)>);

impl Versions {
    pub(crate) fn get(&self, api: CxoneApi) -> &str {
        self.0
            .iter()
            .find(|(a, _)| *a == api)
            .map_or_else(|| api.default_version(), |(_, v)| v)
    }

    fn set(&mut self, api: CxoneApi, version: String) {
        self.0.retain(|(a, _)| *a != api);
        self.0.push((api, version.into()));
    }
}

/// When the last data-extraction job was submitted, shared by clones.
pub(crate) type ExtractionClock = Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>;

/// A typed NICE CXone client over any [`Transport`] (usually the stack from
/// [`Stack::cxone`](crate::stack::Stack::cxone)), for one API endpoint
/// (from [`discover`](super::discover)).
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
    pub(crate) versions: Versions,
    pub(crate) downloads: CxService,
    pub(crate) max_reruns: u32,
    pub(crate) extraction_interval: Duration,
    pub(crate) extraction_clock: ExtractionClock,
}

impl<T: Transport> CxoneClient<T> {
    /// A client for `api_endpoint` (`https://api-na1.niceincontact.com`).
    pub fn new(transport: T, api_endpoint: &str) -> Self {
        Self {
            core: ClientCore::new::<CxoneError>(transport, api_endpoint, RetryRules::cxone()),
            versions: Versions::default(),
            downloads: BoxCloneSyncService::new(
                TimeoutLayer::new(Duration::from_secs(60)).layer(crate::transport::hyper_client()),
            ),
            max_reruns: 3,
            extraction_interval: Duration::from_secs(30),
            extraction_clock: ExtractionClock::default(),
        }
    }

    /// The version of `api` in its paths (`v31.0`, `v1`, ...); each API
    /// has its own (see [`CxoneApi::default_version`]).
    pub fn api_version(mut self, api: CxoneApi, version: impl Into<String>) -> Self {
        self.versions.set(api, version.into());
        self
    }

    /// The version of `api` this client uses.
    pub fn version_of(&self, api: CxoneApi) -> &str {
        self.versions.get(api)
    }

    /// CXone allows one data-extraction submission per 30 s per tenant:
    /// this client (and its clones: use one per tenant) waits so that
    /// submissions are at least `interval` apart (default 30 s; zero turns
    /// the pacing off).
    pub fn extraction_interval(mut self, interval: Duration) -> Self {
        self.extraction_interval = interval;
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

    /// Completed contacts, page by page, until CXone answers 204.
    ///
    /// Paging is stable while contacts complete or change during the
    /// listing: pages are ordered by `lastUpdateTime`, oldest first
    /// (`orderBy=lastUpdateTime`, unless `query` orders otherwise), so new
    /// and updated contacts join the end instead of shifting the pages
    /// already read; pass `updatedSince` to bound the listing. When a page
    /// carries `_links`, its `next` is followed instead of counting `skip`
    /// and a page without `next` is the last (the link must stay on the API
    /// host: [`InvalidUrl`] otherwise; a link back to a page already read
    /// ends the stream with [`InvalidUrl`] after the page that has it).
    /// `query` adds parameters such as `startDate`/`endDate`; `skip` and
    /// `top` (default 100) set the first page.
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
        if !rest.iter().any(|(k, _)| k == "orderBy") {
            rest.push(("orderBy".into(), "lastUpdateTime".into()));
        }
        let path = format!(
            "/incontactapi/services/{}/contacts/completed",
            self.version_of(CxoneApi::CompletedContacts)
        );
        let first = {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest.iter())
                .append_pair("skip", &skip.to_string())
                .append_pair("top", &top.to_string())
                .finish();
            client.url(&format!("{path}?{query}"))
        };
        let start = Pages {
            next: Ok(first),
            skip,
            seen: HashSet::new(),
        };
        futures_util::stream::try_unfold(Some(start), move |state| {
            let client = client.clone();
            let rest = rest.clone();
            let path = path.clone();
            async move {
                let Some(Pages {
                    next,
                    skip,
                    mut seen,
                }) = state
                else {
                    return Ok(None);
                };
                let url = next?;
                let request = json_request(Method::GET, url.clone(), None)?;
                let response = client.call(request, false).await?;
                if response.status() == StatusCode::NO_CONTENT || response.body().is_empty() {
                    return Ok(None);
                }
                let page: ContactsPage = parse(response, "a completed contacts page")?;
                let n = page.completed_contacts.len() as u64;
                if n == 0 {
                    return Ok(None);
                }
                seen.insert(url);
                let next = match page.links.as_ref().map(|l| l.next.as_deref()) {
                    // an answer with links and no next is the last page
                    Some(None) | Some(Some("")) => return Ok(Some((page, None))),
                    Some(Some(link)) => resolve_link(&client.core.base, link)?,
                    None => {
                        let query = form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(rest.iter())
                            .append_pair("skip", &(skip + n).to_string())
                            .append_pair("top", &top.to_string())
                            .finish();
                        client.url(&format!("{path}?{query}"))
                    }
                };
                // a link back to a page already read ends the stream after
                // this page
                let next = if seen.contains(&next) {
                    Err(InvalidUrl::new(
                        &next,
                        "_links.next points to a page already read",
                    ))
                } else {
                    Ok(next)
                };
                let skip = skip + n;
                Ok(Some((page, Some(Pages { next, skip, seen }))))
            }
        })
    }
}

/// Where [`CxoneClient::completed_contacts`] is: the next page, its
/// `skip`, and every page read so far.
struct Pages {
    next: Result<String, InvalidUrl>,
    skip: u64,
    seen: HashSet<String>,
}

impl<T> fmt::Debug for CxoneClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("CxoneClient");
        self.core.debug_fields(&mut f);
        f.field("versions", &self.versions)
            .field("extraction_interval", &self.extraction_interval)
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
    /// The page's links (`_links.next`), when CXone sends them.
    #[serde(rename = "_links", default)]
    pub links: Option<PageLinks>,
}

/// A page's `_links`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PageLinks {
    /// The next page, absolute or relative to the API endpoint.
    pub next: Option<String>,
}
