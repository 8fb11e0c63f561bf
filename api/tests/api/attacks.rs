//! What an attacker tries: telling registered addresses from unknown ones, racing a link
//! against itself or against a sign-in, and hostile values in every field.

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::token::{Claims, Purpose};

use crate::helpers::{STRONG, STRONGER, TestApp, fingerprint, spawn_app};

/// One request of every public endpoint that takes an address, for `email`.
async fn probes(app: &TestApp, email: &str) -> Vec<(&'static str, Response)> {
    let password = "a wrong but acceptable password 7";
    vec![
        (
            "POST /v1/users",
            app.post("/v1/users", json!({ "email": email, "password": STRONGER }))
                .await,
        ),
        (
            "POST /v1/sessions",
            app.post(
                "/v1/sessions",
                json!({ "email": email, "password": password }),
            )
            .await,
        ),
        (
            "POST /v1/password/forgot",
            app.post("/v1/password/forgot", json!({ "email": email }))
                .await,
        ),
        (
            "POST /forgot-password",
            app.form("/forgot-password", &[("email", email)]).await,
        ),
    ]
}

#[tokio::test]
async fn no_endpoint_tells_a_registered_address_from_an_unknown_one() {
    let app = spawn_app().await;
    app.create_user("known@example.org", STRONG).await;
    // Every spelling of the registered address, and unknown ones of the same shape.
    let registered = ["known@example.org", "Known@Example.ORG"];
    let unknown = ["nobody@example.org", "Nobody@Example.ORG"];
    for (known, other) in registered.iter().zip(unknown) {
        let a = probes(&app, known).await;
        let b = probes(&app, other).await;
        for ((endpoint, ra), (_, rb)) in a.into_iter().zip(b) {
            let (fa, fb) = (fingerprint(ra).await, fingerprint(rb).await);
            assert!(!fa.0.is_server_error(), "{endpoint}: {} for {known}", fa.0);
            assert_eq!(fa, fb, "{endpoint} answers {known} and {other} differently");
        }
    }
}

#[tokio::test]
async fn of_two_links_minted_at_once_only_the_newest_works() {
    let app = spawn_app().await;
    for round in 0..5 {
        let user = app
            .create_user(&format!("twice{round}@example.org"), STRONG)
            .await;
        let (a, b) = tokio::join!(
            app.mint(Purpose::PasswordReset, user),
            app.mint(Purpose::PasswordReset, user)
        );
        let now = chrono::Utc::now().timestamp();
        let generation = |token: &str| {
            app.token_keys
                .verify::<Claims>(Purpose::PasswordReset, token, now, 3600)
                .unwrap()
                .value
                .r#gen
        };
        assert_ne!(generation(&a), generation(&b), "two links, two generations");
        let (older, newer) = if generation(&a) < generation(&b) {
            (a, b)
        } else {
            (b, a)
        };
        // The older one first: refused; the newest still works afterwards.
        let r = app
            .post(
                "/v1/password/reset",
                json!({ "token": older, "new_password": STRONGER }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "round {round}");
        let r = app
            .post(
                "/v1/password/reset",
                json!({ "token": newer, "new_password": STRONGER }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "round {round}");
    }
}

#[tokio::test]
async fn a_sign_in_racing_a_reset_never_keeps_a_session_with_the_old_password() {
    let app = spawn_app().await;
    let mut logins_won = 0;
    for round in 0..10 {
        let email = format!("race{round}@example.org");
        let user = app.create_user(&email, STRONG).await;
        let token = app.mint(Purpose::PasswordReset, user).await;
        // Staggered starts, so the sign-in lands before, during and after the reset.
        let (login, reset) = tokio::join!(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(round * 3)).await;
                app.post(
                    "/v1/sessions",
                    json!({ "email": email, "password": STRONG }),
                )
                .await
            },
            app.post(
                "/v1/password/reset",
                json!({ "token": token, "new_password": STRONGER })
            )
        );
        assert_eq!(reset.status(), StatusCode::NO_CONTENT, "round {round}");
        match login.status() {
            StatusCode::CREATED => {
                logins_won += 1;
                let session = login.json::<Value>().await.unwrap()["session"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(
                    app.me(&session).await.status(),
                    StatusCode::UNAUTHORIZED,
                    "round {round}: a session made with the old password outlived the reset"
                );
            }
            StatusCode::UNAUTHORIZED => {}
            other => panic!("round {round}: login answered {other}"),
        }
        let old = app
            .post(
                "/v1/sessions",
                json!({ "email": email, "password": STRONG }),
            )
            .await;
        assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "round {round}");
        let new = app.login(&email, STRONGER).await;
        assert_eq!(app.me(&new).await.status(), StatusCode::OK);
    }
    println!("sign-in won the race in {logins_won} of 10 rounds");
}

