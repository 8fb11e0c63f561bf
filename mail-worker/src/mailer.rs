//! Delivery: SMTP (pooled, TLS per `SMTP_URL`, with timeouts; see [`crate::smtp`]) or `.eml`
//! files.
//!
//! Every failure is classified here, once: `Transient` (retry later) or `Permanent` (dead
//! letter). That classification alone decides what happens to the job.

use std::time::Duration;

use lettre::{
    AsyncFileTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, SinglePart, header},
    transport::smtp::response::Response,
};
use uuid::Uuid;

use crate::{
    config::Transport,
    render::Rendered,
    smtp::{Endpoint, Failure, PoolOptions, SmtpPool},
};

/// Pooled SMTP connections idle longer than this are closed.
const SMTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 4xx answers, timeouts, refused or dropped connections: try again later.
    #[error("transient: {0}")]
    Transient(String),
    /// A transient answer to this message saying the provider throttles us (`421`, or an
    /// enhanced status `4.7.x`; see [`is_throttling`]): like `Transient`, and the recipient's
    /// domain slows down (see [`crate::send_budget`]).
    #[error("throttled: {0}")]
    Throttled(String),
    /// 5xx answers, invalid recipients, unbuildable messages: never going to work.
    #[error("permanent: {0}")]
    Permanent(String),
    /// A permanent answer saying the recipient's mailbox does not exist (`5.1.x`, 551, 553;
    /// see [`shared::suppression::is_no_such_mailbox`]): like `Permanent`, and the address
    /// goes on the suppression list.
    #[error("permanent, no such mailbox: {0}")]
    NoSuchMailbox(String),
}

/// The configured transport.
#[derive(Clone)]
pub enum Mailer {
    Smtp(SmtpPool),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// One email, ready to go.
pub struct Outgoing<'a> {
    pub job_id: Uuid,
    /// When the email was asked for (the job's creation): its `Date`.
    pub composed_at: std::time::SystemTime,
    pub to: &'a str,
    pub content: &'a Rendered,
}

impl Mailer {
    /// Builds the transport. SMTP connections are opened lazily and pooled (up to
    /// `pool_size`), so an unreachable server shows up as transient send failures. Must be
    /// called inside a Tokio runtime. TLS (STARTTLS or implicit) trusts the webpki roots plus
    /// `trust`'s private CAs.
    pub fn new(
        transport: &Transport,
        timeout: Duration,
        pool_size: usize,
        trust: &shared::tls::Trust,
    ) -> anyhow::Result<Self> {
        Ok(match transport {
            Transport::Smtp { url } => {
                let endpoint = Endpoint::parse(url)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?;
                let options = PoolOptions {
                    size: pool_size,
                    timeout,
                    idle_timeout: SMTP_IDLE_TIMEOUT,
                    extra_roots: trust.extra().to_vec(),
                };
                Mailer::Smtp(
                    SmtpPool::new(endpoint, options)
                        .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e:#}"))?,
                )
            }
            Transport::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("MAIL_FILE_DIR {}: {e}", dir.display()))?;
                Mailer::File(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
        })
    }

    /// Sends one multipart/alternative email. Everything in it follows from the job: the
    /// `Message-ID` and the MIME boundary from its id, the `Date` from its creation, the link
    /// from what was minted for it, so a repeat (after a lost SMTP reply, or a redelivery that
    /// slipped past the idempotency check) is byte-identical and receiving systems can drop it
    /// by `Message-ID`.
    ///
    /// Returns the server's answer to the message (`None` for the file transport).
    pub async fn send(
        &self,
        from: &Mailbox,
        email: Outgoing<'_>,
    ) -> Result<Option<Response>, SendError> {
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
            .date(email.composed_at)
            .multipart(
                MultiPart::alternative()
                    .boundary(format!("=_{}", email.job_id.simple()))
                    .singlepart(SinglePart::plain(email.content.text.clone()))
                    .singlepart(SinglePart::html(email.content.html.clone())),
            )
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match self {
            Mailer::Smtp(pool) => pool
                .send(message.envelope(), &message.formatted())
                .await
                .map(Some)
                .map_err(classify),
            Mailer::File(file) => file
                .send(message)
                .await
                .map(|_| None)
                // A full disk or a missing directory may be fixed by an operator: retry.
                .map_err(|e| SendError::Transient(format!("cannot write the email file: {e}"))),
        }
    }

