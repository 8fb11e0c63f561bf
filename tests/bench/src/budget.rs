//! Send budgets: how a burst to one domain spreads out under `SMTP_DOMAIN_MAX_PER_MINUTE`
//! (and a burst under `SMTP_MAX_PER_SECOND`) with two worker processes sharing the budget
//! through Redis. Not part of `bench all` (the domain run lasts as long as the budget makes
//! it: about 100 s at the defaults).
//!
//! Reported from the sink's `X-Sink-Received-At` stamps: first to last delivery, the
//! deliveries in each consecutive window of the budget's length from the first one, the most
//! in any window of that length, next to the shortest spread the budget allows; and that
//! nothing was dropped, retried or dead-lettered. Settings: `BENCH_BUDGET_JOBS` (200),
//! `BENCH_DOMAIN_PER_MINUTE` (120), `BENCH_PROVIDER_PER_SECOND` (20).

use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::stack::{SmtpSink, StackEnv, job_outcomes, most_in_any_window};

use crate::{
    report::Row,
    util::{self, env_num},
};

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let jobs = env_num("BENCH_BUDGET_JOBS", 200) as usize;
    let per_minute = env_num("BENCH_DOMAIN_PER_MINUTE", 120);
    let per_second = env_num("BENCH_PROVIDER_PER_SECOND", 20);
    burst(
        rows,
        jobs,
        "SMTP_DOMAIN_MAX_PER_MINUTE",
        per_minute,
        Duration::from_secs(60),
    )
    .await?;
    burst(
        rows,
        jobs,
        "SMTP_MAX_PER_SECOND",
        per_second,
        Duration::from_secs(1),
    )
    .await
}

async fn burst(
    rows: &mut Vec<Row>,
    jobs: usize,
    variable: &str,
    budget: u64,
    window: Duration,
) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let mut env = StackEnv::new().await?;
    env.set("RUST_LOG", &util::log_filter());
    env.set(variable, &budget.to_string());
    let result = measure(&env, &sink, rows, jobs, variable, budget, window).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result
}

async fn measure(
    env: &StackEnv,
    sink: &SmtpSink,
    rows: &mut Vec<Row>,
    jobs: usize,
    variable: &str,
    budget: u64,
    window: Duration,
) -> anyhow::Result<()> {
    util::migrate(env).await?;
    let (_one, one) = env.start_worker(&sink.url()).await?;
    let (_two, two) = env.start_worker(&sink.url()).await?;
    // One domain (example.org), one address per email.
    e2e::publish_raw_jobs(
        &env.topology(),
        &e2e::notice_jobs(&format!("budget-{}", e2e::unique_id()), jobs),
    )
    .await?;
    // The longest the budget may take, with room for a slow machine.
    let allowed = window.as_secs_f64() * (jobs as f64 / budget as f64 + 2.0);
    util::wait_accepted(sink, jobs as u64, Duration::from_secs_f64(allowed + 60.0)).await?;
    env.wait_idle(&[&one, &two]).await?;
    let emails = sink.emails();
    anyhow::ensure!(
        emails.len() == jobs,
        "{} emails for {jobs} jobs",
        emails.len()
    );
    let mut outcomes = job_outcomes(&one, None).await;
    for (outcome, n) in job_outcomes(&two, None).await {
        *outcomes.entry(outcome).or_default() += n;
    }
    let sent = outcomes.get("sent").copied().unwrap_or(0);
    let waits = outcomes.get("budget_wait").copied().unwrap_or(0);
    let other: u64 = outcomes
        .iter()
        .filter(|(o, _)| !matches!(o.as_str(), "sent" | "budget_wait"))
        .map(|(_, n)| n)
        .sum();

    let mut times: Vec<DateTime<Utc>> = emails
        .iter()
        .map(|e| {
            e.received_at()
                .ok_or_else(|| anyhow::anyhow!("no X-Sink-Received-At"))
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    let span = (times[jobs - 1] - times[0]).num_milliseconds() as f64 / 1000.0;
    let window_ms = window.as_millis() as i64;
    let mut per_window = Vec::new();
    for t in &times {
        let index = ((*t - times[0]).num_milliseconds() / window_ms) as usize;
        if per_window.len() <= index {
            per_window.resize(index + 1, 0);
        }
        per_window[index] += 1;
    }
    let most = most_in_any_window(&times, window);
    // A sliding window lets the k-th email (from 0) go no sooner than k / budget windows
    // (whole) after the first.
    let shortest = (jobs.saturating_sub(1) / budget as usize) as f64 * window.as_secs_f64();
    let unit = if window.as_secs() == 60 {
        "minute"
    } else {
        "second"
    };
    let shown: Vec<String> = if per_window.len() > 12 {
        let mut v: Vec<String> = per_window[..6].iter().map(u64::to_string).collect();
        v.push("…".into());
        v.extend(
            per_window[per_window.len() - 3..]
                .iter()
                .map(u64::to_string),
        );
        v
    } else {
        per_window.iter().map(u64::to_string).collect()
    };
    println!(
        "{variable}={budget}: {jobs} emails, first to last {span:.1} s (shortest the budget allows \
         {shortest:.1} s), per {unit} from the first: [{}], at most {most} in any {unit}; \
         sent {sent}, budget waits {waits}, other outcomes {other}",
        per_window
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    rows.push(
        Row::new(
            "11 send budgets",
            format!(
                "{jobs}-email burst to one domain, {variable}={budget}, two workers: first to last delivery"
            ),
        )
        .measured(format!("{span:.1} s"))
        .limit(format!(
            "the budget allows no less than {shortest:.1} s"
        )),
    );
    rows.push(
        Row::new(
            "11 send budgets",
            format!("the same burst: deliveries per {unit} from the first; most in any {unit}"),
        )
        .measured(format!("[{}]; {most}", shown.join(", ")))
        .limit(format!("≤ {budget} in any {unit}")),
    );
    rows.push(
        Row::new(
            "11 send budgets",
            "the same burst: jobs sent, budget waits, anything else",
        )
        .measured(format!("{sent}, {waits}, {other}")),
    );
    anyhow::ensure!(
        sent == jobs as u64 && other == 0,
        "outcomes other than sent and budget_wait: {outcomes:?}"
    );
    Ok(())
}
