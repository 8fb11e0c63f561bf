//! Every outcome of a job, decided and settled by a worker started in-process: what reaches
//! the SMTP server, the audit row, and where the delivery goes (acked, a delay queue, the
//! dead letters).

use serde_json::json;
use shared::{
    audit::Outcome,
    clock::Clock as _,
    links,
    message::{Envelope, Job},
    token::{Claims, Purpose, TokenKeys},
};
use uuid::Uuid;

use crate::helpers::{PATIENCE, history, spawn, spawn_with};

fn reset_request(email: &str) -> Job {
    Job::PasswordResetRequested {
        email: email.into(),
        ip: Some("203.0.113.9".into()),
        within_budget: true,
        user_id: None,
    }
}

#[tokio::test]
async fn a_reset_for_a_known_address_is_sent_recorded_audited_and_acked() {
    let mut w = spawn().await;
    let user = w.add_user("ann@example.org", true).await;
    let job = w.job(reset_request("Ann@Example.org"));
    w.publish(&job).await;

    let email = w
        .sink
        .wait_for_email("ann@example.org", "", PATIENCE)
        .await
        .expect("the reset email arrives");
    let prefix = links::page("https://account.example.test", links::RESET_PASSWORD_PATH);
    let link = email.link(&prefix).expect("a reset link");
    let token = e2e::stack::token_of(&link);
    let keys = TokenKeys::new(w.config.token_secrets.clone(), w.config.token_digest).expect("keys");
    let verified = keys
        .verify::<Claims>(
            Purpose::PasswordReset,
            &token,
            w.clock.now().timestamp(),
            3600,
        )
        .expect("the link's token is ours, for a reset");
    assert_eq!(verified.value.uid, user);
    assert!(
        email.text().contains("203.0.113.9"),
        "the requesting IP is shown"
    );

    assert_eq!(w.outcome(&job).await, Outcome::Sent);
    assert!(w.marked_sent(&job).await, "the delivery is recorded");
    w.stop().await;
    assert_eq!(w.ready_in(&w.topology.jobs_queue()).await, 0, "acked");
    assert_eq!(w.sink.emails().len(), 1);
}

