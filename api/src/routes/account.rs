//! `POST /v1/account/lock`: the "this wasn't me" link of the password-changed notice
//! (see [`crate::lock`]).

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, RequestContext},
    lock,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(lock_account))
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
