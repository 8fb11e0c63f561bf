//! The deployment files parse and describe what the product needs. (No Docker engine or
//! cluster runs here; `docker compose config` is also run when the client has compose.)
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_compose_file_runs_the_whole_stack_with_a_scalable_worker() {
    let compose = deploy_dir().join("compose.yaml");
    let doc = &e2e::parse_yaml(std::slice::from_ref(&compose))[0][0];
    let services = doc["services"].as_object().unwrap();
    for name in ["postgres", "redis", "rabbitmq", "api", "mail-worker"] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    assert!(
        services.keys().any(|k| k.contains("mail"))
            && services
                .values()
                .any(|s| s["image"].as_str().is_some_and(|i| i.contains("maildev"))),
        "a mail catcher with a web UI"
    );
    let worker = &services["mail-worker"];
    assert!(
        worker.get("container_name").is_none(),
        "--scale needs no fixed container name"
    );
    assert!(
        worker.get("ports").is_none(),
        "--scale needs no fixed host port"
    );
    for name in ["api", "mail-worker", "postgres", "rabbitmq"] {
        assert!(
            services[name].get("healthcheck").is_some(),
            "{name} has no health check"
        );
    }
    // Validate with the real client too, where it exists.
    let compose_available = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if compose_available {
        let out = std::process::Command::new("docker")
            .args(["compose", "-f"])
            .arg(&compose)
            .args(["config", "-q"])
            .env(
                "TOKEN_SECRETS",
                "a3a106852adf349f20bae220b71274866bcb55b00e1d993542179e43f0d7fd2e",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        // Said, not silently skipped: only the structure above was checked.
        eprintln!(
            "deploy_files: `docker compose` is not available here; compose.yaml was checked as \
             YAML only, not by `docker compose config`"
        );
    }
}

#[test]
fn the_kubernetes_manifests_parse_and_cover_probes_autoscaling_and_disruption() {
    let dir = deploy_dir().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let docs: Vec<serde_json::Value> = e2e::parse_yaml(&files).into_iter().flatten().collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ScaledObject",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in deploy/k8s ({kinds:?})");
    }
    for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{}",
            deployment["metadata"]["name"]
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{}",
            deployment["metadata"]["name"]
        );
    }
    // The api's metrics are scraped per pod on their own port, which no Service exposes.
    let api = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "pwrecovery-api")
        .unwrap();
    let annotations = &api["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9464");
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(config["data"]["API_METRICS_BIND"], "0.0.0.0:9464");
    // The headless Services of metrics-services.yaml name the metrics ports for the
    // ServiceMonitor (nothing is routed through them); no other Service reaches them.
    for service in docs.iter().filter(|d| {
        d["kind"] == "Service"
            && d["metadata"]["labels"]["app.kubernetes.io/component"] != "metrics"
    }) {
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert_ne!(port["targetPort"], 9464, "{}", service["metadata"]["name"]);
            assert_ne!(
                port["targetPort"], "metrics",
                "{}",
                service["metadata"]["name"]
            );
        }
    }
    // The admin API has a Service of its own; the public one never reaches its port.
    assert_eq!(config["data"]["ADMIN_API_BIND"], "0.0.0.0:9465");
    let admin_ports: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Service")
        .flat_map(|s| {
            let name = s["metadata"]["name"].as_str().unwrap();
            let ports = s["spec"]["ports"].as_array().unwrap();
            ports
                .iter()
                .filter(|p| p["targetPort"] == "admin" || p["targetPort"] == 9465)
                .map(move |_| name)
        })
        .collect();
    assert_eq!(admin_ports, ["pwrecovery-api-admin"]);
    let scaled = docs.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(trigger["metadata"]["queueName"], "mail.jobs");
    // Every file the kustomization lists exists.
    let kustomization = docs
        .iter()
        .find(|d| d["kind"] == "Kustomization" || d.get("resources").is_some())
        .unwrap();
    for resource in kustomization["resources"].as_array().unwrap() {
        assert!(
            dir.join(resource.as_str().unwrap()).exists(),
            "{resource} is missing"
        );
    }
}

