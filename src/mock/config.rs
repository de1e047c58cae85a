//! The mock's settings: [`MockConfig`], [`RandomFaults`] and [`JobScript`].

use std::time::Duration;

use rand::rngs::StdRng;
use rand::RngExt;

use super::faults::Fault;

/// Settings of a [`MockServer`](super::MockServer).
///
/// Fields are public for struct-update syntax; the builder methods do the
/// same in tower-http style.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::mock::MockConfig;
///
/// let config = MockConfig::default()
///     .honour_idempotency_keys(true)
///     .extraction_interval(Duration::from_secs(30));
/// assert!(config.honour_idempotency_keys);
/// assert_eq!(config.cxone_token_lifetime, Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The OAuth client id accepted (Genesys and CXone).
    pub client_id: String,
    /// The OAuth client secret accepted.
    pub client_secret: String,
    /// The CXone access key id accepted.
    pub access_key_id: String,
    /// The CXone access key secret accepted.
    pub access_key_secret: String,
    /// Lifetime of issued Genesys tokens (default 86 399 s, as Genesys).
    pub token_lifetime: Duration,
    /// Lifetime of issued CXone tokens (default 3600 s, as CXone).
    pub cxone_token_lifetime: Duration,
    /// The CXone tenant id carried in the access token's claims.
    pub tenant_id: String,
    /// The CXone area carried in the claims and served by discovery.
    pub area: String,
    /// API requests allowed per token per window.
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_window: Duration,
    /// Entities in the Genesys users listing.
    pub users: usize,
    /// Completed contacts in the CXone listing.
    pub contacts: usize,
    /// Requests arriving this soon after a wait was announced to their token
    /// were in flight before the client could know: answered 429, not
    /// counted as violations. Default 100 ms.
    pub in_flight_grace: Duration,
    /// How long a CXone data-extraction result URL stays valid. Default
    /// 30 s, as CXone.
    pub result_url_ttl: Duration,
    /// CXone allows one data-extraction job submission per this long per
    /// tenant (default 30 s); one sooner is answered 429 with
    /// `Retry-After` and counted in
    /// [`MockCounters::extraction_limit_violations`](super::MockCounters::extraction_limit_violations).
    /// Zero turns the limit off.
    pub extraction_interval: Duration,
    /// Whether the mock honours `Idempotency-Key` (default `false`, as
    /// Genesys Cloud and NICE CXone): a side-effecting request whose key was
    /// seen before is not applied again, and the first answer is replayed.
    pub honour_idempotency_keys: bool,
    /// The JSON body field that names an operation for duplicate counting
    /// (default `requestId`); a body without it is its own name.
    pub operation_id_field: String,
    /// Whether completed-contacts pages carry `_links.next` (default
    /// `false`: the client pages by `skip`).
    pub contact_links: bool,
    /// Faults drawn at random for some requests, after the scripted ones
    /// (default none).
    pub random_faults: Option<RandomFaults>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            client_id: "mock-client".into(),
            client_secret: "mock-secret".into(),
            access_key_id: "mock-access-key".into(),
            access_key_secret: "mock-access-secret".into(),
            token_lifetime: Duration::from_secs(86_399),
            cxone_token_lifetime: Duration::from_secs(3600),
            tenant_id: "11eb0000-mock-tenant".into(),
            area: "na1".into(),
            rate_limit: 300,
            rate_window: Duration::from_secs(60),
            users: 250,
            contacts: 120,
            in_flight_grace: Duration::from_millis(100),
            result_url_ttl: Duration::from_secs(30),
            extraction_interval: Duration::from_secs(30),
            honour_idempotency_keys: false,
            operation_id_field: "requestId".into(),
            contact_links: false,
            random_faults: None,
        }
    }
}

impl MockConfig {
    /// Model an API that honours `Idempotency-Key` (see
    /// [`honour_idempotency_keys`](Self::honour_idempotency_keys) the field).
    pub fn honour_idempotency_keys(mut self, honour: bool) -> Self {
        self.honour_idempotency_keys = honour;
        self
    }

    /// One data-extraction submission per `interval` per tenant.
    pub fn extraction_interval(mut self, interval: Duration) -> Self {
        self.extraction_interval = interval;
        self
    }

    /// The body field naming an operation for duplicate counting.
    pub fn operation_id_field(mut self, field: impl Into<String>) -> Self {
        self.operation_id_field = field.into();
        self
    }

    /// Whether completed-contacts pages carry `_links.next`.
    pub fn contact_links(mut self, links: bool) -> Self {
        self.contact_links = links;
        self
    }

    /// API requests allowed per token per `window`.
    pub fn rate_limit(mut self, requests: u32, window: Duration) -> Self {
        self.rate_limit = requests;
        self.rate_window = window;
        self
    }

    /// Random faults after the scripted ones.
    pub fn random_faults(mut self, faults: RandomFaults) -> Self {
        self.random_faults = Some(faults);
        self
    }
}

/// Faults drawn at random, from a seeded RNG so that a run can be repeated,
/// for the requests whose path starts with `path_prefix`. Scripted faults
/// ([`MockServer::fault`](super::MockServer::fault)) are served first.
///
/// ```
/// use std::time::Duration;
/// use tower_cx::mock::{Fault, RandomFaults};
///
/// let faults = RandomFaults::new(7, "/api/")
///     .with(Fault::Status(503), 0.10)
///     .with(Fault::Reset, 0.02)
///     .with(Fault::ApplyThenStatus(500), 0.01)
///     .with(Fault::Delay(Duration::from_secs(30)), 0.01);
/// assert_eq!(faults.faults.len(), 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFaults {
    /// The RNG seed.
    pub seed: u64,
    /// Only requests whose path starts with this are faulted.
    pub path_prefix: String,
    /// Each fault with its probability per request (together at most 1).
    pub faults: Vec<(Fault, f64)>,
}

impl RandomFaults {
    /// No faults yet, for paths under `path_prefix`, drawn from `seed`.
    pub fn new(seed: u64, path_prefix: impl Into<String>) -> Self {
        Self {
            seed,
            path_prefix: path_prefix.into(),
            faults: Vec::new(),
        }
    }

    /// Add `fault` with `probability` per request.
    pub fn with(mut self, fault: Fault, probability: f64) -> Self {
        self.faults.push((fault, probability));
        self
    }

    pub(crate) fn draw(&self, rng: &mut StdRng) -> Option<Fault> {
        let mut roll: f64 = rng.random();
        for (fault, probability) in &self.faults {
            if roll < *probability {
                return Some(fault.clone());
            }
            roll -= probability;
        }
        None
    }
}

/// The states a mock job goes through, one per status read; the last one
/// repeats. Each state may carry an error message (`""`: none).
///
/// ```
/// use tower_cx::mock::JobScript;
///
/// let script = JobScript::new([("QUEUED", ""), ("FAILED", ""), ("FAILED", "disk full")]);
/// assert_eq!(script.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobScript {
    steps: Vec<(String, String)>,
}

impl JobScript {
    /// A script of `(state, errorMessage)` steps.
    pub fn new<'a>(steps: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            steps: steps
                .into_iter()
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
                .collect(),
        }
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the script has no steps (the default states apply).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub(crate) fn step(&self, poll: u32) -> Option<&(String, String)> {
        let i = (poll.max(1) as usize - 1).min(self.steps.len().checked_sub(1)?);
        self.steps.get(i)
    }
}
