//! Section 14, import: `api users import` of `IMPORT_ROWS` (100,000) accounts whose hashes
//! are a mixture of every format it reads (made by the frameworks' own libraries), timed and
//! its resident size sampled; next to it, PostgreSQL inserting the same number of account rows
//! in one statement (the database's own limit on this machine, in the same run). Then one
//! account per format with each library's default parameters, signed in to the release api
//! with the production argon2 parameters: the first sign-in (the foreign hash verified, then
//! replaced by argon2id), the next one, a wrong password, and an address without an account;
//! and the refusal floor the api timed at start (the costliest signature, with its margin),
//! which every refused sign-in waits for.

use std::{io::Write as _, time::Instant};

use e2e::{ServiceProcess, stack::StackEnv};

use crate::{
    report::{Row, Target},
    util::{self, RssPeak, env_num},
};

const SECTION: &str = "14 import";

/// The most the importer may hold at its peak: one batch, not the file.
const PEAK_LIMIT_MIB: f64 = 64.0;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    env.set("RUST_LOG", &util::log_filter());
    util::apply_overrides(&mut env);
    let result = measure(&env, rows).await;
    util::drop_database(&env).await;
    result
}

async fn measure(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    util::migrate(env).await?;
    let n = env_num("IMPORT_ROWS", 100_000);
    let hashes: Vec<String> = e2e::foreign_hashes("imported ferret lantern 1987")
        .into_values()
        .collect();
    let dir = std::env::temp_dir().join(format!("pwr-import-{}", e2e::unique_id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("users.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..n {
            let hash = &hashes[i as usize % hashes.len()];
            let line = serde_json::json!({ "email": format!("user{i:07}@example.org"), "password_hash": hash });
            writeln!(file, "{line}")?;
        }
        file.flush()?;
    }
    let size_mib = std::fs::metadata(&path)?.len() as f64 / 1024.0 / 1024.0;

    let started = Instant::now();
    let path_text = path.to_string_lossy().into_owned();
    let mut process = ServiceProcess::spawn(
        &e2e::workspace_binary("api"),
        &["users", "import", &path_text],
        &env.vars,
    )?;
    let peak = RssPeak::start(&process);
    let status = process
        .wait_exit(std::time::Duration::from_secs(1800))
        .await?;
    let elapsed = started.elapsed();
    let peak = peak.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        status.success(),
        "the import failed: {:?}",
        process.output()
    );
    let counts = process
        .output()
        .into_iter()
        .rev()
        .find(|l| l.starts_with("{\"imported\""))
        .unwrap_or_default();
    anyhow::ensure!(
        counts == format!("{{\"imported\":{n},\"skipped\":0,\"refused\":0}}"),
        "unexpected counts: {counts}"
    );
    let rate = n as f64 / elapsed.as_secs_f64();

    // The limit: PostgreSQL inserting as many account rows (same table, same index) at once.
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
         SELECT gen_random_uuid(), 'raw' || i || '@example.org', 'raw' || i || '@example.org',
                'x', now()
         FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(n)?)
    .execute(&pool)
    .await?;
    let raw = n as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    latencies(env, rows).await?;

    rows.push(
        Row::new(
            SECTION,
            format!(
                "`api users import` of {n} rows ({size_mib:.0} MiB, {} hash formats in turn)",
                hashes.len()
            ),
        )
        .measured(format!("{rate:.0} rows/s ({:.1} s)", elapsed.as_secs_f64()))
        .limit(format!(
            "{raw:.0} rows/s: one INSERT … SELECT of as many rows"
        ))
        .ratio(rate / raw)
        .target(Target::Info, "—"),
    );
    rows.push(
        Row::new(SECTION, "importer's RSS peak")
            .measured(format!("{peak:.1} MiB"))
            .limit(format!("{PEAK_LIMIT_MIB:.0} MiB (one batch, not the file)"))
            .ratio(peak / PEAK_LIMIT_MIB)
            .target(Target::Within(0.0, 1.0), "≤ 64 MiB"),
    );
    Ok(())
}

