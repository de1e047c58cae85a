//! Plumbing shared by the typed vendor clients ([`genesys`](crate::genesys)
//! and [`cxone`](crate::cxone)): body size limits, retry rules by error
//! code over any [`VendorError`], business rules, and the errors they share.
//! The vendor modules import this one, never the reverse: the shared code
//! knows a vendor's error only as a [`VendorError`].
//!
//! ```
//! use tower_cx::classify::{Class, Classify};
//! use tower_cx::genesys::GenesysError;
//! use tower_cx::vendor::{BodyLimits, Rule, RetryRules};
//!
//! let limits = BodyLimits::default();
//! assert_eq!(limits.results, 16 * 1024 * 1024);
//! assert_eq!(limits.errors, 64 * 1024);
//!
//! // A data action whose remote endpoint answered 503: worth another attempt.
//! let body = br#"{"message":"remote failed","code":"bad.request","status":400,
//!     "details":[{"errorCode":"ACTION.REMOTE_ENDPOINT"}],
//!     "errors":[{"message":"upstream","status":503}]}"#;
//! let error = GenesysError::from_body(http::StatusCode::BAD_REQUEST, &http::HeaderMap::new(), body);
//! let rules = RetryRules::genesys();
//! assert!(matches!(rules.classify_error(&error), Class::Retryable(_)));
//! // Made final by configuration:
//! let rules = rules.code("ACTION.REMOTE_ENDPOINT", Rule::Final);
//! assert!(matches!(rules.classify_error(&error), Class::Fatal(_)));
//! ```
//!
//! The [`Transport`] the clients run over lives in
//! [`transport`](crate::transport), re-exported here.

mod business;
mod checks;
mod core;
mod error;
mod rules;
mod settings;

pub use self::core::BodyLimits;
pub(crate) use self::core::{
    check_replay, copy_request, decoder, json_request, parse, ClientCore, Decoder, StatusRead,
};
pub use business::{BusinessFailure, BusinessRule};
pub(crate) use checks::{check_id, resolve_link};
pub use checks::{InvalidArgument, InvalidUrl};
pub(crate) use error::snippet;
pub use error::{UnexpectedBody, VendorError};
pub use rules::{RetryRules, Rule};
pub(crate) use settings::shared_client_settings;

/// Moved to [`error`](crate::error); kept here for the old path.
pub use crate::error::BodyTooLarge;
/// Moved to [`transport`](crate::transport); kept here for the old paths.
pub use crate::transport::{BoxFuture, Transport};
