//! Gateway: a reverse proxy that wraps any HTTP upstream in the full
//! tower-cx stack (Audit -> Retry -> CircuitBreaker -> PriorityLimit + rate
//! gate -> Bearer -> Timeout).
//!
//! Callers send plain requests; the gateway fetches and refreshes an OAuth2
//! client-credentials token itself (any RFC 6749 server), paces, retries,
//! sheds and audits, and forwards to the upstream. A caller's own
//! `Authorization` header is dropped when the gateway authenticates, so a
//! caller's credentials never reach the upstream. The request priority comes
//! from the `x-priority: high|normal|low` header.
//!
//! ```text
//! cargo run --example gateway -- --mock
//! cargo run --example gateway -- \
//!     --listen 127.0.0.1:8080 \
//!     --upstream https://api.mypurecloud.ie \
//!     --token-url https://login.mypurecloud.ie/oauth/token \
//!     --client-id "$GENESYS_CLIENT_ID" \
//!     --rate 300/60 --audit-file audit.jsonl
//! curl -H 'x-priority: high' http://127.0.0.1:8080/api/v2/users/me
//! ```
//!
//! Flags (every flag also reads an environment variable, named in brackets;
//! the secret should come from the environment, not the command line):
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--listen ADDR` | `TOWER_CX_LISTEN` | `127.0.0.1:8080` |
//! | `--upstream URL` | `TOWER_CX_UPSTREAM` | required unless `--mock` |
//! | `--token-url URL` | `TOWER_CX_TOKEN_URL` | none: no authentication |
//! | `--client-id ID` | `TOWER_CX_CLIENT_ID` | |
//! | `--client-secret SECRET` | `TOWER_CX_CLIENT_SECRET` | |
//! | `--scope S` | `TOWER_CX_SCOPE` | none |
//! | `--auth-style basic\|post` | `TOWER_CX_AUTH_STYLE` | `basic` |
//! | `--concurrency N` | `TOWER_CX_CONCURRENCY` | 16 |
//! | `--queue-depth N` | `TOWER_CX_QUEUE_DEPTH` | 1024 |
//! | `--max-attempts N` | `TOWER_CX_MAX_ATTEMPTS` | 3 |
//! | `--rate N/SECS` | `TOWER_CX_RATE` | no pacing |
//! | `--timeout SECS` | `TOWER_CX_TIMEOUT` | 30 (per attempt) |
//! | `--audit-file PATH` | `TOWER_CX_AUDIT_FILE` | stats only |
//! | `--redis URL` | `TOWER_CX_REDIS` | none: this instance alone |
//! | `--mock` | | start the embedded Genesys mock as upstream |
//!
//! With `--redis redis://127.0.0.1:6379` (and the `redis` feature) the
//! gateway is one member of a fleet: every member shares one token per
//! client, one rate gate (a 429 seen by one pauses all), one breaker state
//! (an outage found by one opens every member's breaker) and one pacing
//! schedule (`--rate` is then the fleet's rate, not each member's). Without
//! Redis the members fall back to their own state and keep serving.
//!
//! On start it prints `listening on http://ADDR`; on Ctrl-C it prints the
//! audit statistics and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tower_cx::audit::{AuditLayer, JsonLinesSink, NoopSink};
use tower_cx::auth::{ClientAuth, ClientCredentials, TokenCache, TokenError};
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::{BoxError, CircuitOpen, Overloaded, RetryDeadlineExceeded};
use tower_cx::priority::{PriorityFromHeaderLayer, PriorityLimitLayer};
use tower_cx::retry::RetryLayer;
use tower_cx::stack::{CxService, Stack};