#[tokio::test]
async fn a_temporary_smtp_failure_parks_the_job_in_the_delay_queue_of_its_attempt() {
    let w = spawn().await;
    w.add_user("bob@example.org", true).await;
    w.sink
        .set_mode(json!({"data_code": 451}))
        .await
        .expect("sink mode");
    let first = w.job(reset_request("bob@example.org"));
    w.publish(&first).await;
    let parked = w.take(&w.topology.retry_queue(60), 1).await;
    assert_eq!(parked.len(), 1, "the first failure waits in the 60 s queue");
    let retried = parked[0].envelope();
    assert_eq!(retried.id, first.id);
    assert_eq!(retried.attempt, 1);
    let expiration: u64 = parked[0]
        .properties
        .expiration()
        .as_ref()
        .expect("a per-message TTL")
        .as_str()
        .parse()
        .expect("milliseconds");
    assert!((48_000..=60_000).contains(&expiration), "{expiration} ms");
    let history = history(&parked[0]);
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(
        history[0].starts_with("attempt 1 at ") && history[0].contains("451"),
        "{history:?}"
    );

    // Its next failure waits in the next queue of the schedule …
    w.publish(&retried).await;
    let parked = w.take(&w.topology.retry_queue(600), 1).await;
    assert_eq!(
        parked.len(),
        1,
        "the second failure waits in the 600 s queue"
    );
    let again = parked[0].envelope();
    assert_eq!(again.attempt, 2);

    // … and once the schedule is spent, it is a dead letter with the last error.
    w.publish(&again).await;
    let dead = w.dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].0.starts_with("retries exhausted after 3 attempts") && dead[0].0.contains("451"),
        "{dead:?}"
    );
    assert_eq!(dead[0].1.as_deref(), Some("password_reset_requested"));
    assert_eq!(w.outcome(&first).await, Outcome::Dead);
    assert!(w.sink.emails().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_and_an_undecodable_job_become_dead_letters_with_their_reason() {
    let w = spawn().await;
    w.add_user("gone@example.org", true).await;
    w.sink
        .set_mode(json!({"per_recipient": {"gone@example.org": "550 5.1.1 no such user"}}))
        .await
        .expect("sink mode");
    let job = w.job(reset_request("gone@example.org"));
    w.publish(&job).await;
    w.publish_raw(b"{\"not\": \"a job\"}", None).await;

    let dead = w.dead_letters(2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let bounced = dead
        .iter()
        .find(|(_, kind)| kind.as_deref() == Some("password_reset_requested"))
        .expect("the bounced job");
    assert!(bounced.0.contains("550"), "{bounced:?}");
    let undecodable = dead
        .iter()
        .find(|(reason, _)| reason.starts_with("undecodable"))
        .expect("the undecodable job");
    assert!(
        undecodable.0.contains("not a valid envelope"),
        "{undecodable:?}"
    );
    assert_eq!(w.outcome(&job).await, Outcome::Dead);
    assert_eq!(
        w.ready_in(&w.topology.retry_queue(60)).await,
        0,
        "not retried"
    );
}

#[tokio::test]
async fn jobs_of_a_newer_release_are_left_as_they_are_for_a_worker_that_knows_them() {
    let mut w = spawn().await;
    w.add_user("eve@example.org", true).await;
    let wire = |job: &Envelope, change: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&job.encode()).expect("json");
        change(&mut v);
        serde_json::to_vec(&v).expect("json")
    };
    let newer_kind = wire(&w.job(reset_request("eve@example.org")), &|v| {
        v["kind"] = "passkey_added_digest".into();
        v["payload"] = json!({"user_id": Uuid::nil(), "new_field": [1, 2, 3]});
    });
    let newer_version = wire(&w.job(reset_request("eve@example.org")), &|v| {
        v["version"] = 2.into();
        v["recipients"] = json!(["eve@example.org"]);
    });
    let useless = wire(&w.job(reset_request("eve@example.org")), &|v| {
        v["kind"] = "passkey_added_digest".into();
        v["not_after"] = json!(w.clock.now() - chrono::Duration::seconds(1));
    });
    let (held_before, expired_before) = (
        w.jobs_total("newer", "held_for_newer"),
        w.jobs_total("newer", "expired"),
    );
    for body in [&newer_kind, &newer_version, &useless] {
        w.publish_raw(body, None).await;
    }

    let held = w
        .take(
            &w.topology
                .budget_wait_queue(mail_worker::settlement::HOLD_FOR_NEWER_MS),
            2,
        )
        .await;
    let mut bodies: Vec<&[u8]> = held.iter().map(|r| r.body.as_slice()).collect();
    bodies.sort();
    let mut sent: Vec<&[u8]> = vec![&newer_kind, &newer_version];
    sent.sort();
    assert_eq!(bodies, sent, "left byte for byte as they came");
    for r in &held {
        assert_eq!(mail_worker::retry::held(r.properties.headers().as_ref()), 1);
    }
    let counted = e2e::poll_until(PATIENCE, || async {
        (w.jobs_total("newer", "expired") > expired_before).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the useless one is acked as any worker would"
    );
    assert_eq!(w.jobs_total("newer", "held_for_newer"), held_before + 2);
    w.stop().await;
    assert_eq!(
        w.ready_in(&w.topology.dead_queue()).await,
        0,
        "no dead letter"
    );
    assert!(w.dead_letters(0).await.is_empty());
    assert!(w.sink.emails().is_empty(), "nothing guessed at");
}

#[tokio::test]
async fn a_job_whose_redis_is_down_waits_without_spending_an_attempt() {
    let proxy = e2e::FaultProxy::start(&redis_host()).await.expect("proxy");
    let redis_url = format!("redis://127.0.0.1:{}", proxy.port());
    let w = spawn_with(&[("REDIS_URL", &redis_url)]).await;
    w.add_user("cat@example.org", true).await;
    proxy.cut();
    let job = w.job(reset_request("cat@example.org"));
    w.publish(&job).await;

    let parked = w.take(&w.topology.retry_queue(60), 1).await;
    assert_eq!(parked.len(), 1, "the job waits in the first delay queue");
    let waiting = parked[0].envelope();
    assert_eq!(waiting.id, job.id);
    assert_eq!(waiting.attempt, 0, "a wait is not a delivery attempt");
    assert_eq!(
        mail_worker::retry::waits(parked[0].properties.headers().as_ref()),
        1
    );
    let history = history(&parked[0]);
    assert!(
        history.len() == 1 && history[0].contains("waiting: idempotency check"),
        "{history:?}"
    );
    assert!(w.sink.emails().is_empty());
    assert!(
        w.audit_outcomes(&job, 0).await.is_empty(),
        "no decision yet"
    );
}

#[tokio::test]
async fn a_job_delivered_before_is_a_duplicate_and_sends_nothing() {
    let mut w = spawn().await;
    w.add_user("dan@example.org", true).await;
    let job = w.job(reset_request("dan@example.org"));
    let _: () = redis::cmd("SET")
        .arg(w.keys.job_sent(job.id))
        .arg(1)
        .query_async(&mut w.redis().await)
        .await
        .expect("mark sent");
    let before = w.jobs_total("password_reset_requested", "duplicate");
    w.publish(&job).await;
    let counted = e2e::poll_until(PATIENCE, || async {
        (w.jobs_total("password_reset_requested", "duplicate") > before).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the duplicate is counted");
    w.stop().await;
    assert_eq!(w.ready_in(&w.topology.jobs_queue()).await, 0, "acked");
    assert!(w.sink.emails().is_empty(), "nothing sent twice");
    assert!(
        w.audit_outcomes(&job, 0).await.is_empty(),
        "a repeat is no new decision"
    );
}

#[tokio::test]
async fn every_job_that_sends_nothing_is_audited_with_its_reason_and_acked() {
    let mut w = spawn_with(&[("MAIL_PER_RECIPIENT_PER_HOUR", "1")]).await;
    let verified = w.add_user("eve@example.org", true).await;
    let fresh = w.add_user("fay@example.org", false).await;
    let mut expected: Vec<(Envelope, Outcome)> = Vec::new();

    let mut over_budget = reset_request("eve@example.org");
    if let Job::PasswordResetRequested { within_budget, .. } = &mut over_budget {
        *within_budget = false;
    }
    expected.push((w.job(over_budget), Outcome::DroppedOverBudget));
    expected.push((
        w.job(reset_request("not an address")),
        Outcome::DroppedInvalidAddress,
    ));
    expected.push((
        w.job(reset_request("nobody@example.org")),
        Outcome::DroppedUnknown,
    ));
    expected.push((
        w.job(Job::EmailVerification {
            user_id: verified,
            email: "eve@example.org".into(),
            ip: None,
        }),
        Outcome::DroppedAlreadyVerified,
    ));
    expected.push((
        w.job(Job::EmailVerification {
            user_id: Uuid::now_v7(),
            email: "ghost@example.org".into(),
            ip: None,
        }),
        Outcome::DroppedUnknown,
    ));
    expected.push((
        w.job(Job::PasswordChanged {
            user_id: fresh,
            email: "fay@example.org".into(),
            ip: None,
            password_version: 2,
        }),
        Outcome::DroppedRolledBack,
    ));
    for (job, _) in &expected {
        w.publish(job).await;
    }
    // Two notices to one address with a budget of one: one goes out, one is refused.
    let notices = [(); 2].map(|()| {
        w.job(Job::AccountExistsNotice {
            email: "hal@example.org".into(),
            ip: None,
        })
    });
    for job in &notices {
        w.publish(job).await;
    }

    for (job, reason) in &expected {
        assert_eq!(w.outcome(job).await, *reason, "{:?}", job.job);
    }
    let notice_outcomes = [w.outcome(&notices[0]).await, w.outcome(&notices[1]).await];
    assert!(
        notice_outcomes.contains(&Outcome::Sent)
            && notice_outcomes.contains(&Outcome::RecipientBudget),
        "{notice_outcomes:?}"
    );
    w.stop().await;
    assert_eq!(w.ready_in(&w.topology.jobs_queue()).await, 0, "all acked");
    let emails = w.sink.emails();
    assert_eq!(emails.len(), 1, "only the one notice");
    assert_eq!(emails[0].rcpt_to(), "hal@example.org");
}

#[tokio::test]
async fn a_job_past_its_end_on_the_worker_clock_is_stale() {
    let w = spawn().await;
    w.add_user("jon@example.org", true).await;
    let job = w.job(reset_request("jon@example.org"));
    // The job lives an hour; the worker's clock moves an hour and a minute on.
    w.clock.advance(chrono::Duration::minutes(61));
    w.publish(&job).await;
    assert_eq!(w.outcome(&job).await, Outcome::Stale);
    assert!(w.sink.emails().is_empty());
}

#[tokio::test]
async fn a_retried_reset_whose_link_was_superseded_is_dropped() {
    let w = spawn().await;
    let user = w.add_user("ida@example.org", true).await;
    w.sink
        .set_mode(json!({"data_code": 451, "fail_times": 1}))
        .await
        .expect("sink mode");
    let job = w.job(reset_request("ida@example.org"));
    w.publish(&job).await;
    // The first attempt minted the link and failed; the job waits for its retry (taken out
    // of the delay queue here, so the test decides when it comes back).
    let parked = w.take(&w.topology.retry_queue(60), 1).await;
    assert_eq!(parked.len(), 1, "the first attempt failed");
    // The password changes before the retry.
    sqlx::query("UPDATE users SET password_version = password_version + 1 WHERE id = $1")
        .bind(user)
        .execute(&w.db)
        .await
        .expect("password change");
    w.publish(&parked[0].envelope()).await;

    assert_eq!(w.outcome(&job).await, Outcome::DroppedSuperseded);
    assert!(w.sink.emails().is_empty(), "a dead link is not sent");
}

fn redis_host() -> String {
    let url = url::Url::parse(&e2e::redis_url()).expect("redis url");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    )
}
