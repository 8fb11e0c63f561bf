//! Section 5: reset-password resets/s next to raw argon2id hashes/s with the same cost, and
//! the forgot-password latency while resets keep every hashing slot busy: on the same api
//! process, on a second one, and on a second one whose scheduling group runs at nice 19 (the
//! forgot-password path's own share, apart from the cores it shares with the hashing).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use e2e::stack::{SmtpSink, StackEnv};

use crate::{
    forgot, limits,
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num, ms},
};

/// The api's production argon2id cost (its defaults, as in `.env.example`).
pub(crate) const MEMORY_KIB: u32 = 19_456;
pub(crate) const ITERATIONS: u32 = 2;
pub(crate) const PARALLELISM: u32 = 1;
/// Reset clients at once (the api lets `HASH_CONCURRENCY` = cores hash; the rest queue).
const RESET_CONNECTIONS: usize = 16;
/// The forgot-password load measured beside the resets.
const FORGOT_RATE: f64 = 100.0;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let mut env = StackEnv::new().await?;
    env.set("ARGON2_MEMORY_KIB", &MEMORY_KIB.to_string());
    env.set("ARGON2_ITERATIONS", &ITERATIONS.to_string());
    env.set("ARGON2_PARALLELISM", &PARALLELISM.to_string());
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set("RATE_LIMIT_TOKEN_PER_HOUR", "1000000");
    // Every reset comes from this one client IP; the limit here is the cores, not the fair
    // share one client gets of them.
    env.set("HASH_PER_CLIENT", &RESET_CONNECTIONS.to_string());
    env.set("RUST_LOG", &util::log_filter());
    util::apply_overrides(&mut env);
    let result = measure(&env, &sink, rows).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result
}

async fn measure(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let (mut worker, _) = env.start_worker(&sink.url()).await?;

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("[bench]   raw argon2id");
    let raw_rate =
        limits::argon2_rate(MEMORY_KIB, ITERATIONS, PARALLELISM, threads, util::secs(5)).await?;

    // Enough links for about BENCH_RESET_SECS of resets at the raw hashing rate.
    let n = ((raw_rate * env_num("BENCH_RESET_SECS", 8) as f64) as usize).clamp(32, 2000);
    let tag = e2e::unique_id();
    forgot::register_with(&env.database_url, "reset-", &tag, n).await?;
    forgot::register_with(&env.database_url, "apart-", &tag, n).await?;
    forgot::register_with(&env.database_url, "lowcpu-", &tag, n).await?;
    let tokens = reset_links(addr, sink, &env.public_base_url, "reset-", &tag, n).await?;
    let apart_tokens = reset_links(addr, sink, &env.public_base_url, "apart-", &tag, n).await?;
    let low_tokens = reset_links(addr, sink, &env.public_base_url, "lowcpu-", &tag, n).await?;
    // The worker is done; it would only compete with the api for the cores from here on.
    worker.terminate(Duration::from_secs(15)).await?;

    eprintln!("[bench]   forgot-password latency, hashing idle");
    let forgot_secs = util::secs(4);
    let baseline = forgot_load(addr, &format!("base-{tag}"), forgot_secs).await?;

    eprintln!("[bench]   resets");
    let (resets, during) =
        resets_beside_forgot(addr, addr, tokens, raw_rate, &format!("during-{tag}")).await?;
    // The same, with the resets on a second api process: the first one only answers the
    // forgot-password load, and what its latency still suffers is the cores it shares.
    eprintln!("[bench]   resets on a second api process");
    let (second, second_base) = env.start_api().await?;
    let second_addr = load::socket_addr(&second_base)?;
    let (apart_resets, apart) = resets_beside_forgot(
        second_addr,
        addr,
        apart_tokens,
        raw_rate,
        &format!("apart-{tag}"),
    )
    .await?;
    drop(second);
    // And with that second process given a small share of the cores, as a container with a
    // low CPU weight would have: what forgot-password still suffers then is its own.
    eprintln!("[bench]   resets on a second api process with a low CPU share");
    let low = match low_share_api(env).await? {
        Some((low_api, low_base)) => {
            let low_addr = load::socket_addr(&low_base)?;
            let measured =
                resets_beside_forgot(low_addr, addr, low_tokens, raw_rate, &format!("low-{tag}"))
                    .await?;
            drop(low_api);
            Some(measured)
        }
        None => None,
    };

    let hash = stored_hash(&env.database_url, &tag).await?;
    let expected = format!("$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={PARALLELISM}$");
    anyhow::ensure!(
        hash.starts_with(&expected),
        "the api hashed with other parameters than the raw loop: {}",
        hash.split('$').take(4).collect::<Vec<_>>().join("$")
    );
    drop(api);

    rows.push(
        Row::new(
            "5 reset",
            format!("`POST /v1/password/reset`, {n} links, {RESET_CONNECTIONS} connections"),
        )
        .measured(format!(
            "{:.1} resets/s ({} errors)",
            resets.rate(),
            resets.errors
        ))
        .limit(format!(
            "raw argon2id m={MEMORY_KIB} t={ITERATIONS} p={PARALLELISM}, {threads} threads: {raw_rate:.1} hashes/s"
        ))
        .ratio(resets.rate() / raw_rate)
        .target(Target::AtLeast(0.90), "≥ 0.90"),
    );
    rows.push(forgot_row(
        format!("forgot-password latency at {FORGOT_RATE:.0} req/s while resets saturate hashing"),
        &during,
        format!(
            "20 ms (hashing idle: p50 {}, p99 {})",
            ms(baseline.p(0.5)),
            ms(baseline.p(0.99))
        ),
    ));
    rows.push(forgot_row(
        format!(
            "the same, with the resets on a second api process on the same cores ({:.1} resets/s)",
            apart_resets.rate()
        ),
        &apart,
        "20 ms: what is left is the cores the two processes share".into(),
    ));
    let figure = "the same, the second api process in a scheduling group of its own at nice 19";
    rows.push(match low {
        Some((low_resets, low)) => forgot_row(
            format!("{figure} ({:.1} resets/s)", low_resets.rate()),
            &low,
            "20 ms: the forgot-password path's own share".into(),
        ),
        None => Row::new("5 reset", figure).measured(
            "not measured: the kernel does not group this process's tasks by session (sched_autogroup_enabled is not 1, or it runs in a CPU cgroup of its own)",
        ),
    });
    Ok(())
}

