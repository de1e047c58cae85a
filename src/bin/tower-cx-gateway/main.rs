//! tower-cx-gateway: a reverse proxy that wraps any HTTP upstream in the full
//! tower-cx stack (Audit -> Retry -> CircuitBreaker -> PriorityLimit + rate
//! gate -> Bearer -> Timeout).
//!
//! Callers send plain requests; the gateway fetches and refreshes an OAuth2
//! client-credentials token itself (any RFC 6749 server), paces, retries,
//! sheds and audits, and forwards to the upstream. A caller's own
//! `Authorization` header is dropped when the gateway authenticates, so a
//! caller's credentials never reach the upstream. The request priority comes
//! from the `x-priority: high|normal|low` header. Callers speak HTTP/1.1,
//! or HTTP/2 with prior knowledge (`h2c`: a connection that opens with the
//! HTTP/2 preface).
//!
//! ```text
//! cargo install tower-cx --features gateway
//! tower-cx-gateway --mock --listen 127.0.0.1:8080
//! tower-cx-gateway \
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
//! | `--rate N/SECS` | `TOWER_CX_RATE` | paced to the limit the upstream advertises (`inin-ratelimit-*`, `RateLimit`, `X-RateLimit-*`), or adapted to its 429s; with `--rate`, the same but never faster than N per SECS |
//! | `--timeout SECS` | `TOWER_CX_TIMEOUT` | 30 (per attempt) |
//! | `--deadline SECS` | `TOWER_CX_DEADLINE` | 30 (per request: no attempt starts after it, so retries, backoffs, queueing and waiting for an open breaker's probe all end by then; an attempt already sent runs up to `--timeout`, so a caller waits at most about the two together; a breaker whose probe is past the deadline is answered 503 `circuit_open` at once) |
//! | `--audit-file PATH` | `TOWER_CX_AUDIT_FILE` | stats only |
//! | `--dead-letter-file PATH` | `TOWER_CX_DEAD_LETTER_FILE` | none: failures are audited only |
//! | `--redis URL` | `TOWER_CX_REDIS` | none: this instance alone |
//! | `--upstream-honours-keys` | `TOWER_CX_UPSTREAM_HONOURS_KEYS=1` | off: POST/PATCH are not retried once they may have been applied |
//! | `--header-timeout SECS` | `TOWER_CX_HEADER_TIMEOUT` | 10 (also closes a keep-alive connection idle that long) |
//! | `--send-timeout SECS` | `TOWER_CX_SEND_TIMEOUT` | 30 (a client that reads none of the answer from its socket for that long is disconnected; an HTTP/2 client that keeps reading but opens no flow-control window is not) |
//! | `--body-timeout SECS` | `TOWER_CX_BODY_TIMEOUT` | 30 (whole request body, after the headers; then 408) |
//! | `--max-connections N` | `TOWER_CX_MAX_CONNECTIONS` | 512 (more wait in the listen backlog) |
//! | `--max-body-bytes N` | `TOWER_CX_MAX_BODY_BYTES` | 8388608 (8 MiB; then 413, a declared length before reading) |
//! | `--max-buffered-bytes N` | `TOWER_CX_MAX_BUFFERED_BYTES` | 67108864 (64 MiB of bodies across requests; then 503) |
//! | `--max-header-bytes N` | `TOWER_CX_MAX_HEADER_BYTES` | 32768 (request line and headers; then 431; also 431 past 100 header lines, whatever their size) |
//! | `--max-uri-bytes N` | `TOWER_CX_MAX_URI_BYTES` | 8192 (path and query; then 414) |
//! | `--shutdown-grace SECS` | `TOWER_CX_SHUTDOWN_GRACE` | 30 (on SIGTERM or Ctrl-C, for requests in flight to finish) |
//! | `--mock` | `TOWER_CX_MOCK=1` | start the embedded Genesys mock as upstream (feature `mock`) |
//!
//! Every number is checked at start-up: a value out of range ends the
//! gateway with a message naming the flag and exit status 2.
//!
//! With `--redis redis://127.0.0.1:6379` (and the `redis` feature) the
//! gateway is one member of a fleet: every member shares one token per
//! client, one rate gate (a 429 seen by one pauses all, a daily cap seen by
//! one exhausts all), one breaker state
//! (an outage found by one opens every member's breaker), one pacing
//! schedule (`--rate` is then the fleet's rate, not each member's; without
//! `--rate`, the rate any member learns from the upstream paces the whole
//! fleet) and one
//! retry budget (retries add at most 20 % to the fleet's requests, not to
//! each member's). The URL may be any node of a Redis Cluster. Without
//! Redis the members fall back to their own state and keep serving.
//!
//! Only `GET HEAD POST PUT PATCH DELETE OPTIONS` are forwarded; any other
//! method (TRACE would echo the token, CONNECT would tunnel with it) is
//! answered 405 with `Allow`. Requests go to the configured upstream only,
//! whatever their absolute-form target or `Host` says; a redirect from the
//! upstream is passed back to the caller, never followed.
//!
//! Retries never apply a side effect twice: a POST or PATCH whose outcome is
//! unknown (the upstream answered 500/502/504, timed out or dropped the
//! connection after it was sent) is not retried, and the caller gets 502
//! (504 after a timeout) with `x-cx-outcome: unknown`, never a success.
//! With `--upstream-honours-keys` the upstream's origin is declared to apply a
//! request with an `Idempotency-Key` at most once (the gateway adds a key to
//! each POST and PATCH), and such requests are retried like a GET. If the
//! token endpoint refuses the gateway, callers get 502 "upstream
//! authentication failed"; the endpoint's text goes to the audit stream only.
//!
//! A daily cap (the upstream asks for a wait over 180 s, as the Genesys
//! SDKs read a `Retry-After` that long) is a state, not a wait: the
//! upstream's 429 goes back to its caller, and until the cap's time every
//! request is answered 429 with `Retry-After` (the seconds until it resets)
//! and `{"error":"quota_exhausted",..}`, without reaching the upstream;
//! with `--redis` every member of the fleet does so until the same time.
//! The status page shows the quota exhausted and when it resets.
//!
//! Slow or large requests cannot hold the gateway open: see the limits above
//! (`limits.rs` says what each one does). Accept errors (out of descriptors)
//! pause accepting for 5 ms, doubling up to 1 s, logged once per pause run.
//!
//! The gateway answers these paths itself and never forwards them:
//! `GET /healthz` (200 while it serves), `GET /readyz` (200 when a token is
//! in hand and the breaker is not open; 503 with `{"ready":false,"reason":..}`
//! otherwise), `GET /metrics` (Prometheus text: the OpenTelemetry HTTP
//! client instruments and the `tower_cx_` ones) and `GET /_cx/status` (the
//! operator's status page: the token's expiry, breaker, rate gate, queue per
//! priority, pacing, fleet state, recent retries and sheds; HTML reloading
//! itself every 2 s, or JSON at `/_cx/status.json`, with `?format=json` or
//! with `Accept: application/json`). Serve them to operators only.
//!
//! With `--dead-letter-file`, every request that fails for good (after its
//! retries) and every request dropped before its outcome (its caller went
//! away, or the shutdown grace ran out: code `cancelled`) is appended as one
//! JSON line with a replayable copy (method, URL with secret-looking query
//! values redacted, headers without credentials, UTF-8 body). The body is
//! kept as it was sent, since a replay needs it: a secret inside a body is
//! in the file, so keep the file as private as the traffic.
//!
//! On start it prints `listening on http://ADDR`. On SIGTERM or Ctrl-C it
//! stops accepting (new connections are refused), lets requests in flight
//! finish for up to `--shutdown-grace`, drops, counts and dead-letters what
//! remains, prints the audit statistics and exits 0.

