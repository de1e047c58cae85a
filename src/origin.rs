//! Origins: `scheme://host:port`, as the bearer's allow-list and the retry
//! layer's key-honouring origins compare them.
//!
//! ```
//! use tower_cx::origin::Origin;
//!
//! let api = Origin::parse("https://api.mypurecloud.com")?;
//! let uri: http::Uri = "https://API.mypurecloud.com:443/api/v2/users".parse()?;
//! assert_eq!(Origin::of(&uri), Some(api));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use http::Uri;

use crate::error::ConfigError;

/// `scheme://host:port`, compared without regard to case, with the default
/// port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute URL; `None` for a relative one.
    pub fn of(uri: &Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = match (uri.port_u16(), scheme.as_str()) {
            (Some(port), _) => port,
            (None, "https") => 443,
            (None, "http") => 80,
            (None, _) => 0,
        };
        Some(Self { scheme, host, port })
    }

    /// Parse the origin of `url` (its path, if any, is ignored).
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| ConfigError::new("origin", format!("not a URL: {url:?}")))?;
        Self::of(&uri).ok_or_else(|| {
            ConfigError::new(
                "origin",
                format!("{url:?} is not absolute (scheme and host needed)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_case_and_paths_do_not_matter() {
        let api = Origin::parse("https://api.mypurecloud.com").unwrap();
        for same in [
            "https://API.mypurecloud.com:443/api/v2/users",
            "HTTPS://api.mypurecloud.com/x?y=1",
        ] {
            assert_eq!(
                Origin::of(&same.parse().unwrap()),
                Some(api.clone()),
                "{same}"
            );
        }
        for other in [
            "http://api.mypurecloud.com/",
            "https://api.mypurecloud.com:8443/",
            "https://api.mypurecloud.com.evil.example/",
            "https://evil.example/?https://api.mypurecloud.com",
        ] {
            assert_ne!(
                Origin::of(&other.parse().unwrap()),
                Some(api.clone()),
                "{other}"
            );
        }
        assert_eq!(Origin::of(&"/relative".parse().unwrap()), None);
        assert!(Origin::parse("/relative").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}
