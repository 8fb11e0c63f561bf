//! Sessions: `POST /v1/sessions` (and its second step, `POST /v1/sessions/mfa`), the owner's
//! list (`GET /v1/sessions`), `DELETE /v1/sessions/{id}`, `DELETE /v1/sessions/others` and
//! `DELETE /v1/sessions/current`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::email;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use shared::audit::{Action, AuditEvent, Outcome};

use crate::{
    audit,
    error::{ApiError, ErrorBody},
    extract::{AppJson, AuthUser, RequestContext},
    mfa::{self, challenge},
    password_policy, sessions,
    state::AppState,
    store,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_in))
        .routes(routes!(second_step))
        .routes(routes!(passkey_options))
        .routes(routes!(second_step_passkey_options))
        .routes(routes!(passkey_sign_in))
        .routes(routes!(log_out))
        .routes(routes!(list))
        .routes(routes!(end_others))
        .routes(routes!(end_one))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(format = "email", min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

/// The answer to a right password of an account with a second factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always `true`.
    pub mfa_required: bool,
    /// For `POST /v1/sessions/mfa`: one use, [`challenge::TTL_SECS`] seconds, five wrong
    /// codes at most.
    pub mfa_token: String,
    /// Seconds the token lives.
    pub expires_in: u64,
    /// What the second step takes: `totp`, `passkey`, `recovery_code` (those the account has).
    pub methods: Vec<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub session: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs in. A right password of an account with a second factor answers `200` with an
/// `mfa_token` for `POST /v1/sessions/mfa` instead of a session; until the password is right
/// nothing differs from an unknown address.
///
/// An unknown address, a wrong password and an account whose address is not
/// verified yet get the same 401 after the same work: one argon2 verification (against a
/// dummy hash when there is no account) and one audit row. While accounts imported with a
/// costlier hash remain, every such 401 also waits until the request's start plus the
/// [refusal floor](crate::refusal_floor): a wrong password for an imported account takes no
/// longer than an unknown address.
///
/// Unverified accounts cannot sign in because anyone can sign up anyone's address: if the
/// sign-up alone opened a session, `POST /v1/users {X, P}` + `POST /v1/sessions {X, P}`
/// would tell whether X was free (201) or taken (401), and whoever registered a victim's
/// address first could use the account before the victim ever saw it.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = LoginRequest,
    responses(
        (status = 200, description = "The password is right and the account has a second factor: `mfa_required` with an `mfa_token` for `POST /v1/sessions/mfa`; no session yet", body = MfaRequired),
        (status = 201, description = "Signed in; also sets the session cookie (`__Host-session`: HttpOnly, SameSite=Lax, Secure) and the device cookie (`__Host-device`, a year: this browser is recognised at its next sign-in to the account)", body = SessionCreated),
        (status = 401, description = "`invalid_credentials` (same for unknown addresses, unverified accounts and locked accounts)", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `password_too_long`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` (this address, or this address from this IP, or this recognised browser) or `rate_limited_ip` (this IP over all addresses), with `Retry-After`", body = ErrorBody),
    ))]
pub async fn log_in(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let ip = ctx.ip;
    let address =
        email::normalize(&body.email).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
    password_policy::check_length(&body.password)?;
    let now = state.clock.now();
    let address_hash = state.limiter.address_pseudonym(address.key());
    let request_id = ctx.request_id();
    let device = state.devices.recognise(&headers, address.key());
    let budgets = LoginBudgets {
        ip,
        email_key: address.key(),
        address_hash: &address_hash,
        device: device.as_ref().map(|d| d.id.as_str()),
    };
    let mut attempt = within_login_budgets(&state, &budgets, request_id).await?;
    let credentials = store::users::credentials(&state.db, address.key()).await?;
    // A device recognised under an older password (a reset or a lock since, or an account
    // gone) is a stranger: the attempt is counted as a stranger's after all.
    if let Some(device) = &device
        && credentials.as_ref().map(|c| c.password_version) != Some(device.password_version)
    {
        let stranger = LoginBudgets {
            device: None,
            ..budgets
        };
        attempt = within_login_budgets(&state, &stranger, request_id).await?;
    }
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let valid = state
        .hasher
        .verify_for(ip, body.password.clone(), stored)
        .await?;
    // `valid` holds only for an existing account (the dummy hash never verifies).
    let verified = valid && credentials.as_ref().is_some_and(|c| c.email_verified);
    let second_step = verified && credentials.as_ref().is_some_and(|c| c.has_factor);
    let outcome = match (valid, verified) {
        (true, true) if second_step => Outcome::MfaRequired,
        (true, true) => Outcome::Success,
        (true, false) => Outcome::Unverified,
        (false, _) => Outcome::InvalidCredentials,
    };
    audit::record(
        &state.db,
        &AuditEvent {
            action: Action::SignIn,
            outcome,
            user_id: credentials.as_ref().filter(|_| verified).map(|c| c.id),
            ip: Some(ip),
            address_hash: Some(&address_hash),
            request_id,
            detail: None,
        },
    )
    .await;
    // A right password gets a hash with the current parameters even while the address is
    // unverified: an old-parameter hash costs less to verify than the dummy hash of unknown
    // addresses, so leaving it would keep the account distinguishable by timing.
    if valid
        && let Some(c) = credentials
            .as_ref()
            .filter(|c| state.hasher.needs_rehash(&c.password_hash))
    {
        rehash(&state, ip, c, body.password.clone()).await;
    }
    let Some(user) = credentials.filter(|_| verified) else {
        // A timer, after the hashing slot went back: a refusal waiting here holds no slot.
        state.refusal_floor.hold(started).await;
        return Err(ApiError::InvalidCredentials);
    };
    // Budgets count failures only.
    state.limiter.forgive(attempt).await;
    if second_step {
        // The browser counts as recognised at the second step as at the first (a device
        // of an older password version was counted as a stranger above).
        let recognised = device.filter(|d| d.password_version == user.password_version);
        let pending = challenge::Pending {
            user: user.id,
            password_version: user.password_version,
            device: recognised.map(|d| d.id),
        };
        let mfa_token = state.challenges.create(pending).await?;
        let enrolment = mfa::enrolment(&state, user.id).await?;
        let mut methods = Vec::with_capacity(3);
        if enrolment.totp {
            methods.push("totp");
        }
        if enrolment.passkeys > 0 {
            methods.push("passkey");
        }
        methods.push("recovery_code");
        let body = MfaRequired {
            mfa_required: true,
            mfa_token,
            expires_in: challenge::TTL_SECS,
            methods,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let account = SignedIn {
        credentials: &user,
        email: address.address(),
        email_key: address.key(),
        new_device_notice: true,
    };
    signed_in(&state, &ctx, &headers, &account, now).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaSignInRequest {
    /// The token of the sign-in's first step.
    #[schema(max_length = 64)]
    pub mfa_token: String,
    /// A code of the authenticator app.
    #[serde(default)]
    #[schema(max_length = 64, example = "123456")]
    pub code: Option<String>,
    /// One of the recovery codes, instead of `code` (it is spent; the owner is told).
    #[serde(default)]
    #[schema(max_length = 64, example = "abcd-efgh-jkmn-pqrs")]
    pub recovery_code: Option<String>,
    /// A passkey's answer to the options of `POST /v1/sessions/mfa/passkey-options`, instead
    /// of a code.
    #[serde(default)]
    pub passkey: Option<mfa::PasskeyAnswer>,
}

/// The second step of a sign-in: a code of the authenticator app, or a recovery code, for
/// the `mfa_token` of a right password. A wrong code counts like a wrong password (the
/// sign-in budgets of the address and the client) and against the token (five at most).
#[utoipa::path(post, path = "/v1/sessions/mfa", tag = "sessions", request_body = MfaSignInRequest,
    responses(
        (status = 201, description = "Signed in, as `POST /v1/sessions` answers", body = SessionCreated),
        (status = 401, description = "`invalid_code` (wrong, reused or spent; the token stays usable up to five wrong codes) or `mfa_token_invalid` (unknown, expired, used, or the password changed since)", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither `code` nor `recovery_code`", body = ErrorBody),
        (status = 429, description = "`rate_limited_login` or `rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn second_step(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<MfaSignInRequest>,
) -> Result<Response, ApiError> {
    let action = Action::MfaSignIn;
    let proof = match body.passkey {
        Some(answer) => Some(mfa::Proof::Passkey(Box::new(answer))),
        None => mfa::Proof::from_fields(body.code.as_deref(), body.recovery_code.as_deref()),
    };
    let proof = proof
        .ok_or_else(|| ApiError::InvalidBody("give `code`, `recovery_code` or `passkey`".into()))?;
    let token = body.mfa_token.as_str();
    let invalid = async |user: Option<uuid::Uuid>| {
        let reason = Outcome::MfaTokenInvalid;
        crate::recovery::attempt(&state, &ctx, action, reason, user).await;
        ApiError::MfaTokenInvalid
    };
    let Some(pending) = state.challenges.pending(token).await? else {
        return Err(invalid(None).await);
    };
    let user = store::users::by_id(&state.db, pending.user).await?;
    let Some(user) = user.filter(|u| u.password_version == pending.password_version) else {
        state.challenges.take(token).await?;
        return Err(invalid(Some(pending.user)).await);
    };
    let device = pending.device.as_deref();
    if let Err(e) = mfa::prove_from(&state, &ctx, &user, action, &proof, device).await {
        if matches!(e, ApiError::InvalidCode) {
            state.challenges.wrong(token).await?;
        }
        return Err(e);
    }
    if !state.challenges.take(token).await? {
        return Err(invalid(Some(user.id)).await);
    }
    crate::recovery::attempt_succeeded(&state, &ctx, action, user.id).await;
    let credentials = store::users::credentials_by_id(&state.db, user.id).await?;
    let Some(credentials) = credentials.filter(|c| c.password_version == user.password_version)
    else {
        return Err(ApiError::MfaTokenInvalid);
    };
    let now = state.clock.now();
    let account = SignedIn {
        credentials: &credentials,
        email: &user.email,
        email_key: &user.email_key,
        new_device_notice: true,
    };
    signed_in(&state, &ctx, &headers, &account, now).await
}

/// Starts a sign-in with a passkey (no address, no password): the options for
/// `navigator.credentials.get` and the ceremony's id (5 minutes, one answer).
#[utoipa::path(post, path = "/v1/sessions/passkey/options", tag = "sessions",
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = mfa::passkeys::Ceremony),
        (status = 429, description = "`rate_limited_ip`, with `Retry-After`", body = ErrorBody),
    ))]
