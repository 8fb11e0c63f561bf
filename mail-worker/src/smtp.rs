//! The SMTP client: lettre's protocol code (`AsyncSmtpConnection`) on sockets we open
//! ourselves, in a small pool of our own.
//!
//! lettre's `AsyncSmtpTransport` leaves Nagle's algorithm on and writes a message's body and
//! its closing `.` separately, so every message waited ~40 ms for the server's delayed ACK.
//! Every connection here has TCP_NODELAY set; the rest follows lettre (see [`url`]).

mod url;

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::DEFAULT_MECHANISMS,
        client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
        response::Response,
    },
};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Semaphore,
    time::{MissedTickBehavior, timeout},
};
use tokio_rustls::TlsConnector;

pub use self::url::{Endpoint, Security, UrlError};

/// How the pool behaves.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections at most, busy and idle together; sends beyond that wait for one.
    pub size: usize,
    /// Limit for each step: resolving and connecting (per address), the opening handshake
    /// (greeting, EHLO, TLS, AUTH), one message, a NOOP, a QUIT.
    pub timeout: Duration,
    /// Idle connections older than this are closed, not reused.
    pub idle_timeout: Duration,
    /// Certificates trusted in addition to the webpki roots (a private relay's CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Why a connection or a send failed. [`crate::mailer`] decides what that means for the job.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An answer from the server, or a protocol or network error seen by lettre.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// Greeting, EHLO, STARTTLS or AUTH failed, whatever the code: a provider or
    /// configuration problem (a wrong password, say), never this message's.
    #[error("SMTP session could not be opened: {0}")]
    Setup(lettre::transport::smtp::Error),
    #[error("cannot connect to the SMTP server: {0}")]
    Connect(io::Error),
    #[error("TLS handshake with the SMTP server failed: {0}")]
    Tls(io::Error),
    #[error("no answer from the SMTP server within {after:?} ({step})")]
    TimedOut { step: &'static str, after: Duration },
}

/// A pool of SMTP connections to one server. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct SmtpPool {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    encryption: Encryption,
    size: usize,
    timeout: Duration,
    idle_timeout: Duration,
    /// One permit per connection in use, so at most `size` are busy at once.
    permits: Semaphore,
    /// Most recently used last: reuse takes the warmest, the oldest age out.
    idle: Mutex<Vec<Idle>>,
}

enum Encryption {
    None,
    StartTls {
        parameters: TlsParameters,
        required: bool,
    },
    Implicit {
        connector: TlsConnector,
        server_name: ServerName<'static>,
    },
}

