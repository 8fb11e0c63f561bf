//! OpenTelemetry traces of the real binaries, exported over OTLP/HTTP to a receiver that
//! decodes them with the official protobuf messages (tests/otlp/otlp_receiver.py): one
//! forgot-password request is one trace from the caller's span through the api's server and
//! producer spans to the worker's consumer and SMTP client spans, and the trace id is on the
//! log lines of both.
#![allow(clippy::unwrap_used)]

use std::{process::Stdio, time::Duration};

use e2e::stack::{SmtpSink, StackEnv};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Receiver {
    _child: tokio::process::Child,
    url: String,
}

impl Receiver {
    async fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otlp/otlp_receiver.py");
        let mut child = tokio::process::Command::new(e2e::test_python())
            .arg(script)
            .arg("0")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the receiver starts (is opentelemetry-proto installed?)")
            .unwrap()
            .unwrap_or_default();
        let port = first
            .strip_prefix("listening ")
            .expect("its port")
            .to_owned();
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn spans(&self) -> Vec<Value> {
        reqwest::get(format!("{}/spans", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn one<'a>(spans: &'a [Value], service: &str, kind: &str) -> Option<&'a Value> {
    spans
        .iter()
        .find(|s| s["service"] == service && s["kind"] == kind)
}

/// The JSON log lines of `output`.
fn log_lines(output: &[String]) -> Vec<Value> {
    output
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn one_forgot_password_request_is_one_trace_across_api_and_worker() {
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await.unwrap();
    let mut env = StackEnv::new().await.unwrap();
    env.set("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url);
    env.set("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (name, value) in [
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10000"),
    ] {
        env.set(name, value);
    }
    // As a copy of .env.example leaves them: empty is unset.
    for empty in [
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_TRACES_SAMPLER_ARG",
    ] {
        env.set(empty, "");
    }
    let (api, base) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let email = "traced@example.org";
    env.sign_up_and_verify(&base, &base, &sink, email, "correct horse battery staple")
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        sink.wait_for_email(email, "Reset", Duration::from_secs(60))
            .await
            .is_some()
    );

    let trace = e2e::poll_until(Duration::from_secs(30), || async {
        let spans: Vec<Value> = receiver
            .spans()
            .await
            .into_iter()
            .filter(|s| s["trace_id"] == CALLER_TRACE)
            .collect();
        // Each process exports on its own schedule: wait for all four.
        let whole = [
            ("api", "SPAN_KIND_SERVER"),
            ("api", "SPAN_KIND_PRODUCER"),
            ("mail-worker", "SPAN_KIND_CONSUMER"),
            ("mail-worker", "SPAN_KIND_CLIENT"),
        ]
        .iter()
        .all(|(service, kind)| one(&spans, service, kind).is_some());
        whole.then_some(spans)
    })
    .await
    .unwrap_or_else(|| panic!("no whole trace; api: {:?}", api.output()));
    let server = one(&trace, "api", "SPAN_KIND_SERVER").expect("the api's server span");
    assert_eq!(server["name"], "POST /v1/password/forgot");
    assert_eq!(server["parent_span_id"], CALLER_SPAN, "the caller's span");
    assert_eq!(server["attributes"]["http.response.status_code"], 202);
    let producer = one(&trace, "api", "SPAN_KIND_PRODUCER").expect("the publish");
    assert_eq!(producer["parent_span_id"], server["span_id"]);
    assert_eq!(producer["attributes"]["messaging.system"], "rabbitmq");
    let consumer = one(&trace, "mail-worker", "SPAN_KIND_CONSUMER").expect("the job");
    assert_eq!(consumer["parent_span_id"], producer["span_id"]);
    assert_eq!(
        consumer["attributes"]["messaging.message.id"],
        producer["attributes"]["messaging.message.id"]
    );
    let smtp = one(&trace, "mail-worker", "SPAN_KIND_CLIENT").expect("the SMTP send");
    assert_eq!(smtp["parent_span_id"], consumer["span_id"]);
    assert_eq!(
        server["resource"]["service.version"],
        env!("CARGO_PKG_VERSION")
    );

    // The trace id is on the api's access log line and on the worker's lines about the job
    // (read from their output as it arrives).
    let access = e2e::poll_until(Duration::from_secs(10), || async {
        log_lines(&api.output())
            .into_iter()
            .find(|l| l["message"] == "request" && l["route"] == "/v1/password/forgot")
    })
    .await
    .expect("the access log line");
    assert_eq!(access["trace_id"], CALLER_TRACE);
    let job_done = e2e::poll_until(Duration::from_secs(10), || async {
        log_lines(&worker.output())
            .into_iter()
            .find(|l| l["span"]["trace_id"] == CALLER_TRACE && l["message"] == "job done")
    })
    .await;
    assert!(job_done.is_some(), "{:?}", worker.output());

    // Without a caller's trace the request starts one of its own, named in its log line.
    let r = http
        .post(format!("{base}/v1/password/forgot"))
        .json(&serde_json::json!({ "email": "nobody@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let root = e2e::poll_until(Duration::from_secs(30), || async {
        receiver.spans().await.into_iter().find(|s| {
            s["kind"] == "SPAN_KIND_SERVER"
                && s["name"] == "POST /v1/password/forgot"
                && s["trace_id"] != CALLER_TRACE
        })
    })
    .await
    .expect("a server span of its own");
    assert_eq!(root["parent_span_id"], "");
    let logged = e2e::poll_until(Duration::from_secs(10), || async {
        log_lines(&api.output()).into_iter().find(|l| {
            l["message"] == "request"
                && l["route"] == "/v1/password/forgot"
                && l["trace_id"] == root["trace_id"]
        })
    })
    .await;
    assert!(logged.is_some(), "{:?}", api.output());
}

#[tokio::test]
async fn without_an_endpoint_the_callers_trace_id_is_still_logged() {
    let env = StackEnv::new().await.unwrap();
    let (api, base) = env.start_api().await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/password/forgot"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({ "email": "untraced@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let logged = e2e::poll_until(Duration::from_secs(10), || async {
        log_lines(&api.output())
            .into_iter()
            .find(|l| l["message"] == "request" && l["route"] == "/v1/password/forgot")
    })
    .await
    .expect("the access log line");
    assert_eq!(logged["trace_id"], CALLER_TRACE);
}
