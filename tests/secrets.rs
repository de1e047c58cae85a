//! Secrets: a full scenario against the embedded mock (token fetch, refresh,
//! a 401 and its replay, retries, a failed token refresh, dead letters, an
//! insecure URL) with every audit sink attached (JSON lines, callback,
//! tracing, a webhook to a loopback server, JSON-lines dead letters) and
//! every event hook, capturing every `Debug`, `Display`, error message,
//! audit line and tracing line: neither the client secret nor any issued
//! token appears anywhere.
//!
//! Also: credentials are refused over plain HTTP to non-loopback hosts, and
//! the bearer token is never sent to another origin than the API's.
#![cfg(feature = "mock")]

#[path = "support/events.rs"]
mod events;
#[path = "support/loopback.rs"]
mod loopback;
#[path = "support/upstream.rs"]
mod upstream;
#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, ServiceExt};
use tower_cx::audit::{
    callback, dead_letter_fn, AuditLayer, DeadLetter, FanOut, JsonLinesDeadLetters, JsonLinesSink,
    TracingSink, WebhookSink,
};
use tower_cx::auth::{BearerLayer, ClientCredentials, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::error::{BoxError, InsecureUrl};
use tower_cx::mock::{Fault, MockServer};
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

use events::{EventCapture, Written};
use upstream::Scripted;

const CLIENT_SECRET: &str = "cs-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

/// Every error in the chain, with `Display` and `Debug`.
fn describe(error: &BoxError) -> String {
    let mut out = format!("{error} | {error:?}");
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(&format!(" | caused by {e} | {e:?}"));
        source = e.source();
    }
    out
}

/// A loopback server that records the `Authorization` header of each
/// request (or `-` when there is none) and its body, and answers `status`.
async fn recording_server(status: StatusCode) -> (String, EventCapture<String>) {
    let seen = EventCapture::new();
    let record = seen.clone();
    let url = loopback::serve(service_fn(move |req: Request<Body>| {
        let auth = req
            .headers()
            .get("authorization")
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
        let body = req.body().as_bytes().unwrap();
        let line = format!("{auth} {}", String::from_utf8_lossy(body));
        record.push(line);
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        async { Ok::<_, std::convert::Infallible>(response) }
    }))
    .await;
    (url, seen)
}

