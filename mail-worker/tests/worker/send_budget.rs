//! The send budgets as one worker settles them: a job over a budget is parked (same body, same
//! attempt, no history line) in the waiting queue of the longest step before its turn, and a
//! throttling answer pauses the recipient's domain for every later job while other domains go
//! on.

use lapin::types::AMQPValue;
use serde_json::json;
use shared::message::Job;

use crate::helpers::{PATIENCE, TestWorker, history, spawn_with};

fn notice(email: &str) -> Job {
    Job::AccountExistsNotice {
        email: email.into(),
        ip: None,
    }
}

fn budget_waits(parked: &e2e::Received) -> Option<u32> {
    let headers = parked.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(mail_worker::retry::BUDGET_WAITS_HEADER) {
        Some(AMQPValue::LongUInt(n)) => Some(*n),
        _ => None,
    }
}

fn expiration_ms(parked: &e2e::Received) -> u64 {
    parked
        .properties
        .expiration()
        .as_ref()
        .map(|e| e.as_str().parse().expect("a number of ms"))
        .expect("a parked job carries its queue's delay")
}

/// Takes `n` parked jobs from the waiting queues, each with the step (ms) of its queue.
async fn parked(w: &TestWorker, n: usize) -> Vec<(u64, e2e::Received)> {
    let mut found = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while found.len() < n && std::time::Instant::now() < deadline {
        for step in shared::topology::BUDGET_WAIT_STEPS_MS {
            let queue = w.topology.budget_wait_queue(step);
            let ready = w.ready_in(&queue).await as usize;
            if ready > 0 {
                found.extend(w.take(&queue, ready).await.into_iter().map(|r| (step, r)));
            }
        }
        // The interval between looks at the queues; the deadline decides.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    found
}

/// The worker's `pwrecovery_mail_send_budget_waits_total` for one limit and domain class.
fn budget_waits_total(limit: &str, class: &str) -> u64 {
    let wanted = format!(
        "pwrecovery_mail_send_budget_waits_total{{limit=\"{limit}\",domain_class=\"{class}\"}} "
    );
    let text = shared::telemetry::prometheus().render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&wanted)
                .or_else(|| {
                    // The exporter may order the labels either way.
                    l.strip_prefix(&format!(
                        "pwrecovery_mail_send_budget_waits_total{{domain_class=\"{class}\",limit=\"{limit}\"}} "
                    ))
                })?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn dead_letters_now(w: &TestWorker) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&w.db)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_job_over_the_domain_budget_waits_for_its_turn_without_spending_an_attempt() {
    let w = spawn_with(&[("SMTP_DOMAIN_MAX_PER_MINUTE", "2")]).await;
    let before = budget_waits_total("domain", "gmail");
    let jobs: Vec<_> = (0..4)
        .map(|i| w.job(notice(&format!("user{i}@gmail.com"))))
        .collect();
    for job in &jobs {
        w.publish(job).await;
    }
    // Two go out at once; the two others get the next turns: one minute after the first
    // send, and 60 s / 2 = 30 s after that: 50-60 s and 80-90 s away, parked for the longest
    // steps before them, 32 s and 64 s.
    let sent = w.sink.wait_for(2, PATIENCE).await;
    assert_eq!(sent.len(), 2);
    let parked = parked(&w, 2).await;
    assert_eq!(parked.len(), 2, "both waiting jobs are parked");
    let mut steps = Vec::new();
    for (step, p) in &parked {
        let envelope = p.envelope();
        let original = jobs
            .iter()
            .find(|j| j.id == envelope.id)
            .expect("one of ours");
        assert_eq!(envelope.attempt, 0, "a budget wait spends no attempt");
        assert_eq!(p.body, original.encode(), "parked as it was published");
        assert_eq!(budget_waits(p), Some(1));
        assert!(history(p).is_empty(), "a wait for a turn is no failure");
        assert_eq!(
            mail_worker::retry::waits(p.properties.headers().as_ref()),
            0,
            "nor an outage"
        );
        assert_eq!(
            expiration_ms(p),
            *step,
            "no TTL of its own: the queue stays in order"
        );
        steps.push(*step);
    }
    steps.sort_unstable();
    assert_eq!(
        steps,
        [32_000, 64_000],
        "the turns are a minute after the first send and 30 s apart"
    );
    assert!(budget_waits_total("domain", "gmail") >= before + 2);
    assert_eq!(w.ready_in(&w.topology.dead_queue()).await, 0);
    assert_eq!(dead_letters_now(&w).await, 0, "nothing dead-lettered");
    assert_eq!(w.sink.emails().len(), 2, "and nothing more sent");
}

#[tokio::test]
async fn a_throttling_answer_pauses_the_domain_and_others_go_on() {
    let w = spawn_with(&[("SMTP_THROTTLE_PAUSE_SECS", "40")]).await;
    w.sink
        .set_mode(json!({"per_recipient": {"first@slow.example": "421 4.7.0 Try again later, closing connection"}}))
        .await
        .expect("sink mode");
    let first = w.job(notice("first@slow.example"));
    w.publish(&first).await;
    // The job that got the answer waits for the pause (40 s, plus a spread of up to one
    // more pause: the 32 s or the 64 s step) without spending an attempt; the answer is in
    // its history.
    let got = parked(&w, 1).await;
    assert_eq!(got.len(), 1);
    let (step, job) = &got[0];
    assert_eq!(job.envelope().id, first.id);
    assert_eq!(job.envelope().attempt, 0);
    assert!([32_000, 64_000].contains(step), "{step}");
    let lines = history(job);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("throttled: ") && lines[0].contains("421"),
        "{lines:?}"
    );
    let state = w.sink.state().await.expect("state");
    let refused = state["rejected_rcpt"].as_u64().expect("count");
    assert_eq!(refused, 1);

    // Later mail to the same domain waits without asking the provider; another domain goes.
    let second = w.job(notice("second@slow.example"));
    let elsewhere = w.job(notice("ann@fine.example"));
    w.publish(&second).await;
    w.publish(&elsewhere).await;
    let delivered = w
        .sink
        .wait_for_email("ann@fine.example", "", PATIENCE)
        .await;
    assert!(delivered.is_some(), "other domains are not paused");
    let got = parked(&w, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.envelope().id, second.id);
    assert_eq!(got[0].1.envelope().attempt, 0);
    assert!(history(&got[0].1).is_empty(), "it got no answer of its own");
    let state = w.sink.state().await.expect("state");
    assert_eq!(
        state["rejected_rcpt"].as_u64(),
        Some(refused),
        "the paused domain was not tried again"
    );
    assert_eq!(w.sink.emails().len(), 1);
    let throttled = shared::telemetry::prometheus()
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("pwrecovery_mail_smtp_throttled_total{domain_class=\"other\"} ")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert!(throttled >= 1, "the throttling answer is counted");
    assert_eq!(dead_letters_now(&w).await, 0);
}
