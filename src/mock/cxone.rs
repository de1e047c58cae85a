//! The NICE CXone routes: discovery, `POST /auth/token` (access keys, a
//! JWT-shaped token with `tenantId` and `area` claims), data-extraction
//! jobs and their pre-signed result files, completed contacts.

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use super::reply::{json, query, Reply, Vendor};
use super::server::{invalid_client, MockJob, Shared, State};

/// The discovery documents (no token needed); `None` for other paths.
pub(crate) fn discovery(shared: &Shared, path: &str) -> Option<Reply> {
    let body = match path {
        "/.well-known/openid-configuration" => serde_json::json!({
            "issuer": shared.base,
            "token_endpoint": format!("{}/auth/token", shared.base),
        }),
        "/.well-known/cxone-configuration" => serde_json::json!({
            "area": shared.config.area, "api_endpoint": shared.base,
        }),
        _ => return None,
    };
    Some(json(200, body.to_string()))
}

/// `POST /auth/token`: Basic client credentials, `grant_type=password`
/// with the access key. The token is JWT-shaped (unsigned) and lives
/// [`cxone_token_lifetime`](super::MockConfig::cxone_token_lifetime).
pub(crate) fn token(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let config = &shared.config;
    let Some(form) = shared.client_form(request) else {
        return invalid_client();
    };
    let grant_ok = form.get("grant_type").map(String::as_str) == Some("password")
        && form.get("username") == Some(&config.access_key_id)
        && form.get("password") == Some(&config.access_key_secret);
    if !grant_ok {
        return json(400, r#"{"error":"invalid_grant"}"#);
    }
    state.next_id += 1;
    let access_token = jwt(&serde_json::json!({
        "iss": shared.base, "sub": "mock-api-user", "tenantId": config.tenant_id,
        "area": config.area, "jti": format!("{:016x}-{}", rand::random::<u64>(), state.next_id),
    }));
    let lifetime = config.cxone_token_lifetime;
    state
        .limits
        .issue(access_token.clone(), Vendor::Cxone, lifetime);
    state.counters.tokens_issued += 1;
    let body = serde_json::json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": lifetime.as_secs(),
        "refresh_token": "mock-refresh", "id_token": "mock-id"
    });
    json(200, body.to_string())
}

/// An unsigned JWT (`alg: none`) carrying `claims`.
fn jwt(claims: &serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.mock",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// The CXone API endpoints, once the token and rate limit passed.
pub(crate) fn endpoint(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let config = &shared.config;
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::POST, ["data-extraction", "v1", "jobs"]) => {
            if let Some(wait) = state.limits.extraction(config, &config.tenant_id) {
                state.counters.extraction_limit_violations += 1;
                return Vendor::Cxone.too_many(wait);
            }
            state.next_id += 1;
            let id = format!("dx-{}", state.next_id);
            let script = state.cxone_scripts.pop_front();
            state
                .cxone_jobs
                .insert(id.clone(), MockJob::new(&shared.config, request, script));
            json(202, serde_json::Value::String(id).to_string())
        }
        (&Method::GET, ["data-extraction", "v1", "jobs", id]) => job_status(shared, state, id),
        (&Method::GET, ["incontactapi", "services", _version, "contacts", "completed"]) => {
            contacts(shared, state, request)
        }
        _ => Vendor::Cxone.error(404, "NotFound", "no such endpoint in the mock"),
    }
}

fn job_status(shared: &Shared, state: &mut State, id: &str) -> Reply {
    let Some(job) = state.cxone_jobs.get_mut(id) else {
        return Vendor::Cxone.error(404, "NotFound", "job not found");
    };
    job.polls += 1;
    let (status, message) = match job.script.as_ref().and_then(|s| s.step(job.polls)) {
        Some((status, message)) => (status.clone(), message.clone()),
        None if job.polls < 3 => ("RUNNING".to_owned(), String::new()),
        None => ("SUCCEEDED".to_owned(), String::new()),
    };
    job.read_as(&status, &mut state.ledger);
    let body = match status.as_str() {
        "SUCCEEDED" => {
            state.next_id += 1;
            let sig = format!("sig-{:x}-{}", rand::random::<u32>(), state.next_id);
            let expires = Instant::now() + shared.config.result_url_ttl;
            state.files.insert(sig.clone(), (id.to_owned(), expires));
            serde_json::json!({ "jobStatus": { "id": id, "status": status,
                "result": { "url": format!("{}/files/{id}.csv?sig={sig}", shared.base) } } })
        }
        "FAILED" => serde_json::json!({ "jobStatus": { "id": id, "status": status,
            "result": { "errorMessage": message } } }),
        _ => serde_json::json!({ "jobStatus": { "id": id, "status": status } }),
    };
    json(200, body.to_string())
}

