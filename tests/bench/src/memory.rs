//! The api's memory under a hashing flood: resident size at its peak while sign-ups, sign-ins
//! and resets keep every hashing slot busy, and ten seconds after the last answer.
//!
//! Each argon2id hash needs 19 MiB of working memory with the production parameters. What
//! matters is whether that memory is held once per hashing slot or piles up in the allocator
//! (one arena per thread that ever hashed kept freed blocks: 657 MiB after this flood).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use e2e::stack::{SmtpSink, StackEnv};

use crate::{
    forgot,
    load::{self, Conn},
    report::{Row, Target},
    reset,
    util::{self, env_num},
};

/// The flood: sign-ups, sign-ins and resets, all hashing with the production parameters.
const SIGN_UPS: usize = 48;
const SIGN_INS: usize = 96;
const RESETS: usize = 48;
/// Requests in flight at once (connections).
const CONNECTIONS: usize = 16;
/// Resident size the api may reach while hashing, and fall back to after it.
const PEAK_LIMIT_MIB: f64 = 96.0;
const SETTLED_LIMIT_MIB: f64 = 64.0;

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let mut env = StackEnv::new().await?;
    env.set("ARGON2_MEMORY_KIB", &reset::MEMORY_KIB.to_string());
    env.set("ARGON2_ITERATIONS", &reset::ITERATIONS.to_string());
    env.set("ARGON2_PARALLELISM", &reset::PARALLELISM.to_string());
    // One client IP sends everything: lift its budgets out of the way (they are still checked
    // on every request) and let it use every hashing slot, the worst case for memory.
    for budget in [
        "RATE_LIMIT_IP_PER_HOUR",
        "RATE_LIMIT_SIGNUP_PER_HOUR",
        "RATE_LIMIT_LOGIN_PER_HOUR",
        "RATE_LIMIT_LOGIN_IP_PER_HOUR",
        "RATE_LIMIT_LOGIN_EMAIL_PER_HOUR",
        "RATE_LIMIT_TOKEN_PER_HOUR",
    ] {
        env.set(budget, "1000000");
    }
    env.set("HASH_PER_CLIENT", &CONNECTIONS.to_string());
    env.set("RUST_LOG", &util::log_filter());
    // glibc allocator settings given to the bench are passed on to the api, so allocator
    // alternatives can be measured on the same flood (`GLIBC_TUNABLES=glibc.malloc.…`).
    for name in ["GLIBC_TUNABLES", "MALLOC_ARENA_MAX"] {
        if let Ok(value) = std::env::var(name) {
            env.set(name, &value);
        }
    }
    let result = measure(&env, &sink, rows).await;
    util::drop_database(&env).await;
    let _ = std::fs::remove_dir_all(&sink.dir);
    result
}

