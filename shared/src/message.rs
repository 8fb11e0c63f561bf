//! The mail job: one versioned JSON envelope per email, published by the api and consumed by
//! the mail-worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::locale::Locale;

/// Envelope format version. A worker does not guess at the meaning of a version it does not
/// know: a newer one is left for a newer worker ([`DecodeError::Newer`]), an older one is
/// refused (dead-lettered).
pub const ENVELOPE_VERSION: u16 = 1;

/// Largest job accepted by the decoder; real jobs are a few hundred bytes.
pub const MAX_JOB_BYTES: usize = 64 * 1024;

/// A mail job as it travels through RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique job id; also the AMQP `message_id` and the seed of the email's `Message-ID`.
    pub id: Uuid,
    /// Envelope format version ([`ENVELOPE_VERSION`]).
    pub version: u16,
    /// Delivery attempts made so far (0 when first published).
    pub attempt: u32,
    /// When the api accepted the request.
    pub created_at: DateTime<Utc>,
    /// After this instant the email is useless (its link would be dead) and is not sent.
    pub not_after: DateTime<Utc>,
    /// The built-in language chosen from the request's `Accept-Language`; a BCP 47 tag on
    /// the queue (`en`, `zh-CN`, `pt-BR`).
    pub locale: Locale,
    /// Every language the request asked for, most wanted first (see
    /// [`crate::locale::preferences`]): a worker with templates an operator added for one of
    /// them writes in it; otherwise `locale`. Absent in jobs of older apis and of requests
    /// without `Accept-Language`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Correlation data so one request can be followed from HTTP to SMTP in the logs.
    pub trace: Trace,
    /// What to send; serialised as `"kind"` and `"payload"` beside the fields above.
    #[serde(flatten)]
    pub job: Job,
}

/// Correlation identifiers copied from the HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The api's `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// W3C `traceparent`, when the caller sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The job kinds, each with its own payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Job {
    /// Someone asked for a reset link for `email`. The api did not look the address up; the
    /// worker does, so the HTTP answer is the same whether or not an account exists.
    PasswordResetRequested {
        /// The normalised address as typed.
        email: String,
        /// Client IP as the api saw it (after trusted-proxy handling), for the audit row.
        ip: Option<String>,
        /// False when the per-address budget was already spent: the worker records and drops.
        within_budget: bool,
        /// The account the email is for, when its sender knew it (a lock's reset email, or
        /// support staff's): the worker sends it to that account only, and a job whose account
        /// is gone (erased) leaves no trace of its address. Absent for a forgot-password
        /// request (its address is not looked up) and in jobs of older apis.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
    },
    /// A new account needs its address confirmed.
    EmailVerification {
        /// The new user.
        user_id: Uuid,
        /// Where to send the link.
        email: String,
        /// Client IP of the sign-up (absent in jobs of older api versions): whose share of
        /// the send line the email takes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// Someone tried to sign up with an address that already has an account; tell the owner
    /// instead of telling the requester.
    AccountExistsNotice {
        /// The registered address, as the requester spelled it (the notice goes to the
        /// account's own spelling).
        email: String,
        /// Client IP of the sign-up attempt (absent in jobs of older api versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// The password was changed through a reset link.
    PasswordChanged {
        /// The user whose password changed.
        user_id: Uuid,
        /// Where to send the notice.
        email: String,
        /// Client IP of the reset request.
        ip: Option<String>,
        /// The password version after the change; the worker drops the notice if the user's
        /// version differs (the change was rolled back after the publish).
        password_version: i32,
    },
    /// Something happened to the account's security that its owner must hear of: a sign-in
    /// from a new browser, a recovery code spent, a second factor added or removed, recovery
    /// codes replaced. The worker sends it to the account's address on file, with a "this
    /// wasn't me" link while the account's password version is still the event's (a later
    /// change has its own notice and link: a late notice must neither lock the newer password
    /// nor kill that notice's link); a notice for an account that is gone is dropped. The
    /// event's time is the envelope's `created_at`.
    SecurityNotice {
        /// The account the notice is about.
        user_id: Uuid,
        /// The account's address when the event happened (the notice goes to the address on
        /// file when it is sent).
        email: String,
        /// Client IP of the request that caused the event.
        ip: Option<String>,
        /// The account's password version when it happened.
        password_version: i32,
        /// What happened.
        event: SecurityEvent,
    },
}

/// What a [`Job::SecurityNotice`] tells its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SecurityEvent {
    /// A sign-in from a browser that had not signed in to the account before.
    NewSignIn {
        /// The browser and system named from the User-Agent (`Firefox on Linux`).
        device: String,
        /// The client's network (`203.0.113.0/24`, `2001:db8:1:2::/64`), not its address.
        ip_prefix: Option<String>,
    },
    /// A recovery code was spent (to sign in, or to reset the password).
    RecoveryCodeUsed {
        /// Unspent codes left.
        remaining: u32,
    },
    /// A second factor was added.
    FactorAdded { factor: Factor },
    /// A second factor was removed, by its owner or by support staff (after proving who
    /// the person asking was).
    FactorRemoved { factor: Factor, by_support: bool },
    /// A new set of recovery codes was made; the old set no longer works.
    RecoveryCodesReplaced,
}

