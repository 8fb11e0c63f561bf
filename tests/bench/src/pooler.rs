//! Section 16, the PgBouncer path: what a query costs through a PgBouncer in transaction
//! mode (statement cache off, as deployed behind one) next to a direct connection, at the
//! driver (this process's sqlx, the services' version: one keyed read, one write in its own
//! transaction) and through the api (a refused sign-in: one read and one audit row, the
//! hashing at the test cost so the database's part shows).

use std::time::{Duration, Instant};

use e2e::{pgbouncer::PgBouncer, stack::StackEnv};

use crate::{
    load::{self, Conn},
    report::Row,
    util::{self, env_num, ms},
};

const SECTION: &str = "16 PgBouncer path";

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    for budget in [
        "RATE_LIMIT_LOGIN_PER_HOUR",
        "RATE_LIMIT_LOGIN_IP_PER_HOUR",
        "RATE_LIMIT_LOGIN_EMAIL_PER_HOUR",
    ] {
        env.set(budget, "1000000");
    }
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&mut env, rows).await;
    util::drop_database(&env).await;
    result
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or_default();
    let rest = rest.rsplit('@').next().unwrap_or_default();
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// p50 / p99 of `times`.
fn spread(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!(
        "p50 {} / p99 {}",
        ms(load::percentile(times, 0.5)),
        ms(load::percentile(times, 0.99))
    )
}

async fn measure(env: &mut StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    util::migrate(env).await?;
    let bouncer = PgBouncer::start(&host_port(&e2e::postgres_server_url())).await?;
    let direct_url = env.database_url.clone();
    let pooled_url = format!(
        "{}?statement-cache-capacity=0",
        bouncer.url_for(&direct_url)
    );
    let n = env_num("BENCH_POOLER_QUERIES", 2000) as usize;
    let setup = sqlx::PgPool::connect(&direct_url).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_writes (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), note text)",
    )
    .execute(&setup)
    .await?;
    crate::signin::insert_account(&setup, "pooled@example.org", true).await?;
    setup.close().await;

    // The driver: one connection each, the two paths alternated in rounds.
    let one = |url: &str| {
        let url = url.to_owned();
        async move {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
        }
    };
    let (direct, pooled) = (one(&direct_url).await?, one(&pooled_url).await?);
    let mut times: [[Vec<Duration>; 2]; 2] = Default::default();
    let rounds = 4;
    for _ in 0..rounds {
        for (path, pool) in [&direct, &pooled].into_iter().enumerate() {
            for _ in 0..n / rounds {
                let started = Instant::now();
                let _: Option<(uuid::Uuid,)> =
                    sqlx::query_as("SELECT id FROM users WHERE email_key = $1")
                        .persistent(false)
                        .bind("pooled@example.org")
                        .fetch_optional(pool)
                        .await?;
                times[0][path].push(started.elapsed());
                let started = Instant::now();
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO bench_writes (note) VALUES ($1)")
                    .persistent(false)
                    .bind("a write")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                times[1][path].push(started.elapsed());
            }
        }
    }
    direct.close().await;
    pooled.close().await;
    let sqlx_version = sqlx_version();
    for (kind, label) in [(0, "keyed read"), (1, "write in a transaction")] {
        let [d, p] = &mut times[kind];
        rows.push(
            Row::new(
                SECTION,
                format!("sqlx {sqlx_version}, {label}: direct / PgBouncer"),
            )
            .measured(format!("{} // {}", spread(d), spread(p))),
        );
    }

    // Through the api: two processes, one direct and one through PgBouncer.
    env.set("MIGRATE_DATABASE_URL", &direct_url);
    let (_direct_api, direct_base) = env.start_api().await?;
    env.set("DATABASE_URL", &pooled_url);
    let (_pooled_api, pooled_base) = env.start_api().await?;
    let requests = env_num("BENCH_POOLER_SIGNINS", 600) as usize;
    let mut conns = [
        Conn::connect(load::socket_addr(&direct_base)?).await?,
        Conn::connect(load::socket_addr(&pooled_base)?).await?,
    ];
    let body = br#"{"email":"pooled@example.org","password":"not the password at all"}"#;
    let mut signins: [Vec<Duration>; 2] = Default::default();
    for i in 0..requests + 20 {
        for (path, conn) in conns.iter_mut().enumerate() {
            let started = Instant::now();
            let status = conn.post_json("/v1/sessions", body).await?;
            anyhow::ensure!(status == 401, "sign-in answered {status}");
            if i >= 20 {
                signins[path].push(started.elapsed());
            }
        }
    }
    let [d, p] = &mut signins;
    rows.push(
        Row::new(
            SECTION,
            format!(
                "sqlx {sqlx_version}, api refused sign-in (test hashing cost): direct / PgBouncer"
            ),
        )
        .measured(format!("{} // {}", spread(d), spread(p))),
    );
    Ok(())
}

/// The sqlx version in Cargo.lock (what both services and this process link).
fn sqlx_version() -> String {
    let lock = include_str!("../../../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("\nname = \"sqlx\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map_or_else(|| "?".to_owned(), |v| v.trim_end_matches('"').to_owned())
}
