//! The passkeys page: sign in with a passkey, or add one to the signed-in account. The page
//! is static; its script (`assets/passkeys.js`) runs the two WebAuthn ceremonies against the
//! JSON routes (`POST /v1/sessions/passkey…`, `POST /v1/mfa/passkeys…`).

use axum::{extract::State, http::StatusCode, response::Response};
use minijinja::context;

use super::Page;
use crate::{extract::RequestContext, state::AppState};

/// Where the page is.
pub(super) const PATH: &str = "/passkeys";

pub(super) async fn page(State(state): State<AppState>, ctx: RequestContext) -> Response {
    Page::new(&state, ctx.locale).render(StatusCode::OK, "passkeys.html", context! {})
}
