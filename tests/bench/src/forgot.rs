//! Sections 1, 2 and the api's memory: forgot-password throughput and latency next to raw
//! confirmed publishes, and timing equality of registered and unregistered addresses.

use std::{sync::Arc, time::Duration};

use e2e::stack::StackEnv;

use crate::{
    limits::RawPublisher,
    load::{self, Conn, LoadResult},
    report::{Row, Target},
    util::{self, env_num, ms},
};

pub(crate) const FORGOT: &str = "/v1/password/forgot";
/// Connections (and raw publishing tasks) at saturation.
pub(crate) const CONCURRENCY: usize = 64;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    // One client IP sends everything: lift its budget out of the way (the per-IP limit is
    // still checked and counted on every request).
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    // The production log level: one JSON access-log line per request is part of the cost.
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&env, rows).await;
    util::drop_database(&env).await;
    result
}

async fn measure(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let jobs_queue = env.topology().jobs_queue();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = util::rss_mib(&api)?;

    let pairs = env_num("BENCH_TIMING_PAIRS", 2000) as usize;
    let tag = e2e::unique_id();
    register_users(&env.database_url, &tag, pairs).await?;

    let raw = RawPublisher::start().await?;
    let phase = util::secs(5);
    let rounds = env_num("BENCH_ROUNDS", 2);
    // Warm up both paths (connections, the channel, the script cache, the allocator).
    raw.run(CONCURRENCY, Duration::from_secs(1)).await?;
    raw.purge().await?;
    saturate(addr, &format!("warm-{tag}"), Duration::from_secs(1)).await?;
    raw.purge_queue(&jobs_queue).await?;

    // Alternate the two, so drift of a shared machine hits both alike.
    let mut raw_total = LoadResult::default();
    let mut api_total = LoadResult::default();
    let peak = util::RssPeak::start(&api);
    // Where the CPU goes: api, Redis, RabbitMQ and this process (publisher or load generator).
    let meter = util::CpuMeter::new(vec![
        api.child.id().unwrap_or(0),
        util::pid_of("redis-server").unwrap_or(0),
        util::pid_of("beam.smp").unwrap_or(0),
        std::process::id(),
    ]);
    let mut raw_cpu = [0.0; 4];
    let mut api_cpu = [0.0; 4];
    let add = |sum: &mut [f64; 4], before: &[f64], after: &[f64]| {
        for (i, s) in sum.iter_mut().enumerate() {
            *s += after[i] - before[i];
        }
    };
    for round in 0..rounds {
        eprintln!("[bench]   raw publishes, round {}", round + 1);
        let before = meter.sample();
        raw_total.merge(raw.run(CONCURRENCY, phase).await?);
        add(&mut raw_cpu, &before, &meter.sample());
        raw.purge().await?;
        eprintln!("[bench]   forgot-password saturation, round {}", round + 1);
        let before = meter.sample();
        api_total.merge(saturate(addr, &format!("s{round}-{tag}"), phase).await?);
        add(&mut api_cpu, &before, &meter.sample());
        raw.purge_queue(&jobs_queue).await?;
    }

    let half_rate = api_total.rate() / 2.0;
    eprintln!("[bench]   forgot-password half load");
    let half = load::open_loop(
        addr,
        FORGOT,
        202,
        CONCURRENCY,
        half_rate,
        util::secs(6),
        forgot_bodies(format!("h-{tag}")),
    )
    .await?;
    let load_rss = peak.finish().await;
    raw.purge_queue(&jobs_queue).await?;
    // The broker's own latency at the same rate: the floor under the api's.
    let raw_half = raw.run_at(CONCURRENCY, half_rate, util::secs(6)).await?;
    raw.purge().await?;
    raw.close().await;

    rows.push(
        Row::new(
            "1 forgot",
            "`POST /v1/password/forgot` at saturation, 64 connections",
        )
        .measured(format!(
            "{:.0} req/s ({} errors)",
            api_total.rate(),
            api_total.errors
        ))
        .limit(format!(
            "raw lapin confirms, 64 tasks, quorum queue: {:.0} msg/s",
            raw_total.rate()
        ))
        .ratio(api_total.rate() / raw_total.rate())
        .target(Target::AtLeast(0.70), "≥ 0.70"),
    );
    rows.push(
        Row::new("1 forgot", "latency at saturation")
            .measured(format!(
                "p50 {}, p99 {}",
                ms(api_total.p(0.5)),
                ms(api_total.p(0.99))
            ))
            .limit(format!(
                "raw confirm p50 {}, p99 {}",
                ms(raw_total.p(0.5)),
                ms(raw_total.p(0.99))
            )),
    );
    let per = |cpu: f64, n: u64| format!("{:.0}", cpu * 1e6 / n.max(1) as f64);
    rows.push(
        Row::new(
            "1 forgot",
            "CPU per request at saturation: api / Redis / RabbitMQ / load generator",
        )
        .measured(format!(
            "{} / {} / {} / {} µs",
            per(api_cpu[0], api_total.ok),
            per(api_cpu[1], api_total.ok),
            per(api_cpu[2], api_total.ok),
            per(api_cpu[3], api_total.ok)
        ))
        .limit(format!(
            "raw: RabbitMQ {} / publisher {} µs per message",
            per(raw_cpu[2], raw_total.ok),
            per(raw_cpu[3], raw_total.ok)
        )),
    );
    rows.push(half_load_row(
        Row::new(
            "1 forgot",
            format!("latency at half load ({half_rate:.0} req/s, open loop)"),
        ),
        &half,
        format!(
            "10 ms (raw confirms at the same rate: p50 {}, p99 {})",
            ms(raw_half.p(0.5)),
            ms(raw_half.p(0.99))
        ),
    ));

    eprintln!("[bench]   timing equality");
    timing_equality(addr, &tag, pairs, rows).await?;

    rows.push(rss_row("api idle", idle_rss).target(Target::Below(1.0), "< 30 MiB"));
    rows.push(rss_row(
        "api peak during the forgot-password runs",
        load_rss,
    ));
    drop(api);
    Ok(())
}

