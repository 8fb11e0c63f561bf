//! Forgot password: the address form, and the same neutral page for every address.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use minijinja::context;
use serde::Deserialize;

use super::{Page, PageForm};
use crate::{error::ApiError, extract::RequestContext, recovery, state::AppState};

pub(super) async fn form(State(state): State<AppState>, ctx: RequestContext) -> Response {
    address_form(Page::new(&state, ctx.locale), StatusCode::OK, "", "")
}

fn address_form(page: Page<'_>, status: StatusCode, email: &str, error: &str) -> Response {
    page.render(status, "forgot.html", context! { email, error })
}

#[derive(Debug, Deserialize)]
pub(super) struct ForgotForm {
    email: String,
}

/// Same rules as `POST /v1/password/forgot`: the same neutral page for every address; only
/// the per-IP limit is visible.
pub(super) async fn submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    PageForm(form): PageForm<ForgotForm>,
) -> Response {
    let page = Page::new(&state, ctx.locale);
    match recovery::forgot(&state, &ctx, &form.email).await {
        Ok(()) => {
            let (title, text) = (page.t("sent_title"), page.t("sent_message"));
            page.message(StatusCode::OK, title, text, "notice", None)
        }
        Err(ApiError::InvalidEmail(_)) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            address_form(page, status, &form.email, page.t("invalid_email"))
        }
        Err(ApiError::RateLimitedIp { retry_after_secs }) => page.rate_limited(retry_after_secs),
        Err(ApiError::Unavailable(e)) => page.unavailable(&e),
        Err(e) => e.into_response(),
    }
}
