//! Reads the status page as a program would: every `data-field` value on
//! the HTML page, compared with the JSON snapshot's value at that field.

use serde_json::Value;

/// Every `(field, text)` shown on `html`, in page order.
pub fn fields(html: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("data-field=\"") {
        rest = &rest[at + "data-field=\"".len()..];
        let name_end = rest.find('"').expect("a closed attribute");
        let name = rest[..name_end].to_owned();
        let text_start = rest.find('>').expect("a closed tag") + 1;
        let text_end = rest[text_start..].find('<').expect("a closing tag") + text_start;
        found.push((name, unescape(&rest[text_start..text_end])));
        rest = &rest[text_end..];
    }
    found
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The JSON value at a dotted field (`limiters.0.queued.high`).
pub fn at<'a>(json: &'a Value, field: &str) -> Option<&'a Value> {
    field
        .split('.')
        .try_fold(json, |value, part| match part.parse::<usize>() {
            Ok(i) => value.get(i),
            Err(_) => value.get(part),
        })
}

/// How the page shows the JSON value at `field`.
pub fn shown(json: &Value, field: &str) -> String {
    match at(json, field) {
        None | Some(Value::Null) if field.ends_with(".pacing") => "off".to_owned(),
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::Bool(b)) if field.ends_with("gate.closed") => {
            if *b { "closed" } else { "open" }.to_owned()
        }
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => {
            let x = n.as_f64().expect("a number");
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                format!("{x}")
            }
        }
        Some(other) => other.to_string(),
    }
}

/// The fields whose page text differs from the JSON (empty when they agree),
/// as `(field, on the page, in the JSON)`; `skip` leaves out fields that
/// move between two snapshots (time left).
pub fn disagreements(html: &str, json: &Value, skip: &[&str]) -> Vec<(String, String, String)> {
    fields(html)
        .into_iter()
        .filter(|(field, _)| !skip.iter().any(|s| field.ends_with(s)))
        .filter_map(|(field, text)| {
            let expected = shown(json, &field);
            (text != expected).then_some((field, text, expected))
        })
        .collect()
}
