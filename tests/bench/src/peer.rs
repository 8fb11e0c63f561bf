//! Section 18: the same load against the Flask seed this project grew from
//! (`../shared/peers/flask_seed`, or `FLASK_SEED_DIR`) and against the product, in the same
//! run. The seed starts as its README says (`run.sh start`: gunicorn with 4 sync workers,
//! its own SMTP sink, 10,000 seeded users `user<i>@example.com`); the product gets the same
//! users, and its worker delivers into the seed's sink. wrk (`-t2 -c64`, `BENCH_PEER_SECS`
//! each, default 10) sends forgot-password requests for random seeded addresses, then for
//! random unknown ones of the same shape, alternating seed and product. The seed sends each
//! email inside the request, so its emails per second are its answers per second; the
//! product's are its emails over the time from the load's start until the worker delivered the
//! last one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use e2e::stack::StackEnv;

use crate::{
    delivery,
    report::{Row, Target},
    util::env_num,
};

const SECTION: &str = "18 Flask seed";
/// The seed's gunicorn address (fixed in its `run.sh`).
const SEED_URL: &str = "http://127.0.0.1:5000";

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = seed_dir()?;
    anyhow::ensure!(
        std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok(),
        "wrk is not installed (Debian's package `wrk`; deploy/local/bench.sh installs it)"
    );
    let work = workspace().join("artifacts/bench/flask_seed");
    std::fs::create_dir_all(&work)?;
    let mail_port = e2e::free_port()?;
    let seed = Seed {
        dir,
        work: work.clone(),
        mail_port,
    };
    seed.run("stop").await.ok();
    seed.run("start").await?;
    let mut env = StackEnv::new().await?;
    delivery::configure(&mut env);
    let result = measure(&env, &seed, rows).await;
    let stopped = seed.run("stop").await;
    crate::util::drop_database(&env).await;
    let result = result.and(stopped.map(|_| ()));
    drop_seed_database().await;
    result
}

/// The seed's folder: `FLASK_SEED_DIR`, else `../shared/peers/flask_seed` beside the
/// workspace.
fn seed_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("FLASK_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/peers/flask_seed"));
    anyhow::ensure!(
        dir.join("run.sh").exists(),
        "the Flask seed is not at {} (set FLASK_SEED_DIR)",
        dir.display()
    );
    Ok(dir)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Flask seed, run by its own script with its virtualenv and run files in `work`.
struct Seed {
    dir: PathBuf,
    work: PathBuf,
    mail_port: u16,
}

impl Seed {
    /// `run.sh start|stop`; its output.
    async fn run(&self, verb: &str) -> anyhow::Result<String> {
        let output = tokio::process::Command::new("bash")
            .arg(self.dir.join("run.sh"))
            .arg(verb)
            .env("VENV", self.work.join("venv"))
            .env("RUN_DIR", self.work.join("run"))
            .env("MAIL_PORT", self.mail_port.to_string())
            .env("USERS", delivery::USERS.to_string())
            .stdin(Stdio::null())
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        anyhow::ensure!(
            output.status.success(),
            "flask_seed/run.sh {verb} failed: {text}"
        );
        Ok(text)
    }

    /// The messages its sink accepted (it prints the count when it stops).
    fn sink_count(stop_output: &str) -> Option<u64> {
        let (_, rest) = stop_output.rsplit_once("accepted ")?;
        rest.split_whitespace().next()?.parse().ok()
    }
}

