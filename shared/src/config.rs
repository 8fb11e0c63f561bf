//! Reading configuration from the environment, shared by both binaries.
//!
//! Every problem is collected and reported at once, each with the variable's name and how to
//! fix it, so a misconfigured deploy fails in its first second instead of at the first
//! request. `NAME_FILE` is honoured for every variable, so secrets can come from mounted files.

use std::path::Path;

use ipnet::IpNet;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::token::MIN_SECRET_LEN;

/// The value `.env.example` ships with; refused by name so a copied example never runs.
pub const PLACEHOLDER_SECRET: &str = "replace-me-with-the-output-of-openssl-rand-hex-32";

/// Label of the pseudonym key (see [`CommonConfig::pseudonym_secret`]).
pub const PSEUDONYM_KEY_LABEL: &str = "pwrecovery/pseudonym-key/v1";

/// Derives a purpose-bound key from a secret: HMAC-SHA256 keyed with the secret over a label
/// (HKDF-Expand with one block and no context is the same construction).
pub fn derive_key(secret: &[u8], label: &str) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Checks that a secret is at least [`MIN_SECRET_LEN`] random bytes written as hex or base64
/// (standard or URL-safe, padded or not), and not the placeholder. Returns what is wrong,
/// phrased to follow "secret #N".
///
/// A passphrase or a word with digits is refused even when it is long: what makes tokens
/// unforgeable is the key's entropy, and text typed by a person has far less per byte than it
/// has bytes. Decoded secrets of fewer than 16 distinct byte values are refused too (a long
/// run of one character is valid hex but no secret).
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(secret).map_err(|_| "is not text".to_owned())?;
    if text == PLACEHOLDER_SECRET {
        return Err("is the placeholder of .env.example; put a real secret there".into());
    }
    let decoded = decode_secret(text).ok_or_else(|| {
        format!(
            "is not written as hex or base64 ({} characters of text); a secret must be at least \
             {MIN_SECRET_LEN} random bytes",
            text.chars().count()
        )
    })?;
    if decoded.len() < MIN_SECRET_LEN {
        return Err(format!(
            "is {} bytes once decoded; each needs at least {MIN_SECRET_LEN} random bytes",
            decoded.len()
        ));
    }
    let mut seen = [false; 256];
    decoded.iter().for_each(|b| seen[usize::from(*b)] = true);
    if seen.iter().filter(|s| **s).count() < 16 {
        return Err("does not look random (too few distinct bytes once decoded)".into());
    }
    Ok(())
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(text).ok();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// What every service's `Config` (a struct with a `common: CommonConfig` field and a
/// `from_lookup` constructor) shares: the common settings reachable directly through `Deref`
/// (`config.database_url`), and `from_env`, which reads the process environment after `.env`.
#[macro_export]
macro_rules! service_config {
    ($config:ty) => {
        impl ::std::ops::Deref for $config {
            type Target = $crate::config::CommonConfig;

            fn deref(&self) -> &Self::Target {
                &self.common
            }
        }

        impl $config {
            /// Reads the process environment, after loading `.env` if there is one.
            pub fn from_env() -> ::std::result::Result<Self, $crate::config::ConfigError> {
                Self::from_lookup($crate::config::environment())
            }
        }
    };
}

/// Every configuration problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// A lookup over fixed pairs (tests and embedding programs).
pub fn pairs_lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

/// The process environment as a lookup, after loading `.env` if there is one (a missing
/// `.env` is normal in production, where the orchestrator sets the variables).
pub fn environment() -> impl Fn(&str) -> Option<String> {
    let _ = dotenvy::dotenv();
    |name: &str| std::env::var(name).ok()
}

