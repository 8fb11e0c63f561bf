//! Renders the emails the worker sends: subject, plain text and HTML, per kind and locale.
//!
//! Every template is compiled into the binary (`include_str!`) and parsed once in
//! [`Renderer::new`], so a broken template stops the worker at start instead of failing jobs.
//! Templates live in `mail-worker/templates/<locale>/<kind>.{subject,txt,html}.j2`; the
//! `.html.j2` ones are auto-escaped by minijinja (it decides by the name), the others are not.
//! An operator's own files replace or add to them by the same names ([`crate::templates`]).

use chrono::{DateTime, Utc};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use shared::{locale::Locale, message::SecurityEvent};

/// What an email says; the worker fills these from the job and its configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmailContent {
    /// A reset link was requested for an existing account.
    PasswordReset {
        /// The one-time reset link.
        link: String,
        /// The one-time code of the same link, as shown ("1234 5678"): for resetting on
        /// another device. Using either kills the other.
        code: String,
        /// The page that takes the code (the reset page without a token).
        code_url: String,
        /// How long the link stays valid.
        expires_in_minutes: u64,
        /// The client IP the request came from, when known.
        requested_from_ip: Option<String>,
    },
    /// Confirm a new account's address.
    EmailVerification {
        /// The verification link.
        link: String,
        /// How long the link stays valid.
        expires_in_hours: u64,
    },
    /// Someone tried to sign up with an address that already has an account.
    AccountExists {
        /// Where to sign in.
        sign_in_url: String,
        /// Where to ask for a reset link.
        forgot_password_url: String,
    },
    /// A reset was requested for an address with no account (only sent when the operator enables it).
    NoAccount {
        /// Where to create an account.
        sign_up_url: String,
    },
    /// The password was just changed.
    PasswordChanged {
        /// When the change was committed.
        changed_at: DateTime<Utc>,
        /// The client IP the change came from, when known.
        from_ip: Option<String>,
        /// Where to ask for a reset link if the change was not the owner's.
        forgot_password_url: String,
        /// The one-time "this wasn't me" link (locks the account, valid 7 days); `None` when
        /// a newer notice's link replaced it before this one went out.
        lock_url: Option<String>,
    },
    /// Something happened to the account's security (a sign-in from a new browser, a
    /// recovery code spent, a second factor added or removed, recovery codes replaced).
    SecurityNotice {
        /// What happened; the templates see it as `event.type` and its fields.
        event: SecurityEvent,
        /// When it happened (the job's creation).
        at: DateTime<Utc>,
        /// The client IP it came from, when known.
        from_ip: Option<String>,
        /// Where to ask for a reset link if it was not the owner.
        forgot_password_url: String,
        /// The one-time "this wasn't me" link (locks the account, valid 7 days); `None` when
        /// a newer notice's link replaced it before this one went out.
        lock_url: Option<String>,
    },
}

impl EmailContent {
    /// The template name stem; the same as the serde `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PasswordReset { .. } => "password_reset",
            Self::EmailVerification { .. } => "email_verification",
            Self::AccountExists { .. } => "account_exists",
            Self::NoAccount { .. } => "no_account",
            Self::PasswordChanged { .. } => "password_changed",
            Self::SecurityNotice { .. } => "security_notice",
        }
    }

    /// Every link the email carries, by field name: an email without one of them leaves its
    /// reader unable to act, so every template must write each one out.
    pub fn links(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::PasswordReset { link, code_url, .. } => {
                vec![("link", link), ("code_url", code_url)]
            }
            Self::EmailVerification { link, .. } => vec![("link", link)],
            Self::AccountExists {
                sign_in_url,
                forgot_password_url,
            } => vec![
                ("sign_in_url", sign_in_url),
                ("forgot_password_url", forgot_password_url),
            ],
            Self::NoAccount { sign_up_url } => vec![("sign_up_url", sign_up_url)],
            Self::PasswordChanged {
                forgot_password_url,
                lock_url,
                ..
            }
            | Self::SecurityNotice {
                forgot_password_url,
                lock_url,
                ..
            } => std::iter::once(("forgot_password_url", forgot_password_url.as_str()))
                .chain(lock_url.as_deref().map(|url| ("lock_url", url)))
                .collect(),
        }
    }
}

/// A rendered email, ready to be put into a `multipart/alternative` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, no control characters: safe to put in the `Subject` header.
    pub subject: String,
    /// The `text/plain` part, ending with a newline.
    pub text: String,
    /// The `text/html` part, ending with a newline.
    pub html: String,
}

/// Why an email could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The configured product name would be unsafe or empty in a subject line.
    #[error("the product name must be non-empty and contain no line breaks or control characters")]
    InvalidProductName,
    /// A template failed to parse or render.
    #[error("email template error: {0}")]
    Template(#[from] minijinja::Error),
}

/// Declares every template file once: the names of one locale's folder, and each file
/// embedded for every locale.
macro_rules! embedded_templates {
    ($($file:literal),* $(,)?) => {
        /// The files of one locale's folder: `layout.*` and `macros.*`, which the others
        /// extend and import, then every kind's subject, text and HTML.
        pub const TEMPLATE_FILES: &[&str] = &[$($file),*];

        /// `(name, source)` of every template; names are `<locale>/<file>`.
        const TEMPLATES: &[(&str, &str)] = &[$(
            (concat!("en/", $file), include_str!(concat!("../templates/en/", $file))),
            (concat!("zh-CN/", $file), include_str!(concat!("../templates/zh-CN/", $file))),
            (concat!("es/", $file), include_str!(concat!("../templates/es/", $file))),
            (concat!("fr/", $file), include_str!(concat!("../templates/fr/", $file))),
            (concat!("de/", $file), include_str!(concat!("../templates/de/", $file))),
            (concat!("ja/", $file), include_str!(concat!("../templates/ja/", $file))),
            (concat!("pt-BR/", $file), include_str!(concat!("../templates/pt-BR/", $file))),
        )*];
    };
}

embedded_templates![
    "layout.txt.j2",
    "layout.html.j2",
    "macros.html.j2",
    "password_reset.subject.j2",
    "password_reset.txt.j2",
    "password_reset.html.j2",
    "email_verification.subject.j2",
    "email_verification.txt.j2",
    "email_verification.html.j2",
    "account_exists.subject.j2",
    "account_exists.txt.j2",
    "account_exists.html.j2",
    "no_account.subject.j2",
    "no_account.txt.j2",
    "no_account.html.j2",
    "password_changed.subject.j2",
    "password_changed.txt.j2",
    "password_changed.html.j2",
    "security_notice.subject.j2",
    "security_notice.txt.j2",
    "security_notice.html.j2",
];

