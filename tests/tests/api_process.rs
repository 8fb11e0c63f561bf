//! The real `api` binary, configured only by its environment: migrations by subcommand,
//! start-up, a request through to the broker, configuration errors and SIGTERM.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{QueueReader, ServiceProcess, workspace_binary};
use shared::{message::Job, topology::Topology};

fn base_env(database_url: &str, namespace: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url),
        ("REDIS_URL", &e2e::redis_url()),
        ("AMQP_URL", &e2e::amqp_url()),
        ("API_BIND", "127.0.0.1:0"),
        ("PUBLIC_BASE_URL", "https://account.example.test"),
        (
            "TOKEN_SECRETS",
            "e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        ),
        ("ARGON2_MEMORY_KIB", "64"),
        ("ARGON2_ITERATIONS", "1"),
        ("MAIL_RETRY_SCHEDULE_SECS", "1"),
        ("REDIS_KEY_PREFIX", &format!("{namespace}:")),
        ("BROKER_NAMESPACE", &format!("{namespace}.")),
        ("BROKER_QUEUE_EXPIRES_MS", "120000"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn the_api_binary_migrates_serves_publishes_and_stops_cleanly_on_sigterm() {
    let database_url = e2e::create_database().await.unwrap();
    let namespace = format!("e2e-{}", e2e::unique_id());
    let env = base_env(&database_url, &namespace);
    let api = workspace_binary("api");

    let mut migrate = ServiceProcess::spawn(&api, &["migrate"], &env).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), migrate.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{:?}", migrate.output());

    let mut process = ServiceProcess::spawn(&api, &[], &env).unwrap();
    let addr = process
        .wait_for_log_field("api listening", "addr", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no start-up line: {:?}", process.output()));
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let ready = e2e::poll_until(Duration::from_secs(20), || async {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready: {:?}", process.output());

    let r = client
        .post(format!("{base}/v1/password/forgot"))
        .json(&serde_json::json!({ "email": "someone@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let topology = Topology::new(format!("{namespace}."), &[1]);
    let reader = QueueReader::connect().await.unwrap();
    let jobs = reader
        .take(&topology.jobs_queue(), 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        matches!(jobs[0].envelope().job, Job::PasswordResetRequested { ref email, .. } if email == "someone@example.org")
    );

    let status = process.terminate(Duration::from_secs(15)).await.unwrap();
    e2e::delete_topology_blocking(&topology);
    assert!(status.success(), "exit status {status:?}");
    let logs = process.output().join("\n");
    assert!(logs.contains("api stopped"), "{logs}");
    // Logs never carry the address itself.
    assert!(!logs.contains("someone@example.org"), "{logs}");
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_variable_and_the_fix() {
    let mut env = base_env("postgres://127.0.0.1/x", "unused");
    env.retain(|(k, _)| k != "TOKEN_SECRETS");
    env.push(("TOKEN_SECRETS".into(), "too-short".into()));
    env.push(("RATE_LIMIT_IP_PER_HOUR".into(), "lots".into()));
    let mut process = ServiceProcess::spawn(&workspace_binary("api"), &[], &env).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), process.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = process.output().join("\n");
    assert!(out.contains("TOKEN_SECRETS: secret #1 is 9 bytes"), "{out}");
    assert!(out.contains("openssl rand -hex 32"), "{out}");
    assert!(
        out.contains("RATE_LIMIT_IP_PER_HOUR: expected a whole number"),
        "{out}"
    );
    assert!(
        !out.contains("too-short"),
        "a secret must not be echoed: {out}"
    );
}
