//! The dashboard and the alert rules in `deploy/observability/`: `promtool check rules`
//! accepts the rules, the dashboard is valid Grafana JSON, and every metric either names is
//! one the running services export.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::stack::{SmtpSink, StackEnv, metrics_text};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

/// The PromQL expressions of the alert rules and of the dashboard's panels.
fn expressions() -> Vec<String> {
    let rules = &e2e::parse_yaml(&[dir().join("alerts.yml")])[0][0];
    let mut exprs: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The metric names an expression reads: identifiers with an underscore, outside label
/// values, that are not PromQL functions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const FUNCTIONS: [&str; 3] = ["histogram_quantile", "clamp_min", "clamp_max"];
    let mut names = BTreeSet::new();
    let mut in_string = false;
    // Inside `by (…)` / `without (…)`: label names, not metrics.
    let mut in_grouping = false;
    let mut last_word = String::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.contains('_') && !FUNCTIONS.contains(&word.as_str()) && !in_grouping {
            names.insert(word.clone());
        }
        if !word.is_empty() {
            last_word = std::mem::take(&mut word);
        }
        if !in_string && c == '(' && matches!(last_word.as_str(), "by" | "without") {
            in_grouping = true;
        } else if !in_string && c == ')' {
            in_grouping = false;
        }
        if !in_string && !c.is_whitespace() {
            last_word.clear();
        }
    }
    names
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir().join("alerts.yml"))
        .output()
        .expect("promtool (Debian's prometheus package; the test command installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn the_dashboard_is_grafana_json_with_a_prometheus_query_in_every_panel() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        assert_eq!(panel["datasource"]["type"], "prometheus", "{panel}");
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        r#"sum(rate(jobs_total{outcome=~"retried|dead_x"}[5m])) / clamp_min(sum(rate(http_requests_total[5m])), 1e-9)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["http_requests_total", "jobs_total"]
    );
    let names = metric_names(
        "sum by (limit, domain_class) (rate(mail_send_budget_waits_total[5m])) + sum without (job_kind) (x_total)",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["mail_send_budget_waits_total", "x_total"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_read_is_exported() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    let (api, base) = env.start_api().await.unwrap();
    let api_metrics = StackEnv::api_metrics_base(&api).await.unwrap();
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    // Traffic that touches every kind of series: sign-up, verification, a reset, and a used
    // link submitted again.
    let password = "correct horse battery staple 42";
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", password)
        .await
        .unwrap();
    let token = env
        .reset_token(&base, &sink, "ann@example.org")
        .await
        .unwrap();
    let reset = json!({ "token": token, "new_password": "plaid zebra umbrella tangerine 97" });
    let http = reqwest::Client::new();
    for expected in [204, 400] {
        let r = http
            .post(format!("{base}/v1/password/reset"))
            .json(&reset)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert!(
        sink.wait_for_email("ann@example.org", "changed", Duration::from_secs(30))
            .await
            .is_some()
    );
    let exported = e2e::poll_until(Duration::from_secs(30), || async {
        let text = metrics_text(&api_metrics).await + &metrics_text(&worker_http).await;
        let names: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        // The worker's per-batch series appear with the first job it settles.
        names
            .contains("mail_oldest_job_age_seconds")
            .then_some(names)
    })
    .await
    .expect("the worker exported its job series");
    let read: BTreeSet<String> = expressions().iter().flat_map(|e| metric_names(e)).collect();
    assert!(read.len() >= 12, "{read:?}");
    let missing: Vec<&String> = read.difference(&exported).collect();
    assert!(missing.is_empty(), "read but not exported: {missing:?}");
}
