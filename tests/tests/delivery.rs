//! The worker's delivery guarantees against a real, fault-injecting SMTP server: retries with
//! backoff, dead letters with their reasons, replay, outages, crashes, competing consumers.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    notice_jobs, publish_raw_jobs,
    stack::{SmtpSink, StackEnv, tally, wait_outcome},
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn dead_letters(env: &StackEnv) -> Vec<Value> {
    let (ok, lines) = env.worker_command(&["dlq", "list"]).await.unwrap();
    assert!(ok, "{lines:?}");
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("bytes").is_some())
        .collect()
}

#[tokio::test]
async fn a_temporary_failure_is_retried_on_schedule_and_delivered_exactly_once() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "data_code": 451, "fail_times": 2 }))
        .await
        .unwrap();
    let env = StackEnv::new().await.unwrap();
    let (mut worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    let started = std::time::Instant::now();
    publish_raw_jobs(&env.topology(), &notice_jobs("retry", 1))
        .await
        .unwrap();
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1);
    // Two refusals, each followed by a ~1 s delay queue (schedule 1,1,1, jitter 80-100 %).
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let state = sink.state().await.unwrap();
    assert_eq!(state["rejected_data"], 2);
    assert_eq!(state["accepted"], 1);
    // Once the worker is idle and stopped, nothing more can come of the job.
    env.stop_when_idle(&mut worker, &worker_http).await.unwrap();
    assert_eq!(sink.emails().len(), 1, "no second copy");
    assert!(dead_letters(&env).await.is_empty());
}

/// A worker whose every send gets a permanent refusal (a policy 550, which suppresses no
/// address), `n` notice jobs published to it, and their dead letters once all of them are
/// there.
async fn bounced(prefix: &str, n: usize) -> (SmtpSink, StackEnv, e2e::ServiceProcess, Vec<Value>) {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "data_code": 550, "data_message": "5.7.1 message refused" }))
        .await
        .unwrap();
    let env = StackEnv::new().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs(prefix, n))
        .await
        .unwrap();
    let letters = e2e::poll_until(WAIT, || async {
        let l = dead_letters(&env).await;
        (l.len() == n).then_some(l)
    })
    .await
    .expect("every job dead-lettered");
    (sink, env, worker, letters)
}

#[tokio::test]
async fn a_permanent_failure_goes_straight_to_the_dead_letters_and_replay_delivers_it() {
    let (sink, env, _worker, letters) = bounced("bounce", 2).await;
    for letter in &letters {
        let reason = letter["reason"].as_str().unwrap();
        assert!(reason.contains("550"), "{reason}");
        assert_eq!(letter["kind"], "account_exists_notice");
        assert_eq!(letter["attempts"].as_array().unwrap().len(), 1, "{letter}");
    }
    let state = sink.state().await.unwrap();
    assert_eq!(state["rejected_data"], 2, "no retry after a 5xx");

    // The mailbox is fixed; replay one by id, then the rest.
    sink.set_mode(json!({})).await.unwrap();
    let first = letters[0]["id"].as_str().unwrap();
    let (ok, out) = env
        .worker_command(&["dlq", "replay", "--id", first])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1);
    assert!(
        emails[0].message_id().starts_with(first),
        "{} vs {first}",
        emails[0].message_id()
    );
    assert_eq!(dead_letters(&env).await.len(), 1);
    // The dlq commands read only the database's and the broker's settings: no secret, no
    // SMTP, no public URL.
    let only = [
        "DATABASE_URL",
        "AMQP_URL",
        "BROKER_NAMESPACE",
        "MAIL_RETRY_SCHEDULE_SECS",
        "BROKER_QUEUE_EXPIRES_MS",
    ];
    let minimal: Vec<(String, String)> = env
        .vars
        .iter()
        .filter(|(k, _)| only.contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(minimal.len(), only.len());
    // Run from an empty directory: no `.env` there or above it fills in anything.
    let empty = std::env::temp_dir().join(format!("pwr-empty-{}", e2e::unique_id()));
    std::fs::create_dir_all(&empty).unwrap();
    let replay = tokio::process::Command::new(e2e::workspace_binary("mail-worker"))
        .args(["dlq", "replay", "--all"])
        .current_dir(&empty)
        .env_clear()
        .envs(minimal)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&empty);
    assert!(replay.status.success(), "{replay:?}");
    assert_eq!(sink.wait_for(2, WAIT).await.len(), 2);
    assert!(dead_letters(&env).await.is_empty());
    let (ok, _) = env
        .worker_command(&["dlq", "replay", "--id", "no-such-id"])
        .await
        .unwrap();
    assert!(!ok, "replaying an unknown id is an error");
}

