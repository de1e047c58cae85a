//! The fault script: [`Fault`]s queued by tests or drawn at random, and the
//! answers they give.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use http::Method;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::config::RandomFaults;
use super::reply::{json, Reply, Vendor};

/// A scripted fault for the next matching requests.
///
/// Most faults answer *instead of* the endpoint: the request is not applied.
/// [`ApplyThenStatus`](Fault::ApplyThenStatus) and
/// [`ApplyThenDrop`](Fault::ApplyThenDrop) apply the request first (it is
/// counted in [`MockServer::applied`](super::MockServer::applied)) and then
/// fail, which is what makes a blind retry apply it twice.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and a vendor-style error body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without an answer, before applying.
    Reset,
    /// 429 with `Retry-After` in seconds.
    RetryAfterSecs(u64),
    /// 503 with `Retry-After` as an HTTP-date this far ahead.
    RetryAfterDate(Duration),
    /// 429 with a `RateLimit` header `"default";r=0;t=N`.
    RateLimitHeader(u64),
    /// 200 with a business error in the body: `{"success":false,...}`.
    BusinessError200,
    /// A data action failure: 400 with `details[].errorCode` set to this.
    DataActionError(String),
    /// A data action whose remote endpoint answered this status: 400 with
    /// `details[].errorCode` `ACTION.REMOTE_ENDPOINT` and the remote status
    /// in the nested `errors`, as Genesys Cloud reports it.
    RemoteEndpoint(u16),
    /// A data action whose remote endpoint answered this status, in Genesys
    /// Cloud's other published shape: an outer 500 `internal.server.error`
    /// with a nested `INTERNAL_SERVER_ERROR` (status 500), the remote's
    /// status only in the nested message text.
    RemoteEndpointInternal(u16),
    /// A CXone-style error: this status, an empty body and the text in the
    /// `icStatusDescription` header.
    IcStatus(u16, String),
    /// This status with this body (`content-type: application/json`).
    Body(u16, String),
    /// Apply the request (commit its side effect), then answer this status
    /// with a vendor-style error body instead of the real answer.
    ApplyThenStatus(u16),
    /// Apply the request, then close the connection without an answer.
    ApplyThenDrop,
}

/// When a fault strikes relative to the endpoint.
pub(crate) enum Strike {
    /// Answer this instead of the endpoint (not applied).
    Before(Reply),
    /// Wait, then run the endpoint.
    Delay(Duration),
    /// Run the endpoint, then answer this status instead.
    AfterStatus(u16),
    /// Run the endpoint, then drop the connection.
    AfterDrop,
    /// Drop the connection, not applied.
    Reset,
}

struct Entry {
    method: Option<Method>,
    prefix: Option<String>,
    fault: Fault,
    left: usize,
}

/// The queue of scripted faults, then the random ones.
pub(crate) struct FaultScript {
    queue: VecDeque<Entry>,
    random: Option<(RandomFaults, StdRng)>,
    /// Random faults drawn, by kind.
    pub(crate) drawn: BTreeMap<String, u64>,
}

impl FaultScript {
    pub(crate) fn new(random: Option<RandomFaults>) -> Self {
        Self {
            queue: VecDeque::new(),
            random: random.map(|r| {
                let rng = StdRng::seed_from_u64(r.seed);
                (r, rng)
            }),
            drawn: BTreeMap::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        method: Option<Method>,
        prefix: Option<String>,
        fault: Fault,
        times: usize,
    ) {
        self.queue.push_back(Entry {
            method,
            prefix,
            fault,
            left: times,
        });
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// The fault for this request, if any: the first scripted match, else a
    /// random draw.
    pub(crate) fn next(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let index = self.queue.iter().position(|e| {
            e.left > 0
                && e.method.as_ref().is_none_or(|m| m == method)
                && e.prefix.as_deref().is_none_or(|p| path.starts_with(p))
        });
        if let Some(i) = index {
            let entry = &mut self.queue[i];
            entry.left -= 1;
            let fault = entry.fault.clone();
            if entry.left == 0 {
                self.queue.remove(i);
            }
            return Some(fault);
        }
        let (random, rng) = self.random.as_mut()?;
        if !path.starts_with(random.path_prefix.as_str()) {
            return None;
        }
        let fault = random.draw(rng)?;
        *self.drawn.entry(format!("{fault:?}")).or_default() += 1;
        Some(fault)
    }
}

impl Fault {
    /// How this fault strikes on a route of `vendor`.
    pub(crate) fn strike(&self, vendor: Vendor) -> Strike {
        let reply = match self {
            Fault::Delay(wait) => return Strike::Delay(*wait),
            Fault::Reset => return Strike::Reset,
            Fault::ApplyThenStatus(status) => return Strike::AfterStatus(*status),
            Fault::ApplyThenDrop => return Strike::AfterDrop,
            Fault::Status(status) => vendor.error(*status, "mock.fault", "scripted fault"),
            Fault::RetryAfterSecs(secs) => vendor.too_many(*secs),
            Fault::RetryAfterDate(ahead) => {
                let mut reply = vendor.error(503, "service.unavailable", "try later");
                let date = httpdate::fmt_http_date(SystemTime::now() + *ahead);
                reply
                    .headers_mut()
                    .insert("retry-after", date.parse().expect("an HTTP-date"));
                reply
            }
            Fault::RateLimitHeader(t) => {
                let mut reply = vendor.error(429, "too.many.requests", "rate limited");
                reply.headers_mut().insert(
                    "ratelimit",
                    format!("\"default\";r=0;t={t}").parse().expect("ascii"),
                );
                reply
            }
            Fault::BusinessError200 => {
                json(200, r#"{"success":false,"error":"mock business error"}"#)
            }
            Fault::DataActionError(code) => json(
                400,
                serde_json::json!({
                    "message": "The remote endpoint failed", "code": "bad.request", "status": 400,
                    "contextId": "mock-context",
                    "details": [{"errorCode": code}], "errors": []
                })
                .to_string(),
            ),
            Fault::RemoteEndpoint(remote) => json(
                400,
                serde_json::json!({
                    "message": "REST call for action execute failed. Message: Request to backend service failed.",
                    "code": "bad.request", "status": 400, "contextId": "mock-context",
                    "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                    "errors": [{
                        "message": format!("Response from web service: status {remote}"),
                        "code": "REMOTE_ERROR", "status": remote, "details": [], "errors": []
                    }]
                })
                .to_string(),
            ),
            Fault::RemoteEndpointInternal(remote) => json(
                500,
                serde_json::json!({
                    "message": "Internal Server Error", "code": "internal.server.error",
                    "status": 500, "messageParams": {}, "contextId": "mock-context",
                    "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                    "errors": [{
                        "message": format!(
                            "REST call for action execute failed. Message: Request to backend \
                             service failed. Response from web service: status code {remote} \
                             [mock-context]"
                        ),
                        "code": "INTERNAL_SERVER_ERROR", "status": 500,
                        "messageParams": {}, "details": [], "errors": []
                    }]
                })
                .to_string(),
            ),
            Fault::IcStatus(status, description) => {
                let mut reply = json(*status, "");
                reply.headers_mut().remove("content-type");
                if let Ok(value) = description.parse() {
                    reply.headers_mut().insert("icStatusDescription", value);
                }
                reply
            }
            Fault::Body(status, body) => json(*status, body.clone()),
        };
        Strike::Before(reply)
    }
}
