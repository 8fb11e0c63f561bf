//! Section 4: scale-out. Workers against a slow provider (every message answered after
//! 200 ms), 1, 2 and 3 processes; and two api processes sharing Redis and RabbitMQ, whose
//! per-address and per-IP budgets must stay exact.

use std::{collections::HashMap, time::Duration};

use e2e::{
    QueueReader,
    stack::{SmtpSink, StackEnv},
};
use shared::message::Job;

use crate::{
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num},
};

/// The slow provider's answer time.
const DELAY_MS: u64 = 200;
/// `WORKER_CONCURRENCY` of each worker.
const CONCURRENCY: u64 = 16;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    sink.set_mode(serde_json::json!({ "delay_ms": DELAY_MS }))
        .await?;
    let mut env = StackEnv::new().await?;
    env.set("WORKER_CONCURRENCY", &CONCURRENCY.to_string());
    env.set("RUST_LOG", &util::log_filter());
    let result = workers(&env, &sink, rows).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result?;
    apis(rows).await
}

async fn workers(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    util::migrate(env).await?;
    // Each run lasts about BENCH_SCALE_SECS whatever the number of workers: jobs grow with it.
    let secs = env_num("BENCH_SCALE_SECS", 6);
    let per_worker = (CONCURRENCY * 1000 / DELAY_MS) * secs;
    let mut rates = Vec::new();
    let mut opened = Vec::new();
    for k in 1..=3u64 {
        let mut workers = Vec::new();
        for _ in 0..k {
            workers.push(env.start_worker(&sink.url()).await?.0);
        }
        let before = util::accepted(sink).await?;
        let connections_before = sink.state().await?["connections"].as_u64().unwrap_or(0);
        let n = per_worker * k;
        e2e::publish_raw_jobs(
            &env.topology(),
            &e2e::notice_jobs(&format!("scale{k}-{}", e2e::unique_id()), n as usize),
        )
        .await?;
        util::wait_accepted(sink, before + n, Duration::from_secs(120)).await?;
        // From the moment the first email went out (its stamp less the answer time) to the
        // last stamp: the publishing and the workers' start-up do not count.
        let emails = sink.emails();
        let phase = &emails[before as usize..(before + n) as usize];
        let span = util::sink_span(phase)? + DELAY_MS as f64 / 1000.0;
        rates.push(n as f64 / span);
        let connections = sink.state().await?["connections"].as_u64().unwrap_or(0);
        opened.push(connections - connections_before);
        for mut w in workers {
            w.terminate(Duration::from_secs(15)).await?;
        }
    }
    let one = rates[0];
    let ideal = (CONCURRENCY * 1000 / DELAY_MS) as f64;
    rows.push(
        Row::new(
            "4 scale-out",
            format!("1 worker, provider answering after {DELAY_MS} ms, 16 in flight"),
        )
        .measured(format!(
            "{one:.1} emails/s ({} SMTP connections)",
            opened[0]
        ))
        .limit(format!("16 / {DELAY_MS} ms = {ideal:.0} emails/s"))
        .ratio(one / ideal),
    );
    rows.push(
        Row::new("4 scale-out", "2 worker processes")
            .measured(format!(
                "{:.1} emails/s ({} SMTP connections)",
                rates[1], opened[1]
            ))
            .limit(format!("2 × one worker = {:.1} emails/s", 2.0 * one))
            .ratio(rates[1] / (2.0 * one)),
    );
    rows.push(
        Row::new("4 scale-out", "3 worker processes")
            .measured(format!(
                "{:.1} emails/s ({} SMTP connections)",
                rates[2], opened[2]
            ))
            .limit(format!("3 × one worker = {:.1} emails/s", 3.0 * one))
            .ratio(rates[2] / (3.0 * one))
            .target(Target::AtLeast(0.90), "≥ 0.90 (2.7× one)"),
    );
    Ok(())
}

