//! The admin API: its own listener (`ADMIN_API_BIND`, never the public one), every request
//! with `Authorization: Bearer <key>` of `ADMIN_API_KEYS` (`401 unauthorized` alike for no key
//! and a wrong one), its own OpenAPI document at `/admin/openapi.json`. The handlers translate
//! HTTP to the operations of [`super::Desk`], which the shell commands call too.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, RawQuery, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi as _, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{AccountView, Actor, Desk, Export, HandedLink, Recovery, keys::AdminKeys};
use crate::{
    error::{ApiError, ErrorBody},
    extract::AppJson,
    state::AppState,
};

/// Largest JSON body of an admin request (an import streams its body instead).
const MAX_JSON_BYTES: usize = 16 * 1024;

/// The key a request authenticated with, by its id.
#[derive(Debug, Clone)]
struct KeyId(String);

impl KeyId {
    fn actor(&self) -> Actor {
        Actor::Key(self.0.clone())
    }
}

/// The admin router: every route behind the key check, and the document.
pub fn router(state: AppState, keys: AdminKeys) -> Router {
    let (router, openapi) = routes().split_for_parts();
    let document = Arc::new(openapi);
    router
        .route(
            "/admin/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(Arc::new(keys), authenticate))
        .layer(middleware::from_fn(crate::startup::answer_headers))
        .with_state(state)
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(AdminDoc::openapi())
        .routes(routes!(find_user))
        .routes(routes!(import_users))
        .routes(routes!(recovery))
        .routes(routes!(revoke_sessions))
        .routes(routes!(lock))
        .routes(routes!(unlock))
        .routes(routes!(remove_factors))
        .routes(routes!(export))
        .routes(routes!(erase))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Password recovery admin api", description = "Support staff's operations on accounts. Every request carries `Authorization: Bearer <key>` of `ADMIN_API_KEYS`; without one, or with a wrong one, the answer is `401 unauthorized`. Every call is audited with the key's id. Every error is `{code, message}`."),
    modifiers(&BearerKey)
)]
struct AdminDoc;

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "admin_key",
            Vec::<String>::new(),
        )]);
    }
}

/// Refuses every request without one of the keys, the same way whatever was wrong; the
/// document is behind the keys too (it is no secret, but nothing here is for strangers).
async fn authenticate(
    State(keys): State<Arc<AdminKeys>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match keys.authenticate(presented) {
        Some(id) => {
            request.extensions_mut().insert(KeyId(id));
            next.run(request).await
        }
        None => {
            metrics::counter!("admin_unauthorized_total").increment(1);
            ApiError::Unauthorized.into_response()
        }
    }
}

/// The account id of the path; anything else (not a UUID, not even UTF-8) names no account.
struct AccountId(Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        Uuid::parse_str(&raw)
            .map(AccountId)
            .map_err(|_| ApiError::NotFound)
    }
}

/// The first value of query parameter `name` (a repeated one is not an error).
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    pairs
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The query of the look-up, for the document (read by [`query_value`]).
#[derive(IntoParams)]
#[allow(dead_code, reason = "describes the query in the OpenAPI document")]
struct FindQuery {
    /// The address, in any spelling.
    email: Option<String>,
}

/// Looks an account up by its address.
#[utoipa::path(get, path = "/admin/v1/users", tag = "admin", params(FindQuery),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no account has this address", body = ErrorBody),
        (status = 422, description = "`invalid_email`", body = ErrorBody),
    ))]
async fn find_user(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    RawQuery(query): RawQuery,
) -> Result<Json<AccountView>, ApiError> {
    let email = query_value(query.as_deref(), "email").unwrap_or_default();
    let found = Desk::of(&state).find(&key.actor(), &email).await?;
    found.map(Json).ok_or(ApiError::NotFound)
}

