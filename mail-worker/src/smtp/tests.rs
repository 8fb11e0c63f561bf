//! The pool against a small real SMTP server on 127.0.0.1: plain, STARTTLS and implicit TLS,
//! AUTH PLAIN, per-recipient refusals, hanging up, and never answering.
//!
//! `testdata/localhost.{crt,key}` is a self-signed test certificate for `localhost` and
//! `127.0.0.1` (EC P-256, valid 2000-2100), made with `openssl req` + `openssl ca -selfsign`.
//! It protects nothing.

#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use lettre::{Address, address::Envelope};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

use super::*;

const CERT: &[u8] = include_bytes!("testdata/localhost.crt");
const KEY: &[u8] = include_bytes!("testdata/localhost.key");
/// Only bounds how long a broken test hangs; nothing asserts on durations.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn certificate() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(CERT).expect("test certificate")
}

/// What the test server does.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    /// Offer STARTTLS.
    pub starttls: bool,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// Require AUTH PLAIN with these credentials before MAIL.
    pub auth: Option<(&'static str, &'static str)>,
    /// Close the connection right after accepting a message.
    pub hang_up_after_message: bool,
    /// Accept connections and never say anything.
    pub silent: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub connection: usize,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub tls: bool,
    pub user: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub accepted: usize,
    pub closed: usize,
    pub quits: usize,
    pub open_now: usize,
    pub max_open: usize,
    pub messages: Vec<Received>,
    pub auth_attempts: usize,
}

/// An SMTP server speaking just enough of RFC 5321/3207/4954 for the pool. Recipients decide
/// the answer: `reject@…` gets 550, `later@…` gets 451, everyone else 250.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl TestServer {
    pub(crate) async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate()], key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let id = {
                    let mut s = state.lock().unwrap();
                    s.accepted += 1;
                    s.open_now += 1;
                    s.max_open = s.max_open.max(s.open_now);
                    s.accepted
                };
                let session = Session {
                    id,
                    behaviour: behaviour.clone(),
                    seen: state.clone(),
                    user: None,
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = session.run(stream, acceptor).await;
                    let mut s = state.lock().unwrap();
                    s.open_now -= 1;
                    s.closed += 1;
                });
            }
        });
        Self { addr, seen }
    }

    pub(crate) fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    pub(crate) fn url(&self, scheme: &str, query: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{query}", self.addr.port())
    }
}

struct Session {
    id: usize,
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
    user: Option<String>,
}

enum Next<S> {
    Done,
    StartTls(S),
}

