//! Getting back into an account: forgot-password, the reset by link and by code, and the
//! commit they share. The JSON routes and the HTML pages only translate HTTP to these
//! functions; the "this wasn't me" lock is in [`crate::lock`].
//!
//! A reset runs in one order, whichever way it was authorised: the client's budget (for a code,
//! after the site-wide breaker, which only reads); the checks of the link or code, which
//! change nothing but a wrong code's counts; for an account with a second factor, that the
//! request offers one (`403 mfa_required` otherwise: a link or code proves the mailbox
//! only); the new password's checks (a refused password leaves the link usable); the
//! factor's check, which spends it when it is right; the burn, the single point where concurrent submissions are
//! decided; then the change ([`finish`]): hash, commit with its audit row, event and notice
//! (the outbox relays the last two), revoke the sessions.

use serde_json::json;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    email,
    message::{Envelope, Job},
    token::Purpose,
};
use uuid::Uuid;

use crate::{
    devices::Proven,
    error::ApiError,
    extract::RequestContext,
    mfa::{self, Proof},
    outbox, password_policy,
    rate_limit::{IpBudget, within_budget},
    reset_code::{self, CodeCheck},
    state::AppState,
    store::{self, users::User},
    tokens::Rejected,
};

/// Queues a reset email without looking the address up.
///
/// Known, unknown and over-budget addresses take exactly the same path: count both budgets
/// in one Redis round trip, publish one confirmed job carrying the verdict. Only the worker
/// learns whether the address has an account, so neither the answer nor its timing can
/// reveal it. The per-IP limit is the one visible refusal: it says nothing about any address.
pub async fn forgot(state: &AppState, ctx: &RequestContext, email: &str) -> Result<(), ApiError> {
    let address = email::normalize(email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    let now = state.clock.now();
    let verdict = state.limiter.check_forgot(ctx.ip, address.key()).await?;
    if !verdict.ip.allowed {
        let address_hash = state.limiter.address_pseudonym(address.key());
        (state.refusals).refused(&verdict.ip, ctx.ip, Some(&address_hash), ctx.request_id());
        return Err(ApiError::RateLimitedIp {
            retry_after_secs: verdict.ip.retry_after_secs,
        });
    }
    if !verdict.email.allowed {
        // Invisible to the client by design; still counted for operators.
        metrics::counter!("rate_limit_hits_total", "kind" => Outcome::ForgotEmail.as_str())
            .increment(1);
    }
    let job = Envelope::new(
        Job::PasswordResetRequested {
            email: address.address().to_owned(),
            ip: Some(ctx.ip.to_string()),
            within_budget: verdict.email.allowed,
            user_id: None,
        },
        now,
        chrono::Duration::from_std(state.config.reset_token_max_age)
            .unwrap_or(chrono::Duration::hours(1)),
        ctx.locale,
        ctx.trace.clone(),
    )
    .asked_in(&ctx.languages);
    state.publisher.publish_job(&job).await
}

/// What a reset checks before it burns its link or code: the account's second factor is
/// asked for, the new password is refused if the policy refuses it (audited), then the factor
/// is proven, last, so a refused password does not spend a recovery code.
async fn new_password_and_factor(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    action: Action,
    new_password: &str,
    factor: Option<Proof>,
) -> Result<(), ApiError> {
    let factor = mfa::required(state, ctx, user, action, factor).await?;
    let checked =
        password_policy::refuse_new_password(&state.breached, new_password, &user.email).await;
    if let Err((e, outcome)) = checked {
        if let Some(outcome) = outcome {
            attempt(state, ctx, action, outcome, Some(user.id)).await;
        }
        return Err(e);
    }
    if let Some(factor) = &factor {
        mfa::prove(state, ctx, user, action, factor).await?;
    }
    Ok(())
}

/// Checks a link without consuming it (the GET of the reset and lock pages: mail scanners
/// open links, so this must change nothing but the client's per-IP budget). The account it
/// is for, or the error the submission would get.
pub async fn inspect_link(
    state: &AppState,
    ip: std::net::IpAddr,
    purpose: Purpose,
    token: &str,
) -> Result<User, ApiError> {
    within_budget(&state.limiter, &state.refusals, IpBudget::Link, ip, None).await?;
    let now = state.clock.now();
    (state.tokens)
        .check_link(&state.db, purpose, token, now)
        .await
        .map(|(_, user)| user)
        .map_err(|r| r.error)
}

/// Sets a new password through a reset link. The account, as it is now.
pub async fn reset_with_link(
    state: &AppState,
    ctx: &RequestContext,
    token: &str,
    new_password: String,
    factor: Option<Proof>,
) -> Result<Proven, ApiError> {
    let action = Action::PasswordReset;
    let audit = |outcome: Outcome, user: Option<Uuid>| attempt(state, ctx, action, outcome, user);
    let refuse = |rejected: Rejected| async move {
        // Infrastructure failures are not attempts of the client's; they are not audited.
        if rejected.reason != Outcome::Unavailable {
            attempt(state, ctx, action, rejected.reason, rejected.user).await;
        }
        rejected.error
    };

    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::Link, ctx.ip, ctx.request_id()).await?;
    if let Err(e) = password_policy::check_length(&new_password) {
        audit(Outcome::PasswordTooLong, None).await;
        return Err(e);
    }
    let now = state.clock.now();
    let checked = (state.tokens)
        .check_link(&state.db, Purpose::PasswordReset, token, now)
        .await;
    let (token, user) = match checked {
        Ok(checked) => checked,
        Err(r) => return Err(refuse(r).await),
    };
    new_password_and_factor(state, ctx, &user, action, &new_password, factor).await?;
    if !state.tokens.burn(Purpose::PasswordReset, &token).await? {
        audit(Outcome::Used, Some(user.id)).await;
        return Err(ApiError::TokenUsed);
    }
    let change = Change { ctx, action, now };
    let Some(password_version) =
        finish(state, &change, &user, token.fingerprint(), new_password).await?
    else {
        audit(Outcome::PasswordChanged, Some(user.id)).await;
        return Err(ApiError::TokenInvalid);
    };
    Ok(Proven {
        email_key: user.email_key,
        password_version,
    })
}