    /// Whether the SMTP server answers (file transport: always).
    pub async fn check(&self) -> bool {
        match self {
            Mailer::Smtp(pool) => pool.check().await,
            Mailer::File(_) => true,
        }
    }
}

fn classify(failure: Failure) -> SendError {
    // SMTP replies often quote the recipient; the text ends up in logs and dead-letter
    // headers, where addresses must not appear.
    let text = redact_addresses(&failure.to_string());
    // Only a definite 5xx answer to this message is permanent; everything else (4xx,
    // timeouts, refused or reset connections, TLS hiccups, a session the provider would not
    // open, such as bad credentials) may succeed later or after an operator's fix.
    match failure {
        Failure::Smtp(e) if e.is_permanent() => {
            let code = e.status().map_or(0, u16::from);
            if shared::suppression::is_no_such_mailbox(code, &text) {
                SendError::NoSuchMailbox(text)
            } else {
                SendError::Permanent(text)
            }
        }
        // Only an answer to this message's commands: a 421 greeting (a session the provider
        // would not open) says nothing about the recipient's domain and stays a plain retry.
        Failure::Smtp(e) if is_throttling(e.status().map_or(0, u16::from), &text) => {
            SendError::Throttled(text)
        }
        _ => SendError::Transient(text),
    }
}

/// Whether an SMTP answer says "you are sending too much, slow down": a transient answer
/// carrying an enhanced status `4.7.x` (security and policy: `4.7.0` "try again later",
/// `4.7.28` "unusual rate", Yahoo's `TSS04` deferrals), or a `421` without an enhanced status
/// (Gmail, Outlook and Yahoo close the session on a rate limit, not always with one). A `421`
/// whose enhanced status names another cause (`4.4.2` the server's idle timeout, `4.3.2` it
/// is shutting down) and other `4xx` answers (`451 4.3.0` local error, `452 4.2.2` mailbox
/// full) are ordinary transient failures: they say nothing about the domain's pace.
pub fn is_throttling(code: u16, text: &str) -> bool {
    if !(400..500).contains(&code) {
        return false;
    }
    match enhanced_status(text) {
        Some((class, subject)) => class == 4 && subject == 7,
        None => code == 421,
    }
}

/// The first enhanced status code (`class.subject.detail`, RFC 3463) in an answer's text.
fn enhanced_status(text: &str) -> Option<(u8, u16)> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ';' | '[' | ']'))
        .find_map(|word| {
            let mut parts = word.trim_end_matches(['.', ':']).split('.');
            let number = |s: &str, max: usize| {
                (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u16>().ok())
                    .flatten()
            };
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(class @ ("2" | "4" | "5")), Some(subject), Some(detail), None) => {
                    let subject = number(subject, 3)?;
                    number(detail, 3)?;
                    Some((class.parse().ok()?, subject))
                }
                _ => None,
            }
        })
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
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests compare with the wall clock"
)]
mod tests {
    use super::*;
    use crate::smtp::tests::{Behaviour, TestServer};

    #[test]
    fn throttling_is_421_or_a_transient_4_7_status() {
        assert!(is_throttling(
            421,
            "4.7.0 Try again later, closing connection."
        ));
        assert!(is_throttling(421, "Service not available"));
        assert!(is_throttling(
            451,
            "4.7.1 Temporarily deferred due to unexpected volume"
        ));
        assert!(is_throttling(450, "(4.7.28) unusual rate of mail"));
        assert!(!is_throttling(451, "4.3.0 Local error in processing"));
        assert!(!is_throttling(452, "4.2.2 mailbox full"));
        assert!(!is_throttling(451, "see 4.7.0.1 or 14.7.0"));
        // A 421 for another cause than the pace.
        assert!(!is_throttling(421, "4.4.2 mx.example timeout exceeded"));
        assert!(!is_throttling(421, "4.3.2 Service shutting down"));
        // A permanent policy refusal is not a slow-down.
        assert!(!is_throttling(550, "5.7.1 rejected"));
        assert!(!is_throttling(554, "4.7.0 mislabelled"));
    }