// ---- Shared readers --------------------------------------------------------------------------

/// Every YAML file of deploy/k8s, sorted.
fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of deploy/k8s.
fn k8s_docs() -> Vec<Value> {
    e2e::parse_yaml(&k8s_files())
        .into_iter()
        .flatten()
        .collect()
}

/// The document of `kind` named `name`.
fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

/// The compose file's document.
fn compose() -> Value {
    e2e::parse_yaml(&[deploy_dir().join("compose.yaml")])[0][0].clone()
}

fn readme() -> String {
    std::fs::read_to_string(deploy_dir().join("README.md")).unwrap()
}

/// A YAML scalar as text (numbers and booleans as written).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every whole number written right after `marker` in `text`.
fn numbers_after(text: &str, marker: &str) -> Vec<u64> {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            let digits: String = text[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// The environment a container of `deployment` gets: the ConfigMap and the Secret it loads
/// (the Secret from secret.example.yaml, its deliberately invalid secrets replaced by valid
/// test ones), then its own `env`, which wins.
fn pod_env(docs: &[Value], deployment: &Value) -> Vec<(String, String)> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_owned(), v));
    };
    for source in container["envFrom"].as_array().unwrap() {
        let data = if let Some(name) = source["configMapRef"]["name"].as_str() {
            doc(docs, "ConfigMap", name)["data"].clone()
        } else {
            let name = source["secretRef"]["name"].as_str().unwrap();
            doc(docs, "Secret", name)["stringData"].clone()
        };
        for (k, v) in data.as_object().unwrap() {
            set(k, text(v));
        }
    }
    for secret in ["TOKEN_SECRETS", "ADMIN_API_KEYS"] {
        set(secret, e2e::TEST_TOKEN_SECRETS.to_owned());
    }
    for var in container["env"].as_array().into_iter().flatten() {
        set(var["name"].as_str().unwrap(), text(&var["value"]));
    }
    env
}

/// What `<binary> healthcheck` says with `env`, its listener's variable set to port 0: the
/// whole configuration is read and validated first, so "has port 0" means the binary accepts
/// `env`, and anything else is its refusal.
fn binary_says(binary: &str, env: &[(String, String)]) -> String {
    let bind = match binary {
        "api" => "API_BIND",
        _ => "WORKER_HTTP_BIND",
    };
    let out = std::process::Command::new(e2e::workspace_binary(binary))
        .arg("healthcheck")
        .env_clear()
        .envs(env.iter().filter(|(k, _)| k != bind).cloned())
        .env(bind, "127.0.0.1:0")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success(), "nothing listens on port 0");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn accepts(binary: &str, env: &[(String, String)]) -> bool {
    binary_says(binary, env).contains("has port 0")
}

// ---- Drain figures -----------------------------------------------------------------------------