/// The largest request body the gateway buffers (bodies are buffered so that
/// a retried request can be replayed).
const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type ProxyBody = Either<Incoming, Full<Bytes>>;

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    upstream: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    auth_style: ClientAuth,
    concurrency: usize,
    queue_depth: usize,
    max_attempts: u32,
    rate: Option<(u32, Duration)>,
    timeout: Duration,
    audit_file: Option<String>,
    redis: Option<String>,
    mock: bool,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print_help();
        std::process::exit(0);
    }
    let mock = args.contains("--mock");
    let string = |args: &mut pico_args::Arguments, flag: &'static str, env: &str| {
        args.opt_value_from_str::<_, String>(flag)
            .map(|v| v.or_else(|| std::env::var(env).ok()))
    };
    let number =
        |args: &mut pico_args::Arguments, flag: &'static str, env: &str, default| match string(
            args, flag, env,
        )? {
            None => Ok::<_, BoxError>(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("{flag}: expected a number, got {v:?}").into()),
        };
    let listen = string(&mut args, "--listen", "TOWER_CX_LISTEN")?
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen: expected ADDR:PORT, got {listen:?}"))?;
    let auth_style = match string(&mut args, "--auth-style", "TOWER_CX_AUTH_STYLE")?.as_deref() {
        None | Some("basic") => ClientAuth::Basic,
        Some("post") => ClientAuth::Post,
        Some(other) => return Err(format!("--auth-style: basic or post, got {other:?}").into()),
    };
    let rate = match string(&mut args, "--rate", "TOWER_CX_RATE")? {
        None => None,
        Some(v) => Some(parse_rate(&v)?),
    };
    let parsed = Args {
        listen,
        upstream: string(&mut args, "--upstream", "TOWER_CX_UPSTREAM")?,
        token_url: string(&mut args, "--token-url", "TOWER_CX_TOKEN_URL")?,
        client_id: string(&mut args, "--client-id", "TOWER_CX_CLIENT_ID")?,
        client_secret: string(&mut args, "--client-secret", "TOWER_CX_CLIENT_SECRET")?,
        scope: string(&mut args, "--scope", "TOWER_CX_SCOPE")?,
        auth_style,
        concurrency: number(&mut args, "--concurrency", "TOWER_CX_CONCURRENCY", 16)? as usize,
        queue_depth: number(&mut args, "--queue-depth", "TOWER_CX_QUEUE_DEPTH", 1024)? as usize,
        max_attempts: number(&mut args, "--max-attempts", "TOWER_CX_MAX_ATTEMPTS", 3)? as u32,
        rate,
        timeout: Duration::from_secs(number(&mut args, "--timeout", "TOWER_CX_TIMEOUT", 30)?),
        audit_file: string(&mut args, "--audit-file", "TOWER_CX_AUDIT_FILE")?,
        redis: string(&mut args, "--redis", "TOWER_CX_REDIS")?,
        mock,
    };
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments: {rest:?} (see --help)").into());
    }
    Ok(parsed)
}

/// The module docs above, as `--help`.
fn print_help() {
    for line in include_str!("gateway.rs").lines() {
        match line.strip_prefix("//!") {
            Some(text) => println!("{}", text.strip_prefix(' ').unwrap_or(text)),
            None => break,
        }
    }
}

/// `N/SECS`, e.g. `300/60`.
fn parse_rate(value: &str) -> Result<(u32, Duration), BoxError> {
    let bad = || format!("--rate: expected N/SECS such as 300/60, got {value:?}");
    let (n, secs) = value.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
    if n == 0 || !(secs > 0.0 && secs.is_finite()) {
        return Err(bad().into());
    }
    Ok((n, Duration::from_secs_f64(secs)))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("gateway: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = parse_args()?;

    // `--mock`: the embedded Genesys Cloud mock is the upstream and the
    // token server, with its demo credentials.
    let _mock = if args.mock {
        let mock = tower_cx::mock::MockServer::start().await?;
        let config = mock.config().clone();
        args.upstream.get_or_insert(mock.base_url());
        args.token_url
            .get_or_insert(format!("{}/oauth/token", mock.base_url()));
        args.client_id.get_or_insert(config.client_id);
        args.client_secret.get_or_insert(config.client_secret);
        println!("upstream: embedded Genesys mock on {}", mock.base_url());
        Some(mock)
    } else {
        None
    };

    let upstream: Uri = args
        .upstream
        .as_deref()
        .ok_or("--upstream URL is required (or --mock)")?
        .parse()
        .map_err(|e| format!("--upstream: {e}"))?;
    if upstream.scheme().is_none() || upstream.authority().is_none() {
        return Err("--upstream: an absolute URL such as https://api.example.com".into());
    }

    let audit = match &args.audit_file {
        Some(path) => AuditLayer::new(
            JsonLinesSink::file(path).map_err(|e| format!("--audit-file {path}: {e}"))?,
        ),
        None => AuditLayer::new(NoopSink),
    };
    let fleet = fleet(&args, &audit)?;
    let mut limiter = PriorityLimitLayer::new(args.concurrency).max_queue(args.queue_depth);
    // Shared state is named after the OAuth client (vendors limit per client).
    let shared_name = args
        .client_id
        .clone()
        .unwrap_or_else(|| upstream.to_string());
    if let Some((n, per)) = args.rate {
        limiter = match &fleet {
            #[cfg(feature = "redis")]
            Some(fleet) => limiter.pacer(fleet.pacer(&shared_name, n, per)),
            _ => limiter.pacing(n, per),
        };
    }
    #[allow(unused_mut)]
    let mut breaker = CircuitBreakerLayer::new();
    #[cfg(feature = "redis")]
    if let Some(fleet) = &fleet {
        limiter = limiter.share_gate(fleet.gate(&shared_name));
        // one member finding the upstream down opens every member's breaker
        breaker = breaker.share_state(fleet.breaker(&upstream.to_string()));
    }
    let mut stack = Stack::new()
        .audit(audit)
        .retry(
            RetryLayer::new()
                .max_attempts(args.max_attempts)
                .auto_idempotency_key(true),
        )
        .breaker(breaker)
        .limiter(limiter)
        .timeout(args.timeout);
    let authenticates = args.token_url.is_some();
    if let Some(token_url) = &args.token_url {
        let client_id = args
            .client_id
            .clone()
            .ok_or("--client-id is required with --token-url")?;
        let secret = args
            .client_secret
            .clone()
            .ok_or("--client-secret or TOWER_CX_CLIENT_SECRET is required with --token-url")?;
        let mut credentials =
            ClientCredentials::new(token_url, client_id, secret)?.client_auth(args.auth_style);
        if let Some(scope) = &args.scope {
            credentials = credentials.scope(scope.clone());
        }
        let tokens = match &fleet {
            #[cfg(feature = "redis")]
            Some(fleet) => TokenCache::new(fleet.client_credentials(credentials)),
            _ => TokenCache::new(credentials),
        };
        // the token goes to the upstream's origin and nowhere else
        stack = stack.bearer(tokens).allow_origin(&upstream.to_string())?;
    }
    let _ = &shared_name;
    let handles = stack.handles();
    let client = stack.build();

    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("upstream {upstream}");

    let upstream = Arc::new(upstream);
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                proxy(
                    request,
                    client.clone(),
                    upstream.clone(),
                    peer,
                    authenticates,
                )
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }

    let stats = handles.stats.snapshot();
    println!(
        "requests {} successes {} http errors {} errors {} attempts {} retries {} shed {} p50 {:.1} ms p99 {:.1} ms",
        stats.requests,
        stats.successes,
        stats.http_errors,
        stats.errors,
        stats.attempts,
        stats.retries,
        stats.shed,
        stats.p50_ms,
        stats.p99_ms
    );
    Ok(())
}

