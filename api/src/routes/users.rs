//! `POST /v1/users`, `POST /v1/email/verify`, `GET /v1/me`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{
    email,
    message::{Envelope, Job},
    token::Purpose,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use shared::audit::{Action, AuditEvent, Outcome};

use crate::{
    devices::Proven,
    error::{ApiError, ErrorBody},
    extract::{AppJson, AuthUser, RequestContext},
    password_policy,
    rate_limit::{IpBudget, within_budget},
    state::AppState,
    store,
    tokens::Rejected,
};

/// The one answer to every valid sign-up, new address or taken.
pub const SIGN_UP_ACCEPTED_MESSAGE: &str =
    "Check your inbox: we have sent a message to that address with the next step.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(verify_email))
        .routes(routes!(show_me))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignUpRequest {
    /// The address; a confirmation link is sent to it.
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
    /// At least 10 characters, at most 1024 bytes, not easy to guess.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
}

/// Creates an account, or tells the owner of a taken address that someone tried.
///
/// Both outcomes hash the password and publish one job, and answer the same 202, so sign-up
/// cannot be used to test whether an address is registered. A job the broker did not
/// confirm leaves no account behind.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = SignUpRequest,
    responses(
        (status = 202, description = "Accepted; the same answer whether or not the address is taken", body = crate::routes::Accepted),
        (status = 422, description = "`invalid_email`, `weak_password`, `breached_password`, `password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (sign-ups per client IP)", body = ErrorBody),
    ))]
pub async fn sign_up(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(body): AppJson<SignUpRequest>,
) -> Result<Response, ApiError> {
    let ip = ctx.ip;
    let address =
        email::normalize(&body.email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    password_policy::check_length(&body.password)?;
    let now = state.clock.now();
    // Every sign-up costs a hash and sends an email to an address of the caller's choosing;
    // and the strength check costs milliseconds of CPU: the budget is counted before either,
    // so a client past it gets nothing computed.
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::SignUp, ip, ctx.request_id()).await?;
    password_policy::refuse_new_password(&state.breached, &body.password, address.address())
        .await
        .map_err(|(e, _)| e)?;
    let hash = state.hasher.hash_for(ip, body.password).await?;

    // The account (if the address is free), its audit row and the email job commit together;
    // the outbox relays the job once committed, so the worker always finds the new user.
    let address_hash =
        shared::keys::pseudonym(state.config.pseudonym_secret(), "email", address.key());
    // Its outcome (created or exists) is decided by the insert.
    let audit = AuditEvent {
        ip: Some(ip),
        address_hash: Some(&address_hash),
        request_id: ctx.request_id(),
        ..AuditEvent::new(Action::SignUp, Outcome::Created)
    };
    let email_job = |created: Option<uuid::Uuid>| {
        let (job, ttl) = match created {
            Some(user_id) => (
                Job::EmailVerification {
                    user_id,
                    email: address.address().to_owned(),
                    ip: Some(ip.to_string()),
                },
                state.config.verify_token_max_age,
            ),
            None => (
                Job::AccountExistsNotice {
                    email: address.address().to_owned(),
                    ip: Some(ip.to_string()),
                },
                std::time::Duration::from_secs(86_400),
            ),
        };
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        Envelope::new(job, now, ttl, ctx.locale, ctx.trace.clone()).asked_in(&ctx.languages)
    };
    store::users::sign_up(
        &state.db,
        address.address(),
        address.key(),
        &hash,
        &ctx.languages,
        audit,
        email_job,
    )
    .await?;
    state.outbox.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": SIGN_UP_ACCEPTED_MESSAGE })),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The token from the verification link.
    #[schema(max_length = 4096)]
    pub token: String,
    /// The password chosen at sign-up.
    #[schema(max_length = 1024)]
    pub password: String,
}

/// Confirms an address through its verification link and the account's password.
///
/// The link proves the mailbox; the password proves that the person who holds the mailbox is
/// the one who chose it. Without the second, anyone could sign up a victim's address with a
/// password of their own and wait for the victim to confirm it for them. The mailbox owner
/// who did not sign up recovers the account with forgot-password instead (a reset verifies
/// the address, replaces the password and ends every session).
#[utoipa::path(post, path = "/v1/email/verify", tag = "users", request_body = VerifyRequest,
    responses(
        (status = 204, description = "Address verified; sessions from before verification are ended; sets the device cookie"),
        (status = 400, description = "`token_invalid`, `token_expired`, `token_used`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: not the account's password (the link stays usable)", body = ErrorBody),
        (status = 422, description = "`password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip` (link endpoints per client IP) or `rate_limited_login` (password checks for this account), with `Retry-After`", body = ErrorBody),
    ))]
