//! The Redis connection pool, with a deadline on every operation.
//!
//! A slow or dead Redis must turn into a prompt 503, never into requests piling up.

use std::{future::Future, time::Duration};

use deadpool_redis::{
    Config as PoolConfig, Connection, Pool, PoolConfig as Sizing, Runtime, Timeouts,
};
use shared::keys::Keys;

use crate::error::ApiError;

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
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, ApiError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(OP_TIMEOUT, async {
            let conn = self.pool.get().await?;
            Ok::<T, ApiError>(op(conn).await?)
        })
        .await?
    }

    /// Readiness probe.
    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }
}