/// A second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// An authenticator app's time-based codes (RFC 6238).
    Totp,
    /// A passkey (WebAuthn).
    Passkey,
}

impl Factor {
    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::Passkey => "passkey",
        }
    }
}

impl Job {
    /// The client IP that caused the job, when the job names one.
    pub fn requester_ip(&self) -> Option<&str> {
        match self {
            Job::PasswordResetRequested { ip, .. }
            | Job::EmailVerification { ip, .. }
            | Job::AccountExistsNotice { ip, .. }
            | Job::PasswordChanged { ip, .. }
            | Job::SecurityNotice { ip, .. } => ip.as_deref(),
        }
    }

    /// Every kind's name (see [`Job::kind`]).
    pub const KINDS: [&'static str; 5] = [
        "password_reset_requested",
        "email_verification",
        "account_exists_notice",
        "password_changed",
        "security_notice",
    ];

    /// The stable name of this kind (the `kind` field and the AMQP `type` property).
    pub fn kind(&self) -> &'static str {
        match self {
            Job::PasswordResetRequested { .. } => "password_reset_requested",
            Job::EmailVerification { .. } => "email_verification",
            Job::AccountExistsNotice { .. } => "account_exists_notice",
            Job::PasswordChanged { .. } => "password_changed",
            Job::SecurityNotice { .. } => "security_notice",
        }
    }
}

/// Why a message could not be turned into an [`Envelope`]. Such a message is dead-lettered,
/// never retried: a retry cannot make it decodable.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("job is {0} bytes, over the {MAX_JOB_BYTES} byte limit")]
    TooLarge(usize),
    #[error("job is not a valid envelope: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("envelope version {0} is not supported (this build knows {ENVELOPE_VERSION})")]
    UnsupportedVersion(u16),
    #[error("a job of a newer release: {0}")]
    Newer(Newer),
}

/// A job this build cannot read but a newer release can: a kind it does not know, or a newer
/// envelope version. What every version of the envelope keeps is read, so it can be left for
/// a worker that knows it until it is useless.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Newer {
    pub version: u16,
    pub kind: String,
    /// The envelope's promise every version keeps: after this instant the job is useless.
    pub not_after: DateTime<Utc>,
}

impl std::fmt::Display for Newer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kind {:?}, envelope version {}",
            self.kind(),
            self.version
        )
    }
}

impl Newer {
    /// The job's kind for logs: at most 64 characters of the set kinds are named with.
    pub fn kind(&self) -> String {
        self.kind
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .take(64)
            .collect()
    }

    /// `bytes` as a newer release's job, if that is what they are: an envelope whose version
    /// is newer than this build's, or of this version with a kind this build does not know.
    fn of(bytes: &[u8]) -> Option<Self> {
        let newer: Self = serde_json::from_slice(bytes).ok()?;
        let newer_version = newer.version > ENVELOPE_VERSION;
        let unknown_kind =
            newer.version == ENVELOPE_VERSION && !Job::KINDS.contains(&newer.kind.as_str());
        (newer_version || unknown_kind).then_some(newer)
    }
}

