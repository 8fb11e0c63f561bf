//! A private Redis Cluster of real `redis-server` processes on loopback ports, formed with
//! `redis-cli --cluster create`, removed on drop; plain TCP, or TLS only (clients, the
//! cluster bus and replication) with a test CA's certificate.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// A running cluster of primaries (no replicas).
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
    /// `redis-cli` options that reach the nodes (`--tls --cacert …` for a TLS cluster).
    cli_tls: Vec<String>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster bus port (port + 10000) is free too.
fn cluster_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        // A random port in 10000..22000 from a fresh UUID (no random-number crate here), so
        // it and its bus port (+10000) stay below the kernel's ephemeral range (32768 and up
        // by default): an outgoing connection of a test running beside this one cannot take
        // either between this check and the node's start.
        let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

/// `redis://` (or, for TLS nodes, `rediss://`) URLs of loopback nodes, comma-separated.
pub(crate) fn node_urls(ports: &[u16], tls: bool) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    ports
        .iter()
        .map(|p| format!("{scheme}://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `redis-cli` with `args` and returns its output.
pub(crate) async fn redis_cli(args: &[String]) -> anyhow::Result<String> {
    // Bounded: `--cluster create` waits forever for nodes that cannot meet.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("redis-cli")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("redis-cli {args:?} did not finish within 60 s"))??;
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
        Self::start_with_replicas(primaries, 0).await
    }

    /// Starts `primaries × (1 + replicas)` nodes: the first `primaries` ports become the
    /// primaries, each with `replicas` replicas that take over when it dies.
    pub async fn start_with_replicas(primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        Self::launch(primaries, replicas, None).await
    }

    /// Starts `primaries` nodes speaking only TLS with `ca`'s server certificate (clients,
    /// the cluster bus and replication); see [`Self::urls`].
    pub async fn start_tls(primaries: usize, ca: &crate::tls::TestCa) -> anyhow::Result<Self> {
        Self::launch(primaries, 0, Some(ca)).await
    }

    async fn launch(
        primaries: usize,
        replicas: usize,
        tls: Option<&crate::tls::TestCa>,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pwr-redis-cluster-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let tls_files = tls.map(|ca| ca.copy_into(&dir)).transpose()?;
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
            cli_tls: tls_files
                .as_ref()
                .map(|(ca, _, _)| crate::tls::redis_cli_tls(ca))
                .unwrap_or_default(),
        };
        for _ in 0..primaries * (1 + replicas) {
            let port = cluster_port()?;
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut command = Command::new("redis-server");
            match &tls_files {
                None => command.args(["--port", &port.to_string()]),
                Some((ca, cert, key)) => command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca),
            };
            let child = command
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once (the default waits 5 s), so a primary can fail over
                // from the start: a replica that never synced does not take over.
                .args(["--repl-diskless-sync-delay", "0"])
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
                cluster
                    .cli(*port, &["ping"])
                    .await
                    .ok()
                    .filter(|o| o.contains("PONG"))
            })
            .await;
            anyhow::ensure!(up.is_some(), "redis node on {port} did not start");
        }
        let mut create = cluster.cli_tls.clone();
        create.extend(["--cluster".to_owned(), "create".to_owned()]);
        create.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas".to_owned(), replicas.to_string()]);
        create.push("--cluster-yes".to_owned());
        redis_cli(&create).await?;
        for index in 0..cluster.ports.len() {
            anyhow::ensure!(
                cluster.wait_healthy(index, Duration::from_secs(20)).await,
                "the cluster did not become ready on {}",
                cluster.ports[index]
            );
        }
        for port in &cluster.ports[primaries..] {
            let synced = crate::poll_until(Duration::from_secs(20), || async {
                cluster
                    .cli(*port, &["info", "replication"])
                    .await
                    .ok()
                    .filter(|o| o.contains("master_link_status:up"))
            })
            .await;
            anyhow::ensure!(synced.is_some(), "the replica on {port} did not sync");
        }
        Ok(cluster)
    }

    /// Kills node `index` (SIGKILL, as a crashed host) and returns its port.
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<u16> {
        self.nodes[index].kill().await?;
        Ok(self.ports[index])
    }

    /// Whether node `index` is a primary (it answers `role` with `master`).
    pub async fn is_primary(&self, index: usize) -> anyhow::Result<bool> {
        Ok(self
            .cli(self.ports[index], &["role"])
            .await?
            .starts_with("master"))
    }

    /// Waits until node `index` reports the cluster healthy (every slot served).
    pub async fn wait_healthy(&self, index: usize, timeout: Duration) -> bool {
        let port = self.ports[index];
        crate::poll_until(timeout, || async {
            self.cli(port, &["cluster", "info"])
                .await
                .ok()
                .filter(|o| o.contains("cluster_state:ok"))
        })
        .await
        .is_some()
    }

    /// `REDIS_CLUSTER_URLS` for the cluster (every node as a seed; `rediss://` for a TLS
    /// cluster).
    pub fn urls(&self) -> String {
        node_urls(&self.ports, !self.cli_tls.is_empty())
    }

    /// `redis-cli` against the node on `port`.
    async fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let mut all = self.cli_tls.clone();
        all.extend(["-p".to_owned(), port.to_string()]);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        redis_cli(&all).await
    }

    /// `CLUSTER NODES` as node `index` sees it (for failure messages).
    pub async fn nodes_view(&self, index: usize) -> String {
        self.cli(self.ports[index], &["cluster", "nodes"])
            .await
            .unwrap_or_else(|e| e.to_string())
    }

    /// How many keys each node holds.
    pub async fn keys_per_node(&self) -> anyhow::Result<Vec<u64>> {
        let mut counts = Vec::new();
        for port in &self.ports {
            counts.push(self.cli(*port, &["dbsize"]).await?.trim().parse()?);
        }
        Ok(counts)
    }
}
