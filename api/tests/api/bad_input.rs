//! Hostile and broken input: always a clean 4xx in the JSON error shape, never a 5xx.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn broken_bodies_get_clear_4xx_answers_and_the_service_stays_healthy() {
    let app = spawn_app().await;
    let raw = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/v1/password/forgot"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let r = raw(br#"{"email":"a@example.org"}"#.to_vec(), "text/plain")
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/password/forgot"))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let r = raw(b"{\"email\": ".to_vec(), "application/json")
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_json").await;
    let r = raw(vec![b'{', 0xff, 0xfe, b'}'], "application/json")
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_json").await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = raw(deep.into_bytes(), "application/json").await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(500), "}".repeat(500));
    let r = raw(deep_obj.into_bytes(), "application/json")
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    let r = app
        .post("/v1/password/forgot", json!({ "mail": "a@example.org" }))
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = app
        .post("/v1/password/forgot", json!({ "email": 42 }))
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = app
        .post("/v1/password/forgot", json!(["a@example.org"]))
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    let big = json!({ "email": "a@example.org", "padding": "x".repeat(64 * 1024) });
    assert_error(
        app.post("/v1/password/forgot", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    for email in [
        "a\r\nbcc: x@example.org",
        "a\u{0}@example.org",
        "\u{7}@example.org",
        "a@exa\u{200b}mple.org\u{85}",
    ] {
        let r = app
            .post("/v1/password/forgot", json!({ "email": email }))
            .await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_email").await;
    }

    // A 2 MB password is over the body limit; a 1025-byte one is refused by name before hashing.
    let huge = json!({ "email": "a@example.org", "password": "p".repeat(2 * 1024 * 1024) });
    for path in ["/v1/users", "/v1/sessions"] {
        assert_error(
            app.post(path, huge.clone()).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
        .await;
    }
    let long = json!({ "email": "a@example.org", "password": "p".repeat(1025) });
    for path in ["/v1/users", "/v1/sessions"] {
        assert_error(
            app.post(path, long.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "password_too_long",
        )
        .await;
    }
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": "x".repeat(10_000), "new_password": "correct horse battery 1" }),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;
    let r = app
        .post("/v1/password/reset", json!({ "token": "'; DROP TABLE users; --{{7*7}}", "new_password": "correct horse battery 1" }))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "token_invalid").await;

    assert_error(
        app.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.get("/v1/password/forgot").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // Still healthy and still working.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(
        app.forgot("a@example.org").await.status(),
        StatusCode::ACCEPTED
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(users, 0, "nothing half-written");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), StatusCode::OK);
    // The public port names no dependency; operators read the full report on the metrics
    // listener.
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "status": "ready" }));
    let r = app.readiness().await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({ "postgres": true, "redis": true, "rabbitmq": true })
    );
    app.forgot("a@example.org").await;
    // Operators' data stays off the public port: 404 there, served on API_METRICS_BIND.
    crate::helpers::assert_error(
        app.get("/metrics").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let metrics = reqwest::get(format!("{}/metrics", app.metrics_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pwrecovery_http_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pwrecovery_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pwrecovery_publish_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_public_readiness_answers_from_a_shared_probe_without_a_database_connection() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // Every connection of the pool is taken: a probe per call would wait for one and then
    // report PostgreSQL down. The probe of a moment ago answers instead.
    let size = app.state.db.options().get_max_connections() as usize;
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(app.state.db.acquire().await.unwrap());
    }
    let answers = futures_util::future::join_all((0..50).map(|_| app.get("/readyz"))).await;
    for r in answers {
        assert_eq!(r.status(), StatusCode::OK);
    }
    drop(held);
}

#[tokio::test]
async fn every_json_answer_is_uncacheable_and_never_sniffed() {
    let app = spawn_app().await;
    let answers = [
        app.forgot("a@example.org").await,
        app.forgot("not an address").await,
        app.post(
            "/v1/sessions",
            json!({ "email": "a@example.org", "password": "x" }),
        )
        .await,
        app.get("/v1/me").await,
        app.get("/no/such/path").await,
        app.get("/healthz").await,
        app.get("/openapi.json").await,
    ];
    for r in answers {
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store", "{} {h:?}", r.url());
        assert_eq!(h["x-content-type-options"], "nosniff", "{} {h:?}", r.url());
        assert!(
            h["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected = vec![
        "POST /v1/users",
        "POST /v1/email/verify",
        "POST /v1/sessions",
        "GET /v1/me",
        "DELETE /v1/sessions/current",
        "POST /v1/password/forgot",
        "POST /v1/password/reset",
        "POST /v1/password/reset/code",
        "POST /v1/account/lock",
        "POST /v1/account/password",
        "POST /v1/sessions/mfa",
        "GET /v1/sessions",
        "DELETE /v1/sessions/others",
        "DELETE /v1/sessions/{id}",
        "GET /v1/mfa",
        "POST /v1/mfa/totp",
        "POST /v1/mfa/totp/confirm",
        "DELETE /v1/mfa/totp",
        "POST /v1/mfa/recovery-codes",
        "POST /v1/mfa/passkeys/options",
        "POST /v1/mfa/passkeys",
        "DELETE /v1/mfa/passkeys/{id}",
        "POST /v1/sessions/passkey/options",
        "POST /v1/sessions/passkey",
        "POST /v1/sessions/mfa/passkey-options",
        "POST /v1/password/reset/passkey-options",
        "POST /v1/password/reset/code/passkey-options",
        "POST /v1/mfa/passkeys/factor-options",
        "GET /healthz",
        "GET /readyz",
    ];
    expected.sort_unstable();
    assert_eq!(documented, expected);
    // Every documented route is served (none answers 404/405).
    for entry in &documented {
        let (method, path) = entry.split_once(' ').unwrap();
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            !matches!(r.status().as_u16(), 404 | 405),
            "{entry} answered {}",
            r.status()
        );
    }
    // Every error code the api can produce is named in the document.
    let text = doc.to_string();
    for code in [
        "invalid_email",
        "weak_password",
        "password_too_long",
        "token_invalid",
        "token_expired",
        "token_used",
        "invalid_credentials",
        "unauthorized",
        "rate_limited_ip",
        "rate_limited_login",
        "malformed_json",
        "invalid_body",
        "unsupported_media_type",
        "payload_too_large",
        "unavailable",
    ] {
        assert!(text.contains(code), "{code} is not documented");
    }
}

#[tokio::test]
async fn requests_waiting_for_a_hashing_slot_show_in_the_hashing_queue_depth() {
    // One hashing thread and hashes that take a while: a burst of sign-ins queues.
    let app = crate::helpers::spawn_with(&[
        ("HASH_CONCURRENCY", "1"),
        ("ARGON2_MEMORY_KIB", "32768"),
        ("ARGON2_ITERATIONS", "2"),
    ])
    .await;
    let metrics_url = format!("{}/metrics", app.metrics_base);
    let depth = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("pwrecovery_hashing_in_progress "), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("pwrecovery_hashing_queue_depth "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("the hashing queue depth is exported")
    };
    depth().await;
    let burst: Vec<_> = (0..8)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/v1/sessions");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({ "email": format!("nobody{n}@example.org"), "password": "not a password 1234" }))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    let mut deepest = 0.0_f64;
    while !burst.iter().all(tokio::task::JoinHandle::is_finished) {
        deepest = deepest.max(depth().await);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for request in burst {
        assert_eq!(request.await.unwrap().unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        deepest >= 1.0,
        "eight sign-ins on one hashing thread, none seen waiting"
    );
}
