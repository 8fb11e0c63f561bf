//! `POST /v1/users`, `POST /v1/email/verify`, `GET /v1/me`.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{
    email,
    message::{Envelope, Job},
    token::Purpose,
};
use uuid::Uuid;

use crate::{
    error::ApiError,
    extract::{AppJson, AuthUser, ClientIp, Locale, RequestTrace},
    password_policy,
    startup::AppState,
    store::{self, audit::AuditEvent},
    tokens::Rejected,
};

/// The one answer to every valid sign-up, new address or taken.
pub const SIGN_UP_ACCEPTED_MESSAGE: &str =
    "Check your inbox: we have sent a message to that address with the next step.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(sign_up))
        .route("/v1/email/verify", post(verify_email))
        .route("/v1/me", get(show_me))
}

#[derive(Debug, Deserialize)]
pub struct SignUpRequest {
    pub email: String,
    pub password: String,
}

/// Creates an account, or tells the owner of a taken address that someone tried.
///
/// Both outcomes hash the password and publish one job, and answer the same 202, so sign-up
/// cannot be used to test whether an address is registered. The insert and the publish
/// commit together: a job the broker did not confirm leaves no account behind.
pub async fn sign_up(
    State(state): State<AppState>,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    AppJson(body): AppJson<SignUpRequest>,
) -> Result<Response, ApiError> {
    let address =
        email::normalize(&body.email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    password_policy::check_new_password(&body.password, address.address())?;
    let hash = state.hasher.hash(body.password).await?;
    let now = state.clock.now();

    let mut tx = state.db.begin().await?;
    let created =
        store::users::insert_if_absent(&mut *tx, address.address(), address.key(), &hash).await?;
    let (job, ttl) = match created {
        Some(user_id) => (
            Job::EmailVerification {
                user_id,
                email: address.address().to_owned(),
            },
            state.config.verify_token_max_age,
        ),
        None => (
            Job::AccountExistsNotice {
                email: address.address().to_owned(),
            },
            std::time::Duration::from_secs(86_400),
        ),
    };
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
    let envelope = Envelope::new(job, now, ttl, locale, trace);
    state.publisher.publish_job(&envelope).await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": SIGN_UP_ACCEPTED_MESSAGE })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    pub token: String,
}

/// Confirms an address through its verification link.
pub async fn verify_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestTrace(trace): RequestTrace,
    AppJson(body): AppJson<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let outcome = async {
        let token = state
            .tokens
            .check(Purpose::EmailVerify, &body.token, now)
            .await?;
        let user = store::users::by_id(&state.db, token.claims.uid)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Rejected::unknown_user(token.claims.uid))?;
        state
            .tokens
            .check_password_version(&token, user.password_version)?;
        if !state.tokens.burn(Purpose::EmailVerify, &token).await? {
            return Err(Rejected::used(user.id));
        }
        if let Err(e) = store::users::mark_verified(&state.db, user.id).await {
            state.tokens.unburn(&token).await;
            return Err(ApiError::from(e).into());
        }
        Ok::<Uuid, Rejected>(user.id)
    }
    .await;
    let (result, outcome, user) = match outcome {
        Ok(user) => (Ok(StatusCode::NO_CONTENT), "success", Some(user)),
        Err(r) => (Err(r.error), r.reason, r.user),
    };
    if !matches!(result, Err(ApiError::Unavailable(_))) {
        let event = AuditEvent {
            action: "email_verify",
            outcome,
            user_id: user,
            ip: Some(ip),
            address_hash: None,
            request_id: trace.request_id.as_deref(),
        };
        if let Err(e) = store::audit::record(&state.db, &event).await {
            tracing::error!(error = %e, "could not write audit row");
        }
    }
    result
}

/// The signed-in user.
#[derive(Debug, Serialize)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
}

/// `GET /v1/me`.
pub async fn show_me(auth: AuthUser) -> Json<Me> {
    Json(Me {
        id: auth.user.id,
        email: auth.user.email,
        email_verified: auth.user.email_verified,
    })
}