/// The counts of an import, and the refused lines with why.
#[derive(Debug, Serialize, ToSchema)]
struct ImportAnswer {
    imported: u64,
    skipped: u64,
    refused: u64,
    /// The refused lines (the first 10,000), by number, with the refusal's code.
    errors: Vec<LineError>,
}

/// A refused line of an import.
#[derive(Debug, Serialize, ToSchema)]
struct LineError {
    /// Its number, from 1.
    line: u64,
    /// Why: `invalid_json`, `invalid_fields`, `invalid_email`, `unusable_hash`,
    /// `hash_too_costly`, `line_too_long`.
    code: &'static str,
}

/// Most refused lines an import answer lists.
const MAX_LISTED_REFUSALS: usize = 10_000;

/// Imports accounts with their password hashes, from JSON lines (as `api users import`).
///
/// Each line: `{"email", "password_hash" (string or null), "email_verified" (default true)}`.
/// An address that has an account is skipped, never overwritten; a bad line is refused and
/// listed; the rest is imported. The body is streamed (no size limit; lines over 16 KiB are
/// refused).
#[utoipa::path(post, path = "/admin/v1/users/import", tag = "admin",
    request_body(content = String, content_type = "application/x-ndjson"),
    responses(
        (status = 200, description = "Done", body = ImportAnswer),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/x-ndjson`", body = ErrorBody),
    ))]
async fn import_users(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    request: Request<Body>,
) -> Result<Json<ImportAnswer>, ApiError> {
    use futures_util::TryStreamExt as _;
    let ndjson = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-ndjson"));
    if !ndjson {
        return Err(ApiError::UnsupportedMediaType);
    }
    let no_password = crate::lock::unusable_hash(&state.hasher).await?;
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let input =
        tokio::io::BufReader::with_capacity(64 * 1024, tokio_util::io::StreamReader::new(body));
    let mut errors = Vec::new();
    let max_verify = state.config.import_max_verify;
    let pool = &state.hasher;
    let summary =
        crate::import::run_on(&state.db, input, &no_password, max_verify, pool, |report| {
            if let crate::import::Report::Refused(refusal) = report
                && errors.len() < MAX_LISTED_REFUSALS
            {
                errors.push(LineError {
                    line: refusal.line,
                    code: refusal.code,
                });
            }
        })
        .await
        .map_err(ApiError::unavailable)?;
    let detail = format!(
        "{}; imported {}, skipped {}, refused {}",
        key.actor().detail(None),
        summary.imported,
        summary.skipped,
        summary.refused
    );
    let event = shared::audit::AuditEvent {
        detail: Some(&detail),
        ..shared::audit::AuditEvent::new(
            shared::audit::Action::Import,
            shared::audit::Outcome::Success,
        )
    };
    shared::audit::record_on(&state.db, &event).await?;
    Ok(Json(ImportAnswer {
        imported: summary.imported,
        skipped: summary.skipped,
        refused: summary.refused,
        errors,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoveryRequest {
    /// `false`: the link and code are answered, for a support agent to hand over; `true`: the
    /// ordinary reset email goes to the account's address.
    send: bool,
}

/// A reset link for the account; an operator never chooses a password.
#[utoipa::path(post, path = "/admin/v1/users/{id}/recovery", tag = "admin", request_body = RecoveryRequest,
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 201, description = "`send: false`: the link, its code and when both expire", body = HandedLink),
        (status = 202, description = "`send: true`: the reset email is queued"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`account_changed`: the password changed meanwhile", body = ErrorBody),
    ))]
async fn recovery(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    AppJson(body): AppJson<RecoveryRequest>,
) -> Result<Response, ApiError> {
    let desk = Desk::of(&state);
    match desk.recovery(&key.actor(), id, body.send).await? {
        Recovery::Handed(link) => Ok((StatusCode::CREATED, Json(link)).into_response()),
        Recovery::Emailed => {
            state.outbox.wake();
            Ok(StatusCode::ACCEPTED.into_response())
        }
    }
}

/// Why an operator acts (kept in the audit trail).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

/// Ends every session of the account now.
#[utoipa::path(post, path = "/admin/v1/users/{id}/sessions/revoke", tag = "admin", request_body = Reason,
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`reason_required`", body = ErrorBody),
    ))]
async fn revoke_sessions(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    AppJson(body): AppJson<Reason>,
) -> Result<StatusCode, ApiError> {
    let reason = super::reason(body.reason.as_deref())?;
    Desk::of(&state)
        .revoke_sessions(&key.actor(), id, reason)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Locks the account: sessions revoked, sign-in refused until a reset, a reset email to its
/// owner.
#[utoipa::path(post, path = "/admin/v1/users/{id}/lock", tag = "admin", request_body = Reason,
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 204, description = "Locked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`account_changed`", body = ErrorBody),
        (status = 422, description = "`reason_required`", body = ErrorBody),
    ))]
async fn lock(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    AppJson(body): AppJson<Reason>,
) -> Result<StatusCode, ApiError> {
    let reason = super::reason(body.reason.as_deref())?;
    Desk::of(&state).lock(&key.actor(), id, reason).await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts the account's lock mark and clears its address's failed sign-ins (a lock that
/// replaced the password still needs a reset).
#[utoipa::path(post, path = "/admin/v1/users/{id}/unlock", tag = "admin", request_body = Reason,
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 204, description = "Unlocked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`reason_required`", body = ErrorBody),
    ))]
async fn unlock(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    AppJson(body): AppJson<Reason>,
) -> Result<StatusCode, ApiError> {
    let reason = super::reason(body.reason.as_deref())?;
    Desk::of(&state).unlock(&key.actor(), id, reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the account's second factor and recovery codes, for a person who lost both, after
/// proving who they are (docs/runbooks.md "Lost second factor"). The owner gets a notice.
#[utoipa::path(post, path = "/admin/v1/users/{id}/mfa/remove", tag = "admin", request_body = Reason,
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 204, description = "Removed; a notice to the owner is queued"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`", body = ErrorBody),
        (status = 422, description = "`reason_required`", body = ErrorBody),
    ))]
