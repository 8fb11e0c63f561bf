//! Benchmarks of the release binaries against the local services.
//!
//! ```sh
//! cargo build --release -p api -p mail-worker -p e2e
//! ./target/release/bench forgot   # forgot-password requests/s and latency (api alone)
//! ./target/release/bench worker   # emails/s from a full queue into the local SMTP sink
//! ```
//! Options (environment): `BENCH_SECS` (default 10), `BENCH_CONCURRENCY` (default 64),
//! `BENCH_JOBS` (default 2000), `BENCH_NO_QUICKACK=1` (sink answers with delayed ACKs, like a
//! remote server would).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use e2e::stack::{SmtpSink, StackEnv};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("forgot") => forgot().await,
        Some("worker") => worker().await,
        _ => anyhow::bail!("usage: bench forgot|worker"),
    }
}

/// Saturates `POST /v1/password/forgot` with distinct addresses for BENCH_SECS seconds from
/// BENCH_CONCURRENCY keep-alive connections, each request waiting for its broker confirm.
async fn forgot() -> anyhow::Result<()> {
    let secs = env_num("BENCH_SECS", 10);
    let concurrency = env_num("BENCH_CONCURRENCY", 64) as usize;
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set(
        "RUST_LOG",
        "warn,api::startup=info,mail_worker::startup=info",
    );
    let topology = env.topology();
    let (_api, base) = env.start_api().await?;
    let url = format!("{base}/v1/password/forgot");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // Warm up connections and the broker channel.
    for i in 0..concurrency {
        client
            .post(&url)
            .json(&serde_json::json!({ "email": format!("warm{i}@example.org") }))
            .send()
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let body = serde_json::json!({ "email": format!("u{t}-{n}@example.org") });
                let sent = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 202 => latencies.push(sent.elapsed()),
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "forgot-password: {} requests in {:.1} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {} (concurrency {concurrency})",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    drop(_api);
    e2e::delete_topology_blocking(&topology);
    Ok(())
}

/// Fills the queue with BENCH_JOBS notices, then starts one worker and measures how fast the
/// SMTP sink receives them.
async fn worker() -> anyhow::Result<()> {
    let jobs = env_num("BENCH_JOBS", 2000) as usize;
    let sink = if std::env::var("BENCH_NO_QUICKACK").is_ok_and(|v| !v.is_empty()) {
        SmtpSink::start_with_args(&["--no-quickack"]).await?
    } else {
        SmtpSink::start().await?
    };
    let mut env = StackEnv::new().await?;
    env.set(
        "RUST_LOG",
        "warn,api::startup=info,mail_worker::startup=info",
    );
    let topology = env.topology();
    let (_api, _) = env.start_api().await.context("api (creates the schema)")?;
    e2e::publish_raw_jobs(&topology, &e2e::notice_jobs("bench", jobs)).await?;
    let started = Instant::now();
    let (_worker, _) = env.start_worker(&sink.url()).await?;
    let emails = sink.wait_for(jobs, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    println!(
        "mail-worker: {} emails in {:.2} s = {:.0} emails/s into the local SMTP sink (concurrency {}, quickack {})",
        emails.len(),
        elapsed.as_secs_f64(),
        emails.len() as f64 / elapsed.as_secs_f64(),
        16,
        !std::env::var("BENCH_NO_QUICKACK").is_ok_and(|v| !v.is_empty()),
    );
    e2e::delete_topology_blocking(&topology);
    let _ = std::fs::remove_dir_all(&sink.dir);
    Ok(())
}
