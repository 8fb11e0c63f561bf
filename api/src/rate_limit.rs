//! Redis rate limits: per address and per client IP for forgot-password, per (IP, address)
//! pair for sign-in.
//!
//! Keys hold HMAC pseudonyms, never the address or IP itself. Each limit is a single-key
//! script (valid on Redis Cluster); the two forgot-password limits are sent as one pipeline,
//! so checking both costs one round trip.

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};
use redis::Script;
use shared::keys::pseudonym;

use shared::redis_pool::RedisPool;

use crate::error::ApiError;

const WINDOW: Duration = Duration::from_secs(3600);

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

/// The limiter.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
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
            redis,
            script: Script::new(include_str!("rate_limit.lua")),
            secret: secret.to_vec(),
            email_per_hour,
            ip_per_hour,
            login_per_hour,
            signup_per_hour,
        }
    }

    /// Pseudonym of an address key (for Redis keys, logs and audit rows).
    pub fn address_pseudonym(&self, email_key: &str) -> String {
        pseudonym(&self.secret, "email", email_key)
    }

    /// Counts a forgot-password request against the per-IP and per-address budgets.
    pub async fn check_forgot(
        &self,
        ip: IpAddr,
        email_key: &str,
        now: DateTime<Utc>,
    ) -> Result<ForgotVerdict, ApiError> {
        let keys = self.redis.keys();
        let ip_key = keys.rate_ip("forgot", &pseudonym(&self.secret, "ip", &ip_subject(ip)));
        let email_key = keys.rate_email(&self.address_pseudonym(email_key));
        let calls = [(ip_key, self.ip_per_hour), (email_key, self.email_per_hour)];
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
            &self.secret,
            "login",
            &format!("{}\0{email_key}", ip_subject(ip)),
        );
        let key = self.redis.keys().rate_ip("login", &subject);
        let results = self.run(&[(key, self.login_per_hour)], now).await?;
        Ok(results[0])
    }

    /// Counts a sign-up from this client IP (each one costs a hash and sends an email).
    pub async fn check_signup(&self, ip: IpAddr, now: DateTime<Utc>) -> Result<Verdict, ApiError> {
        let key = self
            .redis
            .keys()
            .rate_ip("signup", &pseudonym(&self.secret, "ip", &ip_subject(ip)));
        let results = self.run(&[(key, self.signup_per_hour)], now).await?;
        Ok(results[0])
    }

    async fn run(
        &self,
        calls: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, ApiError> {
        let now_ms = now.timestamp_millis();
        let window_ms = WINDOW.as_millis() as i64;
        let build = |load: bool| {
            let mut pipe = redis::pipe();
            if load {
                pipe.load_script(&self.script).ignore();
            }
            for (key, limit) in calls {
                let member = format!("{now_ms}-{}", uuid::Uuid::new_v4().simple());
                pipe.invoke_script(
                    self.script
                        .key(key)
                        .arg(now_ms)
                        .arg(window_ms)
                        .arg(*limit)
                        .arg(member),
                );
            }
            pipe
        };
        let first = build(false);
        let raw: Vec<(i64, i64, i64)> = match self
            .redis
            .run(|mut c| async move { first.query_async(&mut c).await })
            .await
        {
            Ok(r) => r,
            // After a Redis restart the script cache is empty: load and retry once. The
            // failed pipeline ran nothing (every call failed with NOSCRIPT), so nothing is
            // counted twice.
            Err(e) if e.is_noscript() => {
                let retry = build(true);
                self.redis
                    .run(|mut c| async move { retry.query_async(&mut c).await })
                    .await?
            }
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
