//! The state every handler shares: the handles and settings of one api process.

use std::sync::{Arc, atomic::AtomicBool};

use metrics_exporter_prometheus::PrometheusHandle;
use shared::{clock::Clock, redis_pool::RedisPool};
use sqlx::PgPool;

use crate::{
    audit::RefusalAudit, config::Config, devices::Devices, hashing::Hasher, outbox::Outbox,
    publisher::Publisher, rate_limit::RateLimiter, routes, sessions::Sessions,
    tokens::TokenService,
};

/// Everything a handler needs, behind one `Arc`: a request clones one pointer, not every
/// handle. Its fields are reached through `Deref` (`state.db`).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The handles and settings of one api process (see [`AppState`]).
pub struct Services {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: RedisPool,
    pub sessions: Sessions,
    pub limiter: RateLimiter,
    pub tokens: TokenService,
    pub hasher: Hasher,
    pub publisher: Publisher,
    /// This replica's outbox relay (woken after a commit that added rows).
    pub outbox: Outbox,
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    pub pages: Arc<routes::pages::Pages>,
    /// The probe behind the public `/readyz`.
    pub readiness: routes::health::ProbeCache,
    /// Device cookies (recognised browsers at sign-in).
    pub devices: Devices,
    /// The audit rows of rate-limit refusals (see [`RefusalAudit`]).
    pub refusals: RefusalAudit,
    /// The breached-password check of new passwords.
    pub breached: crate::breached::BreachedPasswords,
    /// The schema is current (migrations ran, or are left to `api migrate`); not ready before.
    pub schema_ready: Arc<AtomicBool>,
    /// How long every refused sign-in takes at least while imported hashes remain.
    pub refusal_floor: crate::refusal_floor::RefusalFloor,
    /// Second factors: the sealing keys of their secrets.
    pub factors: crate::mfa::Factors,
    /// Passkeys: the relying party and its ceremonies.
    pub passkeys: crate::mfa::passkeys::Passkeys,
    /// Sign-ins waiting for their second factor.
    pub challenges: crate::mfa::challenge::Challenges,
}
