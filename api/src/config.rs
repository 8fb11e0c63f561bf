//! The api's configuration, read from the environment (and `.env`) and validated at start.
//!
//! Every problem is reported at once, each with the variable's name and how to fix it, so a
//! misconfigured deploy fails in its first second instead of at the first request.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
pub use shared::config::ConfigError;
use shared::config::{CommonConfig, EnvReader};

/// Validated settings of one api process. The settings shared with the worker are in
/// [`CommonConfig`], reachable directly through `Deref` (`config.database_url`).
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub bind: SocketAddr,
    /// Where `/metrics` is served: never on the public `bind`.
    pub metrics_bind: SocketAddr,
    pub rate_limit_email_per_hour: u32,
    pub rate_limit_ip_per_hour: u32,
    pub login_limit_per_hour: u32,
    /// Sign-in attempts per client IP over all addresses (password spraying).
    pub login_ip_limit_per_hour: u32,
    /// Sign-in attempts per address over all IPs (credential stuffing from many addresses).
    pub login_email_limit_per_hour: u32,
    pub signup_limit_per_hour: u32,
    /// Requests per client IP to the endpoints that take a link (reset, verify, their pages).
    pub token_limit_per_hour: u32,
    /// Reset codes per client IP (`POST /v1/password/reset/code` and its form): an 8-digit
    /// code is guessable where a link is not, so it has its own, smaller budget.
    pub code_limit_per_hour: u32,
    /// `RATE_LIMIT_LOGIN_DEVICE_PER_HOUR`: failed sign-ins per recognised device and address.
    pub login_device_limit_per_hour: u32,
    /// `RATE_LIMIT_IPV6_56_FACTOR`: an IPv6 /56 gets this many times a /64's budget.
    pub ipv6_56_factor: u32,
    /// `RATE_LIMIT_IPV6_48_FACTOR`: an IPv6 /48 gets this many times a /64's budget.
    pub ipv6_48_factor: u32,
    /// `CODE_BREAKER_WRONG_PER_MINUTE`: wrong reset codes per minute over the whole site
    /// above which code entry pauses (links keep working).
    pub code_breaker_per_minute: u32,
    /// Length of every sliding rate-limit window (the `*_PER_HOUR` budgets apply per window).
    pub rate_limit_window: Duration,
    /// Hashes one client IP may have queued or running at once.
    pub hash_per_client: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub cookie_secure: bool,
    pub session_ttl: Duration,
    pub argon2: Argon2Params,
    /// Hashes allowed to run at once on the blocking pool.
    pub hash_concurrency: usize,
    /// `IMPORT_MAX_VERIFY_MS`: the longest one verification of an imported hash may take
    /// here; an import refuses a hash whose parameters cost more (`hash_too_costly`).
    pub import_max_verify: Duration,
    /// How long a publish may wait for the broker's confirm before the request gets a 503.
    pub publish_timeout: Duration,
    /// Where migrations run (`MIGRATE_DATABASE_URL`): a direct connection when `DATABASE_URL`
    /// goes through a transaction-pooling PgBouncer (migrations take a session-level advisory
    /// lock). `None`: `DATABASE_URL`.
    pub migrate_database_url: Option<shared::config::SecretUrl>,
    /// Whether the api migrates at start (`MIGRATE_ON_START`); `false` leaves it to
    /// `api migrate` (a release job).
    pub migrate_on_start: bool,
    /// Where the admin API listens (`ADMIN_API_BIND`); `None`: no admin API.
    pub admin_bind: Option<SocketAddr>,
    /// `ADMIN_API_KEYS`: the bearer keys of the admin API (each like a `TOKEN_SECRETS` entry).
    pub admin_keys: AdminKeySecrets,
    /// `AUDIT_RETENTION_DAYS`: audit rows older than this are deleted; `None`: kept.
    pub audit_retention_days: Option<u32>,
    /// `PWNED_PASSWORDS_DIR`: the Pwned Passwords range files; `None`: no breached-password check.
    pub pwned_passwords_dir: Option<std::path::PathBuf>,
    /// `MFA_ENROLMENT`: whether owners may set up second factors. Factors already set up are
    /// asked for either way; `off` is for the rollout from a release without them (an api of
    /// that release, side by side or after a rollback, would not ask for them).
    pub mfa_enrolment: bool,
    /// `PWNED_PASSWORDS_URL`: a Pwned Passwords range API (`https://api.pwnedpasswords.com/range/`,
    /// or a mirror) the first five hex digits of a SHA-1 are appended to; `None`: no range API.
    pub pwned_passwords_url: Option<String>,
    /// `PWNED_PASSWORDS_TIMEOUT_MS`: how long one range may take to read.
    pub pwned_passwords_timeout: Duration,
    /// `PWNED_PASSWORDS_FAIL`: `closed` refuses (503) when a range cannot be read; `open`
    /// accepts the password.
    pub pwned_passwords_fail_closed: bool,
}

