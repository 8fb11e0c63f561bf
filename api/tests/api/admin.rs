//! The admin API (`ADMIN_API_BIND`): keys, look-up, recovery for a support agent, revoke,
//! lock, unlock, export, erasure and import, each audited with the key's id.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shared::token::Purpose;
use uuid::Uuid;

use crate::helpers::{
    STRONG, STRONGER, TestApp, assert_error, fingerprint, sign_in_answer, spawn_with,
};

const ANN: &str = "ann@example.org";
pub(crate) const KEY: &str = "9c1d5e0f7a3b28c46d95e1f0a7b3c2d8e4f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8";
const OTHER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f1";

async fn spawn_admin() -> TestApp {
    let keys = format!("{KEY},{OTHER_KEY}");
    spawn_with(&[
        ("ADMIN_API_BIND", "127.0.0.1:0"),
        ("ADMIN_API_KEYS", keys.as_str()),
    ])
    .await
}

/// A request to the admin API with `key` (none: no `Authorization`).
async fn admin_as(
    app: &TestApp,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let base = app.admin_base.as_ref().expect("admin api on");
    let mut request = app.client.request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

pub(crate) async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    admin_as(app, Some(KEY), method, path, body).await
}

async fn audit_details(app: &TestApp, action: &str) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT detail FROM audit_events WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_call_needs_a_key_refused_alike_and_the_admin_api_is_never_on_the_public_port() {
    let app = spawn_admin().await;
    let user = app.create_user(ANN, STRONG).await;
    let path = format!("/admin/v1/users?email={ANN}");

    let none = admin_as(&app, None, Method::GET, &path, None).await;
    let wrong = admin_as(&app, Some(&KEY.replace('9', "8")), Method::GET, &path, None).await;
    let (none, wrong) = (fingerprint(none).await, fingerprint(wrong).await);
    assert_eq!(none.0, StatusCode::UNAUTHORIZED);
    assert_eq!(none, wrong, "no key and a wrong key must be refused alike");
    let body: Value = serde_json::from_slice(&none.2).unwrap();
    assert_eq!(body["code"], "unauthorized");
    let document = admin_as(&app, None, Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(document.status(), StatusCode::UNAUTHORIZED);
    assert!(
        audit_details(&app, "admin_lookup").await.is_empty(),
        "a refused call does nothing"
    );

    // Not on API_BIND, whatever the key.
    let public = app
        .client
        .get(app.url(&path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_error(public, StatusCode::NOT_FOUND, "not_found").await;
    let public_document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let public_paths = public_document["paths"].as_object().unwrap();
    assert!(public_paths.keys().all(|p| !p.starts_with("/admin")));

    // Either key works, and the audit trail names the key by its id, never the key itself.
    for key in [KEY, OTHER_KEY] {
        let r = admin_as(
            &app,
            Some(key),
            Method::GET,
            "/admin/v1/users?email=ANN@Example.org",
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let found: Value = r.json().await.unwrap();
        assert_eq!(found["id"], user.to_string());
        assert_eq!(found["email"], ANN);
        assert_eq!(found["email_verified"], true);
        assert_eq!(found["locked"], false);
        assert_eq!(found["second_factors"], json!([]));
        assert!(found.get("password_hash").is_none() && found.get("email_key").is_none());
    }
    let details = audit_details(&app, "admin_lookup").await;
    let ids = [KEY, OTHER_KEY].map(|k| api::admin::keys::key_id(k.as_bytes()));
    for (detail, id) in details.iter().zip(&ids) {
        let detail = detail.as_deref().unwrap();
        assert_eq!(detail, format!("by: admin key {id}"));
        assert!(!detail.contains(KEY) && !detail.contains(OTHER_KEY));
    }
    assert_eq!(details.len(), 2);

    let unknown = admin(
        &app,
        Method::GET,
        "/admin/v1/users?email=bob@example.org",
        None,
    )
    .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let bad = admin(&app, Method::GET, "/admin/v1/users?email=nonsense", None).await;
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_email").await;

    // Odd requests get the JSON error shape: a repeated parameter (the first counts), a path
    // that is not even UTF-8, a public route on the admin listener.
    let twice = format!("/admin/v1/users?email={ANN}&email=bob@example.org");
    let r = admin(&app, Method::GET, &twice, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = admin(&app, Method::GET, "/admin/v1/users/%FF/export", None).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let sign_in = json!({ "email": ANN, "password": STRONG });
    let r = admin(&app, Method::POST, "/v1/sessions", Some(sign_in)).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // The admin document lists every operation.
    let r = admin(&app, Method::GET, "/admin/openapi.json", None).await;
    let document: Value = r.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/admin/v1/users",
        "/admin/v1/users/import",
        "/admin/v1/users/{id}/recovery",
        "/admin/v1/users/{id}/sessions/revoke",
        "/admin/v1/users/{id}/lock",
        "/admin/v1/users/{id}/unlock",
        "/admin/v1/users/{id}/export",
        "/admin/v1/users/{id}",
    ] {
        assert!(paths.contains_key(path), "{path} missing from {paths:?}");
    }
}

#[tokio::test]
async fn the_api_refuses_to_start_an_admin_listener_without_keys_or_with_weak_ones() {
    for (keys, needle) in [
        ("", "ADMIN_API_KEYS is empty"),
        ("short", "ADMIN_API_KEYS: key #1"),
    ] {
        let err = api::config::Config::from_lookup(shared::config::pairs_lookup(&[
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("PUBLIC_BASE_URL", "https://account.example.com"),
            ("TOKEN_SECRETS", KEY),
            ("ADMIN_API_BIND", "127.0.0.1:9465"),
            ("ADMIN_API_KEYS", keys),
        ]))
        .expect_err("refused");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[tokio::test]
async fn support_hands_over_a_link_and_code_or_sends_the_ordinary_email() {
    let app = spawn_admin().await;
    let user = app.create_user(ANN, STRONG).await;
    app.drain_jobs().await;
    let path = format!("/admin/v1/users/{user}/recovery");
    let emailed_before = app.mint(Purpose::PasswordReset, user).await;

    // A code handed over works on the reset-by-code page.
    let r = admin(&app, Method::POST, &path, Some(json!({ "send": false }))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    let code = first["code"].as_str().unwrap();
    let r = app.reset_with_code(ANN, code, STRONGER).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    // So the link it came with is used up, and a link emailed before it is dead.
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": emailed_before, "new_password": STRONG }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    app.jobs(1).await;

    let r = admin(&app, Method::POST, &path, Some(json!({ "send": false }))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let handed: Value = r.json().await.unwrap();
    let link = handed["link"].as_str().unwrap();
    let base = &app.state.config.public_base_url;
    let token = link
        .strip_prefix(&format!("{base}/reset-password#token="))
        .or_else(|| link.strip_prefix(&format!("{base}/reset-password?token=")))
        .unwrap_or_else(|| panic!("a link from PUBLIC_BASE_URL: {link}"));
    assert_eq!(handed["code"].as_str().unwrap().len(), 9, "{handed}");
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(handed["expires_at"].clone()).unwrap();
    let lifetime = chrono::Duration::from_std(app.state.config.reset_token_max_age).unwrap();
    let now = shared::clock::Clock::now(&app.clock);
    let signed = expires_at - lifetime;
    assert!(
        (now - signed).num_seconds().abs() <= 1,
        "{expires_at} is {lifetime} after {now}"
    );
    assert!(
        app.drain_jobs().await.is_empty(),
        "a link for the agent sends no email"
    );

    // The handed link works once, like an emailed one.
    let shared_app = &app;
    let reset = |token: String| async move {
        shared_app
            .post(
                "/v1/password/reset",
                json!({ "token": token, "new_password": STRONGER }),
            )
            .await
    };
    assert_eq!(
        reset(token.to_owned()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        sign_in_answer(&app, ANN, STRONGER).await.status(),
        StatusCode::CREATED
    );
    assert_error(
        reset(token.to_owned()).await,
        StatusCode::BAD_REQUEST,
        "token_used",
    )
    .await;
    // The reset's own notice, relayed from the outbox.
    let notice = app.jobs(1).await;
    assert!(matches!(
        notice[0].envelope().job,
        shared::message::Job::PasswordChanged { .. }
    ));

    let r = admin(&app, Method::POST, &path, Some(json!({ "send": true }))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let jobs = app.jobs(1).await;
    match &jobs[0].envelope().job {
        shared::message::Job::PasswordResetRequested {
            email,
            within_budget,
            ..
        } => assert!(email == ANN && *within_budget),
        other => panic!("expected the reset email, got {other:?}"),
    }
    let details = audit_details(&app, "admin_recovery").await;
    let id = api::admin::keys::key_id(KEY.as_bytes());
    assert_eq!(
        details,
        [
            Some(format!("by: admin key {id}; handed to support")),
            Some(format!("by: admin key {id}; handed to support")),
            Some(format!("by: admin key {id}; emailed")),
        ]
    );

    let r = admin(&app, Method::POST, &path, Some(json!({ "send": "yes" }))).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/users/{}/recovery", Uuid::now_v7()),
        Some(json!({ "send": false })),
    )
    .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = admin(
        &app,
        Method::POST,
        "/admin/v1/users/x/recovery",
        Some(json!({ "send": false })),
    )
    .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn revoke_lock_and_unlock_need_a_reason_and_keep_it_with_the_key_id() {
    let app = spawn_admin().await;
    let user = app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    for act in ["sessions/revoke", "lock", "unlock"] {
        let path = format!("/admin/v1/users/{user}/{act}");
        for body in [json!({}), json!({ "reason": "  " })] {
            let r = admin(&app, Method::POST, &path, Some(body)).await;
            assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "reason_required").await;
        }
    }
    assert_eq!(
        app.me(&session).await.status(),
        StatusCode::OK,
        "nothing done"
    );

    let path = format!("/admin/v1/users/{user}/sessions/revoke");
    let r = admin(
        &app,
        Method::POST,
        &path,
        // A control character is no reason to fail: it is left out of the trail.
        Some(json!({ "reason": "ticket\u{0} 7" })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&session).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::CREATED
    );

    app.drain_jobs().await;
    let path = format!("/admin/v1/users/{user}/lock");
    let r = admin(
        &app,
        Method::POST,
        &path,
        Some(json!({ "reason": "phished" })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(
        sign_in_answer(&app, ANN, STRONG).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let found: Value = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users?email={ANN}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(found["locked"], true);
    // The lock's way back in: a reset email to the owner, through the outbox.
    let jobs = app.jobs(1).await;
    assert!(matches!(
        jobs[0].envelope().job,
        shared::message::Job::PasswordResetRequested { .. }
    ));

    let path = format!("/admin/v1/users/{user}/unlock");
    let r = admin(
        &app,
        Method::POST,
        &path,
        Some(json!({ "reason": "owner called" })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let found: Value = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users?email={ANN}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(found["locked"], false);
    // The lock replaced the password: the way back in is still a reset.
    assert_error(
        sign_in_answer(&app, ANN, STRONG).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    let id = api::admin::keys::key_id(KEY.as_bytes());
    for (action, reason) in [
        ("sessions_revoke", "ticket 7"),
        ("account_lock", "phished"),
        ("account_unlock", "owner called"),
    ] {
        assert_eq!(
            audit_details(&app, action).await,
            [Some(format!("by: admin key {id}; reason: {reason}"))],
            "{action}"
        );
    }
}

#[tokio::test]
async fn unlock_lets_the_owner_in_past_the_failures_strangers_spent() {
    let app = spawn_with(&[
        ("ADMIN_API_BIND", "127.0.0.1:0"),
        ("ADMIN_API_KEYS", KEY),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "3"),
        ("RATE_LIMIT_LOGIN_PER_HOUR", "100"),
    ])
    .await;
    let user = app.create_user(ANN, STRONG).await;
    for _ in 0..3 {
        sign_in_answer(&app, ANN, "not the password at all").await;
    }
    let refused = sign_in_answer(&app, ANN, STRONG).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let path = format!("/admin/v1/users/{user}/unlock");
    let r = admin(
        &app,
        Method::POST,
        &path,
        Some(json!({ "reason": "owner called" })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn export_gives_the_account_and_its_audit_trail() {
    let app = spawn_admin().await;
    let user = app.create_user(ANN, STRONG).await;
    sign_in_answer(&app, ANN, "not the password at all").await;
    app.settle_audit().await;
    let r = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users/{user}/export"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let export: Value = r.json().await.unwrap();
    assert_eq!(export["account"]["id"], user.to_string());
    assert_eq!(export["account"]["email"], ANN);
    let rows: Vec<(String, String)> = export["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap().to_owned(),
                row["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("sign_up", "created"),
        ("email_verify", "success"),
        ("sign_in", "invalid_credentials"),
        ("admin_export", "success"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(rows.contains(&expected), "{expected:?} not in {rows:?}");
    }
    let wrong = export["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["outcome"] == "invalid_credentials")
        .unwrap();
    assert_eq!(wrong["ip"], "127.0.0.1");
    let r = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users/{}/export", Uuid::now_v7()),
        None,
    )
    .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn erasure_leaves_nothing_of_the_person_and_the_address_is_new_again() {
    let app = spawn_admin().await;
    let db = &app.state.db;
    let user = app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    sign_in_answer(&app, "Ann@Example.org", "not the password at all").await;
    app.forgot(ANN).await;
    let older_link = app.mint(Purpose::PasswordReset, user).await;
    let (_, code) = app.issue_code(user, ANN).await;
    // What other parts of the system keep about the address.
    sqlx::query("INSERT INTO suppressed_addresses (address_key, reason) VALUES ($1, '550 5.1.1')")
        .bind(ANN)
        .execute(db)
        .await
        .unwrap();
    for (id, body) in [
        (
            "dead-1",
            r#"{"job":{"email":"Ann@EXAMPLE.org","ip":"192.0.2.1"}}"#.to_owned(),
        ),
        ("dead-2", format!(r#"{{"job":{{"user_id":"{user}"}}}}"#)),
        (
            "dead-3",
            r#"{"job":{"email":"bob@example.org"}}"#.to_owned(),
        ),
        (
            "dead-4",
            r#"{"job":{"email":"joann@example.org"}}"#.to_owned(),
        ),
    ] {
        sqlx::query(
            "INSERT INTO dead_letters (message_id, body) VALUES ($1, convert_to($2, 'UTF8'))",
        )
        .bind(id)
        .bind(body)
        .execute(db)
        .await
        .unwrap();
    }
    // Jobs still in the outbox (held by another relay for now, so none goes out meanwhile):
    // its own, an account-exists notice naming its address, and another person's notice.
    for (user_id, email) in [
        (Some(user), ANN),
        (None, "ANN@example.org"),
        (None, "joann@example.org"),
    ] {
        let body = json!({ "kind": "account_exists_notice", "payload": { "email": email } });
        sqlx::query(
            "INSERT INTO outbox (user_id, kind, routing_key, message_id, body, claimed_until, claimed_by)
             VALUES ($1, 'job', 'jobs', gen_random_uuid(), convert_to($2, 'UTF8'),
                     now() + interval '1 hour', gen_random_uuid())",
        )
        .bind(user_id)
        .bind(body.to_string())
        .execute(db)
        .await
        .unwrap();
    }
    app.settle_audit().await;
    let traces = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE ip IS NOT NULL OR address_hash IS NOT NULL",
        )
        .fetch_one(db)
        .await
        .unwrap();
        n
    };
    assert!(
        traces().await > 0,
        "the audit trail holds the person's address and IP"
    );

    let path = format!("/admin/v1/users/{user}");
    let r = admin(&app, Method::DELETE, &path, None).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "reason_required").await;
    let r = admin(
        &app,
        Method::DELETE,
        &format!("{path}?reason=GDPR%20art.%2017"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(users, 0);
    assert_eq!(
        traces().await,
        0,
        "no address pseudonym or IP of the person is left"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT message_id FROM dead_letters")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(
        left,
        ["dead-3", "dead-4"],
        "only other people's dead letters stay"
    );
    let queued: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM outbox WHERE kind = 'job'")
        .fetch_all(db)
        .await
        .unwrap();
    let queued: Vec<String> = queued
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect();
    assert!(
        queued.len() == 1 && queued[0].contains("joann@"),
        "only another person's job stays: {queued:?}"
    );
    let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressed_addresses")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(suppressed, 0);
    let erasure: Vec<(Option<Uuid>, Option<String>)> =
        sqlx::query_as("SELECT user_id, detail FROM audit_events WHERE action = 'account_erase'")
            .fetch_all(db)
            .await
            .unwrap();
    let id = api::admin::keys::key_id(KEY.as_bytes());
    assert_eq!(
        erasure,
        [(
            Some(user),
            Some(format!("by: admin key {id}; reason: GDPR art. 17"))
        )]
    );

    // Sessions, links and codes are dead; the code's record is gone from Redis.
    assert_eq!(app.me(&session).await.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": older_link, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.reset_with_code(ANN, &code, STRONGER).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    let code_owner =
        shared::reset_code::address_pseudonym(app.state.config.pseudonym_secret(), ANN);
    let exists: bool = redis::cmd("EXISTS")
        .arg(app.keys.reset_code(&code_owner))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert!(!exists);
    let r = admin(&app, Method::GET, &format!("{path}/export"), None).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = admin(&app, Method::DELETE, &format!("{path}?reason=again"), None).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // The address is like one never seen: signing up makes a new account.
    app.drain_jobs().await;
    let again = app.sign_up(ANN, STRONGER).await;
    assert_ne!(again, user);
}

#[tokio::test]
async fn import_over_the_admin_api_lists_refused_lines_and_skips_what_exists() {
    let app = spawn_admin().await;
    let hash = api::hashing::Hasher::new(app.state.config.argon2, 1)
        .unwrap()
        .hash_for(std::net::Ipv4Addr::LOCALHOST.into(), STRONG.to_owned())
        .await
        .unwrap();
    let body = [
        json!({ "email": ANN, "password_hash": hash }).to_string(),
        "{not json".to_owned(),
        json!({ "email": "bob@example.org", "password_hash": null }).to_string(),
    ]
    .join("\n");
    let send = |content_type: &'static str| {
        let body = body.clone();
        let base = app.admin_base.clone().unwrap();
        let client = app.client.clone();
        async move {
            client
                .post(format!("{base}/admin/v1/users/import"))
                .bearer_auth(KEY)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_error(
        send("application/json").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = send("application/x-ndjson").await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"imported": 2, "skipped": 0, "refused": 1, "errors": [{"line": 2, "code": "invalid_json"}]})
    );
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::CREATED
    );

    let again: Value = send("application/x-ndjson").await.json().await.unwrap();
    assert_eq!(
        (again["imported"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(2))
    );
    let id = api::admin::keys::key_id(KEY.as_bytes());
    let details = sqlx::query_scalar::<_, Option<String>>(
        "SELECT detail FROM audit_events WHERE action = 'import' AND outcome = 'success' ORDER BY id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(
        details,
        [
            Some(format!(
                "by: admin key {id}; imported 2, skipped 0, refused 1"
            )),
            Some(format!(
                "by: admin key {id}; imported 0, skipped 2, refused 1"
            )),
        ]
    );
}

#[tokio::test]
async fn an_import_over_the_admin_api_keeps_to_the_verification_budget() {
    let app = spawn_with(&[
        ("ADMIN_API_BIND", "127.0.0.1:0"),
        ("ADMIN_API_KEYS", KEY),
        ("IMPORT_MAX_VERIFY_MS", "5"),
    ])
    .await;
    let costly = bcrypt::hash(STRONG, 12).unwrap();
    let body = json!({ "email": ANN, "password_hash": costly }).to_string();
    let base = app.admin_base.clone().unwrap();
    let r = app
        .client
        .post(format!("{base}/admin/v1/users/import"))
        .bearer_auth(KEY)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"imported": 0, "skipped": 0, "refused": 1, "errors": [{"line": 1, "code": "hash_too_costly"}]})
    );
}

#[tokio::test]
async fn support_removes_a_lost_factor_with_a_reason_and_its_recovery_link_respects_the_factor() {
    use shared::message::{Factor, SecurityEvent};
    let app = spawn_admin().await;
    let enrolled = crate::mfa::enrol(&app, ANN).await;
    let user = enrolled.user;
    let r = admin(
        &app,
        Method::GET,
        "/admin/v1/users?email=ann@example.org",
        None,
    )
    .await;
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["second_factors"], json!(["totp"]));

    // The link support hands over proves the mailbox only, like an emailed one.
    let path = format!("/admin/v1/users/{user}/recovery");
    let r = admin(&app, Method::POST, &path, Some(json!({ "send": false }))).await;
    let handed: Value = r.json().await.unwrap();
    let link = handed["link"].as_str().unwrap();
    let token = link.split_once("token=").unwrap().1.to_owned();
    let reset = json!({ "token": token, "new_password": STRONGER });
    let r = app.post("/v1/password/reset", reset.clone()).await;
    assert_error(r, StatusCode::FORBIDDEN, "mfa_required").await;

    // The person lost the phone and the codes; support proved who they are.
    let remove = format!("/admin/v1/users/{user}/mfa/remove");
    let r = admin(&app, Method::POST, &remove, Some(json!({}))).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "reason_required").await;
    let reason = json!({ "reason": "identity proven on a video call, ticket 4711" });
    let r = admin(&app, Method::POST, &remove, Some(reason.clone())).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = admin(&app, Method::POST, &remove, Some(reason)).await;
    assert_error(r, StatusCode::CONFLICT, "mfa_not_enabled").await;
    let events = crate::mfa::security_events(&app, 1).await;
    assert_eq!(
        events,
        [SecurityEvent::FactorRemoved {
            factor: Factor::Totp,
            by_support: true
        }]
    );
    let details = audit_details(&app, "mfa_remove").await;
    let detail = details.last().unwrap().as_deref().unwrap();
    assert!(
        detail.starts_with("by: admin key ")
            && detail.ends_with("reason: identity proven on a video call, ticket 4711"),
        "{detail}"
    );
    // The same link now resets.
    let r = app.post("/v1/password/reset", reset).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sign_in_answer(&app, ANN, STRONGER).await.status(),
        StatusCode::CREATED
    );
}