/// Reads and validates variables, collecting every problem instead of stopping at the first.
pub struct EnvReader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl<'a> EnvReader<'a> {
    /// A reader over `lookup` (the environment in production, a map in tests).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            errors: Vec::new(),
        }
    }

    /// Records a problem found by the caller.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// `Ok` when no problem was recorded, else every problem, one per entry.
    pub fn finish(self) -> Result<(), Vec<String>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// `DATABASE_URL` (required).
    pub fn database_url(&mut self) -> String {
        self.required(
            "DATABASE_URL",
            "e.g. postgres://postgres@127.0.0.1:5432/pwrecovery",
        )
    }

    /// `AMQP_URL`: the nodes of one RabbitMQ cluster, comma-separated (default: the local
    /// broker).
    pub fn amqp_urls(&mut self) -> Vec<String> {
        let mut amqp_urls = self.list("AMQP_URL");
        if amqp_urls.is_empty() {
            amqp_urls.push("amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        }
        for url in &amqp_urls {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                let scheme: String = url.chars().take_while(|c| *c != ':').take(8).collect();
                self.error(format!(
                    "AMQP_URL: expected amqp:// or amqps:// URLs (comma-separated nodes of one \
                     cluster), got one starting with {scheme:?}"
                ));
            }
        }
        amqp_urls
    }

    /// `TLS_CA_FILE`: what every TLS client trusts besides the public roots.
    pub fn tls_trust(&mut self) -> crate::tls::Trust {
        match self.raw("TLS_CA_FILE").filter(|v| !v.trim().is_empty()) {
            None => crate::tls::Trust::default(),
            Some(path) => {
                crate::tls::Trust::from_pem_file(Path::new(path.trim())).unwrap_or_else(|e| {
                    self.error(format!(
                        "TLS_CA_FILE: {e} (a PEM file of the private CA certificates every TLS \
                         client trusts besides the public roots)"
                    ));
                    crate::tls::Trust::default()
                })
            }
        }
    }

    /// `MAIL_RETRY_SCHEDULE_SECS`: the delays of the retries, in seconds.
    pub fn retry_schedule(&mut self) -> Vec<u64> {
        let retry = self.string("MAIL_RETRY_SCHEDULE_SECS", "5,30,120,600,3600");
        crate::topology::parse_retry_schedule(&retry).unwrap_or_else(|e| {
            self.error(format!("MAIL_RETRY_SCHEDULE_SECS: {e}"));
            Vec::new()
        })
    }

    /// `BROKER_QUEUE_EXPIRES_MS`: unset or 0 for queues that never expire.
    pub fn broker_queue_expires_ms(&mut self) -> Option<i64> {
        let expires = self.number("BROKER_QUEUE_EXPIRES_MS", 0, 0, 30 * 86_400_000);
        i64::try_from(expires).ok().filter(|&ms| ms > 0)
    }

    /// The broker topology `BROKER_NAMESPACE`, `MAIL_RETRY_SCHEDULE_SECS` and
    /// `BROKER_QUEUE_EXPIRES_MS` describe.
    pub fn topology(&mut self) -> crate::topology::Topology {
        let namespace = self.string("BROKER_NAMESPACE", "");
        let schedule = self.retry_schedule();
        crate::topology::Topology::configured(&namespace, &schedule, self.broker_queue_expires_ms())
    }

    /// The value of `name`, or of the file named by `NAME_FILE`.
    pub fn raw(&mut self, name: &str) -> Option<String> {
        if let Some(v) = (self.lookup)(name) {
            return Some(v);
        }
        let file = (self.lookup)(&format!("{name}_FILE"))?;
        match std::fs::read_to_string(Path::new(&file)) {
            Ok(v) => Some(v.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => {
                self.errors
                    .push(format!("{name}_FILE: cannot read {file:?}: {e}"));
                None
            }
        }
    }

    /// `name` or its default.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_owned())
    }

    /// `name`, recording an error with `hint` when it is missing or empty.
    pub fn required(&mut self, name: &str, hint: &str) -> String {
        match self.raw(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => v,
            None => {
                self.errors
                    .push(format!("{name}: not set ({hint}; see .env.example)"));
                String::new()
            }
        }
    }

    /// See the module documentation.
    pub fn parsed<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: &str,
        expected: &str,
    ) -> Option<T> {
        let v = self.string(name, default);
        match v.trim().parse() {
            Ok(t) => Some(t),
            Err(_) => {
                self.errors
                    .push(format!("{name}: expected {expected}, got {v:?}"));
                None
            }
        }
    }

    /// A whole number within `min..=max`, or `default` when unset.
    /// `name` as a whole number in `min..=max`; unset or empty gives `default`.
    pub fn number(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some(v) = self.raw(name).filter(|v| !v.trim().is_empty()) else {
            return default;
        };
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.errors.push(format!(
                    "{name}: expected a whole number from {min} to {max}, got {v:?}"
                ));
                default
            }
        }
    }

    /// A comma-separated list (blank entries dropped; empty when unset).
    pub fn list(&mut self, name: &str) -> Vec<String> {
        self.string(name, "")
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), or `default` when unset.
    pub fn boolean(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => false,
            Some(v) => {
                self.errors
                    .push(format!("{name}: expected true or false, got {v:?}"));
                default
            }
        }
    }

    /// `PUBLIC_BASE_URL`: an http(s) origin without trailing slash.
    pub fn public_base_url(&mut self) -> String {
        let v = self.required(
            "PUBLIC_BASE_URL",
            "the origin users reach, e.g. https://account.example.com",
        );
        let trimmed = v.trim().trim_end_matches('/').to_owned();
        let valid = (trimmed.starts_with("https://") || trimmed.starts_with("http://"))
            && trimmed
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ', '@']));
        if !v.is_empty() && !valid {
            self.errors.push(format!(
                "PUBLIC_BASE_URL: expected an http(s) origin such as https://account.example.com \
                 (no query, fragment or credentials), got {v:?}"
            ));
        }
        trimmed
    }

    /// `TOKEN_SECRETS`: comma-separated secrets, each at least [`MIN_SECRET_LEN`] random bytes
    /// written as hex or base64 (see [`check_secret`]).
    pub fn token_secrets(&mut self) -> Vec<Vec<u8>> {
        let v = self.required(
            "TOKEN_SECRETS",
            "comma-separated secrets of at least 32 random bytes; generate one with `openssl rand -hex 32`",
        );
        let secrets: Vec<Vec<u8>> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if !v.is_empty() && secrets.is_empty() {
            self.errors.push("TOKEN_SECRETS: no secret given".into());
        }
        for (i, s) in secrets.iter().enumerate() {
            if let Err(problem) = check_secret(s) {
                self.errors.push(format!(
                    "TOKEN_SECRETS: secret #{} {problem} (generate one with `openssl rand -hex 32`)",
                    i + 1,
                ));
            }
        }
        secrets
    }

    /// `TRUSTED_PROXIES`: IPs or CIDR ranges.
    pub fn trusted_proxies(&mut self) -> Vec<IpNet> {
        let v = self.string("TRUSTED_PROXIES", "");
        let mut nets = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net),
                Err(_) => self.errors.push(format!(
                    "TRUSTED_PROXIES: {item:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)"
                )),
            }
        }
        nets
    }
}

