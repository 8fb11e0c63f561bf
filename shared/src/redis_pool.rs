//! The one Redis access layer of both services: one multiplexed connection per process,
//! shared by every call, with a deadline on every operation.
//!
//! Commands of concurrent requests on one multiplexed connection go out and come back
//! together, so under load round trips are batched instead of each request checking a
//! connection out of a pool (which pinged it first: a round trip of its own). The connection
//! is opened on first use, so a Redis that is down at start makes requests fail with 503 (the
//! worker's jobs wait) until it is back; a connection that fails for any reason but a server's
//! answer is dropped, and the next call opens a new one. A slow or dead Redis turns into a
//! prompt error, never into work piling up.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::keys::Keys;
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};

/// Where Redis is: one node (`REDIS_URL`), a Redis Cluster (`REDIS_CLUSTER_URLS`), or the
/// primary that Sentinel names (`REDIS_SENTINEL_URLS` + `REDIS_SENTINEL_MASTER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Node(String),
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// The process's connection: one multiplexed connection to a node, or the cluster client's
/// connection (one multiplexed connection per primary; it follows MOVED/ASK and topology
/// changes by itself). Every key, script and pipeline of ours stays within one hash slot, so
/// the same calls run on both.
#[derive(Clone)]
pub enum RedisConn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

enum Client {
    Node(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
    /// Asked for the current primary at every (re)connection, so a failover that Sentinel
    /// promoted is followed on the next call after the old connection failed.
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
}

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl RedisError {
    /// Whether the server had lost the script (it restarted): load it and retry.
    pub fn is_noscript(&self) -> bool {
        matches!(self, RedisError::Redis(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
    }

    /// Whether the server answered (with an error) and the connection is still the right one.
    /// `READONLY` is an answer too, but from a primary that was demoted to a replica (a
    /// failover): the connection must go, and the next one asks Sentinel for the new primary.
    fn is_server_answer(&self) -> bool {
        matches!(self, RedisError::Redis(e) if matches!(e.kind(), redis::ErrorKind::Server(kind)
            if kind != redis::ServerErrorKind::ReadOnly))
    }
}

/// Deadline for one Redis round trip, connecting included.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for connecting to one cluster node.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Retries of a cluster request (after MOVED/ASK, or a lost node) within [`OP_TIMEOUT`].
const CLUSTER_RETRIES: u32 = 3;

/// A cloneable handle to the process's Redis connection plus the key namespace.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
    keys: Keys,
}

struct Inner {
    client: Client,
    shared: Mutex<Option<RedisConn>>,
    /// The primary the shared connection goes to (Sentinel mode), to notice a failover.
    connected_to: Mutex<Option<String>>,
    /// Held while connecting, so a burst after an outage opens one connection, not hundreds.
    connecting: tokio::sync::Mutex<()>,
}

impl RedisPool {
    /// Prepares the connection to one node (opened on first use), trusting the webpki roots
    /// for `rediss://`; fails only on a malformed URL.
    pub fn new(url: &str, keys: Keys) -> anyhow::Result<Self> {
        Self::connect_to(
            &RedisTarget::Node(url.to_owned()),
            keys,
            &crate::tls::Trust::default(),
        )
    }

    /// Prepares the connection to `target` (opened on first use); `rediss://` URLs are
    /// checked against `trust`. Fails only on malformed URLs.
    pub fn connect_to(
        target: &RedisTarget,
        keys: Keys,
        trust: &crate::tls::Trust,
    ) -> anyhow::Result<Self> {
        let certificates = trust.redis_certificates();
        let client = match target {
            RedisTarget::Node(url) => Client::Node(Box::new(match certificates {
                Some(certs) if is_tls(url) => redis::Client::build_with_tls(url.as_str(), certs)?,
                _ => redis::Client::open(url.as_str())?,
            })),
            RedisTarget::Cluster(seeds) => {
                let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str))
                    // Short: a dead node must not hold up connecting to the live ones.
                    .connection_timeout(CLUSTER_CONNECT_TIMEOUT)
                    .response_timeout(CLUSTER_CONNECT_TIMEOUT * 2)
                    // Several quick tries (a redirection, a slot map refreshed after a failover)
                    // fit in one call's deadline; the client's default first wait is 1.28 s.
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(50)
                    .max_retry_wait(400);
                if let Some(certs) = certificates.filter(|_| seeds.iter().any(|s| is_tls(s))) {
                    builder = builder.certs(certs);
                }
                Client::Cluster(Box::new(builder.build()?))
            }
            RedisTarget::Sentinel { sentinels, master } => Client::Sentinel(Box::new(
                tokio::sync::Mutex::new(sentinel_client(sentinels, master, certificates)?),
            )),
        };
        let pool = Self {
            inner: Arc::new(Inner {
                client,
                shared: Mutex::new(None),
                connected_to: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
            keys,
        };
        if matches!(pool.inner.client, Client::Sentinel(_)) {
            tokio::spawn(watch_primary(Arc::downgrade(&pool.inner)));
        }
        Ok(pool)
    }

    /// The key namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn current(&self) -> Option<RedisConn> {
        self.inner.shared.lock().ok().and_then(|c| c.clone())
    }

    /// The shared connection, opening it when there is none.
    async fn connection(&self) -> Result<RedisConn, RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _connecting = tokio::time::timeout(OP_TIMEOUT, self.inner.connecting.lock())
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT))?;
        if let Some(c) = self.current() {
            return Ok(c); // opened by another task meanwhile
        }
        let opened = async {
            match &self.inner.client {
                Client::Node(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(OP_TIMEOUT))
                        .set_response_timeout(Some(OP_TIMEOUT));
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(RedisConn::Node)
                }
                Client::Cluster(client) => {
                    client.get_async_connection().await.map(RedisConn::Cluster)
                }
                Client::Sentinel(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(OP_TIMEOUT))
                        .set_response_timeout(Some(OP_TIMEOUT));
                    let primary = client.lock().await.async_get_client().await?;
                    let addr = primary.get_connection_info().addr().to_string();
                    let connection = primary
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    if let Ok(mut connected_to) = self.inner.connected_to.lock() {
                        *connected_to = Some(addr);
                    }
                    Ok(RedisConn::Node(connection))
                }
            }
        };
        let connection = tokio::time::timeout(OP_TIMEOUT, opened)
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT))??;
        if let Ok(mut shared) = self.inner.shared.lock() {
            *shared = Some(connection.clone());
        }
        Ok(connection)
    }

    fn forget(&self) {
        forget(&self.inner);
    }

    /// Runs `op` on the shared connection within the deadline.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        let error = match tokio::time::timeout(OP_TIMEOUT, op(connection)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => RedisError::Redis(e),
            Err(_) => RedisError::Timeout(OP_TIMEOUT),
        };
        // An error answer (NOSCRIPT, WRONGTYPE) comes over a healthy connection; anything else
        // may mean it is gone (Redis restarted, a network cut): start over with a fresh one.
        // A cluster connection is never dropped: it reconnects to each node and refreshes its
        // slot map by itself (a new one would start by waiting on the very node that died).
        if !error.is_server_answer() && !matches!(self.inner.client, Client::Cluster(_)) {
            self.forget();
        }
        Err(error)
    }

    /// `SET key 1 NX EX ttl_secs`: `true` for the one caller that set the marker, `false` when
    /// it was already there (burns, once-per-period markers).
    pub async fn set_marker(&self, key: &str, ttl_secs: u64) -> Result<bool, RedisError> {
        let set: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl_secs)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Readiness probe.
    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }
}

