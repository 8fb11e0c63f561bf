//! The test harness: one real api per test on port 0.

use std::{collections::HashMap, sync::Arc, time::Duration};

use api::{config::Config, startup::Application, state::AppState};
use e2e::{QueueReader, Received};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::{
    clock::{Clock as _, ManualClock},
    keys::Keys,
    message::{Envelope, Job},
    token::{Claims, Purpose, TokenKeys},
    topology::Topology,
};
use uuid::Uuid;

pub(crate) const STRONG: &str = "correct horse battery staple 42";
pub(crate) const STRONGER: &str = "plaid zebra umbrella tangerine 97";

/// Status, headers (minus the per-request date and request id) and body bytes: what must be
/// identical between answers that may not be told apart.
pub(crate) async fn fingerprint(
    r: Response,
) -> (
    StatusCode,
    std::collections::BTreeMap<String, Vec<u8>>,
    Vec<u8>,
) {
    let status = r.status();
    let headers = r
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

pub(crate) struct TestApp {
    pub base: String,
    /// Base URL of the metrics listener (`API_METRICS_BIND`).
    pub metrics_base: String,
    /// Base URL of the admin API (`ADMIN_API_BIND`), when the test turned it on.
    pub admin_base: Option<String>,
    pub client: reqwest::Client,
    pub state: AppState,
    pub clock: ManualClock,
    pub topology: Topology,
    pub reader: QueueReader,
    pub keys: Keys,
    pub token_keys: TokenKeys,
    /// The device cookie of the test's own browser (`name=value`): the browser that verifies
    /// addresses and signs in through [`TestApp::verify`] and [`TestApp::login`], so those
    /// sign-ins are from a browser the account knows (no new-sign-in notice).
    browser: std::sync::Mutex<Option<String>>,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
        e2e::delete_topology_blocking(&self.topology);
    }
}

/// Builds the configuration a test app runs with: the tests' common table
/// ([`e2e::test_env`]) and the api tests' own settings; `overrides` win.
pub(crate) async fn test_config(overrides: &[(&str, &str)]) -> Config {
    let id = e2e::unique_id();
    let database_url = e2e::create_database().await.expect("create test database");
    let mut env: HashMap<String, String> = e2e::test_env(&format!("t-{id}"), &database_url)
        .into_iter()
        .collect();
    for (k, v) in [
        ("PUBLISH_TIMEOUT_MS", "3000"),
        ("MAIL_RETRY_SCHEDULE_SECS", "1"),
    ]
    .iter()
    .chain(overrides)
    {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|k| env.get(k).cloned()).expect("valid test configuration")
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

pub(crate) async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_config(test_config(overrides).await).await
}

