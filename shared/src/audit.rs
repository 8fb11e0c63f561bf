//! The `audit_events` table, written by the api (sign-ups, sign-ins, link uses, refusals by
//! a budget) and the worker (its decision about every mail job), and its vocabulary: every
//! `action` and `outcome` either service writes is a variant of [`Action`] or [`Outcome`].

use std::net::IpAddr;

use ipnet::IpNet;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::message::Job;

/// What an audit row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /v1/users` (api): [`Outcome::Created`] or [`Outcome::Exists`].
    SignUp,
    /// `POST /v1/sessions` (api).
    SignIn,
    /// `DELETE /v1/sessions/current` (api).
    SignOut,
    /// A verification link used (api).
    EmailVerify,
    /// A reset link used (api).
    PasswordReset,
    /// A reset code submitted (api): [`Outcome::CodeWrong`] for a wrong, dead or unknown
    /// code, [`Outcome::Success`] for a reset through a code.
    PasswordResetCode,
    /// A request refused by a budget; the outcome names the budget (api).
    RateLimited,
    /// An account locked: by its owner's "this wasn't me" link (api) or by support staff
    /// (`api accounts lock`, with the reason in `detail`).
    AccountLock,
    /// Every session of an account revoked by support staff (`api accounts revoke-sessions`,
    /// with the reason in `detail`).
    SessionsRevoke,
    /// An account brought in with its hash by `api users import` ([`Outcome::Created`]).
    Import,
    /// A password changed by its signed-in owner (`POST /v1/account/password`): the current
    /// password given, [`Outcome::Success`] or why not.
    PasswordChange,
    /// An account's lock lifted by support staff (admin API or `api accounts unlock`).
    AccountUnlock,
    /// An account erased (admin API or `api accounts erase`); the only row of the person
    /// that keeps the reason in `detail` once its other rows are scrubbed.
    AccountErase,
    /// An account looked up by support staff (admin API or the shell).
    AdminLookup,
    /// An account and its audit trail exported (a person's access request).
    AdminExport,
    /// A reset link issued by support staff: handed to the agent (`detail` says so) or sent
    /// by the ordinary email.
    AdminRecovery,
    /// The worker's decision about a forgot-password job.
    PasswordResetRequested,
    /// The worker's decision about a verification email.
    EmailVerification,
    /// The worker's decision about an account-exists notice.
    AccountExistsNotice,
    /// The worker's decision about a password-changed notice.
    PasswordChanged,
    /// The worker's decision about a security notice.
    SecurityNotice,
    /// A second factor enrolled or confirmed by its signed-in owner (`detail`: which).
    MfaEnrol,
    /// A second factor removed: by its owner (password and code), or by support staff
    /// (with the reason in `detail`).
    MfaRemove,
    /// The second step of a sign-in (`POST /v1/sessions/mfa`): a code, a recovery code or
    /// a passkey.
    MfaSignIn,
    /// A new set of recovery codes made by the signed-in owner.
    RecoveryCodesReplace,
    /// A session ended by its signed-in owner from the list of sessions.
    SessionEnd,
    /// Dead letters deleted for good by an operator (`mail-worker dlq discard`; `detail`
    /// says who, which and how many).
    DeadLetterDiscard,
}

