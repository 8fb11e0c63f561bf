//! Faults of the real dependencies under load: the broker restarted while requests are in
//! flight, PostgreSQL gone while jobs wait, an SMTP provider that is slow, resets
//! connections or refuses them, and a worker killed again and again. In every case: no
//! accepted request without its email, no email twice, no job dead-lettered for an outage.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use e2e::{
    FaultProxy, QueueReader, notice_jobs, publish_raw_jobs,
    stack::{SmtpSink, StackEnv, metrics_text, tally, wait_outcome},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn duplicates(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|n| n - 1).sum()
}

/// `n` verified accounts `<prefix><i>@example.org`, written straight into the database.
async fn seed_users(env: &StackEnv, prefix: &str, n: usize) {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
         SELECT gen_random_uuid(), $1 || i || '@example.org', $1 || i || '@example.org',
                'not-a-hash', now()
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(prefix)
    .bind(n as i32)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
}

/// Dead letters of this stack: still in `mail.dead` (read and removed) or moved to the table.
async fn dead_letter_count(env: &StackEnv, amqp: Option<&str>) -> usize {
    use sqlx::Connection as _;
    let reader = match amqp {
        Some(url) => QueueReader::connect_to(url).await.unwrap(),
        None => QueueReader::connect().await.unwrap(),
    };
    // Those the worker has not moved into the table yet, and those it has.
    let queued = reader
        .drain(&env.topology().dead_queue())
        .await
        .unwrap()
        .len();
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&mut db)
        .await
        .unwrap();
    queued + usize::try_from(stored).unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> bool {
    e2e::poll_until(WAIT, || async {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_broker_restart_under_load_loses_no_accepted_request_and_doubles_none() {
    // A broker of its own: stopping the machine's broker would break every other test.
    let node = e2e::broker::BrokerNode::start().await.unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("AMQP_URL", &node.amqp_url());
    let (_api, base) = env.start_api().await.unwrap();
    let (mut worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    const N: usize = 500;
    seed_users(&env, "load", N).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    // 500 requests spread over ~7 s; the broker goes down after ~1.5 s for a few seconds.
    let tasks = forgot_load(
        &client,
        &base,
        "load",
        0..N,
        Duration::from_millis(14),
        started,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.stop_app().await.unwrap();
    let down_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.start_app().await.unwrap();
    let up_at = started.elapsed();

    let Answers {
        mut accepted,
        refused,
        ..
    } = answers(tasks).await;
    assert!(!refused.is_empty(), "the outage did not hit any request");
    assert!(accepted.len() > N / 4, "only {} accepted", accepted.len());

    // Both recover without a restart.
    assert!(wait_ready(&client, &base).await, "api never ready again");
    assert!(
        wait_ready(&client, &worker_http).await,
        "worker never ready again"
    );
    let r = client
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "load0@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "accepting again after the restart");
    accepted.insert("after".into());

    // Every accepted request produced its email (the extra one for load0 included).
    let expected = accepted.len();
    let _ = sink.wait_for(expected, WAIT).await;
    // Stragglers and duplicates: once the worker is stopped, what the server holds is final.
    env.stop_when_idle(&mut worker, &worker_http).await.unwrap();
    let counts = tally(&sink.emails());
    let missing: Vec<_> = accepted
        .iter()
        .filter(|e| *e != "after" && !counts.contains_key(*e))
        .collect();
    let refused_but_sent = refused.iter().filter(|e| counts.contains_key(*e)).count();
    println!(
        "broker restart (down at {:.1} s, up at {:.1} s): {} answered 202, {} answered 503, \
         {} emails, {} distinct, {} duplicates, {} of the 503s were delivered anyway",
        down_at.as_secs_f64(),
        up_at.as_secs_f64(),
        accepted.len() - 1,
        refused.len(),
        sink.emails().len(),
        counts.len(),
        duplicates(&counts),
        refused_but_sent,
    );
    assert!(
        missing.is_empty(),
        "accepted but never delivered: {missing:?}"
    );
    // load0 was asked for twice on purpose (once in the load, once after); any other repeat
    // is a duplicate.
    let unexpected: Vec<_> = counts
        .iter()
        .filter(|(e, n)| **n > 1 && e.as_str() != "load0@example.org")
        .collect();
    assert!(unexpected.is_empty(), "delivered twice: {unexpected:?}");
    assert_eq!(
        dead_letter_count(&env, Some(&node.amqp_url())).await,
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test]
async fn jobs_wait_out_a_postgres_outage_instead_of_dead_lettering() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // Short delays, few of them: a retry budget an outage would use up at once.
    env.set("MAIL_RETRY_SCHEDULE_SECS", "1,1");
    let (_api, base) = env.start_api().await.unwrap();
    seed_users(&env, "pg", 20).await;
    let pg = FaultProxy::start("127.0.0.1:5432").await.unwrap();
    let proxied = env
        .database_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", pg.port()));
    assert_ne!(proxied, env.database_url);
    let (_worker, worker_http) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("DATABASE_URL", &proxied),
        ])
        .await
        .unwrap();

    pg.cut();
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client
            .post(format!("{base}/v1/password/forgot"))
            .json(&json!({ "email": format!("pg{i}@example.org") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Every job waited more often than its two retries would have allowed.
    assert!(wait_outcome(&worker_http, "waiting", 3 * 20, WAIT).await >= 3 * 20);
    assert_eq!(
        sink.emails().len(),
        0,
        "nothing can be sent without the database"
    );
    let metrics = metrics_text(&worker_http).await;
    assert!(
        metrics.contains("outcome=\"waiting\""),
        "jobs waited: {metrics}"
    );
    assert!(
        !metrics.contains("outcome=\"dead\""),
        "no job dead-lettered during the outage"
    );

    pg.restore();
    let emails = sink.wait_for(20, WAIT).await;
    env.wait_idle(&[&worker_http]).await.unwrap();
    let counts = tally(&sink.emails());
    assert_eq!(emails.len(), 20);
    assert_eq!(counts.len(), 20, "{counts:?}");
    assert_eq!(duplicates(&counts), 0);
    assert_eq!(dead_letter_count(&env, None).await, 0);
}

#[tokio::test]
async fn a_slow_provider_gets_every_email_once() {
    // Every answer to a message takes 10 s; the worker's timeout is longer.
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "delay_ms": 10_000 })).await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (_worker, worker_http) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("SMTP_TIMEOUT_SECS", "30"),
        ])
        .await
        .unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("slow", 24))
        .await
        .unwrap();
    let emails = sink.wait_for(24, WAIT).await;
    env.wait_idle(&[&worker_http]).await.unwrap();
    let counts = tally(&sink.emails());
    assert_eq!(emails.len(), 24);
    assert_eq!(counts.len(), 24);
    assert_eq!(duplicates(&counts), 0);
    assert_eq!(dead_letter_count(&env, None).await, 0);
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_is_retried_without_duplicates() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "delay_ms": 4_000 })).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("MAIL_RETRY_SCHEDULE_SECS", "1,2,2,2,2");
    let (_worker, worker_http) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("SMTP_TIMEOUT_SECS", "2"),
        ])
        .await
        .unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("timeout", 10))
        .await
        .unwrap();
    // Every send times out and the worker hangs up before the answer: the provider keeps
    // nothing it never acknowledged.
    assert!(wait_outcome(&worker_http, "retried", 10, WAIT).await >= 10);
    let abandoned = e2e::poll_until(WAIT, || async {
        let state = sink.state().await.ok()?;
        (state["abandoned"].as_u64()? >= 10).then_some(())
    })
    .await;
    assert!(abandoned.is_some(), "{}", sink.state().await.unwrap());
    let state = sink.state().await.unwrap();
    assert_eq!(state["accepted"], 0, "{state}");
    sink.set_mode(json!({})).await.unwrap();
    let emails = sink.wait_for(10, WAIT).await;
    env.wait_idle(&[&worker_http]).await.unwrap();
    let counts = tally(&sink.emails());
    assert_eq!(emails.len(), 10);
    assert_eq!(counts.len(), 10);
    assert_eq!(duplicates(&counts), 0);
    assert_eq!(dead_letter_count(&env, None).await, 0);
}

