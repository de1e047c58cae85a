//! Genesys Cloud: regions and their hosts.
//!
//! ```
//! use tower_cx::genesys::Region;
//!
//! assert_eq!(Region::UsEast1.token_url(), "https://login.mypurecloud.com/oauth/token");
//! ```

mod region;

pub use region::{Region, UnknownRegion};
