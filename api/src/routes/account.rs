//! `POST /v1/account/lock`: the "this wasn't me" link of the password-changed notice.

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    token::Purpose,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, ClientIp, Locale, RequestTrace},
    lock::{self, Lock},
    startup::AppState,
    tokens,
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
        (status = 400, description = "`token_invalid` (also a superseded link, or one older than the current password), `token_expired`, `token_used`, `malformed_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`; `address_mismatch`: `email` is not the address the link was sent to (the link stays usable)", body = ErrorBody),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After` (the link endpoints' per-IP budget)", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
pub async fn lock_account(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    AppJson(body): AppJson<LockRequest>,
) -> Result<StatusCode, ApiError> {
    let typed = body.email.as_deref();
    perform_lock(&state, ip, locale, trace, &body.token, typed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The lock shared by the JSON endpoint and the page's button. `typed`, when given, must be
/// the account's address (any spelling that normalises to it); otherwise nothing changes and
/// the link stays usable.
pub async fn perform_lock(
    state: &AppState,
    ip: std::net::IpAddr,
    locale: &str,
    trace: shared::message::Trace,
    token: &str,
    typed: Option<&str>,
) -> Result<(), ApiError> {
    let request_id = trace.request_id.as_deref();
    let audit = |outcome: Outcome, user: Option<uuid::Uuid>| async move {
        let event = AuditEvent {
            user_id: user,
            ip: Some(ip),
            request_id,
            ..AuditEvent::new(Action::AccountLock, outcome)
        };
        crate::audit::record(state, &event).await;
    };
    tokens::within_token_budget(state, ip, request_id).await?;
    let (token, user) = match tokens::check_link(state, Purpose::AccountLock, token).await {
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
    let unusable_hash = match state.hasher.hash_for(ip, lock::unusable_secret()).await {
        Ok(hash) => hash,
        Err(e) => {
            state.tokens.unburn(&token).await;
            return Err(e);
        }
    };
    let lock = Lock {
        ip: Some(ip),
        trace: &trace,
        locale,
        detail: None,
        reset_max_age: state.config.reset_token_max_age,
        now: state.clock.now(),
        unusable_hash: &unusable_hash,
    };
    match lock::commit(&state.db, &user, &lock).await {
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
    lock::revoke_sessions(&state.sessions, user.id).await;
    metrics::counter!("account_locks_total", "by" => "owner").increment(1);
    Ok(())
}

/// Checks a lock link without using it (the GET of the page: mail scanners open links).
pub async fn inspect_lock_token(
    state: &AppState,
    ip: std::net::IpAddr,
    token: &str,
) -> Result<(), ApiError> {
    tokens::within_token_budget(state, ip, None).await?;
    tokens::check_link(state, Purpose::AccountLock, token)
        .await
        .map(drop)
        .map_err(|r| r.error)
}