pub(crate) async fn spawn_config(config: Config) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        shared::telemetry::init("api", "warn");
    }
    let clock = ManualClock::new(chrono::Utc::now());
    let topology = config.topology();
    let keys = Keys::new(config.redis_key_prefix.clone());
    let token_keys = TokenKeys::new(config.token_secrets.clone(), config.token_digest).unwrap();
    let app = Application::build_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("build app");
    let base = format!("http://{}", app.local_addr().unwrap());
    let metrics_base = format!("http://{}", app.metrics_addr().unwrap());
    let admin_base = app.admin_addr().map(|addr| format!("http://{addr}"));
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until(async move {
                let _ = rx.await;
            })
            .await;
    });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        base,
        metrics_base,
        admin_base,
        client,
        state,
        clock,
        topology,
        reader: QueueReader::connect().await.expect("broker reachable"),
        keys,
        token_keys,
        browser: std::sync::Mutex::new(None),
        server,
        shutdown: Some(tx),
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Posts an HTML form.
    pub(crate) async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .form(fields)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn forgot(&self, email: &str) -> Response {
        self.post("/v1/password/forgot", json!({ "email": email }))
            .await
    }

    /// Waits for `n` mail jobs and returns them. Notices of sign-ins from a new browser are
    /// read past: a test that signs in without the test's browser causes them, and only the
    /// tests of that notice look for them (through the reader itself).
    pub(crate) async fn jobs(&self, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && std::time::Instant::now() < deadline {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let taken = self
                .reader
                .take(&self.topology.jobs_queue(), n - got.len(), wait)
                .await
                .unwrap();
            got.extend(taken.into_iter().filter(|r| !new_sign_in(&r.envelope())));
        }
        assert_eq!(got.len(), n, "expected {n} jobs");
        got
    }

    /// Everything queued right now (but notices of sign-ins from a new browser).
    pub(crate) async fn drain_jobs(&self) -> Vec<Envelope> {
        self.reader
            .drain(&self.topology.jobs_queue())
            .await
            .unwrap()
            .iter()
            .map(Received::envelope)
            .filter(|envelope| !new_sign_in(envelope))
            .collect()
    }

    /// Signs up, confirms the address with a verification link and the password (as the
    /// person would), and returns the new user's id. Only verified accounts can sign in.
    pub(crate) async fn create_user(&self, email: &str, password: &str) -> Uuid {
        let user = self.sign_up(email, password).await;
        self.verify(user, password).await;
        user
    }

    /// `POST /v1/email/verify` with `token` and `password`.
    pub(crate) async fn verify_answer(&self, token: &str, password: &str) -> Response {
        self.post(
            "/v1/email/verify",
            json!({ "token": token, "password": password }),
        )
        .await
    }

    /// Posts `body` to `path` from the test's browser, which keeps the device cookie it gets.
    async fn post_from_browser(&self, path: &str, body: Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(&body);
        let cookie = self.browser.lock().unwrap().clone();
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let r = request.send().await.unwrap();
        if let Some(device) = device_cookie(&r) {
            *self.browser.lock().unwrap() = Some(device);
        }
        r
    }

    /// Confirms `user`'s address with a fresh verification link and `password`, in the test's
    /// browser.
    pub(crate) async fn verify(&self, user: Uuid, password: &str) {
        let token = self.mint(Purpose::EmailVerify, user).await;
        let body = json!({ "token": token, "password": password });
        let r = self.post_from_browser("/v1/email/verify", body).await;
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "{}",
            r.text().await.unwrap()
        );
    }

    /// Signs up without verifying and returns the new user's id (from the verification job).
    pub(crate) async fn sign_up(&self, email: &str, password: &str) -> Uuid {
        let r = self
            .post("/v1/users", json!({ "email": email, "password": password }))
            .await;
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "{}",
            r.text().await.unwrap()
        );
        // Jobs queued earlier (notices of earlier resets, which the outbox relays after the
        // reset answered, say) are read past.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let queued = self
                .reader
                .take(&self.topology.jobs_queue(), 1, Duration::from_secs(1))
                .await
                .unwrap();
            if let Some(user_id) = queued.iter().find_map(|job| match job.envelope().job {
                Job::EmailVerification {
                    user_id,
                    email: ref to,
                    ..
                } if to == email => Some(user_id),
                _ => None,
            }) {
                return user_id;
            }
        }
        panic!("no verification job for {email}")
    }

    /// `POST /v1/sessions` from the test's browser.
    pub(crate) async fn sign_in_from_browser(&self, email: &str, password: &str) -> Response {
        let body = json!({ "email": email, "password": password });
        self.post_from_browser("/v1/sessions", body).await
    }

    /// Signs in from the test's browser and returns the session token.
    pub(crate) async fn login(&self, email: &str, password: &str) -> String {
        let body = json!({ "email": email, "password": password });
        let r = self.post_from_browser("/v1/sessions", body).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        r.json::<Value>().await.unwrap()["session"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn me(&self, session: &str) -> Response {
        self.client
            .get(self.url("/v1/me"))
            .bearer_auth(session)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(e2e::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub(crate) async fn password_version(&self, user: Uuid) -> i32 {
        sqlx::query_scalar("SELECT password_version FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&self.state.db)
            .await
            .unwrap()
    }

    /// Issues a link the way the worker does: bump the user's generation, sign the claims.
    pub(crate) async fn mint(&self, purpose: Purpose, user: Uuid) -> String {
        self.mint_at(purpose, user, self.clock.now_secs()).await
    }

    pub(crate) async fn mint_at(&self, purpose: Purpose, user: Uuid, timestamp: i64) -> String {
        let mut redis = self.redis().await;
        let generation: i64 = redis::Script::new(shared::keys::NEXT_GENERATION_LUA)
            .key(self.keys.token_generation(user, purpose))
            .arg(self.clock.now().timestamp_millis())
            .arg(7_200_000)
            .invoke_async(&mut redis)
            .await
            .unwrap();
        let claims = Claims::new(user, self.password_version(user).await, generation);
        self.token_keys.sign(purpose, &claims, timestamp)
    }

    /// Issues a reset link and its one-time code the way the worker does for a reset email;
    /// returns both.
    pub(crate) async fn issue_code(&self, user: Uuid, email_key: &str) -> (String, String) {
        let now = self.clock.now_secs();
        let token = self.mint_at(Purpose::PasswordReset, user, now).await;
        let claims: Claims = self
            .token_keys
            .verify(Purpose::PasswordReset, &token, now, 3600)
            .unwrap()
            .value;
        let link = shared::reset_code::Link {
            user,
            email_key,
            password_version: claims.pv,
            generation: claims.r#gen,
            signed_at: now,
            token: &token,
            left_secs: 3600,
        };
        let state = &self.state;
        let code = shared::reset_code::issue(&state.redis, state.config.pseudonym_secret(), &link)
            .await
            .unwrap();
        (token, code)
    }

    /// `POST /v1/password/reset/code`.
    pub(crate) async fn reset_with_code(
        &self,
        email: &str,
        code: &str,
        new_password: &str,
    ) -> Response {
        self.post(
            "/v1/password/reset/code",
            json!({ "email": email, "code": code, "new_password": new_password }),
        )
        .await
    }

    /// The full readiness report (`/readyz` on the metrics listener, probed on every call).
    pub(crate) async fn readiness(&self) -> Response {
        reqwest::get(format!("{}/readyz", self.metrics_base))
            .await
            .unwrap()
    }

    /// Waits for the refusal rows written beside the answers (see `api::audit::RefusalAudit::refused`).
    pub(crate) async fn settle_audit(&self) {
        self.state.refusals.settle().await;
    }

    pub(crate) async fn audit_outcomes(&self, action: &str) -> Vec<String> {
        self.settle_audit().await;
        sqlx::query_scalar("SELECT outcome FROM audit_events WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(&self.state.db)
            .await
            .unwrap()
    }
}

trait NowSecs {
    fn now_secs(&self) -> i64;
}

impl NowSecs for ManualClock {
    fn now_secs(&self) -> i64 {
        use shared::clock::Clock as _;
        self.now().timestamp()
    }
}

/// The device cookie an answer sets (`name=value`), if it sets one.
pub(crate) fn device_cookie(r: &Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-device=") || v.starts_with("device="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// Whether `envelope` is the notice of a sign-in from a new browser.
fn new_sign_in(envelope: &Envelope) -> bool {
    matches!(
        &envelope.job,
        Job::SecurityNotice {
            event: shared::message::SecurityEvent::NewSignIn { .. },
            ..
        }
    )
}

/// Asserts the JSON error shape and code of a response.
pub(crate) async fn assert_error(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Status and body of a sign-in.
pub(crate) async fn sign_in_answer(app: &TestApp, email: &str, password: &str) -> Response {
    app.post(
        "/v1/sessions",
        json!({ "email": email, "password": password }),
    )
    .await
}
