//! Verify an email address: the link's page asks for the account's password.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{LinkToken, Page, PageForm};
use crate::{
    error::ApiError,
    extract::RequestContext,
    rate_limit::{IpBudget, within_budget},
    routes::{users, with_device},
    state::AppState,
};

/// Asks for the password before verifying: opening the link (a scanner) must not consume it,
/// and the link alone does not prove who chose the password (see [`users::verify`]).
pub(super) async fn form(
    State(state): State<AppState>,
    ctx: RequestContext,
    LinkToken(token): LinkToken,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    let (limiter, refusals) = (&state.limiter, &state.refusals);
    if let Err(e) = within_budget(limiter, refusals, IpBudget::Link, ctx.ip, ctx.request_id()).await
    {
        return page.link_problem(&e);
    }
    page.form(StatusCode::OK, "verify.html", &token, "")
}

#[derive(Debug, Deserialize)]
pub(super) struct VerifyForm {
    token: String,
    password: String,
}

pub(super) async fn submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    PageForm(form): PageForm<VerifyForm>,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    let again =
        |status: StatusCode, error: &str| page.form(status, "verify.html", &form.token, error);
    match users::verify(&state, &ctx, &headers, &form.token, form.password.clone()).await {
        Ok(proven) => {
            let (title, text) = (page.t("verified_title"), page.t("verified_message"));
            let done = page.message(StatusCode::OK, title, text, "notice", None);
            with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::InvalidCredentials) => {
            again(StatusCode::UNAUTHORIZED, page.t("verify_wrong_password"))
        }
        Err(ApiError::PasswordTooLong) => {
            again(StatusCode::UNPROCESSABLE_ENTITY, page.t("too_long"))
        }
        Err(e) => page.link_problem(&e),
    }
}
