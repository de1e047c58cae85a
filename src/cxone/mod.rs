//! NICE CXone: discovery, a typed client for data-extraction jobs and
//! completed contacts, and CXone's errors (body or `icStatusDescription`).
//!
//! ```
//! use tower_cx::cxone::{discover, CxoneClient};
//! # #[cfg(feature = "mock")]
//! use tower_cx::mock::MockServer;
//! use tower_cx::stack::Stack;
//!
//! # #[cfg(feature = "mock")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_cx::error::BoxError> {
//! let mock = MockServer::start().await?;
//! let tenant = discover(&Stack::new().build(), &mock.base_url(), "tenant-1").await?;
//! assert_eq!(tenant.area, "na1");
//! assert_eq!(tenant.token_endpoint, mock.cxone_token_url());
//! let c = mock.config().clone();
//! let stack = Stack::cxone(&tenant.token_endpoint, c.client_id, c.client_secret,
//!     c.access_key_id, c.access_key_secret)?.build();
//! let cxone = CxoneClient::new(stack, &tenant.api_endpoint);
//! let csv = cxone.data_extraction().run(&serde_json::json!({"entityName": "contacts"})).await;
//! # let _ = csv;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```

mod client;
mod discovery;
mod error;
mod extraction;

pub use client::{ContactsPage, CxoneApi, CxoneClient, PageLinks};
pub use discovery::{
    discover, discover_from_token, Discovery, Issuer, TokenClaims, UnreadableToken, CXONE_ISSUER,
};
pub use error::CxoneError;
#[cfg(feature = "internals")]
pub(crate) use error::IC_STATUS_DESCRIPTION;
pub use extraction::{
    DataExtraction, ExtractionJob, ExtractionResult, ExtractionStatus, FinishedExtraction,
    NotRerunnable, RerunRefusal, ResultExpired,
};