impl Envelope {
    /// A new job with a fresh id, created now and useless after `ttl`.
    pub fn new(
        job: Job,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
        locale: impl Into<Locale>,
        trace: Trace,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            version: ENVELOPE_VERSION,
            attempt: 0,
            created_at: now,
            not_after: now + ttl,
            locale: locale.into(),
            languages: Vec::new(),
            trace,
            job,
        }
    }

    /// The job with the languages its request asked for.
    #[must_use]
    pub fn asked_in(mut self, languages: &[String]) -> Self {
        self.languages = languages.to_vec();
        self
    }

    /// Serialises the envelope to its JSON wire form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a received job.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_JOB_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) if envelope.version == ENVELOPE_VERSION => Ok(envelope),
            Ok(envelope) => Err(Newer::of(bytes).map_or(
                DecodeError::UnsupportedVersion(envelope.version),
                DecodeError::Newer,
            )),
            Err(e) => Err(Newer::of(bytes).map_or(DecodeError::Invalid(e), DecodeError::Newer)),
        }
    }

    /// Whether the job is past its `not_after` at `now`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now > self.not_after
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests compare with the wall clock"
)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(
            Job::PasswordResetRequested {
                email: "ann@example.org".into(),
                ip: Some("203.0.113.9".into()),
                within_budget: true,
                user_id: None,
            },
            Utc::now(),
            chrono::Duration::hours(1),
            "en",
            Trace::default(),
        )
    }

    #[test]
    fn an_envelope_round_trips_through_json() {
        let e = sample();
        assert_eq!(Envelope::decode(&e.encode()).expect("decodes"), e);
    }

    #[test]
    fn the_wire_form_names_kind_and_payload_beside_the_envelope_fields() {
        let v: serde_json::Value = serde_json::from_slice(&sample().encode()).expect("json");
        assert_eq!(v["kind"], "password_reset_requested");
        assert_eq!(v["payload"]["email"], "ann@example.org");
        assert_eq!(v["payload"]["within_budget"], true);
        for field in [
            "id",
            "version",
            "attempt",
            "created_at",
            "not_after",
            "locale",
            "trace",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
    }

    #[test]
    fn garbage_and_older_versions_are_refused_newer_kinds_and_versions_told_apart() {
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(DecodeError::Invalid(_))
        ));
        let base = sample();
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_slice(&base.encode()).expect("json");
            change(&mut v);
            Envelope::decode(&serde_json::to_vec(&v).expect("json"))
        };
        match with(&|v| v["kind"] = "launch_missiles\n\u{1b}[31m".into()) {
            Err(DecodeError::Newer(newer)) => {
                assert_eq!(newer.version, ENVELOPE_VERSION);
                assert_eq!(newer.kind(), "launch_missiles31m", "safe to log");
                assert_eq!(newer.not_after, base.not_after);
            }
            other => panic!("{other:?}"),
        }
        match with(&|v| {
            v["version"] = 2.into();
            v["payload"] = serde_json::json!({"a": "shape this build has never seen"});
        }) {
            Err(DecodeError::Newer(newer)) => {
                assert_eq!(
                    (newer.version, newer.kind()),
                    (2, "password_reset_requested".into())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            with(&|v| v["version"] = 0.into()),
            Err(DecodeError::UnsupportedVersion(0))
        ));
        // A known kind with a broken payload is broken, not newer.
        assert!(matches!(
            with(&|v| v["payload"] = serde_json::json!({"email": 5})),
            Err(DecodeError::Invalid(_))
        ));
        // Without the fields every version keeps, it is no job at all.
        assert!(matches!(
            with(&|v| {
                v["kind"] = "launch_missiles".into();
                v.as_object_mut().expect("object").remove("not_after");
            }),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            Envelope::decode(&vec![b' '; MAX_JOB_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn a_job_past_not_after_is_stale() {
        let e = sample();
        assert!(!e.is_stale(e.created_at));
        assert!(e.is_stale(e.not_after + chrono::Duration::seconds(1)));
    }
}