#[tokio::test]
async fn jobs_wait_out_an_smtp_outage_and_are_all_delivered() {
    let mut sink = SmtpSink::start().await.unwrap();
    let port = sink.smtp_port;
    let dir = sink.dir.clone();
    let mut env = StackEnv::new().await.unwrap();
    env.set("MAIL_RETRY_SCHEDULE_SECS", "1,2,3,5,10");
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    sink.stop().await;
    publish_raw_jobs(&env.topology(), &notice_jobs("outage", 20))
        .await
        .unwrap();
    // Every job failed at least once against the stopped server.
    assert!(wait_outcome(&worker_http, "retried", 20, WAIT).await >= 20);
    assert!(sink.emails().is_empty());
    let sink = SmtpSink::start_on(port, Some(dir)).await.unwrap();
    let emails = sink.wait_for(20, WAIT).await;
    let counts = tally(&emails);
    assert_eq!(counts.len(), 20, "every job delivered");
    assert!(
        counts.values().all(|&n| n == 1),
        "no duplicates: {counts:?}"
    );
    assert!(
        dead_letters(&env).await.is_empty(),
        "none lost to the dead letters"
    );
}

#[tokio::test]
async fn garbage_on_the_queue_is_dead_lettered_and_the_next_job_still_goes_out() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let mut bodies = vec![b"{not json".to_vec(), vec![0xff, 0x00, 0x13]];
    bodies.extend(notice_jobs("after-garbage", 1));
    publish_raw_jobs(&env.topology(), &bodies).await.unwrap();
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);
    let letters = e2e::poll_until(WAIT, || async {
        let l = dead_letters(&env).await;
        (l.len() == 2).then_some(l)
    })
    .await
    .expect("both garbage messages dead-lettered");
    assert!(
        letters
            .iter()
            .all(|l| l["reason"].as_str().unwrap().starts_with("undecodable"))
    );
    assert!(
        worker
            .output()
            .iter()
            .any(|l| l.contains("undecodable job")),
        "the worker logs it and keeps going"
    );
}

#[tokio::test]
async fn two_workers_share_the_queue_and_deliver_every_job_once() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "delay_ms": 20 })).await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (a, a_http) = env.start_worker(&sink.url()).await.unwrap();
    let (b, b_http) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("shared", 200))
        .await
        .unwrap();
    let emails = sink.wait_for(200, WAIT).await;
    env.wait_idle(&[&a_http, &b_http]).await.unwrap();
    let counts = tally(&sink.emails());
    assert_eq!(counts.len(), 200);
    assert!(
        counts.values().all(|&n| n == 1),
        "a job was delivered twice"
    );
    assert_eq!(emails.len(), 200);
    let done = |w: &e2e::ServiceProcess| {
        w.output()
            .iter()
            .filter(|l| l.contains("\"job done\""))
            .count()
    };
    assert!(
        done(&a) > 0 && done(&b) > 0,
        "both workers took jobs: {} / {}",
        done(&a),
        done(&b)
    );
    assert_eq!(done(&a) + done(&b), 200);
}

