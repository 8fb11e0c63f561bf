//! Passkeys over the JSON routes: the options each ceremony gives, and every answer that is
//! not a verifying passkey refused alike (`401 passkey_invalid`), the ceremony spent. The
//! ceremonies themselves run in the browser test (Chromium's virtual authenticator).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{STRONG, TestApp, assert_error, spawn_app, spawn_with};

const ANN: &str = "ann@example.org";

/// An assertion of the right shape that verifies for nothing.
fn bogus_assertion() -> Value {
    json!({
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {
            "authenticatorData": "AAAA",
            "clientDataJSON": "AAAA",
            "signature": "AAAA",
            "userHandle": "AAAAAAAAAAAAAAAAAAAAAA"
        },
        "clientExtensionResults": {}
    })
}

async fn options(
    app: &TestApp,
    path: &str,
    session: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(session) = session {
        request = request.bearer_auth(session);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn sign_in_options_ask_for_a_discoverable_passkey_of_this_site_and_are_answered_once() {
    let app = spawn_app().await;
    let r = options(&app, "/v1/sessions/passkey/options", None, json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ceremony: Value = r.json().await.unwrap();
    let id = ceremony["ceremony_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 43);
    let public_key = &ceremony["options"]["publicKey"];
    assert_eq!(public_key["rpId"], "account.example.test", "{ceremony}");
    assert_eq!(public_key["userVerification"], "required");
    assert!(
        public_key["challenge"]
            .as_str()
            .is_some_and(|c| c.len() >= 43)
    );
    assert!(ceremony["options"].get("mediation").is_none());

    let answer = json!({ "ceremony_id": id, "credential": bogus_assertion() });
    for _ in 0..2 {
        let r = app.post("/v1/sessions/passkey", answer.clone()).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    }
    let unknown = json!({ "ceremony_id": "x".repeat(43), "credential": bogus_assertion() });
    let r = app.post("/v1/sessions/passkey", unknown).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    let r = app
        .post(
            "/v1/sessions/passkey",
            json!({ "ceremony_id": id, "credential": 5 }),
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
}

#[tokio::test]
async fn registration_needs_the_session_and_the_password_and_asks_for_a_resident_key() {
    let app = spawn_app().await;
    app.create_user(ANN, STRONG).await;
    let session = app.login(ANN, STRONG).await;
    let path = "/v1/mfa/passkeys/options";
    let r = options(&app, path, None, json!({ "password": STRONG })).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = options(
        &app,
        path,
        Some(&session),
        json!({ "password": "not it at all" }),
    )
    .await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = options(&app, path, Some(&session), json!({ "password": STRONG })).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ceremony: Value = r.json().await.unwrap();
    let public_key = &ceremony["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], "account.example.test");
    assert_eq!(public_key["user"]["name"], ANN);
    assert_eq!(
        public_key["authenticatorSelection"]["residentKey"],
        "required"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"],
        "required"
    );
    // A forged answer registers nothing (and spends the ceremony).
    let r = app
        .client
        .post(app.url("/v1/mfa/passkeys"))
        .bearer_auth(&session)
        .json(
            &json!({ "ceremony_id": ceremony["ceremony_id"], "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" },
            "clientExtensionResults": {}
        } }),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    let status: Value = app
        .client
        .get(app.url("/v1/mfa"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["passkeys"], json!([]));
    assert_eq!(
        crate::helpers::sign_in_answer(&app, ANN, STRONG)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_site_on_an_ip_address_has_no_passkeys() {
    let app = spawn_with(&[("PUBLIC_BASE_URL", "http://127.0.0.1:8080")]).await;
    let r = options(&app, "/v1/sessions/passkey/options", None, json!({})).await;
    assert_error(r, StatusCode::NOT_FOUND, "passkeys_off").await;
}
