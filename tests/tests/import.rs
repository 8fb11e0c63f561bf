//! `api users import` as an operator runs it: the binary, JSON lines on standard input, refused
//! lines on standard error, the counts on standard output, and the imported accounts signing
//! in to the running api with the passwords they had (the Flask seed's Werkzeug scrypt hash
//! among them), a stranger's refused sign-in taking as long as one against the costliest.
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
        // Lines whose refusal must not quote them: an address as a field's name, a hash where
        // a flag belongs.
        json!({ "secret.person@example.org": 1 }).to_string(),
        json!({ "email": "flag@example.org", "password_hash": null, "email_verified": hashes["bcrypt_2b"] }).to_string(),
    ]
    .join("\r\n");
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
        [json!({ "imported": 2, "skipped": 0, "refused": 4 })],
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("line 5: ") && l.contains("invalid_fields")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("line 6: ") && l.contains("invalid_fields")),
        "{out:?}"
    );
    // The addresses and hashes themselves are never printed.
    assert!(
        out.iter()
            .all(|l| !l.contains("@example.org") && !l.contains("$2b$")),
        "{out:?}"
    );

    // Again, the good lines only: nothing new, and the command succeeds.
    let lines: Vec<&str> = input.lines().collect();
    let good = [lines[0], lines[2]];
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

    let (api, base) = env.start_api().await.unwrap();
    let client = reqwest::Client::new();
    // At start the api times the imported signatures; the Werkzeug scrypt hash (32 MiB) is
    // the costliest, and a refused sign-in for an address without an account waits as long.
    let costliest = api
        .wait_for_log_field(
            "sign-in refusal floor changed",
            "costliest",
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        costliest.as_deref(),
        Some("scrypt:32768:8:1"),
        "{:?}",
        api.output()
    );
    let metrics = e2e::stack::metrics_text(&StackEnv::api_metrics_base(&api).await.unwrap()).await;
    let floor: f64 = (metrics.lines())
        .find_map(|l| l.strip_prefix("pwrecovery_sign_in_refusal_floor_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no floor in {metrics}"));
    assert!(floor > 0.0, "{floor}");
    let started = std::time::Instant::now();
    let r = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({ "email": "stranger@example.org", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        started.elapsed().as_secs_f64() >= floor,
        "{:?} < {floor}",
        started.elapsed()
    );
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
