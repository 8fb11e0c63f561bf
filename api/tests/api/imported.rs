//! Accounts that came with another framework's password hash: each format verifies at
//! sign-in, is replaced by argon2id on the first success, and a wrong password is answered
//! as for an address without an account.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{STRONG, TestApp, spawn_app};

/// Gives `user` the stored hash `hash`, as an import would have.
async fn store_hash(app: &TestApp, user: Uuid, hash: &str) {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(user)
        .execute(&app.state.db)
        .await
        .unwrap();
}

async fn stored_hash(app: &TestApp, user: Uuid) -> String {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    let r = app
        .post(
            "/v1/sessions",
            json!({ "email": email, "password": password }),
        )
        .await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_imported_hash_format_signs_in_once_and_is_then_argon2id() {
    let app = spawn_app().await;
    let password = "imported ferret lantern 1987";
    let hashes = e2e::foreign_hashes(password);
    assert_eq!(hashes.len(), 14, "{hashes:?}");
    let (_, unknown) = sign_in(&app, "nobody@example.org", "wrong wrong wrong").await;
    for (i, (scheme, hash)) in hashes.iter().enumerate() {
        let email = format!("imported{i}@example.org");
        let user = app.create_user(&email, STRONG).await;
        store_hash(&app, user, hash).await;

        // A wrong password: the answer an unknown address gets, and the hash stays.
        let (status, body) = sign_in(&app, &email, "imported ferret lantern 1988").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{scheme}");
        assert_eq!(body, unknown, "{scheme}");
        assert_eq!(&stored_hash(&app, user).await, hash, "{scheme}");

        // The right one signs in, and the hash becomes argon2id with this service's settings.
        let (status, _) = sign_in(&app, &email, password).await;
        assert_eq!(status, StatusCode::CREATED, "{scheme} signs in");
        let upgraded = stored_hash(&app, user).await;
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{scheme} was replaced: {upgraded}"
        );
        let (status, _) = sign_in(&app, &email, password).await;
        assert_eq!(status, StatusCode::CREATED, "{scheme} after the upgrade");
        assert_eq!(
            stored_hash(&app, user).await,
            upgraded,
            "{scheme}: upgraded once"
        );
    }
}

#[tokio::test]
async fn a_hash_of_no_known_format_or_over_the_caps_is_a_wrong_password_not_an_error() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let (_, unknown) = sign_in(&app, "nobody@example.org", STRONG).await;
    for hash in [
        "md5$salt$5f4dcc3b5aa765d61d8327deb882cf99",
        // scrypt asking for 1 GiB.
        "scrypt:1048576:8:1$salt$00",
        "$2b$31$N56urM2yEfcb.Na7yN/oqu1WtmvGEfqoUk9Qb/Nesh9uCT9Bmp8pC",
    ] {
        store_hash(&app, user, hash).await;
        let (status, body) = sign_in(&app, "ann@example.org", STRONG).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{hash}");
        assert_eq!(body, unknown, "{hash}");
    }
}
