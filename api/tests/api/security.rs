//! Attacks that combine endpoints or abuse budgets: the sign-up + sign-in account oracle, the
//! pre-account takeover, spraying and stuffing, link guessing, cross-site form posts, caller
//! chosen request ids, Unicode spellings of one mailbox, old argon2 parameters, and one
//! client's hashing flood.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::{message::Job, token::Purpose};
use uuid::Uuid;

use crate::helpers::{
    STRONG, STRONGER, TestApp, assert_error, fingerprint, sign_in_answer, spawn_app, spawn_with,
};

const ATTACKER_PASSWORD: &str = "attacker chosen passphrase 1";

/// A JSON POST as if from `client` behind the trusted proxy (tests run with
/// `TRUSTED_PROXIES=127.0.0.1/32` where they use this).
async fn post_from(app: &TestApp, client: &str, path: &str, body: Value) -> Response {
    app.client
        .post(app.url(path))
        .header("x-forwarded-for", client)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn retry_after(r: &Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn is_verified(app: &TestApp, user: Uuid) -> bool {
    sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

async fn stored_hash(app: &TestApp, user: Uuid) -> String {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn signing_up_and_then_in_tells_nothing_about_whether_the_address_was_taken() {
    let app = spawn_app().await;
    // One taken address verified by its owner, one taken but never verified.
    app.create_user("owner@example.org", STRONG).await;
    app.sign_up("pending@example.org", STRONG).await;
    let mut answers = Vec::new();
    for address in [
        "owner@example.org",
        "pending@example.org",
        "fresh@example.org",
    ] {
        let body = json!({ "email": address, "password": ATTACKER_PASSWORD });
        let up = fingerprint(app.post("/v1/users", body.clone()).await).await;
        let sign_in = fingerprint(app.post("/v1/sessions", body).await).await;
        answers.push((address, up, sign_in));
    }
    let (_, first_up, first_in) = &answers[0];
    assert_eq!(first_up.0, StatusCode::ACCEPTED);
    assert_eq!(first_in.0, StatusCode::UNAUTHORIZED);
    for (address, up, sign_in) in &answers {
        assert_eq!(up, first_up, "sign-up answered {address} differently");
        assert_eq!(sign_in, first_in, "sign-in answered {address} differently");
    }
}

#[tokio::test]
async fn unverified_accounts_get_the_401_of_a_wrong_password_after_the_same_work() {
    let app = spawn_app().await;
    app.create_user("verified@example.org", STRONG).await;
    app.sign_up("unverified@example.org", STRONG).await;
    let mut answers = Vec::new();
    for (address, password) in [
        ("unverified@example.org", STRONG), // the right password, not verified
        ("verified@example.org", STRONGER), // a wrong password
        ("nobody@example.org", STRONG),     // no account
    ] {
        let before = app.state.hasher.verifications();
        let r = sign_in_answer(&app, address, password).await;
        assert_eq!(
            app.state.hasher.verifications(),
            before + 1,
            "{address}: one argon2 verification"
        );
        answers.push(fingerprint(r).await);
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    assert_eq!(
        app.audit_outcomes("sign_in").await,
        ["unverified", "invalid_credentials", "invalid_credentials"]
    );
}

#[tokio::test]
async fn a_stranger_who_signs_up_someone_elses_address_never_gets_the_account() {
    let app = spawn_app().await;
    let victim = "victim@example.org";
    // The attacker registers the victim's address with a password of their choosing.
    let user = app.sign_up(victim, ATTACKER_PASSWORD).await;
    let r = sign_in_answer(&app, victim, ATTACKER_PASSWORD).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // A session opened the way sign-in used to allow is worth nothing while unverified.
    let (old_session, _) = app
        .state
        .sessions
        .create(
            user,
            app.password_version(user).await,
            chrono::Utc::now(),
            &origin(),
        )
        .await
        .unwrap();
    let old_session = old_session.expose();
    assert_eq!(
        app.me(&old_session).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The victim opens the emailed link and tries everything a person who never chose the
    // attacker's password can: no password, an empty one, their usual ones.
    let link = app.mint(Purpose::EmailVerify, user).await;
    let r = app.post("/v1/email/verify", json!({ "token": link })).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    for guess in ["", STRONG, "my usual password 2024", "Password123!"] {
        let r = app.verify_answer(&link, guess).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let page = app
            .form("/verify-email", &[("token", &link), ("password", guess)])
            .await;
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED, "{guess:?}");
    }
    let page = app
        .get(&format!("/verify-email?token={link}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"href="/forgot-password""#), "{page}");
    assert!(
        !is_verified(&app, user).await,
        "nothing verified the address"
    );
    let r = sign_in_answer(&app, victim, ATTACKER_PASSWORD).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        app.audit_outcomes("email_verify").await,
        ["wrong_password"; 8]
    );

    // The victim recovers the account through forgot-password.
    assert_eq!(app.forgot(victim).await.status(), StatusCode::ACCEPTED);
    let reset = app.mint(Purpose::PasswordReset, user).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": reset, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        is_verified(&app, user).await,
        "a reset verifies the address"
    );
    let session = app.login(victim, STRONGER).await;
    assert_eq!(app.me(&session).await.status(), StatusCode::OK);
    let r = sign_in_answer(&app, victim, ATTACKER_PASSWORD).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        app.me(&old_session).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The attacker's verification link is dead too (the password it was issued under is gone).
    let r = app.verify_answer(&link, ATTACKER_PASSWORD).await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
}

#[tokio::test]
async fn a_wrong_password_leaves_the_verification_link_usable_and_verification_ends_old_sessions() {
    let app = spawn_app().await;
    let user = app.sign_up("ann@example.org", STRONG).await;
    let (old_session, _) = app
        .state
        .sessions
        .create(
            user,
            app.password_version(user).await,
            chrono::Utc::now(),
            &origin(),
        )
        .await
        .unwrap();
    let link = app.mint(Purpose::EmailVerify, user).await;
    let r = app.verify_answer(&link, STRONGER).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = app.verify_answer(&link, STRONG).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(is_verified(&app, user).await);
    assert_eq!(
        app.state
            .sessions
            .lookup(&old_session, chrono::Utc::now())
            .await
            .unwrap(),
        None,
        "the session from before verification is gone"
    );
    assert_eq!(
        app.audit_outcomes("email_verify").await,
        ["wrong_password", "success"]
    );
}

#[tokio::test]
async fn sign_in_budgets_per_ip_and_per_address_stop_spraying_and_stuffing() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_IP_PER_HOUR", "5"),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "4"),
    ])
    .await;
    app.create_user("known@example.org", STRONG).await;
    let attempt = |client: &'static str, email: String| {
        let app = &app;
        async move {
            post_from(
                app,
                client,
                "/v1/sessions",
                json!({ "email": email, "password": STRONGER }),
            )
            .await
        }
    };

    // Spraying: one IP, one password, many addresses.
    for i in 0..5 {
        let r = attempt("203.0.113.1", format!("s{i}@example.org")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt("203.0.113.1", "s9@example.org".into()).await;
    assert!(retry_after(&r) > 0);
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    // Other clients are unaffected.
    let r = attempt("203.0.113.2", "s9@example.org".into()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Stuffing: one address from many IPs; a known and an unknown address are refused alike.
    let mut refusals = Vec::new();
    for email in ["known@example.org", "unknown@example.org"] {
        for i in 0..4 {
            let client: &'static str = Box::leak(format!("198.51.100.{i}").into_boxed_str());
            let r = attempt(client, email.to_owned()).await;
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{email} from {client}"
            );
        }
        let r = attempt("192.0.2.200", email.to_owned()).await;
        assert!(retry_after(&r) > 0);
        let mut answer = fingerprint(r).await;
        answer.1.remove("retry-after");
        refusals.push(answer);
    }
    assert_eq!(refusals[0].0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusals[0], refusals[1], "known and unknown refused alike");
    let body: Value = serde_json::from_slice(&refusals[0].2).unwrap();
    assert_eq!(body["code"], "rate_limited_login");

    // Every refusal left an audit row naming the budget, the IP and the address pseudonym.
    app.settle_audit().await;
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT outcome, host(ip), address_hash FROM audit_events
         WHERE action = 'rate_limited' ORDER BY id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(outcomes, ["login_ip", "login_email", "login_email"]);
    assert_eq!(rows[0].1.as_deref(), Some("203.0.113.1"));
    assert!(
        rows.iter()
            .all(|r| r.2.as_ref().is_some_and(|h| h.len() == 64))
    );
    assert_ne!(rows[1].2, rows[2].2, "one pseudonym per address");
}

#[tokio::test]
async fn a_sign_in_refused_by_one_budget_spends_no_other() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_IP_PER_HOUR", "1"),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "2"),
    ])
    .await;
    app.create_user("target@example.org", STRONG).await;
    let body = json!({ "email": "target@example.org", "password": STRONGER });
    // The attacker's IP spends its one attempt, then hammers on.
    let r = post_from(&app, "203.0.113.9", "/v1/sessions", body.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for _ in 0..10 {
        let r = post_from(&app, "203.0.113.9", "/v1/sessions", body.clone()).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // A flood of refusals is one audit row (per budget, IP and address, per minute), not one
    // database write per request.
    assert_eq!(app.audit_outcomes("rate_limited").await, ["login_ip"]);
    // The owner, elsewhere, still has the address's second attempt.
    let r = post_from(
        &app,
        "192.0.2.10",
        "/v1/sessions",
        json!({ "email": "target@example.org", "password": STRONG }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn link_endpoints_have_a_per_ip_budget_and_a_valid_link_works_once_it_refills() {
    let app = spawn_with(&[
        ("RATE_LIMIT_TOKEN_PER_HOUR", "3"),
        ("RATE_LIMIT_WINDOW_SECS", "4"),
    ])
    .await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let link = app.mint(Purpose::PasswordReset, user).await;
    // The budgets start at 0: forget what the sign-up's verification counted.
    let mut redis = app.redis().await;
    let counted: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rl:*", app.keys.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!counted.is_empty(), "the sign-up was counted");
    let _: () = redis::cmd("DEL")
        .arg(&counted)
        .query_async(&mut redis)
        .await
        .unwrap();
    let bad = json!({ "token": "guess.guess.guess", "new_password": STRONGER });
    for _ in 0..3 {
        let r = app.post("/v1/password/reset", bad.clone()).await;
        assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    }
    // Spent: every link endpoint, JSON or page, GET or POST, answers a generic 429 before
    // looking at the link, even a valid one.
    let good = json!({ "token": link, "new_password": STRONGER });
    let r = app.post("/v1/password/reset", good.clone()).await;
    assert!(retry_after(&r) > 0);
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    let r = app.verify_answer(&link, STRONG).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    for r in [
        app.get(&format!("/reset-password?token={link}")).await,
        app.get(&format!("/verify-email?token={link}")).await,
        app.form(
            "/reset-password",
            &[
                ("token", &link),
                ("password", STRONGER),
                ("password_confirm", STRONGER),
            ],
        )
        .await,
        app.form("/verify-email", &[("token", &link), ("password", STRONG)])
            .await,
    ] {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
        assert!(r.text().await.unwrap().contains("Too many requests"));
    }
    // Once the window has slid, the valid link still works, once.
    let reset = e2e::poll_until(Duration::from_secs(20), || async {
        let r = app.post("/v1/password/reset", good.clone()).await;
        (r.status() != StatusCode::TOO_MANY_REQUESTS).then_some(r)
    })
    .await
    .expect("the budget refills");
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    app.login("ann@example.org", STRONGER).await;
}

#[tokio::test]
async fn a_forgot_request_refused_by_the_ip_budget_does_not_spend_the_address_budget() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_IP_PER_HOUR", "1"),
        ("RATE_LIMIT_EMAIL_PER_HOUR", "2"),
    ])
    .await;
    let body = json!({ "email": "victim@example.org" });
    let r = post_from(&app, "203.0.113.5", "/v1/password/forgot", body.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for _ in 0..5 {
        let r = post_from(&app, "203.0.113.5", "/v1/password/forgot", body.clone()).await;
        assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    }
    let r = post_from(&app, "192.0.2.44", "/v1/password/forgot", body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        within_budget(&app, 2).await,
        [true, true],
        "the refused requests spent nothing"
    );
}

/// The `within_budget` verdicts of the next `n` forgot-password jobs.
async fn within_budget(app: &TestApp, n: usize) -> Vec<bool> {
    app.jobs(n)
        .await
        .iter()
        .map(|j| match j.envelope().job {
            Job::PasswordResetRequested { within_budget, .. } => within_budget,
            ref other => panic!("unexpected job {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn rate_limit_windows_run_on_redis_time_not_the_replicas_clock() {
    let app = spawn_with(&[("RATE_LIMIT_WINDOW_SECS", "5")]).await; // 3 per address
    for _ in 0..3 {
        app.forgot("clock@example.org").await;
    }
    assert_eq!(within_budget(&app, 3).await, [true, true, true]);
    // A replica whose clock runs two hours ahead buys nobody a fresh budget.
    app.clock.advance(chrono::Duration::hours(2));
    app.forgot("clock@example.org").await;
    assert_eq!(within_budget(&app, 1).await, [false]);
    // Redis's own time does: within a few seconds the window has slid.
    let refilled = e2e::poll_until(Duration::from_secs(20), || async {
        app.forgot("clock@example.org").await;
        within_budget(&app, 1).await[0].then_some(())
    })
    .await;
    assert!(refilled.is_some(), "the window slides on Redis time");
}

#[tokio::test]
async fn request_ids_are_ours_and_a_callers_id_never_reaches_the_audit_trail() {
    let app = spawn_app().await;
    let chosen = "00000000-0000-4000-8000-000000000000";
    let r = app
        .client
        .post(app.url("/v1/users"))
        .header("x-request-id", chosen)
        .json(&json!({ "email": "ids@example.org", "password": STRONG }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ours = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(ours, chosen);
    assert!(Uuid::parse_str(&ours).is_ok(), "{ours}");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT request_id FROM audit_events WHERE action = 'sign_up'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some(ours.as_str()));
    let job = app.jobs(1).await.remove(0).envelope();
    assert_eq!(job.trace.request_id.as_deref(), Some(ours.as_str()));
}

#[tokio::test]
async fn one_mailbox_gets_one_account_and_one_budget_whatever_the_spelling_of_its_domain() {
    let app = spawn_app().await; // 3 forgot-password requests per address
    let spellings = [
        "ann@bücher.de",
        "ann@BÜCHER.DE",
        "ann@xn--bcher-kva.de",
        "ann@ｂüｃｈｅｒ.de",
    ];
    for address in spellings {
        let r = app
            .post("/v1/users", json!({ "email": address, "password": STRONG }))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{address}");
    }
    let kinds: Vec<&str> = app
        .jobs(4)
        .await
        .iter()
        .map(|j| j.envelope().job.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "email_verification",
            "account_exists_notice",
            "account_exists_notice",
            "account_exists_notice"
        ]
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(users, 1);
    for address in spellings {
        app.forgot(address).await;
    }
    let within = app
        .jobs(4)
        .await
        .iter()
        .filter(|j| {
            matches!(
                j.envelope().job,
                Job::PasswordResetRequested {
                    within_budget: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(within, 3, "one budget for every spelling");
}

#[tokio::test]
async fn a_successful_sign_in_rehashes_a_password_stored_with_old_parameters() {
    let app = spawn_app().await; // hashes with m=64, t=1
    let user = app.create_user("old@example.org", STRONG).await;
    let version = app.password_version(user).await;
    // A hash made under older, cheaper parameters.
    let old = {
        use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
        let params = Params::new(32, 1, 1, None).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(STRONG.as_bytes())
            .unwrap()
            .to_string()
    };
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(user)
        .bind(&old)
        .execute(&app.state.db)
        .await
        .unwrap();
    let r = sign_in_answer(&app, "old@example.org", STRONGER).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        stored_hash(&app, user).await,
        old,
        "a failed sign-in changes nothing"
    );
    app.login("old@example.org", STRONG).await;
    let new = stored_hash(&app, user).await;
    assert!(new.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{new}");
    assert_eq!(app.password_version(user).await, version, "same password");
    app.login("old@example.org", STRONG).await;
}

#[tokio::test]
async fn forms_refuse_cross_site_posts() {
    let app = spawn_app().await; // PUBLIC_BASE_URL https://account.example.test
    let user = app.create_user("ann@example.org", STRONG).await;
    let link = app.mint(Purpose::PasswordReset, user).await;
    let post = |path: &'static str,
                fields: Vec<(&'static str, String)>,
                headers: &[(&'static str, &'static str)]| {
        let mut request = app.client.post(app.url(path)).form(&fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let reset_fields = vec![
        ("token", link.clone()),
        ("password", STRONGER.to_owned()),
        ("password_confirm", STRONGER.to_owned()),
    ];
    let forgot_fields = vec![("email", "ann@example.org".to_owned())];
    for headers in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[
            ("origin", "https://account.example.test"),
            ("sec-fetch-site", "cross-site"),
        ][..],
        &[("origin", "https://account.example.test.evil.example")][..],
    ] {
        for (path, fields) in [
            ("/forgot-password", forgot_fields.clone()),
            ("/reset-password", reset_fields.clone()),
            (
                "/verify-email",
                vec![("token", link.clone()), ("password", STRONG.to_owned())],
            ),
        ] {
            let r = post(path, fields, headers).await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path} {headers:?}");
            assert!(r.text().await.unwrap().contains("another website"));
        }
    }
    assert!(app.drain_jobs().await.is_empty(), "nothing was queued");
    // The same forms from our own origin work, and the link was left untouched.
    let same = [
        ("origin", "https://account.example.test"),
        ("sec-fetch-site", "same-origin"),
    ];
    let r = post("/forgot-password", forgot_fields, &same)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post("/reset-password", reset_fields, &same).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    app.login("ann@example.org", STRONGER).await;
}

#[tokio::test]
async fn sign_in_sign_out_and_refusals_are_audited_per_account() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_PER_HOUR", "3")]).await;
    let user = app.create_user("ann@example.org", STRONG).await;
    let session = app.login("ann@example.org", STRONG).await;
    let r = app
        .client
        .delete(app.url("/v1/sessions/current"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Failures count (the success did not): the fourth failure is refused.
    for _ in 0..3 {
        sign_in_answer(&app, "ann@example.org", STRONGER).await;
    }
    let r = sign_in_answer(&app, "ann@example.org", STRONGER).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    type Row = (String, String, Option<Uuid>, Option<String>, Option<String>);
    app.settle_audit().await;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT action, outcome, user_id, host(ip), address_hash FROM audit_events
             WHERE action IN ('sign_in', 'sign_out', 'rate_limited') ORDER BY id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    let events: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        events,
        [
            ("sign_in", "success"),
            ("sign_out", "success"),
            ("sign_in", "invalid_credentials"),
            ("sign_in", "invalid_credentials"),
            ("sign_in", "invalid_credentials"),
            ("rate_limited", "login_pair"),
        ]
    );
    assert_eq!(rows[0].2, Some(user));
    assert_eq!(rows[1].2, Some(user));
    assert!(rows.iter().all(|r| r.3.as_deref() == Some("127.0.0.1")));
    let pseudonym = rows[0].4.clone().expect("address pseudonym");
    for i in [2, 3, 4, 5] {
        assert_eq!(rows[i].4.as_ref(), Some(&pseudonym), "row {i}");
    }
}

#[tokio::test]
async fn one_client_flooding_sign_ins_does_not_starve_another_of_hashing() {
    // One hashing slot, real cost: a hash takes long enough for a queue to form.
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HASH_CONCURRENCY", "1"),
        ("HASH_PER_CLIENT", "1"),
        ("ARGON2_MEMORY_KIB", "8192"),
        ("ARGON2_ITERATIONS", "4"),
    ])
    .await;
    app.create_user("patient@example.org", STRONG).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let flood = join_all((0..20).map(|i| {
        let finished = finished.clone();
        let app = &app;
        async move {
            let r = post_from(
                app,
                "203.0.113.66",
                "/v1/sessions",
                json!({ "email": format!("nobody{i}@example.org"), "password": STRONG }),
            )
            .await;
            finished.fetch_add(1, Ordering::SeqCst);
            r.status()
        }
    }));
    // The other client arrives once the flood is queued (its first answer is out).
    let patient = async {
        e2e::poll_until(Duration::from_secs(30), || async {
            (finished.load(Ordering::SeqCst) >= 1).then_some(())
        })
        .await
        .expect("the flood is being answered");
        let before = finished.load(Ordering::SeqCst);
        let r = post_from(
            &app,
            "192.0.2.7",
            "/v1/sessions",
            json!({ "email": "patient@example.org", "password": STRONG }),
        )
        .await;
        (r.status(), before, finished.load(Ordering::SeqCst) - before)
    };
    let (statuses, (status, before, overtaken_by)) = tokio::join!(flood, patient);
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    println!(
        "flood answers before the other client's request: {before}, while it waited: {overtaken_by}"
    );
    assert!(
        overtaken_by <= 3,
        "the other client waited for {overtaken_by} of the flood's {} queued hashes",
        20 - before
    );
}

#[tokio::test]
async fn accounts_stored_with_a_unicode_domain_are_rekeyed_to_the_ascii_form() {
    let app = spawn_app().await;
    // Two accounts as they were stored before domains were normalised to ASCII; the second
    // mailbox also has an account under the ASCII spelling already.
    let ann = app.create_user("ann@xn--bcher-kva.de", STRONG).await;
    let bob = app.create_user("bob@xn--bcher-kva.de", STRONG).await;
    sqlx::query(
        "UPDATE users SET email = 'ann@bücher.de', email_key = 'ann@bücher.de' WHERE id = $1",
    )
    .bind(ann)
    .execute(&app.state.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash)
         SELECT gen_random_uuid(), 'Bob@bücher.de', 'bob@bücher.de', password_hash
         FROM users WHERE id = $1",
    )
    .bind(bob)
    .execute(&app.state.db)
    .await
    .unwrap();
    let r = sign_in_answer(&app, "ann@bücher.de", STRONG).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "not found under the new key"
    );

    let rekeyed = api::store::maintenance::rekey_unicode_domains(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        rekeyed, 1,
        "ann re-keyed; bob's duplicate left for an operator"
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT email_key FROM users ORDER BY email_key")
        .fetch_all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        keys,
        [
            "ann@xn--bcher-kva.de",
            "bob@bücher.de",
            "bob@xn--bcher-kva.de"
        ]
    );
    app.login("ann@bücher.de", STRONG).await;
    app.login("ANN@XN--BCHER-KVA.DE", STRONG).await;
    // Run at every start (old replicas may still write old-form rows during a deploy), and
    // recorded.
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM maintenance_tasks WHERE name = 'idna-domain-keys'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(done, 1);
}

#[tokio::test]
async fn sign_in_budgets_count_failures_and_hide_when_others_failed() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "2")]).await;
    app.create_user("owner@example.org", STRONG).await;
    // The owner's own sign-ins use up nothing.
    for _ in 0..5 {
        app.login("owner@example.org", STRONG).await;
    }
    for _ in 0..2 {
        let r = sign_in_answer(&app, "owner@example.org", STRONGER).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = sign_in_answer(&app, "owner@example.org", STRONG).await;
    // The whole window, not the time until the oldest failure expires (which would date
    // someone else's attempts).
    assert_eq!(retry_after(&r), 3600);
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
}

#[tokio::test]
async fn password_checks_at_verification_draw_on_the_sign_in_budget_of_the_address() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "2")]).await;
    let user = app.sign_up("leaked@example.org", STRONG).await;
    let link = app.mint(Purpose::EmailVerify, user).await;
    for guess in ["first guess password 1", "second guess password 2"] {
        let r = app.verify_answer(&link, guess).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Whoever holds the link cannot go on guessing, whatever they try next.
    let r = app.verify_answer(&link, STRONG).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
    let page = app
        .form("/verify-email", &[("token", &link), ("password", STRONG)])
        .await;
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!is_verified(&app, user).await);
    let r = sign_in_answer(&app, "leaked@example.org", STRONG).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
}

/// Where a session the test opens directly comes from.
fn origin() -> api::sessions::Origin {
    api::sessions::Origin {
        device: "Unknown device".into(),
        network: "127.0.0.0/24".into(),
    }
}
