//! Section 3 and the worker's memory: mail-worker emails/s into a local SMTP sink next to raw
//! lettre loops sending the very same emails into the same sink.

use std::{sync::Arc, time::Duration};

use e2e::stack::{SmtpSink, StackEnv};

use crate::{
    forgot::rss_row,
    limits,
    report::{Row, Target},
    util::{self, env_num},
};

/// Sends in flight: the worker's `WORKER_CONCURRENCY` and the raw loops' tasks.
const CONCURRENCY: usize = 16;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // Delayed ACKs, as a remote server answers (the sink's default acknowledges every read at
    // once, which hides a client's Nagle stall).
    let sink = SmtpSink::start_with_args(&["--no-quickack"]).await?;
    let mut env = StackEnv::new().await?;
    env.set("RUST_LOG", &util::log_filter());
    env.set("WORKER_CONCURRENCY", &CONCURRENCY.to_string());
    let result = measure(&env, &sink, rows).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result
}

async fn measure(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let jobs = env_num("BENCH_JOBS", 2000) as usize;
    util::migrate(env).await?;

    let (mut worker, _) = env.start_worker(&sink.url()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = util::rss_mib(&worker)?;
    worker.terminate(Duration::from_secs(15)).await?;

    // A full queue, then a worker: the rate is taken from the sink's receive stamps, from
    // the first email to the last, so the worker's start-up does not count.
    e2e::publish_raw_jobs(
        &env.topology(),
        &e2e::notice_jobs(&format!("mail-{}", e2e::unique_id()), jobs),
    )
    .await?;
    let (worker, _) = env.start_worker(&sink.url()).await?;
    let peak = util::RssPeak::start(&worker);
    util::wait_accepted(sink, jobs as u64, Duration::from_secs(300)).await?;
    let load_rss = peak.finish().await;
    drop(worker);
    let sent = sink.emails();
    let worker_rate = util::sink_rate(&sent[..jobs])?;

    let mails = Arc::new(limits::replayable(&sent[..jobs])?);
    limits::nodelay_connections(sink.smtp_port, CONCURRENCY, mails.clone()).await?;
    util::wait_accepted(sink, 2 * jobs as u64, Duration::from_secs(60)).await?;
    limits::stock_pool(&sink.url(), CONCURRENCY, mails).await?;
    util::wait_accepted(sink, 3 * jobs as u64, Duration::from_secs(60)).await?;
    let all = sink.emails();
    let nodelay_rate = util::sink_rate(&all[jobs..2 * jobs])?;
    let pool_rate = util::sink_rate(&all[2 * jobs..3 * jobs])?;

    let limit =
        format!("raw lettre, 16 persistent nodelay connections: {nodelay_rate:.0} emails/s");
    rows.push(
        Row::new(
            "3 mail",
            format!("mail-worker, {jobs} queued emails, 16 in flight, sink with delayed ACKs"),
        )
        .measured(format!("{worker_rate:.0} emails/s"))
        .limit(&limit)
        .ratio(worker_rate / nodelay_rate)
        .target(Target::AtLeast(0.80), "≥ 0.80"),
    );
    rows.push(
        Row::new(
            "3 mail",
            "reference: lettre's stock pooled `AsyncSmtpTransport`, 16 tasks, same emails",
        )
        .measured(format!("{pool_rate:.0} emails/s"))
        .limit(limit)
        .ratio(pool_rate / nodelay_rate),
    );
    rows.push(rss_row("mail-worker idle", idle_rss).target(Target::Below(1.0), "< 30 MiB"));
    rows.push(rss_row("mail-worker peak while sending", load_rss));
    Ok(())
}
