//! Forgot password: no enumeration, exact budgets, one confirmed job per request.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use shared::message::Job;

use crate::helpers::{STRONG, assert_error, fingerprint, spawn_app, spawn_with};

#[tokio::test]
async fn known_unknown_and_over_budget_addresses_get_byte_identical_answers() {
    let app = spawn_with(&[("RATE_LIMIT_EMAIL_PER_HOUR", "1")]).await;
    app.create_user("known@example.org", STRONG).await;

    let known = fingerprint(app.forgot("known@example.org").await).await;
    let unknown = fingerprint(app.forgot("unknown@example.org").await).await;
    // The budget of one is spent: this one is dropped by the worker, invisibly.
    let limited = fingerprint(app.forgot("known@example.org").await).await;

    assert_eq!(known.0, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    assert_eq!(known, limited);
    assert!(known.1.contains_key("content-type"));

    let jobs: Vec<_> = app.jobs(3).await.iter().map(|j| j.envelope()).collect();
    let verdicts: Vec<(String, bool)> = jobs
        .iter()
        .map(|e| match &e.job {
            Job::PasswordResetRequested {
                email,
                within_budget,
                ..
            } => (email.clone(), *within_budget),
            other => panic!("unexpected job {other:?}"),
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("known@example.org".to_owned(), true),
            ("unknown@example.org".to_owned(), true),
            ("known@example.org".to_owned(), false),
        ]
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_for_one_address_yield_exactly_the_budget() {
    let app = spawn_app().await; // 3 per address per hour by default
    let responses = join_all((0..50).map(|_| app.forgot("race@example.org"))).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    let jobs = app.jobs(50).await;
    let within = jobs
        .iter()
        .filter(|j| {
            matches!(
                j.envelope().job,
                Job::PasswordResetRequested {
                    within_budget: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(within, 3);
}

#[tokio::test]
async fn the_per_ip_limit_answers_429_with_retry_after_and_queues_nothing() {
    let app = spawn_with(&[("RATE_LIMIT_IP_PER_HOUR", "4")]).await;
    for i in 0..4 {
        assert_eq!(
            app.forgot(&format!("u{i}@example.org")).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let r = app.forgot("u9@example.org").await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    assert_eq!(app.jobs(4).await.len(), 4);
    assert!(app.drain_jobs().await.is_empty());
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let app = spawn_with(&[("RATE_LIMIT_IP_PER_HOUR", "2")]).await;
    for i in 0..2 {
        let r = app
            .client
            .post(app.url("/v1/password/forgot"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=198.51.100.{i}"))
            .json(&json!({ "email": "a@example.org" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    // A fresh spoofed address does not buy a fresh budget.
    let r = app
        .client
        .post(app.url("/v1/password/forgot"))
        .header("x-forwarded-for", "198.51.100.77")
        .json(&json!({ "email": "a@example.org" }))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    for job in app.jobs(2).await {
        assert!(
            matches!(job.envelope().job, Job::PasswordResetRequested { ip: Some(ref ip), .. } if ip == "127.0.0.1")
        );
    }
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_decides_the_ip_budget() {
    let app = spawn_with(&[
        ("RATE_LIMIT_IP_PER_HOUR", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        let r = app
            .client
            .post(app.url("/v1/password/forgot"))
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
            .json(&json!({ "email": "a@example.org" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{client}");
    }
    let r = app
        .client
        .post(app.url("/v1/password/forgot"))
        .header("x-forwarded-for", "203.0.113.1")
        .json(&json!({ "email": "b@example.org" }))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    let ips: Vec<String> = app
        .jobs(2)
        .await
        .iter()
        .map(|j| match j.envelope().job {
            Job::PasswordResetRequested { ip, .. } => ip.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ips, ["203.0.113.1", "203.0.113.2"]);
}

#[tokio::test]
async fn host_and_forwarded_host_headers_change_nothing_the_api_produces() {
    let app = spawn_app().await;
    let plain = app.forgot("a@example.org").await;
    let plain_status = plain.status();
    let plain_body = plain.bytes().await.unwrap();
    let hostile = app
        .client
        .post(app.url("/v1/password/forgot"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "host=evil.example;proto=http")
        .json(&json!({ "email": "a@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(hostile.status(), plain_status);
    assert_eq!(hostile.bytes().await.unwrap(), plain_body);
    let jobs = app.jobs(2).await;
    let (a, b) = (jobs[0].envelope(), jobs[1].envelope());
    assert_eq!(a.job, b.job);
    assert_eq!(a.locale, b.locale);
    for j in &jobs {
        assert!(!String::from_utf8_lossy(&j.body).contains("evil"));
    }
}

#[tokio::test]
async fn jobs_carry_locale_request_id_and_traceparent() {
    let app = spawn_app().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .client
        .post(app.url("/v1/password/forgot"))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .header("traceparent", traceparent)
        .json(&json!({ "email": "a@example.org" }))
        .send()
        .await
        .unwrap();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let job = app.jobs(1).await.remove(0);
    let envelope = job.envelope();
    assert_eq!(envelope.locale, shared::locale::Locale::ZhCn);
    // On the queue, the locale is its tag.
    let raw: serde_json::Value = serde_json::from_slice(&job.body).unwrap();
    assert_eq!(raw["locale"], "zh-CN");
    assert_eq!(
        envelope.trace.request_id.as_deref(),
        Some(request_id.as_str())
    );
    assert_eq!(envelope.trace.traceparent.as_deref(), Some(traceparent));
    let headers = job.properties.headers().as_ref().unwrap();
    match headers.inner().get("x-request-id") {
        Some(lapin::types::AMQPValue::LongString(s)) => assert_eq!(s.to_string(), request_id),
        other => panic!("x-request-id header missing: {other:?}"),
    }
    assert!(envelope.not_after > envelope.created_at);
}

#[tokio::test]
async fn malformed_addresses_are_refused_before_any_budget_is_counted() {
    let app = spawn_with(&[("RATE_LIMIT_IP_PER_HOUR", "1")]).await;
    for bad in ["nope", "a@@b.org", "a\nb@example.org", "x@-bad-.org"] {
        assert_error(
            app.forgot(bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        )
        .await;
    }
    assert_eq!(
        app.forgot("fine@example.org").await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn without_a_traceparent_the_job_starts_a_trace_named_after_the_request() {
    let app = spawn_app().await;
    let r = app.forgot("a@example.org").await;
    let request_id = r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .replace('-', "");
    let job = app.jobs(1).await.remove(0).envelope();
    let traceparent = job.trace.traceparent.unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{request_id}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-01"));
}
