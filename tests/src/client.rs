//! A JSON client of a running api, for the tests that drive it as a user would.

use reqwest::StatusCode;
use serde_json::{Value, json};

/// The api at `base`.
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    /// POSTs `body` as JSON; the status and the JSON answer (`null` when there is none).
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the api answers");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A session, or the failed sign-in's status.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<String, StatusCode> {
        let body = json!({ "email": email, "password": password });
        match self.post("/v1/sessions", body).await {
            (StatusCode::CREATED, body) => Ok(body["session"].as_str().unwrap_or("").to_owned()),
            (status, _) => Err(status),
        }
    }

    /// The status of `GET /v1/me` with `session`.
    pub async fn me(&self, session: &str) -> StatusCode {
        self.http
            .get(format!("{}/v1/me", self.base))
            .bearer_auth(session)
            .send()
            .await
            .expect("the api answers")
            .status()
    }
}