impl Action {
    pub const ALL: [Action; 27] = [
        Action::SignUp,
        Action::SignIn,
        Action::SignOut,
        Action::EmailVerify,
        Action::PasswordReset,
        Action::PasswordResetCode,
        Action::RateLimited,
        Action::AccountLock,
        Action::SessionsRevoke,
        Action::Import,
        Action::PasswordChange,
        Action::AccountUnlock,
        Action::AccountErase,
        Action::AdminLookup,
        Action::AdminExport,
        Action::AdminRecovery,
        Action::PasswordResetRequested,
        Action::EmailVerification,
        Action::AccountExistsNotice,
        Action::PasswordChanged,
        Action::SecurityNotice,
        Action::MfaEnrol,
        Action::MfaRemove,
        Action::MfaSignIn,
        Action::RecoveryCodesReplace,
        Action::SessionEnd,
        Action::DeadLetterDiscard,
    ];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::SignUp => "sign_up",
            Action::SignIn => "sign_in",
            Action::SignOut => "sign_out",
            Action::EmailVerify => "email_verify",
            Action::PasswordReset => "password_reset",
            Action::PasswordResetCode => "password_reset_code",
            Action::RateLimited => "rate_limited",
            Action::AccountLock => "account_lock",
            Action::SessionsRevoke => "sessions_revoke",
            Action::Import => "import",
            Action::PasswordChange => "password_change",
            Action::AccountUnlock => "account_unlock",
            Action::AccountErase => "account_erase",
            Action::AdminLookup => "admin_lookup",
            Action::AdminExport => "admin_export",
            Action::AdminRecovery => "admin_recovery",
            Action::PasswordResetRequested => "password_reset_requested",
            Action::EmailVerification => "email_verification",
            Action::AccountExistsNotice => "account_exists_notice",
            Action::PasswordChanged => "password_changed",
            Action::SecurityNotice => "security_notice",
            Action::MfaEnrol => "mfa_enrol",
            Action::MfaRemove => "mfa_remove",
            Action::MfaSignIn => "mfa_sign_in",
            Action::RecoveryCodesReplace => "recovery_codes_replace",
            Action::SessionEnd => "session_end",
            Action::DeadLetterDiscard => "dead_letter_discard",
        }
    }

    /// The action of the worker's decision about `job` (named like the job's kind).
    pub const fn of_job(job: &Job) -> Self {
        match job {
            Job::PasswordResetRequested { .. } => Action::PasswordResetRequested,
            Job::EmailVerification { .. } => Action::EmailVerification,
            Job::AccountExistsNotice { .. } => Action::AccountExistsNotice,
            Job::PasswordChanged { .. } => Action::PasswordChanged,
            Job::SecurityNotice { .. } => Action::SecurityNotice,
        }
    }
}

/// How it ended. Also the label of the worker's final decisions in `jobs_total` (`outcome`;
/// the two that are not final, `retried` and `waiting`, are no audit outcome), the `reason`
/// of the api's `tokens_rejected_total` and the `kind` of its `rate_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done as asked (sign-in, sign-out, a link used).
    Success,
    /// Sign-up of a free address.
    Created,
    /// Sign-up of a taken address (the owner gets a notice).
    Exists,
    /// Sign-in with the right password of an unverified account.
    Unverified,
    /// Sign-in with a wrong password or an unknown address.
    InvalidCredentials,
    /// A new password over the length limit.
    PasswordTooLong,
    /// A new password the policy refuses.
    WeakPassword,
    /// A new password the breached-password corpus lists.
    BreachedPassword,
    /// A link used before (or that lost the race to be used).
    Used,
    /// A link past its age.
    Expired,
    /// A token over the size limits (also after decompression).
    Oversized,
    /// A token that does not parse.
    Malformed,
    /// A token cut short.
    Truncated,
    /// A token signed for the other purpose.
    WrongPurpose,
    /// A token signed with another digest than configured.
    WrongDigest,
    /// A token whose signature does not verify.
    BadSignature,
    /// A token signed in the future.
    FutureDated,
    /// A link a newer one replaced (its generation is not the newest).
    Superseded,
    /// A link issued before the password last changed.
    PasswordChanged,
    /// A link naming an account that no longer exists.
    UnknownUser,
    /// A verification link with a password that is not the account's.
    WrongPassword,
    /// A link endpoint, or the password check of a verification, over a budget.
    RateLimited,
    /// Not the client's doing (a dependency failed); never written to the table.
    Unavailable,
    /// Budget: forgot-password requests per IP.
    ForgotIp,
    /// Budget: forgot-password requests per address.
    ForgotEmail,
    /// Budget: sign-in attempts per (IP, address).
    LoginPair,
    /// Budget: sign-in attempts per IP.
    LoginIp,
    /// Budget: sign-in attempts per address.
    LoginEmail,
    /// Budget: sign-in attempts per recognised device and address.
    LoginDevice,
    /// Budget: sign-ups per IP.
    SignupIp,
    /// Budget: link uses per IP.
    TokenIp,
    /// The SMTP server accepted the email.
    Sent,
    /// Dead-lettered: a permanent failure or the retries spent.
    Dead,
    /// Past its `not_after`: its link would be dead or its news old.
    Stale,
    /// The email was delivered before (a redelivery); not written to the table.
    Duplicate,
    /// The address's forgot-password budget was spent when the api took the request.
    DroppedOverBudget,
    /// The address does not parse.
    DroppedInvalidAddress,
    /// No account (and no-account notices are off).
    DroppedUnknown,
    /// A verification email for an address verified since.
    DroppedAlreadyVerified,
    /// A password-changed notice whose change was undone.
    DroppedRolledBack,
    /// A link email whose link a newer email or a password change killed.
    DroppedSuperseded,
    /// The recipient's budget of emails (`MAIL_PER_RECIPIENT_PER_HOUR`) is spent.
    RecipientBudget,
    /// The address is on the suppression list (its mailbox did not exist).
    DroppedSuppressed,
    /// A reset code that matched no live code (wrong, dead, or no code for the address).
    CodeWrong,
    /// The per-IP budget of reset codes (`RATE_LIMIT_CODE_PER_HOUR`).
    CodeIp,
    /// A reset of an account with a second factor submitted without one.
    MfaRequired,
    /// A wrong, reused or spent second-factor code (or a passkey that did not verify).
    FactorWrong,
    /// A sign-in's second step with an unknown, expired or used `mfa_token`.
    MfaTokenInvalid,
}

