//! Genesys Cloud regions and their hosts.

use std::fmt;
use std::str::FromStr;

/// A Genesys Cloud region. Each maps to an API host
/// (`https://api.{domain}`) and a login host (`https://login.{domain}`).
///
/// ```
/// use tower_cx::genesys::Region;
///
/// let region: Region = "eu-west-1".parse().unwrap();
/// assert_eq!(region, Region::EuWest1);
/// assert_eq!(region.api_base(), "https://api.mypurecloud.ie");
/// assert_eq!(region.token_url(), "https://login.mypurecloud.ie/oauth/token");
/// assert_eq!("usw2.pure.cloud".parse::<Region>().unwrap(), Region::UsWest2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// Americas (US East), `mypurecloud.com`.
    UsEast1,
    /// FedRAMP (US East 2), `use2.us-gov-pure.cloud`.
    UsEast2,
    /// Americas (US West), `usw2.pure.cloud`.
    UsWest2,
    /// Americas (Canada), `cac1.pure.cloud`.
    CaCentral1,
    /// Americas (São Paulo), `sae1.pure.cloud`.
    SaEast1,
    /// EMEA (Dublin), `mypurecloud.ie`.
    EuWest1,
    /// EMEA (London), `euw2.pure.cloud`.
    EuWest2,
    /// EMEA (Frankfurt), `mypurecloud.de`.
    EuCentral1,
    /// EMEA (Zurich), `euc2.pure.cloud`.
    EuCentral2,
    /// EMEA (UAE), `mec1.pure.cloud`.
    MeCentral1,
    /// Asia Pacific (Mumbai), `aps1.pure.cloud`.
    ApSouth1,
    /// Asia Pacific (Tokyo), `mypurecloud.jp`.
    ApNortheast1,
    /// Asia Pacific (Seoul), `apne2.pure.cloud`.
    ApNortheast2,
    /// Asia Pacific (Osaka), `apne3.pure.cloud`.
    ApNortheast3,
    /// Asia Pacific (Sydney), `mypurecloud.com.au`.
    ApSoutheast2,
    /// Asia Pacific (Jakarta), `apse1.pure.cloud`.
    ApSoutheast1,
    /// Americas (Mexico), `mxc1.pure.cloud`.
    MxCentral1,
    /// EU sovereign cloud (Germany), `edee1.eusc-pure.cloud`.
    EuscDeEast1,
    /// Explicit base URLs, for a mock server or a region this list lacks.
    Custom {
        /// API base URL, e.g. `http://127.0.0.1:8080`.
        api: String,
        /// Login base URL, e.g. `http://127.0.0.1:8080`.
        login: String,
    },
}

const TABLE: &[(Region, &str, &str)] = &[
    (Region::UsEast1, "us-east-1", "mypurecloud.com"),
    (Region::UsEast2, "us-east-2", "use2.us-gov-pure.cloud"),
    (Region::UsWest2, "us-west-2", "usw2.pure.cloud"),
    (Region::CaCentral1, "ca-central-1", "cac1.pure.cloud"),
    (Region::SaEast1, "sa-east-1", "sae1.pure.cloud"),
    (Region::EuWest1, "eu-west-1", "mypurecloud.ie"),
    (Region::EuWest2, "eu-west-2", "euw2.pure.cloud"),
    (Region::EuCentral1, "eu-central-1", "mypurecloud.de"),
    (Region::EuCentral2, "eu-central-2", "euc2.pure.cloud"),
    (Region::MeCentral1, "me-central-1", "mec1.pure.cloud"),
    (Region::ApSouth1, "ap-south-1", "aps1.pure.cloud"),
    (Region::ApNortheast1, "ap-northeast-1", "mypurecloud.jp"),
    (Region::ApNortheast2, "ap-northeast-2", "apne2.pure.cloud"),
    (Region::ApNortheast3, "ap-northeast-3", "apne3.pure.cloud"),
    (Region::ApSoutheast2, "ap-southeast-2", "mypurecloud.com.au"),
    (Region::ApSoutheast1, "ap-southeast-1", "apse1.pure.cloud"),
    (Region::MxCentral1, "mx-central-1", "mxc1.pure.cloud"),
    (
        Region::EuscDeEast1,
        "eusc-de-east-1",
        "edee1.eusc-pure.cloud",
    ),
];

