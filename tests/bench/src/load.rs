//! A small HTTP/1.1 keep-alive client and the two load shapes the benchmarks use.
//!
//! The load generator shares the machine's two cores with the api, Redis and RabbitMQ, so it
//! is kept as cheap as it can be: one pre-formatted request per write, a response read by
//! `Content-Length`, no header map, no per-request allocation beyond the body.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::connect_from(addr, None).await
    }

    /// A connection from the local address `source` (another loopback address, say, so the
    /// api sees another client IP), or from any when `None`.
    pub(crate) async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Self> {
        let stream = match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
        }
        .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(1024),
        })
    }

    /// Sends `POST path` with a JSON body and returns the status (the body is discarded).
    pub(crate) async fn post_json(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        use std::io::Write as _;
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<u16> {
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                anyhow::bail!("connection closed by the server");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_len]).context("response head")?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        let length = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_len + length {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                anyhow::bail!("connection closed in the middle of a body");
            }
        }
        self.buf.drain(..head_len + length);
        Ok(status)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `http://127.0.0.1:1234` → the socket address.
pub(crate) fn socket_addr(base_url: &str) -> anyhow::Result<SocketAddr> {
    base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("not an http://ip:port base URL: {base_url}"))
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadResult {
    /// Answers with the expected status.
    pub ok: u64,
    /// Other answers and transport errors.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of the expected answers, sorted.
    pub latencies: Vec<Duration>,
    /// Open loop only: requests sent more than 5 ms after their planned time (the generator
    /// fell behind its schedule).
    pub late: u64,
}

impl LoadResult {
    /// Joins the load tasks (each returning its latencies) into one result.
    pub(crate) async fn gather(
        tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
        started: Instant,
        errors: u64,
        late: u64,
    ) -> anyhow::Result<Self> {
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await?);
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(Self {
            ok: latencies.len() as u64,
            errors,
            elapsed,
            latencies,
            late,
        })
    }
}

impl LoadResult {
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }

    /// Adds another run's counts (latencies stay sorted).
    pub(crate) fn merge(&mut self, other: LoadResult) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.late += other.late;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
    }
}

/// The `q` quantile (0..=1) of sorted durations (nearest rank).
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Makes the body of request `seq` on connection `conn`; `None` ends that connection's run.
pub(crate) type BodyFn = Arc<dyn Fn(usize, u64) -> Option<Vec<u8>> + Send + Sync>;

/// Closed loop: `conns` connections, each sending its next request as soon as the previous
/// answer arrived, until `duration` passed or the bodies ran out.
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    path: &'static str,
    expect: u16,
    conns: usize,
    duration: Duration,
    body: BodyFn,
) -> anyhow::Result<LoadResult> {
    closed_loop_from(addr, None, path, expect, conns, duration, body).await
}

/// [`closed_loop`] from the local address `source` (see [`Conn::connect_from`]).
pub(crate) async fn closed_loop_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &'static str,
    expect: u16,
    conns: usize,
    duration: Duration,
    body: BodyFn,
) -> anyhow::Result<LoadResult> {
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::connect_from(addr, source).await?);
    }
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(conns);
    for (c, mut conn) in connections.into_iter().enumerate() {
        let body = body.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let Some(b) = body(c, seq) else { break };
                seq += 1;
                let sent = Instant::now();
                match conn.post_json(path, &b).await {
                    Ok(status) if status == expect => latencies.push(sent.elapsed()),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        // A broken connection: open a new one and go on.
                        match Conn::connect_from(addr, source).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            latencies
        }));
    }
    LoadResult::gather(tasks, started, errors.load(Ordering::Relaxed), 0).await
}

/// Open loop: `rate` requests per second for `duration`, spread over `conns` connections
/// (request `j` is planned at `j / rate` and goes out on connection `j % conns`). Latency is
/// measured from the moment the request is written; requests that left more than 5 ms after
/// their planned time are counted in [`LoadResult::late`], so a generator that could not keep
/// the schedule is visible.
pub(crate) async fn open_loop(
    addr: SocketAddr,
    path: &'static str,
    expect: u16,
    conns: usize,
    rate: f64,
    duration: Duration,
    body: BodyFn,
) -> anyhow::Result<LoadResult> {
    open_loop_from(addr, None, path, expect, conns, rate, duration, body).await
}

/// [`open_loop`] from the local address `source` (see [`Conn::connect_from`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_loop_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &'static str,
    expect: u16,
    conns: usize,
    rate: f64,
    duration: Duration,
    body: BodyFn,
) -> anyhow::Result<LoadResult> {
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::connect_from(addr, source).await?);
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let errors = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let started = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(conns);
    for (c, mut conn) in connections.into_iter().enumerate() {
        let body = body.clone();
        let errors = errors.clone();
        let late = late.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut j = c as u64;
            while j < total {
                let planned = started + interval.mul_f64(j as f64);
                tokio::time::sleep_until(planned.into()).await;
                let Some(b) = body(c, j) else { break };
                let sent = Instant::now();
                if sent.duration_since(planned) > Duration::from_millis(5) {
                    late.fetch_add(1, Ordering::Relaxed);
                }
                match conn.post_json(path, &b).await {
                    Ok(status) if status == expect => latencies.push(sent.elapsed()),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match Conn::connect_from(addr, source).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
                j += conns as u64;
            }
            latencies
        }));
    }
    LoadResult::gather(
        tasks,
        started,
        errors.load(Ordering::Relaxed),
        late.load(Ordering::Relaxed),
    )
    .await
}
