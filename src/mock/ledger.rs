//! What the mock counted: requests, tokens, violations, and every operation
//! applied, by what it is (not by its `Idempotency-Key`).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;

/// What the mock counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockCounters {
    /// Requests per path.
    pub requests: BTreeMap<String, u64>,
    /// All requests.
    pub total_requests: u64,
    /// The most requests in progress at once.
    pub peak_concurrency: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// API requests that carried an expired token.
    pub expired_token_requests: u64,
    /// API requests that arrived inside a wait announced to their token (a
    /// 429's `Retry-After`, or `inin-ratelimit-count` at the limit), after
    /// the in-flight grace (see
    /// [`MockConfig::in_flight_grace`](super::MockConfig::in_flight_grace)).
    pub retry_after_violations: u64,
    /// Side-effecting requests applied (each application, duplicates
    /// included).
    pub operations_applied: u64,
    /// Applications of an operation that had been applied already: the
    /// side effects a client repeated. Operations are named by their body's
    /// [`operation_id_field`](super::MockConfig::operation_id_field) (or the
    /// whole body), never by their `Idempotency-Key`. A job submission whose
    /// job a client then read as failed, cancelled or expired no longer
    /// counts: submitting it again (a re-run) is not a duplicate.
    pub duplicate_applications: u64,
    /// Answers replayed for a repeated `Idempotency-Key` without applying
    /// the request again (only with
    /// [`honour_idempotency_keys`](super::MockConfig::honour_idempotency_keys)).
    pub replayed_by_key: u64,
    /// Applied POSTs whose `Idempotency-Key` had been applied before (the
    /// key did not stop the duplicate: always 0 when keys are honoured).
    pub duplicate_idempotency_keys: u64,
    /// Distinct `Idempotency-Key`s of applied POSTs.
    pub idempotency_keys_applied: u64,
    /// CXone data-extraction submissions sent inside the per-tenant
    /// interval (answered 429).
    pub extraction_limit_violations: u64,
    /// Result downloads that carried an `Authorization` header (a token
    /// sent to the file host: must stay zero).
    pub credentials_sent_to_files: u64,
    /// Faults drawn by [`MockConfig::random_faults`](super::MockConfig::random_faults), by kind.
    pub random_faults: BTreeMap<String, u64>,
}

/// A stored answer, replayed for a repeated key.
#[derive(Clone)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Operations applied, by name, and the answers stored by key.
#[derive(Default)]
pub(crate) struct Ledger {
    applied: HashMap<String, u64>,
    /// Applications whose job then failed, by operation.
    voided: HashMap<String, u64>,
    keys_applied: HashSet<String>,
    answers: HashMap<String, Stored>,
    /// Every key sent on a POST: (path, key), in order.
    pub(crate) keys_seen: Vec<(String, String)>,
}

/// Whether a request has side effects the ledger counts.
pub(crate) fn side_effecting(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

/// The `Idempotency-Key` of a request.
pub(crate) fn key_of(request: &Request<Bytes>) -> Option<&str> {
    request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
}

/// The name of the operation a request performs: `METHOD path id`, where
/// the id is the body's `field` (a string or number) or else the whole body.
pub(crate) fn operation_of(request: &Request<Bytes>, field: &str) -> String {
    let body = request.body();
    let id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v.get(field)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    format!("{} {} {id}", request.method(), request.uri().path())
}

impl Ledger {
    /// The stored answer for `key`, if a request with it was applied.
    pub(crate) fn replay(&self, key: &str) -> Option<Stored> {
        self.answers.get(key).cloned()
    }

    /// Record that `operation` was applied (with `key`, if any), updating
    /// the counters; store `answer` under the key when keys are honoured.
    pub(crate) fn applied(
        &mut self,
        counters: &mut MockCounters,
        operation: String,
        key: Option<&str>,
        answer: Option<Stored>,
    ) {
        counters.operations_applied += 1;
        let voided = self.voided.get(&operation).copied().unwrap_or(0);
        let times = self.applied.entry(operation).or_default();
        *times += 1;
        if *times - voided > 1 {
            counters.duplicate_applications += 1;
        }
        if let Some(key) = key {
            if self.keys_applied.insert(key.to_owned()) {
                counters.idempotency_keys_applied += 1;
            } else {
                counters.duplicate_idempotency_keys += 1;
            }
            if let Some(answer) = answer {
                self.answers.insert(key.to_owned(), answer);
            }
        }
    }

    /// An application of `operation` made a job that failed: it no longer
    /// counts against a later application.
    pub(crate) fn void(&mut self, operation: &str) {
        *self.voided.entry(operation.to_owned()).or_default() += 1;
    }

    /// How often operations whose name contains `op` were applied.
    pub(crate) fn count(&self, op: &str) -> u64 {
        // a name is `METHOD path id`: `op` is the whole name or its id
        // (`op-1` is not `op-10`)
        self.applied
            .iter()
            .filter(|(name, _)| {
                *name == op
                    || name
                        .strip_suffix(op)
                        .is_some_and(|rest| rest.ends_with(' '))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &'static str) -> Request<Bytes> {
        Request::post("/x").body(Bytes::from(body)).unwrap()
    }

    #[test]
    fn operations_are_named_by_request_id_else_by_body() {
        assert_eq!(
            operation_of(&post(r#"{"requestId":"r-1","n":1}"#), "requestId"),
            operation_of(&post(r#"{"requestId":"r-1","n":2}"#), "requestId")
        );
        assert_eq!(
            operation_of(&post(r#"{"requestId":7}"#), "requestId"),
            "POST /x 7"
        );
        assert_ne!(
            operation_of(&post(r#"{"n":1}"#), "requestId"),
            operation_of(&post(r#"{"n":2}"#), "requestId")
        );
    }

    #[test]
    fn an_operation_is_counted_by_its_whole_id() {
        let (mut ledger, mut counters) = (Ledger::default(), MockCounters::default());
        for name in [
            "POST /x op-1",
            "POST /x op-10",
            "POST /x op-10",
            "POST /x xop-1",
        ] {
            ledger.applied(&mut counters, name.into(), None, None);
        }
        assert_eq!(ledger.count("op-1"), 1);
        assert_eq!(ledger.count("op-10"), 2);
        assert_eq!(ledger.count("POST /x op-10"), 2);
        assert_eq!(ledger.count("op-2"), 0);
    }

    #[test]
    fn a_second_application_is_a_duplicate_whatever_its_key() {
        let (mut ledger, mut counters) = (Ledger::default(), MockCounters::default());
        ledger.applied(&mut counters, "op-1".into(), Some("k1"), None);
        ledger.applied(&mut counters, "op-1".into(), Some("k2"), None);
        ledger.applied(&mut counters, "op-2".into(), None, None);
        assert_eq!(counters.operations_applied, 3);
        assert_eq!(counters.duplicate_applications, 1);
        assert_eq!(counters.duplicate_idempotency_keys, 0);
        assert_eq!(ledger.count("op-1"), 2);
    }
}
