//! The worker's configuration, read from the environment (and `.env`) and validated at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use shared::config::ConfigError;
use shared::config::{CommonConfig, EnvReader};

/// Where emails go. Its `Debug` redacts the SMTP URL's credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// SMTP per `SMTP_URL` (plain, STARTTLS or implicit TLS; credentials in the URL).
    Smtp { url: String },
    /// `.eml` files in a directory (local runs without a mail server).
    File { dir: PathBuf },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp { url } => f
                .debug_struct("Smtp")
                .field("url", &shared::config::redact_url(url))
                .finish(),
            Transport::File { dir } => f.debug_struct("File").field("dir", dir).finish(),
        }
    }
}

/// Validated settings of one worker process. The settings shared with the api are in
/// [`CommonConfig`], reachable directly through `Deref` (`config.database_url`).
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub http_bind: SocketAddr,
    pub transport: Transport,
    /// `From` header, e.g. `Account Security <no-reply@example.com>`.
    pub mail_from: String,
    /// SMTP sends in flight per process.
    pub concurrency: usize,
    /// Unacknowledged jobs per process (AMQP prefetch), also the most jobs decided together:
    /// jobs that send no email (unknown addresses, spent budgets) are looked up, audited and
    /// acknowledged as a batch, while at most `concurrency` of the others send.
    pub prefetch: u16,
    pub notify_unknown_recipients: bool,
    /// Per-command SMTP timeout.
    pub smtp_timeout: Duration,
    /// Dead letters older than this many days are deleted (they hold addresses and IPs).
    pub dead_letter_retention_days: u64,
    /// Emails one recipient may get per window, all kinds together (see
    /// [`crate::recipient_budget`]).
    pub mail_per_recipient: u32,
    /// The window of that budget: an hour, shorter only in tests.
    pub mail_per_recipient_window: Duration,
    /// Emails per second to the SMTP provider, all domains together, shared by every replica
    /// (see [`crate::send_budget`]); 0: no limit.
    pub smtp_max_per_second: u32,
    /// Emails per minute to one recipient domain, shared by every replica; 0: no limit.
    pub smtp_domain_max_per_minute: u32,
    /// How long a domain pauses after the provider answered its mail with `421` or a
    /// `4.7.x` status (doubling while it keeps happening); zero: no pause.
    pub smtp_throttle_pause: Duration,
    /// One requester's share of a send budget's bulk line, in percent (see
    /// [`crate::send_budget`]); 100: no cap.
    pub smtp_requester_share_percent: u32,
    /// The window of `SMTP_DOMAIN_MAX_PER_MINUTE`: a minute, shorter only in tests.
    pub smtp_domain_window: Duration,
    /// The longest random wait before a batch of jobs is worked on (`WORKER_TAKE_JITTER_MS`):
    /// where api and worker share a machine, the worker's work then starts at a moment
    /// unrelated to the request that caused it (see [`crate::consumer`]).
    pub take_jitter: Duration,
    /// `MAIL_TEMPLATE_DIR`: templates that replace built-in ones by name, and folders of new
    /// languages (see [`crate::templates`]); `None`: the built-in templates only.
    pub template_dir: Option<PathBuf>,
}

shared::service_config!(Config);

/// What the operator commands (`mail-worker dlq list|replay`, `suppression list|remove`)
/// read: the database, and for a replay the broker (`AMQP_URL`, `BROKER_NAMESPACE`,
/// `MAIL_RETRY_SCHEDULE_SECS`, `BROKER_QUEUE_EXPIRES_MS`), plus `TLS_CA_FILE`. No secret and
/// no SMTP setting: an operator runs them with only `DATABASE_URL` set (and the broker's
/// variables for a replay).
#[derive(Clone)]
pub struct OperatorConfig {
    pub database_url: String,
    pub tls: shared::tls::Trust,
    pub amqp_urls: Vec<String>,
    pub topology: shared::topology::Topology,
}

impl std::fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorConfig")
            .field(
                "database_url",
                &shared::config::redact_url(&self.database_url),
            )
            .field("tls", &self.tls)
            .field("amqp_urls", &shared::config::redact_urls(&self.amqp_urls))
            .field("topology", &self.topology)
            .finish()
    }
}

impl OperatorConfig {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(shared::config::environment())
    }

    /// Reads settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(&lookup);
        let config = Self {
            database_url: r.database_url(),
            tls: r.tls_trust(),
            amqp_urls: r.amqp_urls(),
            topology: r.topology(),
        };
        r.finish().map_err(ConfigError)?;
        Ok(config)
    }

    /// The broker nodes of `AMQP_URL`.
    pub fn broker(&self) -> shared::amqp::Broker {
        shared::amqp::Broker::new(self.amqp_urls.clone(), self.tls.clone())
    }
}