/// A row of forgot-password latency (p99 < 20 ms) beside resets.
fn forgot_row(figure: String, latency: &load::LoadResult, limit: String) -> Row {
    Row::new("5 reset", figure)
        .measured(format!(
            "p50 {}, p99 {} ({} errors)",
            ms(latency.p(0.5)),
            ms(latency.p(0.99)),
            latency.errors
        ))
        .limit(limit)
        .ratio(latency.p(0.99).as_secs_f64() / 0.020)
        .target(Target::Below(1.0), "p99 < 20 ms")
}

/// A second api in a session of its own (`setsid`), whose scheduling group (Linux's
/// autogroup: one per session) is set to nice 19, so the CPU goes to every other group first
/// while the second api's hashing threads stay busy; raising a group's nice needs no
/// privilege. `None` where the kernel does not group this process's tasks by session.
async fn low_share_api(env: &StackEnv) -> anyhow::Result<Option<(e2e::ServiceProcess, String)>> {
    // The kernel groups by session only tasks in the root CPU cgroup: in a container the
    // write would succeed and change nothing.
    let grouped = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|v| v.trim() == "1");
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // The group that schedules this process: cgroup v1's `cpu` controller, else v2's one.
    let entries: Vec<(&str, &str)> = cgroups
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            rest.split_once(':')
        })
        .collect();
    let cpu_path = entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "cpu"))
        .or_else(|| {
            entries
                .iter()
                .find(|(controllers, _)| controllers.is_empty())
        })
        .map(|(_, path)| *path);
    let in_root_cpu_group = cpu_path == Some("/");
    if !grouped || !in_root_cpu_group {
        return Ok(None);
    }
    let api = e2e::workspace_binary("api");
    let api = api.to_str().context("the api's path is not UTF-8")?;
    // Not the group leader of its process group, `setsid` starts the new session and then
    // becomes the api itself (same process id).
    let process = e2e::ServiceProcess::spawn(std::path::Path::new("setsid"), &[api], &env.vars)?;
    let addr = process
        .wait_for_log_field("api listening", "addr", std::time::Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("api did not start: {:?}", process.output()))?;
    // Listening, the api has long been in its own session; the check keeps the write from
    // ever lowering the group of this process (and of the first api) instead.
    let pid = process.child.id().context("the second api exited")?;
    let group = |path: &str| -> anyhow::Result<String> {
        let line = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        Ok(line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    let path = format!("/proc/{pid}/autogroup");
    anyhow::ensure!(
        group(&path)? != group("/proc/self/autogroup")?,
        "the second api is still in the bench's scheduling group"
    );
    std::fs::write(&path, "19")
        .with_context(|| format!("cannot lower the scheduling group of process {pid}"))?;
    Ok(Some((process, format!("http://{addr}"))))
}

/// Redeems `tokens` on 16 connections to `reset_addr` while an open loop of forgot-password
/// requests runs against `forgot_addr` for most of that time.
async fn resets_beside_forgot(
    reset_addr: std::net::SocketAddr,
    forgot_addr: std::net::SocketAddr,
    tokens: Vec<Vec<u8>>,
    raw_rate: f64,
    prefix: &str,
) -> anyhow::Result<(load::LoadResult, load::LoadResult)> {
    let n = tokens.len();
    let bodies = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let resets = load::closed_loop(
        reset_addr,
        "/v1/password/reset",
        204,
        RESET_CONNECTIONS,
        Duration::from_secs(300),
        Arc::new(move |_, _| bodies.get(next.fetch_add(1, Ordering::Relaxed)).cloned()),
    );
    // The forgot load runs inside the reset run (which lasts about n / raw_rate seconds).
    let during_secs = Duration::from_secs_f64((n as f64 / raw_rate * 0.7).max(1.0));
    let during = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        forgot_load(forgot_addr, prefix, during_secs).await
    };
    let (resets, during) = tokio::join!(resets, during);
    Ok((resets?, during?))
}

