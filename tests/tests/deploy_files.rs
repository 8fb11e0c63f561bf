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
    for service in docs.iter().filter(|d| d["kind"] == "Service") {
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

/// The compose file's document.
fn compose() -> Value {
    e2e::parse_yaml(&[deploy_dir().join("compose.yaml")])[0][0].clone()
}

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
