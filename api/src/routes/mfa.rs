//! `/v1/mfa`: the signed-in owner's second factors (see [`crate::mfa`]).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use shared::audit::Action;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, AuthUser, RequestContext},
    mfa::{self, Proof},
    routes::account::confirm_password,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(begin_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(replace_recovery_codes))
}

/// The account's second factors.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatus {
    /// An authenticator app is set up (and confirmed).
    pub totp: bool,
    /// Unspent recovery codes.
    pub recovery_codes_left: i64,
}

/// What second factors the signed-in account has.
#[utoipa::path(get, path = "/v1/mfa", tag = "mfa", security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The account's factors", body = MfaStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<MfaStatus>, ApiError> {
    let enrolment = mfa::enrolment(&state, auth.user.id).await?;
    Ok(Json(MfaStatus {
        totp: enrolment.totp,
        recovery_codes_left: enrolment.recovery_codes_left,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordOnly {
    /// The account's current password.
    #[schema(max_length = 1024)]
    pub password: String,
}

/// A new authenticator-app secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32, for typing into the app.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub otpauth_uri: String,
}

/// Starts setting up an authenticator app (or starts over, while none is confirmed). The
/// current password is needed: a session alone (a borrowed laptop) must not be able to tie
/// the account to someone else's phone. Nothing is protected until the first code confirms
/// it (`POST /v1/mfa/totp/confirm`).
#[utoipa::path(post, path = "/v1/mfa/totp", tag = "mfa", request_body = PasswordOnly,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The secret, to show once as a QR code and as text", body = TotpEnrolment),
        (status = 401, description = "`unauthorized` or `invalid_credentials` (the password is wrong; it counts like a wrong sign-in)", body = ErrorBody),
        (status = 403, description = "`mfa_enrolment_off`: second factors cannot be set up yet (`MFA_ENROLMENT=off`)", body = ErrorBody),
        (status = 409, description = "`mfa_already_enabled`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn begin_totp(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<PasswordOnly>,
) -> Result<Response, ApiError> {
    let user = &auth.user;
    confirm_password(&state, &ctx, user, &body.password, Action::MfaEnrol).await?;
    let enrolling = mfa::begin_totp(&state, user).await?;
    let body = TotpEnrolment {
        secret: enrolling.secret,
        otpauth_uri: enrolling.uri,
    };
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmTotpRequest {
    /// The app's current code.
    #[schema(max_length = 64, example = "123456")]
    pub code: String,
}

/// The recovery codes of a set, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes (`abcd-efgh-jkmn-pqrs`): each signs in or resets once in place
    /// of the app's code.
    pub recovery_codes: Vec<String>,
}

/// Confirms the app with its first code: from now on the account asks for a code at sign-in
/// and at a reset. Answers the ten recovery codes (shown once; a notice goes to the owner).
#[utoipa::path(post, path = "/v1/mfa/totp/confirm", tag = "mfa", request_body = ConfirmTotpRequest,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Confirmed; the recovery codes", body = RecoveryCodes),
        (status = 401, description = "`unauthorized` or `invalid_code`", body = ErrorBody),
        (status = 403, description = "`mfa_enrolment_off`", body = ErrorBody),
        (status = 409, description = "`mfa_already_enabled` or `no_pending_enrolment`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<ConfirmTotpRequest>,
) -> Result<Response, ApiError> {
    let recovery_codes = mfa::confirm_totp(&state, &ctx, &auth.user, &body.code).await?;
    let body = RecoveryCodes { recovery_codes };
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProvenRequest {
    /// The account's current password.
    #[schema(max_length = 1024)]
    pub password: String,
    /// A code of the authenticator app.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub code: Option<String>,
    /// One of the recovery codes, instead of `code` (it is spent).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
}

impl ProvenRequest {
    /// The password, then the factor: both must be right.
    async fn check(
        &self,
        state: &AppState,
        ctx: &RequestContext,
        auth: &AuthUser,
        action: Action,
    ) -> Result<(), ApiError> {
        let proof = Proof::from_fields(self.code.as_deref(), self.recovery_code.as_deref())
            .ok_or_else(|| ApiError::InvalidBody("give `code` or `recovery_code`".into()))?;
        let user = &auth.user;
        confirm_password(state, ctx, user, &self.password, action).await?;
        if !mfa::enrolment(state, user.id).await?.has_factor() {
            return Err(ApiError::MfaNotEnabled);
        }
        mfa::prove(state, ctx, user, action, &proof).await?;
        Ok(())
    }
}

/// Removes the authenticator app and the recovery codes, with the password and a code (or a
/// recovery code). The owner gets a notice.
#[utoipa::path(delete, path = "/v1/mfa/totp", tag = "mfa", request_body = ProvenRequest,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`, `invalid_credentials` or `invalid_code`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither `code` nor `recovery_code`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn remove_totp(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<ProvenRequest>,
) -> Result<StatusCode, ApiError> {
    body.check(&state, &ctx, &auth, Action::MfaRemove).await?;
    mfa::remove_totp(&state, &ctx, &auth.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new set of ten recovery codes, with the password and a code; the old set stops
/// working. The owner gets a notice.
#[utoipa::path(post, path = "/v1/mfa/recovery-codes", tag = "mfa", request_body = ProvenRequest,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The new codes, shown once", body = RecoveryCodes),
        (status = 401, description = "`unauthorized`, `invalid_credentials` or `invalid_code`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither `code` nor `recovery_code`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn replace_recovery_codes(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<ProvenRequest>,
) -> Result<Response, ApiError> {
    let action = Action::RecoveryCodesReplace;
    body.check(&state, &ctx, &auth, action).await?;
    let recovery_codes = mfa::replace_recovery_codes(&state, &ctx, &auth.user).await?;
    let body = RecoveryCodes { recovery_codes };
    Ok(Json(body).into_response())
}
