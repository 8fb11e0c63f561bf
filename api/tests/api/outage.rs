//! Dependencies going away and coming back: 503 with the JSON shape (never a 202 for a job
//! that was not confirmed, never a 500), then recovery without a restart.

use std::time::Duration;

use e2e::{FaultProxy, poll_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{STRONG, assert_error, spawn_with};

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn without_redis_requests_fail_closed_with_503_and_recover_when_it_returns() {
    let proxy = FaultProxy::start(&host_port(&e2e::redis_url()))
        .await
        .unwrap();
    let url = format!("redis://127.0.0.1:{}", proxy.port());
    let app = spawn_with(&[("REDIS_URL", url.as_str())]).await;
    app.create_user("ann@example.org", STRONG).await;
    assert_eq!(
        app.forgot("ann@example.org").await.status(),
        StatusCode::ACCEPTED
    );
    app.jobs(1).await;

    proxy.cut();
    let r = app.forgot("ann@example.org").await;
    assert!(r.headers().get("retry-after").is_some());
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = app
        .post(
            "/v1/sessions",
            json!({ "email": "ann@example.org", "password": STRONG }),
        )
        .await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": "a.b.c", "new_password": STRONG }),
        )
        .await;
    // Link endpoints count every request against the client's budget first: without Redis
    // that cannot be done, so even an unreadable token gets 503 (fail closed).
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = app.readiness().await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], false);
    assert!(
        app.drain_jobs().await.is_empty(),
        "no job without its rate-limit check"
    );

    proxy.restore();
    let back = poll_until(Duration::from_secs(15), || async {
        (app.forgot("ann@example.org").await.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert!(back.is_some(), "api did not recover after Redis came back");
    assert_eq!(app.readiness().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_rabbitmq_forgot_is_refused_sign_up_waits_in_the_outbox_and_both_resume() {
    let proxy = FaultProxy::start(&host_port(&e2e::amqp_url()))
        .await
        .unwrap();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let app = spawn_with(&[("AMQP_URL", url.as_str())]).await;
    assert_eq!(
        app.forgot("a@example.org").await.status(),
        StatusCode::ACCEPTED
    );
    app.jobs(1).await;

    proxy.cut();
    let r = app.forgot("a@example.org").await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = app
        .post(
            "/v1/users",
            json!({ "email": "new@example.org", "password": STRONG }),
        )
        .await;
    // A sign-up needs no broker to be accepted: the account and its verification job commit
    // together, and the outbox relays the job once the broker is back.
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.readiness().await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    proxy.restore();
    let back = poll_until(Duration::from_secs(20), || async {
        (app.forgot("a@example.org").await.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert!(back.is_some(), "api did not reconnect to RabbitMQ");
    let jobs = app.jobs(2).await;
    let mut kinds: Vec<&str> = jobs.iter().map(|j| j.envelope().job.kind()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["email_verification", "password_reset_requested"],
        "exactly the accepted requests produced jobs"
    );
    let ready = poll_until(Duration::from_secs(5), || async {
        (app.readiness().await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some());
}

#[tokio::test]
async fn the_api_starts_while_rabbitmq_is_down_and_answers_503() {
    let proxy = FaultProxy::start(&host_port(&e2e::amqp_url()))
        .await
        .unwrap();
    proxy.cut();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let app = spawn_with(&[("AMQP_URL", url.as_str())]).await;
    assert_error(
        app.forgot("a@example.org").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "alive, just not ready"
    );
    proxy.restore();
    let back = poll_until(Duration::from_secs(20), || async {
        (app.forgot("a@example.org").await.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert!(back.is_some());
}

#[tokio::test]
async fn a_reset_while_rabbitmq_is_unreachable_commits_and_its_notice_goes_out_once_it_is_back() {
    let proxy = FaultProxy::start(&host_port(&e2e::amqp_url()))
        .await
        .unwrap();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let app = spawn_with(&[("AMQP_URL", url.as_str())]).await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(shared::token::Purpose::PasswordReset, user).await;
    let new_password = "plaid zebra umbrella tangerine 97";

    proxy.cut();
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": new_password }),
        )
        .await;
    // The change, the event and the notice committed together; only the relay waits.
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.password_version(user).await, 2);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(waiting, 2, "the event and the notice wait in the outbox");
    let signed_in = app
        .post(
            "/v1/sessions",
            json!({ "email": "ann@example.org", "password": new_password }),
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::CREATED);

    proxy.restore();
    let jobs = app.jobs(1).await;
    assert_eq!(jobs[0].envelope().job.kind(), "password_changed");
    let emptied = poll_until(Duration::from_secs(10), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.state.db)
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "the relay deleted what the broker confirmed"
    );
}

#[tokio::test]
async fn the_api_starts_while_postgresql_is_down_and_migrates_once_it_is_back() {
    let server = host_port(&e2e::postgres_server_url());
    let proxy = FaultProxy::start(&server).await.unwrap();
    proxy.cut();
    let mut config = crate::helpers::test_config(&[]).await;
    config.common.database_url = config
        .common
        .database_url
        .replace(&server, &format!("127.0.0.1:{}", proxy.port()));
    let app = crate::helpers::spawn_config(config).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "alive");
    let r = app.readiness().await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], false);
    let r = app
        .post(
            "/v1/users",
            json!({ "email": "early@example.org", "password": STRONG }),
        )
        .await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;

    // Back: the pending migrations run by themselves, then the api is ready and works.
    proxy.restore();
    let ready = poll_until(Duration::from_secs(30), || async {
        (app.readiness().await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "ready once PostgreSQL is back and migrated"
    );
    app.create_user("early@example.org", STRONG).await;
    app.login("early@example.org", STRONG).await;
}

#[tokio::test]
async fn with_migrations_left_to_a_release_job_the_api_does_not_touch_the_schema() {
    // A database nobody migrated: the api starts and serves what needs no table.
    let app = spawn_with(&[("MIGRATE_ON_START", "false")]).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(tables, 0, "MIGRATE_ON_START=false ran no migration");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    // Until the release job has run, what needs a table answers 503, not 500.
    let r = app
        .post(
            "/v1/users",
            json!({ "email": "soon@example.org", "password": STRONG }),
        )
        .await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // `api migrate`'s work, then the api is ready and works.
    api::migrations::migrate(&app.state.db).await.unwrap();
    assert_eq!(app.readiness().await.status(), StatusCode::OK);
    app.create_user("soon@example.org", STRONG).await;
}
