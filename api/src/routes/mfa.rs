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
    mfa,
    routes::account::confirm_password,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(begin_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(replace_recovery_codes))
        .routes(routes!(passkey_options))
        .routes(routes!(register_passkey))
        .routes(routes!(remove_passkey))
        .routes(routes!(own_passkey_options))
}

/// The account's second factors.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatus {
    /// An authenticator app is set up (and confirmed).
    pub totp: bool,
    /// The account's passkeys, oldest first.
    pub passkeys: Vec<PasskeyInfo>,
    /// Unspent recovery codes.
    pub recovery_codes_left: i64,
}

/// A passkey as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyInfo {
    /// Its credential id (base64url): its name in `DELETE /v1/mfa/passkeys/{id}`.
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Suspended by a lock: it proves nothing until removed (and added again, if it is yours).
    pub suspended: bool,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
    let passkeys = crate::store::factors::passkeys(&state.db, auth.user.id).await?;
    let passkeys = passkeys
        .into_iter()
        .map(|p| PasskeyInfo {
            id: b64(&p.credential_id),
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
            suspended: p.suspended,
        })
        .collect();
    Ok(Json(MfaStatus {
        totp: enrolment.totp,
        passkeys,
        recovery_codes_left: enrolment.recovery_codes_left,
    }))
}

/// The current password and a proof of the account's factor: required to remove a factor or
/// replace the recovery codes; to add a factor, required when the account has one (a new
/// factor must not be easier to get than the ones it has: a passkey signs in alone).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordAndFactor {
    /// The account's current password.
    #[schema(max_length = 1024)]
    pub password: String,
    /// A code of the authenticator app, …
    #[serde(default)]
    #[schema(max_length = 64)]
    pub code: Option<String>,
    /// … or one of the recovery codes (it is spent), …
    #[serde(default)]
    #[schema(max_length = 64)]
    pub recovery_code: Option<String>,
    /// … or a passkey's answer to `POST /v1/mfa/passkeys/factor-options`.
    #[serde(default)]
    pub passkey: Option<mfa::PasskeyAnswer>,
}

impl PasswordAndFactor {
    /// The password, then, when the account has a factor, a proof of it (`403
    /// mfa_required` without one).
    async fn check_to_add(
        &self,
        state: &AppState,
        ctx: &RequestContext,
        user: &crate::store::users::User,
    ) -> Result<(), ApiError> {
        let action = Action::MfaEnrol;
        let proof = mfa::Proof::of(&self.code, &self.recovery_code, &self.passkey);
        let proof = mfa::required(state, ctx, user, action, proof).await?;
        confirm_password(state, ctx, user, &self.password, action).await?;
        if let Some(proof) = &proof {
            mfa::prove(state, ctx, user, action, proof).await?;
        }
        Ok(())
    }
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
#[utoipa::path(post, path = "/v1/mfa/totp", tag = "mfa", request_body = PasswordAndFactor,
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
    AppJson(body): AppJson<PasswordAndFactor>,
) -> Result<Response, ApiError> {
    let user = &auth.user;
    if !state.config.mfa_enrolment {
        return Err(ApiError::MfaEnrolmentOff);
    }
    if mfa::enrolment(&state, user.id).await?.totp {
        return Err(ApiError::MfaAlreadyEnabled);
    }
    body.check_to_add(&state, &ctx, user).await?;
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

impl PasswordAndFactor {
    /// The password, then the factor: both must be right.
    async fn check(
        &self,
        state: &AppState,
        ctx: &RequestContext,
        auth: &AuthUser,
        action: Action,
    ) -> Result<(), ApiError> {
        let proof =
            mfa::Proof::of(&self.code, &self.recovery_code, &self.passkey).ok_or_else(|| {
                ApiError::InvalidBody("give `code`, `recovery_code` or `passkey`".into())
            })?;
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
#[utoipa::path(delete, path = "/v1/mfa/totp", tag = "mfa", request_body = PasswordAndFactor,
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
    AppJson(body): AppJson<PasswordAndFactor>,
) -> Result<StatusCode, ApiError> {
    body.check(&state, &ctx, &auth, Action::MfaRemove).await?;
    mfa::remove_totp(&state, &ctx, &auth.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new set of ten recovery codes, with the password and a code; the old set stops
/// working. The owner gets a notice.
#[utoipa::path(post, path = "/v1/mfa/recovery-codes", tag = "mfa", request_body = PasswordAndFactor,
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
    AppJson(body): AppJson<PasswordAndFactor>,
) -> Result<Response, ApiError> {
    let action = Action::RecoveryCodesReplace;
    body.check(&state, &ctx, &auth, action).await?;
    let recovery_codes = mfa::replace_recovery_codes(&state, &ctx, &auth.user).await?;
    let body = RecoveryCodes { recovery_codes };
    Ok(Json(body).into_response())
}

/// Starts registering a passkey (with the current password, as an app is set up): the
/// options for `navigator.credentials.create` and the ceremony's id (5 minutes, one answer).
#[utoipa::path(post, path = "/v1/mfa/passkeys/options", tag = "mfa", request_body = PasswordAndFactor,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = mfa::passkeys::Ceremony),
        (status = 401, description = "`unauthorized` or `invalid_credentials`", body = ErrorBody),
        (status = 403, description = "`mfa_enrolment_off`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn passkey_options(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<PasswordAndFactor>,
) -> Result<Json<mfa::passkeys::Ceremony>, ApiError> {
    let user = &auth.user;
    if !state.config.mfa_enrolment {
        return Err(ApiError::MfaEnrolmentOff);
    }
    body.check_to_add(&state, &ctx, user).await?;
    let rows = crate::store::factors::passkeys(&state.db, user.id).await?;
    let existing = rows
        .iter()
        .map(mfa::passkeys::read)
        .collect::<Result<Vec<_>, _>>()?;
    let ceremony = (state.passkeys)
        .registration(user.id, &user.email, &existing)
        .await?;
    Ok(Json(ceremony))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterPasskeyRequest {
    /// The id of the ceremony the options came with.
    #[schema(max_length = 64)]
    pub ceremony_id: String,
    /// What `navigator.credentials.create` gave (binary values in base64url).
    #[schema(value_type = Object)]
    pub credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
    /// What to call it (`MacBook`, `Phone`); at most 64 characters.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub name: Option<String>,
}

/// A passkey registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyRegistered {
    pub id: String,
    pub name: String,
    /// Ten recovery codes, when the account had none (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// Registers the passkey of a ceremony's answer: from now on the account asks for a second
/// factor at sign-in and at a reset, and the passkey alone signs in. A notice goes to the owner.
#[utoipa::path(post, path = "/v1/mfa/passkeys", tag = "mfa", request_body = RegisterPasskeyRequest,
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyRegistered),
        (status = 401, description = "`unauthorized` or `passkey_invalid` (the answer does not verify, came too late, or twice)", body = ErrorBody),
        (status = 403, description = "`mfa_enrolment_off`", body = ErrorBody),
    ))]