impl Region {
    /// Every public region (18).
    pub fn all() -> impl Iterator<Item = Region> {
        TABLE.iter().map(|(region, _, _)| region.clone())
    }

    /// A region with explicit base URLs (no trailing slash needed).
    pub fn custom(api: impl Into<String>, login: impl Into<String>) -> Self {
        Region::Custom {
            api: api.into().trim_end_matches('/').to_owned(),
            login: login.into().trim_end_matches('/').to_owned(),
        }
    }

    fn row(&self) -> Option<&'static (Region, &'static str, &'static str)> {
        TABLE.iter().find(|(region, _, _)| region == self)
    }

    /// The region's domain (`mypurecloud.com`), or `None` for a custom one.
    pub fn domain(&self) -> Option<&'static str> {
        self.row().map(|(_, _, domain)| *domain)
    }

    /// The AWS-style region name (`us-east-1`), or `None` for a custom one.
    pub fn name(&self) -> Option<&'static str> {
        self.row().map(|(_, name, _)| *name)
    }

    /// The API base URL, e.g. `https://api.mypurecloud.com`.
    pub fn api_base(&self) -> String {
        match self {
            Region::Custom { api, .. } => api.clone(),
            other => format!("https://api.{}", other.domain().unwrap_or_default()),
        }
    }

    /// The login base URL, e.g. `https://login.mypurecloud.com`.
    pub fn login_base(&self) -> String {
        match self {
            Region::Custom { login, .. } => login.clone(),
            other => format!("https://login.{}", other.domain().unwrap_or_default()),
        }
    }

    /// The OAuth2 token URL: `{login_base}/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.login_base())
    }
}

/// A region name or domain that is not a known Genesys Cloud region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRegion(String);

impl fmt::Display for UnknownRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown Genesys Cloud region {:?}", self.0)
    }
}

impl std::error::Error for UnknownRegion {}

impl FromStr for Region {
    type Err = UnknownRegion;

    /// Parse an AWS-style name (`eu-west-1`) or a domain (`mypurecloud.ie`,
    /// with or without `api.` / `login.`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let domain = wanted
            .trim_start_matches("https://")
            .trim_start_matches("api.")
            .trim_start_matches("login.");
        TABLE
            .iter()
            .find(|(_, name, d)| *name == wanted || *d == domain)
            .map(|(region, _, _)| region.clone())
            .ok_or_else(|| UnknownRegion(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_round_trips_by_name_and_domain() {
        assert_eq!(Region::all().count(), 18);
        for region in Region::all() {
            assert_eq!(region.name().unwrap().parse::<Region>().unwrap(), region);
            assert_eq!(region.domain().unwrap().parse::<Region>().unwrap(), region);
            assert!(region.api_base().starts_with("https://api."));
            assert!(region.token_url().ends_with("/oauth/token"));
        }
        assert!("mars-1".parse::<Region>().is_err());
        assert_eq!(
            Region::UsEast2.api_base(),
            "https://api.use2.us-gov-pure.cloud"
        );
    }

    #[test]
    fn the_newer_regions_and_the_eu_sovereign_cloud_parse() {
        for (name, domain, region) in [
            ("mx-central-1", "mxc1.pure.cloud", Region::MxCentral1),
            ("ap-southeast-1", "apse1.pure.cloud", Region::ApSoutheast1),
            (
                "eusc-de-east-1",
                "edee1.eusc-pure.cloud",
                Region::EuscDeEast1,
            ),
        ] {
            assert_eq!(name.parse::<Region>().unwrap(), region);
            assert_eq!(domain.parse::<Region>().unwrap(), region);
            assert_eq!(format!("api.{domain}").parse::<Region>().unwrap(), region);
            assert_eq!(region.api_base(), format!("https://api.{domain}"));
            assert_eq!(
                region.token_url(),
                format!("https://login.{domain}/oauth/token")
            );
        }
        assert_eq!(
            "https://login.edee1.eusc-pure.cloud"
                .parse::<Region>()
                .unwrap(),
            Region::EuscDeEast1
        );
    }

    #[test]
    fn custom_region_for_a_mock() {
        let r = Region::custom("http://127.0.0.1:9/", "http://127.0.0.1:9");
        assert_eq!(r.api_base(), "http://127.0.0.1:9");
        assert_eq!(r.token_url(), "http://127.0.0.1:9/oauth/token");
        assert_eq!(r.domain(), None);
    }
}
