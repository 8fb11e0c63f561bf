//! The dashboard and the alert rules in `deploy/observability/`: `promtool check rules`
//! accepts the rules, the dashboard is valid Grafana JSON, and every metric either names is
//! one the running services export, with every label value either matches (`queue="mail.jobs"`,
//! each alternative of `outcome=~"retried|dead"`) and every label either groups by.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
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

/// A label matcher of an expression (`metric{label op "value"}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Matcher {
    /// The metric of the selector (`None`: a selector without a name).
    metric: Option<String>,
    label: String,
    /// `=`, `!=`, `=~` or `!~`.
    op: String,
    value: String,
}

impl Matcher {
    /// The label values the matcher names: its value, or each alternative of a regular
    /// expression. Only literal alternatives are read (a wildcard would match anything).
    fn values(&self) -> Vec<String> {
        if !self.op.ends_with('~') {
            return vec![self.value.clone()];
        }
        self.value
            .split('|')
            .map(|alternative| {
                assert!(
                    alternative
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c)),
                    "{self:?}: only alternatives of literal values are checked; \
                     extend this test for {alternative:?}"
                );
                alternative.to_owned()
            })
            .collect()
    }
}

/// A quoted PromQL string starting at `chars[start]`: its value and the index after it.
fn read_string(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' && i + 1 < chars.len() {
            i += 1;
        }
        value.push(chars[i]);
        i += 1;
    }
    (value, i + 1)
}

/// The label matchers of an expression.
fn matchers(expr: &str) -> Vec<Matcher> {
    let chars: Vec<char> = expr.chars().collect();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = read_string(&chars, i).1;
            word.clear();
        } else if is_name(c) {
            word.push(c);
            i += 1;
        } else if c == '{' {
            let metric = (!word.is_empty()).then(|| std::mem::take(&mut word));
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                assert!(i < chars.len(), "unclosed selector in {expr}");
                if chars[i] == '}' {
                    i += 1;
                    break;
                }
                let mut label = String::new();
                while is_name(chars[i]) {
                    label.push(chars[i]);
                    i += 1;
                }
                while chars[i].is_whitespace() {
                    i += 1;
                }
                let mut op = String::new();
                while matches!(chars[i], '=' | '!' | '~') {
                    op.push(chars[i]);
                    i += 1;
                }
                assert!(
                    ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                    "bad matcher {label}{op} in {expr}"
                );
                while chars[i].is_whitespace() {
                    i += 1;
                }
                assert!(
                    matches!(chars[i], '"' | '\'' | '`'),
                    "unquoted value in {expr}"
                );
                let (value, next) = read_string(&chars, i);
                i = next;
                out.push(Matcher {
                    metric: metric.clone(),
                    label,
                    op,
                    value,
                });
            }
        } else {
            word.clear();
            i += 1;
        }
    }
    out
}

/// The labels an expression groups by (`by (…)`, `without (…)`).
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['b', 'w']) {
        let (before, from) = rest.split_at(at);
        let keyword = ["by", "without"].into_iter().find(|k| {
            from.starts_with(k)
                && !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && from[k.len()..].trim_start().starts_with('(')
        });
        let Some(keyword) = keyword else {
            rest = &from[1..];
            continue;
        };
        let inner = from[keyword.len()..].trim_start();
        let end = inner.find(')').expect("a closed grouping");
        labels.extend(
            inner[1..end]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
        rest = &inner[end..];
    }
    labels
}

/// Every series of a Prometheus text exposition: its metric name and labels.
fn series(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let chars: Vec<char> = line.chars().collect();
        let name_end = chars
            .iter()
            .position(|c| *c == '{' || c.is_whitespace())
            .unwrap_or(chars.len());
        let name: String = chars[..name_end].iter().collect();
        let mut labels = BTreeMap::new();
        let mut i = name_end;
        if chars.get(i) == Some(&'{') {
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == ',' || chars[i].is_whitespace() {
                    i += 1;
                    continue;
                }
                let eq = i + chars[i..].iter().position(|c| *c == '=').unwrap();
                let label: String = chars[i..eq].iter().collect();
                let (value, next) = read_string(&chars, eq + 1);
                labels.insert(label.trim().to_owned(), value);
                i = next;
            }
        }
        out.push((name, labels));
    }
    out
}

