//! Delivery: SMTP (pooled, TLS per `SMTP_URL`, with timeouts) or `.eml` files.
//!
//! Every failure is classified here, once: `Transient` (retry later) or `Permanent` (dead
//! letter). That classification alone decides what happens to the job.

use std::time::Duration;

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, header},
    transport::smtp::PoolConfig,
};
use uuid::Uuid;

use crate::{config::Transport, render::Rendered};

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 4xx answers, timeouts, refused or dropped connections: try again later.
    #[error("transient: {0}")]
    Transient(String),
    /// 5xx answers, invalid recipients, unbuildable messages: never going to work.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The configured transport.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// One email, ready to go.
pub struct Outgoing<'a> {
    pub job_id: Uuid,
    pub to: &'a str,
    pub content: &'a Rendered,
}

impl Mailer {
    /// Builds the transport. SMTP connections are opened lazily and pooled (up to
    /// `pool_size`), so an unreachable server shows up as transient send failures.
    pub fn new(transport: &Transport, timeout: Duration, pool_size: usize) -> anyhow::Result<Self> {
        Ok(match transport {
            Transport::Smtp { url } => {
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?;
                let pool = PoolConfig::new()
                    .max_size(pool_size.clamp(1, u32::MAX as usize) as u32)
                    .idle_timeout(Duration::from_secs(60));
                Mailer::Smtp(builder.timeout(Some(timeout)).pool_config(pool).build())
            }
            Transport::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("MAIL_FILE_DIR {}: {e}", dir.display()))?;
                Mailer::File(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
        })
    }

    /// Sends one multipart/alternative email. The `Message-ID` is derived from the job id, so
    /// a redelivered job that slips past the idempotency check still produces the same id
    /// and receiving systems can de-duplicate it.
    pub async fn send(&self, from: &Mailbox, email: Outgoing<'_>) -> Result<(), SendError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|_| SendError::Permanent("invalid recipient address".into()))?;
        let domain = from.email.domain().to_owned();
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(email.content.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", email.job_id)))
            .header(header::MIME_VERSION_1_0)
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                email.content.text.clone(),
                email.content.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(classify),
            Mailer::File(file) => file
                .send(message)
                .await
                .map(drop)
                // A full disk or a missing directory may be fixed by an operator: retry.
                .map_err(|e| SendError::Transient(format!("cannot write the email file: {e}"))),
        }
    }

    /// Whether the SMTP server answers (file transport: always).
    pub async fn check(&self) -> bool {
        match self {
            Mailer::Smtp(smtp) => smtp.test_connection().await.unwrap_or(false),
            Mailer::File(_) => true,
        }
    }
}

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    // SMTP replies often quote the recipient; the text ends up in logs and dead-letter
    // headers, where addresses must not appear.
    let text = redact_addresses(&e.to_string());
    // Only a definite 5xx answer is permanent; everything else (4xx, timeouts, refused or
    // reset connections, TLS hiccups) may succeed later.
    if e.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// Replaces every word containing `@` with `<address>`.
pub fn redact_addresses(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            if word.contains('@') {
                let trailing = &word[word.trim_end().len()..];
                format!("<address>{trailing}")
            } else {
                word.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_error_text_loses_its_addresses() {
        assert_eq!(
            redact_addresses("permanent error (550): 5.1.1 <ann@example.org>: user unknown"),
            "permanent error (550): 5.1.1 <address> user unknown"
        );
        assert_eq!(redact_addresses("timed out"), "timed out");
    }
}