#[tokio::test]
async fn a_worker_killed_mid_flight_loses_nothing_when_restarted() {
    let sink = SmtpSink::start().await.unwrap();
    // Slow replies keep many sends in flight when the worker dies.
    sink.set_mode(json!({ "delay_ms": 50 })).await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (mut worker, _) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("crash", 200))
        .await
        .unwrap();
    let _ = sink.wait_for(40, WAIT).await;
    worker.child.start_kill().unwrap(); // SIGKILL
    worker.child.wait().await.unwrap();
    let before_restart = sink.emails().len();
    assert!(
        before_restart < 200,
        "the kill came too late to test anything"
    );
    let (mut restarted, restarted_http) = env.start_worker(&sink.url()).await.unwrap();
    let _ = sink.wait_for(200, WAIT).await;
    // Every job has gone out: once stopped, the worker can send no more.
    env.stop_when_idle(&mut restarted, &restarted_http)
        .await
        .unwrap();
    let counts = tally(&sink.emails());
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "SIGKILL with 200 jobs in flight: delivered {} distinct, {duplicates} duplicate(s), {before_restart} before the restart",
        counts.len()
    );
    assert_eq!(counts.len(), 200, "every job delivered after the restart");
    // Only a send that completed in the instant between the server's 250 and the worker's
    // delivery record can repeat; never more than the jobs in flight.
    assert!(duplicates <= 16, "{duplicates} duplicates");
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_worker_reconnects_to_rabbitmq_by_itself_and_loses_nothing() {
    let sink = SmtpSink::start().await.unwrap();
    let proxy = e2e::FaultProxy::start(&host_port(&e2e::amqp_url()))
        .await
        .unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set(
        "AMQP_URL",
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()),
    );
    let (_worker, http) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("before", 5))
        .await
        .unwrap();
    assert_eq!(sink.wait_for(5, WAIT).await.len(), 5);

    proxy.cut();
    let client = reqwest::Client::new();
    let not_ready = e2e::poll_until(WAIT, || async {
        let r = client.get(format!("{http}/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(not_ready.is_some(), "readiness reflects the lost broker");
    // The api keeps publishing to the (real) broker meanwhile.
    publish_raw_jobs(&env.topology(), &notice_jobs("during", 10))
        .await
        .unwrap();
    // They wait in the queue (with any of the first five whose ack the cut lost).
    let waiting = env.ready_jobs_on(&e2e::amqp_url()).await.unwrap();
    assert!((10..=15).contains(&waiting), "{waiting} jobs waiting");
    assert_eq!(sink.emails().len(), 5);

    proxy.restore();
    let emails = sink.wait_for(15, WAIT).await;
    let counts = tally(&emails);
    assert_eq!(counts.len(), 15, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let ready = e2e::poll_until(WAIT, || async {
        let r = client.get(format!("{http}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some());
}

#[tokio::test]
async fn sigterm_stops_consuming_finishes_in_flight_sends_and_exits_zero() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "delay_ms": 1500 })).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("WORKER_CONCURRENCY", "4");
    let (mut worker, _) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("drain", 10))
        .await
        .unwrap();
    // Wait until four sends are waiting for the server's answer.
    let busy = e2e::poll_until(WAIT, || async {
        let state = sink.state().await.ok()?;
        (state["open_connections"].as_u64()? >= 4).then_some(())
    })
    .await;
    assert!(busy.is_some());
    let status = worker.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status:?}: {:?}", worker.output());
    let delivered_by_first = sink.emails().len();
    assert_eq!(
        delivered_by_first, 4,
        "the four in-flight sends finished before exit"
    );
    assert!(
        worker
            .output()
            .iter()
            .any(|l| l.contains("mail-worker stopped"))
    );

    sink.set_mode(json!({})).await.unwrap();
    let (_next, next_http) = env.start_worker(&sink.url()).await.unwrap();
    let emails = sink.wait_for(10, WAIT).await;
    env.wait_idle(&[&next_http]).await.unwrap();
    let counts = tally(&sink.emails());
    assert_eq!(counts.len(), 10);
    assert_eq!(
        emails.len(),
        10,
        "the rest went back to the queue, not lost, not doubled"
    );
}

#[tokio::test]
async fn the_file_transport_writes_one_eml_per_email() {
    let dir = std::env::temp_dir().join(format!("pwr-files-{}", e2e::unique_id()));
    let env = StackEnv::new().await.unwrap();
    let dir_str = dir.to_str().unwrap().to_owned();
    let (_worker, _) = env
        .start_worker_with(&[("MAIL_TRANSPORT", "file"), ("MAIL_FILE_DIR", &dir_str)])
        .await
        .unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("file", 3))
        .await
        .unwrap();
    let files = e2e::poll_until(WAIT, || async {
        let files: Vec<_> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        (files.len() == 3).then_some(files)
    })
    .await
    .expect("three .eml files");
    for i in 0..3 {
        assert!(
            files
                .iter()
                .any(|f| f.contains(&format!("file-{i}@example.org")))
        );
    }
    assert!(files.iter().all(|f| f.contains("multipart/alternative")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn smtp_credentials_are_used_but_never_logged() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let url = format!("smtp://apikey:s3cr3t-Pa55word@127.0.0.1:{}", sink.smtp_port);
    let (worker, _) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &url),
            ("SMTP_TIMEOUT_SECS", "5"),
        ])
        .await
        .unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("auth", 1))
        .await
        .unwrap();
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1, "{:?}", worker.output());
    assert_eq!(
        emails[0].header("X-Sink-Auth-User").as_deref(),
        Some("apikey"),
        "the worker authenticated"
    );
    let logs = worker.output().join("\n");
    assert!(!logs.contains("s3cr3t-Pa55word"), "{logs}");
}

