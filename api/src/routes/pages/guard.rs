//! What every page shares beside its flow: the refusal of cross-site form posts, the
//! security headers, and the static assets.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::Page;
use crate::state::AppState;

/// Refuses a form POST that a browser says came from another site: `Sec-Fetch-Site` other
/// than `same-origin` or `none` (typed or bookmarked); or, from a browser that does not send
/// `Sec-Fetch-Site`, an `Origin` other than `PUBLIC_BASE_URL`'s (`null` included: sandboxed
/// frames and data: pages send it). Without this, any page could make a visitor's browser
/// submit our forms (a forgot-password flood in the visitor's name, a reset with a link the
/// attacker holds). Requests with neither header (non-browser clients, very old browsers)
/// pass: they carry no ambient credentials a foreign site could borrow.
pub(super) async fn refuse_cross_site_posts(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST
        && is_cross_site(request.headers(), &state.config.public_base_url)
    {
        metrics::counter!("cross_site_posts_refused_total").increment(1);
        let page = Page::new(&state, crate::extract::locale(request.headers()));
        let (title, text) = (page.t("cross_site_title"), page.t("cross_site"));
        return page.message(StatusCode::FORBIDDEN, title, text, "error", None);
    }
    next.run(request).await
}

/// See [`refuse_cross_site_posts`]. `public_origin` has no trailing slash.
pub fn is_cross_site(headers: &HeaderMap, public_origin: &str) -> bool {
    // The browser's own verdict, when it gives one, is the most reliable: it also covers
    // redirects through other sites, which `Origin` reports as `null`.
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str().unwrap_or(""), "same-origin" | "none");
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null"));
    origin.is_some_and(|origin| !origin.eq_ignore_ascii_case(public_origin))
}

/// Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; \
                       frame-ancestors 'none'";

/// The security headers of every page (see the module documentation of [`super`]).
pub(super) async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("referrer-policy", HeaderValue::from_static("strict-origin"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

pub(super) async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../assets/app.css"),
    )
}

pub(super) async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/clean-url.js"),
    )
}

pub(super) async fn passkeys_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/passkeys.js"),
    )
}

pub(super) async fn reset_passkey_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/reset-passkey.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
