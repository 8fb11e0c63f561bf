//! The owner's sessions: listed with device, network, created and last seen; one ended, or
//! every other; and the notice of a sign-in from a browser new to the account.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::{clock::Clock as _, message::SecurityEvent};

use crate::helpers::{STRONG, TestApp, assert_error, spawn_app};

const ANN: &str = "ann@example.org";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";

/// Signs in from a browser with `user_agent` (and `cookie`, when it has one): the session and
/// the device cookie it was given.
async fn sign_in_from(app: &TestApp, user_agent: &str, cookie: Option<&str>) -> (String, String) {
    let mut request = app
        .client
        .post(app.url("/v1/sessions"))
        .header("user-agent", user_agent)
        .json(&json!({ "email": ANN, "password": STRONG }));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let device = crate::helpers::device_cookie(&r).unwrap();
    let body: Value = r.json().await.unwrap();
    (body["session"].as_str().unwrap().to_owned(), device)
}

async fn list(app: &TestApp, session: &str) -> Vec<Value> {
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

async fn delete(app: &TestApp, session: &str, path: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .bearer_auth(session)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_owner_sees_each_session_with_its_device_and_network_and_ends_one_or_every_other() {
    let app = spawn_app().await;
    app.create_user(ANN, STRONG).await;
    let (laptop, _) = sign_in_from(&app, FIREFOX, None).await;
    let opened = app.clock.now();
    app.clock.advance(chrono::Duration::minutes(5));
    let (phone, _) = sign_in_from(&app, IPHONE, None).await;

    let sessions = list(&app, &laptop).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let (here, there) = (&sessions[0], &sessions[1]);
    assert_eq!(here["current"], true);
    assert_eq!(here["device"], "Firefox on Linux");
    assert_eq!(here["network"], "127.0.0.0/24");
    assert_eq!(there["current"], false);
    assert_eq!(there["device"], "Safari on iPhone");
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(here["created_at"].clone()).unwrap();
    assert_eq!(created.timestamp(), opened.timestamp());
    // The id names a session; it is not its token.
    let phone_id = there["id"].as_str().unwrap().to_owned();
    assert_eq!(phone_id.len(), 16);
    assert!(!phone.contains(&phone_id));
    let listed = serde_json::to_string(&sessions).unwrap();
    for token in [&laptop, &phone] {
        let secret = token.split_once('.').unwrap().1;
        assert!(!listed.contains(secret));
    }

    // Last seen follows use (to the minute): the laptop was used just now, by the list itself.
    app.clock.advance(chrono::Duration::minutes(3));
    assert_eq!(app.me(&phone).await.status(), StatusCode::OK);
    let sessions = list(&app, &laptop).await;
    let seen = |s: &Value| -> chrono::DateTime<chrono::Utc> {
        serde_json::from_value(s["last_seen_at"].clone()).unwrap()
    };
    assert_eq!(seen(&sessions[1]).timestamp(), app.clock.now().timestamp());

    // End the phone's session by its id; it is gone, and so is its id.
    let r = delete(&app, &laptop, &format!("/v1/sessions/{phone_id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    let r = delete(&app, &laptop, &format!("/v1/sessions/{phone_id}")).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    for nonsense in ["zz", "0123456789abcdeF", "0123456789abcdef0"] {
        let r = delete(&app, &laptop, &format!("/v1/sessions/{nonsense}")).await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }

    // Another account's session cannot be ended from here.
    app.create_user("bob@example.org", STRONG).await;
    let bob = app.login("bob@example.org", STRONG).await;
    let bob_id = list(&app, &bob).await[0]["id"].as_str().unwrap().to_owned();
    let r = delete(&app, &laptop, &format!("/v1/sessions/{bob_id}")).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.me(&bob).await.status(), StatusCode::OK);

    // Sign out everywhere else.
    let (desktop, _) = sign_in_from(&app, EDGE, None).await;
    let (tablet, _) = sign_in_from(&app, IPHONE, None).await;
    let r = delete(&app, &laptop, "/v1/sessions/others").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "ended": 2 }));
    for gone in [&desktop, &tablet] {
        assert_eq!(app.me(gone).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(list(&app, &laptop).await.len(), 1);
    assert_eq!(
        app.audit_outcomes("session_end").await,
        ["success", "success"]
    );
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// Security notices queued until (and including) the first one naming `device`.
async fn notices_until(app: &TestApp, device: &str) -> Vec<SecurityEvent> {
    crate::mfa::notices(app, |events| {
        events
            .iter()
            .any(|e| matches!(e, SecurityEvent::NewSignIn { device: d, .. } if d == device))
    })
    .await
}

#[tokio::test]
async fn a_sign_in_from_a_browser_new_to_the_account_tells_the_owner_once_a_day() {
    let app = spawn_app().await;
    app.create_user(ANN, STRONG).await;
    let (_, cookie) = sign_in_from(&app, FIREFOX, None).await;
    // The same browser again (it kept its cookie): nothing to tell.
    sign_in_from(&app, FIREFOX, Some(&cookie)).await;
    // A client that keeps no cookies, from the same device and network: told once a day.
    sign_in_from(&app, EDGE, None).await;
    sign_in_from(&app, EDGE, None).await;
    // Another browser.
    sign_in_from(&app, IPHONE, None).await;
    let events = notices_until(&app, "Safari on iPhone").await;
    let network = Some("127.0.0.0/24".to_owned());
    assert_eq!(
        events,
        [
            SecurityEvent::NewSignIn {
                device: "Firefox on Linux".into(),
                ip_prefix: network.clone()
            },
            SecurityEvent::NewSignIn {
                device: "Edge on Windows".into(),
                ip_prefix: network.clone()
            },
            SecurityEvent::NewSignIn {
                device: "Safari on iPhone".into(),
                ip_prefix: network
            },
        ]
    );
}
