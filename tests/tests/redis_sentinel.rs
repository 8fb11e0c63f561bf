//! The real api and worker on a Redis primary watched by three Sentinels
//! (`REDIS_SENTINEL_URLS`, `REDIS_SENTINEL_MASTER`): a failover forced through Sentinel is
//! followed without a restart, with plain TCP and with every server TLS-only (`rediss://`,
//! the test CA trusted through `TLS_CA_FILE`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    redis_sentinel::{MASTER, RedisSentinels},
    stack::{SmtpSink, StackEnv},
    tls::TestCa,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_failover_promoted_by_sentinel_is_followed_without_a_restart() {
    let set = RedisSentinels::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("REDIS_SENTINEL_URLS", &set.urls());
    failover_is_followed(&set, env).await;
}

#[tokio::test]
async fn a_failover_is_followed_over_tls_to_the_sentinels_and_the_primaries() {
    let ca = TestCa::new().unwrap();
    let set = RedisSentinels::start_tls(&ca).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("REDIS_SENTINEL_URLS", &set.urls());
    env.set("TLS_CA_FILE", &ca.ca_file().display().to_string());
    failover_is_followed(&set, env).await;
}

async fn failover_is_followed(set: &RedisSentinels, mut env: StackEnv) {
    let (first_primary, replica) = set.ports();
    let sink = SmtpSink::start().await.unwrap();
    env.set("REDIS_SENTINEL_MASTER", MASTER);
    env.set("REDIS_URL", "redis://127.0.0.1:1");
    let (api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let password = "correct horse battery staple 42";
    let forgot = |i: usize| {
        http.post(format!("{base}/v1/password/forgot"))
            .json(&json!({ "email": format!("s{i}@example.org") }))
            .send()
    };
    assert_eq!(forgot(0).await.unwrap().status(), StatusCode::ACCEPTED);
    assert!(set.keys_on(first_primary).await.unwrap() > 0);

    set.fail_over().await.unwrap();
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    let mut i = 1;
    while started.elapsed() < Duration::from_secs(8) {
        answers.push((started.elapsed(), forgot(i).await.unwrap().status()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = answers
        .iter()
        .filter(|(_, s)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    println!(
        "after the failover to port {replica}: {} requests, {refused} × 503; old primary now {}",
        answers.len(),
        set.role(first_primary).await.unwrap()
    );
    assert!(
        answers
            .iter()
            .all(|(_, s)| *s == StatusCode::ACCEPTED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    let tail: Vec<_> = answers
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(5))
        .collect();
    assert!(
        !tail.is_empty() && tail.iter().all(|(_, s)| *s == StatusCode::ACCEPTED),
        "not following the new primary: {answers:?}\n{:?}",
        api.output().iter().rev().take(5).collect::<Vec<_>>()
    );

    // The whole flow runs on the new primary.
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", password)
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "email": "ann@example.org", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(set.current_primary().await.unwrap(), replica);
    assert_eq!(set.role(replica).await.unwrap(), "master");
    // The writes go to the new primary, even while the old one is still up and still takes
    // writes (a forced failover leaves it running until Sentinel reconfigures it): twenty new
    // addresses are twenty new budget keys there.
    let before = set.keys_on(replica).await.unwrap();
    for n in 0..20 {
        assert_eq!(
            forgot(10_000 + n).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
    }
    let after = set.keys_on(replica).await.unwrap();
    assert!(after >= before + 20, "new primary: {before} → {after} keys");
}
