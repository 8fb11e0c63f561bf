//! Section 17: what a delivered reset email costs, beside a refusal (an unknown address) and
//! the raw limits of the same run. The api, one worker, PostgreSQL, Redis, RabbitMQ and the
//! SMTP sink share the machine. 64 connections send forgot-password requests for 10,000
//! registered addresses (`user<i>@example.com`, the Flask seed's) for `BENCH_DELIVERY_SECS`
//! (10), then the bench waits until every email reached the sink; the CPU each process spent
//! over that span (`/proc/<pid>/stat`) is divided by the emails delivered. Beside it: the same
//! load for unknown addresses (no email), raw lettre sending the very same emails into the
//! same sink, and raw confirmed publishes with an acking consumer. Then the latency from the
//! api's 202 to the sink's acceptance at half the delivering rate, in an open loop.
//!
//! The server-side counters of each phase are read before and after it: statements per email
//! from `pg_stat_statements` (when the server preloads it) and commits from
//! `pg_stat_database`, Redis commands from `INFO commandstats`, and the packets RabbitMQ
//! received and sent on its connections (`rabbitmqctl list_connections recv_cnt send_cnt`).
//! They go into `artifacts/bench/delivery-profile.md`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use e2e::stack::{SmtpSink, StackEnv, StoredEmail};

use crate::{
    forgot,
    limits::{self, RawPublisher},
    load::{self, Conn, LoadResult},
    report::{Row, Target},
    util::{self, env_num, ms},
};

const SECTION: &str = "17 delivered email";
/// Registered accounts, `user0@example.com` … (as the Flask seed seeds them).
pub(crate) const USERS: usize = 10_000;
/// The worker's sends in flight, and the raw lettre loop's connections.
const SENDS: usize = 16;
/// Emails the raw lettre loop sends again (the first of those the worker delivered).
const RAW_EMAILS: usize = 4000;

/// Metered processes, in the order of the CPU rows (then the load generator and the sink).
const PROCESSES: [&str; 5] = ["api", "worker", "PostgreSQL", "Redis", "RabbitMQ"];

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // Delayed ACKs, as a remote server answers (see section 3).
    let sink = SmtpSink::start_with_args(&["--no-quickack"]).await?;
    let mut env = StackEnv::new().await?;
    configure(&mut env);
    let result = measure(&env, &sink, rows).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result
}

/// The services' settings: every request for a registered address becomes an email (the
/// per-address and per-recipient budgets are above what the load sends one address), the
/// rest as in production.
pub(crate) fn configure(env: &mut StackEnv) {
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "1000");
    env.set("MAIL_PER_RECIPIENT_PER_HOUR", "100000");
    env.set("NOTIFY_UNKNOWN_RECIPIENTS", "false");
    env.set("WORKER_CONCURRENCY", &SENDS.to_string());
    env.set("RUST_LOG", &util::log_filter());
    util::apply_overrides(env);
}

/// Starts the worker delivering to `smtp_url`, with `BENCH_WORKER_ENV` (`NAME=value,…`) on
/// top: for trying a worker setting on the same load without touching the api's.
pub(crate) async fn start_worker(
    env: &StackEnv,
    smtp_url: &str,
) -> anyhow::Result<(e2e::ServiceProcess, String)> {
    let overrides = std::env::var("BENCH_WORKER_ENV").unwrap_or_default();
    let mut vars = vec![
        ("MAIL_TRANSPORT", "smtp"),
        ("SMTP_URL", smtp_url),
        ("SMTP_TIMEOUT_SECS", "5"),
    ];
    vars.extend(
        overrides
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.trim(), value.trim())),
    );
    env.start_worker_with(&vars).await
}

/// The `i`th registered address.
pub(crate) fn user(i: usize) -> String {
    format!("user{i}@example.com")
}