#[cfg(feature = "redis")]
type Fleet = tower_cx::fleet::RedisFleet;
#[cfg(not(feature = "redis"))]
type Fleet = std::convert::Infallible;

/// The fleet's shared state, with `--redis`; its degradations and
/// recoveries go to the audit stream.
fn fleet(args: &Args, audit: &AuditLayer) -> Result<Option<Fleet>, BoxError> {
    let Some(url) = &args.redis else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let fleet = tower_cx::fleet::RedisFleet::new(url)?.audit_to(audit);
        println!("fleet state in Redis (shared token, rate gate and pacing)");
        Ok(Some(fleet))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, audit);
        Err("--redis needs the redis feature: cargo run --features redis --example gateway".into())
    }
}

/// Forward one request through the stack.
async fn proxy(
    request: Request<Incoming>,
    client: CxService,
    upstream: Arc<Uri>,
    peer: SocketAddr,
    authenticates: bool,
) -> Result<Response<ProxyBody>, Infallible> {
    let request = match to_upstream(request, &upstream, peer, authenticates).await {
        Ok(request) => request,
        Err(response) => return Ok(response),
    };
    let service = PriorityFromHeaderLayer::new(HeaderName::from_static("x-priority")).layer(client);
    Ok(match service.oneshot(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(error) => error_response(&error),
    })
}

/// The upstream request: same method, path, query and end-to-end headers,
/// the body buffered so that it can be replayed.
async fn to_upstream(
    request: Request<Incoming>,
    upstream: &Uri,
    peer: SocketAddr,
    authenticates: bool,
) -> Result<Request<Body>, Response<ProxyBody>> {
    let (mut parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!("request bodies are limited to {MAX_REQUEST_BODY} bytes"),
            ))
        }
        Err(e) => {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "bad_request_body",
                &e.to_string(),
            ))
        }
    };
    let base_path = upstream.path().trim_end_matches('/');
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let uri = Uri::builder()
        .scheme(upstream.scheme().cloned().expect("checked at start"))
        .authority(upstream.authority().cloned().expect("checked at start"))
        .path_and_query(format!("{base_path}{path_and_query}"))
        .build()
        .map_err(|e| plain(StatusCode::BAD_REQUEST, "bad_uri", &e.to_string()))?;
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if authenticates {
        // The gateway authenticates: the caller's credentials stay here.
        parts.headers.remove(header::AUTHORIZATION);
    }
    if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
        parts.headers.append("x-forwarded-for", value);
    }
    Ok(Request::from_parts(parts, Body::from_bytes(body)))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A typed error from the stack as an HTTP answer to the caller.
fn error_response(error: &BoxError) -> Response<ProxyBody> {
    let chain = || {
        std::iter::successors(Some(&**error as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if let Some(open) = chain().find_map(|e| e.downcast_ref::<CircuitOpen>()) {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            &open.to_string(),
        );
        if let Some(wait) = open.retry_in() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.max(1).into());
        }
        return response;
    }
    if let Some(overloaded) = chain().find_map(|e| e.downcast_ref::<Overloaded>()) {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &overloaded.to_string(),
        );
        response.headers_mut().insert(header::RETRY_AFTER, 1.into());
        return response;
    }
    if chain().any(|e| e.is::<RetryDeadlineExceeded>() || e.is::<tower::timeout::error::Elapsed>())
    {
        return plain(StatusCode::GATEWAY_TIMEOUT, "timeout", &error.to_string());
    }
    if chain().any(|e| e.is::<TokenError>()) {
        return plain(StatusCode::BAD_GATEWAY, "token", &error.to_string());
    }
    plain(StatusCode::BAD_GATEWAY, "upstream", &error.to_string())
}

fn plain(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": kind, "message": message }).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
