//! Section 15, second factors and breached passwords (`bench factors`): sign-in latency of an
//! account with an authenticator app (the password step, then the code step) beside one
//! without, with production argon2 parameters, interleaved on one keep-alive client; and the
//! latency the breached-password check adds to a new password, from range files and from a
//! range API on loopback, measured on the check itself.

use std::time::{Duration, Instant};

use e2e::stack::StackEnv;
use serde_json::{Value, json};

use crate::{
    load,
    report::Row,
    signin::{PASSWORD, insert_account},
    util::{self, env_num, ms},
};

const SECTION: &str = "15 second factors";

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    env.set("ARGON2_MEMORY_KIB", "19456");
    env.set("ARGON2_ITERATIONS", "2");
    env.set("RUST_LOG", &util::log_filter());
    let result = sign_in(&env, rows).await;
    util::drop_database(&env).await;
    result?;
    breached(rows).await
}

/// p50 and p99 of `times`.
fn p50_p99(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    (
        load::percentile(&sorted, 0.5),
        load::percentile(&sorted, 0.99),
    )
}

async fn sign_in(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_api, base) = env.start_api().await?;
    let accounts = env_num("BENCH_FACTOR_ACCOUNTS", 200) as usize;
    let tag = e2e::unique_id();
    let plain: Vec<String> = (0..accounts)
        .map(|i| format!("plain-{i:04}-{tag}@example.org"))
        .collect();
    let with_app: Vec<String> = (0..accounts)
        .map(|i| format!("app-{i:04}-{tag}@example.org"))
        .collect();
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    for email in plain.iter().chain(&with_app) {
        insert_account(&pool, email, true).await?;
    }
    pool.close().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let url = |path: &str| format!("{base}{path}");
    let post =
        async |path: &str, body: Value, session: Option<&str>| -> anyhow::Result<(u16, Value)> {
            let mut request = client.post(url(path)).json(&body);
            if let Some(session) = session {
                request = request.bearer_auth(session);
            }
            let r = request.send().await?;
            let status = r.status().as_u16();
            Ok((status, r.json().await.unwrap_or(Value::Null)))
        };
    // Each account of the second kind sets up an app, as its owner would.
    let mut secrets = Vec::with_capacity(accounts);
    for email in &with_app {
        let (status, body) = post(
            "/v1/sessions",
            json!({"email": email, "password": PASSWORD}),
            None,
        )
        .await?;
        anyhow::ensure!(status == 201, "sign-in answered {status}");
        let session = body["session"].as_str().unwrap_or_default().to_owned();
        let (status, body) = post(
            "/v1/mfa/totp",
            json!({"password": PASSWORD}),
            Some(&session),
        )
        .await?;
        anyhow::ensure!(status == 200, "enrolment answered {status}");
        let secret = api::mfa::totp::decode(body["secret"].as_str().unwrap_or_default())
            .ok_or_else(|| anyhow::anyhow!("no secret"))?;
        let code = api::mfa::totp::code_at(&secret, unix_now());
        let (status, _) = post(
            "/v1/mfa/totp/confirm",
            json!({"code": code}),
            Some(&session),
        )
        .await?;
        anyhow::ensure!(status == 200, "confirmation answered {status}");
        secrets.push(secret);
    }
    // The confirming codes' step is spent: start on the next one.
    let step = api::mfa::totp::STEP_SECS;
    tokio::time::sleep(Duration::from_secs(step - unix_now() % step + 1)).await;
    // Warm-up.
    for email in plain.iter().take(5) {
        post(
            "/v1/sessions",
            json!({"email": email, "password": PASSWORD}),
            None,
        )
        .await?;
    }
    let (mut without, mut password_step, mut code_step, mut with) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..accounts {
        let started = Instant::now();
        let (status, _) = post(
            "/v1/sessions",
            json!({"email": plain[i], "password": PASSWORD}),
            None,
        )
        .await?;
        without.push(started.elapsed());
        anyhow::ensure!(status == 201, "sign-in answered {status}");

        let started = Instant::now();
        let (status, body) = post(
            "/v1/sessions",
            json!({"email": with_app[i], "password": PASSWORD}),
            None,
        )
        .await?;
        let first = started.elapsed();
        anyhow::ensure!(status == 200, "first step answered {status}");
        let token = body["mfa_token"].as_str().unwrap_or_default().to_owned();
        let code = api::mfa::totp::code_at(&secrets[i], unix_now());
        let second_started = Instant::now();
        let (status, _) = post(
            "/v1/sessions/mfa",
            json!({"mfa_token": token, "code": code}),
            None,
        )
        .await?;
        let second = second_started.elapsed();
        anyhow::ensure!(status == 201, "second step answered {status}");
        password_step.push(first);
        code_step.push(second);
        with.push(first + second);
    }
    for (what, times) in [
        ("sign-in without a factor (password)", &without),
        ("sign-in with an app: password step", &password_step),
        ("sign-in with an app: code step", &code_step),
        ("sign-in with an app: both steps", &with),
    ] {
        let (p50, p99) = p50_p99(times);
        rows.push(
            Row::new(SECTION, format!("{what}, {accounts} accounts")).measured(format!(
                "p50 {} / p99 {}",
                ms(p50),
                ms(p99)
            )),
        );
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A range as Pwned Passwords serves one: about 1,000 lines `SUFFIX:COUNT` (about 40 KB),
/// `listed` among them.
fn range_text(listed: &str) -> String {
    let mut lines: Vec<String> = (0..1000)
        .map(|_| {
            let suffix: String = (0..35)
                .map(|_| char::from(b"0123456789ABCDEF"[usize::from(rand::random::<u8>() & 15)]))
                .collect();
            format!("{suffix}:{}", rand::random::<u16>() % 500 + 1)
        })
        .collect();
    lines.push(format!("{listed}:7"));
    lines.sort();
    lines.join("\r\n")
}

async fn breached(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use api::breached::{BreachedPasswords, Corpus};
    let checks = env_num("BENCH_BREACHED_CHECKS", 2000) as usize;
    let password = "a password that is listed 42";
    let (prefix, suffix) = api::breached::range_of(password);
    let range = range_text(&suffix);
    let dir = std::env::temp_dir().join(format!("bench-pwned-{}", e2e::unique_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&prefix), &range)?;

    // The range API: one range, over HTTP/1.1 on loopback.
    let served = range.clone();
    let app = axum::Router::new().fallback(move || {
        let served = served.clone();
        async move { served }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/range/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let timeout = Duration::from_secs(5);
    let corpora = [
        (
            "range files (PWNED_PASSWORDS_DIR)",
            Corpus::Files(dir.clone()),
        ),
        (
            "range API on loopback (PWNED_PASSWORDS_URL)",
            Corpus::api(&base, &[])?,
        ),
    ];
    for (what, corpus) in corpora {
        let check = BreachedPasswords::new(Some(corpus), timeout, true);
        for _ in 0..20 {
            anyhow::ensure!(
                check.refuse_breached(password).await.is_err(),
                "not found as breached"
            );
        }
        let mut times = Vec::with_capacity(checks);
        for _ in 0..checks {
            let started = Instant::now();
            let refused = check.refuse_breached(password).await.is_err();
            times.push(started.elapsed());
            anyhow::ensure!(refused, "not found as breached");
        }
        let (p50, p99) = p50_p99(&times);
        rows.push(
            Row::new(
                SECTION,
                format!("breached-password check, {what}, {checks} checks of a 1,000-line range"),
            )
            .measured(format!("p50 {} / p99 {}", ms(p50), ms(p99))),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
