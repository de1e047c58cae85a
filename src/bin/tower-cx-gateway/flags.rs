//! The gateway's flags: every flag also reads an environment variable, and
//! every value an operator gives is checked here, with an error that names
//! the flag, before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tower_cx::auth::ClientAuth;

use super::limits::Limits;

/// Everything the command line and the environment configure.
#[derive(Debug)]
pub struct Flags {
    pub listen: SocketAddr,
    pub upstream: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub auth_style: ClientAuth,
    pub concurrency: usize,
    pub queue_depth: usize,
    pub max_attempts: u32,
    pub rate: Option<(u32, Duration)>,
    pub timeout: Duration,
    /// `--deadline`: the longest a caller waits for its answer, retries,
    /// backoffs, queueing and an open breaker's probe time included.
    pub deadline: Duration,
    pub audit_file: Option<String>,
    /// `--dead-letter-file`: requests that fail for good, or are dropped at
    /// shutdown, as JSON lines.
    pub dead_letter_file: Option<String>,
    pub redis: Option<String>,
    pub mock: bool,
    /// The upstream origin applies a request with an `Idempotency-Key` at
    /// most once, so keyed POST/PATCH requests to it may be retried.
    pub upstream_honours_keys: bool,
    /// How long requests in flight may finish after SIGTERM or Ctrl-C.
    pub shutdown_grace: Duration,
    pub limits: Limits,
}

/// An operator's value that the gateway refuses, naming the flag.
#[derive(Debug)]
pub struct FlagError {
    flag: &'static str,
    reason: String,
}

impl FlagError {
    fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        Self {
            flag,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.reason)
    }
}

impl std::error::Error for FlagError {}

/// The largest duration flag: one day. Larger values are almost certainly a
/// typo, and `Duration` arithmetic later must not overflow.
const MAX_SECS: f64 = 86_400.0;

/// Reads flags and their environment variables.
struct Reader {
    args: pico_args::Arguments,
}

impl Reader {
    fn string(&mut self, flag: &'static str, env: &str) -> Result<Option<String>, FlagError> {
        let value = self
            .args
            .opt_value_from_str::<_, String>(flag)
            .map_err(|e| FlagError::new(flag, e.to_string()))?;
        Ok(value.or_else(|| std::env::var(env).ok()))
    }

    fn switch(&mut self, flag: &'static str, env: &str) -> Result<bool, FlagError> {
        if self.args.contains(flag) {
            return Ok(true);
        }
        match std::env::var(env).ok().as_deref() {
            None | Some("" | "0" | "false") => Ok(false),
            Some("1" | "true") => Ok(true),
            Some(other) => Err(FlagError::new(
                flag,
                format!("{env} must be 1, true, 0 or false, got {other:?}"),
            )),
        }
    }

    /// A whole number in `min..=max`.
    fn number<T>(
        &mut self,
        flag: &'static str,
        env: &str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, FlagError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        match self.string(flag, env)? {
            None => Ok(default),
            Some(v) => whole(flag, &v, min, max),
        }
    }

    /// Seconds (fractions allowed) in `min..=MAX_SECS`.
    fn seconds(
        &mut self,
        flag: &'static str,
        env: &str,
        default: Duration,
        min: f64,
    ) -> Result<Duration, FlagError> {
        match self.string(flag, env)? {
            None => Ok(default),
            Some(v) => seconds(flag, &v, min),
        }
    }
}

