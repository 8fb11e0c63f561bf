//! `api users import` as an operator runs it: the binary, JSON lines on standard input, refused
//! lines on standard error, the counts on standard output, and the imported accounts signing
//! in to the running api with the passwords they had (the Flask seed's Werkzeug scrypt hash
//! among them).
#![allow(clippy::unwrap_used)]

use e2e::stack::StackEnv;
use serde_json::{Value, json};

/// The counts line(s) of a run's output (its log lines are JSON too).
fn summaries(out: &[String]) -> Vec<Value> {
    (out.iter())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("imported").is_some())
        .collect()
}

#[tokio::test]
async fn the_import_command_reads_standard_input_reports_by_line_and_its_accounts_sign_in() {
    let env = StackEnv::new().await.unwrap();
    env.migrate().await.unwrap();
    let password = "seeded otter kettle 2021";
    let hashes = e2e::foreign_hashes(password);
    let input = [
        json!({ "email": "seed@example.org", "password_hash": hashes["werkzeug_scrypt"] })
            .to_string(),
        "{broken".to_owned(),
        json!({ "email": "django@example.org", "password_hash": hashes["django_pbkdf2_sha256"] })
            .to_string(),
        json!({ "email": "nobody@example.org", "password_hash": "md5$x$y" }).to_string(),
    ]
    .join("\n");
    let (ok, out) = env
        .api_command_with_input(&["users", "import", "-"], &input)
        .await
        .unwrap();
    assert!(!ok, "refused lines fail the command: {out:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("line 2: ") && l.contains("invalid_json")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("line 4: ") && l.contains("unusable_hash")),
        "{out:?}"
    );
    let counts = summaries(&out);
    assert_eq!(
        counts,
        [json!({ "imported": 2, "skipped": 0, "refused": 2 })],
        "{out:?}"
    );
    // The addresses themselves are never printed.
    assert!(out.iter().all(|l| !l.contains("@example.org")), "{out:?}");

    // Again, the good lines only: nothing new, and the command succeeds.
    let good: Vec<&str> = input.lines().step_by(2).collect();
    let (ok, out) = env
        .api_command_with_input(&["users", "import", "-"], &good.join("\n"))
        .await
        .unwrap();
    assert!(ok, "{out:?}");
    let counts = summaries(&out);
    assert_eq!(
        counts,
        [json!({ "imported": 0, "skipped": 2, "refused": 0 })],
        "{out:?}"
    );

    let (_api, base) = env.start_api().await.unwrap();
    let client = reqwest::Client::new();
    for email in ["seed@example.org", "django@example.org"] {
        let r = client
            .post(format!("{base}/v1/sessions"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{email}");
    }
}
