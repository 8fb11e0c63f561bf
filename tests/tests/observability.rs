//! The dashboard and the alert rules in `deploy/observability/`: `promtool check rules`
//! accepts the rules and `promtool test rules` their unit tests (`alerts.test.yml`), every
//! rule has a description and a runbook section in `docs/runbooks.md`, the dashboard is valid
//! Grafana JSON whose every query is filtered by its `job`, `namespace` and `instance`
//! variables, and every metric either names is one the running services export, with every
//! label value either matches (`queue="mail.jobs"`, each alternative of
//! `outcome=~"retried|dead"`) and every label either groups by. What the services export:
//! `pwrecovery_*` metrics and the standard `process_*` ones, nothing else; the build info of
//! each; the outbox backlog while the broker is unreachable.
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

/// Labels Prometheus adds to every series it scrapes (`namespace` by the usual Kubernetes
/// relabelling): no service exports them, and the dashboard filters by them.
const TARGET_LABELS: [&str; 3] = ["job", "namespace", "instance"];

/// The standard process metrics, which keep their usual names (no `pwrecovery_` prefix).
const PROCESS_METRICS: [&str; 7] = shared::process_metrics::NAMES;

fn alert_rules() -> Vec<Value> {
    let rules = &e2e::parse_yaml(&[dir().join("alerts.yml")])[0][0];
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("grafana-dashboard.json")).unwrap())
        .unwrap()
}

/// The dashboard's template variables by name, and the metric each query variable reads
/// (`label_values(metric{…}, label)`).
fn dashboard_variables() -> BTreeMap<String, Value> {
    dashboard()["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// The metric a `label_values(metric{…}, label)` query reads.
fn label_values_metric(query: &str) -> String {
    let inner = query
        .strip_prefix("label_values(")
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    inner
        .split(['{', ',', ')'])
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

/// Each occurrence of a metric in an expression, with the matchers of its selector (none
/// when it has no `{…}`).
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for name in metric_names(expr) {
        for (at, _) in expr.match_indices(name.as_str()) {
            let after = &expr[at + name.len()..];
            if expr[..at].chars().next_back().is_some_and(is_name)
                || after.chars().next().is_some_and(is_name)
            {
                continue;
            }
            let found = match after.strip_prefix('{') {
                Some(rest) => {
                    let end = rest.find('}').expect("a closed selector");
                    matchers(&format!("{name}{{{}}}", &rest[..end]))
                }
                None => Vec::new(),
            };
            out.push((name.clone(), found));
        }
    }
    out
}

/// The `id` of a Markdown heading as GitHub writes it: lower case, spaces to `-`, other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The PromQL expressions of the alert rules and of the dashboard's panels.
fn expressions() -> Vec<String> {
    let mut exprs: Vec<String> = alert_rules()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    exprs.extend(panel_expressions());
    exprs
}

/// The PromQL expressions of the dashboard's panels.
fn panel_expressions() -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
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
        // The dashboard's filters by target label (`job=~"$job"`) match what Prometheus
        // adds, not what a service exports.
        for matcher in matchers(expr)
            .into_iter()
            .filter(|m| !TARGET_LABELS.contains(&m.label.as_str()))
        {
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
            if !carried.contains(&label) && !TARGET_LABELS.contains(&label.as_str()) {
                missing.push(format!(
                    "grouped by {label}, which no series of {read:?} has"
                ));
            }
        }
    }
    missing
}

/// Runs `promtool ARGS` in deploy/observability; its standard output once it succeeded.
fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
        .expect("promtool (Debian's prometheus package; the test command installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let stdout = promtool(&["check", "rules", "alerts.yml"]);
    assert!(stdout.contains("SUCCESS"));
}