impl Outcome {
    pub const ALL: [Outcome; 48] = [
        Outcome::Success,
        Outcome::Created,
        Outcome::Exists,
        Outcome::Unverified,
        Outcome::InvalidCredentials,
        Outcome::PasswordTooLong,
        Outcome::WeakPassword,
        Outcome::BreachedPassword,
        Outcome::Used,
        Outcome::Expired,
        Outcome::Oversized,
        Outcome::Malformed,
        Outcome::Truncated,
        Outcome::WrongPurpose,
        Outcome::WrongDigest,
        Outcome::BadSignature,
        Outcome::FutureDated,
        Outcome::Superseded,
        Outcome::PasswordChanged,
        Outcome::UnknownUser,
        Outcome::WrongPassword,
        Outcome::RateLimited,
        Outcome::Unavailable,
        Outcome::ForgotIp,
        Outcome::ForgotEmail,
        Outcome::LoginPair,
        Outcome::LoginIp,
        Outcome::LoginEmail,
        Outcome::LoginDevice,
        Outcome::SignupIp,
        Outcome::TokenIp,
        Outcome::Sent,
        Outcome::Dead,
        Outcome::Stale,
        Outcome::Duplicate,
        Outcome::DroppedOverBudget,
        Outcome::DroppedInvalidAddress,
        Outcome::DroppedUnknown,
        Outcome::DroppedAlreadyVerified,
        Outcome::DroppedRolledBack,
        Outcome::DroppedSuperseded,
        Outcome::RecipientBudget,
        Outcome::DroppedSuppressed,
        Outcome::CodeWrong,
        Outcome::CodeIp,
        Outcome::MfaRequired,
        Outcome::FactorWrong,
        Outcome::MfaTokenInvalid,
    ];

    /// The stored text (and metrics label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Created => "created",
            Outcome::Exists => "exists",
            Outcome::Unverified => "unverified",
            Outcome::InvalidCredentials => "invalid_credentials",
            Outcome::PasswordTooLong => "password_too_long",
            Outcome::WeakPassword => "weak_password",
            Outcome::BreachedPassword => "breached_password",
            Outcome::Used => "used",
            Outcome::Expired => "expired",
            Outcome::Oversized => "oversized",
            Outcome::Malformed => "malformed",
            Outcome::Truncated => "truncated",
            Outcome::WrongPurpose => "wrong_purpose",
            Outcome::WrongDigest => "wrong_digest",
            Outcome::BadSignature => "bad_signature",
            Outcome::FutureDated => "future_dated",
            Outcome::Superseded => "superseded",
            Outcome::PasswordChanged => "password_changed",
            Outcome::UnknownUser => "unknown_user",
            Outcome::WrongPassword => "wrong_password",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unavailable => "unavailable",
            Outcome::ForgotIp => "forgot_ip",
            Outcome::ForgotEmail => "forgot_email",
            Outcome::LoginPair => "login_pair",
            Outcome::LoginIp => "login_ip",
            Outcome::LoginEmail => "login_email",
            Outcome::LoginDevice => "login_device",
            Outcome::SignupIp => "signup_ip",
            Outcome::TokenIp => "token_ip",
            Outcome::Sent => "sent",
            Outcome::Dead => "dead",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::DroppedOverBudget => "dropped_over_budget",
            Outcome::DroppedInvalidAddress => "dropped_invalid_address",
            Outcome::DroppedUnknown => "dropped_unknown",
            Outcome::DroppedAlreadyVerified => "dropped_already_verified",
            Outcome::DroppedRolledBack => "dropped_rolled_back",
            Outcome::DroppedSuperseded => "dropped_superseded",
            Outcome::RecipientBudget => "recipient_budget",
            Outcome::DroppedSuppressed => "dropped_suppressed",
            Outcome::CodeWrong => "code_wrong",
            Outcome::CodeIp => "code_ip",
            Outcome::MfaRequired => "mfa_required",
            Outcome::FactorWrong => "factor_wrong",
            Outcome::MfaTokenInvalid => "mfa_token_invalid",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit row.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub action: Action,
    pub outcome: Outcome,
    pub user_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub address_hash: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// An operator's reason and name (operator commands only).
    pub detail: Option<&'a str>,
}

