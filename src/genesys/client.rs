//! The Genesys Cloud client, data actions and entity listings.

#![allow(
    clippy::manual_async_fn,
    reason = "the calls return `impl Future + Send`: an `async fn` over a boxed transport is not provably `Send` at the caller (its error type's lifetime is erased there)"
)]

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analytics::AnalyticsJobs;
use super::error::GenesysError;
use super::Region;
use crate::body::Body;
use crate::error::BoxError;
use crate::retry::RetryOverride;
pub(crate) use crate::vendor::parse;
use crate::vendor::BusinessRule;
use crate::vendor::{
    check_id, check_replay, json_request, resolve_link, ClientCore, Decoder, InvalidUrl,
    RetryRules, Transport,
};

/// A typed Genesys Cloud client over any [`Transport`] (usually the
/// canonical stack from [`Stack::genesys`](crate::stack::Stack::genesys)).
///
/// Cloning is cheap; clones share the configuration.
///
/// Two retry loops cooperate: the stack below retries what the status and
/// headers reveal (429 with `Retry-After`, 5xx, timeouts, resets); the
/// client retries what only the body reveals (a data action whose remote
/// endpoint failed inside a 400, a business error inside a 200), with the
/// crate's [`RetryLayer`](crate::retry::RetryLayer) classified by [`RetryRules`]. Every client attempt
/// of one call carries the same `Idempotency-Key`.
///
/// Genesys Cloud does not honour `Idempotency-Key`, so a POST is repeated
/// only when the retry layers' rule allows it: on proof that it was not
/// processed, or when the caller declared it idempotent. Data actions are
/// not idempotent unless declared so, per action
/// ([`idempotent_action`](Self::idempotent_action), for lookups) or per
/// call ([`DataActions::idempotent`]); analytics job submissions never are
/// (a duplicate job costs quota and load).
#[derive(Clone)]
pub struct GenesysClient<T> {
    pub(crate) core: ClientCore<T>,
    pub(crate) idempotent_actions: Arc<HashSet<String>>,
}

impl<T: Transport> GenesysClient<T> {
    /// A client for `region`'s API host.
    pub fn new(transport: T, region: &Region) -> Self {
        Self::with_base_url(transport, region.api_base())
    }

    /// A client for an explicit API base URL (`https://api.mypurecloud.ie`,
    /// or a mock's `http://127.0.0.1:PORT`). Its own retries (3 attempts,
    /// backoff from 1 s) share the Genesys deadline,
    /// [`GENESYS_DEADLINE`](super::GENESYS_DEADLINE), so that a call
    /// whose stack waited out a long `Retry-After` can still be retried;
    /// [`retry`](Self::retry) changes them.
    pub fn with_base_url(transport: T, base_url: impl Into<String>) -> Self {
        let mut core =
            ClientCore::new::<GenesysError>(transport, &base_url.into(), RetryRules::genesys());
        core.retry = core.retry.deadline(super::GENESYS_DEADLINE);
        Self {
            core,
            idempotent_actions: Arc::default(),
        }
    }

