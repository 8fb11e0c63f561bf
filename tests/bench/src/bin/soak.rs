//! Soak: forgot-password and reset traffic at half the measured maximum for a long time,
//! against the release api and worker and the local services, reporting errors and memory.
//!
//! ```sh
//! cargo build --release -p api -p mail-worker -p bench
//! ./target/release/soak            # 10 minutes; SOAK_SECS, SOAK_RATE, SOAK_SERVICE_ENV to change
//! ```
//! The maximum is measured first (5 s of closed-loop load from 64 clients); the soak then
//! sends forgot-password requests open-loop at half that rate (SOAK_RATE overrides it): one
//! in 500 for one of 2,000 registered accounts, whose emails are read from the SMTP sink and
//! whose links are submitted as resets (production argon2 parameters). Every answer other
//! than 202 / 204 counts as an error, as does a request that could not be sent on time.
//! RSS of both processes is sampled every 10 s.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use e2e::stack::{SmtpSink, StackEnv};
use serde_json::json;

const USERS: usize = 2_000;
const REGISTERED_ONE_IN: u64 = 500;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    forgot_ok: AtomicU64,
    forgot_err: AtomicU64,
    shed: AtomicU64,
    reset_ok: AtomicU64,
    reset_err: AtomicU64,
}

async fn seed_users(database_url: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
         SELECT gen_random_uuid(), 'soak' || i || '@example.org', 'soak' || i || '@example.org',
                'not-a-hash', now()
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(USERS as i32)
    .execute(&mut db)
    .await?;
    db.close().await?;
    Ok(())
}