impl Session {
    async fn run(mut self, mut stream: TcpStream, acceptor: TlsAcceptor) -> std::io::Result<()> {
        if self.behaviour.silent {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            return Ok(());
        }
        if self.behaviour.implicit_tls {
            let stream = acceptor.accept(stream).await?;
            self.serve(stream, true).await?;
            return Ok(());
        }
        if let Next::StartTls(stream) = self.serve(stream, false).await? {
            let stream = acceptor.accept(stream).await?;
            self.serve(stream, true).await?;
        }
        Ok(())
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        tls: bool,
    ) -> std::io::Result<Next<S>> {
        let mut io = BufReader::new(stream);
        // After STARTTLS the client speaks first (EHLO); otherwise the server greets.
        let after_starttls = tls && !self.behaviour.implicit_tls;
        if !after_starttls {
            reply(&mut io, "220 test ESMTP").await?;
        }
        let mut from = None;
        let mut to = Vec::new();
        loop {
            let Some(line) = read_line(&mut io).await? else {
                return Ok(Next::Done);
            };
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => {
                    from = None;
                    to.clear();
                    let mut lines = vec!["test", "8BITMIME", "SMTPUTF8"];
                    if self.behaviour.starttls && !tls {
                        lines.push("STARTTLS");
                    }
                    if self.behaviour.auth.is_some() {
                        lines.push("AUTH PLAIN");
                    }
                    let last = lines.len() - 1;
                    let text: Vec<String> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                        .collect();
                    reply(&mut io, &text.join("\r\n")).await?;
                }
                "STARTTLS" if self.behaviour.starttls && !tls => {
                    reply(&mut io, "220 2.0.0 ready to start TLS").await?;
                    return Ok(Next::StartTls(io.into_inner()));
                }
                "AUTH" => {
                    self.seen.lock().unwrap().auth_attempts += 1;
                    let mut words = line.split_whitespace().skip(1);
                    let decoded = match (words.next(), words.next()) {
                        (Some(m), Some(b64)) if m.eq_ignore_ascii_case("PLAIN") => {
                            base64::engine::general_purpose::STANDARD
                                .decode(b64)
                                .unwrap_or_default()
                        }
                        _ => Vec::new(),
                    };
                    let parts: Vec<String> = decoded
                        .split(|b| *b == 0)
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect();
                    let expected = self.behaviour.auth;
                    if let (Some((user, password)), [_, u, p]) = (expected, parts.as_slice())
                        && u == user
                        && p == password
                    {
                        self.user = Some(u.clone());
                        reply(&mut io, "235 2.7.0 authenticated").await?;
                    } else {
                        reply(&mut io, "535 5.7.8 bad credentials").await?;
                    }
                }
                "MAIL" if self.behaviour.auth.is_some() && self.user.is_none() => {
                    reply(&mut io, "530 5.7.0 authentication required").await?;
                }
                "MAIL" => {
                    from = Some(angle(&line));
                    reply(&mut io, "250 2.1.0 ok").await?;
                }
                "RCPT" => {
                    let address = angle(&line);
                    if address.starts_with("reject@") {
                        reply(&mut io, &format!("550 5.1.1 <{address}>: user unknown")).await?;
                    } else if address.starts_with("later@") {
                        reply(&mut io, &format!("451 4.2.0 <{address}>: try later")).await?;
                    } else {
                        to.push(address);
                        reply(&mut io, "250 2.1.5 ok").await?;
                    }
                }
                "DATA" => {
                    reply(&mut io, "354 go ahead").await?;
                    let mut data = String::new();
                    loop {
                        let Some(line) = read_line(&mut io).await? else {
                            return Ok(Next::Done);
                        };
                        if line == "." {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        data.push('\n');
                    }
                    self.seen.lock().unwrap().messages.push(Received {
                        connection: self.id,
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                        tls,
                        user: self.user.clone(),
                    });
                    reply(&mut io, "250 2.0.0 queued").await?;
                    if self.behaviour.hang_up_after_message {
                        io.get_mut().shutdown().await?;
                        return Ok(Next::Done);
                    }
                }
                "RSET" | "NOOP" => reply(&mut io, "250 2.0.0 ok").await?,
                "QUIT" => {
                    self.seen.lock().unwrap().quits += 1;
                    reply(&mut io, "221 2.0.0 bye").await?;
                    return Ok(Next::Done);
                }
                _ => reply(&mut io, "502 5.5.1 not implemented").await?,
            }
        }
    }
}