/// Creates the verified accounts `user0@example.com` … `user<n-1>@example.com`.
pub(crate) async fn seed_users(database_url: &str, n: usize) -> anyhow::Result<()> {
    forgot::insert_verified(
        database_url,
        "SELECT 'user' || i || '@example.com' FROM generate_series(0, $1 - 1) AS i",
        n,
    )
    .await
}

/// Bodies for the closed loop: connection `c`'s request `seq` asks for `user<(64 seq + c) mod
/// 10,000>`, so no two connections ask for the same address at once.
pub(crate) fn registered_bodies() -> load::BodyFn {
    Arc::new(|c, seq| {
        let i = (seq as usize * forgot::CONCURRENCY + c) % USERS;
        Some(format!(r#"{{"email":"{}"}}"#, user(i)).into_bytes())
    })
}

/// CPU seconds of the metered processes.
struct Meter {
    cpu: util::CpuMeter,
    postgres_from: usize,
}

/// CPU seconds per process: [`PROCESSES`], then the load generator and the sink.
type Cpu = [f64; 7];

impl Meter {
    fn new(api: u32, worker: u32, sink: u32) -> Self {
        let mut pids = vec![
            api,
            worker,
            util::pid_of("redis-server").unwrap_or(0),
            util::pid_of("beam.smp").unwrap_or(0),
            std::process::id(),
            sink,
        ];
        let postgres_from = pids.len();
        pids.extend(util::pids_of("postgres"));
        Self {
            cpu: util::CpuMeter::new(pids),
            postgres_from,
        }
    }

    fn sample(&self) -> Cpu {
        let s = self.cpu.sample();
        let postgres = s[self.postgres_from..].iter().sum();
        [s[0], s[1], postgres, s[2], s[3], s[4], s[5]]
    }
}

fn minus(after: Cpu, before: Cpu) -> Cpu {
    std::array::from_fn(|i| after[i] - before[i])
}

/// µs per item of each of the five service processes, and their sum.
fn per_item(cpu: &Cpu, n: u64) -> ([f64; 5], f64) {
    let each: [f64; 5] = std::array::from_fn(|i| cpu[i] * 1e6 / n.max(1) as f64);
    (each, each.iter().sum())
}

fn cpu_text(each: &[f64; 5], total: f64) -> String {
    let parts: Vec<String> = each.iter().map(|v| format!("{v:.0}")).collect();
    format!("{} = {total:.0} µs", parts.join(" / "))
}

/// Server-side counters, read before and after a phase.
#[derive(Debug, Default, Clone)]
struct Counters {
    /// `pg_stat_database.xact_commit` of the section's database.
    commits: i64,
    /// Calls per normalised statement of the section's database (`None`: the server does not
    /// preload `pg_stat_statements`).
    statements: Option<BTreeMap<String, i64>>,
    /// Calls per Redis command.
    redis: BTreeMap<String, u64>,
    /// Packets RabbitMQ received and sent on all its connections.
    amqp_in: u64,
    amqp_out: u64,
}

/// Reads the counters, with the connections they need.
struct Probe {
    db: sqlx::PgPool,
    redis: redis::aio::MultiplexedConnection,
}

impl Probe {
    async fn connect(env: &StackEnv) -> anyhow::Result<Self> {
        let db = sqlx::PgPool::connect(&env.database_url).await?;
        // Only where the server preloads the module; otherwise statements are not counted.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&db)
            .await;
        let redis = redis::Client::open(e2e::redis_url())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self { db, redis })
    }

    async fn read(&mut self) -> anyhow::Result<Counters> {
        // Backends report their transactions to the statistics within a second of going idle.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let commits: i64 = sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&self.db)
        .await?;
        let statements: Option<Vec<(String, i64)>> = sqlx::query_as(
            "SELECT query, calls FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&self.db)
        .await
        .ok();
        let statements = statements.map(|list| {
            let mut by_text = BTreeMap::new();
            for (query, calls) in list {
                let text = query.split_whitespace().collect::<Vec<_>>().join(" ");
                *by_text.entry(text).or_insert(0) += calls;
            }
            by_text
        });
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.redis)
            .await?;
        let redis = info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect();
        let (amqp_in, amqp_out) = amqp_packets().await;
        Ok(Counters {
            commits,
            statements,
            redis,
            amqp_in,
            amqp_out,
        })
    }
}

/// Packets received and sent by RabbitMQ on every connection it holds (0 when `rabbitmqctl`
/// cannot tell).
async fn amqp_packets() -> (u64, u64) {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "recv_cnt",
            "send_cnt",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .await;
    let Ok(output) = output else { return (0, 0) };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((f.next()??, f.next()??))
        })
        .fold((0, 0), |(a, b), (r, s)| (a + r, b + s))
}

