//! Second factors (DESIGN.md §11): an authenticator app's codes (TOTP) with single-use
//! recovery codes. A factor is asked for where a password alone used to do: the second step
//! of a sign-in, a reset (the link or code proves the mailbox only), a password change, the
//! removal of the factor itself.
//!
//! Every check of a code counts against the sign-in budgets of the address and the client
//! (a wrong code is a failure like a wrong password; a right one is forgiven), and is
//! audited under the action it serves. Spending a recovery code, adding or removing a
//! factor and replacing the codes each send the owner a security notice (through the
//! outbox, in the transaction of the change).

pub mod challenge;
pub mod passkeys;
pub mod recovery_codes;
pub mod secret_box;
pub mod totp;

use std::sync::Arc;

use shared::{
    audit::{Action, AuditEvent, Outcome},
    message::{Envelope, Factor, Job, SecurityEvent},
};
use sqlx::PgConnection;

use crate::{
    error::ApiError,
    extract::RequestContext,
    routes::sessions::{LoginBudgets, within_login_budgets},
    state::AppState,
    store::{self, factors::Enrolment, users::User},
};

use secret_box::SecretBox;

/// The sealing keys of TOTP secrets and the issuer name authenticator apps show.
#[derive(Clone)]
pub struct Factors {
    secret_box: Arc<SecretBox>,
    issuer: String,
}

impl Factors {
    pub fn new(token_secrets: &[Vec<u8>], issuer: &str) -> Self {
        Self {
            secret_box: Arc::new(SecretBox::new(token_secrets)),
            issuer: issuer.to_owned(),
        }
    }
}

/// A second factor as a request offers it.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A code of the authenticator app.
    Totp(String),
    /// One of the recovery codes.
    RecoveryCode(String),
    /// A passkey's answer to a ceremony of [`passkeys::Passkeys::factor_options`].
    Passkey(Box<PasskeyAnswer>),
}

/// A passkey's answer, as a JSON body carries it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct PasskeyAnswer {
    /// The id of the ceremony the options came with.
    #[schema(max_length = 64)]
    pub ceremony_id: String,
    /// What `navigator.credentials.get` gave (binary values in base64url).
    #[schema(value_type = Object)]
    pub credential: webauthn_rs::prelude::PublicKeyCredential,
}