async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    if io.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&line);
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    text: &str,
) -> std::io::Result<()> {
    io.get_mut()
        .write_all(format!("{text}\r\n").as_bytes())
        .await?;
    io.get_mut().flush().await
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn angle(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

fn pool_for(url: &str, size: usize, idle_timeout: Duration, trust_test_cert: bool) -> SmtpPool {
    let options = PoolOptions {
        size,
        timeout: WAIT,
        idle_timeout,
        extra_roots: if trust_test_cert {
            vec![certificate()]
        } else {
            Vec::new()
        },
    };
    SmtpPool::new(Endpoint::parse(url).unwrap(), options).unwrap()
}

fn pool(url: &str) -> SmtpPool {
    pool_for(url, 4, Duration::from_secs(60), true)
}

const BODY: &str = "Subject: hello\r\nX-Test: yes\r\n\r\nHello.\r\n.leading dot";

fn mail(to: &str) -> (Envelope, Vec<u8>) {
    let from: Address = "sender@example.com".parse().unwrap();
    let to: Address = to.parse().unwrap();
    (
        Envelope::new(Some(from), vec![to]).unwrap(),
        BODY.as_bytes().to_vec(),
    )
}

async fn send(pool: &SmtpPool, to: &str) -> Result<(), Failure> {
    let (envelope, message) = mail(to);
    pool.send(&envelope, &message).await.map(drop)
}

#[tokio::test]
async fn consecutive_sends_share_one_connection_with_tcp_nodelay_set() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&server.url("smtp", ""));
    for n in 0..5 {
        send(&pool, &format!("user{n}@example.org")).await.unwrap();
    }
    let messages = server.seen(|s| s.messages.clone());
    assert_eq!(messages.len(), 5);
    assert_eq!(server.seen(|s| s.accepted), 1, "one connection for all");
    assert!(messages.iter().all(|m| m.connection == 1 && !m.tls));
    assert_eq!(messages[2].from, "sender@example.com");
    assert_eq!(messages[2].to, vec!["user2@example.org".to_owned()]);
    assert_eq!(
        messages[2].data,
        "Subject: hello\nX-Test: yes\n\nHello.\n.leading dot\n"
    );
    assert_eq!(pool.idle_nodelay(), vec![true]);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_reused() {
    let server = TestServer::start(Behaviour {
        hang_up_after_message: true,
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&server.url("smtp", ""));
    send(&pool, "first@example.org").await.unwrap();
    e2e::poll_until(WAIT, || async {
        (server.seen(|s| s.closed) == 1).then_some(())
    })
    .await
    .expect("the server hung up");
    send(&pool, "second@example.org").await.unwrap();
    assert_eq!(server.seen(|s| s.accepted), 2);
    let connections: Vec<usize> =
        server.seen(|s| s.messages.iter().map(|m| m.connection).collect());
    assert_eq!(connections, vec![1, 2]);
}

#[tokio::test]
async fn a_connection_that_saw_an_error_is_not_reused() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&server.url("smtp", ""));
    match send(&pool, "reject@example.org").await {
        Err(Failure::Smtp(e)) => assert!(e.is_permanent(), "{e}"),
        other => panic!("expected a 550, got {other:?}"),
    }
    match send(&pool, "later@example.org").await {
        Err(Failure::Smtp(e)) => assert!(e.is_transient(), "{e}"),
        other => panic!("expected a 451, got {other:?}"),
    }
    send(&pool, "fine@example.org").await.unwrap();
    assert_eq!(
        server.seen(|s| s.accepted),
        3,
        "a new connection after each error"
    );
    assert_eq!(server.seen(|s| s.messages.len()), 1);
}

#[tokio::test]
async fn concurrent_sends_never_hold_more_connections_than_the_pool_size() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool_for(&server.url("smtp", ""), 2, Duration::from_secs(60), false);
    let sends: Vec<_> = (0..12)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { send(&pool, &format!("user{n}@example.org")).await })
        })
        .collect();
    for result in futures_util::future::join_all(sends).await {
        result.unwrap().unwrap();
    }
    assert_eq!(server.seen(|s| s.messages.len()), 12);
    assert!(
        server.seen(|s| s.accepted) <= 2,
        "{:?}",
        server.seen(|s| s.accepted)
    );
    assert!(server.seen(|s| s.max_open) <= 2);
}

#[tokio::test]
async fn connections_idle_past_the_idle_timeout_are_closed_not_reused() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool_for(&server.url("smtp", ""), 4, Duration::ZERO, false);
    for n in 0..3 {
        send(&pool, &format!("user{n}@example.org")).await.unwrap();
    }
    assert_eq!(server.seen(|s| s.accepted), 3);
    // Each expired connection is closed politely, the last one by the background sweep.
    e2e::poll_until(WAIT, || async {
        (server.seen(|s| s.quits) == 3).then_some(())
    })
    .await
    .expect("every idle connection got a QUIT");
    assert!(pool.idle_nodelay().is_empty());
}

#[tokio::test]
async fn starttls_required_encrypts_before_credentials_are_sent() {
    let server = TestServer::start(Behaviour {
        starttls: true,
        auth: Some(("api key", "p@ss:w/rd")),
        ..Behaviour::default()
    })
    .await;
    let url = format!(
        "smtp://api%20key:p%40ss%3Aw%2Frd@127.0.0.1:{}?tls=required",
        server.addr.port()
    );
    let pool = pool(&url);
    send(&pool, "one@example.org").await.unwrap();
    send(&pool, "two@example.org").await.unwrap();
    let messages = server.seen(|s| s.messages.clone());
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.tls && m.connection == 1));
    assert_eq!(messages[0].user.as_deref(), Some("api key"));
    assert_eq!(
        server.seen(|s| s.auth_attempts),
        1,
        "authenticated once per connection"
    );
    assert_eq!(pool.idle_nodelay(), vec![true]);
}

