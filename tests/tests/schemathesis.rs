//! Property-based testing of the HTTP API from its own OpenAPI document: schemathesis
//! generates requests for every documented operation (valid and invalid ones) and checks
//! that nothing answers 5xx and that every answer's status, content type and body are the
//! documented ones.
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, time::Duration};

use e2e::stack::StackEnv;

/// The schemathesis CLI: `SCHEMATHESIS`, else the test virtualenv's.
fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("pwrecovery/smtp-venv/bin/schemathesis")
        })
}

#[tokio::test]
async fn every_documented_operation_survives_generated_requests() {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} missing: run ./deploy/local/test.sh, which installs it",
        bin.display()
    );
    let mut env = StackEnv::new().await.unwrap();
    env.set("RUST_LOG", "warn,api::startup=info");
    let (api, base) = env.start_api().await.unwrap();
    let report = std::env::temp_dir().join(format!("pwr-schemathesis-{}.xml", e2e::unique_id()));
    let run = tokio::process::Command::new(&bin)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "100",
            "--seed",
            "20261126",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&report)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let junit = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("test cases") || l.contains("passed") || l.contains("Test cases"))
        .collect();
    println!("schemathesis: {}", summary.join(" | "));
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\napi log: {:?}",
        api.output().iter().rev().take(20).collect::<Vec<_>>()
    );
    // It really ran: every documented operation is a test case in the report.
    let document: serde_json::Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().map_or(0, serde_json::Map::len))
        .sum();
    assert!(
        operations >= 9,
        "the document lists {operations} operations"
    );
    let cases = junit.matches("<testcase").count();
    assert!(
        cases >= operations,
        "only {cases} of {operations} operations tested:\n{stdout}"
    );
    assert!(!api.output().iter().any(|l| l.contains("panicked")));
}
