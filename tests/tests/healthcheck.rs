//! `api healthcheck` and `mail-worker healthcheck`, the container health checks of images
//! without a shell or curl: against the real running binaries, and against addresses where
//! nothing (or something else) answers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{free_port, poll_until, stack::StackEnv};

/// Runs `<binary> healthcheck` with `env`'s variables and `bind_variable` set to `bind`;
/// (success, output lines).
async fn healthcheck(
    env: &StackEnv,
    binary: &str,
    bind_variable: &str,
    bind: &str,
) -> (bool, Vec<String>) {
    let mut vars = env.vars.clone();
    vars.retain(|(k, _)| k != bind_variable);
    vars.push((bind_variable.to_owned(), bind.to_owned()));
    let binary = e2e::workspace_binary(binary);
    let mut process = e2e::ServiceProcess::spawn(&binary, &["healthcheck"], &vars).unwrap();
    // The check bounds itself to 3 s; this only keeps a hung check from hanging the test.
    let status = process.wait_exit(Duration::from_secs(20)).await.unwrap();
    (status.success(), process.output())
}

/// Waits until `base` answers `/healthz` with 200 (what the subcommand should then see).
async fn wait_alive(base: &str) {
    let client = reqwest::Client::new();
    let alive = poll_until(Duration::from_secs(30), || async {
        let r = client.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(alive.is_some(), "{base}/healthz never answered 200");
}

#[tokio::test]
async fn api_healthcheck_exits_0_for_the_running_api_and_1_where_it_is_not() {
    let mut env = StackEnv::new().await.unwrap();
    let port = free_port().unwrap();
    env.set("API_BIND", &format!("127.0.0.1:{port}"));
    let (mut api, base) = env.start_api().await.unwrap();
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    wait_alive(&base).await;

    let (ok, out) = healthcheck(&env, "api", "API_BIND", &format!("127.0.0.1:{port}")).await;
    assert!(ok, "{out:?}");
    assert_eq!(
        out,
        [format!(
            "healthy: GET http://127.0.0.1:{port}/healthz answered 200"
        )]
    );
    // The image binds 0.0.0.0: the check goes through the loopback.
    let (ok, out) = healthcheck(&env, "api", "API_BIND", &format!("0.0.0.0:{port}")).await;
    assert!(ok, "{out:?}");

    // Nothing listens there.
    let idle = free_port().unwrap();
    let (ok, out) = healthcheck(&env, "api", "API_BIND", &format!("127.0.0.1:{idle}")).await;
    assert!(!ok, "{out:?}");
    assert_eq!(out.len(), 1, "one line: {out:?}");
    assert!(
        out[0].starts_with(&format!(
            "api: unhealthy: GET http://127.0.0.1:{idle}/healthz:"
        )),
        "{out:?}"
    );
    // Something answers, but not 200: the metrics listener has no /healthz.
    let metrics = StackEnv::api_metrics_base(&api).await.unwrap();
    let metrics = metrics.trim_start_matches("http://");
    let (ok, out) = healthcheck(&env, "api", "API_BIND", metrics).await;
    assert!(!ok, "{out:?}");
    assert!(out[0].ends_with("answered 404"), "{out:?}");
    // A port picked at start cannot be checked from outside the process.
    let (ok, out) = healthcheck(&env, "api", "API_BIND", "127.0.0.1:0").await;
    assert!(!ok, "{out:?}");
    assert!(out[0].contains("API_BIND has port 0"), "{out:?}");

    let status = api.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(status.success());
    // Stopped: the same check that passed now fails.
    let (ok, out) = healthcheck(&env, "api", "API_BIND", &format!("127.0.0.1:{port}")).await;
    assert!(!ok, "{out:?}");
}

#[tokio::test]
async fn worker_healthcheck_exits_0_for_the_running_worker_and_1_where_it_is_not() {
    let mut env = StackEnv::new().await.unwrap();
    let port = free_port().unwrap();
    let mail_dir = std::env::temp_dir().join(format!("pwr-healthcheck-{}", e2e::unique_id()));
    env.set("WORKER_HTTP_BIND", &format!("127.0.0.1:{port}"));
    env.set("MAIL_TRANSPORT", "file");
    env.set("MAIL_FILE_DIR", mail_dir.to_str().unwrap());
    let (mut worker, base) = env.start_worker_with(&[]).await.unwrap();
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    wait_alive(&base).await;

    let bind = format!("127.0.0.1:{port}");
    let (ok, out) = healthcheck(&env, "mail-worker", "WORKER_HTTP_BIND", &bind).await;
    assert!(ok, "{out:?}");
    assert_eq!(
        out,
        [format!(
            "healthy: GET http://127.0.0.1:{port}/healthz answered 200"
        )]
    );

    let idle = free_port().unwrap();
    let idle = format!("127.0.0.1:{idle}");
    let (ok, out) = healthcheck(&env, "mail-worker", "WORKER_HTTP_BIND", &idle).await;
    assert!(!ok, "{out:?}");
    assert_eq!(out.len(), 1, "one line: {out:?}");
    assert!(
        out[0].starts_with(&format!(
            "mail-worker: unhealthy: GET http://{idle}/healthz:"
        )),
        "{out:?}"
    );

    let status = worker.terminate(Duration::from_secs(60)).await.unwrap();
    assert!(status.success());
    let (ok, out) = healthcheck(&env, "mail-worker", "WORKER_HTTP_BIND", &bind).await;
    assert!(!ok, "{out:?}");
    let _ = std::fs::remove_dir_all(&mail_dir);
}
