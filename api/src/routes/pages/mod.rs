//! The HTML pages a person reaches from an email: forgot password, reset password (from the
//! link, or with the email's code), verify email, lock the account. Scanner-safe: GET and
//! HEAD only look; only a submitted form consumes. Each flow has its module and, like the
//! JSON routes, only translates HTTP to [`crate::recovery`], [`crate::lock`] and
//! [`super::users::verify`]; the texts are per-locale files (`templates/text/<locale>.json`).
//!
//! Security headers on every page ([`guard`]): `Referrer-Policy: strict-origin` (the URL may
//! carry a token: a `Referer` never carries more than our origin, to anyone, so no proxy log
//! records a token; and our own forms still get a real `Origin`, which `no-referrer` would
//! turn into `null`), no caching, a strict CSP (no inline script; the one script is a
//! same-origin file), no framing, no MIME sniffing. Everything works without JavaScript
//! except removing the token from the address bar.

mod forgot;
pub mod guard;
mod lock;
mod passkeys;
mod reset;
mod verify;

use std::collections::{BTreeMap, HashMap};

use axum::{
    Form, Router,
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use minijinja::{Environment, context};
use serde::{Deserialize, de::DeserializeOwned};
use shared::{links, locale::Locale};

use crate::{error::ApiError, state::AppState};

/// The page templates and texts, compiled into the binary and read once at start.
pub struct Pages {
    env: Environment<'static>,
    texts: HashMap<Locale, BTreeMap<String, String>>,
}

impl Pages {
    /// Parses every template and text file (a broken one stops the api at start).
    pub fn new() -> Result<Self, anyhow::Error> {
        let mut env = Environment::new();
        for (name, source) in [
            (
                "layout.html",
                include_str!("../../../templates/layout.html"),
            ),
            (
                "forgot.html",
                include_str!("../../../templates/forgot.html"),
            ),
            (
                "message.html",
                include_str!("../../../templates/message.html"),
            ),
            ("reset.html", include_str!("../../../templates/reset.html")),
            (
                "reset_fields.html",
                include_str!("../../../templates/reset_fields.html"),
            ),
            (
                "reset_code.html",
                include_str!("../../../templates/reset_code.html"),
            ),
            (
                "verify.html",
                include_str!("../../../templates/verify.html"),
            ),
            ("lock.html", include_str!("../../../templates/lock.html")),
            (
                "passkeys.html",
                include_str!("../../../templates/passkeys.html"),
            ),
        ] {
            env.add_template(name, source)?;
        }
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_formatter(shared::html::format_value);
        let mut texts = HashMap::new();
        for (locale, source) in [
            (Locale::En, include_str!("../../../templates/text/en.json")),
            (
                Locale::ZhCn,
                include_str!("../../../templates/text/zh-CN.json"),
            ),
            (Locale::Es, include_str!("../../../templates/text/es.json")),
            (Locale::Fr, include_str!("../../../templates/text/fr.json")),
            (Locale::De, include_str!("../../../templates/text/de.json")),
            (Locale::Ja, include_str!("../../../templates/text/ja.json")),
            (
                Locale::PtBr,
                include_str!("../../../templates/text/pt-BR.json"),
            ),
        ] {
            let table: BTreeMap<String, String> = serde_json::from_str(source)
                .map_err(|e| anyhow::anyhow!("page texts of {locale}: {e}"))?;
            texts.insert(locale, table);
        }
        Ok(Self { env, texts })
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// The texts of `locale` (English's for a locale without its own file).
    fn texts(&self, locale: Locale) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        (self.texts.get(&locale))
            .or_else(|| self.texts.get(&Locale::FALLBACK))
            .unwrap_or(&NONE)
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            links::FORGOT_PASSWORD_PATH,
            get(forgot::form).post(forgot::submit),
        )
        .route(
            links::RESET_PASSWORD_PATH,
            get(reset::form).post(reset::submit),
        )
        .route(reset::CODE_PATH, post(reset::code_submit))
        .route(reset::DONE_PATH, get(reset::done))
        .route(
            links::VERIFY_EMAIL_PATH,
            get(verify::form).post(verify::submit),
        )
        .route(links::LOCK_ACCOUNT_PATH, get(lock::form).post(lock::submit))
        .route(lock::DONE_PATH, get(lock::done))
        .route("/assets/app.css", get(guard::stylesheet))
        .route("/assets/clean-url.js", get(guard::script))
        .route(passkeys::PATH, get(passkeys::page))
        .route("/assets/passkeys.js", get(guard::passkeys_script))
        .route("/assets/reset-passkey.js", get(guard::reset_passkey_script))
        .layer(middleware::from_fn_with_state(
            state,
            guard::refuse_cross_site_posts,
        ))
        .layer(middleware::from_fn(guard::page_headers))
}

/// The `?token=` of a link; empty when the query has none or cannot be read.
struct LinkToken(String);

impl FromRequestParts<AppState> for LinkToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct TokenQuery {
            token: Option<String>,
        }
        let query = Query::<TokenQuery>::from_request_parts(parts, state).await;
        Ok(LinkToken(
            query.ok().and_then(|Query(q)| q.token).unwrap_or_default(),
        ))
    }
}