pub async fn verify_email(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let proven = verify(&state, &ctx, &headers, &body.token, body.password).await?;
    let done = StatusCode::NO_CONTENT.into_response();
    Ok(crate::routes::with_device(&state, &headers, &proven, done))
}

/// The verification work shared by the JSON endpoint and the HTML page. The account, as it
/// is now.
pub async fn verify(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    token: &str,
    password: String,
) -> Result<Proven, ApiError> {
    let (ip, request_id) = (ctx.ip, ctx.request_id());
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::Link, ip, request_id).await?;
    password_policy::check_length(&password)?;
    let outcome = verify_link(state, ip, headers, request_id, token, password).await;
    let (result, outcome, user) = match outcome {
        Ok((user, proven)) => (Ok(proven), Outcome::Success, Some(user)),
        Err(r) => (Err(r.error), r.reason, r.user),
    };
    if !matches!(result, Err(ApiError::Unavailable(_))) {
        let event = AuditEvent {
            user_id: user,
            ip: Some(ip),
            request_id,
            ..AuditEvent::new(Action::EmailVerify, outcome)
        };
        crate::audit::record(&state.db, &event).await;
    }
    result
}

/// The checks and the change of a verification: the link, then the account's password (on
/// the sign-in budgets), the burn, the verified mark (and the end of every session opened
/// before it). The verified account's id, or why not.
async fn verify_link(
    state: &AppState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    request_id: Option<&str>,
    token: &str,
    password: String,
) -> Result<(Uuid, Proven), Rejected> {
    let now = state.clock.now();
    let (token, user) = (state.tokens)
        .check_link(&state.db, Purpose::EmailVerify, token, now)
        .await?;
    let stored = store::users::credentials_by_id(&state.db, user.id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| Rejected::unknown_user(user.id))?;
    // A password check like a sign-in's, so it draws on the same budgets: a leaked link
    // is no way around the per-address limit on guessing the account's password.
    let email_key = email::normalize(&user.email)
        .map_or_else(|_| user.email.to_lowercase(), |a| a.key().to_owned());
    // A browser recognised for this account under its current password (see
    // `crate::devices`) has its own budget here as at sign-in.
    let device = (state.devices)
        .recognise(headers, &email_key)
        .filter(|d| d.password_version == stored.password_version);
    let device_id = device.as_ref().map(|d| d.id.as_str());
    let (verdict, attempt) = (state.limiter)
        .check_login(ip, &email_key, device_id)
        .await?;
    if !verdict.allowed {
        let pseudonym = state.limiter.address_pseudonym(&email_key);
        (state.refusals).refused(&verdict, ip, Some(&pseudonym), request_id);
        return Err(Rejected::rate_limited_login(
            user.id,
            verdict.retry_after_secs,
        ));
    }
    let hash = stored.password_hash;
    let matches = state
        .hasher
        .verify_for(ip, password.clone(), Some(hash.clone()))
        .await?;
    if !matches {
        return Err(Rejected::wrong_password(user.id));
    }
    state.limiter.forgive(attempt).await;
    if !state.tokens.burn(Purpose::EmailVerify, &token).await? {
        return Err(Rejected::used(user.id));
    }
    let newly_verified = match store::users::mark_verified(&state.db, user.id).await {
        Ok(changed) => changed,
        Err(e) => {
            state.tokens.unburn(&token).await;
            return Err(ApiError::from(e).into());
        }
    };
    if newly_verified {
        // Sessions opened while the address was unverified (possible before sign-in
        // required verification) end here: whoever opened them proved nothing about the
        // mailbox. If they cannot be ended now, the verification is undone and the link
        // given back, so the person simply retries: no such session may outlive it.
        if let Err(e) = state.sessions.revoke_all(user.id).await {
            if let Err(undo) = store::users::mark_unverified(&state.db, user.id).await {
                tracing::error!(error = %undo, "could not undo a verification whose sessions could not be ended");
            }
            state.tokens.unburn(&token).await;
            return Err(e.into());
        }
    }
    if state.hasher.needs_rehash(&hash)
        && let Ok(new_hash) = state.hasher.hash_for(ip, password).await
        && let Err(e) = store::users::replace_hash(&state.db, user.id, &hash, &new_hash).await
    {
        tracing::warn!(error = %e, "could not rehash a password with old parameters");
    }
    let proven = Proven {
        email_key,
        password_version: stored.password_version,
    };
    Ok((user.id, proven))
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
}

/// `GET /v1/me`.
#[utoipa::path(get, path = "/v1/me", tag = "sessions", security(("session" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = Me),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn show_me(auth: AuthUser) -> Json<Me> {
    Json(Me {
        id: auth.user.id,
        email: auth.user.email,
        email_verified: auth.user.email_verified,
    })
}
