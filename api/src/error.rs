//! One error type for every handler, with a stable machine-readable `code` per variant.
//!
//! Every error body has the shape `{"code": "...", "message": "..."}`. Server-side failures
//! are opaque to the client (code and request id only) and their cause is logged once, here.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Seconds a client is told to wait after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// What went wrong, as the client may learn it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the email address is not valid: {0}")]
    InvalidEmail(String),
    #[error("the password is too weak: {0}")]
    WeakPassword(String),
    #[error("the password is longer than 1024 bytes")]
    PasswordTooLong,
    /// A new password the Pwned Passwords corpus lists.
    #[error("this password has appeared in a data breach; choose another")]
    BreachedPassword,
    #[error("this link is invalid or has been replaced by a newer one")]
    TokenInvalid,
    #[error("this link has expired; request a new one")]
    TokenExpired,
    #[error("this link has already been used")]
    TokenUsed,
    /// The same answer for a wrong code, a dead code and an address without one.
    #[error("this code is not valid; check it, or request a new email")]
    CodeInvalid,
    #[error("code entry is paused for a while; use the link in the email, or try again later")]
    CodeEntryPaused { retry_after_secs: u64 },
    #[error("that is not the address this link was sent to")]
    AddressMismatch,
    #[error("the email address or password is wrong")]
    InvalidCredentials,
    #[error("authentication required")]
    Unauthorized,
    #[error("too many requests from this address; try again later")]
    RateLimitedIp { retry_after_secs: u64 },
    #[error("too many sign-in attempts; try again later")]
    RateLimitedLogin { retry_after_secs: u64 },
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body does not match the expected fields: {0}")]
    InvalidBody(String),
    #[error("expected a body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("no such resource")]
    NotFound,
    /// An operator's action that changes an account without saying why.
    #[error("say why: a reason is required and kept in the audit trail")]
    ReasonRequired,
    /// The account changed while an operator's action was being carried out.
    #[error("the account changed in the meantime; try again")]
    AccountChanged,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// The account has a second factor and the request offered none (a reset, a password
    /// change); nothing changed and a link stays usable.
    #[error(
        "this account uses a second factor: give a code from the authenticator app or a recovery code"
    )]
    MfaRequired,
    /// A wrong, reused or spent code of a second factor.
    #[error("this code is not valid; check the authenticator app, or use a recovery code")]
    InvalidCode,
    /// The second step of a sign-in with an unknown, expired or used `mfa_token`.
    #[error("this sign-in has expired; sign in again")]
    MfaTokenInvalid,
    /// Second factors cannot be set up here yet (`MFA_ENROLMENT=off`).
    #[error("second factors cannot be set up yet")]
    MfaEnrolmentOff,
    /// A passkey ceremony's answer that does not verify, comes too late or twice, or names
    /// no passkey of this site.
    #[error("the passkey could not be verified; try again")]
    PasskeyInvalid,
    /// Passkeys are off here (`PUBLIC_BASE_URL`'s host is an IP address).
    #[error("passkeys are not available on this site")]
    PasskeysOff,
    #[error("an authenticator app is already set up; remove it first")]
    MfaAlreadyEnabled,
    #[error("this account has no authenticator app")]
    MfaNotEnabled,
    #[error("no authenticator app is waiting to be confirmed; start again")]
    NoPendingEnrolment,
    /// A dependency (PostgreSQL, Redis, RabbitMQ) is unreachable or too slow. Never a 202 for
    /// work that was not durably accepted.
    #[error("the service is temporarily unavailable; try again shortly")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable error code clients and dashboards key on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidEmail(_) => "invalid_email",
            ApiError::WeakPassword(_) => "weak_password",
            ApiError::PasswordTooLong => "password_too_long",
            ApiError::BreachedPassword => "breached_password",
            ApiError::TokenInvalid => "token_invalid",
            ApiError::TokenExpired => "token_expired",
            ApiError::TokenUsed => "token_used",
            ApiError::CodeInvalid => "code_invalid",
            ApiError::AddressMismatch => "address_mismatch",
            ApiError::CodeEntryPaused { .. } => "code_entry_paused",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Unauthorized => "unauthorized",
            ApiError::RateLimitedIp { .. } => "rate_limited_ip",
            ApiError::RateLimitedLogin { .. } => "rate_limited_login",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotFound => "not_found",
            ApiError::ReasonRequired => "reason_required",
            ApiError::AccountChanged => "account_changed",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MfaRequired => "mfa_required",
            ApiError::InvalidCode => "invalid_code",
            ApiError::MfaTokenInvalid => "mfa_token_invalid",
            ApiError::MfaEnrolmentOff => "mfa_enrolment_off",
            ApiError::PasskeyInvalid => "passkey_invalid",
            ApiError::PasskeysOff => "passkeys_off",
            ApiError::MfaAlreadyEnabled => "mfa_already_enabled",
            ApiError::MfaNotEnabled => "mfa_not_enabled",
            ApiError::NoPendingEnrolment => "no_pending_enrolment",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidEmail(_)
            | ApiError::WeakPassword(_)
            | ApiError::PasswordTooLong
            | ApiError::BreachedPassword
            | ApiError::AddressMismatch
            | ApiError::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TokenInvalid
            | ApiError::TokenExpired
            | ApiError::TokenUsed
            | ApiError::CodeInvalid
            | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidCredentials
            | ApiError::Unauthorized
            | ApiError::InvalidCode
            | ApiError::PasskeyInvalid
            | ApiError::MfaTokenInvalid => StatusCode::UNAUTHORIZED,
            ApiError::MfaRequired | ApiError::MfaEnrolmentOff => StatusCode::FORBIDDEN,
            ApiError::MfaAlreadyEnabled
            | ApiError::MfaNotEnabled
            | ApiError::NoPendingEnrolment => StatusCode::CONFLICT,
            ApiError::RateLimitedIp { .. } | ApiError::RateLimitedLogin { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound | ApiError::PasskeysOff => StatusCode::NOT_FOUND,
            ApiError::ReasonRequired => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::AccountChanged => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::CodeEntryPaused { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Wraps an infrastructure failure as a 503.
    pub fn unavailable(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable(e.into())
    }
}

/// The JSON error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `token_expired`.
    #[schema(value_type = String, example = "token_expired")]
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            // Log the cause once; the client only sees the code (and the request id header).
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "dependency unavailable");
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
            }
            _ => {}
        }
        let retry_after = match &self {
            ApiError::RateLimitedIp { retry_after_secs }
            | ApiError::RateLimitedLogin { retry_after_secs }
            | ApiError::CodeEntryPaused { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        };
        let body = ErrorBody {
            code: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

/// The code of an error response, left in the response extensions for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(e.into()),
            sqlx::Error::Database(ref db)
                // 08: connection exceptions; 53: out of resources (e.g. too many connections);
                // 57P: shutdown / cannot connect now; 40: serialization failure or deadlock;
                // 25006: read-only (a failover in progress); 42P01: a table is missing (the
                // schema is not migrated yet: PostgreSQL came back a moment ago, or migrations
                // are left to a release job that has not run). All pass; none is the client's
                // fault.
                if db.code().is_some_and(|c| {
                    ["08", "53", "57P", "40"].iter().any(|p| c.starts_with(p))
                        || c == "25006"
                        || c == "42P01"
                }) =>
            {
                ApiError::Unavailable(e.into())
            }
            _ => ApiError::Internal(e.into()),
        }
    }
}

impl From<shared::redis_pool::RedisError> for ApiError {
    fn from(e: shared::redis_pool::RedisError) -> Self {
        // Fail closed: without Redis no limit, burn or session can be checked.
        ApiError::Unavailable(e.into())
    }
}

impl From<tokio::time::error::Elapsed> for ApiError {
    fn from(e: tokio::time::error::Elapsed) -> Self {
        ApiError::Unavailable(anyhow::Error::new(e).context("dependency timed out"))
    }
}