/// A latency row of an open loop against the 10 ms target for its p99.
pub(crate) fn half_load_row(row: Row, half: &LoadResult, limit: String) -> Row {
    row.measured(format!(
        "p50 {}, p99 {} ({:.0} req/s, {} errors, {} late)",
        ms(half.p(0.5)),
        ms(half.p(0.99)),
        half.rate(),
        half.errors,
        half.late
    ))
    .limit(limit)
    .ratio(half.p(0.99).as_secs_f64() / 0.010)
    .target(Target::Below(1.0), "p99 < 10 ms")
}

/// A memory row against the 30 MiB budget.
pub(crate) fn rss_row(what: &str, mib: f64) -> Row {
    Row::new("6 memory", format!("RSS, {what}"))
        .measured(format!("{mib:.1} MiB"))
        .limit("30 MiB")
        .ratio(mib / 30.0)
}

/// Bodies with addresses no other request uses (`<prefix>-<conn>-<seq>@example.org`).
pub(crate) fn forgot_bodies(prefix: String) -> load::BodyFn {
    Arc::new(move |c, seq| {
        Some(format!(r#"{{"email":"{prefix}-{c}-{seq}@example.org"}}"#).into_bytes())
    })
}

/// Forgot-password requests for fresh addresses on 64 connections for `duration`.
pub(crate) async fn saturate(
    addr: std::net::SocketAddr,
    prefix: &str,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    load::closed_loop(
        addr,
        FORGOT,
        202,
        CONCURRENCY,
        duration,
        forgot_bodies(prefix.to_owned()),
    )
    .await
}

/// The `i`th registered address of a run (see [`register_users`]).
pub(crate) fn registered(tag: &str, i: usize) -> String {
    format!("r-{i:05}-{tag}@example.org")
}

/// An address of the same length that no account has.
pub(crate) fn unregistered(tag: &str, i: usize) -> String {
    format!("u-{i:05}-{tag}@example.org")
}

/// One forgot-password request for `email` on `conn`, timed; anything but a 202 is an error.
pub(crate) async fn timed_forgot(conn: &mut Conn, email: &str) -> anyhow::Result<Duration> {
    let body = format!(r#"{{"email":"{email}"}}"#);
    let started = std::time::Instant::now();
    let status = conn.post_json(FORGOT, body.as_bytes()).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status == 202, "forgot-password answered {status}");
    Ok(elapsed)
}

/// Creates `n` verified accounts `r-<i>-<tag>@example.org` in the api's database (the same
/// rows a sign-up and verification leave behind; the hash is never checked here).
pub(crate) async fn register_users(database_url: &str, tag: &str, n: usize) -> anyhow::Result<()> {
    register_with(database_url, "r-", tag, n).await
}

/// Creates `n` verified accounts `<prefix><i:05>-<tag>@example.org`.
pub(crate) async fn register_with(
    database_url: &str,
    prefix: &str,
    tag: &str,
    n: usize,
) -> anyhow::Result<()> {
    let addresses = format!(
        "SELECT '{prefix}' || lpad(i::text, 5, '0') || '-{tag}@example.org'
         FROM generate_series(0, $1 - 1) AS i"
    );
    insert_verified(database_url, &addresses, n).await
}

/// Creates a verified account for each address `addresses` selects (a query whose one
/// parameter is `n`), all with the same cheap hash (the same rows a sign-up and verification
/// leave behind; the hash is never checked here).
pub(crate) async fn insert_verified(
    database_url: &str,
    addresses: &str,
    n: usize,
) -> anyhow::Result<()> {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let params = Params::new(64, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(b"an old password nobody uses")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
         SELECT gen_random_uuid(), a, a, $2, now() FROM ({addresses}) AS addresses (a)"
    )))
    .bind(n as i32)
    .bind(hash)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}