#[tokio::test]
async fn a_notice_of_a_password_change_that_was_undone_is_not_sent() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    // The api's migrations give the worker its schema.
    let (_api, _) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    // Both accounts are at version 3. For `undone`, version 2 was a reset undone after its
    // notice could not be confirmed (the undo moved the version on to 3); for `later`,
    // version 2 stood and a later change made it 3.
    let mut notices = Vec::new();
    for (email, undone) in [
        ("undone@example.org", vec![2]),
        ("later@example.org", vec![]),
    ] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, password_version,
                                email_verified_at, undone_password_versions)
             VALUES ($1, $2, $2, 'x', 3, now(), $3)",
        )
        .bind(id)
        .bind(email)
        .bind(undone)
        .execute(&db)
        .await
        .unwrap();
        notices.push(
            shared::message::Envelope::new(
                shared::message::Job::PasswordChanged {
                    user_id: id,
                    email: email.to_owned(),
                    ip: None,
                    password_version: 2,
                },
                chrono::Utc::now(),
                chrono::Duration::hours(1),
                "en",
                shared::message::Trace::default(),
            )
            .encode(),
        );
    }
    publish_raw_jobs(&env.topology(), &notices).await.unwrap();
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails[0].rcpt_to(), "later@example.org");
    let dropped = e2e::poll_until(WAIT, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT outcome FROM audit_events WHERE outcome = 'dropped_rolled_back'",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await;
    assert!(dropped.is_some(), "the undone change's notice was dropped");
    assert_eq!(sink.emails().len(), 1, "no notice of the undone change");
}

