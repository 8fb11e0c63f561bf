//! The HTML pages: scanner-safe links, the same rules as the JSON endpoints, security headers.

use reqwest::{Response, StatusCode};
use shared::{message::Job, token::Purpose};

use crate::helpers::{STRONG, STRONGER, spawn_app, spawn_with};

fn assert_page_headers(r: &Response) {
    let h = r.headers();
    assert_eq!(h["referrer-policy"], "strict-origin");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
}

#[tokio::test]
async fn the_forgot_page_answers_every_address_alike_and_shows_the_ip_limit() {
    let app = spawn_with(&[("RATE_LIMIT_IP_PER_HOUR", "2")]).await;
    app.create_user("known@example.org", STRONG).await;
    let get = app.get("/forgot-password").await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_page_headers(&get);
    let html = get.text().await.unwrap();
    // The page's own policy is the header's: a stricter `<meta>` would turn our own forms'
    // `Origin` into `null`, a looser one would leak the token in a `Referer`.
    assert!(html.contains(r#"<meta name="referrer" content="strict-origin">"#));
    assert!(
        html.contains(r#"<label for="email">"#) && html.contains(r#"id="email""#),
        "labelled field"
    );

    let known = app
        .form("/forgot-password", &[("email", "known@example.org")])
        .await;
    assert_eq!(known.status(), StatusCode::OK);
    let known = known.text().await.unwrap();
    let unknown = app
        .form("/forgot-password", &[("email", "nobody@example.org")])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(known, unknown, "the same page for every address");
    assert_eq!(app.jobs(2).await.len(), 2);

    let limited = app
        .form("/forgot-password", &[("email", "x@example.org")])
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().get("retry-after").is_some());
    assert!(limited.text().await.unwrap().contains("Too many requests"));

    let bad = app
        .form("/forgot-password", &[("email", "not an address")])
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("valid email"));
}

#[tokio::test]
async fn opening_a_reset_link_any_number_of_times_changes_nothing() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let link = format!("/reset-password?token={token}");
    for _ in 0..20 {
        let r = app.get(&link).await;
        assert_eq!(r.status(), StatusCode::OK);
        let head = app.client.head(app.url(&link)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        // What a scanner loads with the page.
        assert_eq!(app.get("/assets/app.css").await.status(), StatusCode::OK);
        assert_eq!(
            app.get("/assets/clean-url.js").await.status(),
            StatusCode::OK
        );
    }
    let r = app.get(&link).await;
    assert_page_headers(&r);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(r#"name="token" value="{token}""#)),
        "the token travels in the form"
    );
    assert!(html.contains(r#"type="password""#) && html.contains("password_confirm"));
    assert!(
        !html.contains("ann@example.org"),
        "the page does not show the address"
    );
    assert!(html.contains(r#"<script src="/assets/clean-url.js""#));
    assert_eq!(app.password_version(user).await, 1);

    // Mismatch and weak passwords leave the link usable.
    let r = app
        .form(
            "/reset-password",
            &[
                ("token", &token),
                ("password", STRONGER),
                ("password_confirm", "other"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("not the same"));
    let r = app
        .form(
            "/reset-password",
            &[
                ("token", &token),
                ("password", "password1"),
                ("password_confirm", "password1"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("too easy to guess"));

    let r = app
        .form(
            "/reset-password",
            &[
                ("token", &token),
                ("password", STRONGER),
                ("password_confirm", STRONGER),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/reset-password/done");
    let done = app.get("/reset-password/done").await.text().await.unwrap();
    assert!(done.contains("Sign in") && done.contains("https://account.example.test/"));
    assert_eq!(app.password_version(user).await, 2);
    assert!(matches!(
        app.jobs(1).await.remove(0).envelope().job,
        Job::PasswordChanged { .. }
    ));

    // The used link now shows a page without a form, pointing to a new link.
    let r = app.get(&link).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("already been used") && html.contains(r#"href="/forgot-password""#));
    assert!(!html.contains(r#"type="password""#));
}

#[tokio::test]
async fn expired_and_tampered_links_get_their_own_page_and_no_link_gets_the_code_form() {
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let path = format!("/reset-password?token={tampered}");
    let r = app.get(&path).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("not valid") && !html.contains(r#"type="password""#),
        "{path}: {html}"
    );
    // Without a link: the form that takes the email's code instead.
    for path in ["/reset-password", "/reset-password?token="] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains(r#"action="/reset-password/code""#)
                && html.contains(r#"name="code""#)
                && html.contains(r#"autocomplete="one-time-code""#)
                && !html.contains(r#"name="token""#),
            "{path}: {html}"
        );
    }
    app.clock.advance(chrono::Duration::seconds(3601));
    let html = app
        .get(&format!("/reset-password?token={token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("expired"), "{html}");
}

#[tokio::test]
async fn pages_speak_simplified_chinese_when_asked() {
    let app = spawn_app().await;
    let html = app
        .client
        .get(app.url("/forgot-password"))
        .header("accept-language", "zh-CN,zh;q=0.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"<html lang="zh-CN">"#) && html.contains("忘记密码"),
        "{html}"
    );
}

#[tokio::test]
async fn a_verification_link_needs_a_click_not_just_a_visit() {
    let app = spawn_app().await;
    let user = app.sign_up("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::EmailVerify, user).await;
    for _ in 0..5 {
        assert_eq!(
            app.get(&format!("/verify-email?token={token}"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let verified: bool =
        sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(!verified, "opening the link verified nothing");
    // The page asks for the password and offers the way out for someone who never signed up.
    let page = app
        .get(&format!("/verify-email?token={token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"name="password""#), "{page}");
    assert!(page.contains(r#"href="/forgot-password""#), "{page}");
    // A wrong password: 401, the form again with an explanation, the link still usable.
    let wrong = app
        .form(
            "/verify-email",
            &[("token", &token), ("password", "not the password at all 1")],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let html = wrong.text().await.unwrap();
    assert!(html.contains("not the password of this account"), "{html}");
    assert!(html.contains(r#"name="token""#), "{html}");
    let r = app
        .form("/verify-email", &[("token", &token), ("password", STRONG)])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("confirmed"));
    let again = app
        .form("/verify-email", &[("token", &token), ("password", STRONG)])
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_form_that_cannot_be_read_gets_the_page_that_says_so_in_its_language_and_changes_nothing()
{
    let app = spawn_app().await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let token = app.mint(Purpose::PasswordReset, user).await;
    let version = app.password_version(user).await;
    // Each form without the fields it needs (a reset with no confirmation, a code form
    // without a code).
    let forms: [(&str, Vec<(&str, &str)>); 5] = [
        ("/forgot-password", vec![]),
        (
            "/reset-password",
            vec![("token", &token), ("password", STRONGER)],
        ),
        ("/reset-password/code", vec![("email", "ann@example.org")]),
        ("/verify-email", vec![("password", STRONG)]),
        ("/lock-account", vec![]),
    ];
    for (path, fields) in &forms {
        let r = app.form(path, fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("The form could not be read"),
            "{path}: {html}"
        );
        let r = app
            .client
            .post(app.url(path))
            .header("accept-language", "zh-CN")
            .form(fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("无法读取表单"), "{path}: {html}");
    }
    // The link was only carried, never used.
    assert_eq!(app.password_version(user).await, version);
    assert_eq!(
        app.form(
            "/reset-password",
            &[
                ("token", &token),
                ("password", STRONGER),
                ("password_confirm", STRONGER)
            ]
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    assert!(
        app.drain_jobs()
            .await
            .iter()
            .all(|job| !matches!(job.job, shared::message::Job::PasswordResetRequested { .. }))
    );
}
