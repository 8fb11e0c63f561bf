//! `POST /v1/password/forgot`, `POST /v1/password/reset` and `POST /v1/password/reset/code`:
//! HTTP in and out of [`crate::recovery`].

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, RequestContext},
    recovery,
    routes::with_device,
    state::AppState,
};

/// The one answer to every well-formed forgot-password request within the IP budget.
pub const FORGOT_ACCEPTED_MESSAGE: &str =
    "If an account exists for that address, a link to reset its password is on its way.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(reset_password))
        .routes(routes!(reset_password_with_code))
        .routes(routes!(reset_passkey_options))
        .routes(routes!(code_reset_passkey_options))
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
        (status = 422, description = "`invalid_email`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the per-IP budget only)", body = ErrorBody),
    ))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(body): AppJson<ForgotRequest>,
) -> Result<Response, ApiError> {
    recovery::forgot(&state, &ctx, &body.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": FORGOT_ACCEPTED_MESSAGE })),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    /// The token from the reset link.
    #[schema(max_length = 4096)]
    pub token: String,
    /// At least 10 characters, at most 1024 bytes, not easy to guess.
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
    /// A code of the authenticator app, when the account has one.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub totp_code: Option<String>,
    /// One of the recovery codes, instead of `totp_code` (it is spent; the owner is told).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
    /// A passkey's answer to the options of `POST /v1/password/reset/passkey-options`.
    #[serde(default)]
    pub passkey: Option<crate::mfa::PasskeyAnswer>,
}

impl ResetRequest {
    fn factor(&mut self) -> Option<crate::mfa::Proof> {
        if let Some(answer) = self.passkey.take() {
            return Some(crate::mfa::Proof::Passkey(Box::new(answer)));
        }
        crate::mfa::Proof::from_fields(self.totp_code.as_deref(), self.recovery_code.as_deref())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenOnly {
    /// The token from the reset link.
    #[schema(max_length = 4096)]
    pub token: String,
}

/// Options to prove the second factor of a reset link's account with one of its passkeys,
/// for `POST /v1/password/reset` with `passkey`. Checks the link as its page does (nothing
/// changes; the link's per-IP budget).
#[utoipa::path(post, path = "/v1/password/reset/passkey-options", tag = "password", request_body = TokenOnly,
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = crate::mfa::passkeys::Ceremony),
        (status = 400, description = "`token_invalid`, `token_expired`, `token_used`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`: the account has no passkey", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn reset_passkey_options(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(body): AppJson<TokenOnly>,
) -> Result<Json<crate::mfa::passkeys::Ceremony>, ApiError> {
    let purpose = shared::token::Purpose::PasswordReset;
    let user = recovery::inspect_link(&state, ctx.ip, purpose, &body.token).await?;
    let ceremony = crate::routes::sessions::passkey_factor_options(&state, user.id).await?;
    Ok(Json(ceremony))
}

/// Sets a new password through a reset link.
///
/// Order matters: every check that can fail without side effects runs before the burn, so a
/// refused password leaves the link usable; the burn is the single point where concurrent
/// submissions are decided; the password change, its audit row, the event and the notice
/// commit together (the outbox relays the last two with confirms). A link proves the mailbox
/// only: an account with a second factor also needs `totp_code` or `recovery_code`.
#[utoipa::path(post, path = "/v1/password/reset", tag = "password", request_body = ResetRequest,
    responses(
        (status = 204, description = "Password changed; every session of the user is revoked; sets the device cookie"),
        (status = 400, description = "`token_invalid` (also a superseded link), `token_expired`, `token_used`", body = ErrorBody),
        (status = 401, description = "`invalid_code`: a wrong, reused or spent second-factor code (nothing changed; the link stays usable)", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the account has a second factor and no code was given (nothing changed; the link stays usable)", body = ErrorBody),
        (status = 422, description = "`weak_password`, `breached_password`, `password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the link endpoints' per-IP budget); `rate_limited_login` when a second factor's code is checked (its codes draw on the sign-in budgets)", body = ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(mut body): AppJson<ResetRequest>,
) -> Result<Response, ApiError> {
    let factor = body.factor();
    let proven =
        recovery::reset_with_link(&state, &ctx, &body.token, body.new_password, factor).await?;
    let done = StatusCode::NO_CONTENT.into_response();
    Ok(with_device(&state, &headers, &proven, done))
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
    /// A code of the authenticator app, when the account has one.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub totp_code: Option<String>,
    /// One of the recovery codes, instead of `totp_code` (it is spent; the owner is told).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
    /// A passkey's answer to the options of `POST /v1/password/reset/code/passkey-options`.
    #[serde(default)]
    pub passkey: Option<crate::mfa::PasskeyAnswer>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailAndCode {
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
    /// The 8-digit code from the reset email.
    #[schema(max_length = 64, example = "1234 5678")]
    pub code: String,
}

/// Options to prove the second factor of a reset code's account with one of its passkeys,
/// for `POST /v1/password/reset/code` with `passkey`. The code is checked as a reset checks
/// it (a wrong one is counted and answered `code_invalid` alike for every address); nothing
/// is spent.
#[utoipa::path(post, path = "/v1/password/reset/code/passkey-options", tag = "password", request_body = EmailAndCode,
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = crate::mfa::passkeys::Ceremony),
        (status = 400, description = "`code_invalid`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`: the account has no passkey", body = ErrorBody),
        (status = 422, description = "`invalid_email`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After`", body = ErrorBody),
        (status = 503, description = "`code_entry_paused`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn code_reset_passkey_options(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(body): AppJson<EmailAndCode>,
) -> Result<Json<crate::mfa::passkeys::Ceremony>, ApiError> {
    let (_, user) = recovery::code_account(&state, &ctx, &body.email, &body.code).await?;
    let ceremony = crate::routes::sessions::passkey_factor_options(&state, user.id).await?;
    Ok(Json(ceremony))
}

/// Sets a new password with the one-time code of a reset email (for resetting on another
/// device than the one the email was read on).
///
/// The code belongs to the email's link: using either kills the other, a newer email kills
/// both, and it expires with the link. Every failure of the code itself is the same
/// `400 code_invalid`, after the same work: a wrong code, a dead one (used, superseded, five
/// wrong codes), and an address without an account. The fifth wrong code kills the code (the
/// link still works). Codes have their own per-IP budget. An account with a second factor
/// also needs `totp_code` or `recovery_code`.
#[utoipa::path(post, path = "/v1/password/reset/code", tag = "password", request_body = CodeResetRequest,
    responses(
        (status = 204, description = "Password changed; every session of the user is revoked; sets the device cookie"),
        (status = 400, description = "`code_invalid` (wrong, used, superseded, expired, or no code for the address; the same answer for each)", body = ErrorBody),
        (status = 401, description = "`invalid_code`: a wrong, reused or spent second-factor code (nothing changed; the email's code stays usable)", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the account has a second factor and no code was given (nothing changed; the email's code stays usable)", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `weak_password`, `breached_password`, `password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the per-IP code budget); `rate_limited_login` when a second factor's code is checked (its codes draw on the sign-in budgets)", body = ErrorBody),
        (status = 503, description = "`code_entry_paused` (too many wrong codes over the whole site: links keep working), with `Retry-After`", body = ErrorBody),
    ))]
pub async fn reset_password_with_code(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<CodeResetRequest>,
) -> Result<Response, ApiError> {
    let CodeResetRequest {
        email,
        code,
        new_password,
        totp_code,
        recovery_code,
        passkey,
    } = body;
    let factor = match passkey {
        Some(answer) => Some(crate::mfa::Proof::Passkey(Box::new(answer))),
        None => crate::mfa::Proof::from_fields(totp_code.as_deref(), recovery_code.as_deref()),
    };
    let proven =
        recovery::reset_with_code(&state, &ctx, &email, &code, new_password, factor).await?;
    let done = StatusCode::NO_CONTENT.into_response();
    Ok(with_device(&state, &headers, &proven, done))
}