#[test]
fn promtool_passes_the_unit_tests_of_the_alert_rules() {
    // alerts.test.yml: the dead-letter alert fires on new dead letters and resolves while
    // the stored count stays above 0; the absent-target alerts fire when every worker's or
    // every api's series vanish.
    promtool(&["test", "rules", "alerts.test.yml"]);
    let tests = &e2e::parse_yaml(&[dir().join("alerts.test.yml")])[0][0];
    let tested: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|t| !t["exp_alerts"].as_array().unwrap().is_empty())
        .map(|t| t["alertname"].as_str().unwrap())
        .collect();
    for alert in ["MailDeadLettersGrowing", "MailWorkerAbsent", "ApiAbsent"] {
        assert!(
            tested.contains(alert),
            "{alert} is tested firing: {tested:?}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_description_and_a_runbook_section() {
    let runbooks = std::fs::read_to_string(dir().join("../../docs/runbooks.md")).unwrap();
    let sections: Vec<(String, String)> = runbooks
        .split("\n## ")
        .skip(1)
        .map(|section| {
            let (heading, body) = section.split_once('\n').unwrap();
            (anchor(heading), body.to_owned())
        })
        .collect();
    let anchors: BTreeSet<&str> = sections.iter().map(|(a, _)| a.as_str()).collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10);
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap();
        alerts.insert(name.to_lowercase());
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or("");
            assert!(text.len() > 20, "{name}: {annotation} {text:?}");
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let expected = format!("docs/runbooks.md#{}", name.to_lowercase());
        assert_eq!(url, expected, "{name}: runbook_url");
        let (_, fragment) = url.split_once('#').unwrap();
        assert!(
            anchors.contains(fragment),
            "{name}: no heading `## {name}` in docs/runbooks.md ({anchors:?})"
        );
    }
    for (anchor, body) in &sections {
        assert!(
            alerts.contains(anchor),
            "runbook section {anchor} has no alert"
        );
        for part in [
            "**What it means.**",
            "**What to check.**",
            "**What to do.**",
        ] {
            assert!(body.contains(part), "{anchor}: {part}");
        }
    }
}

