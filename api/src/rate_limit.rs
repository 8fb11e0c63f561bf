//! Redis rate limits: per address and per client IP for forgot-password; per (IP, address)
//! pair, per IP and per address for sign-in (per recognised device instead of pair and
//! address for a browser that signed in to the account before); per IP for sign-up and for
//! the endpoints that take a link.
//!
//! A client is an IPv4 address or an IPv6 /64; IPv6 clients are also counted per /56 and per
//! /48 with larger budgets (`RATE_LIMIT_IPV6_56_FACTOR`, `RATE_LIMIT_IPV6_48_FACTOR` times the
//! /64's), since one subscriber can hold 256 or 65,536 /64 networks.
//!
//! Keys hold HMAC pseudonyms, never the address or IP itself. Each limit is a single-key
//! script (valid on Redis Cluster) that reads the time from Redis; the limits of one request
//! are sent at once on the shared multiplexed connection, so checking them costs one round
//! trip. A request refused by any
//! of its limits counts against none of them: the entries the others logged are taken back
//! (a second round trip, on the refusal path only). So an attacker who is over their own IP
//! budget cannot spend a victim's per-address budget with requests that were never served.

use std::{net::IpAddr, sync::Arc, time::Duration};

use redis::Script;
pub use shared::keys::ip_subject;
use shared::keys::pseudonym;

use shared::redis_pool::RedisPool;

use shared::audit::Outcome;

use crate::{audit::RefusalAudit, error::ApiError};

/// One limit's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Seconds until the next request would be allowed (0 when allowed).
    pub retry_after_secs: u64,
    /// Which budget refused (its label for metrics and audit rows); `None` when allowed.
    pub refused_by: Option<Outcome>,
    /// The refusing budget's Redis key (pseudonymous): what one audit row per minute stands
    /// for (see [`RefusalAudit::refused`]); `None` when allowed.
    pub refused_key: Option<Arc<str>>,
}

impl Verdict {
    const ALLOWED: Verdict = Verdict {
        allowed: true,
        retry_after_secs: 0,
        refused_by: None,
        refused_key: None,
    };
}

/// The per-client budgets an endpoint counts before it looks at anything the request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpBudget {
    /// Sign-ups (`RATE_LIMIT_SIGNUP_PER_HOUR`): each one costs a hash and sends an email.
    SignUp,
    /// Requests to an endpoint that takes a link: reset, verify, lock and their pages
    /// (`RATE_LIMIT_TOKEN_PER_HOUR`). Guessing or replaying links, and wrong passwords at
    /// verification, are bounded per client.
    Link,
    /// Reset codes, whatever the address and whether the code is right
    /// (`RATE_LIMIT_CODE_PER_HOUR`).
    Code,
}

/// Counts the request against the client's `budget` before anything else is looked at; over
/// it, the refusal is audited (see [`RefusalAudit::refused`]) and answered with a generic
/// `429 rate_limited_ip`, which says nothing about what the request named.
pub async fn within_budget(
    limiter: &RateLimiter,
    refusals: &RefusalAudit,
    budget: IpBudget,
    ip: IpAddr,
    request_id: Option<&str>,
) -> Result<(), ApiError> {
    let verdict = limiter.check_ip(budget, ip).await?;
    if verdict.allowed {
        return Ok(());
    }
    refusals.refused(&verdict, ip, None, request_id);
    Err(ApiError::RateLimitedIp {
        retry_after_secs: verdict.retry_after_secs,
    })
}

/// The verdicts for a forgot-password request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgotVerdict {
    pub ip: Verdict,
    pub email: Verdict,
}

/// The budgets, each with its stable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub forgot_email: u32,
    pub forgot_ip: u32,
    pub login_pair: u32,
    pub login_ip: u32,
    pub login_email: u32,
    pub signup_ip: u32,
    pub token_ip: u32,
    pub code_ip: u32,
    /// Sign-in attempts per recognised device and address (see [`crate::devices`]).
    pub login_device: u32,
    /// An IPv6 /56 gets this many times a /64's budget.
    pub v6_56_factor: u32,
    /// An IPv6 /48 gets this many times a /64's budget.
    pub v6_48_factor: u32,
    pub window: Duration,
}

