//! The real api and worker with `DATABASE_URL` through a PgBouncer in transaction pooling mode
//! (statement cache off, as documented), migrations over a direct connection
//! (`MIGRATE_DATABASE_URL`): the whole flow and the link race, and PgBouncer's admin console
//! shows that both services' work went through it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    pgbouncer::PgBouncer,
    stack::{SmtpSink, StackEnv},
};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_whole_flow_and_a_link_race_work_through_pgbouncer_in_transaction_mode() {
    let bouncer = PgBouncer::start(&host_port(&e2e::postgres_server_url()))
        .await
        .unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    let direct = env.database_url.clone();
    let database = direct.rsplit('/').next().unwrap().to_owned();
    let pooled = format!("{}?statement-cache-capacity=0", bouncer.url_for(&direct));
    // Each service names itself, so PgBouncer's list of clients tells them apart.
    env.set(
        "DATABASE_URL",
        &format!("{pooled}&application_name=pwr-api"),
    );
    env.set("MIGRATE_DATABASE_URL", &direct);
    // The admin API too: its look-up, export and erasure go through the pooler.
    let admin_key = "5e1d0c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c";
    env.set("ADMIN_API_BIND", "127.0.0.1:0");
    env.set("ADMIN_API_KEYS", admin_key);
    let (api, base) = env.start_api().await.unwrap();
    let admin_addr = api
        .wait_for_log_field("admin api listening", "addr", Duration::from_secs(10))
        .await
        .unwrap();
    let (worker, _) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("SMTP_TIMEOUT_SECS", "5"),
            (
                "DATABASE_URL",
                &format!("{pooled}&application_name=pwr-worker"),
            ),
        ])
        .await
        .unwrap();
    let xacts_at_start = bouncer.transactions(&database).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let (old, new) = (
        "correct horse battery staple 42",
        "plaid zebra umbrella tangerine 97",
    );

    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", old)
        .await
        .unwrap_or_else(|e| panic!("{e:#}; api: {:?}\n{}", api.output(), bouncer.log()));
    let sign_in = |password: &'static str| {
        post(
            "/v1/sessions",
            json!({ "email": "ann@example.org", "password": password }),
        )
    };
    assert_eq!(sign_in(old).await.unwrap().status(), StatusCode::CREATED);

    let token = env
        .reset_token(&base, &sink, "ann@example.org")
        .await
        .unwrap_or_else(|e| panic!("{e:#}; worker: {:?}", worker.output()));
    // Twenty submissions of one link at once, each a transaction through the pooler.
    let answers = join_all((0..20).map(|_| {
        post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": new }),
        )
    }))
    .await;
    let statuses: Vec<StatusCode> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status())
        .collect();
    let won = statuses
        .iter()
        .filter(|s| **s == StatusCode::NO_CONTENT)
        .count();
    let used = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((won, used), (1, 19), "{statuses:?}");
    assert_eq!(sign_in(new).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(
        sign_in(old).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        sink.wait_for_email("ann@example.org", "password was changed", WAIT)
            .await
            .is_some(),
        "the worker read the change through the pooler too"
    );

    // A sign-in asking for a language gives the account (signed up without one) its own
    // (after the notice above, which is written in the language the account had).
    let r = http
        .post(format!("{base}/v1/sessions"))
        .header("accept-language", "fr")
        .json(&json!({ "email": "ann@example.org", "password": new }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("http://{admin_addr}{path}"))
            .bearer_auth(admin_key)
            .send()
    };
    let found: Value = admin(
        reqwest::Method::GET,
        "/admin/v1/users?email=ann@example.org",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = found["id"].as_str().unwrap().to_owned();
    let r = admin(
        reqwest::Method::GET,
        &format!("/admin/v1/users/{id}/export"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = admin(
        reqwest::Method::DELETE,
        &format!("/admin/v1/users/{id}?reason=erasure%20request"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sign_in(new).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // PgBouncer carried it all: both services are its clients on the test database, and it
    // counted at least one transaction for each operation above that must write or read
    // the database: the sign-up, the verification, three sign-ins, the winning reset, and
    // the worker's account lookup for each of its three emails (verification, reset, notice).
    const OPERATIONS: u64 = 1 + 1 + 4 + 1 + 3;
    let clients = bouncer.clients_of(&database).await.unwrap();
    for service in ["pwr-api", "pwr-worker"] {
        assert!(
            clients.iter().any(|c| c == service),
            "{service} is no client of PgBouncer on {database}: {clients:?}"
        );
    }
    let counted = e2e::poll_until(Duration::from_secs(10), || async {
        let n = bouncer
            .transactions(&database)
            .await
            .ok()?
            .saturating_sub(xacts_at_start);
        (n >= OPERATIONS).then_some(n)
    })
    .await;
    let stats = bouncer.show("SHOW STATS").await.unwrap();
    println!("PgBouncer: clients on {database} {clients:?}; transactions {counted:?}");
    assert!(
        counted.is_some(),
        "fewer than {OPERATIONS} transactions through PgBouncer on {database}: {stats:?}"
    );

    let logs = [api.output(), worker.output()].concat().join("\n");
    assert!(
        !logs.contains("prepared statement") && !logs.contains("\"level\":\"ERROR\""),
        "{logs}\n{}",
        bouncer.log()
    );
}
