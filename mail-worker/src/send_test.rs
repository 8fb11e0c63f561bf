//! `mail-worker send-test --to ADDRESS [--kind KIND] [--locale LOCALE]`: renders a real
//! template with sample values and sends it through the configured transport, so an operator
//! can see the provider take (or refuse) mail from this deployment. The links in it are
//! marked as tests and lead nowhere: no token is minted, no account is touched.

use lettre::message::Mailbox;
use uuid::Uuid;

use crate::{
    config::{Config, Transport},
    mailer::{Mailer, Outgoing, SendError, redact_addresses},
    render::EmailContent,
};

/// The emails a test can send (the kinds of `EmailContent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    PasswordReset,
    EmailVerification,
    AccountExists,
    NoAccount,
    PasswordChanged,
    // Of a sign-in from a new browser.
    SecurityNotice,
}

/// What stands in for a token in the test's links.
const NOT_A_TOKEN: &str = "send-test-not-a-valid-link";

/// Sample content of `kind`, with links under `PUBLIC_BASE_URL` that lead nowhere.
fn sample(kind: Kind, base: &str) -> EmailContent {
    use shared::links;
    let forgot_password_url = links::page(base, links::FORGOT_PASSWORD_PATH);
    match kind {
        Kind::PasswordReset => EmailContent::PasswordReset {
            link: links::with_token(base, links::RESET_PASSWORD_PATH, NOT_A_TOKEN),
            // A code no link has (links' codes come from their tokens).
            code: "0000 0000".into(),
            code_url: links::page(base, links::RESET_PASSWORD_PATH),
            expires_in_minutes: 60,
            requested_from_ip: Some("192.0.2.1".into()),
        },
        Kind::EmailVerification => EmailContent::EmailVerification {
            link: links::with_token(base, links::VERIFY_EMAIL_PATH, NOT_A_TOKEN),
            expires_in_hours: 1,
        },
        Kind::AccountExists => EmailContent::AccountExists {
            sign_in_url: format!("{base}/"),
            forgot_password_url,
        },
        Kind::NoAccount => EmailContent::NoAccount {
            sign_up_url: format!("{base}/"),
        },
        Kind::PasswordChanged => EmailContent::PasswordChanged {
            changed_at: shared::clock::Clock::now(&shared::clock::SystemClock),
            from_ip: Some("192.0.2.1".into()),
            forgot_password_url,
            lock_url: Some(links::with_token(
                base,
                links::LOCK_ACCOUNT_PATH,
                NOT_A_TOKEN,
            )),
        },
        Kind::SecurityNotice => EmailContent::SecurityNotice {
            event: shared::message::SecurityEvent::NewSignIn {
                device: "Firefox on Linux".into(),
                ip_prefix: Some("192.0.2.0/24".into()),
            },
            at: shared::clock::Clock::now(&shared::clock::SystemClock),
            from_ip: Some("192.0.2.1".into()),
            forgot_password_url,
            lock_url: Some(links::with_token(
                base,
                links::LOCK_ACCOUNT_PATH,
                NOT_A_TOKEN,
            )),
        },
    }
}

/// Sends one test email to `to`; the provider's answer (addresses redacted), or where the
/// file transport wrote it. A refusal is an error carrying the answer.
pub async fn send_test(
    config: &Config,
    to: &str,
    kind: Kind,
    locale: &str,
) -> anyhow::Result<String> {
    let to = shared::email::normalize(to)
        .map_err(|e| anyhow::anyhow!("{to:?} is not an email address: {e}"))?
        .address()
        .to_owned();
    let from: Mailbox = config
        .mail_from
        .parse()
        .map_err(|e| anyhow::anyhow!("MAIL_FROM: {e}"))?;
    // The templates the worker would send with: the built-in ones and MAIL_TEMPLATE_DIR's.
    let renderer = crate::templates::load(&config.product_name, config.template_dir.as_deref())
        .map_err(|problems| anyhow::anyhow!("email templates:\n{problems}"))?
        .renderer;
    let rendered = renderer
        .render_tag(&sample(kind, &config.public_base_url), locale)
        .map_err(|e| anyhow::anyhow!("cannot render: {e}"))?;
    let mailer = Mailer::new(&config.transport, config.smtp_timeout, 1, &config.tls)?;
    let sent = mailer
        .send(
            &from,
            Outgoing {
                job_id: Uuid::now_v7(),
                composed_at: shared::clock::Clock::now(&shared::clock::SystemClock).into(),
                to: &to,
                content: &rendered,
            },
        )
        .await;
    match (sent, &config.transport) {
        (Ok(Some(answer)), _) => Ok(redact_addresses(&format!(
            "{} {}",
            answer.code(),
            answer.message().collect::<Vec<_>>().join(" / ")
        ))),
        (Ok(None), Transport::File { dir }) => Ok(format!("written to {}", dir.display())),
        (Ok(None), Transport::Smtp { .. }) => Ok("sent".into()),
        (Err(SendError::Transient(e) | SendError::Throttled(e)), _) => {
            anyhow::bail!("not sent, may work later: {e}")
        }
        (Err(SendError::Permanent(e) | SendError::NoSuchMailbox(e)), _) => {
            anyhow::bail!("refused: {e}")
        }
    }
}
