//! `api healthcheck` / `mail-worker healthcheck`: one `GET /healthz` to the process's own
//! listener, for container health checks in images without a shell or curl
//! (`HEALTHCHECK CMD ["/usr/local/bin/api", "healthcheck"]`).
//!
//! Plain HTTP/1.1 over a TCP stream: the listeners it asks are the service's own, on the
//! loopback of the same container, so there is no TLS, proxy or redirect to follow, and a
//! client library would only add weight to every image.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the whole check may take (connect, send, first line of the answer). Docker's
/// default `--timeout` is 30 s and Kubernetes probes default to 1 s; a live process answers
/// `/healthz` in milliseconds, so 3 s only separates a hung process from a busy one.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The path every service answers while its process is alive (not whether its dependencies
/// are: a broker outage must not make the orchestrator restart healthy containers).
pub const PATH: &str = "/healthz";

/// Where to reach a listener bound to `bind` from the same host: a wildcard address
/// (`0.0.0.0`, `::`) is reached through the loopback of its family.
pub fn target(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Asks `GET {PATH}` of the listener bound to `bind` (named by `variable` in messages) within
/// `timeout`: `Ok` with a one-line report when it answers 200, else `Err` with one line that
/// says what went wrong.
pub async fn check(variable: &str, bind: SocketAddr, timeout: Duration) -> Result<String, String> {
    if bind.port() == 0 {
        return Err(format!(
            "unhealthy: {variable} has port 0 (a free port is picked at start), so there is no \
             fixed address to check; set a port"
        ));
    }
    let addr = target(bind);
    let url = format!("http://{addr}{PATH}");
    match tokio::time::timeout(timeout, status_of(addr)).await {
        Err(_) => Err(format!(
            "unhealthy: GET {url} got no answer within {} ms",
            timeout.as_millis()
        )),
        Ok(Err(e)) => Err(format!("unhealthy: GET {url}: {e}")),
        Ok(Ok(200)) => Ok(format!("healthy: GET {url} answered 200")),
        Ok(Ok(status)) => Err(format!("unhealthy: GET {url} answered {status}")),
    }
}

/// Sends the request and reads the status code of the answer's first line.
async fn status_of(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // The status line is short; 512 bytes hold it with room to spare, and nothing after it
    // matters.
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 512 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    parse_status(&answer).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP (no status line)",
        )
    })
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// The `healthcheck` subcommand of a service whose listener is bound to `bind` (named by
/// `variable`): prints the one-line report and returns `Ok` when healthy; the error (one line)
/// is printed by the caller, which exits with status 1.
pub async fn run(variable: &str, bind: SocketAddr) -> anyhow::Result<()> {
    let report = check(variable, bind, TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A listener answering every connection with `answer` (after reading the request).
    async fn server(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_listener_answering_200_is_healthy() {
        let addr = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let report = check("API_BIND", addr, TIMEOUT).await.expect("healthy");
        assert_eq!(
            report,
            format!("healthy: GET http://{addr}/healthz answered 200")
        );
    }

    #[tokio::test]
    async fn any_other_status_is_unhealthy_and_named() {
        let addr = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let problem = check("API_BIND", addr, TIMEOUT)
            .await
            .expect_err("unhealthy");
        assert!(problem.ends_with("answered 503"), "{problem}");
        let addr = server(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        let problem = check("API_BIND", addr, TIMEOUT)
            .await
            .expect_err("unhealthy");
        assert!(problem.contains("not HTTP"), "{problem}");
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let problem = check("WORKER_HTTP_BIND", addr, TIMEOUT)
            .await
            .expect_err("unhealthy");
        assert!(problem.starts_with("unhealthy: GET http://"), "{problem}");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_unhealthy_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let started = std::time::Instant::now();
        let problem = check("API_BIND", addr, Duration::from_millis(200))
            .await
            .expect_err("unhealthy");
        assert!(problem.contains("no answer within 200 ms"), "{problem}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }

    #[tokio::test]
    async fn port_zero_has_nothing_to_check() {
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let problem = check("API_BIND", bind, TIMEOUT)
            .await
            .expect_err("unhealthy");
        assert!(problem.contains("API_BIND has port 0"), "{problem}");
    }

    #[test]
    fn wildcard_binds_are_reached_through_the_loopback() {
        let target = |s: &str| target(s.parse().expect("address")).to_string();
        assert_eq!(target("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(target("[::]:8081"), "[::1]:8081");
        assert_eq!(target("10.1.2.3:9464"), "10.1.2.3:9464");
    }

    #[test]
    fn only_an_http_status_line_gives_a_status() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status(b"220 smtp.example.com ESMTP\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
