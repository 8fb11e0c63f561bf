//! Operator tools against the real stack: `mail-worker send-test` renders a real template and
//! sends it through the configured transport, printing the provider's answer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::stack::{SmtpSink, StackEnv};
use serde_json::json;

#[tokio::test]
async fn send_test_delivers_a_real_template_and_prints_the_providers_answer() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("MAIL_TRANSPORT", "smtp");
    env.set("SMTP_URL", &sink.url());
    let (ok, out) = env
        .worker_command(&["send-test", "--to", "Ops@Example.org"])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("250 ") && !l.contains('@')),
        "the provider's answer, addresses redacted: {out:?}"
    );
    let email = sink
        .wait_for_email(
            "ops@example.org",
            "Reset your Example Accounts password",
            Duration::from_secs(10),
        )
        .await
        .expect("the test email arrived");
    let link = email
        .link("https://account.example.test/reset-password")
        .unwrap();
    assert!(link.ends_with("token=send-test-not-a-valid-link"), "{link}");
    assert!(email.html().contains("<!DOCTYPE html>"));

    // Another kind and locale; then a refusal, printed and failing the command.
    let (ok, out) = env
        .worker_command(&[
            "send-test",
            "--to",
            "ops@example.org",
            "--kind",
            "password-changed",
            "--locale",
            "zh-CN",
        ])
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    assert_eq!(sink.emails().len(), 2);
    sink.set_mode(json!({"per_recipient": {"ops@example.org": "550 5.7.1 refused"}}))
        .await
        .unwrap();
    let (ok, out) = env
        .worker_command(&["send-test", "--to", "ops@example.org"])
        .await
        .unwrap();
    assert!(!ok, "a refusal fails the command");
    let text = out.join("\n");
    assert!(
        text.contains("refused") && text.contains("550") && !text.contains("ops@"),
        "{text}"
    );
    let (ok, _) = env
        .worker_command(&["send-test", "--to", "not an address"])
        .await
        .unwrap();
    assert!(!ok);
}
