//! Section 14, import: `api users import` of `IMPORT_ROWS` (100,000) accounts whose hashes
//! are a mixture of every format it reads (made by the frameworks' own libraries), timed and
//! its resident size sampled; next to it, PostgreSQL inserting the same number of account rows
//! in one statement (the database's own limit on this machine, in the same run).

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
