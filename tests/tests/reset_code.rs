//! The reset email's one-time code through the real pipeline: the worker shows a code beside
//! the link, the code resets the password on "another device", and it shares the link's fate
//! (either kills the other; a newer email kills both).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    client::ApiClient,
    stack::{SmtpSink, StackEnv, StoredEmail},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const OLD: &str = "correct horse battery staple 42";
const NEW: &str = "plaid zebra umbrella tangerine 97";
const ANN: &str = "ann@example.org";

async fn forgot(client: &ApiClient) {
    let (status, _) = client
        .post("/v1/password/forgot", json!({ "email": ANN }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

async fn with_code(
    client: &ApiClient,
    email: &str,
    code: &str,
    password: &str,
) -> (StatusCode, Value) {
    let body = json!({ "email": email, "code": code, "new_password": password });
    client.post("/v1/password/reset/code", body).await
}

async fn with_link(client: &ApiClient, token: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({ "token": token, "new_password": password });
    client.post("/v1/password/reset", body).await
}

async fn sign_in(client: &ApiClient, password: &str) -> StatusCode {
    match client.sign_in(ANN, password).await {
        Ok(_) => StatusCode::CREATED,
        Err(status) => status,
    }
}

/// The code and the link's token of a reset email whose links are under `public`.
fn code_and_token(email: &StoredEmail, public: &str) -> (String, String) {
    let code = email
        .reset_code()
        .unwrap_or_else(|| panic!("no code in {}", email.text()));
    let link = email
        .link(&format!("{public}/reset-password?token="))
        .unwrap();
    assert!(
        email
            .html()
            .contains(&format!("{} {}", &code[..4], &code[4..])),
        "the HTML part shows the code too"
    );
    (code, e2e::stack::token_of(&link))
}

#[tokio::test]
async fn the_code_in_a_reset_email_resets_once_and_shares_the_fate_of_its_link() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "100");
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    env.sign_up_and_verify(&base, &base, &sink, ANN, OLD)
        .await
        .unwrap();
    let client = ApiClient::new(&base);
    let public = env.var("PUBLIC_BASE_URL").unwrap().to_owned();
    let mut seen = 0;
    let mut next_reset_email = async || {
        forgot(&client).await;
        seen += 1;
        let email = sink.wait_for_reset_email(seen, WAIT).await.unwrap();
        code_and_token(&email, &public)
    };

    // The code resets the password; the link of the same email is then used up.
    let (code, token) = next_reset_email().await;
    let (status, body) = with_code(&client, ANN, &code, NEW).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(sign_in(&client, NEW).await, StatusCode::CREATED);
    assert_eq!(
        with_link(&client, &token, OLD).await.1["code"],
        "token_used"
    );
    assert_eq!(
        with_code(&client, ANN, &code, OLD).await.1["code"],
        "code_invalid"
    );

    // The link is used first: its code is dead.
    let (code, token) = next_reset_email().await;
    assert_eq!(
        with_link(&client, &token, OLD).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = with_code(&client, ANN, &code, NEW).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("code_invalid"))
    );

    // A newer email kills the older code; its own works.
    let (older, _) = next_reset_email().await;
    let (newer, _) = next_reset_email().await;
    assert_ne!(older, newer);
    assert_eq!(
        with_code(&client, ANN, &older, NEW).await.1["code"],
        "code_invalid"
    );
    // An unknown address gets exactly what a wrong code gets.
    let unknown = with_code(&client, "nobody@example.org", &newer, NEW).await;
    let wrong = with_code(&client, ANN, "00000000", NEW).await;
    assert_eq!(unknown, wrong);
    assert_eq!(unknown.0, StatusCode::BAD_REQUEST);
    let (status, body) = with_code(&client, ANN, &newer, NEW).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(sign_in(&client, OLD).await, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&client, NEW).await, StatusCode::CREATED);
}
