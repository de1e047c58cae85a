//! Genesys Cloud: regions, a typed client for data actions, analytics jobs
//! and entity listings, and the platform's errors.
//!
//! ```
//! use futures_util::TryStreamExt;
//! use serde_json::{json, Value};
//! use tower_cx::genesys::GenesysClient;
//! # #[cfg(feature = "mock")]
//! use tower_cx::mock::MockServer;
//! use tower_cx::stack::Stack;
//!
//! # #[cfg(feature = "mock")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_cx::error::BoxError> {
//! let mock = MockServer::start().await?;
//! let (region, c) = (mock.genesys_region(), mock.config().clone());
//! let stack = Stack::genesys(&region, c.client_id, c.client_secret)?.build();
//! let genesys = GenesysClient::new(stack, &region);
//!
//! let output: Value = genesys.data_actions().execute("lookup", &json!({"id": 7})).await?;
//! assert_eq!(output["input"]["id"], 7);
//!
//! let pages: Vec<_> = genesys.list::<Value>("/api/v2/users?pageSize=100").try_collect().await?;
//! assert_eq!(pages.iter().map(|p| p.entities.len()).sum::<usize>(), 250);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```

mod analytics;
mod client;
mod error;
mod region;

/// Moved to [`vendor`](crate::vendor) (CXone uses them too); kept here for
/// the old paths.
pub use crate::vendor::{BusinessFailure, BusinessRule};
pub use analytics::{AnalyticsJobStatus, AnalyticsJobs, ResultsPage};
pub use client::{DataActions, EntityPage, GenesysClient, TestReport};
pub use error::GenesysError;
pub use region::{Region, UnknownRegion};

/// The total deadline of the Genesys Cloud presets
/// ([`Stack::genesys`](crate::stack::Stack::genesys), [`GenesysClient`]):
/// long enough to wait out a 30 to 60 s `Retry-After` and try again.
pub const GENESYS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(150);
