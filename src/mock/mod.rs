//! An embedded mock of Genesys Cloud and NICE CXone (cargo feature `mock`):
//! a hyper server on `127.0.0.1:0` with token endpoints, a few real API
//! shapes, per-token rate limiting with the Genesys headers, a fault script,
//! and honest counters of what clients did wrong.
//!
//! ```
//! use tower_cx::mock::{Fault, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mock = MockServer::start().await?;
//! mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
//! let region = mock.genesys_region();
//! assert!(region.token_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(mock.counters().tokens_issued, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! - Genesys: `POST /oauth/token` (Basic client credentials), `GET
//!   /api/v2/users` (`entities`/`pageNumber`/`pageCount`/`nextUri`), `POST
//!   /api/v2/integrations/actions/{id}/execute` (echoes its input), `POST
//!   .../actions/{id}/test` (step report; ids starting `fail-` fail), and the
//!   analytics conversation-details jobs (`QUEUED` -> `PENDING` ->
//!   `FULFILLED` by default, any states with a [`JobScript`], then
//!   cursor-paged results).
//! - CXone: `/.well-known/openid-configuration`,
//!   `/.well-known/cxone-configuration?tenantId=`, `POST /auth/token` (access
//!   key flavour), data-extraction jobs (`RUNNING` -> `SUCCEEDED` by
//!   default, any states with a [`JobScript`]) whose result URL
//!   (`/files/...?sig=`, no token needed) expires after
//!   [`MockConfig::result_url_ttl`], and
//!   `GET /incontactapi/services/v{N}.0/contacts/completed` (paged, 204 at
//!   the end).
//! - Every API call needs a valid bearer token (401 otherwise) and is rate
//!   limited per token in fixed windows, with `inin-ratelimit-*` headers on
//!   every response and a 429 with `Retry-After` and the Genesys error body
//!   when over.

mod server;

pub use server::{Fault, JobScript, MockConfig, MockCounters, MockServer, RandomFaults};