fn whole<T>(flag: &'static str, value: &str, min: T, max: T) -> Result<T, FlagError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let out_of_range = || FlagError::new(flag, format!("expected {min} to {max}, got {value:?}"));
    let n: T = value.trim().parse().map_err(|_| out_of_range())?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

fn seconds(flag: &'static str, value: &str, min: f64) -> Result<Duration, FlagError> {
    let bad = || {
        FlagError::new(
            flag,
            format!("expected seconds from {min} to {MAX_SECS}, got {value:?}"),
        )
    };
    let secs: f64 = value.trim().parse().map_err(|_| bad())?;
    if !(min..=MAX_SECS).contains(&secs) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `N/SECS`, e.g. `300/60`.
fn rate(value: &str) -> Result<(u32, Duration), FlagError> {
    let (n, secs) = value.split_once('/').ok_or_else(|| {
        FlagError::new(
            "--rate",
            format!("expected N/SECS such as 300/60, got {value:?}"),
        )
    })?;
    let n = whole("--rate", n, 1u32, 1_000_000)?;
    let per = seconds("--rate", secs, 0.001)?;
    Ok((n, per))
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

impl Flags {
    /// The flags from the command line and the environment.
    pub fn from_env() -> Result<Self, FlagError> {
        let mut r = Reader {
            args: pico_args::Arguments::from_env(),
        };
        if r.args.contains(["-h", "--help"]) {
            super::print_help();
            std::process::exit(0);
        }
        let listen = r
            .string("--listen", "TOWER_CX_LISTEN")?
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| {
            FlagError::new("--listen", format!("expected ADDR:PORT, got {listen:?}"))
        })?;
        let auth_style = match r.string("--auth-style", "TOWER_CX_AUTH_STYLE")?.as_deref() {
            None | Some("basic") => ClientAuth::Basic,
            Some("post") => ClientAuth::Post,
            Some(other) => {
                return Err(FlagError::new(
                    "--auth-style",
                    format!("basic or post, got {other:?}"),
                ))
            }
        };
        let rate = r
            .string("--rate", "TOWER_CX_RATE")?
            .as_deref()
            .map(rate)
            .transpose()?;
        let defaults = Limits::default();
        let limits = Limits {
            header_timeout: r.seconds(
                "--header-timeout",
                "TOWER_CX_HEADER_TIMEOUT",
                defaults.header_timeout,
                0.001,
            )?,
            body_timeout: r.seconds(
                "--body-timeout",
                "TOWER_CX_BODY_TIMEOUT",
                defaults.body_timeout,
                0.001,
            )?,
            send_timeout: r.seconds(
                "--send-timeout",
                "TOWER_CX_SEND_TIMEOUT",
                defaults.send_timeout,
                0.001,
            )?,
            max_connections: r.number(
                "--max-connections",
                "TOWER_CX_MAX_CONNECTIONS",
                defaults.max_connections,
                1,
                1_000_000,
            )?,
            max_body_bytes: r.number(
                "--max-body-bytes",
                "TOWER_CX_MAX_BODY_BYTES",
                defaults.max_body_bytes,
                0,
                GIB,
            )?,
            max_buffered_bytes: r.number(
                "--max-buffered-bytes",
                "TOWER_CX_MAX_BUFFERED_BYTES",
                defaults.max_buffered_bytes,
                0,
                64 * GIB,
            )?,
            max_header_bytes: r.number(
                "--max-header-bytes",
                "TOWER_CX_MAX_HEADER_BYTES",
                defaults.max_header_bytes,
                // hyper's smallest read buffer
                8 * KIB,
                MIB,
            )?,
            max_uri_bytes: r.number(
                "--max-uri-bytes",
                "TOWER_CX_MAX_URI_BYTES",
                defaults.max_uri_bytes,
                16,
                64 * KIB,
            )?,
        };
        let flags = Flags {
            listen,
            upstream: r.string("--upstream", "TOWER_CX_UPSTREAM")?,
            token_url: r.string("--token-url", "TOWER_CX_TOKEN_URL")?,
            client_id: r.string("--client-id", "TOWER_CX_CLIENT_ID")?,
            client_secret: r.string("--client-secret", "TOWER_CX_CLIENT_SECRET")?,
            scope: r.string("--scope", "TOWER_CX_SCOPE")?,
            auth_style,
            concurrency: r.number("--concurrency", "TOWER_CX_CONCURRENCY", 16, 1, 100_000)?,
            queue_depth: r.number("--queue-depth", "TOWER_CX_QUEUE_DEPTH", 1024, 0, 1_000_000)?,
            max_attempts: r.number("--max-attempts", "TOWER_CX_MAX_ATTEMPTS", 3, 1, 100)?,
            rate,
            timeout: r.seconds(
                "--timeout",
                "TOWER_CX_TIMEOUT",
                Duration::from_secs(30),
                0.001,
            )?,
            deadline: r.seconds(
                "--deadline",
                "TOWER_CX_DEADLINE",
                Duration::from_secs(30),
                0.001,
            )?,
            audit_file: r.string("--audit-file", "TOWER_CX_AUDIT_FILE")?,
            dead_letter_file: r.string("--dead-letter-file", "TOWER_CX_DEAD_LETTER_FILE")?,
            redis: r.string("--redis", "TOWER_CX_REDIS")?,
            mock: r.switch("--mock", "TOWER_CX_MOCK")?,
            upstream_honours_keys: r
                .switch("--upstream-honours-keys", "TOWER_CX_UPSTREAM_HONOURS_KEYS")?,
            shutdown_grace: r.seconds(
                "--shutdown-grace",
                "TOWER_CX_SHUTDOWN_GRACE",
                Duration::from_secs(30),
                0.0,
            )?,
            limits,
        };
        let rest = r.args.finish();
        if !rest.is_empty() {
            return Err(FlagError::new(
                "arguments",
                format!("unknown: {rest:?} (see --help)"),
            ));
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_are_refused_with_the_flag_named() {
        assert_eq!(whole("--x", "5", 1u32, 10).unwrap(), 5);
        for bad in ["0", "11", "-1", "1e3", "", "99999999999999999999"] {
            let err = whole("--x", bad, 1u32, 10).unwrap_err();
            assert!(
                err.to_string().starts_with("--x: expected 1 to 10"),
                "{err}"
            );
        }
    }

    #[test]
    fn seconds_refuse_what_a_duration_cannot_hold() {
        assert_eq!(
            seconds("--t", "1.5", 0.001).unwrap(),
            Duration::from_millis(1500)
        );
        for bad in ["1e30", "inf", "NaN", "-1", "0", "86401", "x"] {
            let err = seconds("--t", bad, 0.001).unwrap_err();
            assert!(
                err.to_string().starts_with("--t: expected seconds"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_rate_is_n_per_seconds() {
        assert_eq!(rate("300/60").unwrap(), (300, Duration::from_secs(60)));
        for bad in ["1/1e30", "0/1", "300", "1/0", "1/-5", "a/b"] {
            let err = rate(bad).unwrap_err();
            assert!(err.to_string().starts_with("--rate: "), "{bad}: {err}");
        }
    }
}