/// Sets a new password with the one-time code of a reset email (see [`crate::reset_code`]).
/// Nothing about the address is read from the database before the code matched; every
/// failure of the code itself is the same `code_invalid`. The account, as it is now.
pub async fn reset_with_code(
    state: &AppState,
    ctx: &RequestContext,
    email: &str,
    code: &str,
    new_password: String,
    factor: Option<Proof>,
) -> Result<Proven, ApiError> {
    let action = Action::PasswordResetCode;
    let audit = |outcome: Outcome, user: Option<Uuid>| attempt(state, ctx, action, outcome, user);
    let refuse = |outcome: Outcome, user: Uuid| async move {
        metrics::counter!("tokens_rejected_total", "reason" => outcome.as_str()).increment(1);
        attempt(state, ctx, action, outcome, Some(user)).await;
        ApiError::CodeInvalid
    };

    if let Err(e) = password_policy::check_length(&new_password) {
        audit(Outcome::PasswordTooLong, None).await;
        return Err(e);
    }
    let (link, user) = code_account(state, ctx, email, code).await?;
    let now = state.clock.now();
    let purpose = Purpose::PasswordReset;
    let fingerprint = &link.fingerprint;
    new_password_and_factor(state, ctx, &user, action, &new_password, factor).await?;
    if !state.tokens.burn_fingerprint(purpose, fingerprint).await? {
        return Err(refuse(Outcome::Used, user.id).await);
    }
    let change = Change { ctx, action, now };
    let Some(password_version) = finish(state, &change, &user, fingerprint, new_password).await?
    else {
        return Err(refuse(Outcome::PasswordChanged, user.id).await);
    };
    link.kill(&state.redis).await;
    Ok(Proven {
        email_key: user.email_key,
        password_version,
    })
}

