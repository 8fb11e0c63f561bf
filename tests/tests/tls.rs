//! The real api and worker on stores that speak only TLS, every certificate issued by a CA
//! this test made and trusted only through `TLS_CA_FILE`: a Redis node with no plain port
//! (`rediss://`), a private PostgreSQL accepting only `hostssl` (`sslmode=verify-full`), a
//! RabbitMQ node's TLS listener (`amqps://`) and an SMTP server that refuses mail before
//! STARTTLS. Then the machine's PostgreSQL with `sslmode=require` (its snakeoil certificate).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    broker::BrokerNode,
    stack::{SmtpSink, StackEnv},
    tls::{TestCa, TlsPostgres, TlsRedis},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn readiness(base: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn forgot_email_and_reset_run_over_tls_to_every_store_trusting_only_tls_ca_file() {
    let ca = TestCa::new().unwrap();
    let (redis, postgres, node) = tokio::join!(
        TlsRedis::start(&ca),
        TlsPostgres::start(&ca),
        BrokerNode::start_with_tls(&ca)
    );
    let (redis, postgres, node) = (redis.unwrap(), postgres.unwrap(), node.unwrap());
    postgres.create_database("pwr", &ca).await.unwrap();
    let cert = ca.cert_file().display().to_string();
    let key = ca.key_file().display().to_string();
    let sink = SmtpSink::start_with_args(&["--starttls-cert", &cert, "--starttls-key", &key])
        .await
        .unwrap();

    let mut env = StackEnv::new().await.unwrap();
    env.set(
        "DATABASE_URL",
        &format!("{}?sslmode=verify-full", postgres.url("pwr")),
    );
    env.set("REDIS_URL", &redis.url());
    env.set("AMQP_URL", &node.amqps_url().unwrap());
    env.set("TLS_CA_FILE", &ca.ca_file().display().to_string());
    let smtp_url = format!("smtp://localhost:{}?tls=required", sink.smtp_port);
    let (api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&smtp_url).await.unwrap();
    let ready = e2e::poll_until(Duration::from_secs(20), || async {
        let (status, _) = readiness(&base).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "api not ready: {:?}\n{:?}",
        readiness(&base).await,
        api.output()
    );

    let (old, new) = (
        "correct horse battery staple 42",
        "plaid zebra umbrella tangerine 97",
    );
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", old)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\napi: {:?}\nworker: {:?}",
                api.output(),
                worker.output()
            )
        });
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let token = env
        .reset_token(&base, &sink, "ann@example.org")
        .await
        .unwrap_or_else(|e| panic!("{e:#}; worker: {:?}", worker.output()));
    let r = post(
        "/v1/password/reset",
        json!({ "token": token, "new_password": new }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = post(
        "/v1/sessions",
        json!({ "email": "ann@example.org", "password": new }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        sink.wait_for_email("ann@example.org", "password was changed", WAIT)
            .await
            .is_some(),
        "{:?}",
        worker.output()
    );
    // The broker saw only TLS connections from the services (the node also has a plain
    // listener, which nothing of ours used).
    let connections = node.connections_tls().await.unwrap();
    assert!(
        connections.len() >= 2 && connections.iter().all(|tls| *tls),
        "{connections:?}"
    );
    // The dead-letter commands connect the same way.
    let (ok, output) = env.worker_command(&["dlq", "list"]).await.unwrap();
    assert!(ok, "{output:?}");

    // The same settings without TLS_CA_FILE: no store's certificate is trusted, so nothing
    // connects and the api says it is not ready (the webpki roots do not know the test CA).
    let mut untrusting = env.vars.clone();
    untrusting.retain(|(k, _)| k != "TLS_CA_FILE");
    let api2 = e2e::ServiceProcess::spawn(&e2e::workspace_binary("api"), &[], &untrusting).unwrap();
    // The full report is on the metrics listener (the public `/readyz` names no dependency).
    let addr = api2
        .wait_for_log_field("api metrics listening", "addr", WAIT)
        .await
        .unwrap_or_else(|| panic!("{:?}", api2.output()));
    let (status, body) = readiness(&format!("http://{addr}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["checks"],
        json!({ "postgres": false, "redis": false, "rabbitmq": false }),
        "{body}"
    );
    drop(redis);
}

#[tokio::test]
async fn the_api_uses_tls_to_the_local_postgresql_with_sslmode_require() {
    use sqlx::Connection as _;
    let mut env = StackEnv::new().await.unwrap();
    let direct = env.database_url.clone();
    env.set("DATABASE_URL", &format!("{direct}?sslmode=require"));
    let (api, base) = env.start_api().await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": "bo@example.org", "password": "correct horse battery staple 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", api.output());
    let database = direct.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&format!(
        "{}/postgres?sslmode=disable",
        e2e::postgres_server_url()
    ))
    .await
    .unwrap();
    let (connections, all_tls): (i64, Option<bool>) = sqlx::query_as(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(connections >= 1, "the api holds a connection to {database}");
    assert_eq!(
        all_tls,
        Some(true),
        "every connection of the api is encrypted"
    );
}
