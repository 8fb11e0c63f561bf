//! The worker's per-recipient budget, end to end (the real api and worker processes,
//! RabbitMQ, Redis, PostgreSQL and an SMTP server): whatever kind of email requests cause, and
//! however the address is spelled, one mailbox gets at most `MAIL_PER_RECIPIENT_PER_HOUR` of
//! them; other mailboxes are not affected, and a job that is retried counts once.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use e2e::{
    publish_raw_jobs,
    stack::{SmtpSink, StackEnv, metrics_text, tally},
};
use serde_json::json;
use shared::message::{Envelope, Job, Trace};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple 42";

/// Emails per mailbox: recipients folded to lower case (a notice goes to the address as the
/// sign-up spelled it, so its local part may be in another case).
fn per_mailbox(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (rcpt, n) in tally(&sink.emails()) {
        *counts.entry(rcpt.to_lowercase()).or_insert(0) += n;
    }
    counts
}

/// The worker's `pwrecovery_jobs_total` summed over kinds for each of `outcomes`.
fn jobs_done(metrics: &str, outcomes: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pwrecovery_jobs_total{"))
        .filter(|l| {
            outcomes
                .iter()
                .any(|o| l.contains(&format!("outcome=\"{o}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the worker has settled `n` jobs as sent or refused by the budget (on a
/// worker without a budget, as soon as `n` were sent), and returns its metrics text.
async fn settle(worker_http: &str, n: u64) -> String {
    e2e::poll_until(WAIT, || async {
        let text = metrics_text(worker_http).await;
        (jobs_done(&text, &["sent", "recipient_budget"]) >= n).then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("the worker did not settle {n} jobs in time"))
}

async fn audit_rows(env: &StackEnv, outcome: &str) -> i64 {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE outcome = $1")
        .bind(outcome)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// An api and a worker with a recipient budget of `budget` and api limits out of the way,
/// so that only the worker's budget can stop an email.
async fn stack(budget: &str) -> (SmtpSink, StackEnv) {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("MAIL_PER_RECIPIENT_PER_HOUR", budget);
    // The stack's per-IP and sign-up limits are already far out of reach.
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "1000");
    env.set("NOTIFY_UNKNOWN_RECIPIENTS", "true");
    (sink, env)
}

#[tokio::test]
async fn sign_ups_and_forgot_password_requests_cannot_mail_bomb_an_address() {
    let (sink, env) = stack("3").await;
    let (_api, base) = env.start_api().await.unwrap();
    let (worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let sign_up = async |email: &str| {
        let r = http
            .post(format!("{base}/v1/users"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "sign-up of {email}");
    };
    let forgot = async |email: &str| {
        let r = http
            .post(format!("{base}/v1/password/forgot"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "forgot-password for {email}");
    };

    // The victim registers (a verification email), then someone signs the address up 8
    // more times (8 "you already have an account" notices), spelling it several ways.
    sign_up("victim@example.org").await;
    for i in 0..8 {
        let spelling = [
            "victim@example.org",
            "Victim@EXAMPLE.org",
            "VICTIM@example.ORG",
        ][i % 3];
        sign_up(spelling).await;
    }
    // A bystander registers and is signed up twice more: 3 emails, exactly the budget.
    for _ in 0..3 {
        sign_up("bystander@example.org").await;
    }
    // Four new accounts, one verification email each.
    for i in 0..4 {
        sign_up(&format!("new-{i}@example.org")).await;
    }
    // Five reset requests for an address without an account: "no account here" notices.
    for _ in 0..5 {
        forgot("nobody@example.org").await;
    }

    let jobs = 9 + 3 + 4 + 5;
    let metrics = settle(&worker_http, jobs).await;
    let counts = per_mailbox(&sink);
    let expected: HashMap<String, usize> = [
        ("victim@example.org", 3),
        ("bystander@example.org", 3),
        ("new-0@example.org", 1),
        ("new-1@example.org", 1),
        ("new-2@example.org", 1),
        ("new-3@example.org", 1),
        ("nobody@example.org", 3),
    ]
    .into_iter()
    .map(|(a, n)| (a.to_owned(), n))
    .collect();
    assert_eq!(
        counts,
        expected,
        "emails per recipient; worker: {:#?}",
        worker.output()
    );
    assert_eq!(jobs_done(&metrics, &["recipient_budget"]), 6 + 2);
    for kind in ["account_exists_notice", "password_reset_requested"] {
        assert!(
            metrics.contains(&format!(
                "pwrecovery_mail_recipient_budget_hits_total{{kind=\"{kind}\"}}"
            )),
            "no budget hit counted for {kind}:\n{metrics}"
        );
    }
    assert_eq!(
        audit_rows(&env, "recipient_budget").await,
        6 + 2,
        "one audit row per refused email"
    );
}

#[tokio::test]
async fn unicode_spellings_of_one_mailbox_are_one_account_and_one_budget() {
    let (sink, env) = stack("3").await;
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let spellings = [
        "mia@bücher.example",
        "Mia@BÜCHER.example",
        "mia@xn--bcher-kva.example",
        "mia@XN--BCHER-KVA.EXAMPLE",
        // Full-width letters and full stop, and a decomposed "ü".
        "mia@\u{ff42}\u{fc}\u{ff43}\u{ff48}\u{ff45}\u{ff52}\u{ff0e}example",
        "mia@bu\u{308}cher.example",
    ];
    for email in spellings {
        let r = http
            .post(format!("{base}/v1/users"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "sign-up of {email:?}");
    }
    settle(&worker_http, spellings.len() as u64).await;

    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    let users: Vec<(String, String)> = sqlx::query_as("SELECT email, email_key FROM users")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(
        users,
        [(
            "mia@xn--bcher-kva.example".to_owned(),
            "mia@xn--bcher-kva.example".to_owned()
        )],
        "one account, stored with its ASCII domain"
    );
    let counts = per_mailbox(&sink);
    assert_eq!(
        counts,
        HashMap::from([("mia@xn--bcher-kva.example".to_owned(), 3)]),
        "one verification email and two notices, all to the ASCII address"
    );
}

/// A notice to `email`, as the api would publish it.
fn notice(email: &str) -> Envelope {
    Envelope::new(
        Job::AccountExistsNotice {
            email: email.to_owned(),
            ip: None,
        },
        chrono::Utc::now(),
        chrono::Duration::hours(1),
        "en",
        Trace::default(),
    )
}

#[tokio::test]
async fn a_job_that_is_retried_counts_once_against_the_budget() {
    let (sink, env) = stack("2").await;
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    // The first job is refused twice with a 451 and goes out on its third attempt.
    sink.set_mode(json!({ "data_code": 451, "fail_times": 2 }))
        .await
        .unwrap();
    let first = notice("retry@example.org");
    publish_raw_jobs(&env.topology(), &[first.encode()])
        .await
        .unwrap();
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0].message_id().starts_with(&first.id.to_string()));
    let state = sink.state().await.unwrap();
    assert_eq!(state["rejected_data"], 2, "two attempts before the send");

    // Three attempts, one job: one email of the budget of two is left.
    let more = [notice("retry@example.org"), notice("retry@example.org")];
    publish_raw_jobs(&env.topology(), &more.map(|j| j.encode()))
        .await
        .unwrap();
    let metrics = settle(&worker_http, 3).await;
    assert_eq!(
        tally(&sink.emails()),
        HashMap::from([("retry@example.org".to_owned(), 2)])
    );
    assert_eq!(jobs_done(&metrics, &["recipient_budget"]), 1);
}