#[test]
fn the_drain_figures_of_the_manifests_compose_and_readme_are_what_the_binaries_accept() {
    let docs = k8s_docs();
    let readme = readme();
    let mut drains = Vec::new();
    let mut graces = Vec::new();
    for (name, binary) in [
        ("pwrecovery-api", "api"),
        ("pwrecovery-mail-worker", "mail-worker"),
    ] {
        let deployment = doc(&docs, "Deployment", name);
        let env = pod_env(&docs, deployment);
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let spec = &deployment["spec"]["template"]["spec"];
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        let pre_stop = &spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"];
        let pre_stop: u64 = match pre_stop.as_array() {
            Some(c) if c[0] == "sleep" => text(&c[1]).parse().unwrap(),
            Some(c) => panic!("{name}: a preStop of unknown length: {c:?}"),
            None => 0,
        };
        let drain: u64 = var("SHUTDOWN_TIMEOUT_SECS").unwrap().parse().unwrap();
        assert!(
            grace > pre_stop + drain,
            "{name}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} + \
             SHUTDOWN_TIMEOUT_SECS {drain}, or SIGKILL cuts the drain short"
        );
        let said = binary_says(binary, &env);
        assert!(
            said.contains("has port 0"),
            "{name}: {binary} refuses its manifest's configuration: {said}"
        );
        if binary == "mail-worker" {
            // The worker refuses a drain no longer than one SMTP step: the figure the README
            // once gave (25 s) is one it refuses.
            let smtp: u64 = var("SMTP_TIMEOUT_SECS").unwrap().parse().unwrap();
            assert!(drain > smtp);
            let mut short = env.clone();
            short.retain(|(k, _)| k != "SHUTDOWN_TIMEOUT_SECS");
            short.push(("SHUTDOWN_TIMEOUT_SECS".into(), smtp.to_string()));
            let said = binary_says(binary, &short);
            assert!(
                said.contains(&format!(
                    "SHUTDOWN_TIMEOUT_SECS ({smtp}) must be longer than SMTP_TIMEOUT_SECS"
                )),
                "{said}"
            );
            assert!(
                readme.contains(&format!("SHUTDOWN_TIMEOUT_SECS={drain}"))
                    && readme.contains(&format!("terminationGracePeriodSeconds: {grace}")),
                "deploy/README.md does not give the worker's drain ({drain}) and grace ({grace})"
            );
        }
        drains.push(drain);
        graces.push(grace);
    }

    // compose: each service's stop_grace_period outlasts its drain, which its binary accepts.
    let compose = compose();
    let mut stop_graces = Vec::new();
    for (service, binary) in [("api", "api"), ("mail-worker", "mail-worker")] {
        let s = &compose["services"][service];
        let env: Vec<(String, String)> = s["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(&text(v))))
            .collect();
        let drain: u64 = env
            .iter()
            .find(|(k, _)| k == "SHUTDOWN_TIMEOUT_SECS")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let stop: u64 = text(&s["stop_grace_period"])
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!(
            stop > drain,
            "compose {service}: stop_grace_period {stop}s <= drain {drain}"
        );
        assert!(
            accepts(binary, &env),
            "compose {service}: {}",
            binary_says(binary, &env)
        );
        drains.push(drain);
        stop_graces.push(stop);
    }

    // Every such figure the README gives is one of the files'.
    for (marker, allowed) in [
        ("SHUTDOWN_TIMEOUT_SECS=", &drains),
        ("SHUTDOWN_TIMEOUT_SECS` (", &drains),
        ("terminationGracePeriodSeconds: ", &graces),
        ("stop_grace_period: ", &stop_graces),
    ] {
        for n in numbers_after(&readme, marker) {
            assert!(
                allowed.contains(&n),
                "deploy/README.md says {marker}{n}; the files say {allowed:?}"
            );
        }
    }
}

/// A compose value with its `${…}` interpolations resolved as compose would with only
/// TOKEN_SECRETS set.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        } else if let Some((name, _)) = inner.split_once(":?") {
            assert_eq!(name, "TOKEN_SECRETS", "a required variable: {inner}");
            out.push_str(e2e::TEST_TOKEN_SECRETS);
        } else {
            // `${NAME:+alt}` and `${NAME}` of an unset variable: empty.
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace("$$", "$")
}

// ---- Images ------------------------------------------------------------------------------------