/// Renders every kind of email in every supported locale, and in the languages an operator's
/// template directory adds.
#[derive(Debug, Clone)]
pub struct Renderer {
    env: Environment<'static>,
    /// The locale folders templates exist for: the built-in ones, then those added.
    folders: Vec<String>,
}

impl Renderer {
    /// Parses every embedded template; `product_name` (e.g. "Example Accounts") appears in
    /// subjects and signatures.
    pub fn new(product_name: &str) -> Result<Self, RenderError> {
        let product_name = product_name.trim();
        // The name goes into the Subject header: a line break there is header injection.
        if product_name.is_empty() || product_name.chars().any(char::is_control) {
            return Err(RenderError::InvalidProductName);
        }
        let mut env = Environment::new();
        // A misspelt variable must fail the tests, not send an email with a hole in it.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_formatter(shared::html::format_value);
        env.add_global("product_name", product_name.to_owned());
        for &(name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        let folders = Locale::ALL.iter().map(|l| l.as_str().to_owned()).collect();
        Ok(Self { env, folders })
    }

    /// Adds the template `name` (`<folder>/<file>`), replacing a built-in one of that name;
    /// a folder not seen before is a new language. The caller checks names and renders every
    /// email before the renderer is used ([`crate::templates`]).
    pub(crate) fn add(&mut self, name: String, source: String) -> Result<(), minijinja::Error> {
        if let Some((folder, _)) = name.split_once('/')
            && !self.folders.iter().any(|f| f == folder)
        {
            self.folders.push(folder.to_owned());
        }
        self.env.add_template_owned(name, source)
    }

    /// The locale folders templates exist for.
    pub fn folders(&self) -> &[String] {
        &self.folders
    }

    /// The folder a BCP 47 `tag` is written from: a folder of that name (any case), else a
    /// folder an operator added for its language (`it` for `it-CH`), else the built-in locale
    /// the tag asks for ([`Locale::from_tag`], English when none).
    pub fn folder_for(&self, tag: &str) -> &str {
        let tag = tag.trim().replace('_', "-");
        let language = tag.split('-').next().unwrap_or_default();
        let added = || self.folders.iter().skip(Locale::ALL.len());
        (self.folders.iter())
            .find(|f| f.eq_ignore_ascii_case(&tag))
            .or_else(|| added().find(|f| f.eq_ignore_ascii_case(language)))
            .map_or(Locale::from_tag(&tag).as_str(), String::as_str)
    }

    /// Whether there are templates for `tag`'s language: a built-in locale that serves it, or
    /// a folder an operator added for the tag or its language.
    pub fn knows(&self, tag: &str) -> bool {
        let tag = tag.trim().replace('_', "-");
        let language = tag.split('-').next().unwrap_or_default();
        Locale::supported(&tag).is_some()
            || (self.folders.iter().skip(Locale::ALL.len()))
                .any(|f| f.eq_ignore_ascii_case(&tag) || f.eq_ignore_ascii_case(language))
    }

    /// Renders `content` in the language of `tag`, which may be one an operator added (see
    /// [`Self::folder_for`]). The worded durations (`expires_in`) of a folder the worker has
    /// no built-in locale for are English; its templates word them from `expires_in_minutes`
    /// and `expires_in_hours` instead.
    pub fn render_tag(&self, content: &EmailContent, tag: &str) -> Result<Rendered, RenderError> {
        let folder = self.folder_for(tag);
        self.render_in(content, folder, Locale::from_tag(folder))
    }

    /// The renderer with the template `name` (`<locale>/<kind>.<part>.j2`) replaced by
    /// `source`. For tests only: the embedded templates render every email.
    pub fn with_template(
        mut self,
        name: &'static str,
        source: &'static str,
    ) -> Result<Self, RenderError> {
        self.env.add_template(name, source)?;
        Ok(self)
    }

    /// Renders `content` in `locale`.
    pub fn render(&self, content: &EmailContent, locale: Locale) -> Result<Rendered, RenderError> {
        self.render_in(content, locale.as_str(), locale)
    }

    /// Renders `content` from the templates of `folder`, with durations worded in `words`.
    pub(crate) fn render_in(
        &self,
        content: &EmailContent,
        folder: &str,
        words: Locale,
    ) -> Result<Rendered, RenderError> {
        let kind = content.kind();
        let mut context = Context {
            content,
            expires_in: match content {
                EmailContent::PasswordReset {
                    expires_in_minutes, ..
                } => Some(minutes_phrase(*expires_in_minutes, words)),
                EmailContent::EmailVerification {
                    expires_in_hours, ..
                } => Some(hours_phrase(*expires_in_hours, words)),
                _ => None,
            },
            changed_at_utc: match content {
                EmailContent::PasswordChanged { changed_at, .. } => Some(utc_minutes(changed_at)),
                _ => None,
            },
            at_utc: match content {
                EmailContent::SecurityNotice { at, .. } => Some(utc_minutes(at)),
                _ => None,
            },
            subject: None,
        };

        let subject = self.render_part(folder, kind, "subject", &context)?;
        let subject = single_line(&subject);
        context.subject = Some(subject.clone());
        let text = self.render_part(folder, kind, "txt", &context)?;
        let html = self.render_part(folder, kind, "html", &context)?;
        Ok(Rendered {
            subject,
            text: tidy_text(&text),
            html: format!("{}\n", html.trim()),
        })
    }

    fn render_part(
        &self,
        folder: &str,
        kind: &str,
        part: &str,
        context: &Context<'_>,
    ) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(&format!("{folder}/{kind}.{part}.j2"))?;
        Ok(template.render(Value::from(Serde(context)))?)
    }
}

/// What the templates see: the content's fields plus values worded in Rust.
#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    content: &'a EmailContent,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_at_utc: Option<String>,
    /// A security notice's time, as `changed_at_utc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    at_utc: Option<String>,
    /// The rendered subject, for the HTML `<title>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