/// A pre-signed result download: no bearer token, a signature that expires.
pub(crate) fn file(state: &mut State, request: &Request<Bytes>) -> Reply {
    if request.headers().contains_key("authorization") {
        state.counters.credentials_sent_to_files += 1;
    }
    let sig = query(request).remove("sig").unwrap_or_default();
    let denied = |message: &str| {
        Response::builder()
            .status(403)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(format!(
                "<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
            ))))
            .expect("valid response")
    };
    let Some((id, expires)) = state.files.get(&sig).cloned() else {
        return denied("Invalid signature");
    };
    if Instant::now() >= expires || !request.uri().path().contains(&id) {
        return denied("Request has expired");
    }
    let mut csv = String::from("contactId,agentId,skill\n");
    for i in 0..5 {
        csv.push_str(&format!("{i},agent-{i},skill-{}\n", i % 2));
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from(csv)))
        .expect("valid response")
}

/// The `lastUpdateTime` of the `n`th contact: one second apart from
/// 2026-11-22T00:00:00Z.
pub(crate) fn updated_at(n: u64) -> String {
    let (day, rest) = (22 + n / 86_400, n % 86_400);
    format!(
        "2026-11-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Completed contacts: `updatedSince` filters, `orderBy=lastUpdateTime`
/// orders oldest first (else newest first, which shifts under new data),
/// `skip`/`top` page, 204 past the end; `_links.next` when
/// [`contact_links`](super::MockConfig::contact_links) is on.
fn contacts(shared: &Shared, state: &mut State, request: &Request<Bytes>) -> Reply {
    let q = query(request);
    let skip: usize = q.get("skip").and_then(|v| v.parse().ok()).unwrap_or(0);
    let top: usize = q
        .get("top")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .clamp(1, 10_000);
    let total = shared.config.contacts as u64 + state.contacts_added;
    let since = q.get("updatedSince").cloned().unwrap_or_default();
    let mut ids: Vec<u64> = (0..total).filter(|n| updated_at(*n) >= since).collect();
    let ascending = q
        .get("orderBy")
        .is_some_and(|o| o.starts_with("lastUpdateTime") && !o.ends_with("desc"));
    if !ascending {
        ids.reverse();
    }
    if skip >= ids.len() {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("valid response");
    }
    let page: Vec<_> = ids[skip..(skip + top).min(ids.len())]
        .iter()
        .map(|n| serde_json::json!({ "contactId": n, "lastUpdateTime": updated_at(*n) }))
        .collect();
    let mut body = serde_json::json!({ "completedContacts": page, "totalRecords": ids.len() });
    if shared.config.contact_links {
        let link = |skip: usize| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in q.iter().filter(|(k, _)| *k != "skip") {
                query.append_pair(k, v);
            }
            query.append_pair("skip", &skip.to_string());
            format!("{}{}?{}", shared.base, request.uri().path(), query.finish())
        };
        body["_links"] = serde_json::json!({ "self": link(skip) });
        if skip + top < ids.len() {
            body["_links"]["next"] = link(skip + top).into();
        }
    }
    json(200, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_times_sort_as_text_in_order() {
        assert_eq!(updated_at(0), "2026-11-22T00:00:00Z");
        assert_eq!(updated_at(3_661), "2026-11-22T01:01:01Z");
        assert!(updated_at(86_399) < updated_at(86_400));
        assert_eq!(updated_at(86_400), "2026-11-23T00:00:00Z");
    }

    #[test]
    fn the_token_is_a_jwt_with_the_tenant_claims() {
        let token = jwt(&serde_json::json!({"tenantId": "t-1"}));
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(claims["tenantId"], "t-1");
    }
}
