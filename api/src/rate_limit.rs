//! Redis rate limits: per address and per client IP for forgot-password, per (IP, address)
//! pair for sign-in.
//!
//! Keys hold HMAC pseudonyms, never the address or IP itself. Each limit is a single-key
//! script (valid on Redis Cluster); the two forgot-password limits are sent as one pipeline,
//! so checking both costs one round trip.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use redis::{Script, aio::MultiplexedConnection};
use shared::keys::pseudonym;

use shared::redis_pool::{RedisError, RedisPool};

use crate::error::ApiError;

const WINDOW: Duration = Duration::from_secs(3600);
/// Deadline for one check's round trip: a slow Redis turns into a prompt 503.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// One limit's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Seconds until the next request would be allowed (0 when allowed).
    pub retry_after_secs: u64,
}

/// The verdicts for a forgot-password request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForgotVerdict {
    pub ip: Verdict,
    pub email: Verdict,
}

/// The limiter. Cheap to clone (the handlers' state is cloned for every request).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisPool,
    /// One multiplexed connection shared by every check, taken out of the pool. Checking out
    /// a pooled connection costs a round trip of its own (the pool pings every connection it
    /// hands out), and commands of concurrent requests on one multiplexed connection go out
    /// and come back together, so under load this halves the round trips and batches the
    /// rest. Dropped on any failure; the next check takes a fresh one from the pool.
    shared: Mutex<Option<MultiplexedConnection>>,
    script: Script,
    secret: Vec<u8>,
    email_per_hour: u32,
    ip_per_hour: u32,
    login_per_hour: u32,
    signup_per_hour: u32,
}

impl RateLimiter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        redis: RedisPool,
        secret: &[u8],
        email_per_hour: u32,
        ip_per_hour: u32,
        login_per_hour: u32,
        signup_per_hour: u32,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                shared: Mutex::new(None),
                script: Script::new(include_str!("rate_limit.lua")),
                secret: secret.to_vec(),
                email_per_hour,
                ip_per_hour,
                login_per_hour,
                signup_per_hour,
            }),
        }
    }

    /// Pseudonym of an address key (for Redis keys, logs and audit rows).
    pub fn address_pseudonym(&self, email_key: &str) -> String {
        pseudonym(&self.inner.secret, "email", email_key)
    }

    /// Counts a forgot-password request against the per-IP and per-address budgets.
    pub async fn check_forgot(
        &self,
        ip: IpAddr,
        email_key: &str,
        now: DateTime<Utc>,
    ) -> Result<ForgotVerdict, ApiError> {
        let inner = &self.inner;
        let keys = inner.redis.keys();
        let ip_key = keys.rate_ip("forgot", &pseudonym(&inner.secret, "ip", &ip_subject(ip)));
        let email_key = keys.rate_email(&self.address_pseudonym(email_key));
        let calls = [
            (ip_key, inner.ip_per_hour),
            (email_key, inner.email_per_hour),
        ];
        let results = self.run(&calls, now).await?;
        Ok(ForgotVerdict {
            ip: results[0],
            email: results[1],
        })
    }

    /// Counts a sign-in attempt for this (IP, address) pair. Keyed on the pair so a guesser
    /// is slowed down without letting anyone lock a user out from elsewhere; unknown addresses
    /// are limited exactly like known ones.
    pub async fn check_login(
        &self,
        ip: IpAddr,
        email_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Verdict, ApiError> {
        let subject = pseudonym(
            &self.inner.secret,
            "login",
            &format!("{}\0{email_key}", ip_subject(ip)),
        );
        let key = self.inner.redis.keys().rate_ip("login", &subject);
        let results = self.run(&[(key, self.inner.login_per_hour)], now).await?;
        Ok(results[0])
    }

    /// Counts a sign-up from this client IP (each one costs a hash and sends an email).
    pub async fn check_signup(&self, ip: IpAddr, now: DateTime<Utc>) -> Result<Verdict, ApiError> {
        let key = self.inner.redis.keys().rate_ip(
            "signup",
            &pseudonym(&self.inner.secret, "ip", &ip_subject(ip)),
        );
        let results = self.run(&[(key, self.inner.signup_per_hour)], now).await?;
        Ok(results[0])
    }

    async fn run(
        &self,
        calls: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, ApiError> {
        let now_ms = now.timestamp_millis();
        let window_ms = WINDOW.as_millis() as i64;
        let script = &self.inner.script;
        let build = |load: bool| {
            let mut pipe = redis::pipe();
            if load {
                pipe.load_script(script).ignore();
            }
            for (key, limit) in calls {
                // Unique within the window; 64 random bits from the thread-local generator
                // (a UUID would cost a getrandom system call per member).
                let member = format!("{now_ms}-{:016x}", rand::random::<u64>());
                pipe.invoke_script(
                    script
                        .key(key)
                        .arg(now_ms)
                        .arg(window_ms)
                        .arg(*limit)
                        .arg(member),
                );
            }
            pipe
        };
        let raw: Vec<(i64, i64, i64)> = match self.query(&build(false)).await {
            Ok(r) => r,
            // After a Redis restart the script cache is empty: load and retry once. The
            // failed pipeline ran nothing (every call failed with NOSCRIPT), so nothing is
            // counted twice.
            Err(e) if e.is_noscript() => self.query(&build(true)).await?,
            Err(e) => return Err(e.into()),
        };
        Ok(raw
            .into_iter()
            .map(|(allowed, _count, wait_ms)| Verdict {
                allowed: allowed == 1,
                retry_after_secs: if allowed == 1 {
                    0
                } else {
                    (wait_ms.max(1) as u64).div_ceil(1000)
                },
            })
            .collect())
    }
}

impl RateLimiter {
    /// Sends `pipe` on the shared connection within [`REDIS_TIMEOUT`].
    async fn query(&self, pipe: &redis::Pipeline) -> Result<Vec<(i64, i64, i64)>, RedisError> {
        let mut connection = self.connection().await?;
        let result =
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut connection)).await {
                Ok(Ok(values)) => return Ok(values),
                Ok(Err(e)) => RedisError::Redis(e),
                Err(_) => RedisError::Timeout(REDIS_TIMEOUT),
            };
        // NOSCRIPT is an answer on a healthy connection; anything else may mean the
        // connection is gone (Redis restarted, a network cut): start over with a fresh one.
        if !result.is_noscript() {
            self.forget_connection();
        }
        Err(result)
    }

    /// The shared connection, taking one from the pool when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(connection) = self.inner.shared.lock().ok().and_then(|c| c.clone()) {
            return Ok(connection);
        }
        // Taken out of the pool for good: it is never pinged or handed out again by the pool.
        let connection = self
            .inner
            .redis
            .run(|pooled| async move { Ok(deadpool_redis::Connection::take(pooled)) })
            .await?;
        if let Ok(mut shared) = self.inner.shared.lock() {
            *shared = Some(connection.clone());
        }
        Ok(connection)
    }

    fn forget_connection(&self) {
        if let Ok(mut shared) = self.inner.shared.lock() {
            *shared = None;
        }
    }
}

/// The unit an IP budget applies to: the address for IPv4, the /64 network for IPv6 (one
/// subscriber usually owns a whole /64 and can pick any address in it per request).
pub fn ip_subject(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_budget_per_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_subject(a), ip_subject(b));
        assert_ne!(ip_subject(a), ip_subject(c));
        assert_eq!(
            ip_subject("203.0.113.7".parse().expect("ip")),
            "203.0.113.7"
        );
    }
}
