//! Section 7, sign-in timing: an unverified account with its right password, a verified
//! account with a wrong password and an unknown address must cost the same (one argon2
//! verification with the production parameters, one audit row, the same 401), so timing
//! cannot tell them apart. Triples of sequential requests on one keep-alive connection, the
//! order inside a triple rotating so no kind always goes first.

use std::time::Duration;

use e2e::stack::StackEnv;

use crate::{
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num, ms},
};

const SESSIONS: &str = "/v1/sessions";
pub(crate) const PASSWORD: &str = "a long and right password 42";
const WRONG: &str = "a long but wrong password 42";

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    // Production hashing cost, and budgets out of the way (still checked on every request).
    env.set("ARGON2_MEMORY_KIB", "19456");
    env.set("ARGON2_ITERATIONS", "2");
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&env, rows).await;
    util::drop_database(&env).await;
    result
}

/// Accounts with a hash of [`PASSWORD`] made with the api's parameters.
pub(crate) async fn insert_account(
    pool: &sqlx::PgPool,
    email: &str,
    verified: bool,
) -> anyhow::Result<()> {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let params = Params::new(19_456, 2, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    sqlx::query(
        "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
         VALUES (gen_random_uuid(), $1, $1, $2, CASE WHEN $3 THEN now() END)",
    )
    .bind(email)
    .bind(hash)
    .bind(verified)
    .execute(pool)
    .await?;
    Ok(())
}

async fn measure(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let tag = e2e::unique_id();
    let unverified = format!("unverified-{tag}@example.org");
    let verified = format!("verified-x-{tag}@example.org");
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    insert_account(&pool, &unverified, false).await?;
    insert_account(&pool, &verified, true).await?;
    pool.close().await;

    let triples = env_num("BENCH_SIGNIN_TRIPLES", 300) as usize;
    let mut conn = Conn::connect(addr).await?;
    let send = async |conn: &mut Conn, email: &str, password: &str| -> anyhow::Result<Duration> {
        let body = format!(r#"{{"email":"{email}","password":"{password}"}}"#);
        let started = std::time::Instant::now();
        let status = conn.post_json(SESSIONS, body.as_bytes()).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(status == 401, "sign-in answered {status}");
        Ok(elapsed)
    };
    // Warm-up: connections, script cache, the hashing threads.
    for i in 0..10 {
        send(&mut conn, &format!("warm-{i}-{tag}@example.org"), WRONG).await?;
    }
    // [unverified with its password, verified with a wrong one, unknown]
    let mut times: [Vec<Duration>; 3] = Default::default();
    for i in 0..triples {
        let unknown = format!("unknown-{i:04}-{tag}@example.org");
        for k in 0..3 {
            let kind = (i + k) % 3;
            let elapsed = match kind {
                0 => send(&mut conn, &unverified, PASSWORD).await?,
                1 => send(&mut conn, &verified, WRONG).await?,
                _ => send(&mut conn, &unknown, PASSWORD).await?,
            };
            times[kind].push(elapsed);
        }
    }
    let median = |v: &[Duration]| {
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        load::percentile(&sorted, 0.5)
    };
    let [unverified_t, wrong_t, unknown_t] = &times;
    rows.push(
        Row::new(
            "7 sign-in timing",
            format!(
                "medians of {triples} interleaved triples: unverified / wrong password / unknown"
            ),
        )
        .measured(format!(
            "{} / {} / {}",
            ms(median(unverified_t)),
            ms(median(wrong_t)),
            ms(median(unknown_t))
        ))
        .limit("equal"),
    );
    for (name, a, b) in [
        ("unverified slower than unknown", unverified_t, unknown_t),
        ("wrong password slower than unknown", wrong_t, unknown_t),
        (
            "unverified slower than wrong password",
            unverified_t,
            wrong_t,
        ),
    ] {
        let slower = a.iter().zip(b).filter(|(x, y)| x > y).count();
        let share = 100.0 * slower as f64 / triples as f64;
        let delta = (median(a).as_secs_f64() - median(b).as_secs_f64()) * 1000.0;
        rows.push(
            Row::new("7 sign-in timing", format!("pairs: {name}"))
                .measured(format!(
                    "{share:.1} % ({slower} of {triples}); median Δ {delta:+.3} ms"
                ))
                .limit("50 %")
                .checked(share)
                .target(Target::Within(45.0, 55.0), "45–55 %"),
        );
    }
    Ok(())
}