impl Proof {
    /// The factor of a JSON body's `totp_code` or `recovery_code` (the first given).
    pub fn from_fields(totp_code: Option<&str>, recovery_code: Option<&str>) -> Option<Self> {
        fn given(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        given(totp_code)
            .map(|c| Proof::Totp(c.to_owned()))
            .or_else(|| given(recovery_code).map(|c| Proof::RecoveryCode(c.to_owned())))
    }

    /// The factor of a JSON body's `code` (or `totp_code`), `recovery_code` or `passkey`.
    pub fn of(
        code: &Option<String>,
        recovery_code: &Option<String>,
        passkey: &Option<PasskeyAnswer>,
    ) -> Option<Self> {
        match passkey {
            Some(answer) => Some(Proof::Passkey(Box::new(answer.clone()))),
            None => Self::from_fields(code.as_deref(), recovery_code.as_deref()),
        }
    }

    /// The factor a reset page's form carries: the answer its script put in the hidden
    /// `passkey` field (JSON, as a body's `passkey`), else what was typed into its one field
    /// (see [`Proof::from_entry`]). `invalid_code` for an answer that is not one.
    pub fn from_page(entry: Option<&str>, passkey: Option<&str>) -> Result<Option<Self>, ApiError> {
        match passkey.map(str::trim).filter(|s| !s.is_empty()) {
            Some(json) => match serde_json::from_str::<PasskeyAnswer>(json) {
                Ok(answer) => Ok(Some(Proof::Passkey(Box::new(answer)))),
                Err(_) => Err(ApiError::InvalidCode),
            },
            None => Ok(Self::from_entry(entry)),
        }
    }

    /// The factor typed into a page's one field: six digits are the app's code, anything
    /// else a recovery code.
    pub fn from_entry(entry: Option<&str>) -> Option<Self> {
        let entry = entry.map(str::trim).filter(|s| !s.is_empty())?;
        Some(if totp::normalize(entry).is_some() {
            Proof::Totp(entry.to_owned())
        } else {
            Proof::RecoveryCode(entry.to_owned())
        })
    }
}

/// What the account has enrolled.
pub async fn enrolment(state: &AppState, user: uuid::Uuid) -> Result<Enrolment, ApiError> {
    Ok(store::factors::enrolment(&state.db, user).await?)
}

/// A new authenticator-app secret waiting for its first code.
pub struct Enrolling {
    /// Base32, for typing into the app.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub uri: String,
}

/// Starts (or starts over) the enrolment of an authenticator app; `409
/// mfa_already_enabled` when the account has one.
pub async fn begin_totp(state: &AppState, user: &User) -> Result<Enrolling, ApiError> {
    if !state.config.mfa_enrolment {
        return Err(ApiError::MfaEnrolmentOff);
    }
    let secret = totp::generate();
    let sealed = state.factors.secret_box.seal(user.id.as_bytes(), &secret);
    if !store::factors::begin_totp(&state.db, user.id, &sealed).await? {
        return Err(ApiError::MfaAlreadyEnabled);
    }
    Ok(Enrolling {
        secret: totp::base32(&secret),
        uri: totp::uri(&secret, &state.factors.issuer, &user.email),
    })
}

/// Confirms the waiting secret with its first code: the factor is on, and the ten recovery
/// codes (returned, shown once) are made in the same transaction.
pub async fn confirm_totp(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    code: &str,
) -> Result<Vec<String>, ApiError> {
    if !state.config.mfa_enrolment {
        return Err(ApiError::MfaEnrolmentOff);
    }
    let Some(row) = store::factors::totp(&state.db, user.id).await? else {
        return Err(ApiError::NoPendingEnrolment);
    };
    if row.confirmed {
        return Err(ApiError::MfaAlreadyEnabled);
    }
    let attempt = within_budgets(state, ctx, user, None).await?;
    let Some(step) = matching_step(state, user, &row, code) else {
        audit_wrong(state, ctx, Action::MfaEnrol, user).await;
        return Err(ApiError::InvalidCode);
    };
    let codes = recovery_codes::generate();
    let hashes = hashes(user, &codes);
    let mut tx = state.db.begin().await?;
    store::factors::lock_factors(&mut tx, user.id).await?;
    if !store::factors::confirm_step(&mut tx, user.id, step, &row.sealed).await? {
        drop(tx);
        audit_wrong(state, ctx, Action::MfaEnrol, user).await;
        return Err(ApiError::InvalidCode);
    }
    store::factors::replace_recovery_codes(&mut tx, user.id, &hashes).await?;
    let event = SecurityEvent::FactorAdded {
        factor: Factor::Totp,
    };
    let change = Changed::new(ctx, user, Action::MfaEnrol, event);
    change.commit(state, tx, Some("totp")).await?;
    state.limiter.forgive(attempt).await;
    metrics::counter!("mfa_changes_total", "change" => "totp_added").increment(1);
    Ok(codes)
}

/// Registers the passkey of registration `ceremony` for the signed-in owner, named `name`.
/// Its credential id, and the recovery codes when the account had none (shown once).
pub async fn register_passkey(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    ceremony: &str,
    credential: &webauthn_rs::prelude::RegisterPublicKeyCredential,
    name: &str,
) -> Result<(Vec<u8>, Option<Vec<String>>), ApiError> {
    if !state.config.mfa_enrolment {
        return Err(ApiError::MfaEnrolmentOff);
    }
    let passkey = state
        .passkeys
        .register(user.id, ceremony, credential)
        .await?;
    let credential_id = passkey.cred_id().to_vec();
    let record = passkeys::record(&passkey)?;
    let mut tx = state.db.begin().await?;
    store::factors::lock_factors(&mut tx, user.id).await?;
    if !store::factors::add_passkey(&mut tx, user.id, &credential_id, name, &record).await? {
        return Err(ApiError::PasskeyInvalid);
    }
    let codes = if store::factors::has_recovery_codes(&mut tx, user.id).await? {
        None
    } else {
        let codes = recovery_codes::generate();
        store::factors::replace_recovery_codes(&mut tx, user.id, &hashes(user, &codes)).await?;
        Some(codes)
    };
    let event = SecurityEvent::FactorAdded {
        factor: Factor::Passkey,
    };
    let change = Changed::new(ctx, user, Action::MfaEnrol, event);
    change.commit(state, tx, Some("passkey")).await?;
    metrics::counter!("mfa_changes_total", "change" => "passkey_added").increment(1);
    Ok((credential_id, codes))
}

/// Removes one of the owner's passkeys (password and a code checked); `404 not_found` when
/// it is none of theirs. The recovery codes go with the last factor.
pub async fn remove_passkey(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    credential_id: &[u8],
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    store::factors::lock_factors(&mut tx, user.id).await?;
    if !store::factors::remove_passkey(&mut tx, user.id, credential_id).await? {
        return Err(ApiError::NotFound);
    }
    store::factors::drop_recovery_codes_without_factor(&mut tx, user.id).await?;
    let event = SecurityEvent::FactorRemoved {
        factor: Factor::Passkey,
        by_support: false,
    };
    let change = Changed::new(ctx, user, Action::MfaRemove, event);
    change.commit(state, tx, Some("passkey")).await?;
    metrics::counter!("mfa_changes_total", "change" => "passkey_removed").increment(1);
    Ok(())
}

/// A new set of recovery codes; the old set dies. `409 mfa_not_enabled` without a factor.
pub async fn replace_recovery_codes(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
) -> Result<Vec<String>, ApiError> {
    let codes = recovery_codes::generate();
    let hashes = hashes(user, &codes);
    let mut tx = state.db.begin().await?;
    // The factor is read in the transaction that replaces the codes: a removal in between
    // leaves no codes behind for an account without a factor.
    if !store::factors::lock_factors(&mut tx, user.id).await? {
        return Err(ApiError::MfaNotEnabled);
    }
    store::factors::replace_recovery_codes(&mut tx, user.id, &hashes).await?;
    let event = SecurityEvent::RecoveryCodesReplaced;
    let change = Changed::new(ctx, user, Action::RecoveryCodesReplace, event);
    change.commit(state, tx, None).await?;
    Ok(codes)
}

/// Removes the authenticator app and the recovery codes at the signed-in owner's request
/// (password and code checked); `409 mfa_not_enabled` when there is none. The owner gets a
/// notice. Support staff remove a factor through [`crate::admin::Desk::remove_factors`].
pub async fn remove_totp(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    store::factors::lock_factors(&mut tx, user.id).await?;
    if !store::factors::remove_totp(&mut tx, user.id).await? {
        return Err(ApiError::MfaNotEnabled);
    }
    let event = SecurityEvent::FactorRemoved {
        factor: Factor::Totp,
        by_support: false,
    };
    let change = Changed::new(ctx, user, Action::MfaRemove, event);
    change.commit(state, tx, None).await?;
    metrics::counter!("mfa_changes_total", "change" => "totp_removed").increment(1);
    Ok(())
}

/// Seals every TOTP secret still sealed under an older `TOKEN_SECRETS` entry under the
/// current one (each replica at start; a secret is also sealed again at its next use), so an
/// old secret can leave `TOKEN_SECRETS` without stranding apps that were not used meanwhile.
/// A secret whose key is no longer listed is counted and logged: its account signs in with a
/// recovery code, or support removes the factor. The number resealed.
pub async fn reseal_all(db: sqlx::PgPool, factors: Factors) -> u64 {
    const BATCH: i64 = 500;
    let current = factors.secret_box.current_key_id().to_owned();
    let (mut after, mut resealed, mut unopenable) = (uuid::Uuid::nil(), 0u64, 0u64);
    loop {
        let rows = match store::factors::sealed_under_other_keys(&db, &current, after, BATCH).await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not read TOTP secrets to seal again");
                break;
            }
        };
        let Some((last, _, _)) = rows.last() else {
            break;
        };
        after = *last;
        for (user, bytes, key_id) in rows {
            let sealed = secret_box::Sealed { key_id, bytes };
            let Some(opened) = factors.secret_box.open(user.as_bytes(), &sealed) else {
                unopenable += 1;
                continue;
            };
            let new = factors.secret_box.seal(user.as_bytes(), &opened.plaintext);
            match store::factors::reseal_totp(&db, user, &sealed, &new).await {
                Ok(()) => resealed += 1,
                Err(e) => tracing::warn!(error = %e, "could not seal a TOTP secret again"),
            }
        }
    }
    metrics::gauge!("mfa_secrets_unopenable").set(unopenable as f64);
    if unopenable > 0 {
        tracing::error!(
            unopenable,
            "TOTP secrets sealed under a key no TOKEN_SECRETS entry gives: those accounts need a recovery code"
        );
    }
    if resealed > 0 {
        tracing::info!(
            resealed,
            "TOTP secrets sealed under the current TOKEN_SECRETS entry"
        );
    }
    resealed
}