/// Sign-in latency per imported format, before and after its upgrade (median of `SIGNIN_RUNS`
/// requests for the steady cases; the first sign-in happens once per account).
async fn latencies(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let password = "imported ferret lantern 1987";
    let hashes = e2e::foreign_hashes_as_made(password);
    let input: Vec<String> = hashes
        .iter()
        .map(|(scheme, hash)| {
            let email = format!("made-{}@example.org", scheme.replace('_', "-"));
            serde_json::json!({ "email": email, "password_hash": hash }).to_string()
        })
        .collect();
    let mut env = StackEnv {
        database_url: env.database_url.clone(),
        namespace: env.namespace.clone(),
        public_base_url: env.public_base_url.clone(),
        vars: env.vars.clone(),
    };
    env.set("ARGON2_MEMORY_KIB", "19456");
    env.set("ARGON2_ITERATIONS", "2");
    env.set("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "1000000");
    let (ok, out) = env
        .api_command_with_input(&["users", "import", "-"], &input.join("\n"))
        .await?;
    anyhow::ensure!(ok, "importing the accounts failed: {out:?}");
    let (api, base) = env.start_api().await?;
    let client = reqwest::Client::new();
    // The floor the api timed at start, once it has said so.
    let costliest = api
        .wait_for_log_field(
            "sign-in refusal floor changed",
            "costliest",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap_or_default();
    let metrics = e2e::stack::metrics_text(&StackEnv::api_metrics_base(&api).await?).await;
    let floor = (metrics.lines())
        .find_map(|l| l.strip_prefix("pwrecovery_sign_in_refusal_floor_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or_default();
    let runs = env_num("SIGNIN_RUNS", 5) as usize;
    let sign_in = |email: String, password: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/sessions");
        async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .json(&serde_json::json!({ "email": email, "password": password }))
                .send()
                .await?;
            Ok::<_, anyhow::Error>((r.status().as_u16(), started.elapsed()))
        }
    };
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut unknown = Vec::new();
    for i in 0..runs {
        let (status, t) = sign_in(format!("nobody-{i}@example.org"), "wrong wrong wrong").await?;
        anyhow::ensure!(status == 401, "an unknown address got {status}");
        unknown.push(t);
    }
    let unknown = median(unknown);
    rows.push(
        Row::new(SECTION, "sign-in refusal floor at start")
            .measured(format!(
                "{} ({costliest}, with its margin)",
                util::ms(floor)
            ))
            .limit(format!("unknown address {}", util::ms(unknown)))
            .ratio(unknown.as_secs_f64() / floor.as_secs_f64().max(f64::MIN_POSITIVE))
            .target(Target::Info, "—"),
    );
    for scheme in hashes.keys() {
        let email = format!("made-{}@example.org", scheme.replace('_', "-"));
        let mut wrong = Vec::new();
        for _ in 0..runs {
            let (status, t) = sign_in(email.clone(), "imported ferret lantern 1988").await?;
            anyhow::ensure!(status == 401, "{scheme}: a wrong password got {status}");
            wrong.push(t);
        }
        let (status, first) = sign_in(email.clone(), password).await?;
        anyhow::ensure!(status == 201, "{scheme}: the first sign-in got {status}");
        let mut after = Vec::new();
        for _ in 0..runs {
            let (status, t) = sign_in(email.clone(), password).await?;
            anyhow::ensure!(
                status == 201,
                "{scheme}: a sign-in after the upgrade got {status}"
            );
            after.push(t);
        }
        let (wrong, after) = (median(wrong), median(after));
        rows.push(
            Row::new(
                SECTION,
                format!("sign-in, {scheme} as the library makes it"),
            )
            .measured(format!(
                "first {} (verify + argon2id), then {}; wrong password {}",
                util::ms(first),
                util::ms(after),
                util::ms(wrong)
            ))
            .limit(format!("unknown address {}", util::ms(unknown)))
            .ratio(wrong.as_secs_f64() / unknown.as_secs_f64())
            .target(Target::Info, "—"),
        );
    }
    Ok(())
}