/// The account an emailed reset code is for, once it matched a live code (the breaker, the
/// per-IP code budget and every check of the code, as [`reset_with_code`] runs them; a wrong
/// code is counted and answered `code_invalid` alike for every address). Nothing changes but
/// a wrong code's counts.
pub async fn code_account(
    state: &AppState,
    ctx: &RequestContext,
    email: &str,
    code: &str,
) -> Result<(reset_code::CodeLink, User), ApiError> {
    let action = Action::PasswordResetCode;
    let refuse = |outcome: Outcome, user: Uuid| async move {
        metrics::counter!("tokens_rejected_total", "reason" => outcome.as_str()).increment(1);
        attempt(state, ctx, action, outcome, Some(user)).await;
        ApiError::CodeInvalid
    };
    // The breaker first: it only reads, and a paused code entry spends nobody's budget.
    let breaker = reset_code::Breaker {
        limit: state.config.code_breaker_per_minute,
    };
    breaker.check(&state.redis, state.clock.now()).await?;
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::Code, ctx.ip, ctx.request_id()).await?;
    let address = email::normalize(email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    let secret = state.config.pseudonym_secret();
    let checked = match shared::reset_code::normalize(code) {
        Some(code) => reset_code::check(&state.redis, secret, address.key(), &code).await?,
        None => CodeCheck::Wrong,
    };
    let link = match checked {
        CodeCheck::Right(link) => link,
        CodeCheck::Wrong => {
            // The same row for every address, known or not: its pseudonym, no user.
            let reason = Outcome::CodeWrong;
            metrics::counter!("tokens_rejected_total", "reason" => reason.as_str()).increment(1);
            breaker.count_wrong(&state.redis, state.clock.now()).await;
            let address_hash = state.limiter.address_pseudonym(address.key());
            let event = AuditEvent {
                ip: Some(ctx.ip),
                request_id: ctx.request_id(),
                address_hash: Some(&address_hash),
                ..AuditEvent::new(action, reason)
            };
            crate::audit::record(&state.db, &event).await;
            return Err(ApiError::CodeInvalid);
        }
    };
    let now = state.clock.now();
    let purpose = Purpose::PasswordReset;
    if link.expired(state.tokens.max_age(purpose), now) {
        return Err(refuse(Outcome::Expired, link.user).await);
    }
    let Some(user) = store::users::by_id(&state.db, link.user).await? else {
        return Err(refuse(Outcome::UnknownUser, link.user).await);
    };
    if user.password_version != link.password_version {
        return Err(refuse(Outcome::PasswordChanged, user.id).await);
    }
    let (generation, fingerprint) = (link.generation, &link.fingerprint);
    if let Some(reason) = (state.tokens)
        .link_is_dead(user.id, purpose, generation, fingerprint)
        .await?
    {
        return Err(refuse(reason, user.id).await);
    }
    Ok((link, user))
}

/// A password change and the request it comes from.
struct Change<'a> {
    ctx: &'a RequestContext,
    /// How the change was authorised (a link or a code), for its audit row.
    action: Action,
    now: chrono::DateTime<chrono::Utc>,
}

/// The part of a reset after its link was burned: hash, commit (see [`commit`]), revoke the
/// sessions. The new password version, or `None` when the password changed since the link
/// was checked; on an error the link is given back, so the person can simply retry.
async fn finish(
    state: &AppState,
    change: &Change<'_>,
    user: &User,
    fingerprint: &str,
    new_password: String,
) -> Result<Option<i32>, ApiError> {
    let hash = state.hasher.hash_for(change.ctx.ip, new_password).await;
    let committed = match hash {
        Ok(hash) => commit(&state.db, change, user, &hash).await,
        Err(e) => Err(e),
    };
    let version = match committed {
        Ok(Some(version)) => version,
        Ok(None) => return Ok(None),
        Err(e) => {
            state.tokens.unburn_fingerprint(fingerprint).await;
            return Err(e);
        }
    };
    state.outbox.wake();
    // Sessions also die by their password version; deleting them is the fast path.
    if let Err(e) = state.sessions.revoke_all(user.id).await {
        tracing::warn!(error = %e, "session revocation failed; sessions die by password version");
    }
    // The mailbox's owner set a new password: failures counted against the old one (by
    // strangers, often) no longer refuse sign-ins to the address.
    state.limiter.clear_login_failures(&user.email_key).await;
    metrics::counter!("password_resets_total").increment(1);
    Ok(Some(version))
}

