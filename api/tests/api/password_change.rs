//! `POST /v1/account/password`: the signed-in owner changes the password with the current one;
//! every other session ends, this browser gets a new one, the notice goes out.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::message::Job;

use crate::helpers::{STRONG, STRONGER, TestApp, assert_error, sign_in_answer, spawn_app};

const ANN: &str = "ann@example.org";

async fn change(
    app: &TestApp,
    session: Option<&str>,
    current: &str,
    new: &str,
) -> reqwest::Response {
    let mut request = app.client.post(app.url("/v1/account/password"));
    if let Some(session) = session {
        request = request.bearer_auth(session);
    }
    request
        .json(&json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_in_owner_changes_the_password_and_every_other_session_ends() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let here = app.login(ANN, STRONG).await;
    let elsewhere = app.login(ANN, STRONG).await;
    app.drain_jobs().await;

    let r = change(&app, None, STRONG, STRONGER).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = change(&app, Some(&here), "not the password at all", STRONGER).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = change(&app, Some(&here), STRONG, "password123").await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    assert_eq!(app.password_version(user).await, 1, "nothing changed yet");
    assert_eq!(app.me(&elsewhere).await.status(), StatusCode::OK);

    let r = change(&app, Some(&here), STRONG, STRONGER).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let fresh: Value = r.json().await.unwrap();
    let fresh = fresh["session"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&fresh).await.status(), StatusCode::OK);
    for old in [&here, &elsewhere] {
        assert_eq!(app.me(old).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.password_version(user).await, 2);
    assert_eq!(
        sign_in_answer(&app, ANN, STRONGER).await.status(),
        StatusCode::CREATED
    );
    assert_error(
        sign_in_answer(&app, ANN, STRONG).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // The notice (with its "this wasn't me" link, minted by the worker) is on its way.
    let jobs = app.jobs(1).await;
    match &jobs[0].envelope().job {
        Job::PasswordChanged {
            user_id,
            password_version,
            ..
        } => assert_eq!((*user_id, *password_version), (user, 2)),
        other => panic!("expected the password-changed notice, got {other:?}"),
    }
    assert_eq!(
        app.audit_outcomes("password_change").await,
        ["invalid_credentials", "weak_password", "success"]
    );
}