    /// Declare that executing `action_id` may be repeated safely (a lookup,
    /// or an action whose backend dedupes): its executions are marked
    /// idempotent with [`RetryOverride`], so the retry layers may retry
    /// them after any retryable failure. Call once per action; other
    /// actions are not idempotent.
    pub fn idempotent_action(mut self, action_id: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.idempotent_actions).insert(action_id.into());
        self
    }

    /// Whether `action_id` was declared idempotent.
    pub fn is_idempotent_action(&self, action_id: &str) -> bool {
        self.idempotent_actions.contains(action_id)
    }

    crate::vendor::shared_client_settings!(rules: "genesys", jobs: "analytics jobs");

    /// The API base URL.
    pub fn base_url(&self) -> &str {
        &self.core.base
    }

    /// Data actions.
    pub fn data_actions(&self) -> DataActions<T> {
        DataActions {
            client: self.clone(),
            idempotent: None,
        }
    }

    /// Analytics conversation-details jobs.
    pub fn analytics(&self) -> AnalyticsJobs<T> {
        AnalyticsJobs {
            client: self.clone(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.core.url(path)
    }

    fn decoder(business: Option<BusinessRule>) -> Decoder {
        crate::vendor::decoder(business, GenesysError::from_body, GenesysError::business)
    }

    /// Send through the client's retry layer, with what `options` asks.
    pub(crate) async fn call(
        &self,
        request: Request<Body>,
        options: CallOptions,
    ) -> Result<Response<Bytes>, BoxError> {
        let business = self.core.business.clone().filter(|_| options.business_rule);
        self.core
            .call(request, Self::decoder(business), options.dead_letter)
            .await
    }

    /// A JSON request with a fresh idempotency key for POSTs.
    pub(crate) fn json_request(
        &self,
        method: Method,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Body>, BoxError> {
        json_request(method, url, body)
    }

    /// GET a JSON document, typed.
    pub(crate) async fn get_json<O: DeserializeOwned>(
        &self,
        url: String,
        what: &'static str,
    ) -> Result<O, BoxError> {
        let request = self.json_request(Method::GET, url, None)?;
        let response = self.call(request, CallOptions::PLAIN).await?;
        parse(response, what)
    }

    /// Every page of an entity listing (`/api/v2/users`, `/api/v2/routing/queues?pageSize=100`, ...),
    /// following `nextUri` (or `pageNumber` up to `pageCount`).
    ///
    /// A `nextUri` pointing to another host is refused with
    /// [`InvalidUrl`]: the bearer token never leaves the API host. So is
    /// one pointing to a page already read, after the page that has it:
    /// the pages would repeat forever.
    pub fn list<E>(
        &self,
        path_and_query: &str,
    ) -> impl Stream<Item = Result<EntityPage<E>, BoxError>> + Send + 'static
    where
        E: DeserializeOwned + Send + 'static,
    {
        let first = resolve_link(&self.core.base, path_and_query);
        let client = self.clone();
        let start = (first, HashSet::new());
        futures_util::stream::try_unfold(Some(start), move |state| {
            let client = client.clone();
            async move {
                let Some((url, mut seen)) = state else {
                    return Ok(None);
                };
                let url = url?;
                let page: EntityPage<E> = client.get_json(url.clone(), "an entity listing").await?;
                seen.insert(url.clone());
                // a link back to a page already read ends the stream after
                // this page
                let next = page.next_link(&client.core.base, &url)?.map(|next| {
                    if seen.contains(&next) {
                        Err(InvalidUrl::new(
                            &next,
                            "nextUri points to a page already read",
                        ))
                    } else {
                        Ok(next)
                    }
                });
                Ok(Some((page, next.map(|next| (next, seen)))))
            }
        })
    }
}

impl<T> fmt::Debug for GenesysClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("GenesysClient");
        self.core.debug_fields(&mut f);
        f.field("idempotent_actions", &self.idempotent_actions);
        f.finish_non_exhaustive()
    }
}

/// One page of a Genesys Cloud entity listing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EntityPage<E> {
    /// The entities.
    #[serde(default = "Vec::new")]
    pub entities: Vec<E>,
    /// This page's number (1-based).
    pub page_number: Option<u64>,
    /// The page size.
    pub page_size: Option<u64>,
    /// The number of pages.
    pub page_count: Option<u64>,
    /// The number of entities.
    pub total: Option<u64>,
    /// The next page, if any.
    pub next_uri: Option<String>,
}

impl<E> EntityPage<E> {
    /// The next page's URL: `nextUri`, else `pageNumber + 1` while below
    /// `pageCount`; `None` on the last page.
    fn next_link(&self, base: &str, current: &str) -> Result<Option<String>, InvalidUrl> {
        if let Some(next) = self.next_uri.as_deref().filter(|n| !n.is_empty()) {
            return resolve_link(base, next).map(Some);
        }
        match (self.page_number, self.page_count) {
            (Some(number), Some(count)) if number < count && !self.entities.is_empty() => {
                Ok(Some(with_page_number(current, number + 1)))
            }
            _ => Ok(None),
        }
    }
}