/// A submitted form; one that cannot be read is answered with the page that says so, in the
/// request's language.
struct PageForm<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let locale = crate::extract::locale(request.headers());
        match Form::<T>::from_request(request, state).await {
            Ok(Form(form)) => Ok(PageForm(form)),
            Err(_) => Err(Page::new(state, locale).bad_form()),
        }
    }
}

/// One page being answered: the state and the page's language.
#[derive(Clone, Copy)]
struct Page<'a> {
    state: &'a AppState,
    locale: Locale,
}

impl<'a> Page<'a> {
    fn new(state: &'a AppState, locale: Locale) -> Self {
        Self { state, locale }
    }

    /// The text `key` in the page's language (the key itself if it has none).
    fn t(&self, key: &'a str) -> &'a str {
        let texts = self.state.pages.texts(self.locale);
        texts.get(key).map_or(key, String::as_str)
    }

    /// Renders `template` with the page's texts and `ctx`; a template failure is a 500 logged
    /// once.
    fn render(&self, status: StatusCode, template: &str, ctx: minijinja::Value) -> Response {
        let ctx = context! {
            lang => self.locale.as_str(),
            product => self.state.config.product_name.clone(),
            t => self.state.pages.texts(self.locale),
            ..ctx
        };
        match self.state.pages.render(template, ctx) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                ApiError::Internal(anyhow::anyhow!("template {template}: {e}")).into_response()
            }
        }
    }

    /// A page with a title, one message and an optional button (its URL and label).
    fn message(
        &self,
        status: StatusCode,
        title: &str,
        text: &str,
        tone: &str,
        action: Option<(&str, &str)>,
    ) -> Response {
        let (action_url, action_label) = action.unwrap_or(("", ""));
        let ctx = context! { title, message => text, tone, action_url, action_label };
        self.render(status, "message.html", ctx)
    }

    /// A page whose form carries the link's token in a hidden field, with an optional error.
    fn form(&self, status: StatusCode, template: &str, token: &str, error: &str) -> Response {
        self.render(status, template, context! { token, error })
    }

    /// What a dependency outage looks like on a page.
    fn unavailable(&self, error: &anyhow::Error) -> Response {
        tracing::warn!(error = %format!("{error:#}"), "dependency unavailable");
        let (title, text) = (self.t("unavailable_title"), self.t("unavailable"));
        let r = self.message(StatusCode::SERVICE_UNAVAILABLE, title, text, "error", None);
        with_retry_after(r, 5)
    }

    /// A budget is spent: a 429 page with `Retry-After`.
    fn rate_limited(&self, retry_after_secs: u64) -> Response {
        let minutes = retry_after_secs.div_ceil(60).max(1).to_string();
        let text = self.t("rate_message").replace("{minutes}", &minutes);
        let title = self.t("rate_title");
        let r = self.message(StatusCode::TOO_MANY_REQUESTS, title, &text, "error", None);
        with_retry_after(r, retry_after_secs)
    }

    /// A form that could not be read.
    fn bad_form(&self) -> Response {
        let (title, text) = (self.t("bad_form_title"), self.t("bad_form"));
        self.message(StatusCode::BAD_REQUEST, title, text, "error", None)
    }

    /// What a refused new password looks like: the password policy's hint is English only,
    /// so the other languages say only their own sentence.
    fn weak_password(&self, hint: &str) -> String {
        match self.locale {
            Locale::En => format!("{} {hint}", self.t("weak")),
            Locale::ZhCn | Locale::Es | Locale::Fr | Locale::De | Locale::Ja | Locale::PtBr => {
                self.t("weak").to_owned()
            }
        }
    }

    /// The page for a link that cannot be used: no form, a way to get a new link.
    fn link_problem(&self, error: &ApiError) -> Response {
        let key = match error {
            ApiError::TokenExpired => "link_expired",
            ApiError::TokenUsed => "link_used",
            ApiError::Unavailable(e) => return self.unavailable(e),
            ApiError::RateLimitedIp { retry_after_secs }
            | ApiError::RateLimitedLogin { retry_after_secs } => {
                return self.rate_limited(*retry_after_secs);
            }
            _ => "link_invalid",
        };
        let action = (links::FORGOT_PASSWORD_PATH, self.t("new_link"));
        let title = self.t("link_problem_title");
        self.message(
            StatusCode::BAD_REQUEST,
            title,
            self.t(key),
            "error",
            Some(action),
        )
    }
}