/// What one phase cost per item, from the counters before and after it.
struct Profile {
    items: u64,
    commits: f64,
    statements: Option<Vec<(String, f64)>>,
    redis: Vec<(String, f64)>,
    amqp_in: f64,
    amqp_out: f64,
}

impl Profile {
    fn of(before: &Counters, after: &Counters, items: u64) -> Self {
        let n = items.max(1) as f64;
        let statements = match (&before.statements, &after.statements) {
            (Some(b), Some(a)) => {
                let mut list: Vec<(String, f64)> = a
                    .iter()
                    .map(|(q, calls)| (q.clone(), (calls - b.get(q).unwrap_or(&0)) as f64 / n))
                    .filter(|(q, per)| *per > 0.0005 && !q.contains("pg_stat"))
                    .collect();
                list.sort_by(|x, y| y.1.total_cmp(&x.1));
                Some(list)
            }
            _ => None,
        };
        let mut redis: Vec<(String, f64)> = after
            .redis
            .iter()
            .map(|(c, calls)| {
                let was = before.redis.get(c).unwrap_or(&0);
                (c.clone(), calls.saturating_sub(*was) as f64 / n)
            })
            .filter(|(c, per)| *per > 0.0005 && c != "info")
            .collect();
        redis.sort_by(|x, y| y.1.total_cmp(&x.1));
        Self {
            items,
            commits: (after.commits - before.commits) as f64 / n,
            statements,
            redis,
            amqp_in: after.amqp_in.saturating_sub(before.amqp_in) as f64 / n,
            amqp_out: after.amqp_out.saturating_sub(before.amqp_out) as f64 / n,
        }
    }

    fn statements_total(&self) -> Option<f64> {
        Some(self.statements.as_ref()?.iter().map(|(_, v)| v).sum())
    }

    fn redis_total(&self) -> f64 {
        self.redis.iter().map(|(_, v)| v).sum()
    }

    /// One line: statements, commits, Redis commands and AMQP packets per item.
    fn summary(&self) -> String {
        let statements = self.statements_total().map_or(
            "statements not counted (no pg_stat_statements)".into(),
            |s| format!("{s:.2} statements"),
        );
        format!(
            "PostgreSQL {statements}, {:.2} commits; Redis {:.2} commands; RabbitMQ {:.1} packets in, {:.1} out",
            self.commits,
            self.redis_total(),
            self.amqp_in,
            self.amqp_out
        )
    }