pub async fn passkey_options(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<mfa::passkeys::Ceremony>, ApiError> {
    use crate::rate_limit::{IpBudget, within_budget};
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    within_budget(limiter, refusals, IpBudget::Link, ctx.ip, ctx.request_id()).await?;
    Ok(Json(state.passkeys.sign_in_options().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeySignInRequest {
    /// The id of the ceremony the options came with.
    #[schema(max_length = 64)]
    pub ceremony_id: String,
    /// What `navigator.credentials.get` gave (binary values in base64url).
    #[schema(value_type = Object)]
    pub credential: webauthn_rs::prelude::PublicKeyCredential,
}

/// Signs in with a passkey: the device's passkey with its user verification is both factors,
/// so no password or code is asked for. A locked or unverified account does not sign in.
#[utoipa::path(post, path = "/v1/sessions/passkey", tag = "sessions", request_body = PasskeySignInRequest,
    responses(
        (status = 201, description = "Signed in, as `POST /v1/sessions` answers", body = SessionCreated),
        (status = 401, description = "`passkey_invalid`: the answer does not verify, came too late or twice, or names no passkey of an account that may sign in (a suspended passkey, a locked or unverified account)", body = ErrorBody),
    ))]
pub async fn passkey_sign_in(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(body): AppJson<PasskeySignInRequest>,
) -> Result<Response, ApiError> {
    let action = Action::MfaSignIn;
    let refuse = async |user: Option<uuid::Uuid>| {
        crate::recovery::attempt(&state, &ctx, action, Outcome::FactorWrong, user).await;
        ApiError::PasskeyInvalid
    };
    let verified = state
        .passkeys
        .sign_in(&state.db, &body.ceremony_id, &body.credential)
        .await;
    let verified = match verified {
        Ok(verified) => verified,
        Err(ApiError::PasskeyInvalid) => return Err(refuse(None).await),
        Err(e) => return Err(e),
    };
    let user = store::users::by_id(&state.db, verified.user).await?;
    let Some(user) = user.filter(|u| u.email_verified) else {
        return Err(refuse(Some(verified.user)).await);
    };
    if store::users::is_locked(&state.db, user.id).await? {
        return Err(refuse(Some(user.id)).await);
    }
    let Some(credentials) = store::users::credentials_by_id(&state.db, user.id).await? else {
        return Err(refuse(Some(user.id)).await);
    };
    crate::recovery::attempt_succeeded(&state, &ctx, action, user.id).await;
    metrics::counter!("mfa_verifications_total", "factor" => "passkey").increment(1);
    let now = state.clock.now();
    let account = SignedIn {
        credentials: &credentials,
        email: &user.email,
        email_key: &user.email_key,
        new_device_notice: true,
    };
    signed_in(&state, &ctx, &headers, &account, now).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaTokenOnly {
    /// The token of the sign-in's first step.
    #[schema(max_length = 64)]
    pub mfa_token: String,
}

/// Options for the second step with one of the account's passkeys (`navigator.credentials.get`
/// with the account's credentials), for `POST /v1/sessions/mfa` with `passkey`.
#[utoipa::path(post, path = "/v1/sessions/mfa/passkey-options", tag = "sessions", request_body = MfaTokenOnly,
    responses(
        (status = 200, description = "The options (`{publicKey: …}`, binary values in base64url)", body = mfa::passkeys::Ceremony),
        (status = 401, description = "`mfa_token_invalid`", body = ErrorBody),
        (status = 409, description = "`mfa_not_enabled`: the account has no passkey", body = ErrorBody),
    ))]
pub async fn second_step_passkey_options(
    State(state): State<AppState>,
    AppJson(body): AppJson<MfaTokenOnly>,
) -> Result<Json<mfa::passkeys::Ceremony>, ApiError> {
    let Some(pending) = state.challenges.pending(&body.mfa_token).await? else {
        return Err(ApiError::MfaTokenInvalid);
    };
    let ceremony = passkey_factor_options(&state, pending.user).await?;
    Ok(Json(ceremony))
}

/// Options to prove the factor with one of `user`'s passkeys.
pub(crate) async fn passkey_factor_options(
    state: &AppState,
    user: uuid::Uuid,
) -> Result<mfa::passkeys::Ceremony, ApiError> {
    let rows = store::factors::passkeys(&state.db, user).await?;
    // A suspended passkey (a lock since) proves nothing: the owner uses another factor.
    let passkeys = (rows.iter().filter(|row| !row.suspended))
        .map(mfa::passkeys::read)
        .collect::<Result<Vec<_>, _>>()?;
    state.passkeys.factor_options(user, &passkeys).await
}

/// An account whose owner just proved themselves (password, and the factor when it has one).
pub(crate) struct SignedIn<'a> {
    pub credentials: &'a store::users::Credentials,
    /// The address (for the new-sign-in notice's job) and its key.
    pub email: &'a str,
    pub email_key: &'a str,
    /// Tell the owner when this browser is new to the account (a sign-in; not a password
    /// change from a session that exists already).
    pub new_device_notice: bool,
}