/// `2026-11-26 13:05 UTC`: how emails give a time.
fn utc_minutes(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A unit a duration is worded in.
#[derive(Clone, Copy)]
enum Unit {
    Minute,
    Hour,
}

/// "1 hour", "1 hour and 30 minutes", "45 minutes" in `locale`'s words ("1 Stunde und
/// 30 Minuten", "1 小时 30 分钟", "1時間30分").
fn minutes_phrase(minutes: u64, locale: Locale) -> String {
    match (minutes / 60, minutes % 60) {
        (0, 0) => less_than_one(Unit::Minute, locale).to_owned(),
        (0, m) => count(m, Unit::Minute, locale),
        (h, 0) => count(h, Unit::Hour, locale),
        (h, m) => {
            let (h, m) = (count(h, Unit::Hour, locale), count(m, Unit::Minute, locale));
            match locale {
                Locale::En => format!("{h} and {m}"),
                Locale::Es => format!("{h} y {m}"),
                Locale::Fr => format!("{h} et {m}"),
                Locale::De => format!("{h} und {m}"),
                Locale::PtBr => format!("{h} e {m}"),
                Locale::ZhCn => format!("{h} {m}"),
                Locale::Ja => format!("{h}{m}"),
            }
        }
    }
}

/// "24 hours", "1 hour" in `locale`'s words ("24 Stunden", "24 小时", "24時間").
fn hours_phrase(hours: u64, locale: Locale) -> String {
    match hours {
        0 => less_than_one(Unit::Hour, locale).to_owned(),
        h => count(h, Unit::Hour, locale),
    }
}

/// `n` (at least 1) of `unit`. In every language here but Chinese and Japanese, which have
/// no plural, 1 takes the singular and every larger number the plural.
fn count(n: u64, unit: Unit, locale: Locale) -> String {
    let (one, many) = match (locale, unit) {
        (Locale::En, Unit::Minute) => ("minute", "minutes"),
        (Locale::En, Unit::Hour) => ("hour", "hours"),
        (Locale::Es | Locale::PtBr, Unit::Minute) => ("minuto", "minutos"),
        (Locale::Es | Locale::PtBr, Unit::Hour) => ("hora", "horas"),
        (Locale::Fr, Unit::Minute) => ("minute", "minutes"),
        (Locale::Fr, Unit::Hour) => ("heure", "heures"),
        (Locale::De, Unit::Minute) => ("Minute", "Minuten"),
        (Locale::De, Unit::Hour) => ("Stunde", "Stunden"),
        (Locale::ZhCn, Unit::Minute) => return format!("{n} 分钟"),
        (Locale::ZhCn, Unit::Hour) => return format!("{n} 小时"),
        // Japanese writes a count against its unit.
        (Locale::Ja, Unit::Minute) => return format!("{n}分"),
        (Locale::Ja, Unit::Hour) => return format!("{n}時間"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "less than a minute" in `locale`'s words: what a zero count says.
fn less_than_one(unit: Unit, locale: Locale) -> &'static str {
    match (locale, unit) {
        (Locale::En, Unit::Minute) => "less than a minute",
        (Locale::En, Unit::Hour) => "less than an hour",
        (Locale::ZhCn, Unit::Minute) => "不到 1 分钟",
        (Locale::ZhCn, Unit::Hour) => "不到 1 小时",
        (Locale::Es, Unit::Minute) => "menos de un minuto",
        (Locale::Es, Unit::Hour) => "menos de una hora",
        (Locale::Fr, Unit::Minute) => "moins d’une minute",
        (Locale::Fr, Unit::Hour) => "moins d’une heure",
        (Locale::De, Unit::Minute) => "weniger als eine Minute",
        (Locale::De, Unit::Hour) => "weniger als eine Stunde",
        (Locale::Ja, Unit::Minute) => "1分未満",
        (Locale::Ja, Unit::Hour) => "1時間未満",
        (Locale::PtBr, Unit::Minute) => "menos de um minuto",
        (Locale::PtBr, Unit::Hour) => "menos de uma hora",
    }
}

/// Collapses all whitespace (line breaks included) and drops control characters, so the
/// subject is one header-safe line whatever a template or a value contained.
fn single_line(raw: &str) -> String {
    raw.split_whitespace()
        .map(|word| word.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops trailing spaces and runs of blank lines left by template tags; ends with one newline.
fn tidy_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0;
    for line in raw.trim().lines().map(str::trim_end) {
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// minijinja's formatter, except that HTML escaping leaves `/` alone.
///
/// The default escaper also turns `/` into `&#x2f;`, which is valid HTML but puts
/// `https:&#x2f;&#x2f;…` into every link of the source; people and tools that read the source
/// (link scanners, "copy link" in some clients) would see that. In quoted attributes and text,
/// escaping `& < > " '` is all that is needed.
#[cfg(test)]
mod tests {
    use super::*;

    /// The tags of every locale the templates exist for.
    const LOCALES: [&str; Locale::ALL.len()] = {
        let mut tags = [""; Locale::ALL.len()];
        let mut i = 0;
        while i < tags.len() {
            tags[i] = Locale::ALL[i].as_str();
            i += 1;
        }
        tags
    };

    const PRODUCT: &str = "Example Accounts";
    const RESET_LINK: &str =
        "https://accounts.example.com/reset-password?token=eyJ1aWQiOjF9.Zx1Tqg.abc-DEF_123&lang=en";

    fn renderer() -> Renderer {
        Renderer::new(PRODUCT).expect("the embedded templates parse")
    }

    fn render(content: &EmailContent, locale: &str) -> Rendered {
        renderer()
            .render(content, Locale::from_tag(locale))
            .expect("the email renders")
    }

    fn reset(minutes: u64, ip: Option<&str>) -> EmailContent {
        EmailContent::PasswordReset {
            link: RESET_LINK.to_owned(),
            code: "0123 4567".to_owned(),
            code_url: "https://accounts.example.com/reset-password".to_owned(),
            expires_in_minutes: minutes,
            requested_from_ip: ip.map(str::to_owned),
        }
    }

    fn changed(ip: Option<&str>) -> EmailContent {
        EmailContent::PasswordChanged {
            changed_at: DateTime::parse_from_rfc3339("2026-11-26T13:05:42Z")
                .expect("valid timestamp")
                .with_timezone(&Utc),
            from_ip: ip.map(str::to_owned),
            forgot_password_url: "https://accounts.example.com/forgot-password".to_owned(),
            lock_url: Some(LOCK_LINK.to_owned()),
        }
    }

    const LOCK_LINK: &str =
        "https://accounts.example.com/lock-account?token=eyJ1aWQiOjJ9.Zx1Tqg.lock-123";

    /// A security notice of `event` at 2026-11-26 13:05:42 UTC, from an IP, with its lock
    /// link when `lock` is set.
    fn security(event: SecurityEvent, lock: bool) -> EmailContent {
        EmailContent::SecurityNotice {
            event,
            at: DateTime::parse_from_rfc3339("2026-11-26T13:05:42Z")
                .expect("valid timestamp")
                .with_timezone(&Utc),
            from_ip: Some("198.51.100.23".to_owned()),
            forgot_password_url: FORGOT_LINK.to_owned(),
            lock_url: lock.then(|| LOCK_LINK.to_owned()),
        }
    }

    const FORGOT_LINK: &str = "https://accounts.example.com/forgot-password";

    fn signed_in(device: &str, ip_prefix: Option<&str>) -> SecurityEvent {
        SecurityEvent::NewSignIn {
            device: device.to_owned(),
            ip_prefix: ip_prefix.map(str::to_owned),
        }
    }

    /// Every event a security notice tells of, each way it is worded.
    fn security_events() -> Vec<SecurityEvent> {
        use shared::message::Factor;
        vec![
            signed_in("Firefox on Linux", Some("203.0.113.0/24")),
            signed_in("", None),
            SecurityEvent::RecoveryCodeUsed { remaining: 0 },
            SecurityEvent::RecoveryCodeUsed { remaining: 1 },
            SecurityEvent::RecoveryCodeUsed { remaining: 2 },
            SecurityEvent::RecoveryCodeUsed { remaining: 9 },
            SecurityEvent::FactorAdded {
                factor: Factor::Totp,
            },
            SecurityEvent::FactorAdded {
                factor: Factor::Passkey,
            },
            SecurityEvent::FactorRemoved {
                factor: Factor::Totp,
                by_support: false,
            },
            SecurityEvent::FactorRemoved {
                factor: Factor::Passkey,
                by_support: true,
            },
            SecurityEvent::RecoveryCodesReplaced,
        ]
    }

    /// One of each kind, with every optional value present, then a security notice of every
    /// event.
    fn every_kind() -> Vec<EmailContent> {
        let notices = security_events().into_iter().map(|e| security(e, true));
        vec![
            reset(60, Some("203.0.113.7")),
            EmailContent::EmailVerification {
                link: "https://accounts.example.com/verify-email?token=v.1&x=2".to_owned(),
                expires_in_hours: 24,
            },
            EmailContent::AccountExists {
                sign_in_url: "https://accounts.example.com/sign-in".to_owned(),
                forgot_password_url: "https://accounts.example.com/forgot-password".to_owned(),
            },
            EmailContent::NoAccount {
                sign_up_url: "https://accounts.example.com/sign-up?from=reset&src=mail".to_owned(),
            },
            changed(Some("198.51.100.23")),
        ]
        .into_iter()
        .chain(notices)
        .collect()
    }

    /// Every URL a content carries.
    fn urls(content: &EmailContent) -> Vec<&str> {
        content.links().into_iter().map(|(_, url)| url).collect()
    }

    fn has_chinese(text: &str) -> bool {
        text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
    }

    /// Terminal columns: CJK characters and full-width punctuation take two.
    fn columns(line: &str) -> usize {
        line.chars()
            .map(|c| if c >= '\u{1100}' { 2 } else { 1 })
            .sum()
    }

    #[test]
    fn every_kind_renders_in_every_locale_with_all_three_parts() {
        for locale in LOCALES {
            for content in every_kind() {
                let mail = render(&content, locale);
                assert!(!mail.subject.is_empty(), "{locale} {content:?}");
                assert!(mail.text.trim().len() > 100, "{locale} {content:?}");
                assert!(
                    mail.html.starts_with("<!DOCTYPE html>"),
                    "{locale} {content:?}"
                );
                assert!(mail.html.contains(&format!("<html lang=\"{locale}\">")));
                assert!(mail.text.ends_with('\n') && !mail.text.ends_with("\n\n"));
                assert!(!mail.text.contains("\n\n\n"), "{}", mail.text);
                assert!(mail.text.contains(PRODUCT) && mail.html.contains(PRODUCT));
            }
        }
    }

    #[test]
    fn every_link_appears_verbatim_in_text_and_html_escaped_in_html() {
        for locale in LOCALES {
            for content in every_kind() {
                let mail = render(&content, locale);
                for url in urls(&content) {
                    let escaped = url.replace('&', "&amp;");
                    assert!(
                        mail.text.lines().any(|line| line == url),
                        "{locale}: {url} is not on a line of its own in\n{}",
                        mail.text
                    );
                    assert!(mail.html.contains(&format!("href=\"{escaped}\"")), "{url}");
                    assert!(mail.html.contains(&format!(">{escaped}</a>")), "{url}");
                }
            }
        }
        let mail = render(&reset(60, None), "en");
        assert!(mail.text.contains("abc-DEF_123&lang=en"));
        assert!(mail.html.contains("abc-DEF_123&amp;lang=en"));
        assert!(!mail.html.contains("&#x2f;"), "slashes stay readable");
    }

    #[test]
    fn a_button_link_is_also_written_out_under_the_button() {
        let mail = render(&reset(60, None), "en");
        let link = RESET_LINK.replace('&', "&amp;");
        assert_eq!(mail.html.matches(&format!("href=\"{link}\"")).count(), 2);
        assert!(mail.html.contains("copy this link into your browser"));
        let mail = render(&reset(60, None), "zh-CN");
        assert!(mail.html.contains("复制到浏览器"));
    }

    #[test]
    fn an_attacker_controlled_ip_is_escaped_in_html() {
        let script = "<script>alert(1)</script>\"'";
        for locale in LOCALES {
            let notice = security(signed_in(script, None), true);
            let EmailContent::SecurityNotice {
                event,
                at,
                forgot_password_url,
                lock_url,
                ..
            } = security(SecurityEvent::RecoveryCodesReplaced, false)
            else {
                unreachable!()
            };
            let from_ip = Some(script.to_owned());
            let replaced = EmailContent::SecurityNotice {
                event,
                at,
                from_ip,
                forgot_password_url,
                lock_url,
            };
            for content in [
                reset(60, Some(script)),
                changed(Some(script)),
                notice,
                replaced,
            ] {
                let mail = render(&content, locale);
                assert!(!mail.html.contains("<script"), "{}", mail.html);
                assert!(
                    mail.html
                        .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;")
                );
                assert!(mail.text.contains(script), "the text part is not HTML");
            }
        }
    }

    #[test]
    fn a_product_name_with_markup_is_escaped_in_html() {
        let mail = Renderer::new("A&B <Accounts>")
            .expect("a valid name")
            .render(&reset(60, None), Locale::En)
            .expect("renders");
        assert!(mail.html.contains("A&amp;B &lt;Accounts&gt;"));
        assert!(!mail.html.contains("<Accounts>"));
        assert_eq!(mail.subject, "Reset your A&B <Accounts> password");
    }

    #[test]
    fn the_request_ip_is_shown_when_known_and_left_out_when_not() {
        let mail = render(&reset(60, Some("203.0.113.7")), "en");
        assert!(
            mail.text
                .contains("The request came from the IP address 203.0.113.7.")
        );
        assert!(mail.html.contains("<strong>203.0.113.7</strong>"));
        let mail = render(&reset(60, None), "en");
        assert!(!mail.text.contains("IP address"), "{}", mail.text);
        assert!(!mail.html.contains("IP address"));
        let mail = render(&reset(60, Some("2001:db8::1")), "zh-CN");
        assert!(mail.text.contains("此请求来自 IP 地址 2001:db8::1。"));
        let mail = render(&changed(None), "zh-CN");
        assert!(!mail.text.contains("IP"), "{}", mail.text);
    }

    #[test]
    fn the_reset_email_says_when_the_link_expires_that_it_works_once_and_what_to_do_if_unasked() {
        let mail = render(&reset(60, None), "en");
        assert!(
            mail.text
                .contains("This link expires in 1 hour and works only once.")
        );
        assert!(
            mail.html
                .contains("This link expires in <strong>1 hour</strong>")
        );
        assert!(mail.text.contains(
            "If you did not ask for this, ignore this email; your password has not\nchanged."
        ));
        assert!(mail.text.contains(
            "Enter your email address and this code\non the page below:\n\n    0123 4567\n\nhttps://accounts.example.com/reset-password\n"
        ), "{}", mail.text);
        assert!(mail.html.contains(">0123 4567</p>"));
        assert!(mail.text.contains("using either one ends the other"));
        let mail = render(&reset(90, None), "zh-CN");
        assert!(
            mail.text
                .contains("该链接将在 1 小时 30 分钟后失效，且只能使用一次。")
        );
        assert!(
            mail.text.contains("验证码：\n\n    0123 4567\n"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("您的密码并未更改"));
    }

    #[test]
    fn expiry_is_worded_in_natural_hours_and_minutes_in_every_language() {
        let cases: [(u64, [&str; 5]); 7] = [
            (
                0,
                [
                    "menos de un minuto",
                    "moins d’une minute",
                    "weniger als eine Minute",
                    "1分未満",
                    "menos de um minuto",
                ],
            ),
            (1, ["1 minuto", "1 minute", "1 Minute", "1分", "1 minuto"]),
            (
                30,
                [
                    "30 minutos",
                    "30 minutes",
                    "30 Minuten",
                    "30分",
                    "30 minutos",
                ],
            ),
            (60, ["1 hora", "1 heure", "1 Stunde", "1時間", "1 hora"]),
            (
                61,
                [
                    "1 hora y 1 minuto",
                    "1 heure et 1 minute",
                    "1 Stunde und 1 Minute",
                    "1時間1分",
                    "1 hora e 1 minuto",
                ],
            ),
            (
                150,
                [
                    "2 horas y 30 minutos",
                    "2 heures et 30 minutes",
                    "2 Stunden und 30 Minuten",
                    "2時間30分",
                    "2 horas e 30 minutos",
                ],
            ),
            (
                1440,
                ["24 horas", "24 heures", "24 Stunden", "24時間", "24 horas"],
            ),
        ];
        let locales = [Locale::Es, Locale::Fr, Locale::De, Locale::Ja, Locale::PtBr];
        for (minutes, expected) in cases {
            for (locale, phrase) in locales.into_iter().zip(expected) {
                assert_eq!(minutes_phrase(minutes, locale), phrase, "{locale}");
            }
        }
        let hours = [
            (Locale::Es, "1 hora", "48 horas", "menos de una hora"),
            (Locale::Fr, "1 heure", "48 heures", "moins d’une heure"),
            (
                Locale::De,
                "1 Stunde",
                "48 Stunden",
                "weniger als eine Stunde",
            ),
            (Locale::Ja, "1時間", "48時間", "1時間未満"),
            (Locale::PtBr, "1 hora", "48 horas", "menos de uma hora"),
        ];
        for (locale, one, many, none) in hours {
            assert_eq!(hours_phrase(1, locale), one);
            assert_eq!(hours_phrase(48, locale), many);
            assert_eq!(hours_phrase(0, locale), none);
        }
    }

    #[test]
    fn every_locale_says_when_its_links_expire_in_a_whole_sentence() {
        let expected = [
            (
                "es",
                "Este enlace caduca en 1 hora y 30 minutos y solo se puede usar una vez.",
                "Este enlace caduca en 24 horas.",
            ),
            (
                "fr",
                "Ce lien expire dans 1 heure et 30 minutes et ne fonctionne qu’une seule fois.",
                "Ce lien expire dans 24 heures.",
            ),
            (
                "de",
                "Dieser Link ist 1 Stunde und 30 Minuten gültig und funktioniert nur einmal.",
                "Dieser Link ist 24 Stunden gültig.",
            ),
            (
                "ja",
                "このリンクの有効期間は1時間30分で、一度だけ使用できます。",
                "このリンクの有効期間は24時間です。",
            ),
            (
                "pt-BR",
                "Este link expira em 1 hora e 30 minutos e só pode ser usado uma vez.",
                "Este link expira em 24 horas.",
            ),
        ];
        for (locale, reset_sentence, verify_sentence) in expected {
            let html = render(&reset(90, None), locale).html;
            let html = html.replace("<strong>", "").replace("</strong>", "");
            assert!(html.contains(reset_sentence), "{locale}: {html}");
            let text = render(&every_kind()[1], locale).text;
            assert!(text.contains(verify_sentence), "{locale}: {text}");
        }
    }

    #[test]
    fn expiry_is_worded_in_natural_hours_and_minutes() {
        let cases = [
            (0, "less than a minute", "不到 1 分钟"),
            (1, "1 minute", "1 分钟"),
            (30, "30 minutes", "30 分钟"),
            (60, "1 hour", "1 小时"),
            (61, "1 hour and 1 minute", "1 小时 1 分钟"),
            (90, "1 hour and 30 minutes", "1 小时 30 分钟"),
            (120, "2 hours", "2 小时"),
            (1440, "24 hours", "24 小时"),
        ];
        for (minutes, en, zh) in cases {
            assert_eq!(minutes_phrase(minutes, Locale::En), en);
            assert_eq!(minutes_phrase(minutes, Locale::ZhCn), zh);
        }
        assert_eq!(hours_phrase(1, Locale::En), "1 hour");
        assert_eq!(hours_phrase(48, Locale::En), "48 hours");
        assert_eq!(hours_phrase(24, Locale::ZhCn), "24 小时");
    }

    #[test]
    fn the_verification_email_gives_its_expiry_in_hours() {
        let content = EmailContent::EmailVerification {
            link: "https://accounts.example.com/verify-email?token=t".to_owned(),
            expires_in_hours: 24,
        };
        let mail = render(&content, "en");
        assert!(mail.text.contains("This link expires in 24 hours."));
        assert!(
            mail.text
                .contains("If you did not sign up for Example Accounts, ignore this email")
        );
        let mail = render(&content, "zh-CN");
        assert!(mail.text.contains("该链接将在 24 小时后失效。"));
    }

    #[test]
    fn the_password_changed_email_gives_the_utc_time_the_ip_and_what_to_do() {
        let mail = render(&changed(Some("198.51.100.23")), "en");
        assert!(mail.text.contains("2026-11-26 13:05 UTC"));
        assert!(mail.text.contains("198.51.100.23"));
        assert!(mail.text.contains("Or reset your password yourself:"));
        assert!(mail.text.contains("contact Example Accounts\nsupport"));
        assert!(mail.html.contains("<strong>2026-11-26 13:05 UTC</strong>"));
        let mail = render(&changed(None), "zh-CN");
        assert!(mail.text.contains("已于 2026-11-26 13:05 UTC 更改"));
        assert!(mail.text.contains("请立即锁定账号"));
    }

    #[test]
    fn chinese_emails_are_in_chinese_and_english_ones_are_not() {
        for content in every_kind() {
            let zh = render(&content, "zh-CN");
            assert!(has_chinese(&zh.subject) && has_chinese(&zh.text) && has_chinese(&zh.html));
            let en = render(&content, "en");
            assert!(!has_chinese(&en.subject) && !has_chinese(&en.text) && !has_chinese(&en.html));
        }
    }

    /// Whether `text` has Japanese kana (which Chinese does not use).
    fn has_kana(text: &str) -> bool {
        text.chars().any(|c| ('\u{3041}'..='\u{30ff}').contains(&c))
    }

    /// Words each language's emails use in every subject, text and HTML part, and that no
    /// other language's emails here contain as words.
    fn markers(locale: &str) -> &'static [&'static str] {
        match locale {
            "en" => &["your", "you", "this"],
            "es" => &["tu", "cuenta", "dirección", "contraseña"],
            "fr" => &["votre", "vous", "compte"],
            "de" => &["ihr", "ihre", "sie", "konto"],
            "pt-BR" => &["sua", "você", "conta"],
            _ => &[],
        }
    }

    fn words(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    #[test]
    fn every_locale_is_written_in_its_own_language_and_not_left_in_english() {
        for locale in LOCALES {
            for content in every_kind() {
                let mail = render(&content, locale);
                for (part, text) in [
                    ("subject", &mail.subject),
                    ("text", &mail.text),
                    ("html", &mail.html),
                ] {
                    let words = words(text);
                    let own = markers(locale);
                    assert!(
                        own.is_empty() || own.iter().any(|m| words.iter().any(|w| w == m)),
                        "{locale} {part} has none of {own:?}: {text}"
                    );
                    for other in LOCALES.into_iter().filter(|&l| l != locale) {
                        for marker in markers(other) {
                            assert!(
                                !words.iter().any(|w| w == marker),
                                "{locale} {part} has {other}'s {marker:?}: {text}"
                            );
                        }
                    }
                    match locale {
                        "ja" => assert!(has_kana(text), "{part}: {text}"),
                        "zh-CN" => assert!(has_chinese(text) && !has_kana(text), "{part}"),
                        _ => assert!(!has_chinese(text) && !has_kana(text), "{part}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_tag_is_written_from_its_folder_else_its_languages_else_a_built_in_one() {
        let mut renderer = renderer();
        for folder in ["it", "pt", "zh-TW"] {
            (renderer.add(format!("{folder}/no_account.subject.j2"), "x".into())).expect("parses");
        }
        let cases = [
            ("it", "it"),
            ("it-CH", "it"),
            ("IT", "it"),
            ("pt-PT", "pt"),
            ("pt", "pt"),
            ("pt-BR", "pt-BR"),
            ("zh-TW", "zh-TW"),
            ("zh_tw", "zh-TW"),
            ("zh-HK", "en"),
            ("zh-Hans", "zh-CN"),
            ("de-AT", "de"),
            ("ko", "en"),
            ("", "en"),
        ];
        for (tag, folder) in cases {
            assert_eq!(renderer.folder_for(tag), folder, "{tag}");
        }
        let built_in = self::renderer();
        assert_eq!(built_in.folder_for("pt-PT"), "pt-BR");
        assert_eq!(built_in.folder_for("it-CH"), "en");
    }

    #[test]
    fn a_language_is_known_by_a_built_in_locale_or_a_folder_added_for_it() {
        let built_in = renderer();
        for (tag, known) in [
            ("de-AT", true),
            ("pt-pt", true),
            ("it", false),
            ("zh-HK", false),
        ] {
            assert_eq!(built_in.knows(tag), known, "{tag}");
        }
        let mut added = renderer();
        (added.add("it/no_account.subject.j2".into(), "x".into())).expect("parses");
        for (tag, known) in [
            ("it", true),
            ("it-ch", true),
            ("IT_CH", true),
            ("ko", false),
        ] {
            assert_eq!(added.knows(tag), known, "{tag}");
        }
    }

    #[test]
    fn an_unknown_locale_falls_back_to_english() {
        for locale in ["it", "", "zh-TW", "ko-KR", "../../etc/passwd"] {
            assert_eq!(
                render(&reset(60, None), locale),
                render(&reset(60, None), "en")
            );
        }
        assert_eq!(
            render(&reset(60, None), "zh-Hans"),
            render(&reset(60, None), "zh-CN")
        );
        for (asked, written) in [("pt-PT", "pt-BR"), ("es-MX", "es"), ("de-AT", "de")] {
            assert_eq!(
                render(&reset(60, None), asked),
                render(&reset(60, None), written)
            );
        }
    }

    #[test]
    fn subjects_are_one_short_line_with_the_product_name_and_no_trailing_punctuation() {
        let expected = [
            ("en", "Reset your Example Accounts password"),
            ("zh-CN", "重置您的 Example Accounts 密码"),
            ("es", "Restablece tu contraseña de Example Accounts"),
            ("fr", "Réinitialisez votre mot de passe Example Accounts"),
            ("de", "Ihr Passwort für Example Accounts zurücksetzen"),
            ("ja", "Example Accounts のパスワード再設定"),
            ("pt-BR", "Redefina a senha da sua conta Example Accounts"),
        ];
        for (locale, subject) in expected {
            assert_eq!(render(&reset(60, None), locale).subject, subject);
        }
        for locale in LOCALES {
            for content in every_kind() {
                let subject = render(&content, locale).subject;
                assert!(subject.contains(PRODUCT), "{subject}");
                assert!(!subject.chars().any(char::is_control), "{subject:?}");
                assert_eq!(subject.trim(), subject);
                assert!(subject.chars().count() <= 60, "{subject}");
                let last = subject.chars().last().expect("non-empty");
                assert!(!".!?:;。！？：；".contains(last), "{subject}");
            }
        }
    }

    #[test]
    fn a_product_name_that_could_inject_headers_is_rejected() {
        for name in ["Example\r\nBcc: victim@example.com", "Tab\tName", "", "   "] {
            assert!(
                matches!(Renderer::new(name), Err(RenderError::InvalidProductName)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn text_lines_stay_under_80_columns_and_urls_are_never_broken() {
        for locale in LOCALES {
            for content in every_kind() {
                let mail = render(&content, locale);
                for line in mail.text.lines() {
                    let is_url = urls(&content).contains(&line);
                    assert!(is_url || columns(line) < 80, "{locale}: {line:?}");
                }
            }
        }
    }

    #[test]
    fn html_loads_nothing_from_outside_and_uses_inline_styles_only() {
        for locale in LOCALES {
            for content in every_kind() {
                let html = render(&content, locale).html.to_lowercase();
                for banned in [
                    "<img", "<script", "<link", "<style", "@import", "url(", "<table", " src=",
                ] {
                    assert!(!html.contains(banned), "{locale}: {banned}");
                }
                assert!(html.contains("name=\"viewport\""));
            }
        }
    }

    #[test]
    fn the_html_title_is_the_subject() {
        let mail = render(&changed(None), "en");
        assert!(
            mail.html
                .contains("<title>Your Example Accounts password was changed</title>")
        );
    }

    #[test]
    fn the_password_changed_notice_offers_to_lock_the_account_and_says_what_that_does() {
        let mail = render(&changed(None), "en");
        assert!(
            mail.text
                .contains("If this wasn't you, lock your account now"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains(&format!("\n{LOCK_LINK}\n")));
        assert!(
            mail.text.contains("works once, for 7 days"),
            "{}",
            mail.text
        );
        assert!(
            mail.html.contains("This wasn&#x27;t me: lock my account")
                || mail.html.contains("This wasn't me: lock my account"),
            "{}",
            mail.html
        );
        let mail = render(&changed(None), "zh-CN");
        assert!(mail.text.contains(&format!("\n{LOCK_LINK}\n")));
        assert!(mail.text.contains("锁定"), "{}", mail.text);
        // Without a live link the notice still goes, pointing to a reset instead.
        let EmailContent::PasswordChanged {
            changed_at,
            from_ip,
            forgot_password_url,
            ..
        } = changed(None)
        else {
            unreachable!()
        };
        let without = EmailContent::PasswordChanged {
            changed_at,
            from_ip,
            forgot_password_url,
            lock_url: None,
        };
        for locale in LOCALES {
            let mail = render(&without, locale);
            assert!(!mail.text.contains("lock-account"), "{}", mail.text);
            assert!(
                mail.text
                    .contains("https://accounts.example.com/forgot-password")
            );
        }
    }

    #[test]
    fn notices_link_to_where_the_reader_can_act() {
        let mail = render(&every_kind()[2], "en");
        assert!(
            mail.text.contains("you already have an account")
                || mail.text.contains("You already have an account")
        );
        assert!(mail.text.contains("If it wasn't you, no action is needed"));
        let mail = render(&every_kind()[3], "en");
        assert!(mail.text.contains("there is no account with this address"));
        assert!(mail.text.contains("If it wasn't you, ignore this email"));
    }

    #[test]
    fn each_security_notice_says_what_happened_when_and_offers_to_lock_the_account() {
        use shared::message::Factor;
        let cases: [(SecurityEvent, &str, &[&str]); 8] = [
            (
                signed_in("Firefox on Linux", Some("203.0.113.0/24")),
                "New sign-in to your Example Accounts account",
                &[
                    "Your Example Accounts account was signed in to from a browser that had\n\
                     not signed in to it before:",
                    "Device:  Firefox on Linux\n",
                    "Network: 203.0.113.0/24\n",
                    "Time:    2026-11-26 13:05 UTC\n",
                ],
            ),
            (
                SecurityEvent::RecoveryCodeUsed { remaining: 5 },
                "Recovery code used on your Example Accounts account",
                &[
                    "A recovery code of your Example Accounts account was used on\n\
                     2026-11-26 13:05 UTC. That code no longer works.",
                    "This was done from the IP address 198.51.100.23.",
                    "You have 5 recovery codes left.",
                    "If this was you, no action is needed.",
                ],
            ),
            (
                SecurityEvent::FactorAdded {
                    factor: Factor::Totp,
                },
                "Authenticator app added to your Example Accounts account",
                &[
                    "An authenticator app was added to your Example Accounts account on\n\
                   2026-11-26 13:05 UTC, as a second step for signing in.",
                ],
            ),
            (
                SecurityEvent::FactorAdded {
                    factor: Factor::Passkey,
                },
                "Passkey added to your Example Accounts account",
                &["A passkey was added to your Example Accounts account on"],
            ),
            (
                SecurityEvent::FactorRemoved {
                    factor: Factor::Passkey,
                    by_support: false,
                },
                "Passkey removed from your Example Accounts account",
                &[
                    "A passkey was removed from your Example Accounts account on\n\
                   2026-11-26 13:05 UTC, in your account settings.",
                ],
            ),
            (
                SecurityEvent::FactorRemoved {
                    factor: Factor::Totp,
                    by_support: true,
                },
                "Authenticator app removed from your Example Accounts account",
                &[
                    "Example Accounts support removed an authenticator app from your account on\n\
                   2026-11-26 13:05 UTC, after verifying your identity.",
                ],
            ),
            (
                SecurityEvent::FactorRemoved {
                    factor: Factor::Totp,
                    by_support: false,
                },
                "Authenticator app removed from your Example Accounts account",
                &["An authenticator app was removed from your Example Accounts account on"],
            ),
            (
                SecurityEvent::RecoveryCodesReplaced,
                "New recovery codes for your Example Accounts account",
                &[
                    "A new set of recovery codes was made for your Example Accounts account on\n\
                   2026-11-26 13:05 UTC. The old codes no longer work;",
                ],
            ),
        ];
        for (event, subject, sentences) in cases {
            let mail = render(&security(event.clone(), true), "en");
            assert_eq!(mail.subject, subject);
            assert!(
                mail.html.contains(&format!("<title>{subject}</title>")),
                "{}",
                mail.html
            );
            for sentence in sentences {
                assert!(
                    mail.text.contains(sentence),
                    "{sentence:?} in\n{}",
                    mail.text
                );
            }
            assert!(mail.html.contains("<strong>2026-11-26 13:05 UTC</strong>"));
            // If it was not the owner: the lock link, then a reset, and the mailbox.
            assert!(
                mail.text.contains(
                    "If this wasn't you, lock your account now: everyone is signed out, your\n\
                     password stops working"
                ),
                "{}",
                mail.text
            );
            assert!(mail.text.contains(&format!("\n{LOCK_LINK}\n")));
            assert!(mail.text.contains(&format!(
                "Or reset your password yourself:\n\n{FORGOT_LINK}\n"
            )));
            assert!(mail.text.contains("so also secure\nyour email account"));
            assert!(
                mail.html.contains("This wasn&#x27;t me: lock my account"),
                "{}",
                mail.html
            );
            assert!(mail.html.contains(&format!("href=\"{LOCK_LINK}\"")));
            // Without a live link: a reset instead, and no lock link anywhere.
            let mail = render(&security(event, false), "en");
            assert!(!mail.text.contains("lock-account"), "{}", mail.text);
            assert!(!mail.html.contains("lock-account"));
            assert!(!mail.text.contains("lock your account"));
            assert!(
                mail.text.contains(&format!(
                    "If this wasn't you, reset your password now:\n\n{FORGOT_LINK}\n"
                )),
                "{}",
                mail.text
            );
            assert!(mail.html.contains(&format!("href=\"{FORGOT_LINK}\"")));
            assert!(mail.text.contains("so also secure\nyour email account"));
        }
    }

    #[test]
    fn a_new_sign_in_names_only_what_is_known_and_no_ip_beside_its_network() {
        let mail = render(&security(signed_in("", None), true), "en");
        assert!(!mail.text.contains("Device:"), "{}", mail.text);
        assert!(!mail.text.contains("Network:"));
        assert!(mail.text.contains("Time:    2026-11-26 13:05 UTC"));
        assert!(
            !mail.text.contains("198.51.100.23"),
            "the network stands for the IP"
        );
        let mail = render(&security(signed_in("Safari on iOS", None), true), "en");
        assert!(mail.text.contains("Device:  Safari on iOS\n"));
        assert!(mail.html.contains("Device: <strong>Safari on iOS</strong>"));
        assert!(!mail.text.contains("Network:"));
        let mail = render(
            &security(signed_in("", Some("2001:db8:1:2::/64")), true),
            "de",
        );
        assert!(
            mail.text.contains("Netzwerk: 2001:db8:1:2::/64\n"),
            "{}",
            mail.text
        );
        assert!(!mail.text.contains("Gerät:"));
    }

    #[test]
    fn the_recovery_code_notice_warns_when_two_or_fewer_are_left() {
        let used = |remaining| security(SecurityEvent::RecoveryCodeUsed { remaining }, true);
        let settings = "Make new ones in your account";
        let cases = [
            (0, "You have no recovery codes left.", true),
            (1, "You have only 1 recovery code left.", true),
            (2, "You have only 2 recovery codes left.", true),
            (3, "You have 3 recovery codes left.", false),
        ];
        for (remaining, says, warns) in cases {
            let mail = render(&used(remaining), "en");
            assert!(mail.text.contains(says), "{}", mail.text);
            assert_eq!(mail.text.contains(settings), warns, "{}", mail.text);
            assert_eq!(
                mail.html.contains(&format!("<strong>{says}</strong>")),
                warns,
                "{}",
                mail.html
            );
            assert_eq!(
                mail.text.contains("If this was you, no action is needed."),
                !warns
            );
        }
        let expected = [
            ("zh-CN", "您已没有可用的恢复码。", "您只剩 2 个恢复码了。"),
            (
                "es",
                "No te queda ningún código de recuperación.",
                "Solo te quedan 2 códigos",
            ),
            (
                "fr",
                "Il ne vous reste aucun code de secours.",
                "Il ne vous reste que 2 codes",
            ),
            (
                "de",
                "Sie haben keine Back-up-Codes mehr.",
                "Sie haben nur noch 2 Back-up-Codes.",
            ),
            (
                "ja",
                "リカバリーコードはもう残っていません。",
                "残りのリカバリーコードは 2 個だけです。",
            ),
            (
                "pt-BR",
                "Você não tem mais nenhum código",
                "Você só tem mais 2 códigos",
            ),
        ];
        for (locale, none, two) in expected {
            assert!(render(&used(0), locale).text.contains(none), "{locale}");
            assert!(render(&used(2), locale).text.contains(two), "{locale}");
        }
    }

    #[test]
    fn every_locale_offers_the_lock_link_or_a_reset_in_a_security_notice() {
        let lock_words = [
            ("en", "lock my account"),
            ("zh-CN", "锁定账号"),
            ("es", "bloquear mi cuenta"),
            ("fr", "verrouiller mon compte"),
            ("de", "Konto sperren"),
            ("ja", "アカウントをロック"),
            ("pt-BR", "bloquear minha conta"),
        ];
        for (locale, words) in lock_words {
            for event in security_events() {
                let mail = render(&security(event.clone(), true), locale);
                assert!(mail.text.contains(&format!("\n{LOCK_LINK}\n")), "{locale}");
                assert!(mail.html.contains(words), "{locale}: {}", mail.html);
                assert!(mail.text.contains("2026-11-26 13:05 UTC"), "{locale}");
                let mail = render(&security(event, false), locale);
                assert!(!mail.text.contains("lock-account"), "{locale}");
                assert!(!mail.html.contains(words), "{locale}");
                assert!(
                    mail.text.contains(&format!("\n{FORGOT_LINK}\n")),
                    "{locale}"
                );
            }
        }
    }
}
