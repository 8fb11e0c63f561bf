//! Section 10, reset-code timing: a wrong code for an address that has an account and a live
//! code, and any code for an address without an account, must cost the same (the same
//! single-key script on Redis, the same audit row, the same `400 code_invalid`), so timing
//! cannot tell a registered address from an unknown one. Pairs of sequential requests on one
//! keep-alive connection, the order inside a pair alternating. Every known address gets its own
//! code record, issued exactly as the worker issues it, so no record reaches its fifth wrong
//! code during the run.

use std::time::Duration;

use e2e::stack::StackEnv;

use crate::{
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num, ms},
};

const CODE_PATH: &str = "/v1/password/reset/code";
const NEW_PASSWORD: &str = "plaid zebra umbrella tangerine 97";

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_CODE_PER_HOUR", "1000000");
    // The wrong codes of the timing pairs come faster than any site's: the site-wide pause
    // of code entry is not what this section measures.
    env.set("CODE_BREAKER_WRONG_PER_MINUTE", "1000000");
    env.set("RUST_LOG", &util::log_filter());
    util::apply_overrides(&mut env);
    let result = measure(&env, rows).await;
    util::drop_database(&env).await;
    result
}

/// Accounts `known-<i>` with a live code each, as the worker records it for a reset email.
async fn accounts_with_codes(env: &StackEnv, tag: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let lookup = |name: &str| env.var(name).map(str::to_owned);
    let mut reader = shared::config::EnvReader::new(&lookup);
    let config = shared::config::CommonConfig::read(&mut reader);
    reader
        .finish()
        .map_err(|e| anyhow::anyhow!("settings: {e:?}"))?;
    let redis = config.redis()?;
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    let mut addresses = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("known-{i:05}-{tag}@example.org");
        let user: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
             VALUES (gen_random_uuid(), $1, $1, 'not-a-hash', now()) RETURNING id",
        )
        .bind(&email)
        .fetch_one(&pool)
        .await?;
        let now = chrono::Utc::now().timestamp();
        let token = format!("bench-token-{i}-{tag}");
        let link = shared::reset_code::Link {
            user,
            email_key: &email,
            password_version: 1,
            generation: now * 1000,
            signed_at: now,
            token: &token,
            left_secs: 3600,
        };
        shared::reset_code::issue(&redis, config.pseudonym_secret(), &link).await?;
        addresses.push(email);
    }
    pool.close().await;
    Ok(addresses)
}

async fn measure(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let tag = e2e::unique_id();
    let pairs = env_num("BENCH_CODE_PAIRS", 2000) as usize;
    let known = accounts_with_codes(env, &tag, pairs).await?;

    let mut conn = Conn::connect(addr).await?;
    let send = async |conn: &mut Conn, email: &str| -> anyhow::Result<Duration> {
        // No live code is 00000000 but with a chance of 10^-8 per record: a right code would
        // answer 204 and stop the run.
        let body =
            format!(r#"{{"email":"{email}","code":"0000 0000","new_password":"{NEW_PASSWORD}"}}"#);
        let started = std::time::Instant::now();
        let status = conn.post_json(CODE_PATH, body.as_bytes()).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(status == 400, "a code answered {status}");
        Ok(elapsed)
    };
    // Warm-up: connections, script cache.
    for i in 0..20 {
        send(&mut conn, &format!("warm-{i}-{tag}@example.org")).await?;
    }
    // [known address with a live code and a wrong one, unknown address]
    let mut times: [Vec<Duration>; 2] = Default::default();
    for (i, known) in known.iter().enumerate() {
        let unknown = format!("unknown-{i:05}-{tag}@example.org");
        for k in 0..2 {
            let kind = (i + k) % 2;
            let elapsed = match kind {
                0 => send(&mut conn, known).await?,
                _ => send(&mut conn, &unknown).await?,
            };
            times[kind].push(elapsed);
        }
    }
    let sorted = |v: &[Duration]| {
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        sorted
    };
    let [known_t, unknown_t] = &times;
    let (known_s, unknown_s) = (sorted(known_t), sorted(unknown_t));
    rows.push(
        Row::new(
            "10 code timing",
            format!(
                "p50 / p90 / p99 of {pairs} interleaved pairs: wrong code for a known address | unknown address"
            ),
        )
        .measured(format!(
            "{} / {} / {} | {} / {} / {}",
            ms(load::percentile(&known_s, 0.5)),
            ms(load::percentile(&known_s, 0.9)),
            ms(load::percentile(&known_s, 0.99)),
            ms(load::percentile(&unknown_s, 0.5)),
            ms(load::percentile(&unknown_s, 0.9)),
            ms(load::percentile(&unknown_s, 0.99)),
        ))
        .limit("equal"),
    );
    let slower = known_t.iter().zip(unknown_t).filter(|(a, b)| a > b).count();
    let share = 100.0 * slower as f64 / pairs as f64;
    let delta = (load::percentile(&known_s, 0.5).as_secs_f64()
        - load::percentile(&unknown_s, 0.5).as_secs_f64())
        * 1000.0;
    rows.push(
        Row::new("10 code timing", "pairs: known address slower than unknown")
            .measured(format!(
                "{share:.1} % ({slower} of {pairs}); median Δ {delta:+.3} ms"
            ))
            .limit("50 %")
            .checked(share)
            .target(Target::Within(45.0, 55.0), "45–55 %"),
    );
    Ok(())
}
