//! Small helpers shared by the sections: settings, memory of a process, databases, the SMTP
//! sink's counters and timestamps, and facts about the machine.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use e2e::{
    ServiceProcess,
    stack::{SmtpSink, StackEnv},
};

/// A whole-number setting from the environment.
pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds of a phase (`BENCH_SECS` overrides the default of each phase).
pub(crate) fn secs(default: u64) -> Duration {
    Duration::from_secs(env_num("BENCH_SECS", default))
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmRSS` of a running service in MiB.
pub(crate) fn rss_mib(process: &ServiceProcess) -> anyhow::Result<f64> {
    let pid = process.child.id().context("the process has exited")?;
    rss_kib(pid)
        .map(|k| k as f64 / 1024.0)
        .context("cannot read VmRSS")
}

/// Samples a process's `VmRSS` every 50 ms until stopped; keeps the peak.
pub(crate) struct RssPeak {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub(crate) fn start(process: &ServiceProcess) -> Self {
        let pid = process.child.id().unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_kib.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(k) = rss_kib(pid) {
                    p.fetch_max(k, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            stop,
            peak_kib,
            task,
        }
    }

    /// Stops sampling; the peak in MiB.
    pub(crate) async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// Runs `api migrate` for the stack's database (sections that need the schema but not the api).
pub(crate) async fn migrate(env: &StackEnv) -> anyhow::Result<()> {
    let mut migrate =
        ServiceProcess::spawn(&e2e::workspace_binary("api"), &["migrate"], &env.vars)?;
    let status = migrate.wait_exit(Duration::from_secs(60)).await?;
    anyhow::ensure!(
        status.success(),
        "api migrate failed: {:?}",
        migrate.output()
    );
    Ok(())
}

/// Drops the stack's database (after its processes stopped).
pub(crate) async fn drop_database(env: &StackEnv) {
    use sqlx::Connection as _;
    let Some(name) = env.database_url.rsplit('/').next() else {
        return;
    };
    if !name.starts_with(e2e::TEST_DB_PREFIX) {
        return;
    }
    let server = e2e::postgres_server_url();
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        // The name is ours (prefix + hex): safe to splice into the statement.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// The sink's count of accepted messages.
pub(crate) async fn accepted(sink: &SmtpSink) -> anyhow::Result<u64> {
    sink.state().await?["accepted"]
        .as_u64()
        .context("no accepted counter in the sink state")
}

/// Waits until the sink accepted at least `n` messages; the time it was first seen.
pub(crate) async fn wait_accepted(
    sink: &SmtpSink,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = accepted(sink).await?;
        if got >= n {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sink accepted {got} of {n} messages within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages per second between the first and the last message the sink stored among
/// `emails`, by their `X-Sink-Received-At` stamps. Excludes start-up: only the span in which
/// messages were flowing counts.
pub(crate) fn sink_rate(emails: &[e2e::stack::StoredEmail]) -> anyhow::Result<f64> {
    let span = sink_span(emails)?;
    anyhow::ensure!(span > 0.0, "all emails stamped in the same microsecond");
    Ok((emails.len() - 1) as f64 / span)
}

/// Seconds from the first to the last `X-Sink-Received-At` stamp of `emails`.
pub(crate) fn sink_span(emails: &[e2e::stack::StoredEmail]) -> anyhow::Result<f64> {
    anyhow::ensure!(emails.len() >= 2, "fewer than two emails to time");
    let stamp = |e: &e2e::stack::StoredEmail| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let text = String::from_utf8_lossy(&e.raw[..e.raw.len().min(512)]).into_owned();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Sink-Received-At: "))
            .context("no X-Sink-Received-At header")?;
        Ok(chrono::DateTime::parse_from_rfc3339(value.trim())?.with_timezone(&chrono::Utc))
    };
    let mut stamps = emails
        .iter()
        .map(stamp)
        .collect::<anyhow::Result<Vec<_>>>()?;
    stamps.sort_unstable();
    Ok((stamps[stamps.len() - 1] - stamps[0])
        .to_std()
        .unwrap_or_default()
        .as_secs_f64())
}

/// Output of a command, or an empty string.
fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// CPU model, cores, memory and kernel.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let kernel = command_output("uname", &["-r"]);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}")
}

/// Versions of the Debian packages of the services.
pub(crate) fn services() -> String {
    let version = |pkg: &str| {
        let v = command_output("dpkg-query", &["-W", "-f=${Version}", pkg]);
        if v.is_empty() { "?".to_owned() } else { v }
    };
    let pg_url = format!("{}/postgres", e2e::postgres_server_url());
    let pg = command_output("psql", &[&pg_url, "-Atqc", "SHOW server_version"]);
    format!(
        "PostgreSQL {pg}; redis-server {}; rabbitmq-server {} (erlang {})",
        version("redis-server"),
        version("rabbitmq-server"),
        version("erlang-base")
    )
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// Short commit id, with `+dirty` when the work tree has changes.
pub(crate) fn commit() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let id = command_output("git", &["-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = !command_output(
        "git",
        &["-C", root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    if id.is_empty() {
        "unknown".into()
    } else if dirty {
        format!("{id}+dirty")
    } else {
        id
    }
}

/// Formats a duration in milliseconds with two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `RUST_LOG` of the services under test: the production default (`info`, one JSON line per
/// request or job), unless `BENCH_RUST_LOG` says otherwise.
/// Applies `BENCH_SERVICE_ENV` (`NAME=value,NAME=value`) to the services a section starts,
/// after the section's own settings: for trying a setting (e.g. `HASH_CONCURRENCY=1`) on the
/// same load without a rebuild.
pub(crate) fn apply_overrides(env: &mut StackEnv) {
    let overrides = std::env::var("BENCH_SERVICE_ENV").unwrap_or_default();
    for pair in overrides.split(',').filter(|p| !p.trim().is_empty()) {
        if let Some((name, value)) = pair.split_once('=') {
            env.set(name.trim(), value.trim());
        }
    }
}

pub(crate) fn log_filter() -> String {
    std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into())
}

/// CPU seconds (user + system) a set of processes used, from `/proc/<pid>/stat`.
#[derive(Clone)]
pub(crate) struct CpuMeter {
    pids: Vec<u32>,
    ticks_per_sec: f64,
}

impl CpuMeter {
    /// Meters these processes; `0` pids (exited) count as nothing.
    pub(crate) fn new(pids: Vec<u32>) -> Self {
        let ticks = command_output("getconf", &["CLK_TCK"])
            .parse()
            .unwrap_or(100.0);
        Self {
            pids,
            ticks_per_sec: ticks,
        }
    }

    /// CPU seconds used so far by each process, in the order given.
    pub(crate) fn sample(&self) -> Vec<f64> {
        self.pids
            .iter()
            .map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Fields after the command name (which may contain spaces) start at `) `.
                let fields: Vec<&str> = stat
                    .rsplit_once(") ")
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                // utime and stime are fields 14 and 15 of stat(5), 11 and 12 after the name.
                (ticks(11) + ticks(12)) / self.ticks_per_sec
            })
            .collect()
    }
}

/// Pid of the first process whose command name is `name` (e.g. `redis-server`).
/// Every process whose command name is `name` (e.g. all PostgreSQL backends).
pub(crate) fn pids_of(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    (comm.trim() == name).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == name).then_some(pid)
        })
}
