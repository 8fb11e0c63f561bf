//! `POST /v1/password/forgot` and `POST /v1/password/reset`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use shared::{
    email,
    message::{Envelope, Job},
    token::Purpose,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use shared::audit::{Action, AuditEvent, Outcome};

use crate::{
    devices::Proven,
    error::{ApiError, ErrorBody},
    extract::{AppJson, ClientIp, Locale, RequestTrace},
    outbox, password_policy,
    reset_code::{self, CodeCheck},
    startup::AppState,
    store,
    tokens::{self, Rejected},
};

/// The one answer to every well-formed forgot-password request within the IP budget.
pub const FORGOT_ACCEPTED_MESSAGE: &str =
    "If an account exists for that address, a link to reset its password is on its way.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(reset_password))
        .routes(routes!(reset_password_with_code))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotRequest {
    /// The address to send a reset link to, if it has an account.
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
}

/// Queues a reset email without looking the address up.
///
/// Known, unknown and over-budget addresses take exactly the same path: count both budgets
/// in one Redis round trip, publish one confirmed job carrying the verdict, answer the same
/// 202. Only the worker learns whether the address has an account, so neither the answer
/// nor its timing can reveal it. The per-IP limit is the one visible refusal: it says
/// nothing about any address.
#[utoipa::path(post, path = "/v1/password/forgot", tag = "password", request_body = ForgotRequest,
    responses(
        (status = 202, description = "Byte-identical for known, unknown and over-budget addresses", body = crate::routes::Accepted),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `invalid_body`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the per-IP budget only)", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    AppJson(body): AppJson<ForgotRequest>,
) -> Result<Response, ApiError> {
    forgot(&state, ip, locale, trace, &body.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": FORGOT_ACCEPTED_MESSAGE })),
    )
        .into_response())
}

