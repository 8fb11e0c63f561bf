//! Breached passwords (`PWNED_PASSWORDS_DIR`): refused at sign-up and reset from range files
//! the test writes, with the fail-open and fail-closed answers to a range that is missing.

use reqwest::StatusCode;
use serde_json::json;
use shared::token::Purpose;

use crate::helpers::{STRONG, STRONGER, TestApp, assert_error, spawn_with};

/// A directory of range files, removed when dropped.
struct Ranges(std::path::PathBuf);

impl Ranges {
    /// Range files listing `breached` (and a padding line), in the downloader's two spellings.
    fn listing(breached: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("pwned-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, password) in breached.iter().enumerate() {
            let (prefix, suffix) = api::breached::range_of(password);
            let name = if i % 2 == 0 {
                prefix.clone()
            } else {
                format!("{prefix}.txt")
            };
            let range = format!(
                "0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n{suffix}:42\r\nFFFFF6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n"
            );
            std::fs::write(dir.join(name), range).unwrap();
        }
        Self(dir)
    }

    /// A range for `password` that lists other suffixes only, and its own with count 0.
    fn padded(&self, password: &str) {
        let (prefix, suffix) = api::breached::range_of(password);
        let range = format!("0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n{suffix}:0\r\n");
        std::fs::write(self.0.join(prefix), range).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Ranges {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BREACHED: &str = "purple monkey dishwasher 1987";
const ALSO_BREACHED: &str = "tangerine lighthouse parade 55";

async fn sign_up(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post("/v1/users", json!({ "email": email, "password": password }))
        .await
}

#[tokio::test]
async fn a_breached_password_is_refused_at_sign_up_and_reset_and_the_link_stays_usable() {
    let ranges = Ranges::listing(&[BREACHED, ALSO_BREACHED]);
    ranges.padded(STRONG);
    ranges.padded(STRONGER);
    let app = spawn_with(&[("PWNED_PASSWORDS_DIR", ranges.path())]).await;

    for password in [BREACHED, ALSO_BREACHED] {
        let r = sign_up(&app, "ann@example.org", password).await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "breached_password").await;
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(users, 0, "nothing written");
    // Listed only as padding (count 0): not a breach.
    let user = app.create_user("ann@example.org", STRONG).await;

    let token = app.mint(Purpose::PasswordReset, user).await;
    let reset = |password: &'static str| {
        app.post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": password }),
        )
    };
    assert_error(
        reset(BREACHED).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "breached_password",
    )
    .await;
    assert_eq!(reset(STRONGER).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.audit_outcomes("password_reset").await,
        ["breached_password", "success"]
    );

    // The reset form says so in the page's language.
    let token = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .client
        .post(app.url("/reset-password"))
        .header("accept-language", "de")
        .form(&[
            ("token", token.as_str()),
            ("password", BREACHED),
            ("password_confirm", BREACHED),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("Datenleck"));
}

#[tokio::test]
async fn a_range_that_cannot_be_read_passes_when_failing_open_and_refuses_when_closed() {
    let empty = Ranges::listing(&[]);
    let open = spawn_with(&[("PWNED_PASSWORDS_DIR", empty.path())]).await;
    assert_eq!(
        sign_up(&open, "ann@example.org", STRONG).await.status(),
        StatusCode::ACCEPTED
    );
    let closed = spawn_with(&[
        ("PWNED_PASSWORDS_DIR", empty.path()),
        ("PWNED_PASSWORDS_FAIL", "closed"),
    ])
    .await;
    let r = sign_up(&closed, "ann@example.org", STRONG).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}