/// Section 2: `pairs` pairs of sequential requests on one keep-alive connection, one for a
/// registered and one for an unregistered address of the same length; the order inside a
/// pair alternates so neither kind always goes first.
async fn timing_equality(
    addr: std::net::SocketAddr,
    tag: &str,
    pairs: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    let send = timed_forgot;
    for i in 0..100 {
        send(&mut conn, &format!("w-{i:05}-{tag}@example.org")).await?;
    }
    let mut reg = Vec::with_capacity(pairs);
    let mut unreg = Vec::with_capacity(pairs);
    for i in 0..pairs {
        if i % 2 == 0 {
            reg.push(send(&mut conn, &registered(tag, i)).await?);
            unreg.push(send(&mut conn, &unregistered(tag, i)).await?);
        } else {
            unreg.push(send(&mut conn, &unregistered(tag, i)).await?);
            reg.push(send(&mut conn, &registered(tag, i)).await?);
        }
    }
    let slower = reg.iter().zip(&unreg).filter(|(r, u)| r > u).count();
    let ties = reg.iter().zip(&unreg).filter(|(r, u)| r == u).count();
    let share = 100.0 * slower as f64 / pairs as f64;
    let mut sorted_reg = reg.clone();
    let mut sorted_unreg = unreg.clone();
    sorted_reg.sort_unstable();
    sorted_unreg.sort_unstable();
    let (mr, mu) = (
        load::percentile(&sorted_reg, 0.5),
        load::percentile(&sorted_unreg, 0.5),
    );
    let delta_ms = (mr.as_secs_f64() - mu.as_secs_f64()) * 1000.0;
    rows.push(
        Row::new(
            "2 timing",
            format!("median difference, {pairs} interleaved pairs (registered − unregistered)"),
        )
        .measured(format!(
            "{delta_ms:+.3} ms (medians {} / {})",
            ms(mr),
            ms(mu)
        ))
        .limit("0.1 ms")
        .ratio(delta_ms.abs() / 0.1)
        .target(Target::Below(1.0), "|Δ| < 0.1 ms"),
    );
    rows.push(
        Row::new(
            "2 timing",
            "pairs in which the registered address was slower",
        )
        .measured(format!("{share:.1} % ({slower} of {pairs}, {ties} ties)"))
        .limit("50 %")
        .checked(share)
        .target(Target::Within(48.0, 52.0), "48–52 %"),
    );
    Ok(())
}
