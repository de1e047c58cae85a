//! Keeping secrets out of what is recorded: URLs, query values and JSON
//! bodies, as audit records and dead letters show them.

use http::Uri;

/// Query keys whose values are never recorded (matched case-insensitively,
/// as a part of the key).
const SECRET_KEY_PARTS: &[&str] = &[
    "token",
    "secret",
    "pass",
    "pwd",
    "key",
    "signature",
    "sig",
    "auth",
    "code",
    "credential",
    "session",
    "cookie",
    "jwt",
    "assertion",
    "bearer",
];

/// The value that replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether a query or JSON key looks like it names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// The URI as it may be recorded: userinfo removed, secret-looking query
/// values replaced by `[redacted]`.
pub fn redact_uri(uri: &Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, rest)| rest);
        out.push_str(host_port);
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        // `;` separates parameters too (HTML 4, many servers): split on
        // both, keeping each separator as it was
        for pair in query.split_inclusive(['&', ';']) {
            let (pair, separator) = match pair.strip_suffix(['&', ';']) {
                Some(rest) => (rest, &pair[rest.len()..]),
                None => (pair, ""),
            };
            match pair.split_once('=') {
                // judge the key as the server will read it: percent-decoded
                Some((key, _)) if is_secret_key(&decode_key(key)) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
            out.push_str(separator);
        }
    }
    out
}

/// The longest URL an audit event keeps, in bytes: a longer one is cut
/// (and marked), so that a caller's huge URLs cannot fill the audit
/// buffers.
pub const MAX_EVENT_URL: usize = 2048;

/// [`redact_uri`], cut to [`MAX_EVENT_URL`] bytes with `...[cut]` at the
/// end when longer.
pub fn redact_uri_for_event(uri: &Uri) -> String {
    let mut url = redact_uri(uri);
    if url.len() > MAX_EVENT_URL {
        let mut end = MAX_EVENT_URL;
        while !url.is_char_boundary(end) {
            end -= 1;
        }
        url.truncate(end);
        url.push_str("...[cut]");
    }
    url
}

fn decode_key(key: &str) -> String {
    form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_else(|| key.to_owned())
}

/// The URI with userinfo removed (query kept): for a dead letter's copy,
/// which must stay re-submittable.
pub(crate) fn strip_userinfo(uri: &Uri) -> Uri {
    let Some(authority) = uri.authority() else {
        return uri.clone();
    };
    let Some((_, host)) = authority.as_str().rsplit_once('@') else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// A JSON body as it may be recorded: the values of secret-looking keys
/// masked at any depth. `None` if the bytes are not JSON.
pub fn redact_json(body: &[u8]) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    mask(&mut value);
    Some(value)
}

fn mask(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if is_secret_key(key) {
                    *inner = serde_json::Value::String(REDACTED.into());
                } else {
                    mask(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_urls_are_cut_at_2_kib() {
        let long = format!("https://api.example.com/{}?token=T", "a".repeat(60_000));
        let uri: Uri = long.parse().unwrap();
        let url = redact_uri_for_event(&uri);
        assert_eq!(url.len(), MAX_EVENT_URL + "...[cut]".len());
        assert!(url.ends_with("aaa...[cut]"));
        let short: Uri = "https://api.example.com/x?token=T".parse().unwrap();
        assert_eq!(
            redact_uri_for_event(&short),
            "https://api.example.com/x?token=[redacted]"
        );
    }

    #[test]
    fn json_secrets_are_masked_at_any_depth() {
        let body = br#"{"user":"ann","password":"p","nested":{"client_secret":"s","list":[{"access_token":"t","ok":1}]}}"#;
        let masked = redact_json(body).unwrap().to_string();
        assert_eq!(
            masked,
            r#"{"nested":{"client_secret":"[redacted]","list":[{"access_token":"[redacted]","ok":1}]},"password":"[redacted]","user":"ann"}"#
        );
        assert!(redact_json(b"password=p").is_none());
    }

    #[test]
    fn userinfo_and_secret_query_values_are_removed() {
        let uri: Uri =
            "https://user:pa55@api.example.com/v2/x?page=2&access_token=abc&apiKey=k1&q=ok"
                .parse()
                .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "https://api.example.com/v2/x?page=2&access_token=[redacted]&apiKey=[redacted]&q=ok"
        );
        let uri: Uri = "/relative?password=x".parse().unwrap();
        assert_eq!(redact_uri(&uri), "/relative?password=[redacted]");
        let uri: Uri = "/x?%74oken=S3CR3T&jwt=a.b.c&user%5Fpass=p".parse().unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/x?%74oken=[redacted]&jwt=[redacted]&user%5Fpass=[redacted]"
        );
        let uri: Uri = "/x?a=1;api_key=SECRET;b=2&token=T;c".parse().unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/x?a=1;api_key=[redacted];b=2&token=[redacted];c"
        );
        let uri: Uri = "https://bob:hunter2@api.example.com/v?page=1"
            .parse()
            .unwrap();
        assert_eq!(strip_userinfo(&uri), "https://api.example.com/v?page=1");
    }
}