/// The change of a reset: the new hash, its audit row, the `user.password_reset` event, the
/// password-changed notice and the address off the suppression list commit together (the
/// outbox), so other services learn of the reset and the user gets the notice even if this
/// process dies right after the commit (the relay publishes the event first: rows of one user
/// go out in order). The new password version, or `None` when the password changed since the
/// link was checked (another link, another device): the link belongs to the old password.
async fn commit(
    db: &sqlx::PgPool,
    change: &Change<'_>,
    user: &User,
    hash: &str,
) -> Result<Option<i32>, ApiError> {
    let Change { ctx, action, now } = *change;
    let user_id = user.id;
    let mut tx = db.begin().await?;
    let Some(new_version) =
        store::users::replace_password(&mut *tx, user_id, user.password_version, hash).await?
    else {
        return Ok(None);
    };
    shared::audit::record(
        &mut *tx,
        &AuditEvent {
            user_id: Some(user_id),
            ip: Some(ctx.ip),
            request_id: ctx.request_id(),
            ..AuditEvent::new(action, Outcome::Success)
        },
    )
    .await?;
    let event = json!({
        "user_id": user_id,
        "password_version": new_version,
        "occurred_at": now,
    });
    let topic = shared::topology::PASSWORD_RESET_EVENT;
    outbox::add_event(&mut tx, user_id, topic, &event).await?;
    let notice = Envelope::new(
        Job::PasswordChanged {
            user_id,
            email: user.email.clone(),
            ip: Some(ctx.ip.to_string()),
            password_version: new_version,
        },
        now,
        chrono::Duration::days(1),
        ctx.locale,
        ctx.trace.clone(),
    )
    .asked_in(&ctx.languages);
    outbox::add_job(&mut tx, Some(user_id), &notice).await?;
    // Its owner is here: the password-changed notice, and later mail, go out again.
    shared::suppression::remove(&mut *tx, &user.email_key).await?;
    tx.commit().await?;
    Ok(Some(new_version))
}

/// A signed-in owner's change of password (the current one already verified): the same
/// commit as a reset (its audit row, the `user.password_reset` event, the notice with the lock
/// link), every session revoked; the new password version, or `None` when the password
/// changed meanwhile.
pub async fn change_signed_in(
    state: &AppState,
    ctx: &RequestContext,
    user: &User,
    new_password: String,
) -> Result<Option<i32>, ApiError> {
    let hash = state.hasher.hash_for(ctx.ip, new_password).await?;
    let now = state.clock.now();
    let change = Change {
        ctx,
        action: Action::PasswordChange,
        now,
    };
    let Some(version) = commit(&state.db, &change, user, &hash).await? else {
        return Ok(None);
    };
    state.outbox.wake();
    if let Err(e) = state.sessions.revoke_all(user.id).await {
        tracing::warn!(error = %e, "session revocation failed; sessions die by password version");
    }
    metrics::counter!("password_changes_total").increment(1);
    Ok(Some(version))
}

/// Records one refused attempt of `action` (best effort; successes are recorded inside the
/// change's transaction).
pub(crate) async fn attempt(
    state: &AppState,
    ctx: &RequestContext,
    action: Action,
    outcome: Outcome,
    user: Option<Uuid>,
) {
    let event = AuditEvent {
        user_id: user,
        ip: Some(ctx.ip),
        request_id: ctx.request_id(),
        ..AuditEvent::new(action, outcome)
    };
    crate::audit::record(&state.db, &event).await;
}

/// Records a successful step that changes nothing by itself (the second step of a sign-in).
pub(crate) async fn attempt_succeeded(
    state: &AppState,
    ctx: &RequestContext,
    action: Action,
    user: Uuid,
) {
    attempt(state, ctx, action, Outcome::Success, Some(user)).await;
}
