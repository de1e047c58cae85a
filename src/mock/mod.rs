//! An embedded mock of Genesys Cloud and NICE CXone (cargo feature `mock`):
//! a hyper server on `127.0.0.1:0` with token endpoints, a few real API
//! shapes, per-token rate limiting, a fault script, and honest counters of
//! what clients did wrong — above all, side effects applied twice.
//!
//! ```
//! use tower_cx::mock::{Fault, MockConfig, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mock = MockServer::start_with(MockConfig::default().honour_idempotency_keys(false)).await?;
//! mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
//! // the next data action is applied, then answered 500: a blind retry
//! // would apply it twice, which `duplicate_applications` would show
//! mock.fault(Some("/api/v2/integrations"), Fault::ApplyThenStatus(500), 1);
//! let region = mock.genesys_region();
//! assert!(region.token_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(mock.counters().tokens_issued, 0);
//! assert_eq!(mock.duplicate_applications(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! - Genesys (`genesys`): `POST /oauth/token` (Basic client credentials,
//!   tokens live [`MockConfig::token_lifetime`], 86 399 s by default), `GET
//!   /api/v2/users` (`entities`/`pageNumber`/`pageCount`/`nextUri`), `POST
//!   /api/v2/integrations/actions/{id}/execute` (echoes its input), `POST
//!   .../actions/{id}/test` (step report; ids starting `fail-` fail), and the
//!   analytics conversation-details jobs (`QUEUED` -> `PENDING` ->
//!   `FULFILLED` by default, any states with a [`JobScript`], then
//!   cursor-paged results). Every answer carries `inin-ratelimit-allowed`,
//!   `-count`, `-reset` and `inin-correlation-id`; errors have Genesys'
//!   body.
//! - CXone (`cxone`): `/.well-known/openid-configuration`,
//!   `/.well-known/cxone-configuration?tenantId=`, `POST /auth/token`
//!   (access-key flavour; a JWT-shaped token with `tenantId` and `area`
//!   claims that lives 3600 s), data-extraction jobs (`RUNNING` ->
//!   `SUCCEEDED` by default, any states with a [`JobScript`]; one
//!   submission per 30 s per tenant, else a 429) whose result URL
//!   (`/files/...?sig=`, no token needed) expires after 30 s, and `GET
//!   /incontactapi/services/v{N}.0/contacts/completed` (`updatedSince`,
//!   `orderBy=lastUpdateTime`, `skip`/`top`, optional `_links.next`, 204
//!   at the end). No `inin-ratelimit-*` headers; CXone-shaped 401 and 429
//!   (`error`/`error_description`, `icStatusDescription`, `Retry-After`).
//! - Every API call needs a valid bearer token (401 otherwise) and is rate
//!   limited per token in fixed windows (`limits`), with a 429 and
//!   `Retry-After` when over.
//!
//! # Side effects, keys and duplicates
//!
//! Like both vendors, the mock ignores `Idempotency-Key` by default: a POST
//! sent twice is applied twice. [`MockConfig::honour_idempotency_keys`]
//! models an API that honours keys instead (same key: applied once, the
//! first answer replayed). Either way the ledger counts each operation by
//! what it is — the body's `requestId` (see
//! [`MockConfig::operation_id_field`]), or the whole body — so
//! [`MockServer::applied`] and [`MockServer::duplicate_applications`] tell
//! the truth whatever keys the client sent. [`Fault::ApplyThenStatus`] and
//! [`Fault::ApplyThenDrop`] apply a request, then fail it (`faults`).

mod config;
mod cxone;
mod faults;
mod genesys;
mod ledger;
mod limits;
mod reply;
mod server;

pub use config::{JobScript, MockConfig, RandomFaults};
pub use faults::Fault;
pub use ledger::MockCounters;
pub use server::MockServer;
