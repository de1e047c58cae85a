//! Redis for the fleet tests: a `redis-server` child process, the server
//! `.ci/run` started (`TOWER_CX_REDIS_URL`), or the three-node Redis
//! Cluster it started (`TOWER_CX_REDIS_CLUSTER_URLS`). Without them the
//! tests are skipped with a printed note, except under CI (`CI` set), where
//! they fail.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_cx::fleet::RedisFleet;

/// A `redis-server` child process on a loopback port, stopped on drop; or
/// the server `.ci/run` started (`TOWER_CX_REDIS_URL`), for the tests that
/// do not stop it (each test uses its own key prefix).
pub struct RedisServer {
    pub child: Option<Child>,
    pub port: u16,
    external: Option<String>,
}

impl RedisServer {
    /// The shared server if there is one, else a new one.
    pub fn shared() -> Option<Self> {
        match std::env::var("TOWER_CX_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(Self {
                child: None,
                port: 0,
                external: Some(url),
            }),
            _ => Self::start(),
        }
    }

    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> Option<Self> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: redis-server cannot be started ({e}); install redis-server");
                return None;
            }
            Err(e) => panic!("redis-server is required in CI: {e}"),
        };
        let server = Self {
            child: Some(child),
            port,
            external: None,
        };
        // Wait until it accepts connections.
        for _ in 0..250 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        match &self.external {
            Some(url) => url.clone(),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a test's fleet keeps its state: one server or a cluster.
#[derive(Clone)]
pub enum Backend {
    Server(String),
    Cluster {
        urls: Vec<String>,
        /// Members connected so far: they alternate between naming the
        /// cluster and giving one node's URL.
        members: Arc<AtomicUsize>,
    },
}

impl Backend {
    pub fn server(redis: &RedisServer) -> Self {
        Backend::Server(redis.url())
    }

    /// The cluster `.ci/run` started (`TOWER_CX_REDIS_CLUSTER_URLS`, comma
    /// separated); `None` (with a note) when unset, a failure under CI.
    pub fn cluster() -> Option<Self> {
        match std::env::var("TOWER_CX_REDIS_CLUSTER_URLS") {
            Ok(urls) if !urls.trim().is_empty() => Some(Backend::Cluster {
                urls: urls.split(',').map(|u| u.trim().to_owned()).collect(),
                members: Arc::default(),
            }),
            _ if std::env::var_os("CI").is_some() => {
                panic!("TOWER_CX_REDIS_CLUSTER_URLS is required in CI (.ci/run starts a cluster)")
            }
            _ => {
                eprintln!(
                    "SKIPPED: no Redis Cluster (set TOWER_CX_REDIS_CLUSTER_URLS to its node URLs)"
                );
                None
            }
        }
    }

    /// A new member's own connection. In a cluster, even members name the
    /// cluster's nodes ([`RedisFleet::cluster`]) and odd ones give one
    /// node's URL ([`RedisFleet::new`], which finds the cluster at connect
    /// time): both share the same state.
    pub fn connect(&self) -> RedisFleet {
        match self {
            Backend::Server(url) => RedisFleet::new(url).unwrap(),
            Backend::Cluster { urls, members } => {
                let n = members.fetch_add(1, Ordering::Relaxed);
                if n % 2 == 0 {
                    RedisFleet::cluster(urls).unwrap()
                } else {
                    RedisFleet::new(&urls[(n / 2) % urls.len()]).unwrap()
                }
            }
        }
    }

    /// The first node's URL.
    pub fn url(&self) -> &str {
        match self {
            Backend::Server(url) => url,
            Backend::Cluster { urls, .. } => &urls[0],
        }
    }
}

/// A key prefix of its own for each test.
pub fn prefix(test: &str) -> String {
    format!("test-{test}-{:08x}", rand::random::<u32>())
}
