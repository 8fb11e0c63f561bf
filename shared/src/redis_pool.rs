//! The Redis connection pool, with a deadline on every operation.
//!
//! A slow or dead Redis must turn into a prompt error (a 503 in the api, a retry in the
//! worker), never into work piling up.

use std::{future::Future, time::Duration};

use crate::keys::Keys;
use deadpool_redis::{
    Config as PoolConfig, Connection, Pool, PoolConfig as Sizing, Runtime, Timeouts,
};

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl RedisError {
    /// Whether the server had lost the script (it restarted): load it and retry.
    pub fn is_noscript(&self) -> bool {
        matches!(self, RedisError::Redis(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
    }
}

/// Deadline for one Redis round trip, connection checkout included.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A cloneable handle to the pool plus the key namespace.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    keys: Keys,
}

impl RedisPool {
    /// Builds the pool; connections are opened lazily, so a Redis that is down at start makes
    /// requests fail with 503 until it is back instead of keeping the api from starting.
    pub fn new(url: &str, keys: Keys) -> anyhow::Result<Self> {
        let mut cfg = PoolConfig::from_url(url);
        cfg.pool = Some(Sizing {
            max_size: 64,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..Sizing::default()
        });
        let pool = cfg.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self { pool, keys })
    }

    /// The key namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `op` on a pooled connection within the deadline.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(OP_TIMEOUT, async {
            let conn = self.pool.get().await?;
            Ok::<T, RedisError>(op(conn).await?)
        })
        .await
        .map_err(|_| RedisError::Timeout(OP_TIMEOUT))?
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
