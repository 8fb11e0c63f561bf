//! A private Redis Cluster of real `redis-server` processes on loopback ports, formed with
//! `redis-cli --cluster create`, removed on drop.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// A running cluster of primaries (no replicas).
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster bus port (port + 10000) is free too; cluster ports stay below 55536.
fn cluster_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        // A random start in 20000..45000 from a fresh UUID (no random-number crate here).
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 25_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

async fn redis_cli(args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli").args(args).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl RedisCluster {
    /// Starts `primaries` nodes and joins them into one cluster covering every slot.
    pub async fn start(primaries: usize) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pwr-redis-cluster-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..primaries {
            let port = cluster_port()?;
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            let up = crate::poll_until(Duration::from_secs(10), || async {
                let args = ["-p".to_owned(), port.to_string(), "ping".to_owned()];
                redis_cli(&args).await.ok().filter(|o| o.contains("PONG"))
            })
            .await;
            anyhow::ensure!(up.is_some(), "redis node on {port} did not start");
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        redis_cli(&create).await?;
        for port in &cluster.ports {
            let ok = crate::poll_until(Duration::from_secs(20), || async {
                let args = [
                    "-p".to_owned(),
                    port.to_string(),
                    "cluster".to_owned(),
                    "info".to_owned(),
                ];
                redis_cli(&args)
                    .await
                    .ok()
                    .filter(|o| o.contains("cluster_state:ok"))
            })
            .await;
            anyhow::ensure!(ok.is_some(), "the cluster did not become ready on {port}");
        }
        Ok(cluster)
    }

    /// `REDIS_CLUSTER_URLS` for the cluster (every node as a seed).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many keys each node holds.
    pub async fn keys_per_node(&self) -> anyhow::Result<Vec<u64>> {
        let mut counts = Vec::new();
        for port in &self.ports {
            let args = ["-p".to_owned(), port.to_string(), "dbsize".to_owned()];
            counts.push(redis_cli(&args).await?.trim().parse()?);
        }
        Ok(counts)
    }
}
