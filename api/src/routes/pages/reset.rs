//! Reset password: the form of a reset link, the code form (the email's code, on another
//! device), and the page after either.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use minijinja::context;
use serde::Deserialize;
use shared::token::Purpose;

use super::{LinkToken, Page, PageForm, with_retry_after};
use crate::{
    error::ApiError, extract::RequestContext, mfa::Proof, recovery, routes::with_device,
    state::AppState,
};

/// Where the code form posts.
pub(super) const CODE_PATH: &str = "/reset-password/code";

/// Where a reset sends the browser (303).
pub(super) const DONE_PATH: &str = "/reset-password/done";

/// Shows the form for a usable link, or says why the link cannot be used. Looks only: a mail
/// scanner that opens the link (GET or HEAD, any number of times) changes nothing. Opened
/// without a token (the address the reset email gives beside its code), the code form.
pub(super) async fn form(
    State(state): State<AppState>,
    ctx: RequestContext,
    LinkToken(token): LinkToken,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    if token.is_empty() {
        let typed = CodeTyped {
            email: "",
            code: "",
            factor: false,
        };
        return code_form(page, StatusCode::OK, &typed, "");
    }
    let inspected = recovery::inspect_link(&state, ctx.ip, Purpose::PasswordReset, &token).await;
    let factor = match inspected {
        Ok(user) => crate::mfa::enrolment(&state, user.id)
            .await
            .map(|e| e.has_factor()),
        Err(e) => Err(e),
    };
    match factor {
        Ok(factor) => link_form(page, StatusCode::OK, &token, factor, ""),
        Err(e) => page.link_problem(&e),
    }
}

/// The form of a reset link; `factor`: with the field of the account's second factor (and,
/// where the site has passkeys, the button that proves it with one).
fn link_form(
    page: Page<'_>,
    status: StatusCode,
    token: &str,
    factor: bool,
    error: &str,
) -> Response {
    let passkeys = factor && page.state.passkeys.on();
    let ctx = context! { token, factor, passkeys, error };
    page.render(status, "reset.html", ctx)
}

#[derive(Debug, Deserialize)]
pub(super) struct ResetForm {
    token: String,
    password: String,
    password_confirm: String,
    /// A code of the authenticator app or a recovery code (the form has the field when the
    /// account has a second factor).
    #[serde(default)]
    second_factor: Option<String>,
    /// A passkey's answer, which the page's script puts here instead of a typed code.
    #[serde(default)]
    passkey: Option<String>,
}

/// Consumes the link exactly as `POST /v1/password/reset` does; success redirects (303) to a
/// page that sends the person to sign in (no automatic sign-in).
pub(super) async fn submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    PageForm(form): PageForm<ResetForm>,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    let proof = Proof::from_page(form.second_factor.as_deref(), form.passkey.as_deref());
    let Ok(factor) = proof else {
        let (status, error) = (StatusCode::UNAUTHORIZED, page.t("factor_invalid"));
        return link_form(page, status, &form.token, true, error);
    };
    let asked = factor.is_some();
    let again = |error: &str| {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        link_form(page, status, &form.token, asked, error)
    };
    if form.password != form.password_confirm {
        return again(page.t("mismatch"));
    }
    let password = form.password.clone();
    match recovery::reset_with_link(&state, &ctx, &form.token, password, factor).await {
        Ok(proven) => {
            let done = Redirect::to(DONE_PATH).into_response();
            with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::MfaRequired) => {
            let error = page.t("factor_required");
            link_form(page, StatusCode::FORBIDDEN, &form.token, true, error)
        }
        Err(ApiError::InvalidCode) => {
            let error = page.t("factor_invalid");
            link_form(page, StatusCode::UNAUTHORIZED, &form.token, true, error)
        }
        Err(ApiError::RateLimitedLogin { retry_after_secs }) => page.rate_limited(retry_after_secs),
        Err(ApiError::WeakPassword(hint)) => again(&page.weak_password(&hint)),
        Err(ApiError::PasswordTooLong) => again(page.t("too_long")),
        Err(ApiError::BreachedPassword) => again(page.t("breached")),
        Err(e) => page.link_problem(&e),
    }
}

