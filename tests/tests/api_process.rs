//! The real `api` binary, configured only by its environment: migrations by subcommand,
//! start-up, a request through to the broker, configuration errors and SIGTERM.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{QueueReader, ServiceProcess, stack::StackEnv, workspace_binary};
use shared::message::Job;

#[tokio::test]
async fn the_api_binary_migrates_serves_publishes_and_stops_cleanly_on_sigterm() {
    let env = StackEnv::new().await.unwrap();
    // `api migrate` runs first, then the server (see StackEnv::start_api).
    let (mut process, base) = env.start_api().await.unwrap();
    let client = reqwest::Client::new();
    let ready = e2e::poll_until(Duration::from_secs(20), || async {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready: {:?}", process.output());

    let r = client
        .post(format!("{base}/v1/password/forgot"))
        .json(&serde_json::json!({ "email": "someone@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let reader = QueueReader::connect().await.unwrap();
    let jobs = reader
        .take(&env.topology().jobs_queue(), 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        matches!(jobs[0].envelope().job, Job::PasswordResetRequested { ref email, .. } if email == "someone@example.org")
    );

    let status = process.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    let logs = process.output().join("\n");
    assert!(logs.contains("api stopped"), "{logs}");
    // Logs never carry the address itself.
    assert!(!logs.contains("someone@example.org"), "{logs}");
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn the_api_and_the_worker_trim_their_heaps_unless_memory_trim_secs_is_zero() {
    let mut env = StackEnv::new().await.unwrap();
    let dir = std::env::temp_dir().join(format!("pwr-trim-{}", e2e::unique_id()));
    env.set("MAIL_TRANSPORT", "file");
    env.set("MAIL_FILE_DIR", dir.to_str().unwrap());
    let (api, _) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker_with(&[]).await.unwrap();
    for (name, process) in [("api", &api), ("worker", &worker)] {
        let threads = thread_names(process.child.id().unwrap());
        assert!(
            threads.iter().any(|t| t == "heap-trim"),
            "{name}: {threads:?}"
        );
    }
    drop((api, worker));
    env.set("MEMORY_TRIM_SECS", "0");
    let (api, _) = env.start_api().await.unwrap();
    let (worker, _) = env.start_worker_with(&[]).await.unwrap();
    for (name, process) in [("api", &api), ("worker", &worker)] {
        let threads = thread_names(process.child.id().unwrap());
        assert!(threads.len() > 2, "{name}: {threads:?}");
        assert!(
            !threads.iter().any(|t| t == "heap-trim"),
            "{name}: {threads:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_variable_and_the_fix() {
    let mut env = StackEnv::new().await.unwrap();
    env.set("TOKEN_SECRETS", "too-short");
    env.set("RATE_LIMIT_IP_PER_HOUR", "lots");
    let mut process = ServiceProcess::spawn(&workspace_binary("api"), &[], &env.vars).unwrap();
    let status = process.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(!status.success());
    let out = process.output().join("\n");
    assert!(
        out.contains("TOKEN_SECRETS: secret #1 is not written as hex or base64"),
        "{out}"
    );
    assert!(out.contains("openssl rand -hex 32"), "{out}");
    assert!(
        out.contains("RATE_LIMIT_IP_PER_HOUR: expected a whole number"),
        "{out}"
    );
    assert!(
        !out.contains("too-short"),
        "a secret must not be echoed: {out}"
    );
}

#[test]
fn help_and_version_need_no_configuration() {
    for (binary, args, expect) in [
        ("api", &["--help"][..], "migrate"),
        ("api", &["--version"][..], env!("CARGO_PKG_VERSION")),
        ("mail-worker", &["dlq", "--help"][..], "replay"),
        ("mail-worker", &["--version"][..], env!("CARGO_PKG_VERSION")),
    ] {
        let output = std::process::Command::new(workspace_binary(binary))
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{binary} {args:?}: {output:?}");
        assert!(text.contains(expect), "{binary} {args:?}: {text}");
    }
    // A wrong command is refused with the usage, also before any configuration is read.
    let output = std::process::Command::new(workspace_binary("mail-worker"))
        .args(["dlq", "replay"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--id"));
}

#[test]
fn log_settings_in_dot_env_apply_from_the_first_line() {
    // A directory whose `.env` asks for human-readable logs, and a configuration error so
    // the process logs one line and exits.
    let dir = std::env::temp_dir().join(format!("pwr-dotenv-{}", e2e::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        "LOG_FORMAT=pretty\nTOKEN_SECRETS=too-short\n",
    )
    .unwrap();
    let output = std::process::Command::new(workspace_binary("api"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("TOKEN_SECRETS"),
        "the configuration error: {text}"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with('{')),
        "JSON lines although .env asks for pretty ones: {text}"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let mut env = StackEnv::new().await.unwrap();
    // A costly hash keeps a sign-up in flight long enough to send SIGTERM during it.
    env.set("ARGON2_MEMORY_KIB", "262144");
    env.set("ARGON2_ITERATIONS", "4");
    let (mut process, base) = env.start_api().await.unwrap();
    let metrics = StackEnv::api_metrics_base(&process).await.unwrap();
    let client = reqwest::Client::new();
    let in_flight = {
        let client = client.clone();
        let url = format!("{base}/v1/users");
        tokio::spawn(async move {
            let body = serde_json::json!({ "email": "late@example.org", "password": "correct horse battery staple 42" });
            let started = std::time::Instant::now();
            let r = client.post(url).json(&body).send().await;
            (r.map(|r| r.status().as_u16()), started.elapsed())
        })
    };
    // The sign-up is being answered (the metrics listener counts it in flight).
    let in_flight_now = e2e::poll_until(Duration::from_secs(20), || async {
        let text = e2e::stack::metrics_text(&metrics).await;
        text.lines()
            .find_map(|l| l.strip_prefix("pwrecovery_http_requests_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| *n >= 1.0)
    })
    .await;
    assert!(in_flight_now.is_some(), "the sign-up never started");
    let pid = process.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // New connections are refused soon after SIGTERM, while the sign-up is still running.
    let refused = e2e::poll_until(Duration::from_secs(5), || async {
        let fresh = reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await;
        fresh.is_err().then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "a new connection after SIGTERM must be refused"
    );
    assert!(!in_flight.is_finished(), "the sign-up outlasted the check");
    let (status, took) = in_flight.await.unwrap();
    assert_eq!(
        status.unwrap(),
        202,
        "the in-flight request finished ({took:?})"
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), process.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
