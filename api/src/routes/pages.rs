//! The HTML pages a person reaches from an email: forgot password, reset password (from the
//! link), verify email. Scanner-safe: GET and HEAD only look; only a submitted form consumes.
//!
//! Security headers on every page: `Referrer-Policy: strict-origin` (the URL may carry a token:
//! a `Referer` never carries more than our origin, to anyone, so no proxy log records a token;
//! and our own forms still get a real `Origin`, which `no-referrer` would turn into `null`),
//! no caching, a
//! strict CSP (no inline script; the one script is a same-origin file), no framing, no MIME
//! sniffing. Everything works without JavaScript except removing the token from the address
//! bar.

use std::collections::BTreeMap;

use axum::{
    Form, Router,
    extract::{Query, Request, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use minijinja::{Environment, context};
use serde::Deserialize;
use shared::links;

use crate::{
    error::ApiError,
    extract::{ClientIp, Locale, RequestTrace},
    routes::{account, password, users},
    startup::AppState,
};

/// The page templates, compiled into the binary and parsed once at start.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    /// Parses every template (a broken one stops the api at start).
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            ("forgot.html", include_str!("../../templates/forgot.html")),
            ("message.html", include_str!("../../templates/message.html")),
            ("reset.html", include_str!("../../templates/reset.html")),
            (
                "reset_code.html",
                include_str!("../../templates/reset_code.html"),
            ),
            ("verify.html", include_str!("../../templates/verify.html")),
            ("lock.html", include_str!("../../templates/lock.html")),
        ] {
            env.add_template(name, source)?;
        }
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_formatter(shared::html::format_value);
        Ok(Self { env })
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            links::FORGOT_PASSWORD_PATH,
            get(forgot_form).post(forgot_submit),
        )
        .route(
            links::RESET_PASSWORD_PATH,
            get(reset_form).post(reset_submit),
        )
        .route(RESET_CODE_PATH, post(code_submit))
        .route("/reset-password/done", get(reset_done))
        .route(
            links::VERIFY_EMAIL_PATH,
            get(verify_form).post(verify_submit),
        )
        .route(links::LOCK_ACCOUNT_PATH, get(lock_form).post(lock_submit))
        .route("/lock-account/done", get(lock_done))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/clean-url.js", get(script))
        .layer(middleware::from_fn_with_state(
            state,
            refuse_cross_site_posts,
        ))
        .layer(middleware::from_fn(page_headers))
}

/// Refuses a form POST that a browser says came from another site: `Sec-Fetch-Site` other
/// than `same-origin` or `none` (typed or bookmarked); or, from a browser that does not send
/// `Sec-Fetch-Site`, an `Origin` other than `PUBLIC_BASE_URL`'s (`null` included: sandboxed
/// frames and data: pages send it). Without this, any page could make a visitor's browser
/// submit our forms (a forgot-password flood in the visitor's name, a reset with a link the
/// attacker holds). Requests with neither header (non-browser clients, very old browsers)
/// pass: they carry no ambient credentials a foreign site could borrow.
async fn refuse_cross_site_posts(
    State(state): State<AppState>,
    Locale(locale): Locale,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::POST
        && is_cross_site(request.headers(), &state.config.public_base_url)
    {
        metrics::counter!("cross_site_posts_refused_total").increment(1);
        return message(
            &state,
            locale,
            StatusCode::FORBIDDEN,
            &t(locale, "cross_site_title"),
            &t(locale, "cross_site"),
            "error",
            None,
        );
    }
    next.run(request).await
}