/// Two api processes on their own ports, one Redis, one RabbitMQ; every request at once,
/// alternating between the two.
async fn apis(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    const IP_BUDGET: u64 = 100;
    const EMAIL_BUDGET: u64 = 3;
    const ADDRESSES: u64 = 10;
    const PER_ADDRESS: u64 = 8;
    const EXTRA: u64 = 60;
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", &IP_BUDGET.to_string());
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", &EMAIL_BUDGET.to_string());
    env.set("RUST_LOG", "warn,api::startup=info");
    let result = async {
        let (api_a, base_a) = env.start_api().await?;
        let (api_b, base_b) = env.start_api().await?;
        let addrs = [load::socket_addr(&base_a)?, load::socket_addr(&base_b)?];
        anyhow::ensure!(addrs[0] != addrs[1], "both apis on one address");
        let tag = e2e::unique_id();

        // Per address: ADDRESSES × PER_ADDRESS requests, all within the IP budget.
        let emails: Vec<String> = (0..ADDRESSES * PER_ADDRESS)
            .map(|i| format!("budget-{}-{tag}@example.org", i % ADDRESSES))
            .collect();
        let statuses = burst(&addrs, &emails).await?;
        let accepted_a = statuses.iter().filter(|s| **s == 202).count() as u64;
        anyhow::ensure!(
            accepted_a == ADDRESSES * PER_ADDRESS,
            "the per-address phase got {statuses:?}"
        );
        let reader = QueueReader::connect().await?;
        let jobs = reader
            .take(
                &env.topology().jobs_queue(),
                (ADDRESSES * PER_ADDRESS) as usize,
                Duration::from_secs(10),
            )
            .await?;
        let mut within: HashMap<String, u64> = HashMap::new();
        for job in &jobs {
            if let Job::PasswordResetRequested {
                email,
                within_budget,
                ..
            } = job.envelope().job
            {
                *within.entry(email).or_default() += u64::from(within_budget);
            }
        }
        let total_within: u64 = within.values().sum();
        let every_address_exact =
            within.len() as u64 == ADDRESSES && within.values().all(|n| *n == EMAIL_BUDGET);
        let expected = ADDRESSES * EMAIL_BUDGET;
        let mut row = Row::new(
            "4 scale-out",
            format!(
                "per-address budget across 2 api processes ({ADDRESSES} addresses × {PER_ADDRESS} concurrent requests, budget {EMAIL_BUDGET})"
            ),
        )
        .measured(format!(
            "{total_within} of {} jobs within budget{}",
            jobs.len(),
            if every_address_exact {
                format!(", every address exactly {EMAIL_BUDGET}")
            } else {
                format!(", per address {within:?}")
            }
        ))
        .limit(format!("{expected}"))
        .ratio(total_within as f64 / expected as f64)
        .target(Target::Exactly(1.0), "exact");
        if !every_address_exact {
            row = row.checked(0.0);
        }
        rows.push(row);

        // Per IP: the rest of the budget and EXTRA more, at once.
        let emails: Vec<String> = (0..EXTRA + IP_BUDGET - ADDRESSES * PER_ADDRESS)
            .map(|i| format!("ip-{i}-{tag}@example.org"))
            .collect();
        let statuses = burst(&addrs, &emails).await?;
        let accepted = accepted_a + statuses.iter().filter(|s| **s == 202).count() as u64;
        let limited = statuses.iter().filter(|s| **s == 429).count();
        let sent = ADDRESSES * PER_ADDRESS + emails.len() as u64;
        rows.push(
            Row::new(
                "4 scale-out",
                format!(
                    "per-IP budget across 2 api processes ({sent} requests from one IP, budget {IP_BUDGET})"
                ),
            )
            .measured(format!("{accepted} × 202, {limited} × 429"))
            .limit(format!("{IP_BUDGET}"))
            .ratio(accepted as f64 / IP_BUDGET as f64)
            .target(Target::Exactly(1.0), "exact"),
        );
        drop((api_a, api_b));
        Ok(())
    }
    .await;
    util::drop_database(&env).await;
    result
}

/// One forgot-password request per address, all at once, alternating between the apis.
async fn burst(addrs: &[std::net::SocketAddr; 2], emails: &[String]) -> anyhow::Result<Vec<u16>> {
    let mut conns = Vec::with_capacity(emails.len());
    for i in 0..emails.len() {
        conns.push(Conn::connect(addrs[i % 2]).await?);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(emails.len()));
    let mut tasks = Vec::with_capacity(emails.len());
    for (mut conn, email) in conns.into_iter().zip(emails.iter().cloned()) {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"email":"{email}"}}"#);
            start.wait().await;
            conn.post_json("/v1/password/forgot", body.as_bytes()).await
        }));
    }
    let mut statuses = Vec::with_capacity(tasks.len());
    for t in tasks {
        statuses.push(t.await??);
    }
    Ok(statuses)
}