/// The instructions of a Dockerfile: (KEYWORD, arguments), continuation lines joined and
/// comments dropped.
fn instructions(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            joined.push(std::mem::take(&mut current));
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

/// `image` is pinned: a digest, or a tag that names a release (`1.95.0`, `15.18`), never
/// `latest` or a bare major.
fn pinned(image: &str) -> bool {
    if let Some((_, digest)) = image.split_once("@sha256:") {
        return digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit());
    }
    let Some((_, tag)) = image.rsplit_once(':').filter(|(name, _)| !name.is_empty()) else {
        return false;
    };
    let version: Vec<&str> = tag.split('-').next().unwrap().split('.').collect();
    tag != "latest"
        && version.len() >= 2
        && version
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[test]
fn the_images_are_pinned_labelled_distroless_and_checked_by_their_own_binary() {
    for binary in ["api", "mail-worker"] {
        let path = deploy_dir().join(format!("docker/{binary}.Dockerfile"));
        let all = instructions(&path);
        let first_from = all.iter().position(|(k, _)| k == "FROM").unwrap();
        let global_args: Vec<(String, String)> = all[..first_from]
            .iter()
            .filter(|(k, _)| k == "ARG")
            .filter_map(|(_, a)| a.split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())))
            .collect();
        let resolve = |image: &str| {
            let name = image.trim_start_matches("${").trim_end_matches('}');
            global_args
                .iter()
                .find(|(n, _)| n == name)
                .map_or(image.to_owned(), |(_, v)| v.clone())
        };
        let froms: Vec<String> = all
            .iter()
            .filter(|(k, _)| k == "FROM")
            .map(|(_, a)| resolve(a.split_whitespace().next().unwrap()))
            .collect();
        for image in &froms {
            assert!(
                pinned(image),
                "{binary}: FROM {image} is not pinned to a release"
            );
        }
        assert!(froms[0].starts_with("rust:1."), "{froms:?}");
        let runtime = froms.last().unwrap();
        assert!(
            runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot@sha256:"),
            "{binary}: the runtime is distroless cc, pinned by digest: {runtime}"
        );
        let build = all
            .iter()
            .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
            .unwrap();
        assert!(
            build
                .1
                .contains(&format!("cargo build --release --locked -p {binary}")),
            "{}",
            build.1
        );
        assert!(
            build.1.contains("libz.so.1"),
            "the binary links libz, which distroless lacks"
        );

        let last_from = all.iter().rposition(|(k, _)| k == "FROM").unwrap();
        let runtime_stage = &all[last_from + 1..];
        let get = |keyword: &str| -> Vec<&str> {
            runtime_stage
                .iter()
                .filter(|(k, _)| k == keyword)
                .map(|(_, a)| a.as_str())
                .collect()
        };
        assert!(
            get("RUN").is_empty(),
            "{binary}: distroless has no shell to RUN in"
        );
        let labels = get("LABEL").join(" ");
        for (key, arg) in [
            ("title", None),
            ("description", None),
            ("licenses", None),
            ("version", Some("VERSION")),
            ("revision", Some("REVISION")),
            ("source", Some("SOURCE")),
            ("created", Some("CREATED")),
        ] {
            let label = format!("org.opencontainers.image.{key}=\"");
            let value = labels
                .split(&label)
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or_else(|| panic!("{binary}: no label {label}"));
            assert!(!value.is_empty(), "{binary}: {label} is empty");
            if let Some(arg) = arg {
                assert_eq!(
                    value,
                    format!("${{{arg}}}"),
                    "{binary}: {key} from a build argument"
                );
                assert!(
                    get("ARG").iter().any(|a| a.split('=').next() == Some(arg)),
                    "{binary}: ARG {arg} is not declared in the runtime stage"
                );
            }
        }
        let user = get("USER").pop().unwrap();
        let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
        assert_ne!(uid, 0, "{binary}: runs as root");
        let entrypoint: Vec<String> = serde_json::from_str(get("ENTRYPOINT")[0]).unwrap();
        let healthcheck = get("HEALTHCHECK")[0];
        let command: Vec<String> =
            serde_json::from_str(healthcheck.split_once("CMD").unwrap().1.trim()).unwrap();
        assert_eq!(
            command,
            [entrypoint[0].clone(), "healthcheck".into()],
            "{healthcheck}"
        );
        assert_eq!(entrypoint[0], format!("/usr/local/bin/{binary}"));

        // compose checks the containers with the same command.
        let compose = compose();
        let test = &compose["services"][binary]["healthcheck"]["test"];
        assert_eq!(
            *test,
            serde_json::json!(["CMD", entrypoint[0], "healthcheck"])
        );
    }
}