#[tokio::test]
async fn a_repeat_after_a_lost_smtp_reply_is_byte_identical_and_its_link_works() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let password = "correct horse battery staple 42";
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", password)
        .await
        .unwrap();
    // The provider stores the next message but its reply never arrives: for the worker a
    // transient failure, so the job is retried; the user gets both copies.
    sink.set_mode(json!({ "store_then_drop": true, "fail_times": 1 }))
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "ann@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let copies = e2e::poll_until(WAIT, || async {
        let resets: Vec<_> = sink
            .emails()
            .into_iter()
            .filter(|e| e.subject().contains("Reset"))
            .collect();
        (resets.len() >= 2).then_some(resets)
    })
    .await
    .unwrap_or_else(|| panic!("no second copy; worker: {:?}", worker.output()));
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].message_id(), copies[1].message_id());
    assert!(
        copies[0].as_sent() == copies[1].as_sent(),
        "the repeat differs:\n{}\n---\n{}",
        String::from_utf8_lossy(&copies[0].as_sent()),
        String::from_utf8_lossy(&copies[1].as_sent())
    );
    // The copy delivered first (whose reply was lost) carries a link that works.
    let link = copies[0]
        .link(&format!("{}/reset-password?token=", env.public_base_url))
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/password/reset"))
        .json(&json!({
            "token": e2e::stack::token_of(&link),
            "new_password": "plaid zebra umbrella tangerine 97",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", api.output());
}

#[tokio::test]
async fn dead_letters_survive_being_listed_fifty_times_and_replay_delivers_every_one() {
    const N: usize = 12;
    let (sink, env, _worker, first) = bounced("dead", N).await;
    let ids = |letters: &[Value]| -> Vec<String> {
        letters
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Looking changes nothing: the same letters, in the same order, every time.
    for _ in 0..50 {
        assert_eq!(ids(&dead_letters(&env).await), ids(&first));
    }
    sink.set_mode(json!({})).await.unwrap();
    let (ok, out) = env
        .worker_command(&["dlq", "replay", "--all"])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let emails = sink.wait_for(N, WAIT).await;
    assert_eq!(emails.len(), N);
    let mut delivered: Vec<String> = emails
        .iter()
        .map(|e| e.message_id().split('@').next().unwrap().to_owned())
        .collect();
    delivered.sort();
    let mut expected = ids(&first);
    expected.sort();
    assert_eq!(delivered, expected, "each dead letter delivered once");
    assert!(dead_letters(&env).await.is_empty());
}

#[tokio::test]
async fn a_job_that_waited_for_a_send_slot_is_decided_on_the_account_as_it_is_then() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "delay_ms": 1500 })).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // One send at a time: the verification job below waits behind two slow notices, decided
    // (as a send) with the rest of its batch before its turn comes.
    env.set("WORKER_CONCURRENCY", "1");
    let (_api, _) = env.start_api().await.unwrap();
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash, password_version)
         VALUES ($1, 'late@example.org', 'late@example.org', 'x', 1)",
    )
    .bind(id)
    .execute(&db)
    .await
    .unwrap();
    let mut jobs = notice_jobs("ahead", 2);
    jobs.push(
        shared::message::Envelope::new(
            shared::message::Job::EmailVerification {
                user_id: id,
                email: "late@example.org".to_owned(),
                ip: None,
            },
            chrono::Utc::now(),
            chrono::Duration::hours(1),
            "en",
            shared::message::Trace::default(),
        )
        .encode(),
    );
    publish_raw_jobs(&env.topology(), &jobs).await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    // While the first notice is being sent, the address gets verified (by a link of an
    // earlier email, say): the queued verification email has become pointless.
    let busy = e2e::poll_until(WAIT, || async {
        let state = sink.state().await.ok()?;
        (state["open_connections"].as_u64()? >= 1).then_some(())
    })
    .await;
    assert!(busy.is_some());
    sqlx::query("UPDATE users SET email_verified_at = now() WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    let dropped = e2e::poll_until(WAIT, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT outcome FROM audit_events WHERE user_id = $1 AND outcome = 'dropped_already_verified'",
        )
        .bind(id)
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await;
    assert!(dropped.is_some(), "the verification job was decided again");
    let emails = sink.wait_for(2, WAIT).await;
    assert_eq!(emails.len(), 2);
    assert!(
        emails.iter().all(|e| e.rcpt_to() != "late@example.org"),
        "no verification email for a verified address"
    );
}

