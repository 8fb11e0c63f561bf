//! Locking an account: by its owner, through the one-time "this wasn't me" link of the
//! password-changed notice, or by support staff (`api accounts lock`).
//!
//! A lock bumps the password version (every session and every link of the old version dies),
//! replaces the password's hash with that of a secret nobody keeps (so sign-in gets the
//! ordinary `401` of a wrong password, after the same work, until a reset sets a new password,
//! whichever version of the api answers), and sends the owner a fresh reset email: the way back in goes through the mailbox, which the person who
//! changed the password without the owner may not control. The version bump, the lock, its
//! audit row, the `user.account_locked` event and the reset email commit together (the outbox
//! relays the last two).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    locale::Locale,
    message::{Envelope, Job, Trace},
    token::Purpose,
};

use crate::{
    error::ApiError,
    extract::RequestContext,
    outbox,
    rate_limit::{IpBudget, within_budget},
    sessions::Sessions,
    state::AppState,
    store,
};

/// Who locks, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Lock<'a> {
    /// The client of the owner's link; `None` for an operator.
    pub ip: Option<IpAddr>,
    pub trace: &'a Trace,
    /// The language of the reset email.
    pub locale: Locale,
    /// An operator's reason and name; `None` for the owner's link.
    pub detail: Option<&'a str>,
    /// How long the reset email's link lives (`RESET_TOKEN_MAX_AGE_SECS`).
    pub reset_max_age: std::time::Duration,
    pub now: DateTime<Utc>,
    /// The hash that replaces the password's: of a secret nobody keeps (see
    /// [`unusable_secret`]), hashed with the current parameters, so a sign-in attempt costs
    /// what a wrong password costs.
    pub unusable_hash: &'a str,
}

/// A secret nobody keeps, hashed into the locked account's place of a password.
pub fn unusable_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The hash of [`unusable_secret`] with the configured parameters, for an operator's lock
/// and an imported account without a password (hashed as the local client's work).
pub async fn unusable_hash(hasher: &crate::hashing::Hasher) -> Result<String, ApiError> {
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    hasher.hash_for(local, unusable_secret()).await
}

/// Locks `user` if its password version is still the one read; the new version, or `None`
/// when it moved (the account changed in between: nothing was done).
pub async fn commit(
    db: &sqlx::PgPool,
    user: &store::users::User,
    lock: &Lock<'_>,
) -> Result<Option<i32>, ApiError> {
    let mut tx = db.begin().await?;
    let Some(version) =
        store::users::lock(&mut *tx, user.id, user.password_version, lock.unusable_hash).await?
    else {
        return Ok(None);
    };
    // A passkey an intruder added must not outlive the lock and the reset: every passkey is
    // suspended (still the account's factor, so a reset asks for one; proving nothing until
    // its owner removes it).
    store::factors::suspend_passkeys(&mut tx, user.id).await?;
    shared::audit::record(
        &mut *tx,
        &AuditEvent {
            user_id: Some(user.id),
            ip: lock.ip,
            request_id: lock.trace.request_id.as_deref(),
            detail: lock.detail,
            ..AuditEvent::new(Action::AccountLock, Outcome::Success)
        },
    )
    .await?;
    let event = json!({
        "user_id": user.id,
        "password_version": version,
        "occurred_at": lock.now,
        "by": if lock.detail.is_some() { "operator" } else { "owner" },
    });
    outbox::add_event(
        &mut tx,
        user.id,
        shared::topology::ACCOUNT_LOCKED_EVENT,
        &event,
    )
    .await?;
    // The way back in. Within budget: the lock is one use of a one-time link (or an
    // operator's decision), not a request anyone can repeat.
    let reset_email = Envelope::new(
        Job::PasswordResetRequested {
            email: user.email.clone(),
            ip: lock.ip.map(|ip| ip.to_string()),
            within_budget: true,
            user_id: Some(user.id),
        },
        lock.now,
        chrono::Duration::from_std(lock.reset_max_age).unwrap_or(chrono::Duration::hours(1)),
        lock.locale,
        lock.trace.clone(),
    );
    outbox::add_job(&mut tx, Some(user.id), &reset_email).await?;
    tx.commit().await?;
    Ok(Some(version))
}

/// Revokes every session of `user` (best effort: sessions also die by the password version a
/// lock bumps).
pub async fn revoke_sessions(sessions: &Sessions, user: uuid::Uuid) {
    if let Err(e) = sessions.revoke_all(user).await {
        tracing::warn!(error = %e, "session revocation failed; sessions die by password version");
    }
}

/// Locks the account of a "this wasn't me" link (the JSON endpoint and the page's button).
/// `typed`, when given, must be the account's address (any spelling that normalises to it);
/// otherwise nothing changes and the link stays usable.
pub async fn with_link(
    state: &AppState,
    ctx: &RequestContext,
    token: &str,
    typed: Option<&str>,
) -> Result<(), ApiError> {
    let audit = |outcome: Outcome, user: Option<uuid::Uuid>| {
        crate::recovery::attempt(state, ctx, Action::AccountLock, outcome, user)
    };
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::Link, ctx.ip, ctx.request_id()).await?;
    let now = state.clock.now();
    let checked = (state.tokens)
        .check_link(&state.db, Purpose::AccountLock, token, now)
        .await;
    let (token, user) = match checked {
        Ok(checked) => checked,
        Err(rejected) => {
            if rejected.reason != Outcome::Unavailable {
                audit(rejected.reason, rejected.user).await;
            }
            return Err(rejected.error);
        }
    };
    if let Some(typed) = typed {
        let matches = shared::email::normalize(typed).is_ok_and(|a| a.key() == user.email_key);
        if !matches {
            return Err(ApiError::AddressMismatch);
        }
    }
    if !state.tokens.burn(Purpose::AccountLock, &token).await? {
        audit(Outcome::Used, Some(user.id)).await;
        return Err(ApiError::TokenUsed);
    }
    let unusable_hash = match state.hasher.hash_for(ctx.ip, unusable_secret()).await {
        Ok(hash) => hash,
        Err(e) => {
            state.tokens.unburn(&token).await;
            return Err(e);
        }
    };
    let lock = Lock {
        ip: Some(ctx.ip),
        trace: &ctx.trace,
        locale: ctx.locale,
        detail: None,
        reset_max_age: state.config.reset_token_max_age,
        // After the hashing, which can wait its turn: the reset email lives its full time.
        now: state.clock.now(),
        unusable_hash: &unusable_hash,
    };
    match commit(&state.db, &user, &lock).await {
        Ok(Some(_)) => state.outbox.wake(),
        Ok(None) => {
            audit(Outcome::PasswordChanged, Some(user.id)).await;
            return Err(ApiError::TokenInvalid);
        }
        Err(e) => {
            state.tokens.unburn(&token).await;
            return Err(e);
        }
    }
    revoke_sessions(&state.sessions, user.id).await;
    metrics::counter!("account_locks_total", "by" => "owner").increment(1);
    Ok(())
}