#[tokio::test]
async fn connection_resets_and_421_on_connect_are_retried_until_everything_is_delivered() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("MAIL_RETRY_SCHEDULE_SECS", "1,1,2,2,3,3,3,3");
    // The provider resets new connections before greeting, turns others away with 421, and
    // resets connections mid-message (RST after the data, nothing kept).
    sink.set_mode(json!({
        "reset_on_connect_times": 6,
        "connect_code": 421,
        "connect_fail_times": 6,
        "drop_after_data": true,
        "fail_times": 12,
    }))
    .await
    .unwrap();
    let (worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("rst", 60))
        .await
        .unwrap();
    let emails = sink.wait_for(60, WAIT).await;
    env.wait_idle(&[&worker_http]).await.unwrap();
    let counts = tally(&sink.emails());
    let state = sink.state().await.unwrap();
    println!("resets and 421s: {state}");
    assert_eq!(emails.len(), 60, "{state}");
    assert_eq!(counts.len(), 60);
    assert_eq!(duplicates(&counts), 0);
    assert!(state["dropped"].as_u64().unwrap() >= 12, "{state}");
    assert_eq!(state["rejected_connect"], 6, "{state}");
    assert_eq!(state["reset_on_connect"], 6, "{state}");
    assert_eq!(dead_letter_count(&env, None).await, 0);
    let metrics = metrics_text(&worker_http).await;
    assert!(metrics.contains("outcome=\"retried\""), "{metrics}");
    drop(worker);
}