/// The answer to a sign-in whose password verified: the address off the suppression list, the
/// account's languages if it had none, a new session (with where it was opened), its cookie
/// and the device cookie; the owner is told of a browser new to the account (see
/// [`crate::devices::tell_if_new`]).
pub(crate) async fn signed_in(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    account: &SignedIn<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Response, ApiError> {
    let (user, email_key, languages) = (account.credentials, account.email_key, &ctx.languages);
    // Its owner is here: mail to the address goes out again (see `shared::suppression`).
    // Pinned: behind a transaction pooler, an unnamed statement's two exchanges must reach one
    // server connection (see `shared::db`).
    let removed = shared::db::pinned(&state.db, async |c| {
        shared::suppression::remove(c, email_key).await
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "could not take a signed-in address off the suppression list");
    }
    if let Err(e) = store::users::adopt_languages(&state.db, user.id, languages).await {
        tracing::warn!(error = %e, "could not store a signed-in account's languages");
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let origin = sessions::Origin {
        device: crate::user_agent::device_name(user_agent),
        network: crate::user_agent::network(ctx.ip),
    };
    if account.new_device_notice {
        crate::devices::tell_if_new(state, ctx, headers, account, &origin).await;
    }
    let (token, expires_at) = state
        .sessions
        .create(user.id, user.password_version, now, &origin)
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
    let set = response.headers_mut();
    set.insert(header::SET_COOKIE, cookie);
    set.append(
        header::SET_COOKIE,
        (state.devices).issue(headers, email_key, user.password_version),
    );
    Ok(response)
}

/// What a sign-in attempt is counted under.
#[derive(Debug, Clone, Copy)]
pub struct LoginBudgets<'a> {
    pub ip: std::net::IpAddr,
    pub email_key: &'a str,
    /// The address's pseudonym, for the audit row of a refusal.
    pub address_hash: &'a str,
    /// The request's device, when it signed in to this address before.
    pub device: Option<&'a str>,
}

/// Counts a sign-in attempt against its budgets (IP, and pair and address, or the recognised
/// device); a refusal is audited and answered `429` (`rate_limited_ip` for the IP's budget,
/// `rate_limited_login` otherwise). The attempt, to forgive once the sign-in succeeded.
pub async fn within_login_budgets(
    state: &AppState,
    budgets: &LoginBudgets<'_>,
    request_id: Option<&str>,
) -> Result<crate::rate_limit::Attempt, ApiError> {
    let (verdict, attempt) = (state.limiter)
        .check_login(budgets.ip, budgets.email_key, budgets.device)
        .await?;
    if verdict.allowed {
        return Ok(attempt);
    }
    let (ip, address_hash) = (budgets.ip, Some(budgets.address_hash));
    (state.refusals).refused(&verdict, ip, address_hash, request_id);
    let retry_after_secs = verdict.retry_after_secs;
    Err(if verdict.refused_by == Some(Outcome::LoginIp) {
        ApiError::RateLimitedIp { retry_after_secs }
    } else {
        ApiError::RateLimitedLogin { retry_after_secs }
    })
}

/// Stores a hash with the current argon2 parameters for a password that just verified against
/// a hash made with older ones. Unknown addresses are verified against a dummy hash with the
/// current parameters, so as long as old-parameter hashes remain, a sign-in for an old account
/// would cost less than one for an unknown address; rehashing at each successful sign-in
/// closes that gap account by account. The password version does not move (sessions and links
/// stay valid: the password is the same). Best effort: a failure is logged, the sign-in stands.
async fn rehash(
    state: &AppState,
    ip: std::net::IpAddr,
    user: &store::users::Credentials,
    password: String,
) {
    let result = async {
        let hash = state.hasher.hash_for(ip, password).await?;
        store::users::replace_hash(&state.db, user.id, &user.password_hash, &hash).await?;
        Ok::<(), ApiError>(())
    }
    .await;
    match result {
        Ok(()) => metrics::counter!("password_rehashes_total").increment(1),
        Err(e) => tracing::warn!(error = %e, "could not rehash a password with old parameters"),
    }
}

/// Ends the current session and clears the cookie.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", security(("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn log_out(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
) -> Result<Response, ApiError> {
    state.sessions.revoke(&auth.session).await?;
    audit::record(
        &state.db,
        &AuditEvent {
            user_id: Some(auth.user.id),
            ip: Some(ctx.ip),
            request_id: ctx.request_id(),
            ..AuditEvent::new(Action::SignOut, Outcome::Success)
        },
    )
    .await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let secure = state.config.cookie_secure;
    let set = response.headers_mut();
    set.insert(header::SET_COOKIE, session_cookie("", 0, secure));
    if secure {
        // A session cookie from before the `__Host-` name goes too.
        set.append(header::SET_COOKIE, session_cookie("", 0, false));
    }
    Ok(response)
}