/// See [`refuse_cross_site_posts`]. `public_origin` has no trailing slash.
pub fn is_cross_site(headers: &axum::http::HeaderMap, public_origin: &str) -> bool {
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
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn page_headers(request: Request, next: Next) -> Response {
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

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/clean-url.js"),
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

/// Renders a page; a template failure is a 500 logged once.
fn page(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match state.pages.render(name, ctx) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::Internal(anyhow::anyhow!("template {name}: {e}")).into_response(),
    }
}

fn base(state: &AppState, locale: &str) -> minijinja::Value {
    context! {
        lang => locale,
        product => state.config.product_name.clone(),
        t => strings(locale),
    }
}

/// A page with a title, one message and an optional button.
fn message(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    title: &str,
    text: &str,
    tone: &str,
    action: Option<(&str, &str)>,
) -> Response {
    let (action_url, action_label) = action.unwrap_or(("", ""));
    let ctx = context! {
        ..base(state, locale),
        ..context! { title, message => text, tone, action_url, action_label }
    };
    page(state, status, "message.html", ctx)
}

fn t(locale: &str, key: &str) -> String {
    strings(locale).get(key).copied().unwrap_or(key).to_owned()
}

/// What a dependency outage looks like on a page.
fn unavailable(state: &AppState, locale: &str) -> Response {
    let mut r = message(
        state,
        locale,
        StatusCode::SERVICE_UNAVAILABLE,
        &t(locale, "unavailable_title"),
        &t(locale, "unavailable"),
        "error",
        None,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// The per-IP budget is spent: a 429 page with `Retry-After`.
fn rate_limited(state: &AppState, locale: &str, retry_after_secs: u64) -> Response {
    let minutes = retry_after_secs.div_ceil(60).max(1).to_string();
    let text = t(locale, "rate_message").replace("{minutes}", &minutes);
    let mut r = message(
        state,
        locale,
        StatusCode::TOO_MANY_REQUESTS,
        &t(locale, "rate_title"),
        &text,
        "error",
        None,
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    );
    r
}

fn bad_form(state: &AppState, locale: &str) -> Response {
    message(
        state,
        locale,
        StatusCode::BAD_REQUEST,
        &t(locale, "bad_form_title"),
        &t(locale, "bad_form"),
        "error",
        None,
    )
}

// ---- forgot password -----------------------------------------------------------------------

async fn forgot_form(State(state): State<AppState>, Locale(locale): Locale) -> Response {
    forgot_page(&state, locale, StatusCode::OK, "", "")
}

fn forgot_page(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    email: &str,
    error: &str,
) -> Response {
    let ctx = context! { ..base(state, locale), ..context! { email, error } };
    page(state, status, "forgot.html", ctx)
}

#[derive(Debug, Deserialize)]
struct ForgotForm {
    email: String,
}

/// Same rules as `POST /v1/password/forgot`: the same neutral page for every address; only
/// the per-IP limit is visible.
async fn forgot_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    form: Result<Form<ForgotForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form(&state, locale);
    };
    match password::forgot(&state, ip, locale, trace, &form.email).await {
        Ok(()) => message(
            &state,
            locale,
            StatusCode::OK,
            &t(locale, "sent_title"),
            &t(locale, "sent_message"),
            "notice",
            None,
        ),
        Err(ApiError::InvalidEmail(_)) => forgot_page(
            &state,
            locale,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form.email,
            &t(locale, "invalid_email"),
        ),
        Err(ApiError::RateLimitedIp { retry_after_secs }) => {
            rate_limited(&state, locale, retry_after_secs)
        }
        Err(ApiError::Unavailable(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "dependency unavailable");
            unavailable(&state, locale)
        }
        Err(e) => e.into_response(),
    }
}

// ---- reset password ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Where the code form posts.
const RESET_CODE_PATH: &str = "/reset-password/code";

/// Shows the form for a usable link, or says why the link cannot be used. Looks only: a mail
/// scanner that opens the link (GET or HEAD, any number of times) changes nothing. Opened
/// without a token (the address the reset email gives beside its code), the code form.
async fn reset_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    if token.is_empty() {
        return code_page(&state, locale, StatusCode::OK, "", "", "");
    }
    match password::inspect_reset_token(&state, ip, &token).await {
        Ok(()) => reset_page(&state, locale, StatusCode::OK, &token, ""),
        Err(e) => link_problem(&state, locale, &e),
    }
}

fn reset_page(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    token: &str,
    error: &str,
) -> Response {
    form_page(state, locale, status, "reset.html", token, error)
}