async fn remove_factors(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    AppJson(body): AppJson<Reason>,
) -> Result<StatusCode, ApiError> {
    let reason = super::reason(body.reason.as_deref())?;
    Desk::of(&state)
        .remove_factors(&key.actor(), id, reason)
        .await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// The account and its audit trail (a person's access request).
#[utoipa::path(get, path = "/admin/v1/users/{id}/export", tag = "admin",
    params(("id" = Uuid, Path, description = "The account")),
    responses(
        (status = 200, description = "The account and every audit row about it", body = Export),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn export(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
) -> Result<Json<Export>, ApiError> {
    let export = Desk::of(&state).export(&key.actor(), id).await?;
    Ok(Json(export))
}

/// The query of an erasure, for the document (read by [`query_value`]).
#[derive(IntoParams)]
#[allow(dead_code, reason = "describes the query in the OpenAPI document")]
struct EraseQuery {
    /// Why (kept in the audit trail's erasure row).
    reason: Option<String>,
}

/// Erases the account: it, its sessions, links, codes, queued mail and suppression entry are
/// gone, and its audit rows keep no address or IP; the address can sign up again.
#[utoipa::path(delete, path = "/admin/v1/users/{id}", tag = "admin", params(("id" = Uuid, Path, description = "The account"), EraseQuery),
    responses(
        (status = 204, description = "Erased"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`reason_required`", body = ErrorBody),
    ))]
async fn erase(
    State(state): State<AppState>,
    Extension(key): Extension<KeyId>,
    AccountId(id): AccountId,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let reason = query_value(query.as_deref(), "reason");
    Desk::of(&state)
        .erase(&key.actor(), id, super::reason(reason.as_deref())?)
        .await?;
    state.outbox.wake();
    Ok(StatusCode::NO_CONTENT)
}