mod admin;
mod assemble;
mod flags;
mod limits;
mod protocol;
mod proxy;
mod serve;
mod shared;
mod stall;

use std::sync::Arc;

use http::Uri;
use tokio::net::TcpListener;
use tower_cx::error::BoxError;

use admin::Admin;
use flags::Flags;
use limits::BodyBudget;
use proxy::Gateway;

#[tokio::main]
async fn main() {
    let flags = match Flags::from_env() {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("gateway: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(flags).await {
        eprintln!("gateway: {e}");
        std::process::exit(1);
    }
}

/// The module docs above, as `--help`.
fn print_help() {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for line in include_str!("main.rs").lines() {
        let Some(text) = line.strip_prefix("//!") else {
            break;
        };
        // a reader that stops early (`--help | head`) is not an error
        if writeln!(out, "{}", text.strip_prefix(' ').unwrap_or(text)).is_err() {
            return;
        }
    }
}

async fn run(flags: Flags) -> Result<(), BoxError> {
    #[cfg(feature = "mock")]
    let mut flags = flags;
    // `--mock`: the embedded Genesys Cloud mock is the upstream and the
    // token server, with its demo credentials.
    #[cfg(feature = "mock")]
    let _mock = if flags.mock {
        if flags.upstream.is_some() {
            return Err("--mock is the upstream: give --mock or --upstream, not both".into());
        }
        let mock = tower_cx::mock::MockServer::start().await?;
        let config = mock.config().clone();
        flags.upstream.get_or_insert(mock.base_url());
        flags
            .token_url
            .get_or_insert(format!("{}/oauth/token", mock.base_url()));
        flags.client_id.get_or_insert(config.client_id);
        flags.client_secret.get_or_insert(config.client_secret);
        println!("upstream: embedded Genesys mock on {}", mock.base_url());
        Some(mock)
    } else {
        None
    };
    #[cfg(not(feature = "mock"))]
    if flags.mock {
        return Err(
            "--mock needs the mock feature: cargo install tower-cx --features gateway,mock".into(),
        );
    }

    let upstream: Uri = flags
        .upstream
        .as_deref()
        .ok_or("--upstream URL is required (or --mock)")?
        .parse()
        .map_err(|e| format!("--upstream: {e}"))?;
    let http = upstream
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    if !http || upstream.authority().is_none() || upstream.query().is_some() {
        return Err(
            "--upstream: an absolute http:// or https:// URL without a query, such as https://api.example.com"
                .into(),
        );
    }

    let metrics = admin::install_recorder()?;
    let assemble::Assembled {
        upstream: stack,
        handles,
        audit_file,
        board,
    } = assemble::build_stack(&flags, &upstream)?;
    if let Some(tokens) = &handles.tokens {
        admin::keep_token(tokens.clone());
    }
    let gateway = Gateway {
        admin: Arc::new(Admin::new(&handles, metrics).status(board)),
        stack,
        upstream: Arc::new(upstream),
        authenticates: flags.token_url.is_some(),
        limits: Arc::new(flags.limits.clone()),
        budget: BodyBudget::new(flags.limits.max_buffered_bytes),
    };

    let listener = TcpListener::bind(flags.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", flags.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("upstream {}", gateway.upstream);
    let stopped = serve::serve(listener, gateway, flags.shutdown_grace).await;

    if let Some(file) = audit_file {
        // the dropped requests' `cancelled` lines included
        tokio::task::spawn_blocking(move || file.flush()).await?;
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
    println!(
        "stopped ({} request(s) dropped at shutdown)",
        stopped.dropped
    );
    Ok(())
}