    fn markdown(&self, title: &str, out: &mut String) {
        let _ = writeln!(out, "### {title} ({} items)\n", self.items);
        let _ = writeln!(out, "{}\n", self.summary());
        if let Some(list) = &self.statements {
            let _ = writeln!(out, "| statement | calls per item |\n|---|---|");
            for (q, per) in list {
                let q: String = q.chars().take(160).collect();
                let _ = writeln!(out, "| `{}` | {per:.3} |", q.replace('|', "\\|"));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "| Redis command | calls per item |\n|---|---|");
        for (c, per) in &self.redis {
            let _ = writeln!(out, "| {c} | {per:.3} |");
        }
        out.push('\n');
    }
}

async fn measure(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    util::migrate(env).await?;
    seed_users(&env.database_url, USERS).await?;
    let (api, base) = env.start_api().await?;
    let (worker, worker_base) = start_worker(env, &sink.url()).await?;
    let addr = load::socket_addr(&base)?;
    let raw = RawPublisher::start().await?;
    let jobs_queue = env.topology().jobs_queue();
    let mut probe = Probe::connect(env).await?;
    let drained = Drained {
        raw: &raw,
        queue: &jobs_queue,
        worker: &worker_base,
        sink,
    };
    let secs = Duration::from_secs(env_num("BENCH_DELIVERY_SECS", 10));
    let tag = e2e::unique_id();

    // Warm up (connections, pools, caches), both kinds.
    forgot::saturate(addr, &format!("warm-{tag}"), Duration::from_secs(1)).await?;
    let warm = closed(addr, Duration::from_secs(1), registered_bodies()).await?;
    drained.wait(None).await?;
    anyhow::ensure!(warm.ok > 0, "no forgot-password request was accepted");

    let meter = Meter::new(
        api.child.id().unwrap_or(0),
        worker.child.id().unwrap_or(0),
        sink.pid().unwrap_or(0),
    );

    // Refusals: unknown addresses, looked up and dropped by the worker, no email.
    let counters = probe.read().await?;
    let cpu = meter.sample();
    let unknown = forgot::saturate(addr, &format!("u-{tag}"), util::secs(6)).await?;
    drained.wait(None).await?;
    let unknown_cpu = minus(meter.sample(), cpu);
    let unknown_profile = Profile::of(&counters, &probe.read().await?, unknown.ok);

    // Registered addresses: every accepted request is an email; until the last one arrived.
    let counters = probe.read().await?;
    let first = util::accepted(sink).await? as usize;
    let cpu = meter.sample();
    let started = Instant::now();
    let registered = closed(addr, secs, registered_bodies()).await?;
    let answered = started.elapsed();
    let emails = drained.wait(Some(first as u64 + registered.ok)).await? - first as u64;
    let until_delivered = started.elapsed();
    let email_cpu = minus(meter.sample(), cpu);
    let email_profile = Profile::of(&counters, &probe.read().await?, emails);
    let delivered = sink.emails();
    let phase_emails = &delivered[first..first + emails as usize];
    let worker_rate = util::sink_rate(phase_emails)?;

    // Raw lettre: the very same emails into the same sink.
    let raw_count = phase_emails.len().min(RAW_EMAILS);
    let mails = Arc::new(limits::replayable(&phase_emails[..raw_count])?);
    let before_raw = util::accepted(sink).await?;
    limits::nodelay_connections(sink.smtp_port, SENDS, mails).await?;
    util::wait_accepted(
        sink,
        before_raw + raw_count as u64,
        Duration::from_secs(120),
    )
    .await?;
    let replayed = sink.emails();
    let raw_lettre = util::sink_rate(&replayed[before_raw as usize..])?;

    // Raw confirmed publishes with an acking consumer.
    let consumer = raw.drain_continuously(16).await?;
    let cpu = meter.sample();
    let raw_pipeline = raw.run(64, util::secs(6)).await?;
    let raw_cpu = minus(meter.sample(), cpu);
    // At the rate the emails went out: the broker batches less at a few hundred per second.
    let cpu = meter.sample();
    let raw_paced = raw.run_at(64, worker_rate, util::secs(6)).await?;
    let raw_paced_cpu = minus(meter.sample(), cpu);
    consumer.abort();

    // Latency from the 202 to the sink's acceptance at half the delivering rate.
    let half_rate = worker_rate / 2.0;
    let first = util::accepted(sink).await?;
    let answers = timed_open_loop(addr, half_rate, util::secs(6)).await?;
    drained.wait(Some(first + answers.len() as u64)).await?;
    let latency = latencies(&sink.emails()[first as usize..], &answers)?;
    raw.close().await;
    drop((api, worker));

    // Rows.
    let (unknown_each, unknown_total) = per_item(&unknown_cpu, unknown.ok);
    let (email_each, email_total) = per_item(&email_cpu, emails);
    let raw_rabbit = raw_cpu[4] * 1e6 / raw_pipeline.ok.max(1) as f64;
    let raw_publisher = raw_cpu[5] * 1e6 / raw_pipeline.ok.max(1) as f64;
    let processes = PROCESSES.join(" / ");
    rows.push(
        Row::new(SECTION, format!("CPU per refused request (unknown address): {processes}"))
            .measured(format!(
                "{} ({} requests at {:.0} req/s)",
                cpu_text(&unknown_each, unknown_total),
                unknown.ok,
                unknown.rate()
            ))
            .limit(format!(
                "raw confirmed publish + acking consumer: RabbitMQ {raw_rabbit:.0} µs, publisher {raw_publisher:.0} µs per message ({:.0} msg/s)",
                raw_pipeline.rate()
            )),
    );
    rows.push(
        Row::new(SECTION, format!("CPU per delivered reset email: {processes}"))
            .measured(format!(
                "{} ({emails} emails of {} requests answered in {:.1} s at {:.0} req/s, delivered in {:.1} s)",
                cpu_text(&email_each, email_total),
                registered.ok,
                answered.as_secs_f64(),
                registered.rate(),
                until_delivered.as_secs_f64()
            ))
            .limit(format!(
                "1000 µs (a refusal: {unknown_total:.0} µs; raw confirmed publish + acking consumer at {worker_rate:.0} msg/s: RabbitMQ {:.0} µs per message; sink {:.0} µs, load generator {:.0} µs per email, not counted)",
                raw_paced_cpu[4] * 1e6 / raw_paced.ok.max(1) as f64,
                email_cpu[6] * 1e6 / emails.max(1) as f64,
                email_cpu[5] * 1e6 / emails.max(1) as f64
            ))
            .ratio(email_total / 1000.0)
            .target(Target::Within(0.0, 1.0), "≤ 1.0 ms"),
    );
    rows.push(
        Row::new(SECTION, "CPU per delivered reset email, the worker alone")
            .measured(format!("{:.0} µs", email_each[1]))
            .limit("300 µs")
            .ratio(email_each[1] / 300.0)
            .target(Target::Within(0.0, 1.0), "≤ 300 µs"),
    );
    rows.push(
        Row::new(
            SECTION,
            "one worker delivering reset emails, 16 in flight, sink with delayed ACKs",
        )
        .measured(format!("{worker_rate:.0} emails/s"))
        .limit(format!(
            "raw lettre, {SENDS} persistent nodelay connections, the same {raw_count} emails: {raw_lettre:.0} emails/s"
        ))
        .ratio(worker_rate / raw_lettre)
        .target(Target::AtLeast(0.8), "≥ 0.80"),
    );
    rows.push(
        Row::new(
            SECTION,
            format!("reset email from the api's 202 to the SMTP server's acceptance, {half_rate:.0} req/s open loop"),
        )
        .measured(format!(
            "p50 {}, p99 {} ({} emails)",
            ms(latency.p(0.5)),
            ms(latency.p(0.99)),
            latency.ok
        ))
        .limit("p50 20 ms, p99 100 ms")
        .ratio(
            (latency.p(0.5).as_secs_f64() / 0.020).max(latency.p(0.99).as_secs_f64() / 0.100),
        )
        .target(Target::Within(0.0, 1.0), "p50 ≤ 20 ms, p99 ≤ 100 ms"),
    );
    rows.push(
        Row::new(
            SECTION,
            "per delivered email (per refusal): server-side work",
        )
        .measured(email_profile.summary())
        .limit(unknown_profile.summary()),
    );
    let mut profile = String::new();
    let _ = writeln!(
        profile,
        "## Server-side work per item\n\nCPU µs per item ({processes}): delivered email {}, refusal {}\n",
        cpu_text(&email_each, email_total),
        cpu_text(&unknown_each, unknown_total)
    );
    email_profile.markdown("Delivered reset email", &mut profile);
    unknown_profile.markdown("Refusal (unknown address)", &mut profile);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("delivery-profile.md"), profile)?;
    Ok(())
}

