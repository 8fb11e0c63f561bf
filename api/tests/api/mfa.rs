//! Second factors (DESIGN.md §11): an authenticator app set up with the password and its
//! first code, asked for at sign-in, at a reset (link, code, and their pages), at a password
//! change and at its own removal; recovery codes spent once; every code accepted once.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::{
    clock::Clock as _,
    message::{Factor, Job, SecurityEvent},
    token::Purpose,
};
use uuid::Uuid;

use crate::helpers::{
    STRONG, STRONGER, TestApp, assert_error, sign_in_answer, spawn_app, spawn_with,
};

const ANN: &str = "ann@example.org";

/// An account with a confirmed authenticator app, as its owner set it up.
pub(crate) struct Enrolled {
    pub(crate) user: Uuid,
    pub(crate) session: String,
    pub(crate) secret: Vec<u8>,
    pub(crate) recovery_codes: Vec<String>,
}

async fn authed(
    app: &TestApp,
    session: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(session)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The app's code `steps` steps from the test clock's now.
pub(crate) fn code(app: &TestApp, secret: &[u8], steps: i64) -> String {
    let at = app.clock.now().timestamp() + steps * 30;
    api::mfa::totp::code_at(secret, u64::try_from(at).unwrap())
}

/// Moves the clock to the next step (a code is accepted once: the next one needs a new step).
fn next_step(app: &TestApp) {
    app.clock.advance(chrono::Duration::seconds(30));
}

pub(crate) async fn enrol(app: &TestApp, email: &str) -> Enrolled {
    let user = app.create_user(email, STRONG).await;
    let session = app.login(email, STRONG).await;
    let post = reqwest::Method::POST;
    let r = authed(
        app,
        &session,
        post.clone(),
        "/v1/mfa/totp",
        json!({ "password": STRONG }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = api::mfa::totp::decode(body["secret"].as_str().unwrap()).unwrap();
    let first = code(app, &secret, 0);
    let r = authed(
        app,
        &session,
        post,
        "/v1/mfa/totp/confirm",
        json!({ "code": first }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let recovery_codes: Vec<String> =
        serde_json::from_value(body["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery_codes.len(), 10);
    next_step(app);
    let added = security_events(app, 1).await;
    assert_eq!(
        added,
        [SecurityEvent::FactorAdded {
            factor: Factor::Totp
        }]
    );
    Enrolled {
        user,
        session,
        secret,
        recovery_codes,
    }
}

/// A sign-in's first step for an account with a factor: its `mfa_token`.
async fn first_step(app: &TestApp, email: &str) -> String {
    let r = sign_in_answer(app, email, STRONG).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no session, no device cookie yet"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert_eq!(body["expires_in"], 300);
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn second_step(app: &TestApp, token: &str, field: &str, value: &str) -> reqwest::Response {
    app.post(
        "/v1/sessions/mfa",
        json!({ "mfa_token": token, field: value }),
    )
    .await
}

/// Security notices queued (other jobs are read past) until `done` holds for the list, or
/// 10 s passed.
pub(crate) async fn notices(
    app: &TestApp,
    done: impl Fn(&[SecurityEvent]) -> bool,
) -> Vec<SecurityEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut events = Vec::new();
    while !done(&events) && std::time::Instant::now() < deadline {
        let queue = app.topology.jobs_queue();
        let wait = std::time::Duration::from_millis(500);
        for received in app.reader.take(&queue, 1, wait).await.unwrap() {
            if let Job::SecurityNotice { event, .. } = received.envelope().job {
                events.push(event);
            }
        }
    }
    events
}

/// The next `n` security notices queued (but those of sign-ins from a new browser).
pub(crate) async fn security_events(app: &TestApp, n: usize) -> Vec<SecurityEvent> {
    let others = |e: &&SecurityEvent| !matches!(e, SecurityEvent::NewSignIn { .. });
    let events = notices(app, |events| events.iter().filter(others).count() >= n).await;
    events.iter().filter(others).cloned().collect()
}

#[tokio::test]
async fn setting_up_an_app_takes_the_password_and_its_first_code_and_then_sign_in_asks_for_it() {
    let app = spawn_app().await;
    let user = app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    let post = reqwest::Method::POST;
    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp",
        json!({ "password": "not it at all" }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = app
        .post("/v1/mfa/totp", json!({ "password": STRONG }))
        .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp/confirm",
        json!({ "code": "123456" }),
    )
    .await;
    assert_error(r, StatusCode::CONFLICT, "no_pending_enrolment").await;

    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp",
        json!({ "password": STRONG }),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    let secret = api::mfa::totp::decode(body["secret"].as_str().unwrap()).unwrap();
    // Stored sealed: the secret is nowhere in the row.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM user_totp WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    // Not confirmed yet: it protects nothing.
    assert_eq!(
        sign_in_answer(&app, ANN, STRONG).await.status(),
        StatusCode::CREATED
    );

    let wrong = code(&app, &secret, 3);
    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp/confirm",
        json!({ "code": wrong }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let right = code(&app, &secret, 0);
    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp/confirm",
        json!({ "code": right }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = authed(
        &app,
        &session,
        post.clone(),
        "/v1/mfa/totp/confirm",
        json!({ "code": right }),
    )
    .await;
    assert_error(r, StatusCode::CONFLICT, "mfa_already_enabled").await;
    let r = authed(
        &app,
        &session,
        post,
        "/v1/mfa/totp",
        json!({ "password": STRONG }),
    )
    .await;
    assert_error(r, StatusCode::CONFLICT, "mfa_already_enabled").await;
    let status: Value = authed(&app, &session, reqwest::Method::GET, "/v1/mfa", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status,
        json!({ "totp": true, "passkeys": [], "recovery_codes_left": 10 })
    );
    let events = security_events(&app, 1).await;
    assert_eq!(
        events,
        [SecurityEvent::FactorAdded {
            factor: Factor::Totp
        }]
    );

    // A wrong password answers as before: the factor is never hinted at.
    assert_error(
        sign_in_answer(&app, ANN, "not the password at all").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // The confirming code's step is spent: the same code does not sign in.
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", &right).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    next_step(&app);
    let r = second_step(&app, &token, "code", &code(&app, &secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        r.headers().get_all("set-cookie").iter().count() >= 2,
        "session and device cookies"
    );
    let session: Value = r.json().await.unwrap();
    assert_eq!(
        app.me(session["session"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    // The token was used.
    let r = second_step(&app, &token, "code", &code(&app, &secret, 1)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    assert_eq!(
        app.audit_outcomes("sign_in")
            .await
            .last()
            .map(String::as_str),
        Some("mfa_required")
    );
    assert_eq!(
        app.audit_outcomes("mfa_sign_in").await,
        ["factor_wrong", "success", "mfa_token_invalid"]
    );
}

#[tokio::test]
async fn a_code_is_accepted_once_within_one_step_either_side() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let secret = &enrolled.secret;
    // Far enough from the confirming code that no code below was ever accepted: only the
    // window refuses them.
    for _ in 0..3 {
        next_step(&app);
    }
    // Two steps either side are refused; one step behind (a slow typist) is accepted.
    for steps in [-2, 2] {
        let token = first_step(&app, ANN).await;
        let r = second_step(&app, &token, "code", &code(&app, secret, steps)).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    }
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", &code(&app, secret, -1)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // One step ahead (a phone's clock a little fast) too; after it, no older code works,
    // not even the current step's.
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", &code(&app, secret, 1)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", &code(&app, secret, 0)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    // Nonsense is a wrong code (or no code at all), never a 500.
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", "").await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    for nonsense in ["12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
        let token = first_step(&app, ANN).await;
        let r = second_step(&app, &token, "code", nonsense).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    }
}

#[tokio::test]
async fn an_mfa_token_lives_five_minutes_and_is_refused_once_it_expired() {
    use sha2::Digest as _;
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let token = first_step(&app, ANN).await;
    // Redis keeps the challenge under the token's SHA-256, for the five minutes it promised.
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let key = app.state.redis.keys().mfa_challenge(&hash);
    let mut redis = app.redis().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((290..=300).contains(&ttl), "TTL {ttl}");
    // Its time runs out: the right code is then refused, as for a token never issued.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = second_step(&app, &token, "code", &code(&app, &enrolled.secret, 0)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    // A new first step still works.
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "code", &code(&app, &enrolled.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn recovery_codes_sign_in_once_each_and_the_owner_is_told() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let spent = &enrolled.recovery_codes[3];
    let token = first_step(&app, ANN).await;
    // Typed the way people type them: upper case, spaces for dashes.
    let typed = spent.to_uppercase().replace('-', " ");
    let r = second_step(&app, &token, "recovery_code", &typed).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "recovery_code", spent).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let r = second_step(&app, &token, "recovery_code", &enrolled.recovery_codes[4]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let events = security_events(&app, 2).await;
    assert_eq!(
        events,
        [
            SecurityEvent::RecoveryCodeUsed { remaining: 9 },
            SecurityEvent::RecoveryCodeUsed { remaining: 8 },
        ]
    );

    // A new set replaces the old one (password and a code needed).
    let post = reqwest::Method::POST;
    let session = &enrolled.session;
    let r = authed(
        &app,
        session,
        post.clone(),
        "/v1/mfa/recovery-codes",
        json!({ "password": STRONG }),
    )
    .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let body = json!({ "password": STRONG, "code": code(&app, &enrolled.secret, 0) });
    let r = authed(&app, session, post, "/v1/mfa/recovery-codes", body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh: Value = r.json().await.unwrap();
    let fresh = fresh["recovery_codes"][0].as_str().unwrap().to_owned();
    let token = first_step(&app, ANN).await;
    let r = second_step(&app, &token, "recovery_code", &enrolled.recovery_codes[5]).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let r = second_step(&app, &token, "recovery_code", &fresh).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let codes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT code_hash FROM recovery_codes WHERE user_id = $1")
            .bind(enrolled.user)
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(codes.len(), 10, "the old set is gone");
    assert!(codes.iter().all(|h| h.len() == 32), "stored hashed");
}

#[tokio::test]
async fn wrong_codes_spend_the_sign_in_budgets_and_kill_the_token_at_five() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_PER_HOUR", "8")]).await;
    let enrolled = enrol(&app, ANN).await;
    let token = first_step(&app, ANN).await;
    for _ in 0..4 {
        let r = second_step(&app, &token, "code", "000000").await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    }
    let r = second_step(&app, &token, "code", "000000").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    // The fifth wrong code killed the token: even the right code needs a new sign-in.
    let right = code(&app, &enrolled.secret, 0);
    let r = second_step(&app, &token, "code", &right).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    // Those five counted like wrong passwords: three more and the address is paused.
    for _ in 0..3 {
        let token = first_step(&app, ANN).await;
        let r = second_step(&app, &token, "code", "000000").await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    }
    let r = sign_in_answer(&app, ANN, STRONG).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
}

/// `POST /v1/password/reset` with `extra` fields.
async fn reset(app: &TestApp, token: &str, extra: Value) -> reqwest::Response {
    let mut body = json!({ "token": token, "new_password": STRONGER });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.post("/v1/password/reset", body).await
}

#[tokio::test]
async fn a_reset_link_alone_changes_nothing_for_an_account_with_a_factor() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let link = app.mint(Purpose::PasswordReset, enrolled.user).await;
    let r = reset(&app, &link, json!({})).await;
    assert_error(r, StatusCode::FORBIDDEN, "mfa_required").await;
    let r = reset(
        &app,
        &link,
        json!({ "totp_code": code(&app, &enrolled.secret, 4) }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let r = reset(
        &app,
        &link,
        json!({ "recovery_code": "aaaa-bbbb-cccc-dddd" }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    assert_eq!(
        app.password_version(enrolled.user).await,
        1,
        "nothing changed"
    );
    assert_eq!(app.me(&enrolled.session).await.status(), StatusCode::OK);
    // The link is still usable: with the app's code it resets.
    let r = reset(
        &app,
        &link,
        json!({ "totp_code": code(&app, &enrolled.secret, 0) }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.password_version(enrolled.user).await, 2);
    assert_eq!(
        app.me(&enrolled.session).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.audit_outcomes("password_reset").await,
        ["mfa_required", "factor_wrong", "factor_wrong", "success"]
    );
    // The factor survives the reset.
    let token = first_step_with(&app, ANN, STRONGER).await;
    next_step(&app);
    let r = second_step(&app, &token, "code", &code(&app, &enrolled.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn first_step_with(app: &TestApp, email: &str, password: &str) -> String {
    let r = sign_in_answer(app, email, password).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["mfa_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_reset_code_needs_the_factor_too_and_a_recovery_code_does() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let (_, email_code) = app.issue_code(enrolled.user, ANN).await;
    let r = app.reset_with_code(ANN, &email_code, STRONGER).await;
    assert_error(r, StatusCode::FORBIDDEN, "mfa_required").await;
    assert_eq!(app.password_version(enrolled.user).await, 1);
    let body = json!({
        "email": ANN, "code": email_code, "new_password": STRONGER,
        "recovery_code": enrolled.recovery_codes[0],
    });
    let r = app.post("/v1/password/reset/code", body).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.password_version(enrolled.user).await, 2);
    // The notice of the spent code, then the password-changed notice (the reset's commit).
    let kinds: Vec<String> = app
        .jobs(2)
        .await
        .iter()
        .map(|j| j.envelope().job.kind().to_owned())
        .collect();
    assert_eq!(kinds, ["security_notice", "password_changed"]);
}

#[tokio::test]
async fn the_reset_pages_ask_for_the_factor() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let link = app.mint(Purpose::PasswordReset, enrolled.user).await;
    let page = app
        .get(&format!("/reset-password?token={link}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"name="second_factor""#), "{page}");
    // A site on a domain has passkeys: the page offers one, through its script.
    assert!(
        page.contains(r#"id="reset-passkey""#) && page.contains("/assets/reset-passkey.js"),
        "{page}"
    );
    let fields = |factor: Option<&str>| {
        let mut f = vec![
            ("token", link.clone()),
            ("password", STRONGER.into()),
            ("password_confirm", STRONGER.into()),
        ];
        if let Some(factor) = factor {
            f.push(("second_factor", factor.to_owned()));
        }
        f
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.form("/reset-password", &fields).await
        }
    };
    let r = post(fields(None)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("second factor") && page.contains(r#"name="second_factor""#),
        "{page}"
    );
    let r = post(fields(Some("000000"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // What the script would send as a passkey's answer, but not one: a wrong factor too.
    let mut forged = fields(None);
    forged.push(("passkey", r#"{"ceremony_id":"x"}"#.to_owned()));
    let r = post(forged).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.password_version(enrolled.user).await,
        1,
        "nothing changed"
    );
    let r = post(fields(Some(&code(&app, &enrolled.secret, 0)))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.password_version(enrolled.user).await, 2);

    // The code form shows the field once the email's code matched an account with a factor,
    // keeping the address and the (still usable) code.
    let (_, email_code) = app.issue_code(enrolled.user, ANN).await;
    let base = [
        ("email", ANN),
        ("code", email_code.as_str()),
        ("password", STRONG),
        ("password_confirm", STRONG),
    ];
    let r = app.form("/reset-password/code", &base).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"name="second_factor""#) && page.contains(&email_code),
        "{page}"
    );
    let recovery = enrolled.recovery_codes[1].as_str();
    let mut with = base.to_vec();
    with.push(("second_factor", recovery));
    let r = app.form("/reset-password/code", &with).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.password_version(enrolled.user).await, 3);
}

#[tokio::test]
async fn a_password_change_and_the_removal_need_the_factor() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let session = &enrolled.session;
    let post = reqwest::Method::POST;
    let change = json!({ "current_password": STRONG, "new_password": STRONGER });
    let r = authed(&app, session, post.clone(), "/v1/account/password", change).await;
    assert_error(r, StatusCode::FORBIDDEN, "mfa_required").await;
    let change = json!({
        "current_password": STRONG, "new_password": STRONGER,
        "totp_code": code(&app, &enrolled.secret, 0),
    });
    let r = authed(&app, session, post, "/v1/account/password", change).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let session = body["session"].as_str().unwrap().to_owned();
    next_step(&app);

    let delete = reqwest::Method::DELETE;
    let r = authed(
        &app,
        &session,
        delete.clone(),
        "/v1/mfa/totp",
        json!({ "password": STRONGER, "code": "000000" }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let right = code(&app, &enrolled.secret, 0);
    let r = authed(
        &app,
        &session,
        delete.clone(),
        "/v1/mfa/totp",
        json!({ "password": STRONG, "code": right }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = authed(
        &app,
        &session,
        delete.clone(),
        "/v1/mfa/totp",
        json!({ "password": STRONGER, "code": right }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = authed(
        &app,
        &session,
        delete,
        "/v1/mfa/totp",
        json!({ "password": STRONGER, "code": right }),
    )
    .await;
    assert_error(r, StatusCode::CONFLICT, "mfa_not_enabled").await;
    assert_eq!(
        sign_in_answer(&app, ANN, STRONGER).await.status(),
        StatusCode::CREATED
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM recovery_codes WHERE user_id = $1")
        .bind(enrolled.user)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "the recovery codes went with the app");
    let events = security_events(&app, 1).await;
    assert_eq!(
        events,
        [SecurityEvent::FactorRemoved {
            factor: Factor::Totp,
            by_support: false
        }]
    );
}

#[tokio::test]
async fn secrets_sealed_under_a_rotated_out_secret_keep_working_and_move_to_the_new_one() {
    let app = spawn_app().await;
    let ann = enrol(&app, ANN).await;
    let bob = enrol(&app, "bob@example.org").await;
    let key_ids = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT DISTINCT key_id FROM user_totp")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    let before = key_ids(app.state.db.clone()).await;
    assert_eq!(before.len(), 1);
    // The same database, with a new secret listed first and the old one kept.
    let new = hex::encode(rand::random::<[u8; 32]>());
    let rotated = format!("{new},{}", e2e::TEST_TOKEN_SECRETS);
    let url = app.state.config.database_url.clone();
    let next = spawn_with(&[("TOKEN_SECRETS", &rotated), ("DATABASE_URL", &url)]).await;
    next.clock.set(app.clock.now());
    let token = first_step(&next, ANN).await;
    let r = second_step(&next, &token, "code", &code(&next, &ann.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Every secret is sealed again under the new one by the api that started with it, the
    // unused ones too.
    let mut after = key_ids(app.state.db.clone()).await;
    for _ in 0..50 {
        if after.len() == 1 && after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = key_ids(app.state.db.clone()).await;
    }
    assert!(
        after.len() == 1 && after != before,
        "{before:?} -> {after:?}"
    );
    // Now the old secret can go: the app no one used since the rotation still works.
    let only_new = spawn_with(&[("TOKEN_SECRETS", &new), ("DATABASE_URL", &url)]).await;
    only_new.clock.set(app.clock.now());
    let token = first_step(&only_new, "bob@example.org").await;
    let r = second_step(&only_new, &token, "code", &code(&only_new, &bob.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn two_requests_with_one_code_or_one_recovery_code_sign_in_once() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    for (field, value) in [
        ("code", code(&app, &enrolled.secret, 0)),
        ("recovery_code", enrolled.recovery_codes[0].clone()),
    ] {
        let (a, b) = (first_step(&app, ANN).await, first_step(&app, ANN).await);
        let (ra, rb) = tokio::join!(
            second_step(&app, &a, field, &value),
            second_step(&app, &b, field, &value)
        );
        let mut statuses = [ra.status(), rb.status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::UNAUTHORIZED],
            "{field}"
        );
    }
}

#[tokio::test]
async fn a_refused_new_password_leaves_the_recovery_code_unspent() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let link = app.mint(Purpose::PasswordReset, enrolled.user).await;
    let recovery = json!({ "recovery_code": enrolled.recovery_codes[0] });
    let mut weak = json!({ "token": link, "new_password": "password123" });
    weak.as_object_mut()
        .unwrap()
        .extend(recovery.as_object().unwrap().clone());
    let r = app.post("/v1/password/reset", weak).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(enrolled.user)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(left, 10);
    let r = reset(&app, &link, recovery).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn before_the_password_is_right_an_account_with_a_factor_answers_as_an_unknown_address() {
    let app = spawn_app().await;
    enrol(&app, ANN).await;
    let answer = |email: &'static str| {
        let app = &app;
        async move {
            let r = sign_in_answer(app, email, "not the password at all").await;
            let status = r.status();
            let mut headers: Vec<String> = r
                .headers()
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
                .collect();
            headers.sort();
            (status, headers, r.bytes().await.unwrap())
        }
    };
    let factor = answer(ANN).await;
    let unknown = answer("nobody@example.org").await;
    assert_eq!(factor, unknown);
    assert_eq!(factor.0, StatusCode::UNAUTHORIZED);
    let rows: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT outcome, user_id FROM audit_events WHERE action = 'sign_in' ORDER BY id DESC LIMIT 2",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("invalid_credentials".to_owned(), None),
            ("invalid_credentials".to_owned(), None)
        ]
    );
}

#[tokio::test]
async fn erasure_takes_the_factor_and_its_codes() {
    let app = spawn_with(&[
        ("ADMIN_API_BIND", "127.0.0.1:0"),
        ("ADMIN_API_KEYS", crate::admin::KEY),
    ])
    .await;
    let enrolled = enrol(&app, ANN).await;
    let path = format!("/admin/v1/users/{}?reason=erasure%20request", enrolled.user);
    let r = crate::admin::admin(&app, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for table in ["user_totp", "recovery_codes"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn the_owners_browser_passes_the_second_step_while_strangers_spent_the_address_budget() {
    let app = spawn_with(&[("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "3")]).await;
    let enrolled = enrol(&app, ANN).await;
    // Strangers spend the address's budget with wrong passwords.
    for _ in 0..3 {
        let r = sign_in_answer(&app, ANN, "not the password at all").await;
        assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let r = sign_in_answer(&app, ANN, STRONG).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_login").await;
    // The owner's browser (it verified the address and signed in before) still gets in,
    // both steps counted in its own budget.
    let r = app.sign_in_from_browser(ANN, STRONG).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let token = body["mfa_token"].as_str().unwrap();
    let r = second_step(&app, token, "code", &code(&app, &enrolled.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn with_enrolment_off_no_factor_can_be_set_up_and_one_set_up_before_is_still_asked_for() {
    let app = spawn_app().await;
    let enrolled = enrol(&app, ANN).await;
    let url = app.state.config.database_url.clone();
    let off = spawn_with(&[("MFA_ENROLMENT", "off"), ("DATABASE_URL", &url)]).await;
    off.clock.set(app.clock.now());
    off.create_user("bob@example.org", STRONG).await;
    let bob = off.login("bob@example.org", STRONG).await;
    let body = json!({ "password": STRONG });
    let r = authed(&off, &bob, reqwest::Method::POST, "/v1/mfa/totp", body).await;
    assert_error(r, StatusCode::FORBIDDEN, "mfa_enrolment_off").await;
    let token = first_step(&off, ANN).await;
    let r = second_step(&off, &token, "code", &code(&off, &enrolled.secret, 0)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