#[tokio::test]
async fn a_worker_killed_three_times_during_a_thousand_jobs_delivers_all_of_them() {
    const N: usize = 1000;
    let sink = SmtpSink::start().await.unwrap();
    // Slow answers keep many sends in flight at each kill.
    sink.set_mode(json!({ "delay_ms": 20 })).await.unwrap();
    let env = StackEnv::new().await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("kill", N))
        .await
        .unwrap();
    let mut killed_at = Vec::new();
    for threshold in [150, 400, 650] {
        let (mut worker, _) = env.start_worker(&sink.url()).await.unwrap();
        let _ = sink.wait_for(threshold, WAIT).await;
        worker.child.start_kill().unwrap(); // SIGKILL
        worker.child.wait().await.unwrap();
        killed_at.push(sink.emails().len());
    }
    assert!(
        killed_at.iter().all(|&n| n < N),
        "the kills came too late to test anything: {killed_at:?}"
    );
    let (mut last, last_http) = env.start_worker(&sink.url()).await.unwrap();
    e2e::poll_until(WAIT * 2, || async {
        (tally(&sink.emails()).len() >= N).then_some(())
    })
    .await;
    // Repeats, if any: once the worker is stopped, what the server holds is final.
    env.stop_when_idle(&mut last, &last_http).await.unwrap();
    let counts = tally(&sink.emails());
    let dups = duplicates(&counts);
    let (_, different) = repeats_are_identical(&sink);
    println!(
        "SIGKILL x3 during {N} jobs (emails at each kill: {killed_at:?}): {} delivered, {dups} \
         duplicate(s), {} of them different from the first copy",
        counts.len(),
        different.len()
    );
    assert_eq!(counts.len(), N, "every job delivered");
    // A repeat is possible only for a send the server accepted in the instant before the
    // worker recorded it: at most the sends in flight (16) at each of the three kills; and it
    // is the same message, byte for byte.
    assert!(dups <= 3 * 16, "{dups} duplicates");
    assert!(different.is_empty(), "repeats that differ: {different:?}");
}

