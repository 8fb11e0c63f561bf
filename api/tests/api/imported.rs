//! Accounts that came with another framework's password hash: each format verifies at
//! sign-in, is replaced by argon2id on the first success, and a wrong password is answered
//! as for an address without an account, no sooner.

use std::time::{Duration, Instant};

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

/// A bcrypt hash of `password` by pyca `bcrypt` (the test virtualenv's) with `cost`.
fn pyca_bcrypt(password: &str, cost: u32) -> String {
    let python = e2e::test_python();
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(int(sys.argv[2]))).decode())",
            password,
            &cost.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (source deploy/local/venv.sh)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn signature_of(app: &TestApp, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT imported_hash_signature FROM users WHERE email_key = $1")
        .bind(email)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

/// How long a sign-in took, and its status.
async fn timed_sign_in(app: &TestApp, email: &str, password: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    let (status, _) = sign_in(app, email, password).await;
    (status, started.elapsed())
}

#[tokio::test]
async fn while_an_imported_hash_remains_every_refused_sign_in_takes_as_long_as_its_verification() {
    let app = spawn_app().await;
    let password = "imported ferret lantern 1987";
    // bcrypt cost 11, a tenth of a second: far over the tests' argon2 (64 KiB, one pass).
    let hash = pyca_bcrypt(password, 11);
    let line = json!({ "email": "imported@example.org", "password_hash": hash });
    let no_password =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$dW51c2FibGV1bnVzYWJsZXVudXNhYmxldW51c2FibGU";
    let summary = api::import::run(
        &app.state.db,
        std::io::Cursor::new(format!("{line}\n")),
        no_password,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(summary.imported, 1, "{summary:?}");
    assert_eq!(
        signature_of(&app, "imported@example.org").await.as_deref(),
        Some("bcrypt:11")
    );
    app.create_user("native@example.org", STRONG).await;
    let (floor, hasher, db) = (&app.state.refusal_floor, &app.state.hasher, &app.state.db);

    let measured = floor.refresh(db, hasher).await.unwrap();
    assert!(measured > Duration::ZERO);
    assert_eq!(floor.current(), measured);
    // One verification of bcrypt 11 is 2^11 rounds of the key schedule: well over 20 ms
    // on any machine these tests run on, and the floor is no less than it.
    assert!(measured >= Duration::from_millis(20), "{measured:?}");
    let metrics = reqwest::get(format!("{}/metrics", app.metrics_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pwrecovery_sign_in_refusal_floor_seconds"),
        "the floor is exported"
    );

    // An unknown address, a native account's wrong password, the imported account's wrong
    // password: each answers no sooner than the floor.
    for (email, wrong) in [
        ("nobody@example.org", "imported ferret lantern 1987"),
        ("native@example.org", "imported ferret lantern 1988"),
        ("imported@example.org", "imported ferret lantern 1988"),
    ] {
        let (status, took) = timed_sign_in(&app, email, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}");
        assert!(
            took >= measured,
            "{email}: {took:?} < the floor {measured:?}"
        );
    }

    // Its first sign-in replaces the hash, its signature with it; no floor after.
    let (status, _) = timed_sign_in(&app, "imported@example.org", password).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(signature_of(&app, "imported@example.org").await, None);
    assert_eq!(floor.refresh(db, hasher).await.unwrap(), Duration::ZERO);
    assert_eq!(floor.current(), Duration::ZERO);
}