/// Which factor proved the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    Totp,
    Passkey,
    /// A recovery code, now spent; how many are left.
    RecoveryCode {
        left: i64,
    },
}

/// Checks the factor a request offers for `user`, on the sign-in budgets of the address and
/// the client: a right one is spent (a TOTP step is accepted once; a recovery code dies and
/// its owner is told) and forgiven; a wrong, reused or spent one is audited under `action`
/// and answered `401 invalid_code`.
pub async fn prove(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    action: Action,
    proof: &Proof,
) -> Result<Proven, ApiError> {
    prove_from(state, ctx, user, action, proof, None).await
}

/// [`prove`] from a browser the account recognises (`device`, see [`crate::devices`]): its
/// codes count in the device's own budget, as its passwords do, so strangers who spent the
/// address's budget do not keep the owner's browser out at the second step either.
pub async fn prove_from(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    action: Action,
    proof: &Proof,
    device: Option<&str>,
) -> Result<Proven, ApiError> {
    let attempt = within_budgets(state, ctx, user, device).await?;
    let proven = match proof {
        Proof::Totp(code) => spend_totp(state, user, code).await?.then_some(Proven::Totp),
        Proof::RecoveryCode(code) => spend_recovery_code(state, ctx, user, code)
            .await?
            .map(|left| Proven::RecoveryCode { left }),
        Proof::Passkey(answer) => (state.passkeys)
            .verify_factor(&state.db, user.id, &answer.ceremony_id, &answer.credential)
            .await?
            .then_some(Proven::Passkey),
    };
    let Some(proven) = proven else {
        audit_wrong(state, ctx, action, user).await;
        return Err(ApiError::InvalidCode);
    };
    state.limiter.forgive(attempt).await;
    let factor = match proven {
        Proven::Totp => "totp",
        Proven::Passkey => "passkey",
        Proven::RecoveryCode { .. } => "recovery_code",
    };
    metrics::counter!("mfa_verifications_total", "factor" => factor).increment(1);
    Ok(proven)
}