pub async fn register_passkey(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    AppJson(body): AppJson<RegisterPasskeyRequest>,
) -> Result<Response, ApiError> {
    let name: String = body
        .name
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let name = match name.trim() {
        "" => "Passkey".to_owned(),
        name => name.to_owned(),
    };
    let (id, recovery_codes) = mfa::register_passkey(
        &state,
        &ctx,
        &auth.user,
        &body.ceremony_id,
        &body.credential,
        &name,
    )
    .await?;
    let body = PasskeyRegistered {
        id: b64(&id),
        name,
        recovery_codes,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Removes one of the account's passkeys, with the password and a code (of the app, or a
/// recovery code). A notice goes to the owner.
#[utoipa::path(delete, path = "/v1/mfa/passkeys/{id}", tag = "mfa", request_body = PasswordAndFactor,
    security(("session" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "The passkey's `id` from `GET /v1/mfa`")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`, `invalid_credentials` or `invalid_code`", body = ErrorBody),
        (status = 404, description = "`not_found`: no passkey of this account has that id", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither `code` nor `recovery_code`", body = ErrorBody),
    ))]
pub async fn remove_passkey(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    AppJson(body): AppJson<PasswordAndFactor>,
) -> Result<StatusCode, ApiError> {
    use base64::Engine as _;
    let credential_id = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id.as_bytes())
        .map_err(|_| ApiError::NotFound)?;
    // Its own passkey, before a code is spent on it.
    let found = crate::store::factors::passkey(&state.db, &credential_id).await?;
    if found.is_none_or(|p| p.user_id != auth.user.id) {
        return Err(ApiError::NotFound);
    }
    body.check(&state, &ctx, &auth, Action::MfaRemove).await?;
    mfa::remove_passkey(&state, &ctx, &auth.user, &credential_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options for the signed-in owner to prove the factor with one of their passkeys (to change
/// the password, add or remove a factor, replace the recovery codes): answered with `passkey`
/// in those requests.
#[utoipa::path(post, path = "/v1/mfa/passkeys/factor-options", tag = "mfa",
    security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = mfa::passkeys::Ceremony),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`: no passkey that proves anything", body = ErrorBody),
    ))]
pub async fn own_passkey_options(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<mfa::passkeys::Ceremony>, ApiError> {
    let ceremony = crate::routes::sessions::passkey_factor_options(&state, auth.user.id).await?;
    Ok(Json(ceremony))
}