/// A page whose form carries the link's token in a hidden field, with an optional error.
fn form_page(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    template: &str,
    token: &str,
    error: &str,
) -> Response {
    let ctx = context! { ..base(state, locale), ..context! { token, error } };
    page(state, status, template, ctx)
}

/// The page for a link that cannot be used: no form, a way to get a new link.
fn link_problem(state: &AppState, locale: &str, error: &ApiError) -> Response {
    let key = match error {
        ApiError::TokenExpired => "link_expired",
        ApiError::TokenUsed => "link_used",
        ApiError::Unavailable(_) => return unavailable(state, locale),
        ApiError::RateLimitedIp { retry_after_secs }
        | ApiError::RateLimitedLogin { retry_after_secs } => {
            return rate_limited(state, locale, *retry_after_secs);
        }
        _ => "link_invalid",
    };
    message(
        state,
        locale,
        StatusCode::BAD_REQUEST,
        &t(locale, "link_problem_title"),
        &t(locale, key),
        "error",
        Some((links::FORGOT_PASSWORD_PATH, &t(locale, "new_link"))),
    )
}

#[derive(Debug, Deserialize)]
struct ResetForm {
    token: String,
    password: String,
    password_confirm: String,
}

/// Consumes the link exactly as `POST /v1/password/reset` does; success redirects (303) to a
/// page that sends the person to sign in (no automatic sign-in).
async fn reset_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    form: Result<Form<ResetForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form(&state, locale);
    };
    if form.password != form.password_confirm {
        return reset_page(
            &state,
            locale,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form.token,
            &t(locale, "mismatch"),
        );
    }
    match password::perform_reset(&state, ip, locale, trace, &form.token, form.password).await {
        Ok(proven) => {
            let done = Redirect::to("/reset-password/done").into_response();
            password::with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::WeakPassword(hint)) => {
            let text = if locale == "en" {
                format!("{} {hint}", t(locale, "weak"))
            } else {
                t(locale, "weak")
            };
            reset_page(
                &state,
                locale,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form.token,
                &text,
            )
        }
        Err(ApiError::PasswordTooLong) => reset_page(
            &state,
            locale,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form.token,
            &t(locale, "too_long"),
        ),
        Err(e) => link_problem(&state, locale, &e),
    }
}

/// The code form, with what was typed (never the passwords) and an optional error.
fn code_page(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    email: &str,
    code: &str,
    error: &str,
) -> Response {
    let ctx = context! { ..base(state, locale), ..context! { email, code, error } };
    page(state, status, "reset_code.html", ctx)
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    email: String,
    code: String,
    password: String,
    password_confirm: String,
}