shared::service_config!(Config);

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommended argon2id setting (19 MiB, 2 passes, 1 lane).
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Config {
    /// Reads settings through `lookup` (the environment in production, a map in tests).
    /// `NAME_FILE` is honoured for every variable, so secrets can come from mounted files.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(&lookup);
        let common = CommonConfig::read(&mut r);
        let bind = r.parsed(
            "API_BIND",
            "127.0.0.1:8080",
            "a socket address such as 0.0.0.0:8080",
        );
        let metrics_bind = r.parsed(
            "API_METRICS_BIND",
            "127.0.0.1:9464",
            "a socket address such as 127.0.0.1:9464 (keep it off the public interface)",
        );
        let email_limit = r.number("RATE_LIMIT_EMAIL_PER_HOUR", 3, 1, 1000);
        let ip_limit = r.number("RATE_LIMIT_IP_PER_HOUR", 10, 1, 1_000_000);
        let login_limit = r.number("RATE_LIMIT_LOGIN_PER_HOUR", 20, 1, 1_000_000);
        let login_ip_limit = r.number("RATE_LIMIT_LOGIN_IP_PER_HOUR", 100, 1, 1_000_000);
        let login_email_limit = r.number("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", 50, 1, 1_000_000);
        let signup_limit = r.number("RATE_LIMIT_SIGNUP_PER_HOUR", 20, 1, 1_000_000);
        let token_limit = r.number("RATE_LIMIT_TOKEN_PER_HOUR", 30, 1, 1_000_000);
        let code_limit = r.number("RATE_LIMIT_CODE_PER_HOUR", 10, 1, 1_000_000);
        let login_device_limit = r.number("RATE_LIMIT_LOGIN_DEVICE_PER_HOUR", 10, 1, 1_000_000);
        let ipv6_56_factor = r.number("RATE_LIMIT_IPV6_56_FACTOR", 4, 1, 65_536);
        let ipv6_48_factor = r.number("RATE_LIMIT_IPV6_48_FACTOR", 16, 1, 65_536);
        let code_breaker = r.number("CODE_BREAKER_WRONG_PER_MINUTE", 1000, 1, 100_000_000);
        let window = r.number("RATE_LIMIT_WINDOW_SECS", 3600, 1, 86_400);
        let trusted_proxies = r.trusted_proxies();
        let cookie_secure = r.boolean("COOKIE_SECURE", true);
        let session_ttl = r.number("SESSION_TTL_SECS", 7 * 86_400, 60, 90 * 86_400);
        let defaults = Argon2Params::default();
        let argon2 = Argon2Params {
            memory_kib: r.number(
                "ARGON2_MEMORY_KIB",
                defaults.memory_kib.into(),
                8,
                4 * 1024 * 1024,
            ) as u32,
            iterations: r.number("ARGON2_ITERATIONS", defaults.iterations.into(), 1, 100) as u32,
            parallelism: r.number("ARGON2_PARALLELISM", defaults.parallelism.into(), 1, 64) as u32,
        };
        if u64::from(argon2.memory_kib) < 8 * u64::from(argon2.parallelism) {
            r.error("ARGON2_MEMORY_KIB: must be at least 8 × ARGON2_PARALLELISM");
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash_concurrency = r.number("HASH_CONCURRENCY", cores as u64, 1, 1024) as usize;
        let hash_per_client = r.number("HASH_PER_CLIENT", 1, 1, 1024) as usize;
        let import_max_verify = r.number("IMPORT_MAX_VERIFY_MS", 1000, 1, 60_000);
        let publish_timeout = r.number("PUBLISH_TIMEOUT_MS", 5000, 100, 60_000);
        let migrate_database_url = r
            .raw("MIGRATE_DATABASE_URL")
            .filter(|v| !v.trim().is_empty())
            .map(shared::config::SecretUrl);
        let migrate_on_start = r.boolean("MIGRATE_ON_START", true);
        let (admin_bind, admin_keys) = admin_api(&mut r, bind);
        let pwned_passwords_dir = (r.raw("PWNED_PASSWORDS_DIR"))
            .filter(|v| !v.trim().is_empty())
            .map(|v| std::path::PathBuf::from(v.trim()));
        let pwned_passwords_url = (r.raw("PWNED_PASSWORDS_URL"))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(url) = &pwned_passwords_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            r.error(format!(
                "PWNED_PASSWORDS_URL: expected an http(s) URL the range is appended to (https://api.pwnedpasswords.com/range/), got {url:?}"
            ));
        }
        if pwned_passwords_url.is_some() && pwned_passwords_dir.is_some() {
            r.error("PWNED_PASSWORDS_URL and PWNED_PASSWORDS_DIR: set one of them, not both");
        }
        let pwned_passwords_timeout = r.number("PWNED_PASSWORDS_TIMEOUT_MS", 500, 1, 60_000);
        let mfa_enrolment = match r.string("MFA_ENROLMENT", "on").trim() {
            "on" => true,
            "off" => false,
            other => {
                r.error(format!("MFA_ENROLMENT: expected on or off, got {other:?}"));
                true
            }
        };
        let pwned_passwords_fail_closed = match r.string("PWNED_PASSWORDS_FAIL", "open").trim() {
            "open" => false,
            "closed" => true,
            other => {
                r.error(format!(
                    "PWNED_PASSWORDS_FAIL: expected open or closed, got {other:?}"
                ));
                false
            }
        };
        let audit_retention_days = match r.number("AUDIT_RETENTION_DAYS", 0, 0, 36_500) {
            0 => None,
            days => Some(days as u32),
        };

        r.finish().map_err(ConfigError)?;
        Ok(Self {
            common,
            bind: bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            metrics_bind: metrics_bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
            rate_limit_email_per_hour: email_limit as u32,
            rate_limit_ip_per_hour: ip_limit as u32,
            login_limit_per_hour: login_limit as u32,
            login_ip_limit_per_hour: login_ip_limit as u32,
            login_email_limit_per_hour: login_email_limit as u32,
            signup_limit_per_hour: signup_limit as u32,
            token_limit_per_hour: token_limit as u32,
            code_limit_per_hour: code_limit as u32,
            login_device_limit_per_hour: login_device_limit as u32,
            ipv6_56_factor: ipv6_56_factor as u32,
            ipv6_48_factor: ipv6_48_factor as u32,
            code_breaker_per_minute: code_breaker as u32,
            rate_limit_window: Duration::from_secs(window),
            hash_per_client,
            trusted_proxies,
            cookie_secure,
            session_ttl: Duration::from_secs(session_ttl),
            argon2,
            hash_concurrency,
            import_max_verify: Duration::from_millis(import_max_verify),
            publish_timeout: Duration::from_millis(publish_timeout),
            migrate_database_url,
            migrate_on_start,
            admin_bind,
            admin_keys: AdminKeySecrets(admin_keys),
            audit_retention_days,
            pwned_passwords_dir,
            pwned_passwords_url,
            mfa_enrolment,
            pwned_passwords_timeout: Duration::from_millis(pwned_passwords_timeout),
            pwned_passwords_fail_closed,
        })
    }
}

