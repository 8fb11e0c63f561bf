//! Bounce suppression across the product: a reset email to a mailbox that no longer exists
//! suppresses the address (the worker), the next one is dropped, the owner's sign-in takes it
//! off the list (the api), `mail-worker suppression list|remove` show and lift it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::stack::{SmtpSink, StackEnv};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple 42";

async fn suppressed(env: &StackEnv) -> Vec<String> {
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let keys = sqlx::query_scalar("SELECT address_key FROM suppressed_addresses ORDER BY 1")
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    keys
}

async fn wait_suppressed(env: &StackEnv, expected: &[&str]) -> Vec<String> {
    e2e::poll_until(WAIT, || async {
        let keys = suppressed(env).await;
        (keys == expected).then_some(keys)
    })
    .await
    .unwrap_or(suppressed(env).await)
}

async fn forgot(base: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "ann@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn audit_outcomes(env: &StackEnv) -> Vec<String> {
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let outcomes = sqlx::query_scalar(
        "SELECT outcome FROM audit_events WHERE action = 'password_reset_requested' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    outcomes
}

/// Ann's mailbox answers 550 5.1.1; a reset email for her bounces and her address ends up
/// suppressed.
async fn bounce_a_reset_email(sink: &SmtpSink, env: &StackEnv, base: &str) {
    sink.set_mode(json!({"per_recipient": {"ann@example.org": "550 5.1.1 no such user"}}))
        .await
        .unwrap();
    forgot(base).await;
    assert_eq!(
        wait_suppressed(env, &["ann@example.org"]).await,
        ["ann@example.org"]
    );
}

#[tokio::test]
async fn a_bounced_address_is_suppressed_until_its_owner_signs_in_or_an_operator_lifts_it() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // Four forgot-password requests for one address: more than the default budget of three.
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "100");
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", PASSWORD)
        .await
        .unwrap();
    let delivered = sink.emails().len();

    // The mailbox is gone: the reset email bounces with 5.1.1 and the address is suppressed.
    bounce_a_reset_email(&sink, &env, &base).await;
    // Even with the mailbox back, nothing more goes to it while it is suppressed.
    sink.set_mode(json!({})).await.unwrap();
    forgot(&base).await;
    let outcomes = e2e::poll_until(WAIT, || async {
        let o = audit_outcomes(&env).await;
        (o.len() >= 2).then_some(o)
    })
    .await
    .unwrap();
    assert_eq!(outcomes, ["dead", "dropped_suppressed"]);
    assert_eq!(
        sink.emails().len(),
        delivered,
        "nothing sent to a suppressed address"
    );

    // The operator sees it.
    let (ok, lines) = env.worker_command(&["suppression", "list"]).await.unwrap();
    assert!(ok, "{lines:?}");
    let listed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("address_key").is_some())
        .collect();
    assert_eq!(listed.len(), 1, "{lines:?}");
    assert_eq!(listed[0]["address_key"], "ann@example.org");
    assert!(listed[0]["reason"].as_str().unwrap().contains("5.1.1"));

    // Its owner signs in: the address is taken off the list, and mail reaches it again.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "email": "ann@example.org", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(suppressed(&env).await.is_empty());
    forgot(&base).await;
    let reset = sink.wait_for_email("ann@example.org", "Reset", WAIT).await;
    assert!(reset.is_some(), "the reset email goes out again");

    // An operator can lift it too (any spelling of the address).
    bounce_a_reset_email(&sink, &env, &base).await;
    let (ok, lines) = env
        .worker_command(&["suppression", "remove", "ANN@example.org"])
        .await
        .unwrap();
    assert!(ok, "{lines:?}");
    assert!(suppressed(&env).await.is_empty());
    let (ok, _) = env
        .worker_command(&["suppression", "remove", "ann@example.org"])
        .await
        .unwrap();
    assert!(
        !ok,
        "removing an address that is not suppressed is an error"
    );
}

#[tokio::test]
async fn a_strangers_spelling_neither_receives_the_owners_notices_nor_suppresses_the_owner() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("NOTIFY_UNKNOWN_RECIPIENTS", "true");
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", PASSWORD)
        .await
        .unwrap();
    // At this server mailbox names are case-sensitive: the upper-case spellings do not exist.
    sink.set_mode(json!({
        "per_recipient_exact": true,
        "per_recipient": {
            "ANN@example.org": "550 5.1.1 no such user",
            "ZED@example.org": "550 5.1.1 no such user",
        }
    }))
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let sign_up = |email: &'static str| {
        http.post(format!("{base}/v1/users"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
    };

    // A stranger signs up Ann's address in another spelling: the notice goes to the spelling
    // Ann's account has, and nothing is suppressed.
    assert_eq!(sign_up("ANN@example.org").await.unwrap().status(), 202);
    let notice = sink
        .wait_for_email("ann@example.org", "You already have an account", WAIT)
        .await
        .expect("the account-exists notice");
    assert_eq!(notice.rcpt_to(), "ann@example.org");
    assert!(suppressed(&env).await.is_empty());

    // A no-account notice to a spelling that bounces suppresses that spelling only: the
    // owner of the mailbox signs up later in the spelling that exists and gets their email.
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "ZED@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        wait_suppressed(&env, &["zed@example.org"]).await,
        ["zed@example.org"]
    );
    assert_eq!(sign_up("zed@example.org").await.unwrap().status(), 202);
    let verification = sink
        .wait_for_email("zed@example.org", "Confirm your email address", WAIT)
        .await
        .expect("the verification email to the spelling that exists");
    assert_eq!(verification.rcpt_to(), "zed@example.org");
}