/// Forgot-password requests for `<prefix><i>@example.org`, `i` in `range`, spread `every`
/// apart from `started`; each with its status (0: no answer) and when it came.
fn forgot_load(
    client: &reqwest::Client,
    base: &str,
    prefix: &'static str,
    range: std::ops::Range<usize>,
    every: Duration,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<(String, u16, Duration)>> {
    range
        .enumerate()
        .map(|(k, i)| {
            let client = client.clone();
            let url = format!("{base}/v1/password/forgot");
            tokio::spawn(async move {
                tokio::time::sleep_until((started + every * k as u32).into()).await;
                let email = format!("{prefix}{i}@example.org");
                let status = client
                    .post(&url)
                    .json(&json!({ "email": email }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (email, status, started.elapsed())
            })
        })
        .collect()
}

/// What a load was answered.
struct Answers {
    accepted: HashSet<String>,
    refused: HashSet<String>,
    /// When the first and the last 503 came (since the load started).
    first_refusal: Option<Duration>,
    last_refusal: Duration,
}

/// Collects the answers of [`forgot_load`]; anything but 202 or 503 fails the test.
async fn answers(tasks: Vec<tokio::task::JoinHandle<(String, u16, Duration)>>) -> Answers {
    let mut out = Answers {
        accepted: HashSet::new(),
        refused: HashSet::new(),
        first_refusal: None,
        last_refusal: Duration::ZERO,
    };
    for t in tasks {
        let (email, status, at) = t.await.unwrap();
        match status {
            202 => {
                out.accepted.insert(email);
            }
            503 => {
                out.refused.insert(email);
                out.first_refusal = Some(out.first_refusal.map_or(at, |f| f.min(at)));
                out.last_refusal = out.last_refusal.max(at);
            }
            other => panic!("{email}: answered {other} (only 202 or 503 are acceptable)"),
        }
    }
    out
}

/// Every copy sent to one address is the same message (a repeat, never a different email).
fn repeats_are_identical(sink: &SmtpSink) -> (usize, Vec<String>) {
    let mut by_recipient: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for email in sink.emails() {
        by_recipient
            .entry(email.rcpt_to())
            .or_default()
            .push(email.as_sent());
    }
    let repeats = by_recipient.values().map(|c| c.len() - 1).sum();
    let different = by_recipient
        .iter()
        .filter(|(_, copies)| copies.iter().any(|c| *c != copies[0]))
        .map(|(to, _)| to.clone())
        .collect();
    (repeats, different)
}

#[tokio::test]
async fn a_cluster_node_killed_under_load_or_holding_waiting_retries_loses_no_accepted_email() {
    let cluster = e2e::broker::BrokerCluster::start(3).await.unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("AMQP_URL", &cluster.amqp_urls());
    env.set("MAIL_RETRY_SCHEDULE_SECS", "4");
    let (api, base) = env.start_api().await.unwrap();
    let (worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    const N_LOAD: usize = 400;
    seed_users(&env, "node", N_LOAD + 1000).await;
    seed_users(&env, "retry", 20).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The api connects when it first publishes.
    let r = client
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "node0@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // 1. ~6 s of forgot-password requests; the node holding the api's connection is killed
    // (SIGKILL) after 2 s.
    let victim = cluster.nodes_of_connection("api").await.unwrap();
    assert_eq!(victim.len(), 1, "one api connection: {victim:?}");
    let victim = victim[0];
    let started = Instant::now();
    let tasks = forgot_load(
        &client,
        &base,
        "node",
        1..N_LOAD,
        Duration::from_millis(15),
        started,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[victim].kill().await.unwrap();
    let killed_at = started.elapsed();
    let Answers {
        mut accepted,
        refused,
        first_refusal,
        last_refusal,
    } = answers(tasks).await;
    accepted.insert("node0@example.org".to_owned());
    // Until the api accepts again (if it stopped).
    let mut next = N_LOAD;
    let accepting_at = loop {
        let email = format!("node{next}@example.org");
        next += 1;
        let r = client
            .post(format!("{base}/v1/password/forgot"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            accepted.insert(email);
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(20) {
            for node in &cluster.nodes {
                println!("==== {}\n{}", node.name(), node.log_tail(40));
            }
            panic!("never accepting again");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("accepting again at {:.1} s", accepting_at.as_secs_f64());
    assert!(wait_ready(&client, &base).await, "api never ready again");
    assert!(
        wait_ready(&client, &worker_http).await,
        "worker never ready again"
    );
    let recovered_at = started.elapsed();
    let _ = sink.wait_for(accepted.len(), WAIT).await;
    // Stragglers and repeats: once nothing is queued or held, what the server holds is final.
    env.wait_idle(&[&worker_http]).await.unwrap();
    let counts = tally(&sink.emails());
    let missing: Vec<_> = accepted
        .iter()
        .filter(|e| !counts.contains_key(*e))
        .collect();
    let (repeats, different) = repeats_are_identical(&sink);
    println!(
        "node {victim} (holding the api's connection) killed at {:.1} s: {} × 202, {} × 503 \
         (answered from {:.1} s to {:.1} s), both services ready at {:.1} s; {} emails, \
         {} repeats",
        killed_at.as_secs_f64(),
        accepted.len(),
        refused.len(),
        first_refusal.unwrap_or_default().as_secs_f64(),
        last_refusal.as_secs_f64(),
        recovered_at.as_secs_f64(),
        sink.emails().len(),
        repeats
    );
    assert!(
        missing.is_empty(),
        "accepted but never delivered: {missing:?}"
    );
    assert!(different.is_empty(), "repeats that differ: {different:?}");
    let live = cluster.nodes[(victim + 1) % 3].amqp_url();
    assert_eq!(dead_letter_count(&env, Some(&live)).await, 0);

    // 2. The killed node comes back; then the node leading the delay queue dies while every
    // job of a batch waits there for its retry.
    cluster.nodes[victim].restart().await.unwrap();
    let delay_queue = env.topology().retry_queue(4);
    // Asked before the batch: `rabbitmqctl` takes about as long as a retry waits, and a
    // quorum queue's leader moves only when it fails.
    let leader = cluster.leader_of(&delay_queue).await.unwrap();
    let live = cluster.nodes[(leader + 1) % 3].amqp_url();
    sink.set_mode(json!({ "data_code": 451, "fail_times": 20 }))
        .await
        .unwrap();
    let before = sink.emails().len();
    let tasks = forgot_load(
        &client,
        &base,
        "retry",
        0..20,
        Duration::ZERO,
        Instant::now(),
    );
    for t in tasks {
        assert_eq!(t.await.unwrap().1, 202);
    }
    let accepted_at = Instant::now();
    // Every job of the batch was refused once (451) and waits out its 4 s in the delay
    // queue; none went out. Then, at once, the delay queue's leader dies.
    let waiting = e2e::poll_until(Duration::from_secs(20), || async {
        let n = env.ready_in_on(&live, &delay_queue).await.ok()?;
        (n >= 20).then_some(n)
    })
    .await;
    let sent_before_kill = sink.emails().len() - before;
    let state = sink.state().await.unwrap();
    assert_eq!(
        waiting,
        Some(20),
        "the 20 jobs wait in {delay_queue}; SMTP server: {state}; worker: {:?}",
        worker.output().iter().rev().take(5).collect::<Vec<_>>()
    );
    assert_eq!(sent_before_kill, 0, "delivered before the kill: {state}");
    assert_eq!(state["rejected_data"], 20, "{state}");
    let kill_after = accepted_at.elapsed();
    cluster.nodes[leader].kill().await.unwrap();

    // Each job comes back from the surviving copies of the delay queue and goes out.
    let retried = |emails: &[e2e::stack::StoredEmail]| {
        let counts = tally(emails);
        (0..20)
            .filter(|i| counts.contains_key(&format!("retry{i}@example.org")))
            .count()
    };
    let arrived = e2e::poll_until(WAIT, || async {
        (retried(&sink.emails()) == 20).then_some(())
    })
    .await;
    // Stragglers and repeats: once nothing is queued or held, what the server holds is final.
    env.wait_idle(&[&worker_http]).await.unwrap();
    let emails = sink.emails();
    let counts = tally(&emails);
    let copies: Vec<usize> = (0..20)
        .map(|i| {
            counts
                .get(&format!("retry{i}@example.org"))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let (_, different) = repeats_are_identical(&sink);
    println!(
        "delay queue leader (node {leader}) killed {:.1} s after the batch was accepted, with \
         its 20 retries waiting there and none sent: {} of 20 delivered, copies per job \
         {copies:?}",
        kill_after.as_secs_f64(),
        retried(&emails)
    );
    assert!(
        arrived.is_some(),
        "{} of 20 delivered; worker: {:?}; api: {:?}",
        retried(&emails),
        worker.output().iter().rev().take(5).collect::<Vec<_>>(),
        api.output().iter().rev().take(5).collect::<Vec<_>>()
    );
    assert!(
        copies.iter().all(|&n| n == 1),
        "each retried job arrives once: {copies:?}"
    );
    assert!(different.is_empty(), "repeats that differ: {different:?}");
    assert_eq!(
        dead_letter_count(&env, Some(&live)).await,
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test]
async fn an_api_killed_between_the_commit_and_the_publish_of_a_reset_loses_neither_notice_nor_event()
 {
    use lapin::{
        options::{QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    };
    let sink = SmtpSink::start().await.unwrap();
    let broker = e2e::amqp_url();
    let host_port = broker
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let proxy = FaultProxy::start(&host_port).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // The api reaches the broker through the proxy; the worker directly.
    env.set(
        "AMQP_URL",
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()),
    );
    let (api, base) = env.start_api().await.unwrap();
    let (mut worker, worker_http) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("AMQP_URL", &broker),
        ])
        .await
        .unwrap();
    let password = "correct horse battery staple 42";
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", password)
        .await
        .unwrap();
    let token = env
        .reset_token(&base, &sink, "ann@example.org")
        .await
        .unwrap();
    // Another service's queue for the event.
    let reader = QueueReader::connect().await.unwrap();
    let probe = format!("{}events-probe", env.namespace);
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongLongInt(120_000));
    reader
        .channel()
        .queue_declare(probe.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    reader
        .channel()
        .queue_bind(
            probe.as_str().into(),
            env.topology().events_exchange().into(),
            shared::topology::PASSWORD_RESET_EVENT.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // The broker out of the api's reach: the reset commits and answers, the relay cannot
    // publish; then the api dies (SIGKILL) with the notice and the event unpublished.
    proxy.cut();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/password/reset"))
        .json(&json!({ "token": token, "new_password": "plaid zebra umbrella tangerine 97" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", api.output());
    let mut api = api;
    api.child.kill().await.unwrap();
    let waiting = outbox_rows(&env).await;
    assert_eq!(waiting, 2, "the event and the notice wait in the outbox");

    // Back: a new api process relays what the dead one committed.
    proxy.restore();
    let (_api, _) = env.start_api().await.unwrap();
    let notice = sink
        .wait_for_email("ann@example.org", "password was changed", WAIT)
        .await;
    assert!(notice.is_some(), "no notice; worker: {:?}", worker.output());
    // Repeats, if any: the relay is done once the outbox is empty, and once the worker is
    // stopped, what the server holds is final.
    let relayed = e2e::poll_until(WAIT, || async {
        (outbox_rows(&env).await == 0).then_some(())
    })
    .await;
    assert!(relayed.is_some(), "the outbox never emptied");
    env.stop_when_idle(&mut worker, &worker_http).await.unwrap();
    let notices = sink
        .emails()
        .iter()
        .filter(|e| e.subject().contains("password was changed"))
        .count();
    let events = reader.drain(&probe).await.unwrap();
    println!(
        "api killed after the commit: {notices} notice(s), {} event(s), {} outbox rows left",
        events.len(),
        outbox_rows(&env).await
    );
    assert_eq!(notices, 1, "the notice arrives exactly once");
    assert_eq!(events.len(), 1, "the event arrives exactly once");
    let event: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(event["password_version"], 2);
    assert_eq!(outbox_rows(&env).await, 0);
}

async fn outbox_rows(env: &StackEnv) -> i64 {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mut db)
        .await
        .unwrap()
}