/// The admin API's keys; `Debug` counts them and shows none.
#[derive(Clone, Default)]
pub struct AdminKeySecrets(pub Vec<Vec<u8>>);

impl std::fmt::Debug for AdminKeySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} admin keys]", self.0.len())
    }
}

/// `ADMIN_API_BIND` and `ADMIN_API_KEYS`: the listener only with keys, never the public one;
/// every key a random secret like a `TOKEN_SECRETS` entry.
fn admin_api(
    r: &mut EnvReader<'_>,
    public: Option<SocketAddr>,
) -> (Option<SocketAddr>, Vec<Vec<u8>>) {
    let keys: Vec<Vec<u8>> = r
        .list("ADMIN_API_KEYS")
        .into_iter()
        .map(String::into_bytes)
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if let Err(problem) = shared::config::check_secret(key) {
            r.error(format!(
                "ADMIN_API_KEYS: key #{} {problem} (generate one with `openssl rand -hex 32`)",
                i + 1
            ));
        }
    }
    let bind = r
        .raw("ADMIN_API_BIND")
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| match v.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.error(format!(
                    "ADMIN_API_BIND: expected a socket address such as 127.0.0.1:9465, got {v:?}"
                ));
                None
            }
        });
    if let Some(addr) = bind {
        if keys.is_empty() {
            r.error("ADMIN_API_BIND: set, but ADMIN_API_KEYS is empty (every admin request needs a key)");
        }
        if public.is_some_and(|public| public.port() == addr.port() && addr.port() != 0) {
            r.error(
                "ADMIN_API_BIND: must not be the port of API_BIND (the admin API is never public)",
            );
        }
    }
    (bind, keys)
}

