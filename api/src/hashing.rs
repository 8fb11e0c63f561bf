//! Argon2id hashing on a bounded slice of the blocking pool.
//!
//! Hashing is deliberately expensive CPU work. Running it on the async workers would stall
//! every other request, and running unboundedly many at once would let a burst of logins eat
//! all cores and memory; a semaphore admits `HASH_CONCURRENCY` hashes at a time.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::{config::Argon2Params, error::ApiError};

/// Longest a request waits for a free hashing slot.
const HASH_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the account does not exist, so
    /// "unknown address" costs the same time as "wrong password".
    dummy_hash: Arc<String>,
    verifications: Arc<AtomicU64>,
}

impl Hasher {
    /// Builds the hasher and its dummy hash (one hash at start).
    pub fn new(p: Argon2Params, concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hash_blocking(&params, random.as_bytes())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.on_pool(move || {
            hash_blocking(&params, password.as_bytes()).map_err(ApiError::Internal)
        })
        .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account, so both cases do the same work. Always `false` without an account.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = self
            .on_pool(move || {
                let parsed = PasswordHash::new(&hash).map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("stored hash unreadable: {e}"))
                })?;
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(exists && ok)
    }

    /// How many verifications ran since start (the dummy ones included).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // A burst beyond what the cores can hash waits at most this long, then gets a 503:
        // a bounded queue instead of requests piling up for minutes.
        let permit = tokio::time::timeout(HASH_QUEUE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::unavailable(anyhow::anyhow!("password hashing is saturated")))?
            .map_err(|e| ApiError::Internal(e.into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(
            Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .expect("hasher")
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = cheap();
        let stored = h.hash("correct horse".into()).await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(
            h.verify("correct horse".into(), Some(stored.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !h.verify("wrong horse".into(), Some(stored))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_missing_account_still_costs_one_verification() {
        let h = cheap();
        let before = h.verifications();
        assert!(!h.verify("anything".into(), None).await.expect("verify"));
        assert_eq!(h.verifications(), before + 1);
    }
}
