//! The send budgets end to end: two real worker processes share the provider's budget
//! (`SMTP_MAX_PER_SECOND`) and a domain's budget (`SMTP_DOMAIN_MAX_PER_MINUTE`) through the
//! real Redis; a burst is spread at the configured rate, every email of it arrives at the real
//! SMTP server once, nothing is dropped, dead-lettered or retried.
//!
//! The rate is checked on the times the SMTP server stored the emails, two ways: in any window
//! `TOLERANCE` shorter than the budget's, never more than the budget (those times trail the
//! moments the budget allowed each send by the SMTP exchange, which on a loaded machine varies
//! by a few hundred milliseconds); and the burst cannot be over sooner than the budget allows
//! (n emails at k per window span at least n / k - 1 windows, less the tolerance), which a
//! slow machine can only make truer. Nothing here asserts how fast the burst goes.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use e2e::{
    publish_raw_jobs,
    stack::{
        SmtpSink, StackEnv, StoredEmail, job_outcomes, metrics_text, most_in_any_window, tally,
    },
};
use shared::message::{Envelope, Job, Trace};

/// A notice to `email` (a job that needs no account, as the api publishes it for a sign-up
/// of a taken address).
fn notice(email: &str) -> Vec<u8> {
    Envelope::new(
        Job::AccountExistsNotice {
            email: email.to_owned(),
            ip: None,
        },
        Utc::now(),
        chrono::Duration::hours(1),
        "en",
        Trace::default(),
    )
    .encode()
}

/// Two workers with `vars` on one stack; the jobs are published only once both consume, so
/// the broker spreads them over both.
async fn two_workers(
    vars: &[(&str, &str)],
) -> (SmtpSink, StackEnv, Vec<e2e::ServiceProcess>, Vec<String>) {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let mut all = vec![
        ("MAIL_TRANSPORT", "smtp"),
        ("SMTP_TIMEOUT_SECS", "5"),
        // Each notice goes to an address of its own; this keeps the recipient budget out of it.
        ("MAIL_PER_RECIPIENT_PER_HOUR", "1000"),
    ];
    let url = sink.url();
    all.push(("SMTP_URL", &url));
    all.extend_from_slice(vars);
    let mut workers = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let (worker, base) = env.start_worker_with(&all).await.unwrap();
        workers.push(worker);
        bases.push(base);
    }
    (sink, env, workers, bases)
}

/// Waits for `n` emails and the workers to be idle, then checks that nothing was dropped,
/// retried or dead-lettered, each recipient got exactly one email, and both workers sent.
/// Returns the emails.
async fn all_delivered_once(
    sink: &SmtpSink,
    env: &StackEnv,
    bases: &[String],
    n: usize,
) -> Vec<StoredEmail> {
    let emails = sink.wait_for(n, Duration::from_secs(240)).await;
    assert_eq!(emails.len(), n, "every email of the burst arrives");
    let base_refs: Vec<&str> = bases.iter().map(String::as_str).collect();
    env.wait_idle(&base_refs).await.unwrap();
    assert_eq!(sink.emails().len(), n, "and no email twice");
    assert!(tally(&sink.emails()).values().all(|&c| c == 1));
    let mut budget_waits = 0;
    for base in bases {
        let outcomes = job_outcomes(base, None).await;
        assert!(
            outcomes.get("sent").copied().unwrap_or(0) > 0,
            "both workers send: {outcomes:?}"
        );
        for outcome in outcomes.keys() {
            assert!(
                matches!(outcome.as_str(), "sent" | "budget_wait"),
                "no retry, drop or dead letter: {outcomes:?}"
            );
        }
        budget_waits += outcomes.get("budget_wait").copied().unwrap_or(0);
    }
    assert!(budget_waits > 0, "the budget held jobs back");
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    emails
}

/// The windows of the budgets are shortened by this much (see the module's comment).
const TOLERANCE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_burst_is_spread_at_the_provider_rate_across_two_workers() {
    let (sink, env, _workers, bases) = two_workers(&[("SMTP_MAX_PER_SECOND", "5")]).await;
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| notice(&format!("user{i}@burst.example")))
        .collect();
    publish_raw_jobs(&env.topology(), &bodies).await.unwrap();
    let emails = all_delivered_once(&sink, &env, &bases, 40).await;
    let mut times: Vec<_> = emails
        .iter()
        .map(|e| e.received_at().expect("the sink's time"))
        .collect();
    times.sort();
    let most = most_in_any_window(&times, Duration::from_secs(1) - TOLERANCE);
    println!(
        "40 emails at 5/s over two workers: first to last {:?} ms, at most {most} in any {:?}",
        (times[39] - times[0]).num_milliseconds(),
        Duration::from_secs(1) - TOLERANCE
    );
    assert!(most <= 5, "{most} emails within one second: {times:?}");
    let span = (times[39] - times[0]).to_std().unwrap();
    assert!(
        span >= Duration::from_secs(7) - TOLERANCE,
        "40 emails at 5/s cannot all go within {span:?}"
    );
}