/// The forgot-password work shared by the JSON endpoint and the HTML form.
pub async fn forgot(
    state: &AppState,
    ip: std::net::IpAddr,
    locale: &str,
    trace: shared::message::Trace,
    email: &str,
) -> Result<(), ApiError> {
    let address = email::normalize(email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    let now = state.clock.now();
    let verdict = state.limiter.check_forgot(ip, address.key()).await?;
    if !verdict.ip.allowed {
        let address_hash = state.limiter.address_pseudonym(address.key());
        let request_id = trace.request_id.as_deref();
        crate::audit::rate_limited(state, &verdict.ip, ip, Some(&address_hash), request_id);
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
            ip: Some(ip.to_string()),
            within_budget: verdict.email.allowed,
        },
        now,
        chrono::Duration::from_std(state.config.reset_token_max_age)
            .unwrap_or(chrono::Duration::hours(1)),
        locale,
        trace,
    );
    state.publisher.publish_job(&job).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    /// The token from the reset link.
    #[schema(max_length = 4096)]
    pub token: String,
    /// At least 10 characters, at most 1024 bytes, not easy to guess.
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

/// Sets a new password through a reset link.
///
/// Order matters: every check that can fail without side effects runs before the burn, so a
/// refused password leaves the link usable; the burn is the single point where concurrent
/// submissions are decided; the password change, its audit row, the event and the notice
/// commit together (the outbox relays the last two with confirms).
#[utoipa::path(post, path = "/v1/password/reset", tag = "password", request_body = ResetRequest,
    responses(
        (status = 204, description = "Password changed; every session of the user is revoked; sets the device cookie"),
        (status = 400, description = "`token_invalid` (also a superseded link), `token_expired`, `token_used`, `malformed_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`weak_password`, `password_too_long`, `invalid_body`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    AppJson(body): AppJson<ResetRequest>,
) -> Result<Response, ApiError> {
    let proven = perform_reset(&state, ip, locale, trace, &body.token, body.new_password).await?;
    Ok(with_device(
        &state,
        &headers,
        &proven,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// `response` with the device cookie for the account `proven` (whoever just proved the
/// mailbox, or the password, on this browser is its owner).
pub fn with_device(
    state: &AppState,
    headers: &HeaderMap,
    proven: &Proven,
    mut response: Response,
) -> Response {
    let cookie = (state.devices).issue(headers, &proven.email_key, proven.password_version);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// The reset work shared by the JSON endpoint and the HTML form. The account, as it is now.
pub async fn perform_reset(
    state: &AppState,
    ip: std::net::IpAddr,
    locale: &str,
    trace: shared::message::Trace,
    token: &str,
    new_password: String,
) -> Result<Proven, ApiError> {
    let request_id = trace.request_id.clone();
    let (st, rid) = (state, request_id.as_deref());
    let audit =
        |outcome: Outcome, user: Option<uuid::Uuid>| audit_reset(st, ip, rid, outcome, user);
    let refuse = |rejected: Rejected| async move {
        // Infrastructure failures are not attempts of the client's; they are not audited.
        if rejected.reason != Outcome::Unavailable {
            audit_reset(st, ip, rid, rejected.reason, rejected.user).await;
        }
        rejected.error
    };

    tokens::within_token_budget(state, ip, rid).await?;
    if let Err(e) = password_policy::check_length(&new_password) {
        audit(Outcome::PasswordTooLong, None).await;
        return Err(e);
    }
    let now = state.clock.now();
    let (token, user) = match tokens::check_link(state, Purpose::PasswordReset, token).await {
        Ok(checked) => checked,
        Err(r) => return Err(refuse(r).await),
    };
    let user_id = user.id;
    if let Err(e) = password_policy::judge_new_password(&new_password, &user.email).await {
        audit(Outcome::WeakPassword, Some(user_id)).await;
        return Err(e);
    }
    if !state.tokens.burn(Purpose::PasswordReset, &token).await? {
        audit(Outcome::Used, Some(user_id)).await;
        return Err(ApiError::TokenUsed);
    }
    let change = Change {
        ip,
        locale,
        trace: &trace,
        action: Action::PasswordReset,
        now,
    };
    let Some(password_version) =
        finish_reset(state, &change, &user, token.fingerprint(), new_password).await?
    else {
        audit(Outcome::PasswordChanged, Some(user_id)).await;
        return Err(ApiError::TokenInvalid);
    };
    Ok(Proven {
        email_key: user.email_key,
        password_version,
    })
}

/// The request a password change comes from.
struct Change<'a> {
    ip: std::net::IpAddr,
    locale: &'a str,
    trace: &'a shared::message::Trace,
    /// How the change was authorised (a link or a code), for its audit row.
    action: Action,
    now: chrono::DateTime<chrono::Utc>,
}

/// The part of a reset after its link was burned: hash, commit (see [`commit_reset`]),
/// revoke the sessions. The new password version, or `None` when the password changed since
/// the link was checked; on an error the link is given back, so the person can simply retry.
async fn finish_reset(
    state: &AppState,
    change: &Change<'_>,
    user: &store::users::User,
    fingerprint: &str,
    new_password: String,
) -> Result<Option<i32>, ApiError> {
    let hash = state.hasher.hash_for(change.ip, new_password).await;
    let committed = match hash {
        Ok(hash) => commit_reset(state, change, user, &hash).await,
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeResetRequest {
    /// The address the reset email went to.
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
    /// The 8-digit code from the reset email; spaces and dashes are ignored.
    #[schema(max_length = 64, example = "1234 5678")]
    pub code: String,
    /// At least 10 characters, at most 1024 bytes, not easy to guess.
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

/// Sets a new password with the one-time code of a reset email (for resetting on another
/// device than the one the email was read on).
///
/// The code belongs to the email's link: using either kills the other, a newer email kills
/// both, and it expires with the link. Every failure of the code itself is the same
/// `400 code_invalid`, after the same work: a wrong code, a dead one (used, superseded, five
/// wrong codes), and an address without an account. The fifth wrong code kills the code (the
/// link still works). Codes have their own per-IP budget.
#[utoipa::path(post, path = "/v1/password/reset/code", tag = "password", request_body = CodeResetRequest,
    responses(
        (status = 204, description = "Password changed; every session of the user is revoked; sets the device cookie"),
        (status = 400, description = "`code_invalid` (wrong, used, superseded, expired, or no code for the address; the same answer for each), `malformed_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `weak_password`, `password_too_long`, `invalid_body`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the per-IP code budget)", body = ErrorBody),
        (status = 503, description = "`unavailable`; `code_entry_paused` (too many wrong codes over the whole site: links keep working), with `Retry-After`", body = ErrorBody),
    ))]
pub async fn reset_password_with_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    AppJson(body): AppJson<CodeResetRequest>,
) -> Result<Response, ApiError> {
    let CodeResetRequest {
        email,
        code,
        new_password,
    } = body;
    let proven = perform_code_reset(&state, ip, locale, trace, &email, &code, new_password).await?;
    Ok(with_device(
        &state,
        &headers,
        &proven,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The code reset shared by the JSON endpoint and the HTML form. Nothing about the address
/// is read from the database before the code matched (see [`crate::reset_code`]). The
/// account, as it is now.
pub async fn perform_code_reset(
    state: &AppState,
    ip: std::net::IpAddr,
    locale: &str,
    trace: shared::message::Trace,
    email: &str,
    code: &str,
    new_password: String,
) -> Result<Proven, ApiError> {
    let request_id = trace.request_id.clone();
    let (st, rid) = (state, request_id.as_deref());
    let audit = |outcome: Outcome, user: Option<uuid::Uuid>| {
        audit_attempt(st, Action::PasswordResetCode, ip, rid, outcome, user)
    };
    let refuse = |outcome: Outcome, user: uuid::Uuid| async move {
        metrics::counter!("tokens_rejected_total", "reason" => outcome.as_str()).increment(1);
        audit_attempt(st, Action::PasswordResetCode, ip, rid, outcome, Some(user)).await;
        ApiError::CodeInvalid
    };

    // The breaker first: it only reads, and a paused code entry spends nobody's budget.
    let breaker = reset_code::Breaker {
        limit: state.config.code_breaker_per_minute,
    };
    breaker.check(&state.redis, state.clock.now()).await?;
    tokens::within_code_budget(state, ip, rid).await?;
    if let Err(e) = password_policy::check_length(&new_password) {
        audit(Outcome::PasswordTooLong, None).await;
        return Err(e);
    }
    let address = email::normalize(email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    let checked = match shared::reset_code::normalize(code) {
        Some(code) => reset_code::check(state, address.key(), &code).await?,
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
                ip: Some(ip),
                request_id: rid,
                address_hash: Some(&address_hash),
                ..AuditEvent::new(Action::PasswordResetCode, reason)
            };
            crate::audit::record(state, &event).await;
            return Err(ApiError::CodeInvalid);
        }
    };
    let now = state.clock.now();
    if link.expired(state, now) {
        return Err(refuse(Outcome::Expired, link.user).await);
    }
    let Some(user) = store::users::by_id(&state.db, link.user).await? else {
        return Err(refuse(Outcome::UnknownUser, link.user).await);
    };
    if user.password_version != link.password_version {
        return Err(refuse(Outcome::PasswordChanged, user.id).await);
    }
    let purpose = Purpose::PasswordReset;
    let (generation, fingerprint) = (link.generation, &link.fingerprint);
    if let Some(reason) = (state.tokens)
        .link_is_dead(user.id, purpose, generation, fingerprint)
        .await?
    {
        return Err(refuse(reason, user.id).await);
    }
    if let Err(e) = password_policy::judge_new_password(&new_password, &user.email).await {
        audit(Outcome::WeakPassword, Some(user.id)).await;
        return Err(e);
    }
    if !state.tokens.burn_fingerprint(purpose, fingerprint).await? {
        return Err(refuse(Outcome::Used, user.id).await);
    }
    let change = Change {
        ip,
        locale,
        trace: &trace,
        action: Action::PasswordResetCode,
        now,
    };
    let Some(password_version) =
        finish_reset(state, &change, &user, fingerprint, new_password).await?
    else {
        return Err(refuse(Outcome::PasswordChanged, user.id).await);
    };
    link.kill(state).await;
    Ok(Proven {
        email_key: user.email_key,
        password_version,
    })
}

/// The change of a reset: the new hash, its audit row, the `user.password_reset` event, the
/// password-changed notice and the address off the suppression list commit together (the
/// outbox), so other services learn of the
/// reset and the user gets the notice even if this process dies right after the commit (the
/// relay publishes the event first: rows of one user go out in order). The new password
/// version, or `None` when the password changed since the link was checked (another link,
/// another device): the link belongs to the old password.
async fn commit_reset(
    state: &AppState,
    change: &Change<'_>,
    user: &store::users::User,
    hash: &str,
) -> Result<Option<i32>, ApiError> {
    let Change {
        ip,
        locale,
        trace,
        action,
        now,
    } = *change;
    let user_id = user.id;
    let mut tx = state.db.begin().await?;
    let Some(new_version) =
        store::users::replace_password(&mut *tx, user_id, user.password_version, hash).await?
    else {
        return Ok(None);
    };
    shared::audit::record(
        &mut *tx,
        &AuditEvent {
            user_id: Some(user_id),
            ip: Some(ip),
            request_id: trace.request_id.as_deref(),
            ..AuditEvent::new(action, Outcome::Success)
        },
    )
    .await?;
    let event = json!({
        "user_id": user_id,
        "password_version": new_version,
        "occurred_at": now,
    });
    outbox::add_event(
        &mut tx,
        user_id,
        shared::topology::PASSWORD_RESET_EVENT,
        &event,
    )
    .await?;
    let notice = Envelope::new(
        Job::PasswordChanged {
            user_id,
            email: user.email.clone(),
            ip: Some(ip.to_string()),
            password_version: new_version,
        },
        now,
        chrono::Duration::days(1),
        locale,
        trace.clone(),
    );
    outbox::add_job(&mut tx, Some(user_id), &notice).await?;
    // Its owner is here: the password-changed notice, and later mail, go out again.
    shared::suppression::remove(&mut *tx, &user.email_key).await?;
    tx.commit().await?;
    Ok(Some(new_version))
}

/// Checks a reset link without consuming it (the GET of the reset page; mail scanners open
/// links, so this must change nothing but the client's per-IP budget). Returns the error the
/// submission would get.
pub async fn inspect_reset_token(
    state: &AppState,
    ip: std::net::IpAddr,
    token: &str,
) -> Result<(), ApiError> {
    tokens::within_token_budget(state, ip, None).await?;
    tokens::check_link(state, Purpose::PasswordReset, token)
        .await
        .map(drop)
        .map_err(|r| r.error)
}

/// Records one reset attempt by link (best effort; successes are recorded inside the
/// password transaction).
async fn audit_reset(
    state: &AppState,
    ip: std::net::IpAddr,
    request_id: Option<&str>,
    outcome: Outcome,
    user: Option<uuid::Uuid>,
) {
    audit_attempt(state, Action::PasswordReset, ip, request_id, outcome, user).await;
}

/// Records one attempt of `action` (best effort).
async fn audit_attempt(
    state: &AppState,
    action: Action,
    ip: std::net::IpAddr,
    request_id: Option<&str>,
    outcome: Outcome,
    user: Option<uuid::Uuid>,
) {
    let event = AuditEvent {
        user_id: user,
        ip: Some(ip),
        request_id,
        ..AuditEvent::new(action, outcome)
    };
    crate::audit::record(state, &event).await;
}