fn forget(inner: &Inner) {
    if let Ok(mut shared) = inner.shared.lock() {
        *shared = None;
    }
}

fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// The Sentinel client: the sentinels' user and password (from their URLs) also open the
/// primary, and `rediss://` sentinels mean TLS to the primary too, both checked against the
/// same roots.
fn sentinel_client(
    sentinels: &[String],
    master: &str,
    certificates: Option<redis::TlsCertificates>,
) -> redis::RedisResult<SentinelClient> {
    let infos = sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let tls = sentinels.iter().any(|url| is_tls(url));
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|info| info.addr().clone()),
        master,
        SentinelServerType::Master,
    )?;
    if let Some(settings) = infos.first().map(|info| info.redis_settings()) {
        if let Some(user) = settings.username() {
            builder = builder
                .set_client_to_sentinel_username(user)
                .set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder
                .set_client_to_sentinel_password(password)
                .set_client_to_redis_password(password);
        }
    }
    if tls {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        if let Some(certs) = certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certs.clone())
                .set_client_to_redis_certificates(certs);
        }
    }
    builder.build()
}

/// Sentinel mode: asks the Sentinels every second which node is the primary, and drops the
/// shared connection as soon as it is another one than the connection goes to. Without this,
/// a failover that left the old primary up (a forced one, or a partition) would keep the
/// service writing to a node whose writes are lost when it becomes a replica.
async fn watch_primary(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return; // the process's Redis handle is gone
        };
        let Client::Sentinel(client) = &inner.client else {
            return;
        };
        let asked = tokio::time::timeout(OP_TIMEOUT, async {
            client.lock().await.async_get_client().await
        })
        .await;
        let Ok(Ok(primary)) = asked else {
            continue; // the Sentinels cannot tell now; the connection's own errors still count
        };
        let now = primary.get_connection_info().addr().to_string();
        let moved = inner
            .connected_to
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .is_some_and(|then| then != now);
        if moved {
            tracing::warn!(primary = %now, "Sentinel names another primary; reconnecting");
            forget(&inner);
            if let Ok(mut connected_to) = inner.connected_to.lock() {
                *connected_to = None;
            }
        }
    }
}