impl Limits {
    /// The budgets of an api configuration.
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            forgot_email: c.rate_limit_email_per_hour,
            forgot_ip: c.rate_limit_ip_per_hour,
            login_pair: c.login_limit_per_hour,
            login_ip: c.login_ip_limit_per_hour,
            login_email: c.login_email_limit_per_hour,
            signup_ip: c.signup_limit_per_hour,
            token_ip: c.token_limit_per_hour,
            code_ip: c.code_limit_per_hour,
            login_device: c.login_device_limit_per_hour,
            v6_56_factor: c.ipv6_56_factor,
            v6_48_factor: c.ipv6_48_factor,
            window: c.rate_limit_window,
        }
    }
}

/// The entries a sign-in attempt logged (key, member), so a success can take them back.
#[derive(Debug, Default)]
pub struct Attempt {
    entries: Vec<(String, String)>,
}

/// One budget to count a request against.
struct Check {
    key: String,
    limit: u32,
    label: Outcome,
}

/// The limiter. Cheap to clone (the handlers' state is cloned for every request).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The process's one multiplexed connection (see [`shared::redis_pool`]).
    redis: RedisPool,
    script: Script,
    secret: Vec<u8>,
    limits: Limits,
}

impl RateLimiter {
    /// A limiter over `redis`; `secret` keys the pseudonyms in the key names.
    pub fn new(redis: RedisPool, secret: &[u8], limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                script: Script::new(include_str!("rate_limit.lua")),
                secret: secret.to_vec(),
                limits,
            }),
        }
    }

    /// Pseudonym of an address key (for Redis keys, logs and audit rows).
    pub fn address_pseudonym(&self, email_key: &str) -> String {
        pseudonym(&self.inner.secret, "email", email_key)
    }

    /// The per-client checks of one budget: the IPv4 address, or the IPv6 /64 with its /56
    /// and /48 at their larger budgets.
    fn ip_checks(&self, action: &str, ip: IpAddr, limit: u32, label: Outcome) -> Vec<Check> {
        let limits = &self.inner.limits;
        client_subjects(ip)
            .into_iter()
            .map(|(subject, scope)| {
                let factor = match scope {
                    Scope::Client => 1,
                    Scope::V6Net56 => limits.v6_56_factor,
                    Scope::V6Net48 => limits.v6_48_factor,
                };
                let subject = pseudonym(&self.inner.secret, "ip", &subject);
                Check {
                    key: self.inner.redis.keys().rate_ip(action, &subject),
                    limit: limit.saturating_mul(factor),
                    label,
                }
            })
            .collect()
    }

    /// Counts a forgot-password request against the per-IP and per-address budgets. A request
    /// the IP budget refuses does not spend the address's budget.
    pub async fn check_forgot(
        &self,
        ip: IpAddr,
        email_key: &str,
    ) -> Result<ForgotVerdict, ApiError> {
        let limits = &self.inner.limits;
        let mut checks = self.ip_checks("forgot", ip, limits.forgot_ip, Outcome::ForgotIp);
        checks.push(Check {
            key: self
                .inner
                .redis
                .keys()
                .rate_email(&self.address_pseudonym(email_key)),
            limit: limits.forgot_email,
            label: Outcome::ForgotEmail,
        });
        let counted = self.count(&checks).await?;
        let (clients, address) = counted.split_at(counted.len() - 1);
        let email = address[0].0.clone();
        let ip = match refusal(clients) {
            None => Verdict::ALLOWED,
            Some(refused) => {
                // Refused for the client: nothing else is spent (not its other prefixes,
                // not the address's budget).
                self.refund(&checks, &counted).await;
                refused
            }
        };
        Ok(ForgotVerdict { ip, email })
    }

    /// Counts a sign-in attempt (or a password check at verification) against three budgets:
    /// the (IP, address) pair (slows one guesser on one account), the IP over all addresses
    /// (password spraying) and the address over all IPs (credential stuffing from a botnet).
    /// Unknown addresses are counted exactly like known ones, so a refusal says nothing about
    /// whether an account exists. A request refused by one budget counts against none, and a
    /// successful sign-in is taken back with [`Self::forgive`]: the budgets count failures,
    /// so the owner's own sign-ins neither use up the address's budget nor show up in it.
    ///
    /// A refusal by the per-address budget answers with the whole window as `Retry-After`
    /// rather than the time until its oldest entry expires: that time would tell when someone
    /// else (the owner, usually) last failed to sign in to the address.
    ///
    /// A `device` that signed in to this address before (see [`crate::devices`]) is counted
    /// per (device, address) instead of per pair and per address: strangers who spend the
    /// address's budget never refuse the owner's own browser. The per-IP budget still holds.
    pub async fn check_login(
        &self,
        ip: IpAddr,
        email_key: &str,
        device: Option<&str>,
    ) -> Result<(Verdict, Attempt), ApiError> {
        let inner = &self.inner;
        let limits = &inner.limits;
        let address = self.address_pseudonym(email_key);
        let keys = inner.redis.keys();
        let mut checks = self.ip_checks("login-ip", ip, limits.login_ip, Outcome::LoginIp);
        match device {
            Some(device) => checks.push(Check {
                key: keys.rate_ip(
                    "login-device",
                    &pseudonym(&inner.secret, "device", &format!("{device}\0{email_key}")),
                ),
                limit: limits.login_device,
                label: Outcome::LoginDevice,
            }),
            None => {
                let pair = pseudonym(
                    &inner.secret,
                    "login",
                    &format!("{}\0{email_key}", ip_subject(ip)),
                );
                checks.push(Check {
                    key: keys.rate_ip("login", &pair),
                    limit: limits.login_pair,
                    label: Outcome::LoginPair,
                });
                checks.push(Check {
                    key: keys.rate_ip("login-email", &address),
                    limit: limits.login_email,
                    label: Outcome::LoginEmail,
                });
            }
        }
        let (mut verdict, members) = self.all_or_nothing_counted(&checks).await?;
        if verdict.refused_by == Some(Outcome::LoginEmail) {
            verdict.retry_after_secs = limits.window.as_secs().max(1);
        }
        let attempt = Attempt {
            entries: checks.into_iter().map(|c| c.key).zip(members).collect(),
        };
        Ok((verdict, attempt))
    }

    /// Clears the address's budget of failed sign-ins: after a reset by the mailbox's owner,
    /// failures counted against the old password are no reason to refuse the new one.
    /// Best effort.
    pub async fn clear_login_failures(&self, email_key: &str) {
        let key =
            (self.inner.redis.keys()).rate_ip("login-email", &self.address_pseudonym(email_key));
        let key = &key;
        let result = self
            .inner
            .redis
            .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not clear an address's failed sign-ins");
        }
    }

    /// Takes back the entries of a sign-in attempt that succeeded. Best effort.
    pub async fn forgive(&self, attempt: Attempt) {
        let entries: Vec<(&str, &str)> = attempt
            .entries
            .iter()
            .map(|(key, member)| (key.as_str(), member.as_str()))
            .collect();
        self.take_back(&entries, "forgive a successful sign-in")
            .await;
    }

    /// Counts a request from this client IP against `budget`.
    pub async fn check_ip(&self, budget: IpBudget, ip: IpAddr) -> Result<Verdict, ApiError> {
        let limits = &self.inner.limits;
        let checks = match budget {
            IpBudget::SignUp => self.ip_checks("signup", ip, limits.signup_ip, Outcome::SignupIp),
            IpBudget::Link => self.ip_checks("token", ip, limits.token_ip, Outcome::TokenIp),
            IpBudget::Code => self.ip_checks("code", ip, limits.code_ip, Outcome::CodeIp),
        };
        self.all_or_nothing(&checks).await
    }

    /// Counts `checks`; when any refuses, takes back what the others logged and reports the
    /// refusal that waits longest.
    async fn all_or_nothing(&self, checks: &[Check]) -> Result<Verdict, ApiError> {
        Ok(self.all_or_nothing_counted(checks).await?.0)
    }

    /// [`Self::all_or_nothing`], also returning the member logged under each check's key
    /// (empty strings when the request was refused and nothing stays logged).
    async fn all_or_nothing_counted(
        &self,
        checks: &[Check],
    ) -> Result<(Verdict, Vec<String>), ApiError> {
        let counted = self.count(checks).await?;
        match refusal(&counted) {
            None => Ok((
                Verdict::ALLOWED,
                counted.into_iter().map(|(_, member)| member).collect(),
            )),
            Some(verdict) => {
                self.refund(checks, &counted).await;
                Ok((verdict, vec![String::new(); checks.len()]))
            }
        }
    }

    /// Runs the limiter script for every check, all at once: one command per key (each key is
    /// its own cluster slot, so no pipeline could hold them), sent together on the shared
    /// multiplexed connection. Returns each verdict with the member it logged.
    async fn count(&self, checks: &[Check]) -> Result<Vec<(Verdict, String)>, ApiError> {
        let window_ms = self.inner.limits.window.as_millis() as i64;
        let script = &self.inner.script;
        let calls = checks.iter().map(|check| async move {
            // Unique within the window; 128 random bits from the thread-local generator (a
            // UUID would cost a getrandom system call per member).
            let member = format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            // EVALSHA, and after a Redis restart (NOSCRIPT) LOAD and EVALSHA again: the failed
            // call ran nothing, so nothing is counted twice.
            let member_ref = &member;
            let (allowed, _count, wait_ms): (i64, i64, i64) = self
                .inner
                .redis
                .run(|mut c| async move {
                    script
                        .key(&check.key)
                        .arg(window_ms)
                        .arg(check.limit)
                        .arg(member_ref)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let verdict = if allowed == 1 {
                Verdict::ALLOWED
            } else {
                Verdict {
                    allowed: false,
                    retry_after_secs: (wait_ms.max(1) as u64).div_ceil(1000),
                    refused_by: Some(check.label),
                    refused_key: Some(Arc::from(check.key.as_str())),
                }
            };
            Ok::<_, ApiError>((verdict, member))
        });
        futures_util::future::try_join_all(calls).await
    }

    /// Takes back the entries that `counted` logged for a request that was refused after all.
    /// Best effort: a failure here leaves one extra entry that expires with its window.
    async fn refund(&self, checks: &[Check], counted: &[(Verdict, String)]) {
        let entries: Vec<(&str, &str)> = checks
            .iter()
            .zip(counted)
            .filter(|(_, (verdict, _))| verdict.allowed)
            .map(|(check, (_, member))| (check.key.as_str(), member.as_str()))
            .collect();
        self.take_back(&entries, "take back rate-limit entries")
            .await;
    }

    /// Removes each (key, member), all at once (one command per key, as in [`Self::count`]).
    async fn take_back(&self, entries: &[(&str, &str)], what: &str) {
        let removals = entries.iter().map(|&(key, member)| {
            self.inner.redis.run(move |mut c| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async::<()>(&mut c)
                    .await
            })
        });
        for result in futures_util::future::join_all(removals).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not {what}");
            }
        }
    }
}

