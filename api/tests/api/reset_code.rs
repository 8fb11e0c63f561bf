//! Reset by the email's one-time code: right code, wrong codes, a code after its link, a newer
//! email, an unknown address, the per-IP budget and the form.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    STRONG, STRONGER, assert_error, fingerprint, sign_in_answer, spawn_app, spawn_with,
};

const ANN: &str = "ann@example.org";

/// Submits `n` wrong codes for Ann, each answered `code_invalid`.
async fn wrong_codes(app: &crate::helpers::TestApp, code: &str, n: usize) {
    for _ in 0..n {
        let r = app.reset_with_code(ANN, &wrong(code), STRONGER).await;
        assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    }
}

/// A code of the right shape that is not `code`.
fn wrong(code: &str) -> String {
    let last = code.as_bytes()[7];
    let other = if last == b'9' { b'0' } else { last + 1 };
    format!("{}{}", &code[..7], other as char)
}

#[tokio::test]
async fn the_right_code_resets_the_password_once_and_kills_its_link() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    let (token, code) = app.issue_code(user, ANN).await;

    // Typed the way the email shows it, address in another case.
    let shown = format!("{} {}", &code[..4], &code[4..]);
    let r = app
        .reset_with_code("Ann@Example.org", &shown, STRONGER)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );

    assert_eq!(app.me(&session).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login(ANN, STRONGER).await;
    // The code works once, and its link died with it.
    let again = app.reset_with_code(ANN, &code, STRONG).await;
    assert_error(again, StatusCode::BAD_REQUEST, "code_invalid").await;
    let link = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONG }),
        )
        .await;
    assert_error(link, StatusCode::BAD_REQUEST, "token_used").await;
    assert_eq!(
        app.audit_outcomes("password_reset_code").await,
        ["success", "code_wrong"]
    );
}

#[tokio::test]
async fn four_wrong_codes_and_a_weak_password_leave_the_code_alive() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let (_, code) = app.issue_code(user, ANN).await;
    wrong_codes(&app, &code, 4).await;
    // A weak password with the right code says so, and counts as no wrong code.
    let weak = app.reset_with_code(ANN, &code, "password123").await;
    assert_error(weak, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let r = app.reset_with_code(ANN, &code, STRONGER).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn five_wrong_codes_kill_the_code_but_not_the_link() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let (token, code) = app.issue_code(user, ANN).await;
    wrong_codes(&app, &code, 4).await;
    let fifth = app.reset_with_code(ANN, &wrong(&code), STRONGER).await;
    assert_error(fifth, StatusCode::BAD_REQUEST, "code_invalid").await;
    let right = app.reset_with_code(ANN, &code, STRONGER).await;
    assert_error(right, StatusCode::BAD_REQUEST, "code_invalid").await;
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::CREATED
    );

    // The link cannot be guessed: it still works.
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let outcomes = app.audit_outcomes("password_reset_code").await;
    assert_eq!(
        outcomes.iter().filter(|o| *o == "code_wrong").count(),
        6,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_address_takes_ten_wrong_codes_a_day_over_all_its_emails() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    // Four wrong codes each for two emails, one for a third: nine for the address.
    for wrongs in [4, 4, 1] {
        let (_, code) = app.issue_code(user, ANN).await;
        wrong_codes(&app, &code, wrongs).await;
    }
    // After nine, a fresh right code still works (a weak password shows it was accepted, and
    // leaves it alive and the count unchanged).
    let (_, code) = app.issue_code(user, ANN).await;
    let r = app.reset_with_code(ANN, &code, "password123").await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    // The tenth wrong code spends the day's allowance.
    wrong_codes(&app, &code, 1).await;
    // No code of the address works today, not even a fresh one; its link does.
    let (token, code) = app.issue_code(user, ANN).await;
    let r = app.reset_with_code(ANN, &code, STRONGER).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The count lasts a day (Redis expires it).
    let mut redis = app.redis().await;
    let counts: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}code:*:wrong", app.keys.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(counts.len(), 1);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&counts[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    // A day, not an hour: within the minutes this test took of a full day.
    assert!(ttl > 86_400_000 - 300_000 && ttl <= 86_400_000, "{ttl}");
}

#[tokio::test]
async fn a_used_link_or_a_newer_email_kills_the_code() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;

    // The link is used first: its code is dead.
    let (token, code) = app.issue_code(user, ANN).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.reset_with_code(ANN, &code, STRONG).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;

    // A newer email: the older code and link are dead, the newer code works.
    let (old_token, old_code) = app.issue_code(user, ANN).await;
    let (_, new_code) = app.issue_code(user, ANN).await;
    assert_ne!(old_code, new_code);
    let r = app.reset_with_code(ANN, &old_code, STRONG).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": old_token, "new_password": STRONG }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    let r = app.reset_with_code(ANN, &new_code, STRONG).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A code expires with its link.
    let (_, code) = app.issue_code(user, ANN).await;
    app.clock.advance(chrono::Duration::seconds(3601));
    let r = app.reset_with_code(ANN, &code, STRONGER).await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_answer_as_a_wrong_code() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let (_, code) = app.issue_code(user, ANN).await;

    let known = fingerprint(app.reset_with_code(ANN, &wrong(&code), STRONGER).await).await;
    let unknown = fingerprint(
        app.reset_with_code("nobody@example.org", &code, STRONGER)
            .await,
    )
    .await;
    let malformed = fingerprint(app.reset_with_code(ANN, "12ab", STRONGER).await).await;
    assert_eq!(known.0, StatusCode::BAD_REQUEST);
    assert_eq!(known, unknown);
    assert_eq!(known, malformed);
    // The audit rows are alike too: the address's pseudonym, no user.
    let rows: Vec<(Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT user_id, address_hash FROM audit_events
         WHERE action = 'password_reset_code' ORDER BY id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|(user, hash)| user.is_none() && hash.is_some()),
        "{rows:?}"
    );
    assert_eq!(rows[0].1, rows[2].1, "one pseudonym per address");
    assert_ne!(rows[0].1, rows[1].1);
    // The unknown address's count was written and taken back: only Ann's record and Ann's
    // count of wrong codes exist.
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}code:*", app.keys.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(":wrong")).count(),
        1,
        "{keys:?}"
    );
}

#[tokio::test]
async fn codes_have_a_per_ip_budget() {
    let app = spawn_with(&[("RATE_LIMIT_CODE_PER_HOUR", "3")]).await;
    for _ in 0..3 {
        let r = app.reset_with_code(ANN, "12345678", STRONGER).await;
        assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    }
    let r = app.reset_with_code(ANN, "12345678", STRONGER).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    // The link endpoints keep their own budget.
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": "x", "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
}

#[tokio::test]
async fn the_code_form_resets_and_says_when_a_code_is_wrong() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let (_, code) = app.issue_code(user, ANN).await;

    let form = |code: String, confirm: &'static str| {
        let app = &app;
        async move {
            app.form(
                "/reset-password/code",
                &[
                    ("email", ANN),
                    ("code", &code),
                    ("password", STRONGER),
                    ("password_confirm", confirm),
                ],
            )
            .await
        }
    };
    let r = form(code.clone(), STRONG).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("not the same") && html.contains(&code),
        "{html}"
    );

    let r = form(wrong(&code), STRONGER).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("This code is not valid"), "{html}");
    assert!(html.contains(r#"value="ann@example.org""#), "{html}");

    let r = form(code.clone(), STRONGER).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/reset-password/done");
    app.login(ANN, STRONGER).await;
}
