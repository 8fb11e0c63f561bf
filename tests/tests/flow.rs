//! The whole product end to end, as processes: sign-up → verification email → verify →
//! login → forgot password → reset email over real SMTP → reset → old sessions dead, new
//! password works, link cannot be reused, "password changed" email arrives.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::stack::{SmtpSink, StackEnv, token_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Asserts that `{base}/metrics` exports every metric in `names`.
async fn assert_metrics(base: &str, names: &[&str]) {
    let text = e2e::stack::metrics_text(base).await;
    for name in names {
        assert!(text.contains(name), "{base}/metrics lacks {name}:\n{text}");
    }
}

#[tokio::test]
async fn a_person_signs_up_verifies_forgets_and_resets_their_password() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (api, base) = env.start_api().await.unwrap();
    let (worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let old_password = "correct horse battery staple 42";
    let new_password = "plaid zebra umbrella tangerine 97";

    // Sign up: a verification email with a link built from PUBLIC_BASE_URL.
    let r = post(
        "/v1/users",
        json!({ "email": "Ann.Lee@Example.org", "password": old_password }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let verification = sink
        .wait_for_email("Ann.Lee@example.org", "Example Accounts", WAIT)
        .await
        .unwrap_or_else(|| panic!("no verification email; worker: {:#?}", worker.output()));
    let link = verification
        .link(&format!("{}/verify-email?token=", env.public_base_url))
        .unwrap_or_else(|| panic!("no verification link in:\n{}", verification.text()));
    assert!(
        verification.html().contains(&link),
        "the HTML part carries the same link"
    );
    // Not verified yet: the password alone does not sign in.
    let r = post(
        "/v1/sessions",
        json!({ "email": "ann.lee@example.org", "password": old_password }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post(
        "/v1/email/verify",
        json!({ "token": token_of(&link), "password": old_password }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Log in on two devices.
    let login = |password: &'static str| {
        post(
            "/v1/sessions",
            json!({ "email": "ann.lee@example.org", "password": password }),
        )
    };
    let session_a: Value = login(old_password).await.unwrap().json().await.unwrap();
    let session_b: Value = login(old_password).await.unwrap().json().await.unwrap();
    let me = |session: &Value| {
        http.get(format!("{base}/v1/me"))
            .bearer_auth(session["session"].as_str().unwrap())
            .send()
    };
    let profile: Value = me(&session_a).await.unwrap().json().await.unwrap();
    assert_eq!(profile["email_verified"], true);

    // Forgot password: the reset email arrives over SMTP with both parts and proper headers.
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .json(&json!({ "email": "ann.lee@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // (By its kind: the sign-ins above also bring a new-sign-in notice.)
    let reset_email = sink.wait_for_reset_email(1, WAIT).await.unwrap();
    assert_eq!(
        reset_email.rcpt_to(),
        "Ann.Lee@example.org",
        "mail goes to the stored address"
    );
    assert!(
        reset_email.subject().to_lowercase().contains("reset"),
        "{}",
        reset_email.subject()
    );
    let parsed = reset_email.parsed();
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Example Security"));
    assert_eq!(from.address(), Some("security@example.test"));
    assert!(
        reset_email.message_id().ends_with("@example.test"),
        "{}",
        reset_email.message_id()
    );
    let raw = String::from_utf8_lossy(&reset_email.raw).to_lowercase();
    assert!(raw.contains("multipart/alternative"), "text + HTML");
    assert!(
        !raw.contains("evil.example"),
        "links never come from the Host header"
    );
    let reset_link = reset_email
        .link(&format!("{}/reset-password?token=", env.public_base_url))
        .unwrap_or_else(|| panic!("no reset link in:\n{}", reset_email.text()));
    assert!(
        reset_email
            .html()
            .contains(&reset_link.replace('&', "&amp;"))
    );
    assert!(
        reset_email.text().contains("1 hour"),
        "the email says when the link expires:\n{}",
        reset_email.text()
    );
    let token = token_of(&reset_link);

    // Reset through the link's token.
    let r = post(
        "/v1/password/reset",
        json!({ "token": token, "new_password": new_password }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        me(&session_a).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "old sessions die"
    );
    assert_eq!(
        me(&session_b).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "on every device"
    );
    assert_eq!(
        login(old_password).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(new_password).await.unwrap().status(),
        StatusCode::CREATED
    );
    let again = post(
        "/v1/password/reset",
        json!({ "token": token, "new_password": old_password }),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "token_used");

    // The "password changed" notice.
    // (By its subject: the sign-ins above, from a client new to the account, also bring
    // new-sign-in notices.)
    let notice = sink
        .wait_for_email("Ann.Lee@example.org", "password was changed", WAIT)
        .await
        .unwrap_or_else(|| panic!("no password-changed email; worker: {:#?}", worker.output()));
    assert_eq!(notice.rcpt_to(), "Ann.Lee@example.org");
    assert!(
        notice.text().contains("127.0.0.1"),
        "the notice names where the change came from"
    );
    assert!(
        notice
            .link(&format!("{}/forgot-password", env.public_base_url))
            .is_some()
    );
    // Neither service logged a token, a password, a session or the address itself.
    let logs = [api.output(), worker.output()].concat().join("\n");
    assert!(logs.contains("\"job done\""), "the logs were captured");
    for secret in [
        token.as_str(),
        token_of(&link).as_str(),
        old_password,
        new_password,
        session_a["session"].as_str().unwrap(),
        "Ann.Lee@example.org",
        "ann.lee@example.org",
        &e2e::TEST_TOKEN_SECRETS[..24],
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
    // Both services export what operators alert on.
    assert_metrics(
        &worker_http,
        &[
            "pwrecovery_jobs_total",
            "pwrecovery_smtp_send_duration_seconds_bucket",
            "pwrecovery_mail_queue_depth",
            "pwrecovery_mail_oldest_job_age_seconds",
        ],
    )
    .await;
    // The api's metrics are on their own listener, not on the public port.
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let api_metrics = StackEnv::api_metrics_base(&api).await.unwrap();
    assert_metrics(
        &api_metrics,
        &[
            "pwrecovery_http_requests_total",
            "pwrecovery_publish_duration_seconds_bucket",
            "pwrecovery_password_resets_total",
        ],
    )
    .await;
    // Every email of this flow is distinct (no duplicates).
    let ids: std::collections::HashSet<String> =
        sink.emails().iter().map(|e| e.message_id()).collect();
    assert_eq!(ids.len(), sink.emails().len());
}

#[tokio::test]
async fn taken_and_unknown_addresses_get_the_right_mail_or_none() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("NOTIFY_UNKNOWN_RECIPIENTS", "false");
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let signup =
        json!({ "email": "bob@example.org", "password": "correct horse battery staple 42" });
    http.post(format!("{base}/v1/users"))
        .json(&signup)
        .send()
        .await
        .unwrap();
    http.post(format!("{base}/v1/users"))
        .json(&signup)
        .send()
        .await
        .unwrap();
    // Unknown address: answered the same, nothing sent.
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "nobody@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let emails = sink.wait_for(2, WAIT).await;
    assert_eq!(emails.len(), 2);
    // Two sign-ups of one address: a verification link and a notice, in either order (the
    // outbox keeps order per account; the notice belongs to none).
    let verify_prefix = format!("{}/verify-email?token=", env.public_base_url);
    let (verification, notice): (Vec<_>, Vec<_>) = emails
        .iter()
        .partition(|e| e.link(&verify_prefix).is_some());
    assert_eq!((verification.len(), notice.len()), (1, 1));
    assert!(
        notice[0]
            .text()
            .contains(&format!("{}/forgot-password", env.public_base_url)),
        "the account-exists notice points to password recovery:\n{}",
        notice[0].text()
    );
    // The worker's decision about the unknown address is audited, with the address hashed.
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let row = e2e::poll_until(WAIT, || async {
        sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
            "SELECT outcome, address_hash, host(ip) FROM audit_events WHERE action = 'password_reset_requested'",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await
    .expect("audit row for the forgot-password decision");
    assert_eq!(row.0, "dropped_unknown");
    assert_eq!(row.1.as_ref().map(String::len), Some(64));
    assert_eq!(row.2.as_deref(), Some("127.0.0.1"));
    // The row is the job's final decision: nothing is sent for it.
    assert_eq!(
        sink.emails().len(),
        2,
        "nothing was sent to the unknown address"
    );
}

#[tokio::test]
async fn emails_follow_the_locale_of_the_request() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (_api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/users"))
        .header("accept-language", "zh-CN,zh;q=0.9")
        .json(&json!({ "email": "li@example.org", "password": "correct horse battery staple 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let emails = sink.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1, "worker output: {:#?}", worker.output());
    let email = &emails[0];
    let has_chinese = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    assert!(has_chinese(&email.subject()), "{}", email.subject());
    assert!(has_chinese(&email.text()));
    assert!(has_chinese(&email.html()));
}

#[tokio::test]
async fn later_emails_are_in_the_language_of_the_account_not_of_the_browser_that_caused_them() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let public = env.var("PUBLIC_BASE_URL").unwrap().to_owned();
    let (_api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let (jan, password) = ("jan@example.org", "correct horse battery staple 42");
    let post = |path: &str, language: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("accept-language", language)
            .json(&body)
            .send()
    };
    let r = post(
        "/v1/users",
        "de-DE,de;q=0.9",
        json!({ "email": jan, "password": password }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let verification = sink.wait_for(1, WAIT).await;
    assert_eq!(
        verification.len(),
        1,
        "worker output: {:#?}",
        worker.output()
    );
    assert!(
        verification[0].subject().starts_with("Bestätigen"),
        "{}",
        verification[0].subject()
    );
    let link = verification[0]
        .link(&format!("{public}/verify-email?token="))
        .unwrap();
    let body = json!({ "token": token_of(&link), "password": password });
    assert_eq!(
        post("/v1/email/verify", "en", body).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // A reset asked for from an English browser: the email is in the account's German.
    let r = post(
        "/v1/password/forgot",
        "en-US,en;q=0.9",
        json!({ "email": jan }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let emails = sink.wait_for(2, WAIT).await;
    let reset = &emails[1];
    assert!(
        reset.subject().contains("zurücksetzen"),
        "{}",
        reset.subject()
    );
    assert!(reset.text().contains("Passwort"), "{}", reset.text());
    let link = reset
        .link(&format!("{public}/reset-password?token="))
        .unwrap();
    let body =
        json!({ "token": token_of(&link), "new_password": "plaid zebra umbrella tangerine 97" });
    let r = post("/v1/password/reset", "fr-FR", body).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The password-changed notice too.
    let emails = sink.wait_for(3, WAIT).await;
    assert!(
        emails[2].subject().contains("wurde geändert"),
        "{}",
        emails[2].subject()
    );
}

#[tokio::test]
async fn a_language_added_as_a_template_folder_is_written_to_those_who_ask_for_it() {
    // An Italian folder: the English templates, with an Italian subject for the verification.
    let dir = std::env::temp_dir().join(format!("templates-it-{}", uuid::Uuid::new_v4()));
    let italian = dir.join("it");
    std::fs::create_dir_all(&italian).unwrap();
    let english =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mail-worker/templates/en");
    for entry in std::fs::read_dir(english).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, italian.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        italian.join("email_verification.subject.j2"),
        "Conferma il tuo indirizzo per {{ product_name }}",
    )
    .unwrap();

    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (_api, base) = env.start_api().await.unwrap();
    let smtp = sink.url();
    let (_worker, _) = env
        .start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", smtp.as_str()),
            ("SMTP_TIMEOUT_SECS", "5"),
            ("MAIL_TEMPLATE_DIR", dir.to_str().unwrap()),
        ])
        .await
        .unwrap();
    let sign_up = |email: &'static str, language: &'static str| {
        reqwest::Client::new()
            .post(format!("{base}/v1/users"))
            .header("accept-language", language)
            .json(&json!({ "email": email, "password": "correct horse battery staple 42" }))
            .send()
    };
    // Italian first, then German: the added folder serves the first.
    let r = sign_up("gia@example.org", "it-CH, de;q=0.5").await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A language without templates is passed over for the next one asked for.
    let r = sign_up("kim@example.org", "ko-KR, de;q=0.5").await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let emails = sink.wait_for(2, WAIT).await;
    let subject_to = |to: &str| {
        emails
            .iter()
            .find(|e| e.rcpt_to().contains(to))
            .map(|e| e.subject())
            .unwrap()
    };
    assert!(
        subject_to("gia@").starts_with("Conferma"),
        "{}",
        subject_to("gia@")
    );
    assert!(
        subject_to("kim@").starts_with("Bestätigen"),
        "{}",
        subject_to("kim@")
    );
    let _ = std::fs::remove_dir_all(dir);
}