/// A URL as logs and `Debug` may show it: scheme, host, port and path, never the user, the
/// password or the query (which can carry `password=` or `sslpassword=`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".to_owned();
    };
    // Credentials end at the last `@`, whatever they contain (a `?`, `#` or `/` in a
    // password included); then the query and fragment go.
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((_, after)) => ("***@", after),
        None => ("", rest),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{credentials}{rest}")
}

/// A URL that may carry credentials; `Debug` shows it redacted (see [`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl SecretUrl {
    /// The URL itself, for connecting (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `urls` redacted (see [`redact_url`]).
pub fn redact_urls(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redact_url(u)).collect()
}

/// Settings both services read, with the same names, defaults and checks: one definition, so
/// the api and the worker cannot disagree about a secret, a lifetime or a namespace.
///
/// Its `Debug` shows no secret and no credential: URLs are redacted and secrets counted.
#[derive(Clone)]
pub struct CommonConfig {
    pub database_url: String,
    /// Connections of this process's PostgreSQL pool (`DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`REDIS_CLUSTER_URLS`); when set, `redis_url` is unused.
    pub redis_cluster_urls: Vec<String>,
    /// Sentinels (`REDIS_SENTINEL_URLS`) and the name of the primary they watch
    /// (`REDIS_SENTINEL_MASTER`); when set, `redis_url` is unused.
    pub redis_sentinel: Option<(Vec<String>, String)>,
    /// The RabbitMQ nodes of `AMQP_URL` (comma-separated: the nodes of one cluster).
    pub amqp_urls: Vec<String>,
    /// What every TLS client trusts: the webpki roots plus the CAs of `TLS_CA_FILE`.
    pub tls: crate::tls::Trust,
    /// Origin links are built from (never from the request's `Host`), without trailing slash.
    pub public_base_url: String,
    pub token_secrets: Vec<Vec<u8>>,
    /// Key of the address and IP pseudonyms, derived from the first secret under its own
    /// label (see [`derive_key`]): the signing secret itself never keys a pseudonym.
    pseudonym_key: Vec<u8>,
    pub token_digest: crate::token::Digest,
    pub reset_token_max_age: std::time::Duration,
    pub verify_token_max_age: std::time::Duration,
    pub retry_schedule_secs: Vec<u64>,
    pub shutdown_timeout: std::time::Duration,
    /// Namespace for Redis keys (empty in production; lets tests share one Redis).
    pub redis_key_prefix: String,
    /// Namespace for broker object names (empty in production; prefer a vhost per environment).
    pub broker_namespace: String,
    /// When set, broker queues vanish after this long unused (ephemeral environments).
    pub broker_queue_expires_ms: Option<i64>,
    /// Name of the product on pages and in emails.
    pub product_name: String,
    /// How often freed heap pages go back to the system (`MEMORY_TRIM_SECS`; zero: never).
    pub memory_trim: std::time::Duration,
}

impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sentinel = self
            .redis_sentinel
            .as_ref()
            .map(|(urls, master)| (redact_urls(urls), master));
        f.debug_struct("CommonConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_cluster_urls", &redact_urls(&self.redis_cluster_urls))
            .field("redis_sentinel", &sentinel)
            .field("amqp_urls", &redact_urls(&self.amqp_urls))
            .field("tls", &self.tls)
            .field("public_base_url", &self.public_base_url)
            .field(
                "token_secrets",
                &format_args!("[{} redacted]", self.token_secrets.len()),
            )
            .field("token_digest", &self.token_digest)
            .field("reset_token_max_age", &self.reset_token_max_age)
            .field("verify_token_max_age", &self.verify_token_max_age)
            .field("retry_schedule_secs", &self.retry_schedule_secs)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("broker_namespace", &self.broker_namespace)
            .field("broker_queue_expires_ms", &self.broker_queue_expires_ms)
            .field("product_name", &self.product_name)
            .field("memory_trim", &self.memory_trim)
            .finish_non_exhaustive()
    }
}

impl CommonConfig {
    /// Reads the shared variables, recording problems in `r`.
    pub fn read(r: &mut EnvReader<'_>) -> Self {
        use std::time::Duration;
        let database_url = r.database_url();
        // 2 per process: 20 api + 20 worker replicas hold 80 connections, under PostgreSQL's
        // default max_connections of 100 with room for migrations and an operator's session.
        // Every query here is short (no connection is held across a hash or a publish).
        let database_max_connections = r.number("DATABASE_MAX_CONNECTIONS", 2, 1, 1000) as u32;
        let redis_url = r.string("REDIS_URL", "redis://127.0.0.1:6379");
        let redis_cluster_urls = r.list("REDIS_CLUSTER_URLS");
        let sentinels = r.list("REDIS_SENTINEL_URLS");
        let sentinel_master = r.string("REDIS_SENTINEL_MASTER", "");
        let redis_sentinel = match (sentinels.is_empty(), sentinel_master.trim().is_empty()) {
            (true, true) => None,
            (false, false) => Some((sentinels.clone(), sentinel_master.trim().to_owned())),
            _ => {
                r.error(
                    "REDIS_SENTINEL_URLS and REDIS_SENTINEL_MASTER go together (the sentinels, \
                     and the name of the primary they watch, e.g. mymaster)",
                );
                None
            }
        };
        if redis_sentinel.is_some() && !redis_cluster_urls.is_empty() {
            r.error("REDIS_CLUSTER_URLS and REDIS_SENTINEL_URLS exclude each other: set one");
        }
        for url in redis_cluster_urls.iter().chain(&sentinels) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                r.error(format!(
                    "REDIS_CLUSTER_URLS / REDIS_SENTINEL_URLS: {url:?} is not a redis:// or \
                     rediss:// URL (comma-separated nodes, e.g. redis://10.0.0.1:6379,redis://10.0.0.2:6379)"
                ));
            }
        }
        let amqp_urls = r.amqp_urls();
        let tls = r.tls_trust();
        let public_base_url = r.public_base_url();
        let token_secrets = r.token_secrets();
        let token_digest = r
            .parsed("TOKEN_DIGEST", "sha256", "sha256 or sha1")
            .unwrap_or_default();
        let reset_max = r.number("RESET_TOKEN_MAX_AGE_SECS", 3600, 60, 7 * 86_400);
        let verify_max = r.number("VERIFY_TOKEN_MAX_AGE_SECS", 3600, 60, 30 * 86_400);
        let retry_schedule_secs = r.retry_schedule();
        let shutdown = r.number("SHUTDOWN_TIMEOUT_SECS", 10, 1, 600);
        let redis_key_prefix = r.string("REDIS_KEY_PREFIX", "");
        let broker_namespace = r.string("BROKER_NAMESPACE", "");
        let product_name = r.string("PRODUCT_NAME", "Example Accounts");
        let memory_trim = r.number("MEMORY_TRIM_SECS", 10, 0, 3600);
        if product_name.trim().is_empty() || product_name.chars().any(char::is_control) {
            r.error(
                "PRODUCT_NAME: must be non-empty text without line breaks or control characters",
            );
        }
        Self {
            database_url,
            database_max_connections,
            redis_url,
            redis_cluster_urls,
            redis_sentinel,
            amqp_urls,
            tls,
            public_base_url,
            pseudonym_key: token_secrets
                .first()
                .map(|s| derive_key(s, PSEUDONYM_KEY_LABEL))
                .unwrap_or_default(),
            token_secrets,
            token_digest,
            reset_token_max_age: Duration::from_secs(reset_max),
            verify_token_max_age: Duration::from_secs(verify_max),
            retry_schedule_secs,
            shutdown_timeout: Duration::from_secs(shutdown),
            redis_key_prefix,
            broker_namespace,
            broker_queue_expires_ms: r.broker_queue_expires_ms(),
            product_name,
            memory_trim: Duration::from_secs(memory_trim),
        }
    }

    /// The key of the pseudonyms of addresses and IPs (Redis keys, audit rows, logs). Derived
    /// from the first secret, never the secret itself: the signing secret serves tokens only
    /// (through itsdangerous's own salted derivation), so a pseudonym never doubles as a MAC
    /// over token material, and both keep their meaning when the other one's use changes.
    pub fn pseudonym_secret(&self) -> &[u8] {
        &self.pseudonym_key
    }

    /// Where Redis is: Sentinel's primary, the cluster's seed nodes, or the one node of
    /// `REDIS_URL`.
    pub fn redis_target(&self) -> crate::redis_pool::RedisTarget {
        use crate::redis_pool::RedisTarget;
        if let Some((sentinels, master)) = &self.redis_sentinel {
            RedisTarget::Sentinel {
                sentinels: sentinels.clone(),
                master: master.clone(),
            }
        } else if self.redis_cluster_urls.is_empty() {
            RedisTarget::Node(self.redis_url.clone())
        } else {
            RedisTarget::Cluster(self.redis_cluster_urls.clone())
        }
    }

    /// The RabbitMQ broker of `AMQP_URL`.
    pub fn broker(&self) -> crate::amqp::Broker {
        crate::amqp::Broker::new(self.amqp_urls.clone(), self.tls.clone())
    }

    /// The PostgreSQL pool of this process, connecting on first use (a database that is down
    /// at start is no reason not to start), with the statement rules `DATABASE_URL` asks for
    /// (see [`crate::db::configure`]).
    pub fn database(&self) -> anyhow::Result<sqlx::PgPool> {
        crate::db::configure(&self.database_url);
        crate::telemetry::lazy_db(&self.database_url, self.database_max_connections, &self.tls)
    }

    /// The Redis pool of this process (single node, Cluster or Sentinel), its keys under
    /// `REDIS_KEY_PREFIX`.
    pub fn redis(&self) -> anyhow::Result<crate::redis_pool::RedisPool> {
        use anyhow::Context as _;
        crate::redis_pool::RedisPool::connect_to(
            &self.redis_target(),
            crate::keys::Keys::new(self.redis_key_prefix.clone()),
            &self.tls,
        )
        .context("REDIS_URL, REDIS_CLUSTER_URLS or REDIS_SENTINEL_URLS is not a valid Redis URL")
    }

    /// The broker topology these settings describe.
    pub fn topology(&self) -> crate::topology::Topology {
        crate::topology::Topology::configured(
            &self.broker_namespace,
            &self.retry_schedule_secs,
            self.broker_queue_expires_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_configuration_shows_no_secret_and_no_credential() {
        let secret = "e43de5f2b9f2474f240ac337136fac09635126cdd45ca0c7e39a19b70ab1edb1";
        let lookup = pairs_lookup(&[
            (
                "DATABASE_URL",
                "postgres://app:pg-pass@db.internal:5432/accounts?sslpassword=kp",
            ),
            ("REDIS_URL", "rediss://:redis-pass@cache.internal:6380"),
            (
                "AMQP_URL",
                "amqps://mq:amqp-pass@mq1.internal,amqps://mq:amqp-pass@mq2.internal",
            ),
            ("PUBLIC_BASE_URL", "https://account.example.com"),
            ("TOKEN_SECRETS", secret),
        ]);
        let mut r = EnvReader::new(&lookup);
        let c = CommonConfig::read(&mut r);
        r.finish().expect("valid");
        let shown = format!("{c:?}");
        for hidden in [
            "pg-pass",
            "redis-pass",
            "amqp-pass",
            "sslpassword",
            "kp",
            &secret[..16],
        ] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(
            shown.contains("postgres://***@db.internal:5432/accounts"),
            "{shown}"
        );
        assert!(shown.contains("mq2.internal"), "{shown}");
        assert_eq!(redact_url("not a url with pass"), "<redacted>");
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert_eq!(
            redact_url("postgres://u:p?x/y#z@db:5432/a?b=c"),
            "postgres://***@db:5432/a"
        );
    }

    #[test]
    fn heap_trimming_runs_every_ten_seconds_unless_set_and_zero_turns_it_off() {
        let read = |trim: Option<&str>| {
            let mut pairs = vec![
                ("DATABASE_URL", "postgres://db.internal/accounts"),
                ("PUBLIC_BASE_URL", "https://account.example.com"),
                (
                    "TOKEN_SECRETS",
                    "e43de5f2b9f2474f240ac337136fac09635126cdd45ca0c7e39a19b70ab1edb1",
                ),
            ];
            pairs.extend(trim.map(|v| ("MEMORY_TRIM_SECS", v)));
            let lookup = pairs_lookup(&pairs);
            let mut r = EnvReader::new(&lookup);
            let c = CommonConfig::read(&mut r);
            r.finish().map(|()| c.memory_trim)
        };
        let secs = std::time::Duration::from_secs;
        assert_eq!(read(None), Ok(secs(10)));
        assert_eq!(read(Some("0")), Ok(secs(0)));
        assert_eq!(read(Some("60")), Ok(secs(60)));
        for bad in ["-1", "often", "3601"] {
            let errors = read(Some(bad)).expect_err(bad).join("; ");
            assert!(errors.contains("MEMORY_TRIM_SECS"), "{bad}: {errors}");
        }
    }

    #[test]
    fn random_hex_and_base64_secrets_are_accepted() {
        let bytes: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let engine = base64::engine::general_purpose::STANDARD;
        for text in [
            hex::encode(&bytes),
            hex::encode(&bytes).to_uppercase(),
            engine.encode(&bytes),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
        ] {
            assert_eq!(check_secret(text.as_bytes()), Ok(()), "{text}");
        }
    }

    #[test]
    fn the_placeholder_passphrases_short_and_repetitive_secrets_are_refused() {
        let problem = |s: &str| check_secret(s.as_bytes()).expect_err(s);
        assert!(problem(PLACEHOLDER_SECRET).contains("placeholder"));
        assert!(
            problem("test-secret-0123456789-abcdefghijklmnopqrstuvwxyz").contains("hex or base64")
        );
        assert!(problem("correct horse battery staple and more words").contains("hex or base64"));
        // 16 random bytes: valid hex, too short.
        assert!(problem("0123456789abcdef0123456789abcdef").contains("16 bytes"));
        assert!(problem(&"00".repeat(32)).contains("random"));
    }

    #[test]
    fn the_pseudonym_key_is_derived_and_never_the_signing_secret() {
        let secret = hex::encode([7u8, 1, 2, 3].repeat(8));
        let secret = format!("{secret}a1b2c3d4e5f60718293a4b5c6d7e8f90");
        let config = |value: &str| {
            let lookup = pairs_lookup(&[
                ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("PUBLIC_BASE_URL", "https://account.example.com"),
                ("TOKEN_SECRETS", value),
            ]);
            let mut r = EnvReader::new(&lookup);
            let c = CommonConfig::read(&mut r);
            r.finish().expect("valid");
            c
        };
        let c = config(&secret);
        assert_ne!(c.pseudonym_secret(), secret.as_bytes());
        assert_eq!(
            c.pseudonym_secret(),
            derive_key(secret.as_bytes(), PSEUDONYM_KEY_LABEL)
        );
        assert_eq!(c.pseudonym_secret().len(), 32);
        // The pseudonym of an address under the derived key differs from one under the raw
        // secret, so the key really is a different one.
        assert_ne!(
            crate::keys::pseudonym(c.pseudonym_secret(), "email", "a@b.co"),
            crate::keys::pseudonym(secret.as_bytes(), "email", "a@b.co")
        );
    }
}