struct Connection {
    smtp: AsyncSmtpConnection,
    /// A second descriptor of the same socket: shows whether the server closed the connection
    /// while it sat idle, without a round trip and without touching the SMTP session.
    socket: std::net::TcpStream,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl SmtpPool {
    /// Prepares the pool; connections are opened on first use. Must be called inside a Tokio
    /// runtime: a background task closes connections that stay idle too long.
    pub fn new(endpoint: Endpoint, options: PoolOptions) -> anyhow::Result<Self> {
        let encryption = Encryption::new(&endpoint, &options.extra_roots)?;
        let size = options.size.max(1);
        let inner = Arc::new(Inner {
            endpoint,
            encryption,
            size,
            timeout: options.timeout,
            idle_timeout: options.idle_timeout,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::with_capacity(size)),
        });
        tokio::spawn(close_expired(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Sends one message on a pooled connection. A connection that saw any error is closed,
    /// never reused.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, Failure> {
        let _permit = self.inner.permit().await?;
        let mut connection = self.inner.checkout().await?;
        match timeout(self.inner.timeout, connection.smtp.send(envelope, message)).await {
            Ok(Ok(answer)) => {
                self.inner.checkin(connection);
                Ok(answer)
            }
            Ok(Err(e)) => {
                retire(connection, self.inner.timeout);
                Err(e.into())
            }
            // Dropped mid-command: the session's state is unknown, only closing is safe.
            Err(_) => Err(Failure::TimedOut {
                step: "sending a message",
                after: self.inner.timeout,
            }),
        }
    }

    /// Whether the server answers a NOOP, on an idle connection or a new one.
    pub async fn check(&self) -> bool {
        let Ok(_permit) = self.inner.permit().await else {
            return false;
        };
        let Ok(mut connection) = self.inner.checkout().await else {
            return false;
        };
        let answered = matches!(
            timeout(self.inner.timeout, connection.smtp.test_connected()).await,
            Ok(true)
        );
        if answered {
            self.inner.checkin(connection);
        }
        answered
    }
}

impl Inner {
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
        // The semaphore is never closed; the error arm only keeps this free of panics.
        self.permits
            .acquire()
            .await
            .map_err(|_| Failure::Connect(io::Error::other("the SMTP pool is closed")))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection that is still open, or a new one. lettre's pool sent a NOOP before
    /// every reuse, a round trip per message; peeking at the socket finds a closed connection
    /// for free, and only unexpected bytes cost a NOOP.
    async fn checkout(&self) -> Result<Connection, Failure> {
        loop {
            let Some(idle) = self.idle().pop() else {
                return self.open().await;
            };
            let mut connection = idle.connection;
            if idle.since.elapsed() >= self.idle_timeout {
                retire(connection, self.timeout);
                continue;
            }
            let open = match connection.liveness() {
                Liveness::Quiet => true,
                // Unsolicited bytes: a `421` before the server hangs up, or TLS housekeeping.
                // A NOOP tells which.
                Liveness::Readable => matches!(
                    timeout(self.timeout, connection.smtp.test_connected()).await,
                    Ok(true)
                ),
                Liveness::Closed => false,
            };
            if open {
                return Ok(connection);
            }
            tracing::debug!("dropping a pooled SMTP connection the server has closed");
        }
    }

    fn checkin(&self, connection: Connection) {
        if connection.smtp.has_broken() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.size {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        } else {
            drop(idle);
            retire(connection, self.timeout);
        }
    }

    fn take_expired(&self) -> Vec<Connection> {
        let mut idle = self.idle();
        let (expired, fresh): (Vec<Idle>, Vec<Idle>) = idle
            .drain(..)
            .partition(|entry| entry.since.elapsed() >= self.idle_timeout);
        *idle = fresh;
        expired.into_iter().map(|entry| entry.connection).collect()
    }

    async fn open(&self) -> Result<Connection, Failure> {
        let stream = connect(&self.endpoint.host, self.endpoint.port, self.timeout).await?;
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        let (stream, socket) = second_descriptor(stream).map_err(Failure::Connect)?;
        let smtp = timeout(self.timeout, self.handshake(stream))
            .await
            .map_err(|_| Failure::TimedOut {
                step: "greeting, EHLO, TLS and AUTH",
                after: self.timeout,
            })??;
        tracing::debug!(peer = ?socket.peer_addr().ok(), "SMTP connection opened");
        Ok(Connection { smtp, socket })
    }

    /// What lettre's `Tokio1Executor::connect` and `AsyncSmtpClient::connection` do once the
    /// socket is open.
    async fn handshake(&self, stream: TcpStream) -> Result<AsyncSmtpConnection, Failure> {
        let hello = &self.endpoint.hello_name;
        let mut smtp = match &self.encryption {
            Encryption::Implicit {
                connector,
                server_name,
            } => {
                let stream = connector
                    .connect(server_name.clone(), stream)
                    .await
                    .map_err(Failure::Tls)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(stream)), hello)
                    .await
                    .map_err(Failure::Setup)?
            }
            Encryption::None | Encryption::StartTls { .. } => {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello)
                    .await
                    .map_err(Failure::Setup)?
            }
        };
        if let Encryption::StartTls {
            parameters,
            required,
        } = &self.encryption
            && (*required || smtp.can_starttls())
        {
            // Fails when the server does not offer STARTTLS: no credentials and no message
            // ever cross a connection that should have been encrypted.
            smtp.starttls(parameters.clone(), hello)
                .await
                .map_err(Failure::Setup)?;
        }
        if let Some(credentials) = &self.endpoint.credentials {
            smtp.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(Failure::Setup)?;
        }
        Ok(smtp)
    }
}