impl Config {
    /// Reads settings through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(&lookup);
        let mut common = CommonConfig::read(&mut r);
        let http_bind = r.parsed(
            "WORKER_HTTP_BIND",
            "127.0.0.1:8081",
            "a socket address such as 0.0.0.0:8081",
        );
        let transport = transport(&mut r);
        let mail_from = mail_from(&mut r);
        let (concurrency, prefetch) = slots(&mut r);
        let notify_unknown_recipients = r.boolean("NOTIFY_UNKNOWN_RECIPIENTS", false);
        let smtp_timeout = r.number("SMTP_TIMEOUT_SECS", 30, 1, 600);
        common.shutdown_timeout = drain(&mut r, common.shutdown_timeout, smtp_timeout);
        // No "off" value: a recipient budget is what keeps the service from being used to
        // flood a mailbox; an operator who needs more raises it.
        let mail_per_recipient = r.number("MAIL_PER_RECIPIENT_PER_HOUR", 10, 1, 100_000) as u32;
        let mail_per_recipient_window =
            r.number("MAIL_PER_RECIPIENT_WINDOW_SECS", 3600, 1, 7 * 86_400);
        let dead_letter_retention_days = r.number("DEAD_LETTER_RETENTION_DAYS", 30, 1, 3650);
        // Send budgets: off (0) unless the provider's contract or a domain's tolerance is
        // known; the worker cannot guess them.
        let smtp_max_per_second = r.number("SMTP_MAX_PER_SECOND", 0, 0, 100_000) as u32;
        let smtp_domain_max_per_minute =
            r.number("SMTP_DOMAIN_MAX_PER_MINUTE", 0, 0, 1_000_000) as u32;
        let smtp_throttle_pause = r.number("SMTP_THROTTLE_PAUSE_SECS", 60, 0, 3600);
        let smtp_requester_share_percent = r.number(
            "SMTP_REQUESTER_SHARE_PERCENT",
            crate::send_budget::DEFAULT_REQUESTER_SHARE_PERCENT.into(),
            1,
            100,
        ) as u32;
        let smtp_domain_window = r.number("SMTP_DOMAIN_WINDOW_SECS", 60, 1, 3600);
        let take_jitter = r.number("WORKER_TAKE_JITTER_MS", 25, 0, 10_000);
        // Read and tried at start (crate::templates::load), where a problem names its file.
        let template_dir = (r.raw("MAIL_TEMPLATE_DIR"))
            .filter(|dir| !dir.trim().is_empty())
            .map(PathBuf::from);
        r.finish().map_err(ConfigError)?;
        Ok(Self {
            common,
            http_bind: http_bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
            transport,
            mail_from,
            concurrency,
            prefetch,
            notify_unknown_recipients,
            smtp_timeout: Duration::from_secs(smtp_timeout),
            dead_letter_retention_days,
            mail_per_recipient,
            mail_per_recipient_window: Duration::from_secs(mail_per_recipient_window),
            smtp_max_per_second,
            smtp_domain_max_per_minute,
            smtp_throttle_pause: Duration::from_secs(smtp_throttle_pause),
            smtp_requester_share_percent,
            smtp_domain_window: Duration::from_secs(smtp_domain_window),
            take_jitter: Duration::from_millis(take_jitter),
            template_dir,
        })
    }
}

/// `MAIL_TRANSPORT` and where it sends: `SMTP_URL` or `MAIL_FILE_DIR`.
fn transport(r: &mut EnvReader<'_>) -> Transport {
    match r
        .string("MAIL_TRANSPORT", "smtp")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "smtp" => {
            let url = r.string("SMTP_URL", "smtp://127.0.0.1:1025");
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                r.error(format!(
                    "SMTP_URL: expected smtp://host:port, smtp://host:587?tls=required or \
                     smtps://user:pass@host:465, got a value starting with {:?}",
                    url.chars().take(8).collect::<String>()
                ));
            }
            Transport::Smtp { url }
        }
        "file" => Transport::File {
            dir: PathBuf::from(r.string("MAIL_FILE_DIR", "./mail-out")),
        },
        other => {
            r.error(format!(
                "MAIL_TRANSPORT: expected smtp or file, got {other:?}"
            ));
            Transport::File {
                dir: PathBuf::new(),
            }
        }
    }
}

