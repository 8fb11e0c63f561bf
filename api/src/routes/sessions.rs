//! `POST /v1/sessions` and `DELETE /v1/sessions/current`.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::email;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{AppJson, AuthUser, ClientIp},
    password_policy,
    sessions::COOKIE_NAME,
    startup::AppState,
    store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_in))
        .routes(routes!(log_out))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub session: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs in. An unknown address and a wrong password get the same 401 after the same work
/// (one argon2 verification, against a dummy hash when there is no account).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = LoginRequest,
    responses(
        (status = 201, description = "Signed in; also sets the `session` cookie (HttpOnly, SameSite=Lax, Secure)", body = SessionCreated),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials` (same for unknown addresses)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `password_too_long`, `invalid_body`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login`, with `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
pub async fn log_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let address =
        email::normalize(&body.email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    password_policy::check_length(&body.password)?;
    let now = state.clock.now();
    let verdict = state.limiter.check_login(ip, address.key(), now).await?;
    if !verdict.allowed {
        metrics::counter!("rate_limit_hits_total", "kind" => "login").increment(1);
        return Err(ApiError::RateLimitedLogin {
            retry_after_secs: verdict.retry_after_secs,
        });
    }
    let credentials = store::users::credentials(&state.db, address.key()).await?;
    let (stored, user) = match credentials {
        Some(c) => (Some(c.password_hash), Some((c.id, c.password_version))),
        None => (None, None),
    };
    let valid = state.hasher.verify(body.password, stored).await?;
    let Some((user_id, password_version)) = user.filter(|_| valid) else {
        return Err(ApiError::InvalidCredentials);
    };
    let (token, expires_at) = state
        .sessions
        .create(user_id, password_version, now)
        .await?;
    let cookie = session_cookie(
        &token.expose(),
        state.sessions.ttl().as_secs(),
        state.config.cookie_secure,
    );
    let mut response = (
        StatusCode::CREATED,
        Json(SessionCreated {
            session: token.expose(),
            expires_at,
        }),
    )
        .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Ends the current session and clears the cookie.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", security(("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
pub async fn log_out(State(state): State<AppState>, auth: AuthUser) -> Result<Response, ApiError> {
    state.sessions.revoke(&auth.session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, state.config.cookie_secure),
    );
    Ok(response)
}

/// The session cookie: HttpOnly (no script can read it), SameSite=Lax (not sent on
/// cross-site POSTs), Secure unless explicitly disabled for local http.
fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_httponly_lax_and_secure_by_default() {
        let c = session_cookie("abc", 60, true);
        let c = c.to_str().expect("ascii");
        assert_eq!(
            c,
            "session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(
            !session_cookie("abc", 60, false)
                .to_str()
                .expect("ascii")
                .contains("Secure")
        );
    }
}