async fn forgot_load(
    addr: std::net::SocketAddr,
    prefix: &str,
    duration: Duration,
) -> anyhow::Result<load::LoadResult> {
    let prefix = prefix.to_owned();
    load::open_loop(
        addr,
        "/v1/password/forgot",
        202,
        4,
        FORGOT_RATE,
        duration,
        Arc::new(move |c, j| {
            Some(format!(r#"{{"email":"{prefix}-{c}-{j}@example.org"}}"#).into_bytes())
        }),
    )
    .await
}

/// Asks for a reset link for each of the `n` accounts `<prefix><i:05>-<tag>@example.org` (as
/// `forgot::register_with` made them) and collects the reset bodies (`{token, new_password}`)
/// from the emails the worker delivered.
pub(crate) async fn reset_links(
    addr: std::net::SocketAddr,
    sink: &SmtpSink,
    base_url: &str,
    prefix: &str,
    tag: &str,
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let before = util::accepted(sink).await?;
    let mut conn = Conn::connect(addr).await?;
    for i in 0..n {
        let body = format!(r#"{{"email":"{prefix}{i:05}-{tag}@example.org"}}"#);
        let status = conn
            .post_json("/v1/password/forgot", body.as_bytes())
            .await?;
        anyhow::ensure!(status == 202, "forgot-password answered {status}");
    }
    util::wait_accepted(sink, before + n as u64, Duration::from_secs(120)).await?;
    let link_prefix = shared::links::with_token(base_url, shared::links::RESET_PASSWORD_PATH, "");
    sink.emails()
        .iter()
        .filter(|e| e.rcpt_to().contains(tag))
        .map(|e| {
            let link = e.link(&link_prefix).context("a reset email without a link")?;
            let token = &link[link_prefix.len()..];
            Ok(serde_json::to_vec(&serde_json::json!({
                "token": token,
                // A password of a length people pick (zxcvbn's cost grows with length).
                "new_password": format!("Rs-{}-maple", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            }))?)
        })
        .collect()
}

/// One password hash the api wrote during the run.
async fn stored_hash(database_url: &str, tag: &str) -> anyhow::Result<String> {
    use sqlx::Row as _;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let row = sqlx::query(
        "SELECT password_hash FROM users WHERE email LIKE '%' || $1 || '%' AND password_version > 1 LIMIT 1",
    )
    .bind(tag)
    .fetch_one(&pool)
    .await
    .context("no password was changed")?;
    pool.close().await;
    Ok(row.try_get(0)?)
}
