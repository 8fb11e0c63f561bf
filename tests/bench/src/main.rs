//! Benchmarks of the release binaries against the local services. Each figure is measured
//! next to its physical limit in the same run (a minimal program doing only the expensive
//! part against the same services), because the machines are shared and noisy: the ratio is
//! what compares across runs.
//!
//! ```sh
//! ./deploy/local/bench.sh            # services, release build, then `bench all`
//! ./target/release/bench all [--update BENCHMARKS.md]
//! ./target/release/bench forgot|worker|scale|reset|memory|signin|stores|pipeline|code|colocated|refusals
//! ./target/release/bench budget     # send budgets: a burst's spread (not in `all`: ~2 min)
//! ./target/release/bench factors    # sign-in with and without a second factor, breached check
//! ./target/release/bench pooler     # queries and sign-in, direct and through PgBouncer
//! ./target/release/bench delivery   # CPU per delivered reset email, its latency, the profile
//! ./target/release/bench flask      # the same wrk load against the Flask seed (not in `all`)
//! ```
//! `bench all` prints one table and writes it as markdown to `artifacts/bench/latest.md`
//! (`--update FILE` also replaces the table between the `bench:begin`/`bench:end` markers of
//! FILE). Settings (environment): `BENCH_SECS` (length of each measured phase),
//! `BENCH_ROUNDS` (raw/api alternations, 2), `BENCH_TIMING_PAIRS` (2000), `BENCH_JOBS`
//! (2000), `BENCH_CODE_PAIRS` (2000), `BENCH_SCALE_SECS` (6), `BENCH_RESET_SECS` (8), `BENCH_SETTLE_SECS` (10, the wait
//! before the api's resident size is read after the hashing flood), `BENCH_SIGNIN_TRIPLES` (300),
//! `BENCH_COLOCATED_PAIRS` (600), `BENCH_REFUSALS` (1000), `BENCH_FACTOR_ACCOUNTS` (200),
//! `BENCH_BREACHED_CHECKS` (2000), `BENCH_POOLER_QUERIES` (2000), `BENCH_POOLER_SIGNINS` (600),
//! `BENCH_DELIVERY_SECS` (10), `BENCH_PEER_SECS` (10), `FLASK_SEED_DIR`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]

mod budget;
mod code;
mod colocated;
mod delivery;
mod factors;
mod forgot;
mod import;
mod limits;
mod load;
mod mail;
mod memory;
mod peer;
mod pipeline;
mod pooler;
mod refusals;
mod report;
mod reset;
mod scale;
mod signin;
mod stores;
mod util;

use std::time::Instant;

use report::Row;

const USAGE: &str = "usage: bench all [--update FILE] | forgot | worker | scale | reset | memory | signin | stores | pipeline | code | colocated | refusals | budget | import | factors | pooler | delivery | flask";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let section = args.first().map(String::as_str).unwrap_or("");
    let mut update = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--update" => update = Some(rest.next().ok_or_else(|| anyhow::anyhow!(USAGE))?),
            other => anyhow::bail!("unknown option {other}; {USAGE}"),
        }
    }
    let sections: &[&str] = match section {
        "all" => &[
            "forgot",
            "worker",
            "scale",
            "reset",
            "memory",
            "signin",
            "stores",
            "pipeline",
            "code",
            "colocated",
            "refusals",
            "import",
            "factors",
            "pooler",
            "delivery",
        ],
        "forgot" | "worker" | "scale" | "reset" | "memory" | "signin" | "stores" | "pipeline"
        | "code" | "colocated" | "refusals" | "budget" | "import" | "factors" | "pooler"
        | "delivery" | "flask" => std::slice::from_ref(&section),
        _ => anyhow::bail!(USAGE),
    };

    // The bench's keys (millions of them) go to a Redis database of their own, emptied
    // before and after.
    e2e::use_own_redis_database(e2e::BENCH_REDIS_DATABASE).await?;
    // The services' log lines (one per request) go to files, not through this process.
    let logs = std::path::PathBuf::from("artifacts/bench/logs");
    let _ = std::fs::remove_dir_all(&logs);
    e2e::log_services_to(logs)?;
    let started = Instant::now();
    let load_before = util::load_average();
    let mut rows: Vec<Row> = Vec::new();
    for name in sections {
        eprintln!("[bench] {name} …");
        let section_started = Instant::now();
        let result = match *name {
            "forgot" => forgot::run(&mut rows).await,
            "worker" => mail::run(&mut rows).await,
            "scale" => scale::run(&mut rows).await,
            "memory" => memory::run(&mut rows).await,
            "signin" => signin::run(&mut rows).await,
            "stores" => stores::run(&mut rows).await,
            "pipeline" => pipeline::run(&mut rows).await,
            "code" => code::run(&mut rows).await,
            "colocated" => colocated::run(&mut rows).await,
            "refusals" => refusals::run(&mut rows).await,
            "budget" => budget::run(&mut rows).await,
            "import" => import::run(&mut rows).await,
            "factors" => factors::run(&mut rows).await,
            "pooler" => pooler::run(&mut rows).await,
            "delivery" => delivery::run(&mut rows).await,
            "flask" => peer::run(&mut rows).await,
            _ => reset::run(&mut rows).await,
        };
        if let Err(e) = result {
            eprintln!("[bench] {name} failed: {e:#}");
            rows.push(Row::failed(section_label(name), &e));
        }
        eprintln!(
            "[bench] {name} took {:.0} s",
            section_started.elapsed().as_secs_f64()
        );
    }
    if let Err(e) = e2e::empty_own_redis_database().await {
        eprintln!("[bench] could not empty its Redis database: {e:#}");
    }
    // Sections in the order of the issue, memory last.
    rows.sort_by_key(|r| r.section);

    let info = report::RunInfo {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit: util::commit(),
        machine: util::machine(),
        services: util::services(),
        load_before,
        load_after: util::load_average(),
        wall: started.elapsed(),
    };
    println!("{}", report::text_table(&rows));
    println!(
        "wall time {:.0} s; load average before {}, after {}",
        info.wall.as_secs_f64(),
        info.load_before,
        info.load_after
    );
    let markdown = report::markdown(&info, &rows);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.canonicalize()?.join("latest.md");
    std::fs::write(&file, &markdown)?;
    println!("markdown: {}", file.display());
    if let Some(path) = update {
        report::update_file(std::path::Path::new(path), &markdown)?;
        println!("updated {path}");
    }
    let missed = rows.iter().filter(|r| r.verdict() == Some(false)).count();
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
    Ok(())
}

fn section_label(name: &str) -> &'static str {
    match name {
        "forgot" => "1 forgot",
        "worker" => "3 mail",
        "scale" => "4 scale-out",
        "memory" => "6 memory",
        "signin" => "7 sign-in timing",
        "stores" => "8 redis topologies",
        "pipeline" => "9 end to end",
        "code" => "10 code timing",
        "budget" => "11 send budgets",
        "colocated" => "12 co-located worker",
        "refusals" => "13 refusals",
        "import" => "14 import",
        "factors" => "15 second factors",
        "pooler" => "16 PgBouncer path",
        "delivery" => "17 delivered email",
        "flask" => "18 Flask seed",
        _ => "5 reset",
    }
}
