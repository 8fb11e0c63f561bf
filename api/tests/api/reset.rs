//! Reset password: every check, exactly-once use, sessions revoked, notices published.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::{message::Job, token::Purpose};

use crate::helpers::{STRONG, STRONGER, assert_error, spawn_app};

#[tokio::test]
async fn a_reset_changes_the_password_kills_sessions_and_announces_itself() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let session = app.login("ann@example.org", STRONG).await;
    let other_device = app.login("ann@example.org", STRONG).await;

    // Listen to the events exchange like another service would.
    let events = app
        .reader
        .channel()
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    app.reader
        .channel()
        .queue_bind(
            events.name().clone(),
            app.topology.events_exchange().into(),
            "user.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let token = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Every session is gone, the old password is dead, the new one works.
    assert_eq!(app.me(&session).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(&other_device).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let old = app
        .post(
            "/v1/sessions",
            json!({ "email": "ann@example.org", "password": STRONG }),
        )
        .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let fresh = app.login("ann@example.org", STRONGER).await;
    let me: Value = app.me(&fresh).await.json().await.unwrap();
    assert_eq!(
        me["email_verified"], true,
        "a reset link proves the address"
    );
    assert_eq!(app.password_version(user).await, 2);

    // The link is spent.
    let again = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONG }),
        )
        .await;
    assert_error(again, StatusCode::BAD_REQUEST, "token_used").await;

    let notice = app.jobs(1).await.remove(0).envelope();
    assert_eq!(
        notice.job,
        Job::PasswordChanged {
            user_id: user,
            email: "ann@example.org".into(),
            ip: Some("127.0.0.1".into()),
            password_version: 2,
        }
    );
    let event = app
        .reader
        .take(events.name().as_str(), 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(event.len(), 1);
    let event: Value = serde_json::from_slice(&event[0].body).unwrap();
    assert_eq!(event["user_id"], user.to_string());
    assert_eq!(event["password_version"], 2);

    assert_eq!(
        app.audit_outcomes("password_reset").await,
        ["success", "used"]
    );
    let (ip, who): (Option<String>, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT host(ip), user_id FROM audit_events WHERE action = 'password_reset' AND outcome = 'success'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!((ip.as_deref(), who), (Some("127.0.0.1"), Some(user)));
}

#[tokio::test]
async fn of_twenty_concurrent_submissions_of_one_link_exactly_one_wins() {
    let app = spawn_app().await;
    let user = app.create_user("race@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let body = json!({ "token": token, "new_password": STRONGER });
    let responses = join_all((0..20).map(|_| app.post("/v1/password/reset", body.clone()))).await;
    let mut codes = Vec::new();
    for r in responses {
        codes.push(match r.status() {
            StatusCode::NO_CONTENT => "success".to_owned(),
            _ => r.json::<Value>().await.unwrap()["code"]
                .as_str()
                .unwrap()
                .to_owned(),
        });
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "success").count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "token_used").count(),
        19,
        "{codes:?}"
    );
    assert_eq!(
        app.password_version(user).await,
        2,
        "exactly one password change"
    );
}

#[tokio::test]
async fn a_refused_password_leaves_the_link_usable() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let weak = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": "password1" }),
        )
        .await;
    assert_error(weak, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let long = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": "x".repeat(1025) }),
        )
        .await;
    assert_error(long, StatusCode::UNPROCESSABLE_ENTITY, "password_too_long").await;
    let ok = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.audit_outcomes("password_reset").await,
        ["weak_password", "password_too_long", "success"]
    );
}

#[tokio::test]
async fn expired_superseded_foreign_and_stale_links_are_refused_with_their_reason() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;

    // Older link after a newer one was sent.
    let older = app.mint(Purpose::PasswordReset, user).await;
    let newer = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": older, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    // A verification link is not a reset link.
    let verify = app.mint(Purpose::EmailVerify, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": verify, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    // Garbage and truncation.
    for bad in ["", "abc", "a.b.c", &newer[..newer.len() - 5]] {
        let r = app
            .post(
                "/v1/password/reset",
                json!({ "token": bad, "new_password": STRONGER }),
            )
            .await;
        assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    }

    // One second past the hour.
    app.clock.advance(chrono::Duration::seconds(3601));
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": newer, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_expired").await;

    let outcomes = app.audit_outcomes("password_reset").await;
    assert_eq!(outcomes[0], "superseded");
    assert_eq!(outcomes[1], "wrong_purpose");
    assert_eq!(outcomes.last().map(String::as_str), Some("expired"));
}

#[tokio::test]
async fn a_link_dies_when_the_password_changes_by_any_other_way() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let first = app.mint(Purpose::PasswordReset, user).await;
    // The password changes (another reset): the version moves on.
    sqlx::query("UPDATE users SET password_version = password_version + 1 WHERE id = $1")
        .bind(user)
        .execute(&app.state.db)
        .await
        .unwrap();
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": first, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    assert_eq!(
        app.audit_outcomes("password_reset").await,
        ["password_changed"]
    );
}

#[tokio::test]
async fn losing_redis_data_kills_links_instead_of_reviving_them() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let mut redis = app.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(app.keys.token_generation(user, Purpose::PasswordReset))
        .query_async(&mut redis)
        .await
        .unwrap();
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
}

#[tokio::test]
async fn a_link_stays_dead_when_redis_forgets_generations_and_a_new_link_is_issued() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let first = app.mint(Purpose::PasswordReset, user).await;
    let _second = app.mint(Purpose::PasswordReset, user).await;
    // Redis loses everything about this user; then a new link is issued.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(app.keys.token_generation(user, Purpose::PasswordReset))
        .query_async(&mut redis)
        .await
        .unwrap();
    // Generations are anchored to the clock (ms): it moves past the old ones.
    app.clock.advance(chrono::Duration::seconds(1));
    let third = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": first, "new_password": STRONGER }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": third, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_reset_takes_the_address_off_the_suppression_list() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    shared::suppression::add(
        &app.state.db,
        "ann@example.org",
        "ann@example.org",
        "550 5.1.1 no such user",
    )
    .await
    .unwrap();
    let token = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let left = shared::suppression::list(&app.state.db).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}
