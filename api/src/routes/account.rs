//! `POST /v1/account/lock`: the "this wasn't me" link of the password-changed notice
//! (see [`crate::lock`]).

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, AuthUser, RequestContext},
    lock, password_policy,
    state::AppState,
    store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lock_account))
        .routes(routes!(change_password))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LockRequest {
    /// The token from the "this wasn't me" link.
    #[schema(max_length = 4096)]
    pub token: String,
    /// The account's address, typed by the person (the lock page asks for it, so a mail
    /// scanner that follows the link and submits its form cannot lock anyone). When given it
    /// must be the address the link was sent to.
    #[serde(default)]
    #[schema(format = "email", max_length = 254)]
    pub email: Option<String>,
}

/// Locks the account of a "this wasn't me" link (valid 7 days, once).
///
/// Every session is revoked and the password version bumped (so every older link dies too);
/// sign-in is refused with the ordinary `401 invalid_credentials` until a reset; the owner
/// gets a fresh reset email, the way back in. Publishes `user.account_locked`.
#[utoipa::path(post, path = "/v1/account/lock", tag = "account", request_body = LockRequest,
    responses(
        (status = 204, description = "Locked; a reset email is on its way to the owner"),
        (status = 400, description = "`token_invalid` (also a superseded link, or one older than the current password), `token_expired`, `token_used`", body = ErrorBody),
        (status = 422, description = "`address_mismatch`: `email` is not the address the link was sent to (the link stays usable)", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the link endpoints' per-IP budget)", body = ErrorBody),
    ))]
pub async fn lock_account(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(body): AppJson<LockRequest>,
) -> Result<StatusCode, ApiError> {
    lock::with_link(&state, &ctx, &body.token, body.email.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    /// The password the account has now.
    #[schema(max_length = 1024)]
    pub current_password: String,
    #[schema(max_length = 1024)]
    pub new_password: String,
    /// A code of the authenticator app, when the account has one.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub totp_code: Option<String>,
    /// One of the recovery codes, instead of `totp_code`.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
    /// A passkey's answer to `POST /v1/mfa/passkeys/factor-options`, instead of a code.
    #[serde(default)]
    pub passkey: Option<crate::mfa::PasskeyAnswer>,
}

/// Changes the password of the signed-in account.
///
/// With a second factor, a code of the app or a recovery code is needed too. The current
/// password is checked (a wrong one draws on the sign-in budgets of the address
/// and the client, as a wrong sign-in does), then the new one against the policy and the
/// breached-password corpus. Every session ends, this one too: the answer carries a new
/// session for this browser (and its cookies), as a sign-in does. The owner gets the
/// password-changed notice with its "this wasn't me" link; `user.password_reset` is published.
#[utoipa::path(post, path = "/v1/account/password", tag = "account", request_body = ChangePasswordRequest,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 201, description = "Changed; a new session for this browser", body = crate::routes::sessions::SessionCreated),
        (status = 401, description = "`unauthorized` (no live session), `invalid_credentials` (the current password is wrong) or `invalid_code` (a wrong, reused or spent code)", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the account has a second factor and no code was given", body = ErrorBody),
        (status = 409, description = "`account_changed`: the password changed meanwhile (another device)", body = ErrorBody),
        (status = 422, description = "`weak_password`, `breached_password`, `password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: axum::http::HeaderMap,
    auth: AuthUser,
    AppJson(body): AppJson<ChangePasswordRequest>,
) -> Result<axum::response::Response, ApiError> {
    use shared::audit::{Action, Outcome};
    let user = &auth.user;
    password_policy::check_length(&body.new_password)?;
    let proof = crate::mfa::Proof::of(&body.totp_code, &body.recovery_code, &body.passkey);
    let action = Action::PasswordChange;
    let proof = crate::mfa::required(&state, &ctx, user, action, proof).await?;
    let credentials = confirm_password(&state, &ctx, user, &body.current_password, action).await?;
    let audit = |outcome: Outcome| {
        crate::recovery::attempt(&state, &ctx, Action::PasswordChange, outcome, Some(user.id))
    };
    let (breached, new_password) = (&state.breached, &body.new_password);
    let checked = password_policy::refuse_new_password(breached, new_password, &user.email).await;
    if let Err((e, outcome)) = checked {
        if let Some(outcome) = outcome {
            audit(outcome).await;
        }
        return Err(e);
    }
    // Last of the checks: a code is spent when it is right, so a refused password must not
    // cost the person one.
    if let Some(proof) = &proof {
        crate::mfa::prove(&state, &ctx, user, action, proof).await?;
    }
    let Some(version) =
        crate::recovery::change_signed_in(&state, &ctx, user, body.new_password).await?
    else {
        return Err(ApiError::AccountChanged);
    };
    let changed = store::users::Credentials {
        password_version: version,
        ..credentials
    };
    let now = state.clock.now();
    let account = crate::routes::sessions::SignedIn {
        credentials: &changed,
        email: &user.email,
        email_key: &user.email_key,
        new_device_notice: false,
    };
    crate::routes::sessions::signed_in(&state, &ctx, &headers, &account, now).await
}

/// Checks the signed-in owner's current password on the sign-in budgets of the address and
/// the client (a wrong one is a failed sign-in, audited under `action` and answered `401
/// invalid_credentials`); the account's credentials.
pub(crate) async fn confirm_password(
    state: &AppState,
    ctx: &RequestContext,
    user: &store::users::User,
    password: &str,
    action: shared::audit::Action,
) -> Result<store::users::Credentials, ApiError> {
    password_policy::check_length(password)?;
    let address_hash = state.limiter.address_pseudonym(&user.email_key);
    let budgets = crate::routes::sessions::LoginBudgets {
        ip: ctx.ip,
        email_key: &user.email_key,
        address_hash: &address_hash,
        device: None,
    };
    let rid = ctx.request_id();
    let attempt = crate::routes::sessions::within_login_budgets(state, &budgets, rid).await?;
    let Some(credentials) = store::users::credentials_by_id(&state.db, user.id).await? else {
        return Err(ApiError::Unauthorized);
    };
    let stored = Some(credentials.password_hash.clone());
    if !state
        .hasher
        .verify_for(ctx.ip, password.to_owned(), stored)
        .await?
    {
        let outcome = shared::audit::Outcome::InvalidCredentials;
        crate::recovery::attempt(state, ctx, action, outcome, Some(user.id)).await;
        return Err(ApiError::InvalidCredentials);
    }
    state.limiter.forgive(attempt).await;
    Ok(credentials)
}
