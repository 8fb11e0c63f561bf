//! Section 8: forgot-password throughput on each Redis topology the product runs on, with the
//! same api build, load and broker: one node, one node over TLS, a 3-primary Redis Cluster and
//! the cluster over TLS (every server a real `redis-server` on loopback, the certificates
//! from a CA made here).

use std::time::Duration;

use e2e::{
    redis_cluster::RedisCluster,
    stack::StackEnv,
    tls::{TestCa, TlsRedis},
};

use crate::{
    forgot,
    limits::RawPublisher,
    load::{self, LoadResult},
    report::Row,
    util::{self, env_num, ms},
};

/// One Redis setup: its name and the variables that select it.
struct Setup {
    name: &'static str,
    redis_url: String,
    cluster_urls: String,
    ca_file: String,
}

pub(crate) async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let (cluster, tls_cluster, tls_node) = tokio::join!(
        RedisCluster::start(3),
        RedisCluster::start_tls(3, &ca),
        TlsRedis::start(&ca)
    );
    let (cluster, tls_cluster, tls_node) = (cluster?, tls_cluster?, tls_node?);
    let ca_file = ca.ca_file().display().to_string();
    let setups = [
        Setup {
            name: "one node (`REDIS_URL`)",
            redis_url: e2e::redis_url(),
            cluster_urls: String::new(),
            ca_file: String::new(),
        },
        Setup {
            name: "one node over TLS (`rediss://`)",
            redis_url: tls_node.url(),
            cluster_urls: String::new(),
            ca_file: ca_file.clone(),
        },
        Setup {
            name: "3-primary cluster (`REDIS_CLUSTER_URLS`)",
            redis_url: e2e::redis_url(),
            cluster_urls: cluster.urls(),
            ca_file: String::new(),
        },
        Setup {
            name: "3-primary cluster over TLS",
            redis_url: e2e::redis_url(),
            cluster_urls: tls_cluster.urls(),
            ca_file,
        },
    ];
    let mut env = StackEnv::new().await?;
    env.set("RATE_LIMIT_IP_PER_HOUR", "1000000");
    env.set("RUST_LOG", &util::log_filter());
    let result = measure(&mut env, &setups, rows).await;
    util::drop_database(&env).await;
    result
}

async fn measure(env: &mut StackEnv, setups: &[Setup], rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut apis = Vec::new();
    for setup in setups {
        env.set("REDIS_URL", &setup.redis_url);
        env.set("REDIS_CLUSTER_URLS", &setup.cluster_urls);
        env.set("TLS_CA_FILE", &setup.ca_file);
        apis.push(env.start_api().await?);
    }
    let jobs_queue = env.topology().jobs_queue();
    let raw = RawPublisher::start().await?;
    let tag = e2e::unique_id();
    let phase = util::secs(5);
    let rounds = env_num("BENCH_ROUNDS", 2);
    let mut totals: Vec<LoadResult> = setups.iter().map(|_| LoadResult::default()).collect();
    for (i, (_, base)) in apis.iter().enumerate() {
        // Warm up: connections, the script cache, the allocator.
        let addr = load::socket_addr(base)?;
        forgot::saturate(addr, &format!("w{i}-{tag}"), Duration::from_secs(1)).await?;
        raw.purge_queue(&jobs_queue).await?;
    }
    // Round-robin, so drift of a shared machine hits every setup alike.
    for round in 0..rounds {
        for (i, (_, base)) in apis.iter().enumerate() {
            eprintln!("[bench]   {}, round {}", setups[i].name, round + 1);
            let addr = load::socket_addr(base)?;
            let result = forgot::saturate(addr, &format!("s{round}-{i}-{tag}"), phase).await?;
            totals[i].merge(result);
            raw.purge_queue(&jobs_queue).await?;
        }
    }
    raw.close().await;
    let baseline = totals[0].rate();
    for (setup, total) in setups.iter().zip(&totals) {
        rows.push(
            Row::new(
                "8 redis topologies",
                format!("`POST /v1/password/forgot`, 64 connections: {}", setup.name),
            )
            .measured(format!(
                "{:.0} req/s, p50 {}, p99 {} ({} errors)",
                total.rate(),
                ms(total.p(0.5)),
                ms(total.p(0.99)),
                total.errors
            ))
            .limit(format!("one node: {baseline:.0} req/s"))
            .ratio(total.rate() / baseline),
        );
    }
    drop(apis);
    Ok(())
}