/// `MAIL_FROM`, checked to be a mailbox.
fn mail_from(r: &mut EnvReader<'_>) -> String {
    let mail_from = r.string("MAIL_FROM", "Account Security <no-reply@example.com>");
    if mail_from.parse::<lettre::message::Mailbox>().is_err() {
        r.error(format!(
            "MAIL_FROM: expected a mailbox such as \"Account Security <no-reply@example.com>\", got {mail_from:?}"
        ));
    }
    mail_from
}

/// `WORKER_CONCURRENCY` and `WORKER_PREFETCH` (at least the concurrency).
fn slots(r: &mut EnvReader<'_>) -> (usize, u16) {
    let concurrency = r.number("WORKER_CONCURRENCY", 16, 1, 1024) as usize;
    let prefetch = r.number(
        "WORKER_PREFETCH",
        (concurrency as u64 * 4).max(64),
        1,
        u64::from(u16::MAX),
    ) as u16;
    if usize::from(prefetch) < concurrency {
        r.error(format!(
            "WORKER_PREFETCH ({prefetch}) must be at least WORKER_CONCURRENCY ({concurrency}): \
             a worker cannot send more jobs at once than it holds"
        ));
    }
    (concurrency, prefetch)
}

/// `SHUTDOWN_TIMEOUT_SECS` checked against `SMTP_TIMEOUT_SECS`, or derived from it when unset.
fn drain(r: &mut EnvReader<'_>, shutdown_timeout: Duration, smtp_timeout: u64) -> Duration {
    // The drain after SIGTERM must outlast one SMTP step of a send in flight, or the send
    // is cut off and repeated by another worker. Unset: one step plus ten seconds.
    let drain_set = r
        .raw("SHUTDOWN_TIMEOUT_SECS")
        .is_some_and(|v| !v.trim().is_empty());
    if !drain_set {
        return Duration::from_secs(smtp_timeout + 10);
    }
    if shutdown_timeout.as_secs() <= smtp_timeout {
        r.error(format!(
            "SHUTDOWN_TIMEOUT_SECS ({}) must be longer than SMTP_TIMEOUT_SECS ({smtp_timeout}): \
             a send in flight at SIGTERM may need one more SMTP step to finish (leave it \
             unset for SMTP_TIMEOUT_SECS + 10)",
            shutdown_timeout.as_secs()
        ));
    }
    shutdown_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(shared::config::pairs_lookup(pairs))
    }

    const BASE: [(&str, &str); 3] = [
        ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
        ("PUBLIC_BASE_URL", "https://account.example.com"),
        (
            "TOKEN_SECRETS",
            "a3a106852adf349f20bae220b71274866bcb55b00e1d993542179e43f0d7fd2e",
        ),
    ];

    #[test]
    fn defaults_deliver_over_smtp_with_the_documented_schedule() {
        let c = from(&BASE).expect("valid");
        assert_eq!(
            c.transport,
            Transport::Smtp {
                url: "smtp://127.0.0.1:1025".into()
            }
        );
        assert_eq!(c.retry_schedule_secs, vec![5, 30, 120, 600, 3600]);
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.prefetch, 64);
        assert!(!c.notify_unknown_recipients);
    }

    #[test]
    fn the_prefetch_follows_the_concurrency_and_never_goes_below_it() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = BASE.to_vec();
            all.extend_from_slice(pairs);
            from(&all)
        };
        let c = with(&[("WORKER_CONCURRENCY", "100")]).expect("valid");
        assert_eq!(c.prefetch, 400);
        let c = with(&[("WORKER_PREFETCH", "16")]).expect("valid");
        assert_eq!((c.concurrency, c.prefetch), (16, 16));
        let Err(ConfigError(problems)) = with(&[("WORKER_PREFETCH", "8")]) else {
            panic!("a prefetch below the concurrency was accepted");
        };
        assert!(
            problems[0].starts_with("WORKER_PREFETCH (8) must be at least"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_transport_sender_and_schedule_are_each_explained() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("MAIL_TRANSPORT", "pigeon"),
            ("MAIL_FROM", "not a mailbox"),
            ("MAIL_RETRY_SCHEDULE_SECS", "soon"),
            ("WORKER_CONCURRENCY", "0"),
        ]);
        let text = from(&pairs).expect_err("invalid").to_string();
        for needle in [
            "MAIL_TRANSPORT: expected smtp or file",
            "MAIL_FROM: expected a mailbox",
            "MAIL_RETRY_SCHEDULE_SECS",
            "WORKER_CONCURRENCY",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn the_drain_outlasts_one_smtp_step() {
        assert_eq!(
            from(&BASE).expect("valid").shutdown_timeout,
            Duration::from_secs(40)
        );
        let with = |drain: &str, smtp: &str| {
            let mut pairs = BASE.to_vec();
            pairs.extend([
                ("SHUTDOWN_TIMEOUT_SECS", drain),
                ("SMTP_TIMEOUT_SECS", smtp),
            ]);
            from(&pairs)
        };
        assert_eq!(
            with("", "5").expect("valid").shutdown_timeout,
            Duration::from_secs(15)
        );
        assert_eq!(
            with("31", "30").expect("valid").shutdown_timeout,
            Duration::from_secs(31)
        );
        let Err(ConfigError(problems)) = with("30", "30") else {
            panic!("a drain as long as one SMTP step was accepted");
        };
        assert!(
            problems[0].starts_with("SHUTDOWN_TIMEOUT_SECS (30) must be longer"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_recipient_budget_defaults_to_ten_emails_an_hour() {
        let c = from(&BASE).expect("valid");
        assert_eq!(c.mail_per_recipient, 10);
        assert_eq!(c.mail_per_recipient_window, Duration::from_secs(3600));
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("MAIL_PER_RECIPIENT_PER_HOUR", "3"),
            ("MAIL_PER_RECIPIENT_WINDOW_SECS", "5"),
        ]);
        let c = from(&pairs).expect("valid");
        assert_eq!(c.mail_per_recipient, 3);
        assert_eq!(c.mail_per_recipient_window, Duration::from_secs(5));
    }

    #[test]
    fn a_recipient_budget_of_zero_or_nonsense_is_explained() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("MAIL_PER_RECIPIENT_PER_HOUR", "0"),
            ("MAIL_PER_RECIPIENT_WINDOW_SECS", "an hour"),
        ]);
        let text = from(&pairs).expect_err("invalid").to_string();
        for needle in [
            "MAIL_PER_RECIPIENT_PER_HOUR: expected a whole number from 1",
            "MAIL_PER_RECIPIENT_WINDOW_SECS: expected a whole number from 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn send_budgets_are_off_by_default_and_explained_when_wrong() {
        let c = from(&BASE).expect("valid");
        assert_eq!(
            (c.smtp_max_per_second, c.smtp_domain_max_per_minute),
            (0, 0)
        );
        assert_eq!(c.smtp_throttle_pause, Duration::from_secs(60));
        assert_eq!(c.smtp_requester_share_percent, 25);
        assert_eq!(c.smtp_domain_window, Duration::from_secs(60));
        assert_eq!(c.take_jitter, Duration::from_millis(25));
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("SMTP_MAX_PER_SECOND", "50"),
            ("SMTP_DOMAIN_MAX_PER_MINUTE", "600"),
            ("SMTP_THROTTLE_PAUSE_SECS", "0"),
        ]);
        let c = from(&pairs).expect("valid");
        assert_eq!(
            (c.smtp_max_per_second, c.smtp_domain_max_per_minute),
            (50, 600)
        );
        assert!(c.smtp_throttle_pause.is_zero());
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("SMTP_MAX_PER_SECOND", "-1"),
            ("SMTP_DOMAIN_MAX_PER_MINUTE", "lots"),
            ("SMTP_THROTTLE_PAUSE_SECS", "7200"),
            ("SMTP_REQUESTER_SHARE_PERCENT", "0"),
            ("WORKER_TAKE_JITTER_MS", "soon"),
        ]);
        let text = from(&pairs).expect_err("invalid").to_string();
        for needle in [
            "SMTP_MAX_PER_SECOND: expected a whole number from 0",
            "SMTP_DOMAIN_MAX_PER_MINUTE: expected a whole number from 0",
            "SMTP_THROTTLE_PAUSE_SECS: expected a whole number from 0",
            "SMTP_REQUESTER_SHARE_PERCENT: expected a whole number from 1",
            "WORKER_TAKE_JITTER_MS: expected a whole number from 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn the_template_directory_is_optional() {
        assert_eq!(from(&BASE).expect("valid").template_dir, None);
        let mut pairs = BASE.to_vec();
        pairs.push(("MAIL_TEMPLATE_DIR", " "));
        assert_eq!(from(&pairs).expect("valid").template_dir, None);
        pairs.push(("MAIL_TEMPLATE_DIR", "/etc/mail-templates"));
        assert_eq!(
            from(&pairs).expect("valid").template_dir,
            Some(PathBuf::from("/etc/mail-templates"))
        );
    }

    #[test]
    fn smtp_credentials_are_never_echoed_in_errors() {
        let mut pairs = BASE.to_vec();
        pairs.push(("SMTP_URL", "ftp://user:hunter2@example.com"));
        let text = from(&pairs).expect_err("invalid").to_string();
        assert!(text.contains("SMTP_URL"));
        assert!(!text.contains("hunter2"));
    }
}
