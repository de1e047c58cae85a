//! The Genesys Cloud routes: `POST /oauth/token`, users, data actions and
//! analytics conversation-details jobs.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request};

use super::reply::{json, query, Reply, Vendor};
use super::server::{invalid_client, MockJob, Shared, State};

/// `POST /oauth/token`: Basic client credentials,
/// `grant_type=client_credentials`.
pub(crate) fn token(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let Some(form) = shared.client_form(request) else {
        return invalid_client();
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json(400, r#"{"error":"invalid_grant"}"#);
    }
    let lifetime = shared.config.token_lifetime;
    state.next_id += 1;
    let access_token = format!("mock-{:016x}-{}", rand::random::<u64>(), state.next_id);
    state
        .limits
        .issue(access_token.clone(), Vendor::Genesys, lifetime);
    state.counters.tokens_issued += 1;
    let body = serde_json::json!({
        "access_token": access_token, "token_type": "bearer", "expires_in": lifetime.as_secs()
    });
    json(200, body.to_string())
}

/// The Genesys API endpoints, once the token and rate limit passed.
pub(crate) fn endpoint(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["api", "v2", "users"]) => users(shared, &query(request)),
        (&Method::POST, ["api", "v2", "integrations", "actions", id, "test"]) => {
            let input: serde_json::Value =
                serde_json::from_slice(request.body()).unwrap_or_default();
            json(200, test_report(id, input).to_string())
        }
        (&Method::POST, ["api", "v2", "integrations", "actions", _id, "execute"]) => {
            let input: serde_json::Value =
                serde_json::from_slice(request.body()).unwrap_or_default();
            json(
                200,
                serde_json::json!({ "ok": true, "input": input }).to_string(),
            )
        }
        (&Method::POST, ["api", "v2", "analytics", "conversations", "details", "jobs"]) => {
            state.next_id += 1;
            let id = format!("job-{}", state.next_id);
            let script = state.genesys_scripts.pop_front();
            state
                .genesys_jobs
                .insert(id.clone(), MockJob::new(&shared.config, request, script));
            json(202, serde_json::json!({ "jobId": id }).to_string())
        }
        (&Method::GET, ["api", "v2", "analytics", "conversations", "details", "jobs", id]) => {
            job_status(state, id)
        }
        (
            &Method::GET,
            ["api", "v2", "analytics", "conversations", "details", "jobs", id, "results"],
        ) => {
            if !state.genesys_jobs.contains_key(*id) {
                return Vendor::Genesys.error(404, "not.found", "job not found");
            }
            let last = query(request).contains_key("cursor");
            let conversations: Vec<_> = (0..3)
                .map(|i| serde_json::json!({ "conversationId": format!("conv-{}-{i}", u8::from(last)) }))
                .collect();
            let mut body = serde_json::json!({ "conversations": conversations });
            if !last {
                body["cursor"] = "mock-cursor".into();
            }
            json(200, body.to_string())
        }
        _ => Vendor::Genesys.error(404, "not.found", "no such endpoint in the mock"),
    }
}

fn users(shared: &Shared, q: &HashMap<String, String>) -> Reply {
    let total = shared.config.users;
    let page: usize = q
        .get("pageNumber")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size: usize = q
        .get("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
        .clamp(1, 500);
    let count = total.div_ceil(size).max(1);
    let start = (page - 1) * size;
    let entities: Vec<_> = (start..(start + size).min(total))
        .map(|i| serde_json::json!({"id": format!("user-{i}"), "name": format!("User {i}")}))
        .collect();
    let mut body = serde_json::json!({
        "entities": entities, "pageNumber": page, "pageSize": size,
        "pageCount": count, "total": total,
    });
    if page < count {
        body["nextUri"] = format!("/api/v2/users?pageNumber={}&pageSize={size}", page + 1).into();
    }
    json(200, body.to_string())
}

fn test_report(id: &str, input: serde_json::Value) -> serde_json::Value {
    if id.starts_with("fail-") {
        serde_json::json!({
            "success": false,
            "operations": [
                {"step": 1, "name": "Resolve request", "success": true},
                {"step": 2, "name": "Execute", "success": false}
            ],
            "error": {
                "message": "Request to backend service failed.", "code": "bad.request",
                "status": 400, "details": [{"errorCode": "ACTION.REMOTE_ENDPOINT"}],
                "errors": [{"message": "upstream down", "status": 503}]
            }
        })
    } else {
        serde_json::json!({
            "success": true,
            "operations": [
                {"step": 1, "name": "Resolve request", "success": true},
                {"step": 2, "name": "Execute", "success": true},
                {"step": 3, "name": "Resolve translation map", "success": true}
            ],
            "finalResult": { "ok": true, "input": input }
        })
    }
}

fn job_status(state: &mut State, id: &str) -> Reply {
    let Some(job) = state.genesys_jobs.get_mut(id) else {
        return Vendor::Genesys.error(404, "not.found", "job not found");
    };
    job.polls += 1;
    let (status, message) = match job.script.as_ref().and_then(|s| s.step(job.polls)) {
        Some((status, message)) => (status.clone(), message.clone()),
        None => {
            let status = match job.polls {
                1 => "QUEUED",
                2 => "PENDING",
                _ => "FULFILLED",
            };
            (status.to_owned(), String::new())
        }
    };
    job.read_as(&status, &mut state.ledger);
    let mut body = serde_json::json!({ "state": status, "submissionDate": "2026-11-22T10:00:00Z" });
    if status == "FAILED" {
        body["errorMessage"] = message.into();
    }
    json(200, body.to_string())
}