/// Strings that break naive SQL, templates, HTML, headers, parsers and terminals.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "",
        " ",
        "' OR '1'='1",
        "\"; DROP TABLE users; --",
        "1; SELECT pg_sleep(10)--",
        "a@example.org' UNION SELECT password_hash FROM users --",
        "{{7*7}}",
        "{% for i in range(999999999) %}x{% endfor %}",
        "${7*7}",
        "#{7*7}",
        "<script>alert(1)</script>",
        "a@example.org\r\nBcc: victim@example.org",
        "a@example.org\nX-Injected: 1",
        "a\u{0}@example.org",
        "\u{202e}gro.elpmaxe@a",
        "a@example.org%0d%0aBcc:x@example.org",
        "../../../../etc/passwd",
        "%s%s%s%n",
        "a@[127.0.0.1]",
        "a@localhost",
        "@example.org",
        "a@",
        "a@@example.org",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    values.push("x".repeat(70_000)); // over the body limit
    values.push(format!("{}@example.org", "a".repeat(300)));
    values
}

/// Tokens that are broken, truncated, bombs or meant for something else.
fn hostile_tokens(app: &TestApp, valid_reset: &str, valid_verify: &str) -> Vec<String> {
    let now = chrono::Utc::now().timestamp();
    // Signed with the real key, compressed, and 1 MB once inflated: the decompression cap
    // must refuse it before anything reads it.
    let bomb_json = format!("{{\"uid\":\"{}\"}}", " ".repeat(1 << 20));
    let signed_bomb = app
        .token_keys
        .sign_bytes(Purpose::PasswordReset, bomb_json.as_bytes(), now);
    assert!(signed_bomb.starts_with('.'), "the bomb is compressed");
    assert!(signed_bomb.len() < 4096, "{}", signed_bomb.len());
    let mut forged = signed_bomb.clone();
    forged.replace_range(1..2, if &forged[1..2] == "e" { "f" } else { "e" });
    vec![
        signed_bomb,
        forged,
        valid_reset[..valid_reset.len() / 2].to_owned(),
        valid_reset[..valid_reset.len() - 1].to_owned(),
        format!("{valid_reset}x"),
        format!("{valid_reset}."),
        valid_reset.replace('.', ".."),
        valid_reset.to_uppercase(),
        valid_verify.to_owned(), // the wrong purpose for a reset
        "....".into(),
        ".eJzrDw==.AAAA.AAAA".into(),
        "a".repeat(5000),
    ]
}

/// Asserts a clean client error: 4xx, and for JSON endpoints the `{code, message}` shape.
async fn assert_clean_4xx(what: &str, r: Response, json_shape: bool) {
    let status = r.status();
    let body = r.bytes().await.unwrap();
    assert!(
        status.is_client_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    if json_shape {
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{what}: {v}"
        );
    }
}

