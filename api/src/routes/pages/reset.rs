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
    error::ApiError, extract::RequestContext, recovery, routes::with_device, state::AppState,
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
        return code_form(page, StatusCode::OK, "", "", "");
    }
    match recovery::inspect_link(&state, ctx.ip, Purpose::PasswordReset, &token).await {
        Ok(()) => page.form(StatusCode::OK, "reset.html", &token, ""),
        Err(e) => page.link_problem(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ResetForm {
    token: String,
    password: String,
    password_confirm: String,
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
    let again = |error: &str| {
        page.form(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reset.html",
            &form.token,
            error,
        )
    };
    if form.password != form.password_confirm {
        return again(page.t("mismatch"));
    }
    let password = form.password.clone();
    match recovery::reset_with_link(&state, &ctx, &form.token, password).await {
        Ok(proven) => {
            let done = Redirect::to(DONE_PATH).into_response();
            with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::WeakPassword(hint)) => again(&page.weak_password(&hint)),
        Err(ApiError::PasswordTooLong) => again(page.t("too_long")),
        Err(ApiError::BreachedPassword) => again(page.t("breached")),
        Err(e) => page.link_problem(&e),
    }
}

/// The code form, with what was typed (never the passwords) and an optional error.
fn code_form(page: Page<'_>, status: StatusCode, email: &str, code: &str, error: &str) -> Response {
    page.render(status, "reset_code.html", context! { email, code, error })
}

#[derive(Debug, Deserialize)]
pub(super) struct CodeForm {
    email: String,
    code: String,
    password: String,
    password_confirm: String,
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
    let again = |error: &str| {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        code_form(page, status, &form.email, &form.code, error)
    };
    if form.password != form.password_confirm {
        return again(page.t("mismatch"));
    }
    let password = form.password.clone();
    match recovery::reset_with_code(&state, &ctx, &form.email, &form.code, password).await {
        Ok(proven) => {
            let done = Redirect::to(DONE_PATH).into_response();
            with_device(&state, &headers, &proven, done)
        }
        // The typed code is not shown again: it is dead or wrong.
        Err(ApiError::CodeInvalid) => {
            let error = page.t("code_invalid");
            code_form(page, StatusCode::BAD_REQUEST, &form.email, "", error)
        }
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