/// The refusal among `counted` that waits longest, if any refused.
fn refusal(counted: &[(Verdict, String)]) -> Option<Verdict> {
    counted
        .iter()
        .map(|(v, _)| v)
        .filter(|v| !v.allowed)
        .max_by_key(|v| v.retry_after_secs)
        .cloned()
}

/// Which of a client's networks a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The IPv4 address or the IPv6 /64.
    Client,
    V6Net56,
    V6Net48,
}

/// The networks a client is counted under: its address (IPv4), or its /64, /56 and /48
/// (IPv6).
fn client_subjects(ip: IpAddr) -> Vec<(String, Scope)> {
    match ip {
        IpAddr::V4(_) => vec![(ip_subject(ip), Scope::Client)],
        IpAddr::V6(v6) => vec![
            (ip_subject(ip), Scope::Client),
            (v6_prefix(v6, 56), Scope::V6Net56),
            (v6_prefix(v6, 48), Scope::V6Net48),
        ],
    }
}

/// The `/bits` network of an IPv6 address, written `prefix/bits`.
fn v6_prefix(ip: std::net::Ipv6Addr, bits: u32) -> String {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    let network = std::net::Ipv6Addr::from(u128::from(ip) & mask);
    format!("{network}/{bits}")
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

    #[test]
    fn ipv6_clients_are_also_counted_per_56_and_per_48() {
        let ip: IpAddr = "2001:db8:abcd:12ff:1:2:3:4".parse().expect("ip");
        let subjects: Vec<String> = client_subjects(ip).into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            subjects,
            [
                "2001:db8:abcd:12ff::/64",
                "2001:db8:abcd:1200::/56",
                "2001:db8:abcd::/48"
            ]
        );
        let v4: IpAddr = "198.51.100.4".parse().expect("ip");
        assert_eq!(
            client_subjects(v4),
            [("198.51.100.4".to_owned(), Scope::Client)]
        );
    }

    #[test]
    fn the_longest_refusal_is_the_answer() {
        let refused = |secs: u64, key: &str| Verdict {
            allowed: false,
            retry_after_secs: secs,
            refused_by: Some(Outcome::ForgotIp),
            refused_key: Some(Arc::from(key)),
        };
        let counted = vec![
            (Verdict::ALLOWED, "a".to_owned()),
            (refused(10, "k64"), String::new()),
            (refused(30, "k48"), String::new()),
        ];
        assert_eq!(refusal(&counted), Some(refused(30, "k48")));
        assert_eq!(refusal(&counted[..1]), None);
    }
}
