//! Section 13: what a refusal costs. A client over its budget keeps sending requests, each
//! naming a new address; counted here: the rows the audit table gains and the keys Redis
//! gains per 1,000 refused requests (forgot-password and sign-in), and the throughput and
//! latency of other clients' forgot-password requests while such a flood runs beside them.
//! The flooding client is another loopback address (`127.0.0.2`), so the api sees two clients.

use std::{net::IpAddr, sync::Arc, time::Duration};

use e2e::stack::StackEnv;

use crate::{
    forgot::{FORGOT, forgot_bodies},
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num, ms},
};

const SESSIONS: &str = "/v1/sessions";
/// The flooding client.
const FLOODER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    // The flooder's forgot-password budget is spent by the footprint phase; sign-ins are
    // refused past 10 per client, so the legitimate client measured beside the flood sends
    // forgot-password requests (its own budget lifted) while the flood is of sign-ins.
    env.set("RATE_LIMIT_IP_PER_HOUR", "10");
    env.set("RATE_LIMIT_LOGIN_IP_PER_HOUR", "10");
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&mut env, rows).await;
    util::drop_database(&env).await;
    result
}

/// Rows of the audit table and keys under the stack's Redis prefix.
async fn footprint(env: &StackEnv, db: &sqlx::PgPool) -> anyhow::Result<(i64, usize)> {
    // Refusal rows are written beside the answers: let the last ones land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(db)
        .await?;
    let client = redis::Client::open(e2e::redis_url())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let prefix = env.var("REDIS_KEY_PREFIX").unwrap_or_default();
    // SCAN, not KEYS: on a server holding millions of other keys (a long-used development
    // machine) one KEYS call outlasts the client's response timeout.
    let mut keys = 0;
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut redis)
            .await?;
        keys += batch.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok((rows, keys))
}

async fn measure(env: &mut StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let db = sqlx::PgPool::connect(&env.database_url).await?;
    let n = env_num("BENCH_REFUSALS", 1000) as usize;
    let tag = e2e::unique_id();

    for (what, path, body) in [
        ("forgot-password", FORGOT, "forgot"),
        ("sign-in", SESSIONS, "sign-in"),
    ] {
        let mut conn = Conn::connect_from(addr, Some(FLOODER)).await?;
        let request = |i: usize| match body {
            "forgot" => format!(r#"{{"email":"f{i}-{tag}@example.org"}}"#),
            _ => format!(r#"{{"email":"s{i}-{tag}@example.org","password":"not the password 1"}}"#),
        };
        // Spend the budget (10), then count what the refusals add.
        for i in 0..10 {
            conn.post_json(path, request(i).as_bytes()).await?;
        }
        let before = footprint(env, &db).await?;
        let mut refused = 0;
        for i in 10..10 + n {
            refused += usize::from(conn.post_json(path, request(i).as_bytes()).await? == 429);
        }
        anyhow::ensure!(refused == n, "{refused} of {n} {what} requests refused");
        let after = footprint(env, &db).await?;
        let per_1000 = |d: f64| d * 1000.0 / n as f64;
        let (rows_added, keys_added) = (
            per_1000((after.0 - before.0) as f64),
            per_1000(after.1 as f64 - before.1 as f64),
        );
        rows.push(
            Row::new(
                "13 refusals",
                format!("{what}: audit rows and Redis keys added per 1,000 refused requests, each naming a new address"),
            )
            .measured(format!("{rows_added:.0} rows, {keys_added:.0} keys"))
            .limit("1,000 rows and 1,000 keys before (one of each per refusal)")
            .checked(rows_added.max(keys_added))
            .target(Target::Below(42.0), "≤ 25 rows, ≤ 40 keys (issue's bound for 600)"),
        );
    }

    // Another client's forgot-password traffic, alone and beside a flood of refused sign-ins.
    let conns = 32;
    let phase = util::secs(5);
    // Its own budget out of the way: it is a busy client (or many behind one proxy). The
    // flooder's sign-in budget, in Redis, stays spent.
    drop(api);
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    let (_api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let legit =
        |prefix: String| load::closed_loop(addr, FORGOT, 202, conns, phase, forgot_bodies(prefix));
    let jobs_queue = env.topology().jobs_queue();
    legit(format!("warm-{tag}")).await?;
    let alone = legit(format!("alone-{tag}")).await?;
    purge(&jobs_queue).await?;
    let flood_body: load::BodyFn = Arc::new({
        let tag = tag.clone();
        move |c, seq| {
            Some(
                format!(
                    r#"{{"email":"x{c}-{seq}-{tag}@example.org","password":"not the password 1"}}"#
                )
                .into_bytes(),
            )
        }
    });
    // The flood at a fixed rate (what the api could refuse per second when every refusal
    // waited for its audit row), so versions compare at the same flood.
    let flood_rate = env_num("BENCH_FLOOD_RATE", 900) as f64;
    let flood = load::open_loop_from(
        addr,
        Some(FLOODER),
        SESSIONS,
        429,
        conns,
        flood_rate,
        phase + Duration::from_secs(1),
        flood_body,
    );
    let (beside, flooded) = tokio::join!(legit(format!("beside-{tag}")), flood);
    let (beside, flooded) = (beside?, flooded?);
    purge(&jobs_queue).await?;
    rows.push(
        Row::new(
            "13 refusals",
            "forgot-password of another client, 32 connections: alone / beside a flood of refused sign-ins (open loop)",
        )
        .measured(format!(
            "{:.0} / {:.0} req/s, p99 {} / {} ({} errors beside; flood {:.0} refusals/s, p99 {}, {} late)",
            alone.rate(),
            beside.rate(),
            ms(alone.p(0.99)),
            ms(beside.p(0.99)),
            beside.errors,
            flooded.rate(),
            ms(flooded.p(0.99)),
            flooded.late
        ))
        .limit("alone")
        .ratio(beside.rate() / alone.rate().max(1e-9)),
    );
    db.close().await;
    Ok(())
}

/// Empties the jobs queue (the published jobs are not what this section measures).
async fn purge(queue: &str) -> anyhow::Result<()> {
    let connection =
        lapin::Connection::connect(&e2e::amqp_url(), lapin::ConnectionProperties::default())
            .await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
        .await?;
    connection.close(200, "purged".into()).await?;
    Ok(())
}
