//! "This wasn't me" and support staff's tools through the real pipeline: the password-changed
//! email carries a lock link; locking ends the sessions, refuses sign-in and sends a reset
//! email, whose reset unlocks; `api accounts revoke-sessions|lock` do the same for an operator,
//! audited with the reason; `api accounts show|recovery|remove-factors|export|erase` from the
//! shell.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    client::ApiClient,
    stack::{SmtpSink, StackEnv},
};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const OLD: &str = "correct horse battery staple 42";
const NEW: &str = "plaid zebra umbrella tangerine 97";
const THIRD: &str = "violet harbour quilt rocket 58";

async fn audit_rows(env: &StackEnv, action: &str) -> Vec<(String, Option<String>)> {
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let rows =
        sqlx::query_as("SELECT outcome, detail FROM audit_events WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(&db)
            .await
            .unwrap();
    db.close().await;
    rows
}

#[tokio::test]
async fn this_wasnt_me_locks_the_account_until_the_reset_email_it_sends_is_used() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let public = env.var("PUBLIC_BASE_URL").unwrap().to_owned();
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let ann = "ann@example.org";
    env.sign_up_and_verify(&base, &base, &sink, ann, OLD)
        .await
        .unwrap();
    let client = ApiClient::new(&base);

    // Someone resets Ann's password (with the code of a reset email they can read).
    let (status, _) = client
        .post("/v1/password/forgot", json!({ "email": ann }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = sink
        .wait_for_reset_email(1, WAIT)
        .await
        .unwrap()
        .reset_code()
        .unwrap();
    let body = json!({ "email": ann, "code": code, "new_password": NEW });
    assert_eq!(
        client.post("/v1/password/reset/code", body).await.0,
        StatusCode::NO_CONTENT
    );
    let intruder = client.sign_in(ann, NEW).await.unwrap();

    // Ann's password-changed email carries the lock link.
    let notice = sink
        .wait_for_email(ann, "password was changed", WAIT)
        .await
        .expect("the password-changed notice");
    let link = notice
        .link(&format!("{public}/lock-account?token="))
        .unwrap_or_else(|| panic!("no lock link in {}", notice.text()));
    let token = e2e::stack::token_of(&link);
    // Opening it changes nothing.
    let page = client
        .http
        .get(format!("{base}/lock-account?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Lock my account"));
    assert_eq!(client.me(&intruder).await, StatusCode::OK);

    // The button: every session ends, the new password stops working.
    let (status, body) = client
        .post("/v1/account/lock", json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(client.me(&intruder).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        client.sign_in(ann, NEW).await,
        Err(StatusCode::UNAUTHORIZED)
    );

    // A fresh reset email arrives; its reset unlocks.
    let reset = sink
        .wait_for_reset_email(2, WAIT)
        .await
        .expect("a fresh reset email");
    let token = e2e::stack::token_of(
        &reset
            .link(&format!("{public}/reset-password?token="))
            .unwrap(),
    );
    let body = json!({ "token": token, "new_password": THIRD });
    assert_eq!(
        client.post("/v1/password/reset", body).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client.sign_in(ann, NEW).await,
        Err(StatusCode::UNAUTHORIZED)
    );
    client.sign_in(ann, THIRD).await.unwrap();
    assert_eq!(
        audit_rows(&env, "account_lock").await,
        [("success".to_owned(), None)]
    );
}

#[tokio::test]
async fn support_staff_revoke_sessions_and_lock_an_account_with_a_reason() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let public = env.var("PUBLIC_BASE_URL").unwrap().to_owned();
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let bob = "bob@example.org";
    env.sign_up_and_verify(&base, &base, &sink, bob, OLD)
        .await
        .unwrap();
    let client = ApiClient::new(&base);
    let session = client.sign_in(bob, OLD).await.unwrap();

    // Sessions end; the password stays. The address comes on standard input (it stands in
    // no shell history and no process list) and is not printed back.
    let (ok, out) = env
        .api_command_with_input(
            &[
                "accounts",
                "revoke-sessions",
                "--reason",
                "ticket 7: lost phone",
                "--operator",
                "sam",
            ],
            "Bob@Example.org\n",
        )
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("1: revoked every session")),
        "{out:?}"
    );
    let printed = |out: &[String]| out.iter().any(|l| l.to_lowercase().contains("bob@"));
    assert!(!printed(&out), "the address is not printed: {out:?}");
    assert_eq!(client.me(&session).await, StatusCode::UNAUTHORIZED);
    let session = client.sign_in(bob, OLD).await.unwrap();
    assert_eq!(
        audit_rows(&env, "sessions_revoke").await,
        [(
            "success".to_owned(),
            Some("by: sam; reason: ticket 7: lost phone".to_owned())
        )]
    );

    // A reason is required; an unknown address is an error.
    let (ok, _) = env.api_command(&["accounts", "lock", bob]).await.unwrap();
    assert!(!ok, "lock without --reason");
    let (ok, out) = env
        .api_command(&["accounts", "lock", "nobody@example.org", "--reason", "x"])
        .await
        .unwrap();
    assert!(
        !ok && out.iter().any(|l| l.contains("no account")),
        "{out:?}"
    );

    // The lock: sessions end, sign-in refused, a reset email (relayed by the running api).
    let (ok, out) = env
        .api_command(&[
            "accounts",
            "lock",
            bob,
            "--reason",
            "ticket 8: takeover",
            "--operator",
            "sam",
        ])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    assert!(!printed(&out), "the address is not printed: {out:?}");
    assert_eq!(client.me(&session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        client.sign_in(bob, OLD).await,
        Err(StatusCode::UNAUTHORIZED)
    );
    let reset = sink
        .wait_for_reset_email(1, WAIT)
        .await
        .expect("the reset email");
    let token = e2e::stack::token_of(
        &reset
            .link(&format!("{public}/reset-password?token="))
            .unwrap(),
    );
    let body = json!({ "token": token, "new_password": NEW });
    assert_eq!(
        client.post("/v1/password/reset", body).await.0,
        StatusCode::NO_CONTENT
    );
    client.sign_in(bob, NEW).await.unwrap();
    assert_eq!(
        audit_rows(&env, "account_lock").await,
        [(
            "success".to_owned(),
            Some("by: sam; reason: ticket 8: takeover".to_owned())
        )]
    );
}

/// The JSON a shell command printed for the first address (`1: {…}`).
fn printed_json(out: &[String]) -> serde_json::Value {
    let line = out
        .iter()
        .find_map(|l| l.strip_prefix("1: {"))
        .unwrap_or_else(|| panic!("no JSON printed: {out:?}"));
    serde_json::from_str(&format!("{{{line}")).unwrap()
}

#[tokio::test]
async fn support_staff_hand_over_a_link_remove_a_factor_export_and_erase_from_the_shell() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let public = env.var("PUBLIC_BASE_URL").unwrap().to_owned();
    let (_api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let carl = "carl@example.org";
    env.sign_up_and_verify(&base, &base, &sink, carl, OLD)
        .await
        .unwrap();
    let client = ApiClient::new(&base);

    let (ok, out) = env.api_command(&["accounts", "show", carl]).await.unwrap();
    assert!(ok, "{out:?}");
    let account = printed_json(&out);
    assert_eq!(
        (account["email"].as_str(), account["locked"].as_bool()),
        (Some(carl), Some(false))
    );

    // A link for the agent to hand over: no email, and it resets the password once.
    let (ok, out) = env
        .api_command(&["accounts", "recovery", carl])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let handed = printed_json(&out);
    let link = handed["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{public}/reset-password")),
        "{link}"
    );
    let body = json!({ "token": e2e::stack::token_of(link), "new_password": NEW });
    assert_eq!(
        client.post("/v1/password/reset", body).await.0,
        StatusCode::NO_CONTENT
    );
    let session = client.sign_in(carl, NEW).await.unwrap();

    // Carl sets up an authenticator app, then loses it with its recovery codes: support
    // removes the factor from the shell, with a reason, and Carl is told.
    let authed = |path: &str, body: serde_json::Value| {
        client
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&session)
            .json(&body)
            .send()
    };
    let r = authed("/v1/mfa/totp", json!({ "password": NEW }))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let secret: serde_json::Value = r.json().await.unwrap();
    let secret = totp_rs::Secret::try_from_base32(secret["secret"].as_str().unwrap()).unwrap();
    let app = totp_rs::Builder::new()
        .with_secret(secret.as_ref().to_vec())
        .build()
        .unwrap();
    let code = app.generate_current().to_string();
    let r = authed("/v1/mfa/totp/confirm", json!({ "code": code }))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let signing_in = json!({ "email": carl, "password": NEW });
    let (status, body) = client.post("/v1/sessions", signing_in.clone()).await;
    assert_eq!(
        (status, &body["mfa_required"]),
        (StatusCode::OK, &json!(true))
    );
    let (ok, _) = env
        .api_command(&["accounts", "remove-factors", carl])
        .await
        .unwrap();
    assert!(!ok, "remove-factors without --reason");
    let reason = "identity proven at the front desk, ticket 31";
    let (ok, out) = env
        .api_command(&["accounts", "remove-factors", carl, "--reason", reason])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let (ok, _) = env
        .api_command(&["accounts", "remove-factors", carl, "--reason", reason])
        .await
        .unwrap();
    assert!(!ok, "nothing left to remove");
    let (_, detail) = audit_rows(&env, "mfa_remove").await.pop().unwrap();
    let detail = detail.unwrap();
    assert!(detail.ends_with(&format!("reason: {reason}")), "{detail}");
    let notice = sink
        .wait_for_email(carl, "Authenticator app removed", WAIT)
        .await
        .expect("the owner is told");
    assert!(
        notice.text().contains("support removed"),
        "{}",
        notice.text()
    );
    assert!(
        notice
            .link(&format!("{public}/lock-account?token="))
            .is_some(),
        "{}",
        notice.text()
    );
    let (status, _) = client.post("/v1/sessions", signing_in).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the password alone signs in again"
    );

    let (ok, out) = env
        .api_command(&["accounts", "export", carl])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let export = printed_json(&out);
    let actions: Vec<&str> = export["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["action"].as_str())
        .collect();
    for action in [
        "sign_up",
        "email_verify",
        "admin_recovery",
        "password_reset",
        "sign_in",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }

    // Mail queued for the account before its erasure finds no account and is dropped.
    drop(worker);
    let (ok, out) = env
        .api_command(&["accounts", "recovery", carl, "--send"])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let amqp = env.var("AMQP_URL").unwrap().to_owned();
    let relayed = e2e::poll_until(WAIT, || async {
        (env.ready_jobs_on(&amqp).await.ok()? >= 1).then_some(())
    })
    .await;
    assert!(relayed.is_some(), "the running api relays the queued email");
    let (ok, _) = env.api_command(&["accounts", "erase", carl]).await.unwrap();
    assert!(!ok, "erase without --reason");
    let (ok, out) = env
        .api_command(&["accounts", "erase", carl, "--reason", "erasure request 118"])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    assert!(out.iter().all(|l| !l.contains("carl@")), "{out:?}");
    let emails_before = sink.emails().len();
    let (_worker, worker_base) = env.start_worker(&sink.url()).await.unwrap();
    assert_eq!(
        e2e::stack::wait_outcome(&worker_base, "dropped_unknown", 1, WAIT).await,
        1
    );
    assert_eq!(
        sink.emails().len(),
        emails_before,
        "nothing sent to the erased account"
    );
    // The dropped email's row brings no address or IP of the person back.
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let traces: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events
         WHERE (ip IS NOT NULL OR address_hash IS NOT NULL)
           AND (user_id = $1 OR action = 'password_reset_requested')",
    )
    .bind(uuid::Uuid::parse_str(account["id"].as_str().unwrap()).unwrap())
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(traces, 0);
    assert_eq!(
        client.sign_in(carl, NEW).await,
        Err(StatusCode::UNAUTHORIZED)
    );
    let (ok, out) = env.api_command(&["accounts", "show", carl]).await.unwrap();
    assert!(
        !ok && out.iter().any(|l| l.contains("no account")),
        "{out:?}"
    );

    // The address is new again: a sign-up makes a new account, verified by its own email.
    let body = json!({ "email": carl, "password": THIRD });
    assert_eq!(client.post("/v1/users", body).await.0, StatusCode::ACCEPTED);
    let confirmations = || {
        sink.emails()
            .into_iter()
            .filter(|e| e.rcpt_to().contains(carl) && e.subject().contains("Confirm"))
            .collect::<Vec<_>>()
    };
    let second = e2e::poll_until(WAIT, || async { confirmations().get(1).cloned() })
        .await
        .expect("a verification email for the new account");
    let link = second
        .link(&format!("{public}/verify-email?token="))
        .unwrap();
    let body = json!({ "token": e2e::stack::token_of(&link), "password": THIRD });
    assert_eq!(
        client.post("/v1/email/verify", body).await.0,
        StatusCode::NO_CONTENT
    );
    client.sign_in(carl, THIRD).await.unwrap();
}
