//! Sign-in, sessions and sign-out.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{STRONG, assert_error, spawn_app, spawn_with};

#[tokio::test]
async fn login_sets_a_hardened_cookie_and_the_session_works_by_bearer_and_cookie() {
    let app = spawn_app().await;
    app.create_user("ann@example.org", STRONG).await;
    let r = app
        .post(
            "/v1/sessions",
            json!({ "email": " Ann@EXAMPLE.org ", "password": STRONG }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    let session = body["session"].as_str().unwrap();
    assert!(body["expires_at"].as_str().is_some());
    // `__Host-`: only this host, over TLS, for the whole site, can set it.
    assert!(cookie.starts_with(&format!("__Host-session={session};")));
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }

    assert_eq!(app.me(session).await.status(), StatusCode::OK);
    let by_cookie = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", format!("other=1; __Host-session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);
    // A session cookie from before the `__Host-` name still works until it expires.
    let legacy = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", format!("session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), StatusCode::OK);

    let out = app
        .client
        .delete(app.url("/v1/sessions/current"))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(
        out.headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_error(
        app.me(session).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn wrong_password_and_unknown_address_get_the_same_answer_after_the_same_work() {
    let app = spawn_app().await;
    app.create_user("ann@example.org", STRONG).await;

    let before = app.state.hasher.verifications();
    let wrong = app
        .post(
            "/v1/sessions",
            json!({ "email": "ann@example.org", "password": "not the password" }),
        )
        .await;
    assert_eq!(app.state.hasher.verifications(), before + 1);
    let unknown = app
        .post(
            "/v1/sessions",
            json!({ "email": "nobody@example.org", "password": "not the password" }),
        )
        .await;
    // The unknown address is verified against the dummy hash: same work as a wrong password.
    assert_eq!(app.state.hasher.verifications(), before + 2);

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());
}

#[tokio::test]
async fn me_and_logout_require_a_live_session() {
    let app = spawn_app().await;
    assert_error(
        app.get("/v1/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let forged = format!("{}.{}", uuid::Uuid::new_v4(), "A".repeat(43));
    assert_error(
        app.me(&forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.me("garbage").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let r = app
        .client
        .delete(app.url("/v1/sessions/current"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn repeated_sign_in_attempts_for_one_address_from_one_ip_are_slowed_down() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_PER_HOUR", "3")]).await;
    for _ in 0..3 {
        let r = app
            .post(
                "/v1/sessions",
                json!({ "email": "x@example.org", "password": "guess guess" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = app
        .post(
            "/v1/sessions",
            json!({ "email": "x@example.org", "password": "guess guess" }),
        )
        .await;
    assert!(r.headers().get("retry-after").is_some());
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
    // Another address from the same IP is not affected.
    let r = app
        .post(
            "/v1/sessions",
            json!({ "email": "y@example.org", "password": "guess guess" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