/// Requires a factor for an account that has one: `403 mfa_required` when the request
/// offers none (audited under `action`), else what to check. `None`: the account has no
/// factor.
pub async fn required(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    action: Action,
    proof: Option<Proof>,
) -> Result<Option<Proof>, ApiError> {
    if !enrolment(state, user.id).await?.has_factor() {
        return Ok(None);
    }
    match proof {
        Some(proof) => Ok(Some(proof)),
        None => {
            crate::recovery::attempt(state, ctx, action, Outcome::MfaRequired, Some(user.id)).await;
            Err(ApiError::MfaRequired)
        }
    }
}

async fn within_budgets(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    device: Option<&str>,
) -> Result<crate::rate_limit::Attempt, ApiError> {
    let address_hash = state.limiter.address_pseudonym(&user.email_key);
    let budgets = LoginBudgets {
        ip: ctx.ip,
        email_key: &user.email_key,
        address_hash: &address_hash,
        device,
    };
    within_login_budgets(state, &budgets, ctx.request_id()).await
}

async fn audit_wrong(state: &AppState, ctx: &RequestContext, action: Action, user: &User) {
    let reason = Outcome::FactorWrong;
    metrics::counter!("tokens_rejected_total", "reason" => reason.as_str()).increment(1);
    crate::recovery::attempt(state, ctx, action, reason, Some(user.id)).await;
}

/// The step of `code` under the stored secret, if it is newer than the last accepted one.
fn matching_step(
    state: &AppState,
    user: &User,
    row: &store::factors::TotpRow,
    code: &str,
) -> Option<i64> {
    let code = totp::normalize(code)?;
    let sealed = row.sealed();
    let Some(opened) = state.factors.secret_box.open(user.id.as_bytes(), &sealed) else {
        tracing::error!(
            key_id = %sealed.key_id,
            "a TOTP secret does not open: its TOKEN_SECRETS entry is no longer listed"
        );
        return None;
    };
    let now = u64::try_from(state.clock.now().timestamp()).ok()?;
    let step = i64::try_from(totp::matching_step(&opened.plaintext, &code, now)?).ok()?;
    if step <= row.last_step {
        return None;
    }
    if opened.stale {
        let resealed = state
            .factors
            .secret_box
            .seal(user.id.as_bytes(), &opened.plaintext);
        let (db, id) = (state.db.clone(), user.id);
        tokio::spawn(async move {
            if let Err(e) = store::factors::reseal_totp(&db, id, &sealed, &resealed).await {
                tracing::warn!(error = %e, "could not seal a TOTP secret under the current key");
            }
        });
    }
    Some(step)
}

/// Accepts a code of the confirmed app once.
async fn spend_totp(state: &AppState, user: &User, code: &str) -> Result<bool, ApiError> {
    let Some(row) = store::factors::totp(&state.db, user.id).await? else {
        return Ok(false);
    };
    if !row.confirmed {
        return Ok(false);
    }
    let Some(step) = matching_step(state, user, &row, code) else {
        return Ok(false);
    };
    let id = user.id;
    let spent = shared::db::pinned(&state.db, async |c| {
        store::factors::spend_step(c, id, step).await
    })
    .await?;
    Ok(spent)
}