/// A closed loop of forgot-password requests on 64 connections.
pub(crate) async fn closed(
    addr: std::net::SocketAddr,
    duration: Duration,
    bodies: load::BodyFn,
) -> anyhow::Result<LoadResult> {
    load::closed_loop(
        addr,
        forgot::FORGOT,
        202,
        forgot::CONCURRENCY,
        duration,
        bodies,
    )
    .await
}

/// Waits until the pipeline is idle.
struct Drained<'a> {
    raw: &'a RawPublisher,
    queue: &'a str,
    worker: &'a str,
    sink: &'a SmtpSink,
}

impl Drained<'_> {
    /// Until the queue is empty, the worker holds no job and (with `emails`) the sink
    /// accepted that many; the sink's count then.
    async fn wait(&self, emails: Option<u64>) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let accepted = util::accepted(self.sink).await?;
            let idle = self.raw.depth(self.queue).await? == 0
                && e2e::stack::jobs_held(self.worker).await == Some(0.0);
            if idle && emails.is_none_or(|n| accepted >= n) {
                return Ok(accepted);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not drained within 10 minutes: {accepted} emails of {emails:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An open loop at `rate` for `duration` on 16 connections, request `j` for `user<j>`; the
/// wall-clock time of each 202 by address.
async fn timed_open_loop(
    addr: std::net::SocketAddr,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<BTreeMap<String, chrono::DateTime<chrono::Utc>>> {
    const CONNS: usize = 16;
    let total = ((rate * duration.as_secs_f64()).round() as usize).min(USERS);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let started = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(CONNS);
    for c in 0..CONNS {
        let mut conn = Conn::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for j in (c..total).step_by(CONNS) {
                tokio::time::sleep_until((started + interval.mul_f64(j as f64)).into()).await;
                let body = format!(r#"{{"email":"{}"}}"#, user(j));
                let status = conn.post_json(forgot::FORGOT, body.as_bytes()).await?;
                anyhow::ensure!(status == 202, "forgot-password answered {status}");
                answers.push((user(j), chrono::Utc::now()));
            }
            Ok::<_, anyhow::Error>(answers)
        }));
    }
    let mut answers = BTreeMap::new();
    for task in tasks {
        answers.extend(task.await??);
    }
    Ok(answers)
}

/// From each 202 to the sink's stamp on its email.
fn latencies(
    emails: &[StoredEmail],
    answers: &BTreeMap<String, chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<LoadResult> {
    let mut latencies = Vec::with_capacity(answers.len());
    for email in emails {
        let head = String::from_utf8_lossy(&email.raw[..email.raw.len().min(512)]).into_owned();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let to = header("X-Sink-Rcpt-To: ").context("no X-Sink-Rcpt-To")?;
        let at = header("X-Sink-Received-At: ").context("no X-Sink-Received-At")?;
        let at = chrono::DateTime::parse_from_rfc3339(&at)?.with_timezone(&chrono::Utc);
        let answered = answers
            .get(&to)
            .with_context(|| format!("an email to {to}, which the open loop did not ask for"))?;
        latencies.push((at - *answered).to_std().unwrap_or_default());
    }
    anyhow::ensure!(
        latencies.len() == answers.len(),
        "{} emails for {} accepted requests",
        latencies.len(),
        answers.len()
    );
    latencies.sort_unstable();
    Ok(LoadResult {
        ok: latencies.len() as u64,
        latencies,
        ..LoadResult::default()
    })
}