/// `url` with its `pageNumber` query parameter set to `page`.
fn with_page_number(url: &str, page: u64) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "pageNumber" {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("pageNumber", &page.to_string());
    format!("{path}?{}", out.finish())
}

/// Genesys Cloud data actions: `POST /api/v2/integrations/actions/{id}/execute`
/// and `/test`.
///
/// ```no_run
/// use serde_json::{json, Value};
/// use tower_cx::genesys::{GenesysClient, Region};
/// use tower_cx::stack::Stack;
///
/// # async fn run() -> Result<(), tower_cx::error::BoxError> {
/// let region = Region::EuWest1;
/// let stack = Stack::genesys(&region, "client-id", "client-secret")?.build();
/// let genesys = GenesysClient::new(stack, &region);
/// let output: Value = genesys
///     .data_actions()
///     .execute("custom_-_1234", &json!({"customerId": "42"}))
///     .await?;
/// # let _ = output;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DataActions<T> {
    client: GenesysClient<T>,
    idempotent: Option<bool>,
}

impl<T: Transport> DataActions<T> {
    /// Declare whether the calls made through this handle may be repeated
    /// safely, whatever the per-action setting
    /// ([`GenesysClient::idempotent_action`]). Default: the per-action
    /// setting, and an action not declared there is not idempotent.
    ///
    /// ```no_run
    /// # use serde_json::{json, Value};
    /// # async fn run(genesys: tower_cx::genesys::GenesysClient<tower_cx::stack::CxService>)
    /// # -> Result<(), tower_cx::error::BoxError> {
    /// // a read-only lookup, safe to send twice
    /// let customer: Value = genesys
    ///     .data_actions()
    ///     .idempotent(true)
    ///     .execute("lookup-customer", &json!({"phone": "+3312345678"}))
    ///     .await?;
    /// # let _ = customer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Mark `request` idempotent when this call or its action is declared
    /// so (the retry layers read the [`RetryOverride`]).
    fn declare(&self, action_id: &str, request: &mut Request<Body>) {
        let declared = self
            .idempotent
            .unwrap_or_else(|| self.client.is_idempotent_action(action_id));
        if declared {
            request
                .extensions_mut()
                .insert(RetryOverride::new().idempotent(true));
        }
    }

    fn request<I: Serialize + ?Sized>(
        &self,
        action_id: &str,
        verb: &str,
        input: &I,
    ) -> Result<Request<Body>, BoxError> {
        check_id("data action id", action_id)?;
        let body = serde_json::to_vec(input)?;
        let url = self
            .client
            .url(&format!("/api/v2/integrations/actions/{action_id}/{verb}"));
        self.client.json_request(Method::POST, url, Some(body))
    }

    /// Execute the action with `input`; its output, typed. Errors: a
    /// [`GenesysError`] (the platform's, or a business error), after the
    /// client's retries; failures are dead-lettered. Unless declared
    /// idempotent ([`idempotent`](Self::idempotent),
    /// [`GenesysClient::idempotent_action`]) the execution is retried only
    /// on proof that it was not processed.
    pub fn execute<I, O>(
        &self,
        action_id: &str,
        input: &I,
    ) -> impl Future<Output = Result<O, BoxError>> + Send + '_
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let request = self
            .request(action_id, "execute", input)
            .map(|mut request| {
                self.declare(action_id, &mut request);
                request
            });
        async move {
            let response = self.client.call(request?, CallOptions::ACTION).await?;
            parse(response, "the data action's output")
        }
    }

    /// Run the action's test endpoint: every step's result, the final
    /// result or the error. Not retried by body, not dead-lettered.
    pub fn test<I>(
        &self,
        action_id: &str,
        input: &I,
    ) -> impl Future<Output = Result<TestReport, BoxError>> + Send + '_
    where
        I: Serialize + ?Sized,
    {
        let request = self.request(action_id, "test", input);
        async move {
            let response = self.client.call(request?, CallOptions::PLAIN).await?;
            parse(response, "a data action test report")
        }
    }

    /// Send a dead letter's request again (same body, same
    /// `Idempotency-Key`) through the client's retries. The request must
    /// target this client's API host. It is idempotent when this handle
    /// says so ([`idempotent`](Self::idempotent)) or its action was
    /// declared so.
    pub fn replay<O: DeserializeOwned>(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<O, BoxError>> + Send + '_ {
        async move {
            let mut request = self.client.check_replay(request)?;
            let action = request
                .uri()
                .path()
                .strip_prefix("/api/v2/integrations/actions/")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_owned();
            self.declare(&action, &mut request);
            let response = self.client.call(request, CallOptions::ACTION).await?;
            parse(response, "the data action's output")
        }
    }
}