#[test]
fn compose_pins_every_image_and_a_supported_rabbitmq() {
    let compose = compose();
    for (name, service) in compose["services"].as_object().unwrap() {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no image"));
        if service.get("build").is_some() {
            // Built from this checkout and tagged with the build's VERSION, never pulled.
            let tag = image.split_once(':').map_or("latest", |(_, t)| t);
            assert!(tag.contains("VERSION"), "{name}: {image}");
            continue;
        }
        assert!(pinned(image), "{name}: {image} is not pinned to a release");
    }
    // RabbitMQ gives community support to its newest minor series only; 3.x has had none
    // since 2024. 4.2 is the series this file was pinned to.
    let rabbitmq = compose["services"]["rabbitmq"]["image"].as_str().unwrap();
    let version: Vec<u32> = rabbitmq
        .split_once(':')
        .unwrap()
        .1
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(version[..2] >= [4, 2][..], "{rabbitmq}");
}

// ---- KEDA ----------------------------------------------------------------------------------------

#[test]
fn keda_reads_one_broker_address_of_its_own_and_its_tls_is_documented() {
    let docs = k8s_docs();
    let auth = doc(&docs, "TriggerAuthentication", "pwrecovery-rabbitmq");
    let refs = auth["spec"]["secretTargetRef"].as_array().unwrap();
    let host = refs.iter().find(|r| r["parameter"] == "host").unwrap();
    assert_ne!(host["key"], "AMQP_URL", "AMQP_URL may be a list of nodes");
    assert_ne!(
        host["name"], "pwrecovery-secrets",
        "the application's pods load that one"
    );
    let secret = doc(&docs, "Secret", host["name"].as_str().unwrap());
    let url = secret["stringData"][host["key"].as_str().unwrap()]
        .as_str()
        .unwrap();
    assert!(!url.contains(','), "one address: {url}");
    let scaled = doc(&docs, "ScaledObject", "pwrecovery-mail-worker");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(
        trigger["authenticationRef"]["name"],
        auth["metadata"]["name"]
    );
    let metadata = trigger["metadata"].as_object().unwrap();
    for key in ["host", "hostFromEnv"] {
        assert!(
            !metadata.contains_key(key),
            "the address comes from the TriggerAuthentication"
        );
    }
    let scheme = url.split("://").next().unwrap();
    let protocol = match scheme {
        "amqp" | "amqps" => "amqp",
        "http" | "https" => "http",
        other => panic!("KEDA's rabbitmq scaler takes no {other}://"),
    };
    assert_eq!(trigger["metadata"]["protocol"], protocol);
    // The TLS parameters of the scaler are explained where an operator looks for them.
    let readme = readme();
    let tls = readme
        .split("### KEDA and TLS")
        .nth(1)
        .expect("a section on KEDA's TLS");
    for parameter in [
        "`tls`",
        "`ca`",
        "`cert`",
        "`key`",
        "`keyPassword`",
        "`unsafeSsl`",
    ] {
        assert!(
            tls.contains(parameter),
            "deploy/README.md: KEDA's {parameter}"
        );
    }
}

// ---- NetworkPolicy and ServiceMonitor ------------------------------------------------------------

/// The port of a URL (`scheme://user:pass@host:PORT/...`), or `default`.
fn url_port(url: &str, default: u16) -> u16 {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap()
        .split(['/', '?'])
        .next()
        .unwrap();
    let host = authority.rsplit('@').next().unwrap();
    host.rsplit_once(':')
        .map_or(default, |(_, p)| p.parse().unwrap())
}

/// The port number of `port` (a number, or the name of one of `container`'s ports).
fn port_number(container: &Value, port: &Value) -> u64 {
    port.as_u64().unwrap_or_else(|| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *port)
            .unwrap_or_else(|| panic!("no port {port}"))["containerPort"]
            .as_u64()
            .unwrap()
    })
}

fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

