//! A person in a real browser (Debian's headless Chromium, driven over WebDriver by
//! chromedriver): forgot-password page → email → reset link → token leaves the address bar →
//! weak password refused → new password set → the API accepts only the new one. Screenshots of
//! every page go to `artifacts/browser/` (not committed).
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, time::Duration};

use e2e::{
    poll_until,
    stack::{SmtpSink, StackEnv},
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(30);

struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: PathBuf,
    shots: PathBuf,
}

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let driver_bin =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port().await;
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_bin} (apt-get install chromium chromium-driver): {e}")
            });
        let profile = std::env::temp_dir().join(format!("pwr-chromium-{}", e2e::unique_id()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                // A phone: headless windows do not go below ~500 px, emulation does.
                "mobileEmulation": { "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0 } }
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = poll_until(WAIT, || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await
        .expect("chromedriver and chromium start");
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/browser");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            _driver: driver,
            _profile: profile,
            shots,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Types `text` into the field `css`.
    async fn fill(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Submits the page's form.
    async fn submit(&self) {
        self.client
            .find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// On a reset page that asks for the factor: the new password, then the passkey instead
    /// of a typed code (the virtual authenticator answers); waits for the done page.
    async fn reset_with_passkey(&self, password: &str) {
        self.fill("#password", password).await;
        self.fill("#password_confirm", password).await;
        self.client
            .find(Locator::Css("#reset-passkey"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_text("Password changed").await;
    }

    /// Waits until the page shows `needle`.
    async fn wait_for_text(&self, needle: &str) {
        let shown = poll_until(WAIT, || async {
            self.text().await.contains(needle).then_some(())
        })
        .await;
        if shown.is_none() {
            let page = self.text().await;
            let url = self.client.current_url().await.map(|u| u.to_string());
            panic!("the page never showed {needle:?}; {url:?} shows:\n{page}");
        }
    }

    /// Each visible field of the page: its id, and how it is drawn (width, padding, border,
    /// the space below it).
    async fn field_styles(&self) -> Vec<(String, String)> {
        let script = "return Array.from(document.querySelectorAll('input:not([type=hidden])'))\
            .map(e => { const s = getComputedStyle(e); \
            return [e.id, [s.width, s.paddingTop, s.borderTopWidth, s.marginBottom].join(' ')]; });";
        let fields = self.client.execute(script, vec![]).await.unwrap();
        serde_json::from_value(fields).unwrap()
    }

    /// The page's visible text; empty while a navigation is still loading.
    async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

#[tokio::test]
async fn a_person_resets_a_forgotten_password_in_a_phone_sized_browser() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // Links in the emails must lead to this api, and its forms accept posts from its own
    // origin only: the api's public origin is the address the browser uses.
    let port = free_port().await;
    env.set("API_BIND", &format!("127.0.0.1:{port}"));
    env.set("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}"));
    let (_api, base) = env.start_api().await.unwrap();
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let old = "correct horse battery staple 42";
    let new = "plaid zebra umbrella tangerine 97";
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": "ann@example.org", "password": old }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let verification = sink.wait_for(1, WAIT).await.remove(0);
    let verify_link = verification
        .link(&format!("{base}/verify-email?token="))
        .unwrap_or_else(|| panic!("no verification link in {}", verification.text()));

    let browser = Browser::start(360, 780).await;
    let c = &browser.client;

    // 0. Confirm the address: the page asks for the sign-up password and offers the way out
    //    for someone who never signed up; a wrong password is explained and changes nothing.
    c.goto(&verify_link).await.unwrap();
    browser.wait_for_text("password of the account").await;
    assert!(browser.text().await.contains("Did not sign up"));
    browser.screenshot("0-verify-email").await;
    browser.fill("#password", "not what I chose at all 5").await;
    browser.submit().await;
    browser
        .wait_for_text("not the password of this account")
        .await;
    browser.screenshot("0-verify-wrong-password").await;
    browser.fill("#password", old).await;
    browser.submit().await;
    browser.wait_for_text("Email address confirmed").await;
    browser.screenshot("0-verify-done").await;

    // 1. Ask for a reset on the page.
    c.goto(&format!("{base}/forgot-password")).await.unwrap();
    browser.screenshot("1-forgot-password").await;
    browser.fill("#email", "ann@example.org").await;
    browser.submit().await;
    browser.wait_for_text("Check your inbox").await;
    browser.screenshot("2-forgot-sent").await;

    // 2. The email arrives; its link leads to the api.
    let emails = sink.wait_for(2, WAIT).await;
    let reset_email = emails.last().unwrap();
    let link = reset_email
        .link(&format!("{base}/reset-password?token="))
        .unwrap_or_else(|| panic!("no reset link in {}", reset_email.text()));

    // 3. Open it: the token leaves the address bar.
    c.goto(&link).await.unwrap();
    let cleaned = poll_until(WAIT, || async {
        let url = c.current_url().await.ok()?;
        (url.query().is_none()).then_some(url)
    })
    .await
    .expect("the token is removed from the address bar");
    assert_eq!(cleaned.path(), "/reset-password");
    browser.screenshot("3-reset-form").await;
    let page = browser.text().await;
    assert!(
        !page.contains("ann@example.org"),
        "the page does not show the address"
    );

    // 4. A weak password is refused, with the reason on the page.
    browser.fill("#password", "password1234").await;
    browser.fill("#password_confirm", "password1234").await;
    browser.submit().await;
    browser.wait_for_text("too easy to guess").await;
    browser.screenshot("4-weak-password").await;

    // 5. A good one is accepted; the success page sends the person to sign in.
    browser.fill("#password", new).await;
    browser.fill("#password_confirm", new).await;
    browser.submit().await;
    browser.wait_for_text("Password changed").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/reset-password/done"
    );
    assert!(browser.text().await.contains("Sign in"));
    browser.screenshot("5-reset-done").await;

    // 6. The link is spent: opening it again shows the used-link page.
    c.goto(&link).await.unwrap();
    browser.wait_for_text("already been used").await;
    browser.screenshot("6-link-used").await;

    // The API agrees: the old password fails, the new one works.
    let login = |password: &'static str| {
        http.post(format!("{base}/v1/sessions"))
            .json(&json!({ "email": "ann@example.org", "password": password }))
            .send()
    };
    assert_eq!(login(old).await.unwrap().status(), 401);
    assert_eq!(login(new).await.unwrap().status(), 201);

    // 7. On another device, with the code the next reset email shows beside its link: the
    //    page without a token takes the address, the code and the new password; a wrong code
    //    is explained and the address kept.
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .json(&json!({ "email": "ann@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let second_reset = sink.wait_for_reset_email(2, WAIT).await.unwrap();
    let code = second_reset.reset_code().unwrap();
    c.goto(&format!("{base}/reset-password")).await.unwrap();
    browser
        .wait_for_text("Reset your password with a code")
        .await;
    browser.screenshot("7-code-form").await;
    // Every field is drawn by the one rule: the code's field like the address's.
    let fields = browser.field_styles().await;
    let ids: Vec<&str> = fields.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["email", "code", "password", "password_confirm"]);
    assert!(
        fields.iter().all(|(_, style)| style == &fields[0].1),
        "{fields:?}"
    );
    let third = "violet harbour quilt rocket 58";
    let wrong = if code.starts_with('9') { "1" } else { "9" }.to_owned() + &code[1..];
    browser.fill("#email", "ann@example.org").await;
    browser.fill("#code", &wrong).await;
    browser.fill("#password", third).await;
    browser.fill("#password_confirm", third).await;
    browser.submit().await;
    browser.wait_for_text("This code is not valid").await;
    browser.screenshot("7-code-wrong").await;
    let kept = c
        .find(Locator::Css("#email"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("ann@example.org"));
    // Typed the way the email shows it.
    browser
        .fill("#code", &format!("{} {}", &code[..4], &code[4..]))
        .await;
    browser.fill("#password", third).await;
    browser.fill("#password_confirm", third).await;
    browser.submit().await;
    browser.wait_for_text("Password changed").await;
    browser.screenshot("7-code-done").await;
    assert_eq!(login(new).await.unwrap().status(), 401);
    let login_third = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "email": "ann@example.org", "password": third }))
        .send()
        .await
        .unwrap();
    assert_eq!(login_third.status(), 201);
    browser.client.clone().close().await.unwrap();
}

/// The code of an authenticator app holding `secret` (base32), `steps` steps from now.
#[allow(
    clippy::disallowed_methods,
    reason = "the api under test reads the real clock too"
)]
fn app_code(secret: &str, steps: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_ref().to_vec())
        .build()
        .unwrap();
    let now = chrono::Utc::now().timestamp() + steps * 30;
    totp.generate(u64::try_from(now).unwrap()).to_string()
}

#[tokio::test]
async fn a_person_with_an_authenticator_app_resets_with_its_code_in_the_browser() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    let port = free_port().await;
    env.set("API_BIND", &format!("127.0.0.1:{port}"));
    env.set("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}"));
    let (_api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let (email, old, new) = (
        "kim@example.org",
        "correct horse battery staple 42",
        "plaid zebra umbrella tangerine 97",
    );
    let post = async |path: &str, body: serde_json::Value, session: Option<&str>| {
        let mut request = http.post(format!("{base}{path}")).json(&body);
        if let Some(session) = session {
            request = request.bearer_auth(session);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (
            status,
            r.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    };
    // The owner signs up, confirms the address and sets up an authenticator app.
    let (status, _) = post(
        "/v1/users",
        json!({ "email": email, "password": old }),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let verification = sink.wait_for(1, WAIT).await.remove(0);
    let verify_link = verification
        .link(&format!("{base}/verify-email?token="))
        .unwrap();
    let token = e2e::stack::token_of(&verify_link);
    let body = json!({ "token": token, "password": old });
    assert_eq!(post("/v1/email/verify", body, None).await.0, 204);
    let (status, body) = post(
        "/v1/sessions",
        json!({ "email": email, "password": old }),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let session = body["session"].as_str().unwrap().to_owned();
    let (status, body) = post("/v1/mfa/totp", json!({ "password": old }), Some(&session)).await;
    assert_eq!(status, 200);
    let secret = body["secret"].as_str().unwrap().to_owned();
    let body = json!({ "code": app_code(&secret, 0) });
    let (status, _) = post("/v1/mfa/totp/confirm", body, Some(&session)).await;
    assert_eq!(status, 200);

    // The reset email's link alone is not enough: the page asks for the app's code.
    assert_eq!(
        post("/v1/password/forgot", json!({ "email": email }), None)
            .await
            .0,
        202
    );
    let reset_email = sink.wait_for_reset_email(1, WAIT).await.unwrap();
    let link = reset_email
        .link(&format!("{base}/reset-password?token="))
        .unwrap();
    let browser = Browser::start(360, 780).await;
    let c = &browser.client;
    c.goto(&link).await.unwrap();
    browser
        .wait_for_text("Code from your authenticator app")
        .await;
    browser.screenshot("8-reset-with-factor").await;
    let fields = browser.field_styles().await;
    let ids: Vec<&str> = fields.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["password", "password_confirm", "second_factor"]);
    assert!(
        fields.iter().all(|(_, style)| style == &fields[0].1),
        "{fields:?}"
    );
    // A wrong code is explained; nothing changed, the link still works.
    browser.fill("#password", new).await;
    browser.fill("#password_confirm", new).await;
    browser.fill("#second_factor", "000000").await;
    browser.submit().await;
    browser.wait_for_text("This code is not valid").await;
    browser.screenshot("8-factor-wrong").await;
    let login = async |password: &str| {
        post(
            "/v1/sessions",
            json!({ "email": email, "password": password }),
            None,
        )
        .await
        .0
    };
    assert_eq!(
        login(old).await,
        200,
        "the old password still opens the first step"
    );
    // The app's next code resets.
    browser.fill("#password", new).await;
    browser.fill("#password_confirm", new).await;
    browser.fill("#second_factor", &app_code(&secret, 1)).await;
    browser.submit().await;
    browser.wait_for_text("Password changed").await;
    browser.screenshot("8-factor-done").await;
    assert_eq!(login(old).await, 401);
    assert_eq!(
        login(new).await,
        200,
        "the new password, then the app's code"
    );
    browser.client.clone().close().await.unwrap();
}

/// WebDriver's "Add Virtual Authenticator" (Chromium): a platform authenticator that keeps
/// discoverable credentials and verifies its user (as a phone's fingerprint would).
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/authenticator",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Asks the api at `api` for a reset email to `email` and waits for it, the `n`th reset email
/// the sink holds.
async fn ask_reset(
    http: &reqwest::Client,
    api: &str,
    sink: &SmtpSink,
    email: &str,
    n: usize,
) -> e2e::stack::StoredEmail {
    let r = http
        .post(format!("{api}/v1/password/forgot"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    sink.wait_for_reset_email(n, WAIT).await.unwrap()
}

#[tokio::test]
async fn a_person_adds_a_passkey_and_signs_in_with_it_alone_in_the_browser() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // A passkey belongs to a domain (its relying party), never to an IP address: the browser
    // uses localhost, the api's public origin.
    let port = free_port().await;
    env.set("API_BIND", &format!("127.0.0.1:{port}"));
    env.set("PUBLIC_BASE_URL", &format!("http://localhost:{port}"));
    env.set("COOKIE_SECURE", "false");
    // Three reset emails asked for, and the lock's.
    env.set("RATE_LIMIT_EMAIL_PER_HOUR", "10");
    let (_api, _) = env.start_api().await.unwrap();
    let base = format!("http://localhost:{port}");
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let (email, password) = ("lee@example.org", "correct horse battery staple 42");
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let r = http
        .post(api("/v1/users"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let verification = sink.wait_for(1, WAIT).await.remove(0);
    let link = verification
        .link(&format!("{base}/verify-email?token="))
        .unwrap();
    let r = http
        .post(api("/v1/email/verify"))
        .json(&json!({ "token": e2e::stack::token_of(&link), "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(api("/v1/sessions"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let session: serde_json::Value = r.json().await.unwrap();
    let session = session["session"].as_str().unwrap().to_owned();

    let browser = Browser::start(1024, 800).await;
    let c = &browser.client;
    c.issue_cmd(AddVirtualAuthenticator).await.unwrap();
    // Signed in in this browser (the session of the sign-in above, as its cookie).
    c.goto(&format!("{base}/passkeys")).await.unwrap();
    let cookie = format!("session={session}; path=/");
    c.execute("document.cookie = arguments[0];", vec![json!(cookie)])
        .await
        .unwrap();
    c.refresh().await.unwrap();
    browser.wait_for_text("Add a passkey").await;
    browser.screenshot("9-passkeys").await;

    // 1. Add a passkey: the password, then the device.
    browser.fill("#passkey-password", password).await;
    browser.fill("#passkey-name", "Test laptop").await;
    browser.submit().await;
    browser.wait_for_text("Passkey added").await;
    browser.screenshot("9-passkey-added").await;
    let codes = c
        .find_all(Locator::Css("#recovery-codes li"))
        .await
        .unwrap();
    assert_eq!(
        codes.len(),
        10,
        "the account's first factor brings recovery codes"
    );
    let mut recovery_codes = Vec::new();
    for code in &codes {
        recovery_codes.push(code.text().await.unwrap());
    }
    let status: serde_json::Value = http
        .get(api("/v1/mfa"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["passkeys"][0]["name"], "Test laptop", "{status}");
    // It is a second factor now: the password alone opens only the first step.
    let r = http
        .post(api("/v1/sessions"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sink.wait_for_email(email, "Passkey added", WAIT)
        .await
        .expect("the owner is told of the new passkey");

    // 2. Signed out, the passkey alone signs in: no address, no password.
    c.delete_all_cookies().await.unwrap();
    c.refresh().await.unwrap();
    browser.wait_for_text("Sign in with a passkey").await;
    c.find(Locator::Css("#passkey-sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("You are signed in").await;
    browser.screenshot("9-passkey-signed-in").await;
    let cookie = c.get_named_cookie("session").await.unwrap();
    let me = http
        .get(api("/v1/me"))
        .bearer_auth(cookie.value())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], email);

    // 3. The passkey as the second step of a password sign-in (the page's own origin runs
    //    the ceremony, as an application's sign-in form would).
    let statuses = c
        .execute_async(
            &format!("{CEREMONY_JS}
            const [email, password, done] = arguments;
            (async () => {{
              const first = await post('/v1/sessions', {{email, password}});
              const token = first.json.mfa_token;
              const options = await post('/v1/sessions/mfa/passkey-options', {{mfa_token: token}});
              const credential = await get(options.json.options);
              const second = await post('/v1/sessions/mfa', {{mfa_token: token,
                passkey: {{ceremony_id: options.json.ceremony_id, credential: credential.toJSON()}}}});
              done([first.status, first.json.methods, options.status, second.status]);
            }})().catch(e => done(String(e)));"),
            vec![json!(email), json!(password)],
        )
        .await
        .unwrap();
    assert_eq!(
        statuses,
        json!([200, ["passkey", "recovery_code"], 200, 201]),
        "{statuses}"
    );

    // 3b. The passkey proves the factor of a password change (this browser is signed in).
    let changed = "sunflower granite kettle 71";
    let statuses = c
        .execute_async(
            &format!("{CEREMONY_JS}
            const [current, changed, done] = arguments;
            (async () => {{
              const options = await post('/v1/mfa/passkeys/factor-options', {{}});
              const credential = await get(options.json.options);
              const change = await post('/v1/account/password', {{current_password: current,
                new_password: changed,
                passkey: {{ceremony_id: options.json.ceremony_id, credential: credential.toJSON()}}}});
              done([options.status, change.status]);
            }})().catch(e => done(String(e)));"),
            vec![json!(password), json!(changed)],
        )
        .await
        .unwrap();
    assert_eq!(statuses, json!([200, 201]), "{statuses}");

    // 3c. And of a reset by the emailed code (the code is checked before the options).
    let code = ask_reset(&http, &api(""), &sink, email, 1)
        .await
        .reset_code()
        .unwrap();
    let by_code = "maple orbit lantern 64";
    let statuses = c
        .execute_async(
            &format!("{CEREMONY_JS}
            const [email, code, byCode, done] = arguments;
            (async () => {{
              const wrong = await post('/v1/password/reset/code/passkey-options',
                {{email, code: '0000 0000'}});
              const options = await post('/v1/password/reset/code/passkey-options', {{email, code}});
              const credential = await get(options.json.options);
              const reset = await post('/v1/password/reset/code', {{email, code, new_password: byCode,
                passkey: {{ceremony_id: options.json.ceremony_id, credential: credential.toJSON()}}}});
              done([wrong.status, options.status, reset.status]);
            }})().catch(e => done(String(e)));"),
            vec![json!(email), json!(code), json!(by_code)],
        )
        .await
        .unwrap();
    assert_eq!(statuses, json!([400, 200, 204]), "{statuses}");

    // 3d. The same on the code page: once the code matched, the page asks for the factor and
    //     offers the passkey.
    let code = ask_reset(&http, &api(""), &sink, email, 2)
        .await
        .reset_code()
        .unwrap();
    let on_page = "quartz meadow bicycle 38";
    c.goto(&format!("{base}/reset-password")).await.unwrap();
    browser.fill("#email", email).await;
    browser.fill("#code", &code).await;
    browser.fill("#password", on_page).await;
    browser.fill("#password_confirm", on_page).await;
    browser.submit().await;
    browser.wait_for_text("Use a passkey instead").await;
    browser.screenshot("9-reset-code-asks-for-the-factor").await;
    browser.reset_with_passkey(on_page).await;

    // 4. A reset link alone changes nothing; with the passkey (the page's button) it resets.
    let reset_email = ask_reset(&http, &api(""), &sink, email, 3).await;
    let link = reset_email
        .link(&format!("{base}/reset-password?token="))
        .unwrap();
    let token = e2e::stack::token_of(&link);
    let new = "plaid zebra umbrella tangerine 97";
    let r = http
        .post(api("/v1/password/reset"))
        .json(&json!({ "token": token, "new_password": new }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a link proves the mailbox only");
    // On the link's page: the passwords, then the passkey instead of a typed code.
    c.goto(&link).await.unwrap();
    browser.wait_for_text("Use a passkey instead").await;
    browser.reset_with_passkey(new).await;
    browser.screenshot("9-reset-with-a-passkey").await;
    let r = http
        .post(api("/v1/sessions"))
        .json(&json!({ "email": email, "password": new }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new password, then the factor");

    // 5. "This wasn't me" (the password-changed notice's link): the account is locked, and a
    //    passkey (an intruder's, say) no longer signs in, even after the reset.
    // The newest of the four password-changed notices (3b, 3c, 3d and 4).
    let notice = poll_until(WAIT, || async {
        let notices: Vec<_> = (sink.emails().into_iter())
            .filter(|e| e.rcpt_to() == email && e.subject().contains("password was changed"))
            .collect();
        (notices.len() >= 4)
            .then(|| notices.last().cloned())
            .flatten()
    })
    .await
    .expect("the password-changed notices");
    let lock_link = notice
        .link(&format!("{base}/lock-account?token="))
        .unwrap_or_else(|| panic!("no lock link in {}", notice.text()));
    let r = http
        .post(api("/v1/account/lock"))
        .json(&json!({ "token": e2e::stack::token_of(&lock_link), "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{base}/passkeys")).await.unwrap();
    browser.wait_for_text("Sign in with a passkey").await;
    c.find(Locator::Css("#passkey-sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("That did not work").await;
    browser.screenshot("9-passkey-suspended").await;
    // The lock's reset email: the suspended passkey still counts as the account's factor, so
    // the reset takes a recovery code.
    let lock_reset = sink.wait_for_reset_email(4, WAIT).await.unwrap();
    let token = e2e::stack::token_of(
        &lock_reset
            .link(&format!("{base}/reset-password?token="))
            .unwrap(),
    );
    let third = "violet harbour quilt rocket 58";
    let r = http
        .post(api("/v1/password/reset"))
        .json(&json!({ "token": token, "new_password": third }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the factor is still asked for");
    let r = http
        .post(api("/v1/password/reset"))
        .json(&json!({ "token": token, "new_password": third, "recovery_code": recovery_codes[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let statuses = c
        .execute_async(
            &format!("{CEREMONY_JS}
            const done = arguments[0];
            (async () => {{
              const options = await post('/v1/sessions/passkey/options', {{}});
              const credential = await get(options.json.options);
              const signIn = await post('/v1/sessions/passkey', {{ceremony_id: options.json.ceremony_id,
                credential: credential.toJSON()}});
              done([options.status, signIn.status]);
            }})().catch(e => done(String(e)));"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        statuses,
        json!([200, 401]),
        "suspended after the reset too: {statuses}"
    );

    // 6. Its owner signs in (password and a recovery code), sees it suspended and removes it
    //    (the password and a code); then no factor is left.
    let r = http
        .post(api("/v1/sessions"))
        .json(&json!({ "email": email, "password": third }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let signed_in = http
        .post(api("/v1/sessions/mfa"))
        .json(
            &json!({ "mfa_token": r.json::<serde_json::Value>().await.unwrap()["mfa_token"],
            "recovery_code": recovery_codes[1] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 201);
    let session: serde_json::Value = signed_in.json().await.unwrap();
    let session = session["session"].as_str().unwrap().to_owned();
    let status: serde_json::Value = http
        .get(api("/v1/mfa"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["passkeys"][0]["suspended"], true, "{status}");
    let id = status["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let r = http
        .delete(api(&format!("/v1/mfa/passkeys/{id}")))
        .bearer_auth(&session)
        .json(&json!({ "password": third, "recovery_code": recovery_codes[2] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(api("/v1/sessions"))
        .json(&json!({ "email": email, "password": third }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "no factor left");
    browser.client.clone().close().await.unwrap();
}

/// What the ceremonies run in the page share: a JSON `post` and a passkey `get`.
const CEREMONY_JS: &str = "
const post = (path, body) => fetch(path, {method: 'POST',
    headers: {'content-type': 'application/json'}, body: JSON.stringify(body)})
  .then(async r => ({status: r.status, json: await r.json().catch(() => null)}));
const get = (options) => navigator.credentials.get({
    publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey)});
";