/// Resets with a code exactly as `POST /v1/password/reset/code` does; success redirects (303)
/// to the same page as a reset by link.
async fn code_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form(&state, locale);
    };
    let again = |error: &str, status: StatusCode| {
        code_page(&state, locale, status, &form.email, &form.code, error)
    };
    if form.password != form.password_confirm {
        return again(&t(locale, "mismatch"), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let result = password::perform_code_reset(
        &state,
        ip,
        locale,
        trace,
        &form.email,
        &form.code,
        form.password.clone(),
    )
    .await;
    match result {
        Ok(proven) => {
            let done = Redirect::to("/reset-password/done").into_response();
            password::with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::CodeInvalid) => {
            // The typed code is not shown again: it is dead or wrong.
            code_page(
                &state,
                locale,
                StatusCode::BAD_REQUEST,
                &form.email,
                "",
                &t(locale, "code_invalid"),
            )
        }
        Err(ApiError::WeakPassword(hint)) => {
            let text = if locale == "en" {
                format!("{} {hint}", t(locale, "weak"))
            } else {
                t(locale, "weak")
            };
            again(&text, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(ApiError::PasswordTooLong) => {
            again(&t(locale, "too_long"), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(ApiError::InvalidEmail(_)) => again(
            &t(locale, "invalid_email"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(ApiError::RateLimitedIp { retry_after_secs }) => {
            rate_limited(&state, locale, retry_after_secs)
        }
        Err(ApiError::CodeEntryPaused { retry_after_secs }) => {
            let mut r = message(
                &state,
                locale,
                StatusCode::SERVICE_UNAVAILABLE,
                &t(locale, "code_paused_title"),
                &t(locale, "code_paused"),
                "error",
                None,
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
            r
        }
        Err(ApiError::Unavailable(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "dependency unavailable");
            unavailable(&state, locale)
        }
        Err(e) => e.into_response(),
    }
}

async fn reset_done(State(state): State<AppState>, Locale(locale): Locale) -> Response {
    let sign_in = format!("{}/", state.config.public_base_url);
    message(
        &state,
        locale,
        StatusCode::OK,
        &t(locale, "done_title"),
        &t(locale, "done_message"),
        "notice",
        Some((&sign_in, &t(locale, "sign_in"))),
    )
}

// ---- lock the account ("this wasn't me") ----------------------------------------------------

/// Asks before locking: opening the link (a scanner, a preview) changes nothing; the button
/// locks.
async fn lock_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    match account::inspect_lock_token(&state, ip, &token).await {
        Ok(()) => form_page(&state, locale, StatusCode::OK, "lock.html", &token, ""),
        Err(e) => link_problem(&state, locale, &e),
    }
}

#[derive(Debug, Deserialize)]
struct LockForm {
    token: String,
    /// Typed by the person: a scanner that submits the form does not know it.
    #[serde(default)]
    email: String,
}

/// Locks exactly as `POST /v1/account/lock` does; success redirects (303) to a page saying
/// what happens next.
async fn lock_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    form: Result<Form<LockForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form(&state, locale);
    };
    let typed = Some(form.email.as_str());
    match account::perform_lock(&state, ip, locale, trace, &form.token, typed).await {
        Ok(()) => Redirect::to("/lock-account/done").into_response(),
        Err(ApiError::AddressMismatch) => form_page(
            &state,
            locale,
            StatusCode::UNPROCESSABLE_ENTITY,
            "lock.html",
            &form.token,
            &t(locale, "lock_email_mismatch"),
        ),
        Err(e) => link_problem(&state, locale, &e),
    }
}

async fn lock_done(State(state): State<AppState>, Locale(locale): Locale) -> Response {
    message(
        &state,
        locale,
        StatusCode::OK,
        &t(locale, "lock_done_title"),
        &t(locale, "lock_done_message"),
        "notice",
        None,
    )
}

// ---- verify email --------------------------------------------------------------------------

/// Asks for the password before verifying: opening the link (a scanner) must not consume it,
/// and the link alone does not prove who chose the password (see `users::verify`).
async fn verify_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let request_id = trace.request_id.as_deref();
    if let Err(e) = crate::tokens::within_token_budget(&state, ip, request_id).await {
        return link_problem(&state, locale, &e);
    }
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    verify_page(&state, locale, StatusCode::OK, &token, "")
}

fn verify_page(
    state: &AppState,
    locale: &str,
    status: StatusCode,
    token: &str,
    error: &str,
) -> Response {
    form_page(state, locale, status, "verify.html", token, error)
}

#[derive(Debug, Deserialize)]
struct VerifyForm {
    token: String,
    password: String,
}

async fn verify_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Locale(locale): Locale,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_form(&state, locale);
    };
    match users::verify(&state, ip, &headers, &trace, &form.token, form.password).await {
        Ok(proven) => {
            let done = message(
                &state,
                locale,
                StatusCode::OK,
                &t(locale, "verified_title"),
                &t(locale, "verified_message"),
                "notice",
                None,
            );
            password::with_device(&state, &headers, &proven, done)
        }
        Err(ApiError::InvalidCredentials) => verify_page(
            &state,
            locale,
            StatusCode::UNAUTHORIZED,
            &form.token,
            &t(locale, "verify_wrong_password"),
        ),
        Err(ApiError::PasswordTooLong) => verify_page(
            &state,
            locale,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form.token,
            &t(locale, "too_long"),
        ),
        Err(e) => link_problem(&state, locale, &e),
    }
}

// ---- strings -------------------------------------------------------------------------------

/// The texts of the pages in `locale` (English for anything but Simplified Chinese).
fn strings(locale: &str) -> BTreeMap<&'static str, &'static str> {
    let table: &[(&str, &str, &str)] = &[
        ("forgot_title", "Forgot your password?", "忘记密码？"),
        (
            "forgot_intro",
            "Enter the email address of your account. If it has an account, we will send it a link to choose a new password.",
            "请输入您账户的电子邮箱地址。如果该地址有账户，我们会向它发送一个设置新密码的链接。",
        ),
        ("email_label", "Email address", "电子邮箱地址"),
        ("forgot_submit", "Send reset link", "发送重置链接"),
        ("sent_title", "Check your inbox", "请查收邮件"),
        (
            "sent_message",
            password::FORGOT_ACCEPTED_MESSAGE,
            "如果该地址有对应的账户，重置密码的链接已在发送途中。",
        ),
        ("rate_title", "Too many requests", "请求过于频繁"),
        (
            "rate_message",
            "Too many requests came from your network. Try again in {minutes} minutes.",
            "来自您网络的请求过多，请在 {minutes} 分钟后重试。",
        ),
        (
            "invalid_email",
            "Enter a valid email address.",
            "请输入有效的电子邮箱地址。",
        ),
        ("reset_title", "Choose a new password", "设置新密码"),
        ("new_password_label", "New password", "新密码"),
        (
            "confirm_password_label",
            "Repeat the new password",
            "再次输入新密码",
        ),
        (
            "password_hint",
            "At least 10 characters. A few unrelated words are easy to remember and hard to guess.",
            "至少 10 个字符。几个互不相关的词语既好记又难猜。",
        ),
        ("reset_submit", "Set new password", "设置新密码"),
        (
            "code_title",
            "Reset your password with a code",
            "使用验证码重置密码",
        ),
        (
            "code_intro",
            "Enter the address the reset email went to, the 8-digit code it shows, and a new password.",
            "请输入接收重置邮件的邮箱地址、邮件中的 8 位验证码以及新密码。",
        ),
        ("code_label", "Code from the email", "邮件中的验证码"),
        (
            "code_invalid",
            "This code is not valid. Check the address and the code, or request a new email.",
            "验证码无效。请检查邮箱地址和验证码，或重新获取邮件。",
        ),
        ("code_new_email", "Request a new email", "重新获取邮件"),
        (
            "code_paused_title",
            "Codes are paused for a moment",
            "验证码暂停使用",
        ),
        (
            "code_paused",
            "Too many wrong codes were entered on this site just now, so codes are paused for a few minutes. The link in your email still works; or try the code again later.",
            "本站刚刚有过多错误的验证码尝试，验证码暂停使用几分钟。邮件中的链接仍然有效；也可以稍后再试验证码。",
        ),
        (
            "mismatch",
            "The two passwords are not the same.",
            "两次输入的密码不一致。",
        ),
        (
            "weak",
            "This password is too easy to guess.",
            "该密码太容易被猜到，请换一个更长、更不常见的密码。",
        ),
        (
            "too_long",
            "Use at most 1024 bytes.",
            "密码不能超过 1024 字节。",
        ),
        (
            "link_problem_title",
            "This link cannot be used",
            "此链接无法使用",
        ),
        (
            "link_invalid",
            "This link is not valid, or a newer link has replaced it.",
            "此链接无效，或已被更新的链接取代。",
        ),
        ("link_expired", "This link has expired.", "此链接已过期。"),
        (
            "link_used",
            "This link has already been used.",
            "此链接已被使用过。",
        ),
        ("new_link", "Request a new link", "重新获取链接"),
        ("done_title", "Password changed", "密码已更改"),
        (
            "done_message",
            "Your password has been changed and you have been signed out everywhere. Sign in with your new password.",
            "您的密码已更改，所有设备均已退出登录。请使用新密码登录。",
        ),
        ("sign_in", "Sign in", "登录"),
        (
            "verify_title",
            "Confirm your email address",
            "确认您的电子邮箱地址",
        ),
        (
            "verify_intro",
            "Confirm that this email address belongs to you by entering the password of the account.",
            "请输入账户密码，以确认此电子邮箱地址属于您。",
        ),
        (
            "verify_password_label",
            "The password you chose when you signed up",
            "您注册时设置的密码",
        ),
        ("verify_submit", "Confirm", "确认"),
        (
            "verify_not_me",
            "Did not sign up, or do not know this password? Someone may have used your address. Choose a new password instead: that confirms the address, makes the account yours and signs everyone else out.",
            "没有注册过，或不知道这个密码？可能有人使用了您的地址。请改为设置新密码：这会确认该地址、让账户归您所有，并使其他人全部退出登录。",
        ),
        (
            "verify_not_me_action",
            "Choose a new password",
            "设置新密码",
        ),
        (
            "verify_wrong_password",
            "That is not the password of this account. The link still works: try again, or choose a new password below.",
            "该密码与此账户不符。链接仍然有效：请重试，或在下方设置新密码。",
        ),
        ("lock_title", "Lock your account?", "锁定您的账号？"),
        (
            "lock_intro",
            "If someone else changed your password, lock the account: everyone is signed out, the new password stops working, and we send you an email to choose another one.",
            "如果有其他人更改了您的密码，请锁定账号：所有设备将退出登录，新密码随即失效，我们会给您发送一封设置新密码的邮件。",
        ),
        ("lock_submit", "Lock my account", "锁定我的账号"),
        (
            "lock_email_label",
            "To confirm, type the email address this message was sent to",
            "请输入收到此邮件的邮箱地址以确认",
        ),
        (
            "lock_email_mismatch",
            "That is not the address this link was sent to. Nothing was changed; check it and try again.",
            "这不是接收此链接的邮箱地址。未做任何更改；请检查后重试。",
        ),
        (
            "lock_if_you",
            "If you changed the password yourself, close this page: nothing happens until you press the button.",
            "如果是您本人更改的密码，请关闭此页面：在您点击按钮之前不会有任何变化。",
        ),
        (
            "lock_done_title",
            "Your account is locked",
            "您的账号已锁定",
        ),
        (
            "lock_done_message",
            "Everyone has been signed out and the changed password no longer works. We are sending you an email to choose a new password; it unlocks the account.",
            "所有设备均已退出登录，被更改的密码已失效。我们正在给您发送一封设置新密码的邮件，设置新密码后账号即解除锁定。",
        ),
        ("cross_site_title", "Request refused", "请求被拒绝"),
        (
            "cross_site",
            "This form was sent from another website. Open this site directly and try again.",
            "此表单是从其他网站提交的。请直接打开本网站后重试。",
        ),
        (
            "verified_title",
            "Email address confirmed",
            "电子邮箱地址已确认",
        ),
        (
            "verified_message",
            "Thank you, your email address is confirmed.",
            "谢谢，您的电子邮箱地址已确认。",
        ),
        (
            "unavailable_title",
            "Temporarily unavailable",
            "暂时无法使用",
        ),
        (
            "unavailable",
            "A service we depend on is not responding. Try again in a moment.",
            "服务暂时无法响应，请稍后重试。",
        ),
        ("bad_form_title", "Something went wrong", "出错了"),
        (
            "bad_form",
            "The form could not be read. Go back and try again.",
            "无法读取表单，请返回重试。",
        ),
    ];
    let zh = locale == "zh-CN";
    table
        .iter()
        .map(|(k, en, cn)| (*k, if zh { *cn } else { *en }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_both_locales_have_every_string() {
        Pages::new().expect("templates parse");
        let en = strings("en");
        let zh = strings("zh-CN");
        assert_eq!(en.len(), zh.len());
        assert!(
            zh.values().zip(en.values()).all(|(z, e)| z != e),
            "every string is translated"
        );
    }
}