/// `response` with `Retry-After` (at least a second).
fn with_retry_after(mut response: Response, secs: u64) -> Response {
    (response.headers_mut()).insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_and_text_file_parses_and_every_text_is_translated() {
        let pages = Pages::new().expect("templates and texts parse");
        let en = pages.texts(Locale::En);
        assert!(!en.is_empty());
        for locale in Locale::ALL.into_iter().filter(|&l| l != Locale::En) {
            // Its own table, not English's as the fallback.
            let texts =
                (pages.texts.get(&locale)).unwrap_or_else(|| panic!("{locale} has no texts"));
            assert_eq!(
                en.keys().collect::<Vec<_>>(),
                texts.keys().collect::<Vec<_>>(),
                "{locale} has exactly English's texts"
            );
            // Words a language took from English as they are.
            let loanwords: &[(Locale, &str)] = &[(Locale::De, "passkeys_title")];
            for (key, text) in en {
                let translated = &texts[key];
                if !loanwords.contains(&(locale, key.as_str())) {
                    assert_ne!(text, translated, "{locale}: {key} is translated");
                }
                assert_eq!(
                    text.contains("{minutes}"),
                    translated.contains("{minutes}"),
                    "{locale}: {key} keeps its placeholder"
                );
            }
        }
        // The page says what the JSON answer says.
        assert_eq!(
            en.get("sent_message").map(String::as_str),
            Some(crate::routes::password::FORGOT_ACCEPTED_MESSAGE)
        );
    }

    #[test]
    fn a_page_is_written_in_the_language_it_is_served_in() {
        let pages = Pages::new().expect("templates and texts parse");
        for locale in Locale::ALL {
            let texts = pages.texts(locale);
            let ctx = context! {
                lang => locale.as_str(),
                product => "Example Accounts",
                t => texts,
                error => "",
                email => "",
            };
            let html = pages.render("forgot.html", ctx).expect("renders");
            assert!(
                html.contains(&format!("<html lang=\"{locale}\">")),
                "{html}"
            );
            let title = shared::html::escape_html(&texts["forgot_title"]);
            assert!(
                html.contains(&format!("<h1>{title}</h1>")),
                "{locale}: {html}"
            );
        }
    }
}