impl AuditEvent<'_> {
    /// A row with only its action and outcome (the rest filled in with `..`).
    pub const fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            user_id: None,
            ip: None,
            address_hash: None,
            request_id: None,
            detail: None,
        }
    }
}

/// Appends an audit row on its own (not inside a transaction of the caller's).
pub async fn record_on(db: &sqlx::PgPool, e: &AuditEvent<'_>) -> Result<(), sqlx::Error> {
    let mut session = crate::db::Session::begin(db).await?;
    record(session.conn(), e).await?;
    session.finish().await
}

/// Appends many audit rows with one statement (one round trip and, outside a transaction,
/// one commit for all of them).
pub async fn record_many(
    db: impl PgExecutor<'_>,
    events: &[AuditEvent<'_>],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    let users: Vec<Option<Uuid>> = events.iter().map(|e| e.user_id).collect();
    let ips: Vec<Option<IpNet>> = events.iter().map(|e| e.ip.map(IpNet::from)).collect();
    let hashes: Vec<Option<&str>> = events.iter().map(|e| e.address_hash).collect();
    let request_ids: Vec<Option<&str>> = events.iter().map(|e| e.request_id).collect();
    let details: Vec<Option<&str>> = events.iter().map(|e| e.detail).collect();
    // Without a detail, the statement names no `detail` column: a worker that starts before
    // the api has migrated (the column came with it) still writes its rows.
    let statement = if details.iter().all(Option::is_none) {
        "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::inet[], $5::text[], $6::text[])"
    } else {
        "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id, detail)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::inet[], $5::text[], $6::text[], $7::text[])"
    };
    let query = sqlx::query(statement)
        .bind(actions)
        .bind(outcomes)
        .bind(users)
        .bind(ips)
        .bind(hashes)
        .bind(request_ids);
    let query = if details.iter().all(Option::is_none) {
        query
    } else {
        query.bind(details)
    };
    query
        .persistent(crate::db::named_statements())
        .execute(db)
        .await?;
    Ok(())
}

/// Appends an audit row.
/// Rows without a detail (every row a service writes on its own) name no `detail` column,
/// so they are written on a schema from before it too (see [`record_many`]).
pub async fn record(db: impl PgExecutor<'_>, e: &AuditEvent<'_>) -> Result<(), sqlx::Error> {
    let query = match e.detail {
        None => sqlx::query(
            "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        ),
        Some(_) => sqlx::query(
            "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ),
    };
    let query = query
        .persistent(crate::db::named_statements())
        .bind(e.action.as_str())
        .bind(e.outcome.as_str())
        .bind(e.user_id)
        .bind(e.ip.map(IpNet::from))
        .bind(e.address_hash)
        .bind(e.request_id);
    let query = match e.detail {
        None => query,
        Some(detail) => query.bind(detail),
    };
    query.execute(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_word_is_distinct_and_lower_snake_case() {
        let actions: HashSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(actions.len(), Action::ALL.len());
        let outcomes: HashSet<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(outcomes.len(), Outcome::ALL.len());
        for word in actions.iter().chain(&outcomes) {
            assert!(
                word.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{word}"
            );
        }
    }

    #[test]
    fn the_action_of_a_job_is_named_like_its_kind() {
        let id = Uuid::nil();
        let jobs = [
            Job::PasswordResetRequested {
                email: String::new(),
                ip: None,
                within_budget: true,
                user_id: None,
            },
            Job::EmailVerification {
                user_id: id,
                email: String::new(),
                ip: None,
            },
            Job::AccountExistsNotice {
                email: String::new(),
                ip: None,
            },
            Job::PasswordChanged {
                user_id: id,
                email: String::new(),
                ip: None,
                password_version: 1,
            },
            Job::SecurityNotice {
                user_id: id,
                email: String::new(),
                ip: None,
                password_version: 1,
                event: crate::message::SecurityEvent::RecoveryCodesReplaced,
            },
        ];
        for job in &jobs {
            assert_eq!(Action::of_job(job).as_str(), job.kind());
        }
        let kinds: Vec<&str> = jobs.iter().map(Job::kind).collect();
        assert_eq!(kinds, Job::KINDS);
    }
}