/// The code form, with what was typed (never the passwords nor a factor's code) and an
/// optional error; `factor`: with the field of a second factor (once the code matched an
/// account that has one).
fn code_form(page: Page<'_>, status: StatusCode, typed: &CodeTyped<'_>, error: &str) -> Response {
    let CodeTyped {
        email,
        code,
        factor,
    } = *typed;
    let passkeys = factor && page.state.passkeys.on();
    let ctx = context! { email, code, factor, passkeys, error };
    page.render(status, "reset_code.html", ctx)
}

/// What the code form shows again.
#[derive(Clone, Copy)]
struct CodeTyped<'a> {
    email: &'a str,
    code: &'a str,
    factor: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct CodeForm {
    email: String,
    code: String,
    password: String,
    password_confirm: String,
    #[serde(default)]
    second_factor: Option<String>,
    #[serde(default)]
    passkey: Option<String>,
}

/// Resets with a code exactly as `POST /v1/password/reset/code` does; success redirects (303)
/// to the same page as a reset by link.
pub(super) async fn code_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    PageForm(form): PageForm<CodeForm>,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    let proof = Proof::from_page(form.second_factor.as_deref(), form.passkey.as_deref());
    let typed = CodeTyped {
        email: &form.email,
        code: &form.code,
        factor: !matches!(proof, Ok(None)),
    };
    let Ok(factor) = proof else {
        let (status, error) = (StatusCode::UNAUTHORIZED, page.t("factor_invalid"));
        return code_form(page, status, &typed, error);
    };
    let again = |error: &str| code_form(page, StatusCode::UNPROCESSABLE_ENTITY, &typed, error);
    if form.password != form.password_confirm {
        return again(page.t("mismatch"));
    }
    let password = form.password.clone();
    let (email, code) = (&form.email, &form.code);
    match recovery::reset_with_code(&state, &ctx, email, code, password, factor).await {
        Ok(proven) => {
            let done = Redirect::to(DONE_PATH).into_response();
            with_device(&state, &headers, &proven, done)
        }
        // The typed code is not shown again: it is dead or wrong.
        Err(ApiError::CodeInvalid) => {
            let error = page.t("code_invalid");
            let typed = CodeTyped { code: "", ..typed };
            code_form(page, StatusCode::BAD_REQUEST, &typed, error)
        }
        // The email's code matched an account with a second factor: it stays usable, and the
        // form asks for the factor too.
        Err(ApiError::MfaRequired) => {
            let typed = CodeTyped {
                factor: true,
                ..typed
            };
            code_form(
                page,
                StatusCode::FORBIDDEN,
                &typed,
                page.t("factor_required"),
            )
        }
        Err(ApiError::InvalidCode) => {
            let typed = CodeTyped {
                factor: true,
                ..typed
            };
            code_form(
                page,
                StatusCode::UNAUTHORIZED,
                &typed,
                page.t("factor_invalid"),
            )
        }
        Err(ApiError::RateLimitedLogin { retry_after_secs }) => page.rate_limited(retry_after_secs),
        Err(ApiError::WeakPassword(hint)) => again(&page.weak_password(&hint)),
        Err(ApiError::PasswordTooLong) => again(page.t("too_long")),
        Err(ApiError::BreachedPassword) => again(page.t("breached")),
        Err(ApiError::InvalidEmail(_)) => again(page.t("invalid_email")),
        Err(ApiError::RateLimitedIp { retry_after_secs }) => page.rate_limited(retry_after_secs),
        Err(ApiError::CodeEntryPaused { retry_after_secs }) => {
            let (title, text) = (page.t("code_paused_title"), page.t("code_paused"));
            let status = StatusCode::SERVICE_UNAVAILABLE;
            with_retry_after(
                page.message(status, title, text, "error", None),
                retry_after_secs,
            )
        }
        Err(ApiError::Unavailable(e)) => page.unavailable(&e),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn done(State(state): State<AppState>, ctx: RequestContext) -> Response {
    let page = Page::new(&state, ctx.locale);
    let sign_in = format!("{}/", state.config.public_base_url);
    let (title, text) = (page.t("done_title"), page.t("done_message"));
    let action = Some((sign_in.as_str(), page.t("sign_in")));
    page.message(StatusCode::OK, title, text, "notice", action)
}