async fn drop_seed_database() {
    if let Ok(pool) = sqlx::PgPool::connect(&e2e::postgres_server_url()).await {
        let _ = sqlx::query("DROP DATABASE IF EXISTS flask_seed WITH (FORCE)")
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// What wrk reported.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    requests: u64,
    /// Answers outside 2xx and 3xx, and socket errors.
    errors: u64,
    rate: f64,
}

/// `wrk -t2 -c64 -d<secs>` with a script posting `{"email": "<name><i>@example.com"}` for a
/// random `i` below 10,000 to `path`.
async fn wrk(url: &str, path: &str, name: &str, secs: u64) -> anyhow::Result<Wrk> {
    let script = std::env::temp_dir().join(format!("bench-wrk-{}.lua", e2e::unique_id()));
    std::fs::write(
        &script,
        format!(
            r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function setup(thread) thread:set("id", math.random(1, 1000000)) end
function init(args) math.randomseed(os.time() + (id or 0)) end
function request()
  local body = string.format('{{"email": "{name}%d@example.com"}}', math.random(0, {} - 1))
  return wrk.format(nil, "{path}", nil, body)
end
"#,
            delivery::USERS
        ),
    )?;
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .await?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output: {text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let non_2xx: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(Some(0), |v| v.trim().parse().ok())?;
    let socket: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    Some(Wrk {
        requests,
        errors: non_2xx + socket,
        rate,
    })
}

async fn measure(env: &StackEnv, seed: &Seed, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    crate::util::migrate(env).await?;
    delivery::seed_users(&env.database_url, delivery::USERS).await?;
    let (api, base) = env.start_api().await?;
    let (worker, worker_base) =
        delivery::start_worker(env, &format!("smtp://127.0.0.1:{}", seed.mail_port)).await?;
    let secs = env_num("BENCH_PEER_SECS", 10);
    let product = format!("{base}/v1/password/forgot");
    let seed_forgot = format!("{SEED_URL}/forgot-password");
    let sent = || async {
        e2e::stack::job_outcomes(&worker_base, None)
            .await
            .get("sent")
            .copied()
            .unwrap_or(0)
    };

    // Warm up both (one second each), and let the worker deliver.
    wrk(&seed_forgot, "/forgot-password", "user", 1).await?;
    let warm = wrk(&product, "/v1/password/forgot", "user", 1).await?;
    wait_sent(&sent, warm.requests, Duration::from_secs(120)).await?;

    let seed_registered = wrk(&seed_forgot, "/forgot-password", "user", secs).await?;
    let before = sent().await;
    let started = Instant::now();
    let registered = wrk(&product, "/v1/password/forgot", "user", secs).await?;
    let answered_ok = registered.requests - registered.errors;
    let delivered =
        wait_sent(&sent, before + answered_ok, Duration::from_secs(600)).await? - before;
    let emails_rate = delivered as f64 / started.elapsed().as_secs_f64();
    let seed_unknown = wrk(&seed_forgot, "/forgot-password", "uzer", secs).await?;
    let unknown = wrk(&product, "/v1/password/forgot", "uzer", secs).await?;
    drop((api, worker));

    // The seed's sink counted every email of both; the seed's are its answered requests.
    let stopped = seed.run("stop").await?;
    let seed_emails = seed_registered.requests - seed_registered.errors;
    let total_sent = Seed::sink_count(&stopped);
    let seed_emails_rate = seed_emails as f64 / secs as f64;
    rows.push(rate_row("registered", &registered, &seed_registered));
    rows.push(rate_row("unknown", &unknown, &seed_unknown));
    rows.push(
        Row::new(SECTION, "reset emails delivered per second, into the seed's SMTP sink")
            .measured(format!(
                "{emails_rate:.0} emails/s ({delivered} emails, until the last was delivered)"
            ))
            .limit(format!(
                "Flask seed: {seed_emails_rate:.0} emails/s ({seed_emails} emails in {secs} s, each within its request; the sink counted {} of both)",
                total_sent.map_or("?".into(), |n| n.to_string())
            ))
            .ratio(emails_rate / seed_emails_rate)
            .target(Target::AtLeast(6.0), "≥ 6×"),
    );
    Ok(())
}

/// Waits until the worker counted `n` sent emails; the count.
async fn wait_sent<F, Fut>(sent: &F, n: u64, timeout: Duration) -> anyhow::Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let got = sent().await;
        if got >= n {
            return Ok(got);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker sent {got} of {n} emails"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Forgot-password requests/s of the product against the seed's, for `kind` addresses.
fn rate_row(kind: &str, product: &Wrk, seed: &Wrk) -> Row {
    let errors = |w: &Wrk| {
        if w.errors == 0 {
            String::new()
        } else {
            format!(", {} errors", w.errors)
        }
    };
    Row::new(
        SECTION,
        format!("forgot-password, {kind} addresses, wrk -t2 -c64"),
    )
    .measured(format!("{:.0} req/s{}", product.rate, errors(product)))
    .limit(format!(
        "Flask seed: {:.0} req/s{}",
        seed.rate,
        errors(seed)
    ))
    .ratio(product.rate / seed.rate)
    .target(Target::AtLeast(6.0), "≥ 6×")
}