#[tokio::test]
async fn starttls_required_sends_nothing_to_a_server_without_it() {
    let server = TestServer::start(Behaviour {
        auth: Some(("user", "secret")),
        ..Behaviour::default()
    })
    .await;
    let url = format!(
        "smtp://user:secret@127.0.0.1:{}?tls=required",
        server.addr.port()
    );
    let pool = pool(&url);
    match send(&pool, "one@example.org").await {
        Err(Failure::Setup(e)) => {
            assert!(e.to_string().contains("STARTTLS"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        server.seen(|s| s.auth_attempts),
        0,
        "no credentials in clear"
    );
    assert!(server.seen(|s| s.messages.is_empty()));
}

#[tokio::test]
async fn opportunistic_starttls_encrypts_when_offered_and_goes_plain_otherwise() {
    let offering = TestServer::start(Behaviour {
        starttls: true,
        ..Behaviour::default()
    })
    .await;
    let plain = TestServer::start(Behaviour::default()).await;
    send(
        &pool(&offering.url("smtp", "?tls=opportunistic")),
        "a@example.org",
    )
    .await
    .unwrap();
    send(
        &pool(&plain.url("smtp", "?tls=opportunistic")),
        "b@example.org",
    )
    .await
    .unwrap();
    assert!(offering.seen(|s| s.messages[0].tls));
    assert!(!plain.seen(|s| s.messages[0].tls));
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_byte_on_a_reused_nodelay_connection() {
    let server = TestServer::start(Behaviour {
        implicit_tls: true,
        auth: Some(("user", "secret")),
        ..Behaviour::default()
    })
    .await;
    let url = format!("smtps://user:secret@127.0.0.1:{}", server.addr.port());
    let pool = pool(&url);
    for n in 0..3 {
        send(&pool, &format!("user{n}@example.org")).await.unwrap();
    }
    let messages = server.seen(|s| s.messages.clone());
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| m.tls && m.connection == 1));
    assert_eq!(messages[0].user.as_deref(), Some("user"));
    assert_eq!(pool.idle_nodelay(), vec![true]);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    let implicit = TestServer::start(Behaviour {
        implicit_tls: true,
        ..Behaviour::default()
    })
    .await;
    let starttls = TestServer::start(Behaviour {
        starttls: true,
        ..Behaviour::default()
    })
    .await;
    let untrusting = |url: &str| pool_for(url, 1, Duration::from_secs(60), false);
    match send(&untrusting(&implicit.url("smtps", "")), "a@example.org").await {
        Err(e @ Failure::Tls(_)) => assert!(e.to_string().contains("certificate"), "{e}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    match send(
        &untrusting(&starttls.url("smtp", "?tls=required")),
        "b@example.org",
    )
    .await
    {
        Err(Failure::Setup(e)) => assert!(e.is_tls() || !e.is_permanent(), "{e}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(implicit.seen(|s| s.messages.is_empty()));
    assert!(starttls.seen(|s| s.messages.is_empty()));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = TestServer::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let options = PoolOptions {
        size: 1,
        timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
        extra_roots: Vec::new(),
    };
    let pool = SmtpPool::new(Endpoint::parse(&server.url("smtp", "")).unwrap(), options).unwrap();
    match send(&pool, "a@example.org").await {
        Err(e @ Failure::TimedOut { .. }) => assert!(e.to_string().contains("EHLO"), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn check_answers_whether_the_server_does() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&server.url("smtp", ""));
    assert!(pool.check().await);
    assert!(pool.check().await);
    assert_eq!(
        server.seen(|s| s.accepted),
        1,
        "the checked connection is kept"
    );

    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gone.local_addr().unwrap().port();
    drop(gone);
    assert!(
        !pool_for(&format!("smtp://127.0.0.1:{port}"), 1, WAIT, false)
            .check()
            .await
    );
}
