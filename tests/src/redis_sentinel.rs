//! A private Redis primary, one replica and three Sentinels on loopback ports (real
//! `redis-server` processes), removed on drop; plain TCP, or TLS only (clients, replication
//! and the Sentinels' own connections) with a test CA's certificate.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// The name the Sentinels know the primary by.
pub const MASTER: &str = "pwrmaster";

/// A primary, a replica and three Sentinels watching them.
pub struct RedisSentinels {
    children: Vec<Child>,
    primary: u16,
    replica: u16,
    sentinels: Vec<u16>,
    dir: PathBuf,
    /// `redis-cli` options that reach the servers (`--tls --cacert …` for a TLS set).
    cli_tls: Vec<String>,
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn redis_cli(tls: &[String], port: u16, args: &[&str]) -> anyhow::Result<String> {
    let mut all = tls.to_vec();
    all.extend(["-p".to_owned(), port.to_string()]);
    all.extend(args.iter().map(|a| (*a).to_owned()));
    crate::redis_cluster::redis_cli(&all).await
}

impl RedisSentinels {
    /// Starts the set and waits until the Sentinels know the primary and its replica.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(None).await
    }

    /// Like [`Self::start`], every server speaking only TLS with `ca`'s server certificate
    /// (see [`Self::urls`]).
    pub async fn start_tls(ca: &crate::tls::TestCa) -> anyhow::Result<Self> {
        Self::launch(Some(ca)).await
    }

    async fn launch(tls: Option<&crate::tls::TestCa>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pwr-redis-sentinel-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let tls_files = tls.map(|ca| ca.copy_into(&dir)).transpose()?;
        let mut set = Self {
            children: Vec::new(),
            primary: crate::free_port()?,
            replica: crate::free_port()?,
            sentinels: Vec::new(),
            dir,
            cli_tls: tls_files
                .as_ref()
                .map(|(ca, _, _)| crate::tls::redis_cli_tls(ca))
                .unwrap_or_default(),
        };
        // The listening lines of a server's configuration, plain or TLS-only.
        let listen = |port: u16| match &tls_files {
            None => format!("port {port}\n"),
            Some((ca, cert, key)) => format!(
                "port 0\ntls-port {port}\ntls-replication yes\ntls-auth-clients no\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                cert.display(),
                key.display(),
                ca.display()
            ),
        };
        for (port, replica_of) in [(set.primary, None), (set.replica, Some(set.primary))] {
            let config = set.dir.join(format!("redis-{port}.conf"));
            std::fs::write(&config, listen(port))?;
            let mut command = Command::new("redis-server");
            command
                .arg(&config)
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&set.dir);
            if let Some(primary) = replica_of {
                command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
            set.children.push(
                command
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?,
            );
        }
        let replica = set.replica;
        let synced = crate::poll_until(Duration::from_secs(20), || async {
            redis_cli(&set.cli_tls, replica, &["info", "replication"])
                .await
                .ok()
                .filter(|o| o.contains("master_link_status:up"))
        })
        .await;
        anyhow::ensure!(synced.is_some(), "the replica did not sync");
        for _ in 0..3 {
            let port = crate::free_port()?;
            let config = set.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "{listen}bind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    listen = listen(port),
                    dir = set.dir.display(),
                    primary = set.primary,
                ),
            )?;
            set.children.push(
                Command::new("redis-server")
                    .arg(&config)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?,
            );
            set.sentinels.push(port);
        }
        for port in set.sentinels.clone() {
            let replica = set.replica.to_string();
            let knows = crate::poll_until(Duration::from_secs(30), || async {
                redis_cli(&set.cli_tls, port, &["sentinel", "replicas", MASTER])
                    .await
                    .ok()
                    .filter(|o| o.contains(&replica))
            })
            .await;
            anyhow::ensure!(knows.is_some(), "sentinel {port} does not know the replica");
        }
        Ok(set)
    }

    /// `REDIS_SENTINEL_URLS` of the set (`rediss://` for a TLS set).
    pub fn urls(&self) -> String {
        crate::redis_cluster::node_urls(&self.sentinels, !self.cli_tls.is_empty())
    }

    /// The port of the primary the Sentinels name now.
    pub async fn current_primary(&self) -> anyhow::Result<u16> {
        let out = redis_cli(
            &self.cli_tls,
            self.sentinels[0],
            &["sentinel", "get-master-addr-by-name", MASTER],
        )
        .await?;
        let port = out
            .lines()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no primary: {out}"))?;
        Ok(port.trim().parse()?)
    }

    /// The ports of the first primary and its replica.
    pub fn ports(&self) -> (u16, u16) {
        (self.primary, self.replica)
    }

    /// Forces a failover (`SENTINEL FAILOVER`) and waits until the replica is the primary.
    pub async fn fail_over(&self) -> anyhow::Result<()> {
        redis_cli(
            &self.cli_tls,
            self.sentinels[0],
            &["sentinel", "failover", MASTER],
        )
        .await?;
        let replica = self.replica;
        let moved = crate::poll_until(Duration::from_secs(30), || async {
            (self.current_primary().await.ok()? == replica).then_some(())
        })
        .await;
        anyhow::ensure!(moved.is_some(), "the failover did not happen");
        Ok(())
    }

    /// The node's replication role (`master` or `slave`).
    pub async fn role(&self, port: u16) -> anyhow::Result<String> {
        let out = redis_cli(&self.cli_tls, port, &["role"]).await?;
        Ok(out.lines().next().unwrap_or("").to_owned())
    }

    /// How many keys the node on `port` holds.
    pub async fn keys_on(&self, port: u16) -> anyhow::Result<u64> {
        Ok(redis_cli(&self.cli_tls, port, &["dbsize"])
            .await?
            .trim()
            .parse()?)
    }
}
