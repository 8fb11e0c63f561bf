//! Section 9: the whole forgot-password pipeline on one box. The api answers while a worker
//! drains the queue (unknown addresses: looked up, dropped, audited, no email), and the CPU
//! each process spends per request is read from `/proc`. Beside it, the raw pipeline measured
//! in the same run: confirmed lapin publishes to a quorum queue declared by `shared::topology`
//! and a consumer that only acks.

use std::time::{Duration, Instant};

use e2e::stack::{SmtpSink, StackEnv};

use crate::{
    forgot,
    limits::RawPublisher,
    load,
    report::{Row, Target},
    util::{self, ms},
};

/// Processes whose CPU is counted, in the order of the row.
const PROCESSES: [&str; 6] = ["api", "worker", "RabbitMQ", "PostgreSQL", "Redis", "load"];

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set("RUST_LOG", &util::log_filter());
    env.set("NOTIFY_UNKNOWN_RECIPIENTS", "false");
    util::apply_overrides(&mut env);
    let result = measure(&env, &sink, rows).await;
    util::drop_database(&env).await;
    result
}

/// CPU seconds of each of [`PROCESSES`]. The meter holds api, worker, RabbitMQ, Redis and
/// this process, then every PostgreSQL server process from `postgres_from` on (summed).
fn cpu(meter: &util::CpuMeter, postgres_from: usize) -> [f64; 6] {
    let s = meter.sample();
    let postgres = s[postgres_from..].iter().sum();
    [s[0], s[1], s[2], postgres, s[3], s[4]]
}

async fn measure(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (api, base) = env.start_api().await?;
    let (worker, _) = env.start_worker(&sink.url()).await?;
    let addr = load::socket_addr(&base)?;
    let jobs_queue = env.topology().jobs_queue();
    let tag = e2e::unique_id();
    let phase = util::secs(6);
    let raw = RawPublisher::start().await?;
    let raw_consumer = raw.drain_continuously(16).await?;
    // Warm up both (connections, pools, caches).
    raw.run(64, Duration::from_secs(1)).await?;
    forgot::saturate(addr, &format!("warm-{tag}"), Duration::from_secs(1)).await?;
    wait_drained(&raw, &jobs_queue).await?;

    let mut pids = vec![
        api.child.id().unwrap_or(0),
        worker.child.id().unwrap_or(0),
        util::pid_of("beam.smp").unwrap_or(0),
        util::pid_of("redis-server").unwrap_or(0),
        std::process::id(),
    ];
    let postgres_from = pids.len();
    pids.extend(util::pids_of("postgres"));
    let meter = util::CpuMeter::new(pids);

    // The raw pipeline: publishes confirmed while the consumer acks them.
    let before = cpu(&meter, postgres_from);
    let raw_result = raw.run(64, phase).await?;
    let raw_cpu = sub(cpu(&meter, postgres_from), before);

    // The product: forgot-password at saturation while the worker drains; then until the
    // queue is empty, so every accepted request is paid for.
    let before = cpu(&meter, postgres_from);
    let started = Instant::now();
    let api_result = forgot::saturate(addr, &format!("e2e-{tag}"), phase).await?;
    let answered = started.elapsed();
    wait_drained(&raw, &jobs_queue).await?;
    let drained = started.elapsed();
    let e2e_cpu = sub(cpu(&meter, postgres_from), before);

    // Half of that rate, open loop, the worker draining: the latency a site sees when the
    // pipeline is busy but not saturated, and the raw pipeline at the same rate (the broker's
    // own latency and its CPU per message at this rate, where it batches less).
    let half_rate = (api_result.ok as f64 / drained.as_secs_f64()) / 2.0;
    let half = load::open_loop(
        addr,
        forgot::FORGOT,
        202,
        forgot::CONCURRENCY,
        half_rate,
        phase,
        forgot::forgot_bodies(format!("h-{tag}")),
    )
    .await?;
    wait_drained(&raw, &jobs_queue).await?;
    let before = cpu(&meter, postgres_from);
    let raw_half = raw.run_at(64, half_rate, phase).await?;
    let raw_half_cpu = sub(cpu(&meter, postgres_from), before);
    raw_consumer.abort();
    raw.close().await;

    let e2e_rate = api_result.ok as f64 / drained.as_secs_f64();
    let raw_rate = raw_result.rate();
    rows.push(
        Row::new(
            "9 end to end",
            "forgot-password, unknown addresses, 64 connections, worker draining on the same box",
        )
        .measured(format!(
            "{e2e_rate:.0} req/s end to end ({} answered in {:.1} s at {:.0} req/s, p99 {}; \
             queue empty {:.1} s later)",
            api_result.ok,
            answered.as_secs_f64(),
            api_result.rate(),
            ms(api_result.p(0.99)),
            (drained - answered).as_secs_f64()
        ))
        .limit(format!(
            "raw pipeline (confirmed publishes + acking consumer): {raw_rate:.0} msg/s"
        ))
        .ratio(e2e_rate / raw_rate)
        .target(Target::AtLeast(0.6), "≥ 0.6 and ≥ 5000 req/s"),
    );
    let per = |seconds: &[f64; 6], n: u64| {
        let parts: Vec<String> = seconds
            .iter()
            .map(|s| format!("{:.0}", s * 1e6 / n.max(1) as f64))
            .collect();
        let total: f64 = seconds.iter().sum::<f64>() * 1e6 / n.max(1) as f64;
        (parts.join(" / "), total)
    };
    let (parts, total) = per(&e2e_cpu, api_result.ok);
    let (raw_parts, raw_total) = per(&raw_cpu, raw_result.ok);
    rows.push(
        Row::new(
            "9 end to end",
            format!("CPU µs per request: {}", PROCESSES.join(" / ")),
        )
        .measured(format!("{parts} = {total:.0} µs"))
        .limit(format!(
            "raw pipeline: {raw_parts} = {raw_total:.0} µs per message"
        ))
        .ratio(total / 380.0)
        .target(Target::Below(1.0), "≤ 380 µs"),
    );
    rows.push(forgot::half_load_row(
        Row::new(
            "9 end to end",
            format!("latency at half that rate ({half_rate:.0} req/s, open loop), worker draining"),
        ),
        &half,
        format!(
            "10 ms (raw pipeline at the same rate: p50 {}, p99 {}; RabbitMQ {:.0} µs per message)",
            ms(raw_half.p(0.5)),
            ms(raw_half.p(0.99)),
            raw_half_cpu[2] * 1e6 / raw_half.ok.max(1) as f64
        ),
    ));
    drop((api, worker));
    Ok(())
}

fn sub(after: [f64; 6], before: [f64; 6]) -> [f64; 6] {
    let mut out = [0.0; 6];
    for i in 0..6 {
        out[i] = after[i] - before[i];
    }
    out
}

/// Waits until `queue` holds no message (the worker consumed everything).
async fn wait_drained(raw: &RawPublisher, queue: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if raw.depth(queue).await? == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{queue} did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