/// Closed-loop saturation for `secs` seconds from 64 clients: requests/s.
async fn measure_max(client: &reqwest::Client, url: &str, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let email = format!("probe{t}-{n}@unknown.example.org");
                let request = client
                    .post(&url)
                    .header("x-forwarded-for", format!("10.255.{t}.{}", n % 250))
                    .json(&json!({ "email": email }));
                if let Ok(r) = request.send().await
                    && r.status() == 202
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_num("SOAK_SECS", 600);
    // Its million keys go to a Redis database of their own, emptied before and after.
    e2e::use_own_redis_database(e2e::BENCH_REDIS_DATABASE).await?;
    let sink = SmtpSink::start().await?;
    let mut env = StackEnv::new().await?;
    env.set(
        "RUST_LOG",
        "warn,api::startup=info,mail_worker::startup=info",
    );
    // The load comes through a trusted proxy (this program) on behalf of 65,536 clients, so
    // the per-IP budgets stay in force at their production size.
    env.set("TRUSTED_PROXIES", "127.0.0.1");
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000");
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "1000");
    env.set("ARGON2_MEMORY_KIB", "19456");
    env.set("ARGON2_ITERATIONS", "2");
    // `SOAK_SERVICE_ENV` (`NAME=value,…`): a setting to try on both services, such as an
    // allocator's (`MALLOC_ARENA_MAX=2`), on the same run without a rebuild.
    for (name, value) in std::env::var("SOAK_SERVICE_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
    {
        env.set(name.trim(), value.trim());
    }
    let (api, base) = env.start_api().await.context("api")?;
    seed_users(&env.database_url).await?;
    let (worker, _) = env.start_worker(&sink.url()).await.context("worker")?;
    let api_pid = api.child.id().context("api pid")?;
    let worker_pid = worker.child.id().context("worker pid")?;
    let forgot_url = format!("{base}/v1/password/forgot");
    let reset_url = format!("{base}/v1/password/reset");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;

    let rate = match std::env::var("SOAK_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(r) => r,
        None => {
            let max = measure_max(&client, &forgot_url, 5).await;
            println!("measured maximum: {max:.0} forgot-password requests/s");
            max / 2.0
        }
    };
    println!(
        "soak: {secs} s at {rate:.0} requests/s (1 in {REGISTERED_ONE_IN} for a registered account, its link then reset)"
    );

    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    // Resets: read the links the worker delivered, submit them, delete the emails.
    let resetter = {
        let client = client.clone();
        let counters = counters.clone();
        let dir = sink.dir.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline + Duration::from_secs(5) {
                let mut files: Vec<_> = std::fs::read_dir(&dir)
                    .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
                for file in files {
                    let raw = std::fs::read(&file).unwrap_or_default();
                    let _ = std::fs::remove_file(&file);
                    let email = e2e::stack::StoredEmail {
                        file: file.clone(),
                        raw,
                    };
                    let Some(link) = email.link("https://account.example.test/reset-password")
                    else {
                        continue;
                    };
                    let Some(token) = link.split("token=").nth(1) else {
                        continue;
                    };
                    n += 1;
                    let body = json!({ "token": token, "new_password": format!("soak pass phrase {n} tangerine") });
                    match client.post(&reset_url).json(&body).send().await {
                        Ok(r) if r.status() == 204 => {
                            counters.reset_ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(r) => {
                            eprintln!("reset answered {}", r.status());
                            counters.reset_err.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("reset failed: {e}");
                            counters.reset_err.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Memory samples.
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            samples.push((
                started.elapsed().as_secs(),
                rss_kib(api_pid),
                rss_kib(worker_pid),
            ));
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        samples.push((
            started.elapsed().as_secs(),
            rss_kib(api_pid),
            rss_kib(worker_pid),
        ));
        samples
    });

    // Open-loop load: request i is due at i / rate seconds.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut i: u64 = 0;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        let due = started + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            counters.shed.fetch_add(1, Ordering::Relaxed);
            i += 1;
            continue;
        };
        let email = if i.is_multiple_of(REGISTERED_ONE_IN) {
            format!(
                "soak{}@example.org",
                (i / REGISTERED_ONE_IN) as usize % USERS
            )
        } else {
            format!("u{i}@unknown.example.org")
        };
        let client = client.clone();
        let url = forgot_url.clone();
        let tally = counters.clone();
        let latencies = latencies.clone();
        tokio::spawn(async move {
            let counters = tally;
            let sent = Instant::now();
            let peer = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            let request = client
                .post(&url)
                .header("x-forwarded-for", peer)
                .json(&json!({ "email": email }));
            match request.send().await {
                Ok(r) if r.status() == 202 => {
                    counters.forgot_ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut l) = latencies.lock() {
                        l.push(sent.elapsed().as_micros() as u32);
                    }
                }
                Ok(r) => {
                    eprintln!("forgot answered {}", r.status());
                    counters.forgot_err.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("forgot failed: {e}");
                    counters.forgot_err.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        i += 1;
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            println!(
                "  {:>4} s: {} forgot ok, {} errors, {} shed, {} resets ok, {} reset errors, RSS api {} KiB, worker {} KiB",
                started.elapsed().as_secs(),
                counters.forgot_ok.load(Ordering::Relaxed),
                counters.forgot_err.load(Ordering::Relaxed),
                counters.shed.load(Ordering::Relaxed),
                counters.reset_ok.load(Ordering::Relaxed),
                counters.reset_err.load(Ordering::Relaxed),
                rss_kib(api_pid),
                rss_kib(worker_pid),
            );
        }
    }
    let _ = in_flight.acquire_many(512).await;
    let samples = sampler.await?;
    resetter.await?;

    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .map(|us| *us as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    // Growth: from the first sample after the first minute (warmed up) to the last.
    let warm = samples
        .iter()
        .find(|(t, _, _)| *t >= 60)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let max_api = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_worker = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let errors = counters.forgot_err.load(Ordering::Relaxed)
        + counters.reset_err.load(Ordering::Relaxed)
        + counters.shed.load(Ordering::Relaxed);
    println!(
        "\nsoak result ({} s at {rate:.0} req/s):",
        started.elapsed().as_secs()
    );
    println!(
        "  forgot-password: {} answered 202, {} errors, {} not sent in time; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        counters.forgot_ok.load(Ordering::Relaxed),
        counters.forgot_err.load(Ordering::Relaxed),
        counters.shed.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    println!(
        "  reset-password: {} answered 204, {} errors",
        counters.reset_ok.load(Ordering::Relaxed),
        counters.reset_err.load(Ordering::Relaxed),
    );
    println!(
        "  RSS api: {} KiB at {} s, {} KiB at the end ({:+} KiB), max {} KiB",
        warm.1,
        warm.0,
        last.1,
        last.1 as i64 - warm.1 as i64,
        max_api
    );
    println!(
        "  RSS worker: {} KiB at {} s, {} KiB at the end ({:+} KiB), max {} KiB",
        warm.2,
        warm.0,
        last.2,
        last.2 as i64 - warm.2 as i64,
        max_worker
    );
    println!("  errors total: {errors}");
    drop(worker);
    drop(api);
    let _ = std::fs::remove_dir_all(&sink.dir);
    if let Err(e) = e2e::empty_own_redis_database().await {
        eprintln!("could not empty the soak's Redis database: {e:#}");
    }
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