#[tokio::test]
async fn a_burst_to_one_domain_is_spread_at_its_budget_and_other_domains_go_on() {
    let (sink, env, _workers, bases) = two_workers(&[("SMTP_DOMAIN_MAX_PER_MINUTE", "20")]).await;
    // 24 to one domain: 20 in the first minute, the other 4 after it, 3 s apart; and 5 to
    // another domain, published after them.
    let mut bodies: Vec<Vec<u8>> = (0..24)
        .map(|i| notice(&format!("user{i}@gmail.com")))
        .collect();
    bodies.extend((0..5).map(|i| notice(&format!("user{i}@elsewhere.example"))));
    publish_raw_jobs(&env.topology(), &bodies).await.unwrap();
    let emails = all_delivered_once(&sink, &env, &bases, 29).await;
    let domain_times = |domain: &str| {
        let mut times: Vec<_> = emails
            .iter()
            .filter(|e| e.rcpt_to().ends_with(domain))
            .map(|e| e.received_at().expect("the sink's time"))
            .collect();
        times.sort();
        times
    };
    let gmail = domain_times("@gmail.com");
    let elsewhere = domain_times("@elsewhere.example");
    assert_eq!((gmail.len(), elsewhere.len()), (24, 5));
    let most = most_in_any_window(&gmail, Duration::from_secs(60) - TOLERANCE);
    println!(
        "24 emails to one domain at 20/min over two workers: first to last {} ms, at most {most} in any minute",
        (gmail[23] - gmail[0]).num_milliseconds()
    );
    assert!(most <= 20, "{most} emails to one domain within a minute");
    let span = (gmail[20] - gmail[0]).to_std().unwrap();
    assert!(
        span >= Duration::from_secs(60) - TOLERANCE,
        "the 21st email to the domain went {span:?} after the first"
    );
    // The other domain's emails did not wait for the held-back ones.
    assert!(
        elsewhere[4] < gmail[20],
        "the other domain waited for this one's budget"
    );
    let mut counted = 0.0;
    for base in &bases {
        counted += metrics_text(base)
            .await
            .lines()
            .filter(|l| {
                l.starts_with("pwrecovery_mail_send_budget_waits_total{")
                    && l.contains("limit=\"domain\"")
                    && l.contains("domain_class=\"gmail\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(counted >= 4.0, "the waits are counted per domain class");
}

/// A job of `job`'s kind, as the api publishes it.
fn job(job: Job) -> Vec<u8> {
    Envelope::new(
        job,
        Utc::now(),
        chrono::Duration::hours(1),
        "en",
        Trace::default(),
    )
    .encode()
}

#[tokio::test]
async fn reset_emails_go_before_a_queued_flood_and_one_client_does_not_hold_the_line() {
    // A domain budget of 20 a window (2 s here, so the test is quick; the rule is the same for
    // a minute), one requester holding places for at most 25 % of it.
    let (sink, env, _workers, _bases) = two_workers(&[
        ("SMTP_DOMAIN_MAX_PER_MINUTE", "20"),
        ("SMTP_DOMAIN_WINDOW_SECS", "2"),
        ("SMTP_REQUESTER_SHARE_PERCENT", "25"),
    ])
    .await;
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let owners: Vec<String> = (0..5).map(|i| format!("owner{i}@gmail.com")).collect();
    for owner in &owners {
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, password_version, email_verified_at)
             VALUES ($1, $2, $2, 'x', 1, now())",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(owner)
        .execute(&db)
        .await
        .unwrap();
    }
    db.close().await;

    // 200 sign-ups of random gmail.com addresses from one client: the first window's 20 go.
    let flood: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            job(Job::AccountExistsNotice {
                email: format!("random{i}@gmail.com"),
                ip: Some("203.0.113.7".into()),
            })
        })
        .collect();
    publish_raw_jobs(&env.topology(), &flood).await.unwrap();
    assert_eq!(sink.wait_for(20, Duration::from_secs(60)).await.len(), 20);

    // Then five people ask for a reset, and another client signs up three addresses.
    let mut later: Vec<Vec<u8>> = owners
        .iter()
        .map(|owner| {
            job(Job::PasswordResetRequested {
                email: owner.clone(),
                ip: Some("192.0.2.50".into()),
                within_budget: true,
                user_id: None,
            })
        })
        .collect();
    later.extend((0..3).map(|i| {
        job(Job::AccountExistsNotice {
            email: format!("someone{i}@gmail.com"),
            ip: Some("198.51.100.9".into()),
        })
    }));
    publish_raw_jobs(&env.topology(), &later).await.unwrap();

    let arrived = |prefix: &str| {
        let emails = sink.emails();
        let mut times: Vec<_> = emails
            .iter()
            .filter(|e| e.rcpt_to().starts_with(prefix))
            .filter_map(StoredEmail::received_at)
            .collect();
        times.sort();
        times
    };
    let done = e2e::poll_until(Duration::from_secs(90), || async {
        (arrived("owner").len() == 5 && arrived("someone").len() == 3).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "resets {:?}, other client {:?}, flood {}",
        arrived("owner"),
        arrived("someone"),
        arrived("random").len()
    );
    let before = |at: chrono::DateTime<Utc>| arrived("random").iter().filter(|t| **t < at).count();
    let last_reset = *arrived("owner").last().unwrap();
    let last_other = *arrived("someone").last().unwrap();
    let (flood_before_resets, flood_before_other) = (before(last_reset), before(last_other));
    println!(
        "flood emails delivered before the last reset: {flood_before_resets}, before the other \
         client's last sign-up: {flood_before_other} (of 200)"
    );
    // The reset emails took the turns after the first window: none of the backlog's 180 went
    // first, except what the SMTP exchange's timing blurs.
    assert!(flood_before_resets <= 22, "{flood_before_resets}");
    // The flooding client holds 5 places of the bulk line at a time: the other client's three
    // sign-ups come after at most those, not after its 180.
    assert!(flood_before_other <= 32, "{flood_before_other}");
    // Reset emails carry their link; none was dropped as stale.
    for email in sink
        .emails()
        .iter()
        .filter(|e| e.rcpt_to().starts_with("owner"))
    {
        assert!(email.subject().contains("Reset"), "{}", email.subject());
    }
}
