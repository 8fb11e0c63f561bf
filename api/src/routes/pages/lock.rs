//! Lock the account ("this wasn't me", from the password-changed email).

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use shared::token::Purpose;

use super::{LinkToken, Page, PageForm};
use crate::{error::ApiError, extract::RequestContext, recovery, state::AppState};

/// Where a lock sends the browser (303).
pub(super) const DONE_PATH: &str = "/lock-account/done";

/// Asks before locking: opening the link (a scanner, a preview) changes nothing; the button
/// locks.
pub(super) async fn form(
    State(state): State<AppState>,
    ctx: RequestContext,
    LinkToken(token): LinkToken,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    match recovery::inspect_link(&state, ctx.ip, Purpose::AccountLock, &token).await {
        Ok(_) => page.form(StatusCode::OK, "lock.html", &token, ""),
        Err(e) => page.link_problem(&e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LockForm {
    token: String,
    /// Typed by the person: a scanner that submits the form does not know it.
    #[serde(default)]
    email: String,
}

/// Locks exactly as `POST /v1/account/lock` does; success redirects (303) to a page saying
/// what happens next.
pub(super) async fn submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    PageForm(form): PageForm<LockForm>,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    let typed = Some(form.email.as_str());
    match crate::lock::with_link(&state, &ctx, &form.token, typed).await {
        Ok(()) => Redirect::to(DONE_PATH).into_response(),
        Err(ApiError::AddressMismatch) => {
            let error = page.t("lock_email_mismatch");
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            page.form(status, "lock.html", &form.token, error)
        }
        Err(e) => page.link_problem(&e),
    }
}

pub(super) async fn done(State(state): State<AppState>, ctx: RequestContext) -> Response {
    let page = Page::new(&state, ctx.locale);
    let (title, text) = (page.t("lock_done_title"), page.t("lock_done_message"));
    page.message(StatusCode::OK, title, text, "notice", None)
}
