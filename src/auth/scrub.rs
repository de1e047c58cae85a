//! Keeping credentials out of what is shown: server text scrubbed of the
//! secrets a token request carried, and URLs shown without user info or
//! query.

use crate::error::cut;

/// Removes known secrets (a client secret, its Basic form, form values)
/// from server text before it is kept in an error. Text is scrubbed whole,
/// then cut, so no part of a secret survives at the cut.
#[derive(Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Scrub every value in `secrets`, also in its form-encoded and
    /// percent-encoded spellings (as an endpoint echoing the form body
    /// would write it). Empty values are ignored.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut all = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let percent = form.replace('+', "%20");
            for variant in [secret.to_owned(), form, percent] {
                if !all.contains(&variant) {
                    all.push(variant);
                }
            }
        }
        // longest first: a secret that contains another goes whole
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets: all }
    }

    /// `text` with every secret replaced by `[redacted]`, cut to 256
    /// characters.
    pub(crate) fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        cut(&text)
    }

    /// Whether `text` contains a secret.
    pub(crate) fn finds(&self, text: &str) -> bool {
        self.secrets.iter().any(|s| text.contains(s.as_str()))
    }
}

pub(crate) use crate::error::url_without_secrets;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_in_every_spelling_before_the_cut() {
        let scrub = Scrubber::new(["s3cr3t+/=", "", "Y2xpZW50OnMzY3IzdA=="]);
        let text = format!(
            "{} s3cr3t+/= s3cr3t%2B%2F%3D Basic Y2xpZW50OnMzY3IzdA==",
            "x".repeat(230)
        );
        let shown = scrub.text(&text);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(!shown.contains("Y2xp"), "{shown}");
        assert_eq!(shown.chars().count(), 256);
        assert!(scrub.finds("a s3cr3t+/= b"));
        assert!(!scrub.finds("nothing here"));
    }

    #[test]
    fn urls_are_shown_without_user_info_or_query() {
        let uri: http::Uri = "https://u:p@login.example.com:8443/oauth/token?secret=s"
            .parse()
            .unwrap();
        assert_eq!(
            url_without_secrets(&uri),
            "https://login.example.com:8443/oauth/token"
        );
    }
}