/// Spends a recovery code and queues its notice; the codes left, or `None` when it was no
/// unspent code of the account.
async fn spend_recovery_code(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    code: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(code) = recovery_codes::normalize(code) else {
        return Ok(None);
    };
    let hash = recovery_codes::hash(user.id, &code);
    let mut tx = state.db.begin().await?;
    let Some(left) = store::factors::spend_recovery_code(&mut tx, user.id, &hash).await? else {
        return Ok(None);
    };
    let event = SecurityEvent::RecoveryCodeUsed {
        remaining: u32::try_from(left).unwrap_or(0),
    };
    notice(
        &mut tx,
        state,
        ctx,
        user.id,
        &user.email,
        user.password_version,
        event,
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok(Some(left))
}

fn hashes(user: &User, codes: &[String]) -> Vec<Vec<u8>> {
    codes
        .iter()
        .filter_map(|c| recovery_codes::normalize(c))
        .map(|c| recovery_codes::hash(user.id, &c))
        .collect()
}

/// An owner's change to their factors, as its transaction ends.
struct Changed<'a> {
    ctx: &'a RequestContext,
    user: &'a User,
    action: Action,
    event: SecurityEvent,
}

impl<'a> Changed<'a> {
    fn new(ctx: &'a RequestContext, user: &'a User, action: Action, event: SecurityEvent) -> Self {
        Self {
            ctx,
            user,
            action,
            event,
        }
    }

    /// Ends the change's transaction `tx` with its audit row (`detail`: which factor) and the
    /// owner's notice, then wakes the outbox.
    async fn commit(
        self,
        state: &AppState,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        detail: Option<&str>,
    ) -> Result<(), ApiError> {
        let Self {
            ctx,
            user,
            action,
            event,
        } = self;
        let row = AuditEvent {
            user_id: Some(user.id),
            ip: Some(ctx.ip),
            request_id: ctx.request_id(),
            detail,
            ..AuditEvent::new(action, Outcome::Success)
        };
        shared::audit::record(&mut *tx, &row).await?;
        let version = user.password_version;
        notice(&mut tx, state, ctx, user.id, &user.email, version, event).await?;
        tx.commit().await?;
        state.outbox.wake();
        Ok(())
    }
}

/// Queues a security notice to the owner of account `user` (address `email`, password version
/// `password_version`) in the transaction of its cause.
pub(crate) async fn notice(
    tx: &mut PgConnection,
    state: &AppState,
    ctx: &RequestContext,
    user: uuid::Uuid,
    email: &str,
    password_version: i32,
    event: SecurityEvent,
) -> Result<(), sqlx::Error> {
    let envelope = Envelope::new(
        Job::SecurityNotice {
            user_id: user,
            email: email.to_owned(),
            ip: Some(ctx.ip.to_string()),
            password_version,
            event,
        },
        state.clock.now(),
        NOTICE_TTL,
        ctx.locale,
        ctx.trace.clone(),
    )
    .asked_in(&ctx.languages);
    crate::outbox::add_job(tx, Some(user), &envelope).await
}

/// How long a security notice may wait to be sent.
pub(crate) const NOTICE_TTL: chrono::Duration = chrono::Duration::days(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_offers_the_app_code_first_and_ignores_empty_fields() {
        let read =
            |totp: Option<&str>, recovery: Option<&str>| match Proof::from_fields(totp, recovery) {
                Some(Proof::Totp(c)) => format!("totp {c}"),
                Some(Proof::RecoveryCode(c)) => format!("recovery {c}"),
                Some(Proof::Passkey(_)) => "passkey".to_owned(),
                None => "none".to_owned(),
            };
        assert_eq!(read(Some("123456"), Some("x")), "totp 123456");
        assert_eq!(
            read(Some(" "), Some("abcd-efgh-jkmn-pqrs")),
            "recovery abcd-efgh-jkmn-pqrs"
        );
        assert_eq!(read(None, Some("")), "none");
    }

    #[test]
    fn a_page_entry_of_six_digits_is_the_app_code() {
        assert!(
            matches!(Proof::from_entry(Some("123 456")), Some(Proof::Totp(c)) if c == "123 456")
        );
        assert!(matches!(
            Proof::from_entry(Some("abcd-efgh-jkmn-pqrs")),
            Some(Proof::RecoveryCode(c)) if c == "abcd-efgh-jkmn-pqrs"
        ));
        assert!(Proof::from_entry(Some("  ")).is_none());
    }
}