#[cfg(test)]
mod tests {
    use shared::token::Digest;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(shared::config::pairs_lookup(pairs))
    }

    const SECRET: &str = "a3a106852adf349f20bae220b71274866bcb55b00e1d993542179e43f0d7fd2e";

    #[test]
    fn a_minimal_environment_gets_production_defaults() {
        let c = from(&[
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("PUBLIC_BASE_URL", "https://account.example.com/"),
            ("TOKEN_SECRETS", SECRET),
        ])
        .expect("valid");
        assert_eq!(c.public_base_url, "https://account.example.com");
        assert_eq!(c.rate_limit_email_per_hour, 3);
        assert_eq!(c.rate_limit_ip_per_hour, 10);
        assert_eq!(c.reset_token_max_age, Duration::from_secs(3600));
        assert!(c.cookie_secure);
        assert_eq!(c.token_digest, Digest::Sha256);
        assert_eq!(c.retry_schedule_secs, vec![5, 30, 120, 600, 3600]);
        assert_eq!(c.login_device_limit_per_hour, 10);
        assert_eq!((c.ipv6_56_factor, c.ipv6_48_factor), (4, 16));
        assert_eq!(c.code_breaker_per_minute, 1000);
        assert_eq!((c.admin_bind, c.audit_retention_days), (None, None));
        let key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f1";
        let with_key = from(&[
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("PUBLIC_BASE_URL", "https://account.example.com/"),
            ("TOKEN_SECRETS", SECRET),
            ("ADMIN_API_BIND", "127.0.0.1:9465"),
            ("ADMIN_API_KEYS", key),
        ])
        .expect("valid");
        let printed = format!("{with_key:?}");
        assert!(printed.contains("[1 admin keys]") && !printed.contains(key));
    }

    #[test]
    fn every_problem_is_reported_with_the_variable_name_and_a_fix() {
        let err = from(&[
            ("PUBLIC_BASE_URL", "ftp://x"),
            ("TOKEN_SECRETS", "short"),
            ("TOKEN_DIGEST", "md5"),
            ("RATE_LIMIT_IP_PER_HOUR", "-1"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
            ("COOKIE_SECURE", "maybe"),
            ("PWNED_PASSWORDS_FAIL", "sometimes"),
            ("PWNED_PASSWORDS_URL", "api.pwnedpasswords.com/range/"),
            ("PWNED_PASSWORDS_DIR", "/srv/pwned"),
        ])
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "DATABASE_URL: not set",
            "PUBLIC_BASE_URL: expected an http(s) origin",
            "TOKEN_SECRETS: secret #1 is not written as hex or base64",
            "openssl rand -hex 32",
            "TOKEN_DIGEST: expected sha256 or sha1",
            "RATE_LIMIT_IP_PER_HOUR: expected a whole number",
            "TRUSTED_PROXIES: \"nonsense\"",
            "COOKIE_SECURE: expected true or false",
            "PWNED_PASSWORDS_FAIL: expected open or closed",
            "PWNED_PASSWORDS_URL: expected an http(s) URL",
            "PWNED_PASSWORDS_URL and PWNED_PASSWORDS_DIR: set one of them",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("secrets");
        std::fs::write(
            &file,
            format!("{SECRET},5/l0fkwZSDQEZ2XNsYZx7UhC2odIHj6v6YOBJnRDrTY=\n"),
        )
        .expect("write");
        let c = from(&[
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("PUBLIC_BASE_URL", "http://127.0.0.1:8080"),
            ("TOKEN_SECRETS_FILE", file.to_str().expect("utf-8 path")),
            ("TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1"),
        ])
        .expect("valid");
        assert_eq!(c.token_secrets.len(), 2);
        assert_eq!(c.trusted_proxies.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