/// The signed-in owner's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// This request's session first, then the most recently used.
    pub sessions: Vec<sessions::SessionInfo>,
}

/// Lists the signed-in owner's live sessions: when each was created and last used, the device
/// (named from its User-Agent) and the network it was opened from.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The live sessions", body = SessionList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state.sessions.list(&auth.session).await?;
    Ok(Json(SessionList { sessions }))
}

/// Ends one of the owner's sessions (by the `id` the list gives). Ending this request's own
/// session signs it out.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", security(("session" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "A session's `id` from `GET /v1/sessions`")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no live session of this account has that id", body = ErrorBody),
    ))]
pub async fn end_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.sessions.end(auth.user.id, &id).await? {
        return Err(ApiError::NotFound);
    }
    let detail = "one";
    audit_session_end(&state, &ctx, auth.user.id, detail).await;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    pub ended: usize,
}

/// Ends every session of the owner but this one ("sign out everywhere else").
#[utoipa::path(delete, path = "/v1/sessions/others", tag = "sessions", security(("session" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "The other sessions ended", body = Ended),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn end_others(
    State(state): State<AppState>,
    ctx: RequestContext,
    auth: AuthUser,
) -> Result<Json<Ended>, ApiError> {
    let ended = state.sessions.end_others(&auth.session).await?;
    audit_session_end(&state, &ctx, auth.user.id, "others").await;
    Ok(Json(Ended { ended }))
}

async fn audit_session_end(state: &AppState, ctx: &RequestContext, user: uuid::Uuid, which: &str) {
    audit::record(
        &state.db,
        &AuditEvent {
            user_id: Some(user),
            ip: Some(ctx.ip),
            request_id: ctx.request_id(),
            detail: Some(which),
            ..AuditEvent::new(Action::SessionEnd, Outcome::Success)
        },
    )
    .await;
}

/// The session cookie: HttpOnly (no script can read it), SameSite=Lax (not sent on
/// cross-site POSTs), Secure unless explicitly disabled for local http.
fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let name = sessions::cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
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
            "__Host-session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let plain = session_cookie("abc", 60, false);
        let plain = plain.to_str().expect("ascii");
        assert!(plain.starts_with("session=abc;") && !plain.contains("Secure"));
    }
}