#[tokio::test(start_paused = true)]
async fn no_secret_or_token_appears_in_any_output() {
    let capture = Written::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = vendor_stacks::mock_with(|c| {
        c.client_secret = CLIENT_SECRET.into();
        c.token_lifetime = Duration::from_secs(5);
    })
    .await;
    let c = mock.config().clone();
    let (webhook_url, webhook_seen) = recording_server(StatusCode::OK).await;

    // the token client records every token the endpoint issues
    let issued = EventCapture::<String>::new();
    let http = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let token_client = {
        let issued = issued.clone();
        let http = http.clone();
        service_fn(move |request: Request<Body>| {
            let issued = issued.clone();
            let http = http.clone();
            async move {
                let (parts, body) = http.request(request).await?.into_parts();
                let bytes = body.collect().await?.to_bytes();
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    if let Some(token) = json["access_token"].as_str() {
                        issued.push(token.to_owned());
                    }
                }
                Ok::<_, BoxError>(Response::from_parts(parts, Full::new(bytes)))
            }
        })
    };
    let credentials =
        ClientCredentials::genesys(&mock.genesys_region(), c.client_id.clone(), CLIENT_SECRET)
            .unwrap()
            .http_client(token_client)
            .retry(
                RetryLayer::new()
                    .max_attempts(2)
                    .backoff(Backoff::constant(Duration::from_millis(10))),
            );
    capture.push_line(format!("{credentials:?}"));

    // every sink and every hook writes into the capture
    let json_lines = JsonLinesSink::new(capture.clone());
    let webhook = WebhookSink::builder(&format!("{webhook_url}/audit"))
        .unwrap()
        .flush_interval(Duration::from_millis(100))
        .build();
    let sinks = FanOut::new()
        .with(json_lines.clone())
        .with(TracingSink)
        .with(webhook.clone())
        .with({
            let capture = capture.clone();
            callback(move |event| capture.push_line(format!("{} {event:?}", event.to_json())))
        });
    let letters_file = Written::default();
    let letters = {
        let capture = capture.clone();
        let file = JsonLinesDeadLetters::new(letters_file.clone());
        dead_letter_fn(move |letter: DeadLetter| {
            capture.push_line(format!("{letter:?}"));
            capture.push_line(format!(
                "{:?}",
                letter.request.as_ref().map(|r| r.headers())
            ));
            tower_cx::audit::DeadLetterSink::dead_letter(&file, letter);
        })
    };
    let tokens = TokenCache::builder(credentials)
        .on_event({
            let capture = capture.clone();
            move |event| capture.push_line(format!("{event:?}"))
        })
        .build();
    let bearer = BearerLayer::new(tokens.clone())
        .allow_origin(&mock.base_url())
        .unwrap();
    let stack = Stack::new()
        .audit(
            AuditLayer::new(sinks)
                .record_bodies(true)
                .dead_letters(letters),
        )
        .retry(
            RetryLayer::new()
                .max_attempts(3)
                .backoff(Backoff::constant(Duration::from_millis(50)))
                .auto_idempotency_key(true)
                .on_event({
                    let capture = capture.clone();
                    move |event| capture.push_line(format!("{event:?}"))
                }),
        )
        .breaker(CircuitBreakerLayer::new().on_event({
            let capture = capture.clone();
            move |event| capture.push_line(format!("{event:?}"))
        }))
        .limiter(PriorityLimitLayer::new(4).on_event({
            let capture = capture.clone();
            move |event| capture.push_line(format!("{event:?}"))
        }))
        .bearer_layer(bearer)
        .timeout(Duration::from_secs(5));
    capture.push_line(format!("{stack:?}"));
    let handles = stack.handles();
    // the API client records the Authorization values it sends
    let sent = EventCapture::<String>::new();
    let api_client = {
        let sent = sent.clone();
        service_fn(move |request: Request<Body>| {
            if let Some(auth) = request.headers().get("authorization") {
                sent.push(
                    auth.to_str()
                        .unwrap()
                        .trim_start_matches("Bearer ")
                        .to_owned(),
                );
            }
            http.request(request)
        })
    };
    let client = stack.build_with(api_client);

    let base = mock.base_url();
    let send = |request: Request<Body>| {
        let client = client.clone();
        let capture = capture.clone();
        async move {
            capture.push_line(format!("{request:?}"));
            match client.oneshot(request).await {
                Ok(response) => {
                    capture.push_line(format!("{response:?}"));
                    let status = response.status();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    capture.push_line(String::from_utf8_lossy(&body));
                    Ok(status)
                }
                Err(error) => {
                    capture.push_line(describe(&error));
                    Err(error)
                }
            }
        }
    };
    let users = || {
        Request::get(format!("{base}/api/v2/users"))
            .body(Body::empty())
            .unwrap()
    };

    // 1. first token
    assert_eq!(send(users()).await.unwrap(), StatusCode::OK);
    // 2. a 401: the token is dropped, a new one fetched, the request replayed
    mock.fault(Some("/api/v2/users"), Fault::Status(401), 1);
    assert_eq!(send(users()).await.unwrap(), StatusCode::OK);
    // 3. retries through 503s
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 2);
    assert_eq!(send(users()).await.unwrap(), StatusCode::OK);
    // 4. the token expires: refreshed
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(send(users()).await.unwrap(), StatusCode::OK);
    // 5. a final error and exhausted retries: dead letters
    mock.fault(
        Some("/api/v2/integrations"),
        Fault::DataActionError("ACTION.REMOTE_ENDPOINT".into()),
        1,
    );
    let action = format!("{base}/api/v2/integrations/actions/a1/execute");
    let post = |body: &str| {
        Request::post(action.clone())
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    assert_eq!(
        send(post(r#"{"customer":1}"#)).await.unwrap(),
        StatusCode::BAD_REQUEST
    );
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 3);
    assert_eq!(
        send(users()).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // 6. the token endpoint fails while the token has expired: typed errors
    mock.fault(Some("/oauth/token"), Fault::Status(500), usize::MAX);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let error = send(users()).await.unwrap_err();
    assert!(error.is::<TokenError>(), "{error}");
    mock.clear_faults();
    mock.fault(Some("/oauth/token"), Fault::Status(401), usize::MAX);
    let refused = tokens.refresh().await.unwrap_err();
    capture.push_line(format!("{refused} {refused:?}"));
    let _ = send(users()).await;
    mock.clear_faults();
    // 7. a plain-HTTP URL to a remote host: refused before anything is sent
    let bare_bearer = BearerLayer::new(tokens.clone());
    let insecure = tower::Layer::layer(&bare_bearer, Scripted::new([]))
        .oneshot(
            Request::get("http://api.example.com/x")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(insecure.is::<InsecureUrl>());
    capture.push_line(describe(&insecure));
    // recover, and one more to a different origin: sent without a token
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(send(users()).await.unwrap(), StatusCode::OK);
    assert_eq!(
        send(
            Request::get(format!("{webhook_url}/elsewhere"))
                .body(Body::empty())
                .unwrap()
        )
        .await
        .unwrap(),
        StatusCode::OK
    );

    // drain every sink
    json_lines.flush();
    webhook.flush().await;
    webhook.flush().await;
    capture.push_line(format!(
        "{handles:?} {:?} {:?}",
        handles.stats.snapshot(),
        tokens.status()
    ));
    capture.push_line(format!("{tokens:?} {webhook:?} {json_lines:?}"));
    capture.push_line(letters_file.text());
    for line in webhook_seen.all().iter() {
        capture.push_line(line);
    }

    let text = capture.text();
    let issued = issued.all();
    let sent = sent.all();
    // the scenario did what it says: several tokens, all used, every sink fed
    assert!(issued.len() >= 3, "tokens issued: {}", issued.len());
    assert!(sent.iter().all(|t| issued.contains(t)));
    assert!(webhook.delivered() > 0);
    for expected in [
        "\"event\":\"request.finished\"",
        "\"event\":\"token.invalidated\"",
        "\"event\":\"retry.scheduled\"",
        "event=\"request.started\"",
        "\"error_code\":\"http_error\"",
        "TokenRefreshed",
        "refusing to send credentials",
    ] {
        assert!(text.contains(expected), "missing {expected} in the capture");
    }
    // the request to another origin carried no token
    let elsewhere = webhook_seen
        .all()
        .iter()
        .filter(|l| l.starts_with("- "))
        .count();
    assert!(elsewhere >= 1);
    assert!(webhook_seen
        .all()
        .iter()
        .all(|line| !line.starts_with("Bearer")));

    // and the point: no secret anywhere
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{CLIENT_SECRET}", c.client_id));
    let mut secrets = vec![CLIENT_SECRET.to_owned(), basic];
    secrets.extend(issued);
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the output ({} bytes captured)",
            text.len()
        );
    }
}

#[tokio::test]
async fn credentials_are_refused_over_plain_http_to_remote_hosts() {
    for url in [
        "http://login.mypurecloud.com/oauth/token",
        "http://10.1.2.3/oauth/token",
        "HTTP://login.example.com/",
    ] {
        let error = ClientCredentials::new(url, "id", CLIENT_SECRET).unwrap_err();
        assert!(matches!(error, TokenError::Insecure(_)), "{url}: {error:?}");
        assert!(!format!("{error} {error:?}").contains(CLIENT_SECRET));
    }
    for url in [
        "http://127.0.0.1:1/token",
        "http://localhost/token",
        "http://[::1]/token",
    ] {
        assert!(
            ClientCredentials::new(url, "id", CLIENT_SECRET).is_ok(),
            "{url}"
        );
    }
    // the bearer layer refuses to attach a token to a remote plain-HTTP URL,
    // and nothing reaches the inner service
    let upstream = Scripted::new([]);
    let tokens = TokenCache::new(tower_cx::auth::source_fn(|| async {
        Ok::<_, TokenError>(tower_cx::auth::Token::new(
            "tok-never-sent",
            Duration::from_secs(60),
        ))
    }));
    let service = tower::Layer::layer(&BearerLayer::new(tokens), upstream.clone());
    let error = service
        .oneshot(
            Request::get("http://api.example.com/")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.downcast_ref::<InsecureUrl>().unwrap().host(),
        "api.example.com"
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn the_token_goes_to_the_api_origin_only() {
    let mock = MockServer::start().await.unwrap();
    let c = mock.config().clone();
    let (other, seen) = recording_server(StatusCode::UNAUTHORIZED).await;
    // Stack::genesys allows the region's API origin only
    let stack = Stack::genesys(&mock.genesys_region(), c.client_id, c.client_secret).unwrap();
    let tokens = stack.handles().tokens.unwrap();
    let client = stack.build();
    let get = |url: String| {
        client
            .clone()
            .oneshot(Request::get(url).body(Body::empty()).unwrap())
    };
    assert_eq!(
        get(format!("{}/api/v2/users", mock.base_url()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // another origin (same host, other port) answering 401: no token sent,
    // no refresh, the 401 returned as it is
    let response = get(format!("{other}/download/file.csv")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(seen.all(), ["- "]);
    assert_eq!(tokens.status().refresh_count, 1);
    assert_eq!(mock.counters().tokens_issued, 1);

    // without allow_origin the bearer layer sends its token everywhere: a
    // user who calls several hosts sets the origins
    let open = tower::Layer::layer(
        &BearerLayer::new(tokens.clone()),
        Client::builder(TokioExecutor::new()).build_http::<Body>(),
    );
    open.oneshot(
        Request::get(format!("{other}/x"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(seen.all()[1].starts_with("Bearer "));
}

/// A token endpoint that echoes what it was sent (the `Authorization`
/// header and the form body) in its error text, as some do, padded so the
/// echo straddles the 256-character cut of error text.
fn echoing_endpoint(
    status: u16,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |request: Request<Body>| async move {
        let auth = request
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let form = String::from_utf8(request.into_body().as_bytes().unwrap().to_vec()).unwrap();
        let echo = format!("{} got {auth} with {form}", "x".repeat(240));
        let body = serde_json::json!({
            "error": format!("invalid_client {auth} {form}"),
            "error_description": echo,
        });
        Ok::<_, BoxError>(
            Response::builder()
                .status(status)
                .header("content-type", format!("application/json; echo={auth}"))
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
    })
}

#[tokio::test]
async fn token_endpoint_text_that_echoes_credentials_is_scrubbed() {
    const ACCESS_KEY_SECRET: &str = "aks+/=9f8e7d6c5b4a"; // form-encoded when sent
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("client-id:{CLIENT_SECRET}"));
    let url = "https://cxone.example.com/auth/token";
    let sources = [
        ClientCredentials::new(url, "client-id", CLIENT_SECRET).unwrap(),
        ClientCredentials::new(url, "client-id", CLIENT_SECRET)
            .unwrap()
            .client_auth(tower_cx::auth::ClientAuth::Post),
        ClientCredentials::cxone(url, "client-id", CLIENT_SECRET, "key-id", ACCESS_KEY_SECRET)
            .unwrap(),
    ];
    let form_encoded: String =
        form_urlencoded::byte_serialize(ACCESS_KEY_SECRET.as_bytes()).collect();
    for source in sources {
        for status in [400, 200] {
            let source = source.clone().http_client(echoing_endpoint(status));
            let cache = TokenCache::new(source);
            let error = cache.refresh().await.unwrap_err();
            let text = format!("{error} | {error:?}");
            if status == 400 {
                assert!(matches!(error, TokenError::Rejected { .. }), "{text}");
                assert!(text.contains("[redacted]"), "{text}");
            }
            for secret in [
                CLIENT_SECRET,
                &CLIENT_SECRET[..12],
                basic.as_str(),
                &basic[..12],
                ACCESS_KEY_SECRET,
                form_encoded.as_str(),
            ] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }
}

#[test]
fn debug_and_errors_show_no_url_credentials() {
    // ClientCredentials: no user info, no query
    let source = ClientCredentials::new(
        "https://ann:pw-Q7Z@login.example.com/oauth/token?client_secret=qs-Q7Z",
        "id",
        CLIENT_SECRET,
    )
    .unwrap();
    let shown = format!("{source:?}");
    assert!(
        shown.contains("https://login.example.com/oauth/token"),
        "{shown}"
    );
    assert!(!shown.contains("Q7Z"), "{shown}");
    // the invalid-URL error does not echo the URL as given
    for url in [
        "/oauth/token?client_secret=qs-Q7Z",
        "ht tp://login.example.com/?client_secret=qs-Q7Z",
    ] {
        let error = ClientCredentials::new(url, "id", CLIENT_SECRET).unwrap_err();
        assert!(matches!(error, TokenError::InvalidUrl { .. }));
        let shown = format!("{error} | {error:?}");
        assert!(!shown.contains("Q7Z"), "{shown}");
    }
    // a webhook URL is a secret: scheme and host only
    let builder = WebhookSink::builder("https://hooks.slack.com/services/T0/B0/hook-Q7Z").unwrap();
    let shown = format!("{builder:?}");
    assert!(shown.contains("https://hooks.slack.com"), "{shown}");
    assert!(
        !shown.contains("Q7Z") && !shown.contains("services"),
        "{shown}"
    );
    // a dead letter's URL has its query secrets redacted, as in the audit
    let letter = DeadLetter {
        correlation_id: "c".into(),
        attempts: 1,
        last_status: Some(500),
        error_code: "http_error".into(),
        message: "500".into(),
        request: Some(
            Request::get(
                "https://u:pw-Q7Z@api.example.com/x?access_token=tok-Q7Z;sig=s-Q7Z&page=2",
            )
            .header("authorization", "Bearer tok-Q7Z")
            .body(Body::empty())
            .unwrap(),
        ),
    };
    let shown = format!("{letter:?}");
    assert!(
        shown.contains(
            "GET https://api.example.com/x?access_token=[redacted];sig=[redacted]&page=2"
        ),
        "{shown}"
    );
    assert!(!shown.contains("Q7Z"), "{shown}");
}

#[tokio::test]
async fn a_relative_uri_gets_no_token_when_origins_are_restricted() {
    let upstream = Scripted::new([]);
    let tokens = TokenCache::new(tower_cx::auth::source_fn(|| async {
        Ok::<_, TokenError>(tower_cx::auth::Token::new(
            "tok-Q7Z",
            Duration::from_secs(60),
        ))
    }));
    let service = tower::Layer::layer(
        &BearerLayer::new(tokens)
            .allow_origin("https://api.example.com")
            .unwrap(),
        upstream.clone(),
    );
    for uri in ["/path", "https://api.example.com/path"] {
        let request = Request::get(uri)
            .header("host", "api.example.com")
            .body(Body::empty())
            .unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    assert_eq!(
        upstream.header_values("authorization"),
        [None, Some("Bearer tok-Q7Z".to_owned())]
    );
}
