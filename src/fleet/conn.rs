//! The connection to the fleet's Redis: one server, or a Redis Cluster
//! found at connect time or named up front.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::RedisDown;

/// What the fleet's Redis turned out to be, from
/// [`RedisFleet::check`](super::RedisFleet::check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deployment {
    /// One server (a primary, possibly with replicas it serves alone).
    Standalone,
    /// A Redis Cluster: commands go to the node that owns their key's slot.
    Cluster,
}

/// A connection to either deployment; cheap to clone (both multiplex).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(crate) fn deployment(&self) -> Deployment {
        match self {
            Conn::Single(_) => Deployment::Standalone,
            Conn::Cluster(_) => Deployment::Cluster,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where the fleet's Redis is.
pub(crate) struct Seeds {
    /// One client per URL given; pub/sub subscribes through them in turn.
    pub(crate) nodes: Vec<redis::Client>,
    /// Named as a cluster ([`RedisFleet::cluster`](super::RedisFleet::cluster)):
    /// no detection.
    pub(crate) cluster: bool,
}

impl Seeds {
    /// Connect: a cluster if named one, else one server, unless that
    /// server says it is a cluster node (`INFO cluster`), in which case the
    /// cluster it belongs to, seeded by it.
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        max_delay: Duration,
    ) -> Result<Conn, RedisDown> {
        if self.cluster {
            return self.connect_cluster(timeout).await;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(max_delay);
        let conn = self.nodes[0]
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| describe(&e))?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn.clone())
            .await
            .map_err(|e| describe(&e))?;
        if cluster_enabled(&info) {
            return self.connect_cluster(timeout).await;
        }
        Ok(Conn::Single(conn))
    }

    async fn connect_cluster(&self, timeout: Duration) -> Result<Conn, RedisDown> {
        let client = cluster_client(&self.nodes, timeout).map_err(|e| describe(&e))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| describe(&e))?;
        Ok(Conn::Cluster(conn))
    }
}

/// A cluster client over `nodes`, each request bounded by `timeout`.
pub(crate) fn cluster_client(
    nodes: &[redis::Client],
    timeout: Duration,
) -> redis::RedisResult<ClusterClient> {
    ClusterClient::builder(nodes.iter().map(|n| n.get_connection_info().clone()))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // MOVED / ASK after a resharding: followed, within the fleet's
        // operation timeout
        .retries(2)
        .build()
}

/// Whether an `INFO cluster` reply says cluster mode is on.
pub(crate) fn cluster_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .any(|(name, value)| name == "cluster_enabled" && value.trim() == "1")
}

/// A Redis error as text with no URL or credentials in it.
pub(crate) fn describe(error: &redis::RedisError) -> RedisDown {
    let kind = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connection_refusal() {
        "connection refused".to_string()
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost".to_string()
    } else {
        format!("{:?}", error.kind())
    };
    RedisDown(format!("redis: {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_recognised_in_the_info_reply() {
        let cluster = "# Cluster\r\ncluster_enabled:1\r\n";
        let standalone = "# Cluster\r\ncluster_enabled:0\r\n";
        assert!(cluster_enabled(cluster));
        assert!(!cluster_enabled(standalone));
        assert!(!cluster_enabled(""));
        assert!(!cluster_enabled("cluster_enabled:10\r\n"));
    }

    #[test]
    fn cluster_seeds_with_different_passwords_are_refused() {
        let nodes = [
            redis::Client::open("redis://:a@127.0.0.1:1").unwrap(),
            redis::Client::open("redis://:b@127.0.0.1:2").unwrap(),
        ];
        assert!(cluster_client(&nodes, Duration::from_millis(10)).is_err());
        assert!(cluster_client(&nodes[..1], Duration::from_millis(10)).is_ok());
    }
}
