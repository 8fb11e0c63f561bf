//! Sign-up and email verification.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::{message::Job, token::Purpose};

use crate::helpers::{STRONG, assert_error, sign_in_answer, spawn_app};

#[tokio::test]
async fn sign_up_answers_the_same_for_new_and_taken_addresses_but_queues_different_mail() {
    let app = spawn_app().await;
    let first = app
        .post(
            "/v1/users",
            json!({ "email": "ann@example.org", "password": STRONG }),
        )
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_body = first.text().await.unwrap();
    // Same address in another case, with another password: still 202, same body.
    let second = app
        .post(
            "/v1/users",
            json!({ "email": "ANN@Example.org", "password": "another fine passphrase 7" }),
        )
        .await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(second.text().await.unwrap(), first_body);

    let jobs = app.jobs(2).await;
    let kinds: Vec<&str> = jobs.iter().map(|j| j.envelope().job.kind()).collect();
    assert_eq!(kinds, ["email_verification", "account_exists_notice"]);
    assert!(matches!(
        jobs[1].envelope().job,
        Job::AccountExistsNotice { ref email, .. } if email == "ANN@example.org"
    ));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "one account per address, whatever its case");
    // Both paths write one audit row (the same database work, whatever the address).
    assert_eq!(app.audit_outcomes("sign_up").await, ["created", "exists"]);
    let hashes: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT address_hash FROM audit_events WHERE action = 'sign_up' ORDER BY id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert!(hashes[0].is_some() && hashes[0] == hashes[1], "{hashes:?}");
    // Jobs are persistent and carry their id and kind as AMQP properties.
    let props = &jobs[0].properties;
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(
        props.message_id().as_ref().map(|s| s.to_string()),
        Some(jobs[0].envelope().id.to_string())
    );
    assert_eq!(
        props.kind().as_ref().map(|s| s.to_string()).as_deref(),
        Some("email_verification")
    );
}

#[tokio::test]
async fn sign_up_refuses_invalid_addresses_and_weak_passwords_without_writing_anything() {
    let app = spawn_app().await;
    for email in [
        "not-an-address",
        "a@b",
        "ann\r\n@example.org",
        "ann\u{0}@example.org",
        "",
    ] {
        let r = app
            .post("/v1/users", json!({ "email": email, "password": STRONG }))
            .await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_email").await;
    }
    for password in ["short", "password123", "ann@example.org1"] {
        let r = app
            .post(
                "/v1/users",
                json!({ "email": "ann@example.org", "password": password }),
            )
            .await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    }
    let r = app
        .post(
            "/v1/users",
            json!({ "email": "ann@example.org", "password": "x".repeat(1025) }),
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "password_too_long").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
    assert!(app.drain_jobs().await.is_empty());
}

#[tokio::test]
async fn a_verification_link_verifies_once() {
    let app = spawn_app().await;
    let user = app.sign_up("ann@example.org", STRONG).await;
    // Not verified yet: no sign-in.
    let r = sign_in_answer(&app, "ann@example.org", STRONG).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let token = app.mint(Purpose::EmailVerify, user).await;
    let r = app.verify_answer(&token, STRONG).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let session = app.login("ann@example.org", STRONG).await;
    let me: Value = app.me(&session).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["email"], "ann@example.org");
    assert_eq!(me["id"], user.to_string());

    let again = app.verify_answer(&token, STRONG).await;
    assert_error(again, StatusCode::BAD_REQUEST, "token_used").await;
    assert_eq!(
        app.audit_outcomes("email_verify").await,
        ["success", "used"]
    );
}

#[tokio::test]
async fn verification_refuses_reset_tokens_superseded_expired_and_tampered_links() {
    let app = spawn_app().await;
    let user = app.sign_up("bob@example.org", STRONG).await;

    // A reset link is not a verification link (different salt).
    let reset = app.mint(Purpose::PasswordReset, user).await;
    let r = app.verify_answer(&reset, STRONG).await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    // A newer link kills the older one.
    let older = app.mint(Purpose::EmailVerify, user).await;
    let newer = app.mint(Purpose::EmailVerify, user).await;
    let r = app.verify_answer(&older, STRONG).await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    // Tampering with any character breaks the signature.
    let mut tampered = newer.clone().into_bytes();
    let i = tampered.len() / 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let r = app
        .verify_answer(&String::from_utf8(tampered).unwrap(), STRONG)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    // Expired: the default verification lifetime is an hour.
    app.clock.advance(chrono::Duration::seconds(3600 + 1));
    let r = app.verify_answer(&newer, STRONG).await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_expired").await;

    assert_eq!(
        app.audit_outcomes("email_verify").await,
        ["wrong_purpose", "superseded", "bad_signature", "expired"]
    );
}

#[tokio::test]
async fn sign_ups_from_one_ip_are_limited() {
    let app = crate::helpers::spawn_with(&[("RATE_LIMIT_SIGNUP_PER_HOUR", "2")]).await;
    let sign_up = |email: &str, password: &str| {
        app.post("/v1/users", json!({ "email": email, "password": password }))
    };
    // The budget is counted before the strength check: a weak password spends it too, so a
    // client past its budget gets no CPU spent on judging passwords.
    let r = sign_up("u0@example.org", "password123").await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let r = sign_up("u1@example.org", STRONG).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for password in [STRONG, "password123"] {
        let r = sign_up("u9@example.org", password).await;
        assert!(r.headers().get("retry-after").is_some());
        assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    }
}

/// The language stored with the account.
async fn stored_locale(app: &crate::helpers::TestApp, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT locale FROM users WHERE email_key = $1")
        .bind(email)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_account_keeps_the_languages_of_its_sign_up_and_one_without_adopts_its_first_sign_in() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/users"))
        .header("accept-language", "de-AT,de;q=0.9,en;q=0.5")
        .json(&json!({ "email": "jan@example.org", "password": STRONG }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        stored_locale(&app, "jan@example.org").await.as_deref(),
        Some("de-at,de,en")
    );
    // A sign-up of the taken address in another language changes nothing.
    let r = app
        .client
        .post(app.url("/v1/users"))
        .header("accept-language", "ja")
        .json(&json!({ "email": "Jan@example.org", "password": STRONG }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        stored_locale(&app, "jan@example.org").await.as_deref(),
        Some("de-at,de,en")
    );

    // An account without a language (imported) takes its first sign-in's; then keeps it.
    app.create_user("eva@example.org", STRONG).await;
    assert_eq!(stored_locale(&app, "eva@example.org").await, None);
    for language in ["", "pt-BR,pt;q=0.8", "fr"] {
        let r = app
            .client
            .post(app.url("/v1/sessions"))
            .header("accept-language", language)
            .json(&json!({ "email": "eva@example.org", "password": STRONG }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(
        stored_locale(&app, "eva@example.org").await.as_deref(),
        Some("pt-br,pt")
    );
}
