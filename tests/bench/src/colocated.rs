//! Section 12: timing with a worker on the same machine (the run command's default, file
//! transport, small deployments). The worker's work for a job competes with the api for the
//! CPU, and a reset email for a registered address costs the worker more than a job for an
//! unknown one; if that work lands in the api's answer to the next request, the next answer
//! tells whether the previous address was registered. Two forms of the attack, each with the
//! worker taking jobs the instant they arrive (`WORKER_TAKE_JITTER_MS=0`) and at its default
//! (a random moment within 25 ms):
//!
//! - **follow-up**: forgot-password for a target, then at once for a fresh unknown address,
//!   timing the second; pairs of targets (one registered, one not, in alternating order);
//!   the share of pairs in which the probe after the registered target was slower;
//! - **alternating**: registered and unregistered addresses in interleaved pairs, each timed
//!   (section 2's probe, with a worker running); the share in which the registered one was
//!   slower.

use std::time::Duration;

use e2e::stack::StackEnv;

use crate::{
    forgot::{register_users, registered, timed_forgot as send, unregistered},
    load::{self, Conn},
    report::{Row, Target},
    util::{self, env_num, ms},
};

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set("MAIL_PER_RECIPIENT_PER_HOUR", "100000");
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&env, rows).await;
    util::drop_database(&env).await;
    result
}

async fn measure(env: &StackEnv, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let pairs = env_num("BENCH_COLOCATED_PAIRS", 600) as usize;
    let tag = e2e::unique_id();
    // Every run of every form gets registered targets of its own (a reset email per target).
    register_users(&env.database_url, &tag, pairs * 4).await?;
    let mail_dir = std::env::temp_dir().join(format!("pwr-bench-mail-{tag}"));
    std::fs::create_dir_all(&mail_dir)?;
    let dir = mail_dir.display().to_string();
    for (round, jitter) in [("0", "taken at once"), ("25", "taken within 25 ms")]
        .into_iter()
        .enumerate()
    {
        let (jitter_ms, label) = jitter;
        let (worker, _) = env
            .start_worker_with(&[
                ("MAIL_TRANSPORT", "file"),
                ("MAIL_FILE_DIR", &dir),
                ("WORKER_TAKE_JITTER_MS", jitter_ms),
            ])
            .await?;
        let offset = round * pairs * 2;
        let mut conn = Conn::connect(addr).await?;
        for i in 0..100 {
            send(&mut conn, &format!("w{round}-{i:05}-{tag}@example.org")).await?;
        }
        eprintln!("[bench]   co-located worker ({label}): follow-up probe");
        let (after_reg, after_unreg) = follow_up(&mut conn, &tag, offset, pairs).await?;
        rows.extend(verdict(
            format!("follow-up probe after a registered target, worker {label}"),
            &after_reg,
            &after_unreg,
        ));
        eprintln!("[bench]   co-located worker ({label}): alternating probe");
        let (reg, unreg) = alternating(&mut conn, &tag, offset + pairs, pairs).await?;
        rows.extend(verdict(
            format!("alternating probe, registered vs unregistered, worker {label}"),
            &reg,
            &unreg,
        ));
        drop(worker);
    }
    let _ = std::fs::remove_dir_all(&mail_dir);
    Ok(())
}

/// The follow-up form: the probe's time after a registered target and after an unregistered
/// one, per pair.
async fn follow_up(
    conn: &mut Conn,
    tag: &str,
    offset: usize,
    pairs: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut after_reg = Vec::with_capacity(pairs);
    let mut after_unreg = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let n = offset + i;
        let probe = |k: usize| format!("p-{n:05}-{k}-{tag}@example.org");
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for (k, reg) in order.into_iter().enumerate() {
            let target = if reg {
                registered(tag, n)
            } else {
                unregistered(tag, n)
            };
            send(conn, &target).await?;
            let t = send(conn, &probe(k)).await?;
            if reg {
                after_reg.push(t);
            } else {
                after_unreg.push(t);
            }
            // The worker's share of the pair settles before the next one starts.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    Ok((after_reg, after_unreg))
}

/// The alternating form: interleaved pairs of a registered and an unregistered address.
async fn alternating(
    conn: &mut Conn,
    tag: &str,
    offset: usize,
    pairs: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut reg = Vec::with_capacity(pairs);
    let mut unreg = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let n = offset + i;
        if i % 2 == 0 {
            reg.push(send(conn, &registered(tag, n)).await?);
            unreg.push(send(conn, &unregistered(tag, n)).await?);
        } else {
            unreg.push(send(conn, &unregistered(tag, n)).await?);
            reg.push(send(conn, &registered(tag, n)).await?);
        }
    }
    Ok((reg, unreg))
}

/// The share of pairs in which the registered side was slower, and the median difference.
fn verdict(what: String, reg: &[Duration], unreg: &[Duration]) -> Vec<Row> {
    let pairs = reg.len();
    let slower = reg.iter().zip(unreg).filter(|(r, u)| r > u).count();
    let share = 100.0 * slower as f64 / pairs.max(1) as f64;
    let (mut r, mut u) = (reg.to_vec(), unreg.to_vec());
    r.sort_unstable();
    u.sort_unstable();
    let (mr, mu) = (load::percentile(&r, 0.5), load::percentile(&u, 0.5));
    let delta_ms = (mr.as_secs_f64() - mu.as_secs_f64()) * 1000.0;
    vec![
        Row::new(
            "12 co-located worker",
            format!("{what}: pairs where registered was slower"),
        )
        .measured(format!("{share:.1} % ({slower} of {pairs})"))
        .limit("50 %")
        .checked(share)
        .target(Target::Within(45.0, 55.0), "45–55 %"),
        Row::new("12 co-located worker", format!("{what}: median difference"))
            .measured(format!(
                "{delta_ms:+.3} ms (medians {} / {})",
                ms(mr),
                ms(mu)
            ))
            .limit("0.1 ms")
            .ratio(delta_ms.abs() / 0.1)
            .target(Target::Below(1.0), "|Δ| < 0.1 ms"),
    ]
}
