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
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};

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

    /// Whether the server answered (with an error): the connection itself is fine.
    fn is_server_answer(&self) -> bool {
        matches!(self, RedisError::Redis(e) if matches!(e.kind(), redis::ErrorKind::Server(_)))
    }
}

/// Deadline for one Redis round trip, connecting included.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A cloneable handle to the process's Redis connection plus the key namespace.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
    keys: Keys,
}

struct Inner {
    client: redis::Client,
    shared: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting, so a burst after an outage opens one connection, not hundreds.
    connecting: tokio::sync::Mutex<()>,
}

impl RedisPool {
    /// Prepares the connection (opened on first use); fails only on a malformed URL.
    pub fn new(url: &str, keys: Keys) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                shared: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
            keys,
        })
    }

    /// The key namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.inner.shared.lock().ok().and_then(|c| c.clone())
    }

    /// The shared connection, opening it when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _connecting = tokio::time::timeout(OP_TIMEOUT, self.inner.connecting.lock())
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT))?;
        if let Some(c) = self.current() {
            return Ok(c); // opened by another task meanwhile
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let connection = tokio::time::timeout(
            OP_TIMEOUT,
            self.inner
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| RedisError::Timeout(OP_TIMEOUT))??;
        if let Ok(mut shared) = self.inner.shared.lock() {
            *shared = Some(connection.clone());
        }
        Ok(connection)
    }

    fn forget(&self) {
        if let Ok(mut shared) = self.inner.shared.lock() {
            *shared = None;
        }
    }

    /// Runs `op` on the shared connection within the deadline.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
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
        if !error.is_server_answer() {
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