    #[test]
    fn smtp_error_text_loses_its_addresses() {
        assert_eq!(
            redact_addresses("permanent error (550): 5.1.1 <ann@example.org>: user unknown"),
            "permanent error (550): 5.1.1 <address> user unknown"
        );
        assert_eq!(redact_addresses("timed out"), "timed out");
    }

    fn smtp(url: String) -> Mailer {
        Mailer::new(
            &Transport::Smtp { url },
            Duration::from_secs(10),
            2,
            &shared::tls::Trust::default(),
        )
        .unwrap()
    }

    fn content() -> Rendered {
        Rendered {
            subject: "Your account".into(),
            text: "Hello.\n".into(),
            html: "<p>Hello.</p>\n".into(),
        }
    }

    async fn send_to(mailer: &Mailer, to: &str) -> Result<(), SendError> {
        let from: Mailbox = "Service <noreply@example.com>".parse().unwrap();
        let content = content();
        let email = Outgoing {
            job_id: Uuid::new_v4(),
            composed_at: std::time::SystemTime::now(),
            to,
            content: &content,
        };
        mailer.send(&from, email).await.map(drop)
    }

    #[tokio::test]
    async fn only_a_5xx_answer_is_permanent_and_no_answer_quotes_the_address() {
        let server = TestServer::start(Behaviour::default()).await;
        let mailer = smtp(server.url("smtp", ""));
        // `550 5.1.1 … user unknown`: permanent, and the mailbox does not exist.
        match send_to(&mailer, "reject@example.org").await {
            Err(SendError::NoSuchMailbox(text)) => {
                assert!(text.contains("550") && !text.contains('@'), "{text}");
            }
            other => panic!("expected a permanent no-such-mailbox failure, got {other:?}"),
        }
        match send_to(&mailer, "later@example.org").await {
            Err(SendError::Transient(text)) => {
                assert!(text.contains("451") && !text.contains('@'), "{text}");
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
        send_to(&mailer, "ann@example.org").await.unwrap();
        let messages = server.seen(|s| s.messages.clone());
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].to, vec!["ann@example.org".to_owned()]);
        assert!(messages[0].data.contains("multipart/alternative"));
        assert!(mailer.check().await);
    }

    #[tokio::test]
    async fn bad_credentials_are_a_transient_failure_not_a_dead_letter() {
        let server = TestServer::start(Behaviour {
            auth: Some(("mailer", "right")),
            ..Behaviour::default()
        })
        .await;
        let port = server
            .url("smtp", "")
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        let mailer = smtp(format!("smtp://mailer:wrong@127.0.0.1:{port}"));
        match send_to(&mailer, "ann@example.org").await {
            Err(SendError::Transient(text)) => assert!(text.contains("535"), "{text}"),
            other => panic!("expected a transient failure, got {other:?}"),
        }
        assert!(server.seen(|s| s.messages.is_empty()));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transient_failure() {
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = gone.local_addr().unwrap().port();
        drop(gone);
        let mailer = smtp(format!("smtp://127.0.0.1:{port}"));
        match send_to(&mailer, "ann@example.org").await {
            Err(SendError::Transient(text)) => assert!(text.contains("connect"), "{text}"),
            other => panic!("expected a transient failure, got {other:?}"),
        }
        assert!(!mailer.check().await);
    }

    #[tokio::test]
    async fn an_unusable_smtp_url_stops_the_start_without_echoing_it() {
        for url in [
            "smtp://user:hunter2@mail.example.org?tls=yes",
            "smtps://user:hunter2@",
        ] {
            let Err(error) = Mailer::new(
                &Transport::Smtp { url: url.into() },
                Duration::from_secs(1),
                1,
                &shared::tls::Trust::default(),
            ) else {
                panic!("{url} was accepted");
            };
            let text = format!("{error:#}");
            assert!(text.starts_with("SMTP_URL is not usable"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