async fn measure(env: &StackEnv, sink: &SmtpSink, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (api, base) = env.start_api().await?;
    let addr = load::socket_addr(&base)?;
    let (mut worker, _) = env.start_worker(&sink.url()).await?;

    let tag = e2e::unique_id();
    forgot::register_with(&env.database_url, "mem-", &tag, RESETS).await?;
    let resets = reset::reset_links(addr, sink, &env.public_base_url, "mem-", &tag, RESETS).await?;
    // Sign-ups queue a verification email; the worker would only compete for the cores.
    worker.terminate(Duration::from_secs(15)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = util::rss_mib(&api)?;

    eprintln!(
        "[bench]   hashing flood: {SIGN_UPS} sign-ups, {SIGN_INS} sign-ins, {RESETS} resets, {CONNECTIONS} at a time"
    );
    let requests = Arc::new(flood(&tag, resets));
    let peak = util::RssPeak::start(&api);
    let tally = send_all(addr, requests).await?;
    let peak = peak.finish().await;
    let settle = Duration::from_secs(env_num("BENCH_SETTLE_SECS", 10));
    tokio::time::sleep(settle).await;
    let settled = util::rss_mib(&api)?;
    drop(api);

    let answers = format!(
        "{} × 202, {} × 401, {} × 204, {} other",
        tally[0], tally[1], tally[2], tally[3]
    );
    rows.push(
        Row::new(
            "6 memory",
            format!(
                "api RSS peak during hashing flood ({SIGN_UPS} sign-ups, {SIGN_INS} sign-ins, {RESETS} resets, {CONNECTIONS} at a time, m={} KiB)",
                reset::MEMORY_KIB
            ),
        )
        .measured(format!("{peak:.1} MiB ({answers})"))
        .limit(format!(
            "{PEAK_LIMIT_MIB:.0} MiB (before the flood: {before:.1} MiB)"
        ))
        .ratio(peak / PEAK_LIMIT_MIB)
        .target(Target::Within(0.0, 1.0), "≤ 96 MiB"),
    );
    rows.push(
        Row::new(
            "6 memory",
            format!("api RSS {} s after the flood", settle.as_secs()),
        )
        .measured(format!("{settled:.1} MiB"))
        .limit(format!("{SETTLED_LIMIT_MIB:.0} MiB"))
        .ratio(settled / SETTLED_LIMIT_MIB)
        .target(Target::Within(0.0, 1.0), "≤ 64 MiB"),
    );
    anyhow::ensure!(
        tally[3] == 0,
        "the flood got unexpected answers ({answers}): the figures above may not have hashed"
    );
    Ok(())
}

/// One request of the flood and the answer it must get.
struct Request {
    path: &'static str,
    body: Vec<u8>,
    expect: u16,
}

/// The flood, interleaved (a sign-up, two sign-ins, a reset, again) so every kind runs
/// beside every other. Sign-ins are for unknown addresses: each costs one verification
/// against the dummy hash, made with the production parameters, exactly as a wrong password
/// for an account does, and it stays valid whatever sign-in rules apply to unverified accounts.
fn flood(tag: &str, resets: Vec<Vec<u8>>) -> Vec<Request> {
    let password = |i: usize| format!("Fl-{i:03}-{}-maple", &tag[..tag.len().min(8)]);
    let mut resets = resets.into_iter();
    let mut out = Vec::with_capacity(SIGN_UPS + SIGN_INS + RESETS);
    for i in 0..SIGN_UPS.max(SIGN_INS / 2).max(RESETS) {
        if i < SIGN_UPS {
            out.push(Request {
                path: "/v1/users",
                body: serde_json::json!({
                    "email": format!("mem-new-{i:03}-{tag}@example.org"),
                    "password": password(i),
                })
                .to_string()
                .into_bytes(),
                expect: 202,
            });
        }
        for j in [2 * i, 2 * i + 1].into_iter().filter(|j| *j < SIGN_INS) {
            out.push(Request {
                path: "/v1/sessions",
                body: serde_json::json!({
                    "email": format!("mem-nobody-{j:03}-{tag}@example.org"),
                    "password": password(j),
                })
                .to_string()
                .into_bytes(),
                expect: 401,
            });
        }
        if let Some(body) = resets.next() {
            out.push(Request {
                path: "/v1/password/reset",
                body,
                expect: 204,
            });
        }
    }
    out
}

/// Sends every request over `CONNECTIONS` keep-alive connections, each taking the next one as
/// soon as its previous answer arrived. Counts: [sign-ups 202, sign-ins 401, resets 204,
/// anything else].
async fn send_all(
    addr: std::net::SocketAddr,
    requests: Arc<Vec<Request>>,
) -> anyhow::Result<[usize; 4]> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (requests, next) = (requests.clone(), next.clone());
        let mut conn = Conn::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut tally = [0usize; 4];
            while let Some(r) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                let kind = match r.expect {
                    202 => 0,
                    401 => 1,
                    _ => 2,
                };
                match conn.post_json(r.path, &r.body).await {
                    Ok(status) if status == r.expect => tally[kind] += 1,
                    Ok(status) => {
                        eprintln!("[bench]   {} answered {status}", r.path);
                        tally[3] += 1;
                    }
                    Err(e) => {
                        eprintln!("[bench]   {} failed: {e:#}", r.path);
                        tally[3] += 1;
                        conn = Conn::connect(addr).await?;
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = [0usize; 4];
    for task in tasks {
        for (sum, n) in total.iter_mut().zip(task.await??) {
            *sum += n;
        }
    }
    Ok(total)
}