/// Runs `mail-worker dlq discard <args>` with the stack's settings: (exit code, output).
async fn discard(env: &StackEnv, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(e2e::workspace_binary("mail-worker"))
        .arg("dlq")
        .arg("discard")
        .args(args)
        .env_clear()
        .env("USER", "sam")
        .envs(env.vars.iter().cloned())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The worker's `pwrecovery_mail_dead_letters` (refreshed every 10 s).
async fn dead_letter_gauge(worker_http: &str) -> Option<f64> {
    e2e::stack::metrics_text(worker_http)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("pwrecovery_mail_dead_letters "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn dead_letters_are_discarded_by_id_or_age_audited_and_the_count_falls() {
    let sink = SmtpSink::start().await.unwrap();
    sink.set_mode(json!({ "data_code": 550, "data_message": "5.7.1 message refused" }))
        .await
        .unwrap();
    let env = StackEnv::new().await.unwrap();
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    publish_raw_jobs(&env.topology(), &notice_jobs("discard", 3))
        .await
        .unwrap();
    let letters = e2e::poll_until(WAIT, || async {
        let l = dead_letters(&env).await;
        (l.len() == 3).then_some(l)
    })
    .await
    .expect("every job dead-lettered");
    let counted = e2e::poll_until(WAIT, || async {
        (dead_letter_gauge(&worker_http).await? == 3.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the worker reports 3 dead letters");

    // Refused before anything is read or deleted: no selection, a zero age, an id no dead
    // letter can have. Usage errors: exit status 2, never a panic.
    for (args, expect) in [
        (&[][..], "--id"),
        (&["--older-than", "0"][..], "0 is not in 1..=36500"),
        (
            &["--older-than", "-3"][..],
            "invalid value '-3' for '--older-than <DAYS>'",
        ),
        (&["--older-than", "soon"][..], "invalid digit"),
        (&["--id", " "][..], "not a dead letter's id"),
        (&["--id", "two words"][..], "not a dead letter's id"),
        (
            &["--id", "x", "--older-than", "3"][..],
            "cannot be used with",
        ),
    ] {
        let (code, out) = discard(&env, args).await;
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(expect), "{args:?}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    // A well-formed id of no dead letter: an error, and nothing is deleted.
    let (code, out) = discard(&env, &["--id", "no-such-id"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no dead letter with id no-such-id"), "{out}");
    assert_eq!(dead_letters(&env).await.len(), 3);

    // By id: that one goes, the others stay.
    let first = letters[0]["id"].as_str().unwrap();
    let (code, out) = discard(&env, &["--id", first]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("discarded 1 dead letter(s)"), "{out}");
    let left = dead_letters(&env).await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|l| l["id"] != first));

    // By age: none is a day old yet; two days back in time, both are.
    let (code, out) = discard(&env, &["--older-than", "1"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("discarded 0 dead letter(s)"), "{out}");
    assert_eq!(dead_letters(&env).await.len(), 2);
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    sqlx::query("UPDATE dead_letters SET dead_at = dead_at - interval '2 days 1 hour'")
        .execute(&db)
        .await
        .unwrap();
    let (code, out) = discard(&env, &["--older-than", "2"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("discarded 2 dead letter(s)"), "{out}");
    assert!(dead_letters(&env).await.is_empty());

    // Each discard left an audit row: who, which, how many.
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_events WHERE action = 'dead_letter_discard' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        details,
        [
            "by: sam; id: no-such-id; discarded: 0".to_owned(),
            format!("by: sam; id: {first}; discarded: 1"),
            "by: sam; older than 1 days; discarded: 0".to_owned(),
            "by: sam; older than 2 days; discarded: 2".to_owned(),
        ]
    );
    // The running worker's count falls to 0 at its next report.
    let fallen = e2e::poll_until(WAIT, || async {
        (dead_letter_gauge(&worker_http).await? == 0.0).then_some(())
    })
    .await;
    assert!(
        fallen.is_some(),
        "{:?}",
        dead_letter_gauge(&worker_http).await
    );
    // Nothing of the discarded mail went out.
    assert!(sink.emails().is_empty());
}