#[test]
fn network_policies_deny_by_default_and_open_what_the_configuration_uses() {
    let docs = k8s_docs();
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    let config = &doc(&docs, "ConfigMap", "pwrecovery-config")["data"];
    let secret = &doc(&docs, "Secret", "pwrecovery-secrets")["stringData"];
    let deny = policies
        .iter()
        .find(|p| p["spec"].get("ingress").is_none() && p["spec"].get("egress").is_none())
        .expect("a default-deny policy");
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let pods = |name: &str| &doc(&docs, "Deployment", name)["spec"]["template"];
    for name in ["pwrecovery-api", "pwrecovery-mail-worker"] {
        let labels = &pods(name)["metadata"]["labels"];
        assert!(
            matches(&deny["spec"]["podSelector"]["matchLabels"], labels),
            "{name}"
        );
    }
    // The policies that select a pod template.
    let selecting = |template: &Value| -> Vec<&Value> {
        policies
            .iter()
            .copied()
            .filter(|p| {
                matches(
                    &p["spec"]["podSelector"]["matchLabels"],
                    &template["metadata"]["labels"],
                )
            })
            .collect()
    };
    // Ingress per pod: port number -> the namespaces' labels it is open to.
    let ingress = |name: &str| -> Vec<(u64, Value)> {
        let template = pods(name);
        let container = &template["spec"]["containers"][0];
        selecting(template)
            .into_iter()
            .flat_map(|p| p["spec"]["ingress"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| {
                let from = rule["from"].clone();
                assert!(
                    from.as_array().is_some_and(|f| !f.is_empty()),
                    "an ingress rule open to all: {rule}"
                );
                rule["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (port_number(container, &p["port"]), from.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let bind_port = |var: &str| -> u64 {
        text(&config[var])
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let namespaces = |rules: &[(u64, Value)], port: u64| -> Vec<String> {
        rules
            .iter()
            .filter(|(p, _)| *p == port)
            .flat_map(|(_, from)| from.as_array().unwrap().clone())
            .map(|f| f["namespaceSelector"]["matchLabels"].to_string())
            .collect()
    };
    let api = ingress("pwrecovery-api");
    let ports: std::collections::BTreeSet<u64> = api.iter().map(|(p, _)| *p).collect();
    let expected: std::collections::BTreeSet<u64> =
        ["API_BIND", "ADMIN_API_BIND", "API_METRICS_BIND"]
            .map(bind_port)
            .into();
    assert_eq!(
        ports, expected,
        "the api's ingress opens exactly its three listeners"
    );
    let public = namespaces(&api, bind_port("API_BIND"));
    let admin = namespaces(&api, bind_port("ADMIN_API_BIND"));
    let metrics = namespaces(&api, bind_port("API_METRICS_BIND"));
    assert!(public.iter().all(|n| n.contains("ingress")), "{public:?}");
    assert!(
        admin.iter().all(|n| n.contains("pwrecovery/admin-api")),
        "{admin:?}"
    );
    assert!(
        metrics.iter().all(|n| n.contains("monitoring")),
        "{metrics:?}"
    );
    let worker = ingress("pwrecovery-mail-worker");
    assert!(!worker.is_empty());
    for (port, from) in &worker {
        assert_eq!(*port, bind_port("WORKER_HTTP_BIND"));
        assert!(from.to_string().contains("monitoring"), "{from}");
    }
    // Egress per pod: every port of the URLs it connects to (the Secret's placeholders carry
    // the default ports), and DNS.
    let egress = |name: &str| -> Vec<u64> {
        selecting(pods(name))
            .into_iter()
            .flat_map(|p| p["spec"]["egress"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };
    let stores = [
        ("DATABASE_URL", 5432),
        ("REDIS_URL", 6379),
        ("AMQP_URL", 5672),
    ]
    .map(|(var, default)| u64::from(url_port(secret[var].as_str().unwrap(), default)));
    for name in ["pwrecovery-api", "pwrecovery-mail-worker"] {
        let open = egress(name);
        for port in stores.iter().chain(&[53, 5671, 4317, 4318]) {
            assert!(open.contains(port), "{name}: egress to port {port}");
        }
    }
    let smtp = u64::from(url_port(secret["SMTP_URL"].as_str().unwrap(), 25));
    for port in [smtp, 25, 465, 587] {
        assert!(
            egress("pwrecovery-mail-worker").contains(&port),
            "SMTP port {port}"
        );
    }
    assert!(
        !egress("pwrecovery-api").contains(&smtp),
        "the api sends no mail"
    );
    assert!(
        egress("pwrecovery-api").contains(&443),
        "PWNED_PASSWORDS_URL"
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_listener_of_both_services() {
    let docs = k8s_docs();
    let config = &doc(&docs, "ConfigMap", "pwrecovery-config")["data"];
    let monitor = doc(&docs, "ServiceMonitor", "pwrecovery");
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    for (deployment, bind) in [
        ("pwrecovery-api", "API_METRICS_BIND"),
        ("pwrecovery-mail-worker", "WORKER_HTTP_BIND"),
    ] {
        let template = &doc(&docs, "Deployment", deployment)["spec"]["template"];
        let container = &template["spec"]["containers"][0];
        let service = docs
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && matches(
                        &monitor["spec"]["selector"]["matchLabels"],
                        &d["metadata"]["labels"],
                    )
                    && matches(&d["spec"]["selector"], &template["metadata"]["labels"])
            })
            .unwrap_or_else(|| panic!("no Service of the ServiceMonitor selects {deployment}"));
        assert_eq!(
            service["spec"]["clusterIP"], "None",
            "headless: nothing routed through it"
        );
        let endpoint = endpoints
            .iter()
            .find(|e| {
                service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == e["port"])
            })
            .unwrap();
        assert_eq!(endpoint["path"], "/metrics");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap();
        let expected: u64 = text(&config[bind])
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(
            port_number(container, &port["targetPort"]),
            expected,
            "{deployment}"
        );
    }
}

// ---- Schemas -------------------------------------------------------------------------------------

/// The Kubernetes versions the manifests are checked against: the oldest they support (the
/// PDBs' unhealthyPodEvictionPolicy) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &str = "1.27,1.30,1.37";

/// Runs tests/schemas/validate_manifests.py over `files`; (success, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/validate_manifests.py");
    let python = e2e::test_python();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(KUBERNETES_VERSIONS)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (source deploy/local/venv.sh)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_passes_strict_schema_validation_and_a_misspelt_field_fails_it() {
    let files = k8s_files();
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");
    // Every document was checked against a schema: the built-in kinds for each version, the
    // custom resources and the Kustomization against tests/schemas/.
    for d in k8s_docs() {
        let kind = d["kind"].as_str().unwrap();
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let checked: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("ok   ") && l.contains(format!(": {kind} {name}").trim_end()))
            .collect();
        let custom = [
            "ScaledObject",
            "TriggerAuthentication",
            "ServiceMonitor",
            "Kustomization",
        ];
        if custom.contains(&kind) {
            assert!(
                checked.iter().any(|l| l.ends_with("(vendored schema)")),
                "{kind}: {out}"
            );
        } else {
            for version in KUBERNETES_VERSIONS.split(',') {
                let against = format!("(Kubernetes {version})");
                assert!(
                    checked.iter().any(|l| l.ends_with(&against)),
                    "{kind} {name} {against}: {out}"
                );
            }
        }
    }
    // Strict: a field the API server does not know fails, in a built-in kind and in each
    // custom resource (a copy of the file with one field misspelt).
    let dir = std::env::temp_dir().join(format!("pwr-manifests-{}", e2e::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, field, misspelt) in [
        (
            "worker-deployment.yaml",
            "terminationGracePeriodSeconds:",
            "terminationGracePeriodSecond:",
        ),
        ("networkpolicy.yaml", "policyTypes:", "policyType:"),
        (
            "worker-scaledobject.yaml",
            "pollingInterval:",
            "pollingIntervall:",
        ),
        (
            "worker-triggerauth.yaml",
            "    - parameter: host",
            "    - parametre: host",
        ),
        ("servicemonitor.yaml", "scrapeTimeout:", "scrapeTimeOut:"),
        ("kustomization.yaml", "resources:", "resource:"),
    ] {
        let original = std::fs::read_to_string(deploy_dir().join("k8s").join(file)).unwrap();
        assert!(original.contains(field), "{file} has no {field}");
        let broken = dir.join(file);
        std::fs::write(&broken, original.replacen(field, misspelt, 1)).unwrap();
        let (ok, out) = validate(&[broken]);
        assert!(!ok, "{file} with {misspelt} passed:\n{out}");
        assert!(out.contains("FAIL"), "{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
