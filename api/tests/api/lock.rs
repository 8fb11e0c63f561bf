//! "This wasn't me": the lock link of the password-changed notice, by JSON and by its page.

use reqwest::StatusCode;
use serde_json::json;
use shared::{message::Job, token::Purpose};

use crate::helpers::{STRONG, STRONGER, assert_error, fingerprint, sign_in_answer, spawn_app};

const ANN: &str = "ann@example.org";

#[tokio::test]
async fn a_lock_ends_every_session_refuses_sign_in_and_sends_a_reset_email_until_a_reset() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    let older_link = app.mint(Purpose::PasswordReset, user).await;
    let (_, older_code) = app.issue_code(user, ANN).await;
    app.drain_jobs().await;
    let version = app.password_version(user).await;

    let token = app.mint(Purpose::AccountLock, user).await;
    let r = app
        .post("/v1/account/lock", json!({ "token": token }))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );

    // Sessions and links of the old version are dead; the version moved.
    assert_eq!(app.me(&session).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.password_version(user).await, version + 1);
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": older_link, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    let r = app.reset_with_code(ANN, &older_code, STRONGER).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    // The right password is refused exactly like a wrong one: its hash is gone, so an api
    // that knows nothing of locks refuses it too.
    let right = fingerprint(sign_in_answer(&app, ANN, STRONG).await).await;
    let wrong = fingerprint(sign_in_answer(&app, ANN, "not the password at all 1").await).await;
    assert_eq!(right.0, StatusCode::UNAUTHORIZED);
    assert_eq!(right, wrong);
    // The link works once.
    let again = app
        .post("/v1/account/lock", json!({ "token": token }))
        .await;
    assert_error(again, StatusCode::BAD_REQUEST, "token_used").await;

    // The owner's way back in: a reset email (within budget) is queued through the outbox.
    let jobs = app.jobs(1).await;
    assert!(
        matches!(
            &jobs[0].envelope().job,
            Job::PasswordResetRequested { email, within_budget: true, .. } if email == ANN
        ),
        "{:?}",
        jobs[0].envelope()
    );
    // A reset unlocks.
    let reset = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": reset, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.login(ANN, STRONGER).await;

    let locks = app.audit_outcomes("account_lock").await;
    assert_eq!(locks, ["success", "used"]);
    let sign_ins = app.audit_outcomes("sign_in").await;
    assert!(
        sign_ins.contains(&"invalid_credentials".to_owned()),
        "{sign_ins:?}"
    );
    let locked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT locked_at FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(locked, None, "the reset unlocked the account");
}

#[tokio::test]
async fn the_lock_page_asks_first_and_its_button_locks() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let token = app.mint(Purpose::AccountLock, user).await;
    let path = format!("/lock-account?token={token}");

    // Opening it (a mail scanner, twice) changes nothing.
    for _ in 0..2 {
        let r = app.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        assert!(
            html.contains("Lock my account") && html.contains(&token),
            "{html}"
        );
    }
    let session = app.login(ANN, STRONG).await;

    // A scanner that submits the form as it finds it, or with a wrong address, locks nothing
    // and leaves the link usable.
    for typed in [
        None,
        Some("someone.else@example.org"),
        Some("not an address"),
    ] {
        let mut fields = vec![("token", token.as_str())];
        fields.extend(typed.map(|t| ("email", t)));
        let r = app.form("/lock-account", &fields).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{typed:?}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("not the address this link was sent to"),
            "{html}"
        );
        assert!(html.contains("Lock my account") && html.contains(&token));
    }
    assert_eq!(app.me(&session).await.status(), StatusCode::OK);
    let r = app
        .post(
            "/v1/account/lock",
            serde_json::json!({ "token": token, "email": "x@example.org" }),
        )
        .await;
    crate::helpers::assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "address_mismatch").await;
    assert_eq!(app.me(&session).await.status(), StatusCode::OK);

    // The person types the address (any spelling of it).
    let r = app
        .form(
            "/lock-account",
            &[("token", &token), ("email", " Ann@EXAMPLE.org ")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/lock-account/done");
    let done = app.get("/lock-account/done").await.text().await.unwrap();
    assert!(done.contains("Your account is locked"), "{done}");
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Used: the page now says so, without a button.
    let html = app.get(&path).await.text().await.unwrap();
    assert!(
        html.contains("already been used") && !html.contains("Lock my account"),
        "{html}"
    );
}

#[tokio::test]
async fn a_lock_link_dies_with_a_later_password_change() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let token = app.mint(Purpose::AccountLock, user).await;
    let reset = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": reset, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .post("/v1/account/lock", json!({ "token": token }))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    app.login(ANN, STRONGER).await;
}

#[tokio::test]
async fn a_lock_link_lives_seven_days_and_only_for_its_purpose() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let token = app.mint(Purpose::AccountLock, user).await;
    // Not a reset link.
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    app.clock
        .advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    let r = app
        .post("/v1/account/lock", json!({ "token": token }))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_expired").await;
    let fresh = app.mint(Purpose::AccountLock, user).await;
    app.clock.advance(chrono::Duration::days(6));
    let r = app
        .post("/v1/account/lock", json!({ "token": fresh }))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}
