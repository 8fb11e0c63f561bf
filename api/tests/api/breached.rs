//! Breached passwords (`PWNED_PASSWORDS_DIR`): refused at sign-up, reset and the signed-in
//! change from range files the test writes, with the fail-open and fail-closed answers to a
//! range that is missing.

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
async fn a_breached_password_is_refused_at_sign_up_reset_and_change_and_the_link_stays_usable() {
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

    // And at the signed-in change: refused, the session and the password as they were.
    let session = app.login("ann@example.org", STRONGER).await;
    let version = app.password_version(user).await;
    let change = |password: &'static str| {
        app.client
            .post(app.url("/v1/account/password"))
            .bearer_auth(&session)
            .json(&json!({ "current_password": STRONGER, "new_password": password }))
            .send()
    };
    let r = change(BREACHED).await.unwrap();
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "breached_password").await;
    assert_eq!(app.password_version(user).await, version, "nothing changed");
    assert_eq!(app.me(&session).await.status(), StatusCode::OK);
    assert_eq!(
        change(STRONG).await.unwrap().status(),
        StatusCode::CREATED,
        "a password only padding lists"
    );
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

/// A Pwned Passwords range API on loopback (`GET /range/{prefix}`): answers the ranges of
/// the passwords it lists, after `delay`, and records what every request carried.
struct RangeApi {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

/// What one request to the range API carried.
#[derive(Debug, Clone)]
struct Seen {
    path_and_query: String,
    padding: Option<String>,
    body_len: usize,
}

impl RangeApi {
    async fn serving(breached: &[&str], delay: std::time::Duration, status: u16) -> Self {
        use axum::{body::Bytes, http::Request};
        let ranges: std::collections::HashMap<String, String> = breached
            .iter()
            .map(|password| {
                let (prefix, suffix) = api::breached::range_of(password);
                let range = format!("0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n{suffix}:42\r\n");
                (prefix, range)
            })
            .collect();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request<axum::body::Body>| {
            let (ranges, recorded) = (ranges.clone(), recorded.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body: Bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
                let path_and_query = parts.uri.path_and_query().unwrap().to_string();
                recorded.lock().unwrap().push(Seen {
                    path_and_query: path_and_query.clone(),
                    padding: (parts.headers.get("add-padding"))
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body_len: body.len(),
                });
                tokio::time::sleep(delay).await;
                let prefix = path_and_query.trim_start_matches("/range/");
                // Unlisted ranges hold other passwords only, and padding.
                let range = ranges.get(prefix).cloned().unwrap_or_else(|| {
                    "0018A45C4D1DEF81644B54AB7F969B88D65:3\r\nFFFFF6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n"
                        .to_owned()
                });
                (axum::http::StatusCode::from_u16(status).unwrap(), range)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/range/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_range_api_gets_five_hex_digits_and_nothing_else_and_its_verdict_holds() {
    let range_api = RangeApi::serving(&[BREACHED], std::time::Duration::ZERO, 200).await;
    let app = spawn_with(&[("PWNED_PASSWORDS_URL", &range_api.base)]).await;
    let r = sign_up(&app, "ann@example.org", BREACHED).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "breached_password").await;
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

    let seen = range_api.seen();
    let asked: Vec<&str> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    let range = |p: &str| format!("/range/{}", api::breached::range_of(p).0);
    assert_eq!(
        asked,
        [
            range(BREACHED),
            range(STRONG),
            range(BREACHED),
            range(STRONGER)
        ]
    );
    for s in &seen {
        assert_eq!(s.padding.as_deref(), Some("true"));
        assert_eq!(s.body_len, 0);
        let prefix = s.path_and_query.trim_start_matches("/range/");
        assert!(prefix.len() == 5 && prefix.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

#[tokio::test]
async fn a_range_api_too_slow_or_failing_passes_when_open_and_refuses_when_closed() {
    let slow = RangeApi::serving(&[], std::time::Duration::from_secs(5), 200).await;
    let failing = RangeApi::serving(&[], std::time::Duration::ZERO, 503).await;
    for range_api in [&slow, &failing] {
        let timeout = ("PWNED_PASSWORDS_TIMEOUT_MS", "300");
        let open = spawn_with(&[("PWNED_PASSWORDS_URL", &range_api.base), timeout]).await;
        let r = sign_up(&open, "ann@example.org", STRONG).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let closed = spawn_with(&[
            ("PWNED_PASSWORDS_URL", &range_api.base),
            ("PWNED_PASSWORDS_FAIL", "closed"),
            timeout,
        ])
        .await;
        let r = sign_up(&closed, "ann@example.org", STRONG).await;
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    }
}
