//! The real api (two processes) and worker on a 3-primary Redis Cluster of real
//! `redis-server` processes (`REDIS_CLUSTER_URLS`): the whole flow, exact budgets across both
//! api processes, one winner of twenty submissions of one link, revoke-all on reset, and the
//! keys really spread over the primaries; the same on a cluster that speaks only TLS
//! (`rediss://`, clients, bus and replication, the test CA trusted through `TLS_CA_FILE`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    redis_cluster::RedisCluster,
    stack::{SmtpSink, StackEnv, token_of},
    tls::TestCa,
};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_whole_flow_and_exact_budgets_on_a_three_primary_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("REDIS_CLUSTER_URLS", &cluster.urls());
    whole_flow_and_exact_budgets(&cluster, env).await;
}

#[tokio::test]
async fn the_whole_flow_and_exact_budgets_on_a_tls_only_redis_cluster() {
    let ca = TestCa::new().unwrap();
    let cluster = RedisCluster::start_tls(3, &ca).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("REDIS_CLUSTER_URLS", &cluster.urls());
    env.set("TLS_CA_FILE", &ca.ca_file().display().to_string());
    whole_flow_and_exact_budgets(&cluster, env).await;
}

async fn whole_flow_and_exact_budgets(cluster: &RedisCluster, mut env: StackEnv) {
    let sink = SmtpSink::start().await.unwrap();
    // A REDIS_URL nobody listens on: everything must go through the cluster.
    env.set("REDIS_URL", "redis://127.0.0.1:1");
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "3");
    let (api_a, base_a) = env.start_api().await.unwrap();
    let (api_b, base_b) = env.start_api().await.unwrap();
    let (worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let post =
        |base: &str, path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let (old, new) = (
        "correct horse battery staple 42",
        "plaid zebra umbrella tangerine 97",
    );

    env.sign_up_and_verify(&base_a, &base_b, &sink, "ann@example.org", old)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}; api: {:?}; worker: {:?}",
                api_a.output(),
                worker.output()
            )
        });
    let sign_in = |base: String, password: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("{base}/v1/sessions"))
                .json(&json!({ "email": "ann@example.org", "password": password }))
                .send()
                .await
                .unwrap()
        }
    };
    let session: Value = sign_in(base_a.clone(), old).await.json().await.unwrap();
    let session = session["session"].as_str().unwrap().to_owned();
    let me = |base: String| {
        let http = http.clone();
        let session = session.clone();
        async move {
            http.get(format!("{base}/v1/me"))
                .bearer_auth(session)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(base_b.clone()).await, StatusCode::OK);

    // Twelve forgot-password requests at once, split over both api processes: exactly the
    // address's budget of three goes out.
    let forgot = join_all((0..12).map(|i| {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        post(
            base,
            "/v1/password/forgot",
            json!({ "email": "ann@example.org" }),
        )
    }))
    .await;
    assert!(
        forgot
            .iter()
            .all(|r| r.as_ref().unwrap().status() == StatusCode::ACCEPTED)
    );
    let resets = e2e::poll_until(WAIT, || async {
        let n = sink
            .emails()
            .iter()
            .filter(|e| e.subject().contains("Reset"))
            .count();
        (n >= 3).then_some(n)
    })
    .await
    .expect("reset emails");
    // All twelve jobs decided (three sent, nine over the budget): no other can come.
    let kind = Some("password_reset_requested");
    let settled = e2e::stack::wait_settled(&[&worker_http], kind, 12, WAIT).await;
    assert!(
        settled >= 12,
        "{settled} of 12 forgot-password jobs decided"
    );
    let reset_emails: Vec<_> = sink
        .emails()
        .into_iter()
        .filter(|e| e.subject().contains("Reset"))
        .collect();
    assert_eq!(
        (resets, reset_emails.len()),
        (3, 3),
        "the budget across both processes"
    );

    // The newest link (emails can arrive in another order than they were minted: the one the
    // reset page offers a form for); twenty submissions at once over both processes: one
    // winner.
    let mut usable = Vec::new();
    for email in &reset_emails {
        let link = email
            .link(&format!("{}/reset-password?token=", env.public_base_url))
            .unwrap();
        let token = token_of(&link);
        let page = http
            .get(format!("{base_a}/reset-password?token={token}"))
            .send()
            .await
            .unwrap();
        if page.status() == StatusCode::OK {
            usable.push(token);
        }
    }
    assert_eq!(usable.len(), 1, "only the newest link works");
    let token = usable.remove(0);
    let answers = join_all((0..20).map(|i| {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        post(
            base,
            "/v1/password/reset",
            json!({ "token": token, "new_password": new }),
        )
    }))
    .await;
    let statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    let won = statuses.iter().filter(|s| **s == 204).count();
    assert_eq!(
        won,
        1,
        "{statuses:?}\n{}",
        [api_a.output(), api_b.output()]
            .concat()
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("password/reset"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every session was revoked; the new password works on both processes.
    assert_eq!(me(base_a.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in(base_b.clone(), new).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        sign_in(base_a.clone(), old).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        sink.wait_for_email("ann@example.org", "password was changed", WAIT)
            .await
            .is_some()
    );
    // The keys live on every primary, not on one.
    let per_node = cluster.keys_per_node().await.unwrap();
    assert!(
        per_node.iter().all(|n| *n > 0),
        "keys per primary: {per_node:?}"
    );
    let logs = [api_a.output(), api_b.output(), worker.output()]
        .concat()
        .join("\n");
    assert!(!logs.contains("\"level\":\"ERROR\""), "{logs}");
}

#[tokio::test]
async fn a_primary_killed_under_traffic_fails_over_and_the_service_recovers_alone() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1).await.unwrap();
    assert!(cluster.is_primary(0).await.unwrap(), "node 0 is a primary");
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("REDIS_CLUSTER_URLS", &cluster.urls());
    env.set("REDIS_URL", "redis://127.0.0.1:1");
    let (api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    // Forgot-password requests for distinct addresses (keys on every slot range), one every
    // 50 ms for 16 s; the primary of a third of the slots dies after 3 s.
    let started = std::time::Instant::now();
    let mut answers: Vec<(Duration, StatusCode)> = Vec::new();
    let mut killed = None;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(16) {
        if killed.is_none() && started.elapsed() >= Duration::from_secs(3) {
            killed = Some((started.elapsed(), cluster.kill(0).await.unwrap()));
        }
        let r = http
            .post(format!("{base}/v1/password/forgot"))
            .json(&json!({ "email": format!("f{i}@example.org") }))
            .send()
            .await
            .unwrap();
        answers.push((started.elapsed(), r.status()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (killed_at, port) = killed.unwrap();
    let unavailable: Vec<Duration> = answers
        .iter()
        .filter(|(_, s)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(t, _)| *t)
        .collect();
    let other: Vec<&(Duration, StatusCode)> = answers
        .iter()
        .filter(|(_, s)| *s != StatusCode::ACCEPTED && *s != StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(other.is_empty(), "only 202 or 503: {other:?}");
    let window = match (unavailable.first(), unavailable.last()) {
        (Some(first), Some(last)) => format!(
            "503s from {:.1} s to {:.1} s after the kill",
            (first.saturating_sub(killed_at)).as_secs_f64(),
            (last.saturating_sub(killed_at)).as_secs_f64()
        ),
        _ => "no 503".to_owned(),
    };
    println!(
        "primary on port {port} killed at {:.1} s; {} requests, {} × 503; {window}",
        killed_at.as_secs_f64(),
        answers.len(),
        unavailable.len()
    );
    // Recovered by itself: the last five seconds were all answered.
    let tail: Vec<&(Duration, StatusCode)> = answers
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(11))
        .collect();
    assert!(!tail.is_empty());
    assert!(
        tail.iter().all(|(_, s)| *s == StatusCode::ACCEPTED),
        "not recovered: {window}; cluster:\n{}\napi: {:?}",
        cluster.nodes_view(1).await,
        api.output().iter().rev().take(8).collect::<Vec<_>>()
    );
    assert!(cluster.wait_healthy(1, Duration::from_secs(10)).await);
    // A whole sign-up and sign-in after the failover works.
    env.sign_up_and_verify(
        &base,
        &base,
        &sink,
        "after@example.org",
        "correct horse battery staple 42",
    )
    .await
    .unwrap();
}