impl Encryption {
    /// The same client configuration lettre's `TlsParameters::new` builds: webpki roots,
    /// TLS 1.2 and 1.3, the installed rustls crypto provider or else aws-lc-rs.
    fn new(endpoint: &Endpoint, extra_roots: &[CertificateDer<'static>]) -> anyhow::Result<Self> {
        let host = &endpoint.host;
        Ok(match endpoint.security {
            Security::Plain => Encryption::None,
            Security::StartTls { required } => {
                let mut builder = TlsParameters::builder(host.clone());
                for root in extra_roots {
                    builder = builder.add_root_certificate(
                        Certificate::from_der(root.to_vec()).context("extra root certificate")?,
                    );
                }
                Encryption::StartTls {
                    parameters: builder.build().context("TLS settings")?,
                    required,
                }
            }
            Security::Implicit => {
                let provider = CryptoProvider::get_default()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                for root in extra_roots {
                    roots.add(root.clone()).context("extra root certificate")?;
                }
                let config = ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(rustls::ALL_VERSIONS)
                    .context("TLS settings")?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let server_name = ServerName::try_from(host.as_str())
                    .map(|name| name.to_owned())
                    .with_context(|| format!("{host:?} cannot be checked against a certificate"))?;
                Encryption::Implicit {
                    connector: TlsConnector::from(Arc::new(config)),
                    server_name,
                }
            }
        })
    }
}

enum Liveness {
    /// Nothing to read: the connection is as we left it.
    Quiet,
    /// Bytes arrived while idle.
    Readable,
    /// The server closed or reset the connection.
    Closed,
}

impl Connection {
    fn liveness(&self) -> Liveness {
        match self.socket.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Liveness::Quiet,
            Ok(0) | Err(_) => Liveness::Closed,
            Ok(_) => Liveness::Readable,
        }
    }
}

/// Closes a connection in the background: QUIT unless it is already broken, then shutdown.
fn retire(mut connection: Connection, limit: Duration) {
    tokio::spawn(async move {
        let _ = timeout(limit, connection.smtp.abort()).await;
    });
}

/// Closes idle connections once they are older than the idle timeout, as lettre's pool does;
/// ends when the pool is dropped.
async fn close_expired(pool: Weak<Inner>) {
    let Some(period) = pool
        .upgrade()
        .map(|pool| (pool.idle_timeout / 4).max(Duration::from_millis(100)))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let expired = pool.take_expired();
        let limit = pool.timeout;
        drop(pool);
        for connection in expired {
            retire(connection, limit);
        }
    }
}

/// Like lettre: every resolved address in turn, each with the timeout.
async fn connect(host: &str, port: u16, limit: Duration) -> Result<TcpStream, Failure> {
    let addresses = timeout(limit, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| Failure::TimedOut {
            step: "resolving the host name",
            after: limit,
        })?
        .map_err(Failure::Connect)?;
    let mut last = None;
    for address in addresses {
        match timeout(limit, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ));
            }
        }
    }
    Err(Failure::Connect(last.unwrap_or_else(|| {
        io::Error::other("the host name resolved to no address")
    })))
}

fn second_descriptor(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let stream = stream.into_std()?;
    let second = stream.try_clone()?;
    // Shared with the first descriptor anyway; `liveness` must never block.
    second.set_nonblocking(true)?;
    Ok((TcpStream::from_std(stream)?, second))
}

/// A TLS session we opened ourselves (on a socket with TCP_NODELAY), in the shape lettre
/// takes for `connect_with_transport`.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

#[cfg(test)]
impl SmtpPool {
    /// TCP_NODELAY of every idle connection, as the kernel reports it.
    fn idle_nodelay(&self) -> Vec<bool> {
        self.inner
            .idle()
            .iter()
            .map(|entry| entry.connection.socket.nodelay().unwrap_or(false))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