/// What the expressions name that no exported series has: label values of matchers
/// (`metric{label="value"}`, each alternative of `=~`; negative matchers too, whose value
/// must exist for them to exclude anything), and labels grouped by that no series of the
/// expression's metrics carries.
fn unexported_labels(
    exprs: &[String],
    exported: &[(String, BTreeMap<String, String>)],
) -> Vec<String> {
    let mut missing = Vec::new();
    for expr in exprs {
        for matcher in matchers(expr) {
            let values: BTreeSet<&String> = exported
                .iter()
                .filter(|(name, _)| matcher.metric.as_ref().is_none_or(|m| m == name))
                .filter_map(|(_, labels)| labels.get(&matcher.label))
                .collect();
            for value in matcher.values() {
                if !values.contains(&value) {
                    missing.push(format!(
                        "{}{{{}{}\"{value}\"}} (exported values of {}: {values:?})",
                        matcher.metric.as_deref().unwrap_or_default(),
                        matcher.label,
                        matcher.op,
                        matcher.label,
                    ));
                }
            }
        }
        let read = metric_names(expr);
        let carried: BTreeSet<&String> = exported
            .iter()
            .filter(|(name, _)| read.contains(name))
            .flat_map(|(_, labels)| labels.keys())
            .collect();
        for label in grouping_labels(expr) {
            if !carried.contains(&label) {
                missing.push(format!(
                    "grouped by {label}, which no series of {read:?} has"
                ));
            }
        }
    }
    missing
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

#[test]
fn label_matchers_and_groupings_are_read_from_expressions() {
    let expr = r#"sum(rate(jobs_total{outcome=~"retried|dead", kind != "x"}[10m])) / clamp_min(sum by (route, status) (rate(http_requests_total{status="503"}[5m])), 1e-9) and max(mail_queue_depth{queue="mail.jobs"}) > 0"#;
    let found = matchers(expr);
    let m = |metric: &str, label: &str, op: &str, value: &str| Matcher {
        metric: Some(metric.to_owned()),
        label: label.to_owned(),
        op: op.to_owned(),
        value: value.to_owned(),
    };
    assert_eq!(
        found,
        [
            m("jobs_total", "outcome", "=~", "retried|dead"),
            m("jobs_total", "kind", "!=", "x"),
            m("http_requests_total", "status", "=", "503"),
            m("mail_queue_depth", "queue", "=", "mail.jobs"),
        ]
    );
    assert_eq!(found[0].values(), ["retried", "dead"]);
    assert_eq!(matchers(r#"m{a='q\'r'}"#)[0].value, "q'r");
    assert_eq!(
        grouping_labels(expr).into_iter().collect::<Vec<_>>(),
        ["route", "status"]
    );
    assert_eq!(
        grouping_labels("sum without(job_kind) (x_total) + sum(bytes_total)")
            .into_iter()
            .collect::<Vec<_>>(),
        ["job_kind"]
    );
    let exported = series(
        "# TYPE jobs_total counter\njobs_total{kind=\"x\",outcome=\"dead\"} 1\n\
         http_requests_total{route=\"/x\",status=\"503\"} 2\n\
         mail_queue_depth{queue=\"mail.jobs\"} 0\nlog_total{line=\"a\\\"b,c=d\"} 1\n",
    );
    assert_eq!(exported.len(), 4);
    assert_eq!(exported[3].1["line"], "a\"b,c=d");
    // `retried` is the one value no series has.
    let missing = unexported_labels(&[expr.to_owned()], &exported);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("jobs_total{outcome=~\"retried\"}"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn every_metric_and_label_value_the_dashboard_and_the_alerts_read_is_exported() {
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    // One wrong reset code a minute pauses code entry (a 503), and one email a second makes
    // a burst wait for its send budget: answers and outcomes the rules and the dashboard
    // read, which a run without them would not export.
    env.set("CODE_BREAKER_WRONG_PER_MINUTE", "1");
    env.set("SMTP_MAX_PER_SECOND", "1");
    let (api, base) = env.start_api().await.unwrap();
    let api_metrics = StackEnv::api_metrics_base(&api).await.unwrap();
    let (_worker, worker_http) = env.start_worker(&sink.url()).await.unwrap();
    // Traffic that touches every kind of series: sign-up, verification, a reset, and a used
    // link submitted again.
    let password = "correct horse battery staple 42";
    let new_password = "plaid zebra umbrella tangerine 97";
    env.sign_up_and_verify(&base, &base, &sink, "ann@example.org", password)
        .await
        .unwrap();
    let token = env
        .reset_token(&base, &sink, "ann@example.org")
        .await
        .unwrap();
    let reset = json!({ "token": token, "new_password": new_password });
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
    // Wrong codes until the site-wide breaker answers 503 (the first wrong code already
    // passes the limit, unless a new minute began in between).
    let mut paused = false;
    for _ in 0..5 {
        let r = http
            .post(format!("{base}/v1/password/reset/code"))
            .json(&json!({ "email": "ann@example.org", "code": "0000 0000", "new_password": new_password }))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            paused = true;
            break;
        }
        assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    }
    assert!(paused, "code entry never paused");
    // A job the provider refuses once (retried), a burst over the send budget (waits for
    // it), and a job nobody can read (dead-lettered).
    sink.set_mode(json!({ "data_code": 451, "fail_times": 1 }))
        .await
        .unwrap();
    let before = sink.emails().len();
    let mut jobs = e2e::notice_jobs("burst", 4);
    jobs.push(b"not a job".to_vec());
    e2e::publish_raw_jobs(&env.topology(), &jobs).await.unwrap();
    let delivered = sink.wait_for(before + 4, Duration::from_secs(60)).await;
    assert_eq!(delivered.len(), before + 4);

    let exprs = expressions();
    let read: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(read.len() >= 12, "{read:?}");
    // Series appear as the worker settles jobs and reports its queues: waited for.
    let unexported = || async {
        let text = metrics_text(&api_metrics).await + &metrics_text(&worker_http).await;
        let exported = series(&text);
        let names: BTreeSet<String> = exported.iter().map(|(name, _)| name.clone()).collect();
        let mut missing: Vec<String> = read
            .difference(&names)
            .map(|name| format!("metric {name}"))
            .collect();
        missing.extend(unexported_labels(&exprs, &exported));
        missing
    };
    let all = e2e::poll_until(Duration::from_secs(30), || async {
        unexported().await.is_empty().then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "read by the rules or the dashboard but not exported: {:#?}",
        unexported().await
    );
}