#[tokio::test]
async fn hostile_values_in_every_field_get_a_clean_4xx_and_change_nothing() {
    let app = spawn_app().await;
    let user = app.create_user("victim@example.org", STRONG).await;
    let reset = app.mint(Purpose::PasswordReset, user).await;
    let verify = app.mint(Purpose::EmailVerify, user).await;
    let values = hostile_values();
    let tokens = hostile_tokens(&app, &reset, &verify);
    let mut requests = 0;

    for v in &values {
        // Address fields: each value is refused as an address (or the body as too large).
        for (path, body) in [
            ("/v1/users", json!({ "email": v, "password": v })),
            ("/v1/password/forgot", json!({ "email": v })),
        ] {
            let r = app.post(path, body).await;
            assert_clean_4xx(&format!("{path} {v:.40?}"), r, true).await;
            requests += 1;
        }
        // Sign-in: refused (422 for the address, 401 for the pair, 413 for the size).
        let r = app
            .post("/v1/sessions", json!({ "email": v, "password": v }))
            .await;
        assert_clean_4xx(&format!("/v1/sessions {v:.40?}"), r, true).await;
        let r = app
            .post(
                "/v1/sessions",
                json!({ "email": "victim@example.org", "password": v }),
            )
            .await;
        assert_clean_4xx(&format!("/v1/sessions password {v:.40?}"), r, true).await;
        // Token fields get every value too.
        for (path, body) in [
            (
                "/v1/password/reset",
                json!({ "token": v, "new_password": STRONGER }),
            ),
            ("/v1/email/verify", json!({ "token": v, "password": v })),
        ] {
            let r = app.post(path, body).await;
            assert_clean_4xx(&format!("{path} {v:.40?}"), r, true).await;
            requests += 1;
        }
        // The pages.
        let r = app.form("/forgot-password", &[("email", v)]).await;
        assert_clean_4xx(&format!("page forgot {v:.40?}"), r, false).await;
        let r = app
            .form(
                "/reset-password",
                &[("token", v), ("password", v), ("password_confirm", v)],
            )
            .await;
        assert_clean_4xx(&format!("page reset {v:.40?}"), r, false).await;
        let r = app
            .form("/verify-email", &[("token", v), ("password", v)])
            .await;
        assert_clean_4xx(&format!("page verify {v:.40?}"), r, false).await;
        requests += 5;
    }

    // Password fields: a password may be any text, so a strong hostile one is accepted, and
    // then it must be stored exactly (it signs in); a weak or oversized one is refused.
    let mut accepted = 0;
    for (i, v) in values.iter().enumerate() {
        let email = format!("decoy{i}@example.org");
        let decoy = app.create_user(&email, STRONG).await;
        let link = app.mint(Purpose::PasswordReset, decoy).await;
        let r = app
            .post(
                "/v1/password/reset",
                json!({ "token": link, "new_password": v }),
            )
            .await;
        requests += 1;
        if r.status() == StatusCode::NO_CONTENT {
            accepted += 1;
            let session = app.login(&email, v).await;
            assert_eq!(app.me(&session).await.status(), StatusCode::OK);
        } else {
            assert_clean_4xx(&format!("new_password {v:.40?}"), r, true).await;
        }
    }
    assert!(accepted < values.len(), "weak values must be refused");

    for t in &tokens {
        let r = app
            .post(
                "/v1/password/reset",
                json!({ "token": t, "new_password": STRONGER }),
            )
            .await;
        assert_clean_4xx(&format!("reset token {t:.40?}"), r, true).await;
        let r = app
            .post(
                "/v1/email/verify",
                json!({ "token": t, "password": STRONG }),
            )
            .await;
        // The verification link itself is the one valid token here: skip it for verify.
        if t != &verify {
            assert_clean_4xx(&format!("verify token {t:.40?}"), r, true).await;
        }
        let mut url = reqwest::Url::parse(&app.url("/reset-password")).unwrap();
        url.query_pairs_mut().append_pair("token", t);
        let r = app.client.get(url).send().await.unwrap();
        assert_clean_4xx(&format!("reset page token {t:.40?}"), r, false).await;
        requests += 3;
    }

    // Nothing changed: the account, its password and its links are as they were.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        users as usize,
        1 + values.len(),
        "no account from hostile sign-ups"
    );
    assert_eq!(app.password_version(user).await, 1);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": reset, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "the real link still works"
    );
    let session = app.login("victim@example.org", STRONGER).await;
    assert_eq!(app.me(&session).await.status(), StatusCode::OK);
    println!(
        "hostile input: {requests} requests, {} values, {} tokens",
        values.len(),
        tokens.len()
    );
}

#[tokio::test]
async fn many_concurrent_resets_and_logins_of_many_users_stay_consistent() {
    let app = spawn_app().await;
    let mut users = Vec::new();
    for i in 0..8 {
        let email = format!("crowd{i}@example.org");
        let id = app.create_user(&email, STRONG).await;
        users.push((email, app.mint(Purpose::PasswordReset, id).await));
    }
    // Every link submitted three times at once, interleaved with sign-ins.
    let mut futures = Vec::new();
    for (email, token) in &users {
        for _ in 0..3 {
            futures.push(app.post(
                "/v1/password/reset",
                json!({ "token": token, "new_password": STRONGER }),
            ));
            futures.push(app.post(
                "/v1/sessions",
                json!({ "email": email, "password": STRONG }),
            ));
        }
    }
    let answers = join_all(futures).await;
    let mut resets = 0;
    for r in answers {
        assert!(!r.status().is_server_error(), "{}", r.status());
        if r.status() == StatusCode::NO_CONTENT {
            resets += 1;
        }
    }
    assert_eq!(resets, users.len(), "one success per link");
    for (email, _) in &users {
        let r = app
            .post(
                "/v1/sessions",
                json!({ "email": email, "password": STRONG }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