#[test]
fn every_dashboard_query_is_filtered_by_job_namespace_and_instance() {
    let variables = dashboard_variables();
    for name in TARGET_LABELS {
        let variable = variables
            .get(name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(variable["type"], "query", "{variable}");
        assert_eq!(variable["includeAll"], true, "{variable}");
        // "All" must also match series without the label (no namespace off Kubernetes).
        assert_eq!(variable["allValue"], ".*", "{variable}");
        let query = variable["query"]["query"].as_str().unwrap();
        assert_eq!(label_values_metric(query), "pwrecovery_build_info");
        assert!(query.trim_end().ends_with(&format!(", {name})")), "{query}");
    }
    let exprs = panel_expressions();
    assert!(
        exprs.iter().any(|e| e.contains("pwrecovery_build_info")),
        "a panel shows the running versions"
    );
    for expr in &exprs {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{expr}");
        for (metric, matchers) in found {
            for label in TARGET_LABELS {
                let filtered = matchers
                    .iter()
                    .any(|m| m.label == label && m.op == "=~" && m.value == format!("${label}"));
                assert!(filtered, "{metric} in {expr} is not filtered by ${label}");
            }
        }
    }
}

#[test]
fn selectors_are_read_with_their_matchers() {
    let found =
        selectors(r#"sum(rate(a_total{job=~"$job", s="5"}[5m])) / b_total + a_total{x="1"}"#);
    let summary: Vec<(String, usize)> = found.iter().map(|(m, ms)| (m.clone(), ms.len())).collect();
    assert_eq!(
        summary,
        [
            ("a_total".into(), 2),
            ("a_total".into(), 1),
            ("b_total".into(), 0)
        ]
    );
    assert_eq!(found[0].1[0].value, "$job");
    assert_eq!(anchor("MailDeadLettersGrowing"), "maildeadlettersgrowing");
    assert_eq!(anchor("Two words, here"), "two-words-here");
    assert_eq!(
        label_values_metric(r#"label_values(pwrecovery_build_info{job=~"$job"}, instance)"#),
        "pwrecovery_build_info"
    );
}

#[test]
fn the_dashboard_is_grafana_json_with_a_prometheus_query_in_every_panel() {
    let dashboard = dashboard();
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
    let mut read: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for variable in dashboard_variables().values() {
        if let Some(query) = variable["query"]["query"].as_str() {
            read.insert(label_values_metric(query));
        }
    }
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
    for (service, base) in [("api", &api_metrics), ("mail-worker", &worker_http)] {
        check_names_and_build_info(service, &metrics_text(base).await);
    }
}

/// The commit the binaries were built from, as the build script finds it.
fn expected_commit() -> Option<String> {
    for name in ["GIT_COMMIT", "SOURCE_COMMIT"] {
        if let Ok(value) = std::env::var(name)
            && !value.trim().is_empty()
        {
            return Some(value.trim().to_owned());
        }
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Every name `service` exports is `pwrecovery_*` or a standard process metric, each process
/// metric is there, and one `pwrecovery_build_info` of value 1 names the service, its version
/// and its commit.
fn check_names_and_build_info(service: &str, text: &str) {
    let exported = series(text);
    let strays: BTreeSet<&String> = exported
        .iter()
        .map(|(name, _)| name)
        .filter(|n| !n.starts_with("pwrecovery_") && !PROCESS_METRICS.contains(&n.as_str()))
        .collect();
    assert!(strays.is_empty(), "{service} exports {strays:?}");
    for name in PROCESS_METRICS {
        assert!(
            exported.iter().any(|(n, _)| n == name),
            "{service}: no {name}"
        );
    }
    let info: Vec<&BTreeMap<String, String>> = exported
        .iter()
        .filter(|(n, _)| n == "pwrecovery_build_info")
        .map(|(_, labels)| labels)
        .collect();
    assert_eq!(info.len(), 1, "{service}: {info:?}");
    assert_eq!(info[0]["service"], service);
    assert_eq!(info[0]["version"], env!("CARGO_PKG_VERSION"));
    match expected_commit() {
        Some(commit) => assert_eq!(info[0]["commit"], commit, "{service}"),
        None => assert_eq!(info[0]["commit"], "unknown", "{service}"),
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("pwrecovery_build_info{") && l.ends_with("} 1")),
        "{service}: build info is 1"
    );
}

/// The value of an unlabelled series in an exposition.
fn value_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_outbox_backlog_and_its_age_show_while_the_broker_is_unreachable() {
    let amqp = e2e::amqp_url();
    let broker = amqp
        .split("://")
        .nth(1)
        .and_then(|rest| rest.rsplit('@').next())
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let proxy = e2e::FaultProxy::start(&broker).await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set(
        "AMQP_URL",
        &format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()),
    );
    proxy.cut();
    let (api, base) = env.start_api().await.unwrap();
    let api_metrics = StackEnv::api_metrics_base(&api).await.unwrap();
    let text = metrics_text(&api_metrics).await;
    assert_eq!(
        value_of(&text, "pwrecovery_outbox_rows"),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("pwrecovery_hashing_queue_depth "),
        "the hashing queue is a series from the start: {text}"
    );
    // A sign-up needs no broker: its verification job waits in the outbox.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": "ann@example.org", "password": "correct horse battery staple 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let waiting = e2e::poll_until(Duration::from_secs(30), || async {
        let text = metrics_text(&api_metrics).await;
        let rows = value_of(&text, "pwrecovery_outbox_rows")?;
        let age = value_of(&text, "pwrecovery_outbox_oldest_row_age_seconds")?;
        (rows >= 1.0 && age >= 1.0).then_some((rows, age))
    })
    .await;
    let (rows, _) = waiting.expect("the backlog and its age are reported");
    assert_eq!(rows, 1.0, "one verification job");
    // The broker is back: the relay publishes the row and the backlog reads 0 again.
    proxy.restore();
    let drained = e2e::poll_until(Duration::from_secs(60), || async {
        let text = metrics_text(&api_metrics).await;
        (value_of(&text, "pwrecovery_outbox_rows")? == 0.0
            && value_of(&text, "pwrecovery_outbox_oldest_row_age_seconds")? == 0.0)
            .then_some(())
    })
    .await;
    assert!(drained.is_some(), "{}", metrics_text(&api_metrics).await);
}