impl<T> GenesysClient<T> {
    /// A dead letter's request, checked to target this client's API host.
    pub(crate) fn check_replay(&self, request: Request<Body>) -> Result<Request<Body>, BoxError> {
        check_replay(&self.core.base, request)
    }
}

/// What a data action's `/test` endpoint reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TestReport {
    /// Whether the action would have succeeded.
    #[serde(default)]
    pub success: bool,
    /// Each step (`step`, `name`, `success`, `result`, `error`).
    #[serde(default)]
    pub operations: Vec<Value>,
    /// The translated output, when it succeeded.
    pub final_result: Option<Value>,
    /// The error body, when it failed.
    pub error: Option<Value>,
}

impl TestReport {
    /// The failure as a [`GenesysError`], if the test failed.
    pub fn error(&self) -> Option<GenesysError> {
        if self.success {
            return None;
        }
        let body = self
            .error
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        let status = self
            .error
            .as_ref()
            .and_then(|e| e.get("status"))
            .and_then(Value::as_u64)
            .and_then(|s| http::StatusCode::from_u16(u16::try_from(s).ok()?).ok())
            .unwrap_or(http::StatusCode::BAD_REQUEST);
        Some(GenesysError::from_body(
            status,
            &http::HeaderMap::new(),
            body.as_bytes(),
        ))
    }
}

/// What a call through a Genesys client's retries does beyond sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallOptions {
    /// Apply the client's business rule to a successful answer.
    pub(crate) business_rule: bool,
    /// Hand a final failure to the client's dead-letter sink.
    pub(crate) dead_letter: bool,
}

impl CallOptions {
    /// A read: no business rule, no dead letter.
    pub(crate) const PLAIN: Self = Self {
        business_rule: false,
        dead_letter: false,
    };
    /// A data action: its business rule, and a dead letter if it fails.
    pub(crate) const ACTION: Self = Self {
        business_rule: true,
        dead_letter: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_number_replaces_the_old_one_and_keeps_the_rest() {
        assert_eq!(
            with_page_number("http://h/api/v2/users?pageSize=10&pageNumber=2", 3),
            "http://h/api/v2/users?pageSize=10&pageNumber=3"
        );
        assert_eq!(
            with_page_number("http://h/api/v2/users", 2),
            "http://h/api/v2/users?pageNumber=2"
        );
    }

    #[test]
    fn next_uri_on_another_host_is_refused() {
        let page = EntityPage::<Value> {
            entities: vec![],
            page_number: Some(1),
            page_size: None,
            page_count: Some(2),
            total: None,
            next_uri: Some("https://evil.example/api/v2/users?pageNumber=2".into()),
        };
        let err = page
            .next_link("https://api.mypurecloud.com", "x")
            .unwrap_err();
        assert_eq!(err.reason(), "not on the API host");
        let page = EntityPage::<Value> {
            next_uri: Some("/api/v2/users?pageNumber=2".into()),
            ..page
        };
        assert_eq!(
            page.next_link("https://api.mypurecloud.com", "x")
                .unwrap()
                .unwrap(),
            "https://api.mypurecloud.com/api/v2/users?pageNumber=2"
        );
    }
}
