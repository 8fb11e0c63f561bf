//! A private RabbitMQ node for tests that stop and restart the broker itself, so the
//! machine's shared broker (and every other test using it) is never disturbed.
//!
//! The node runs from the installed `rabbitmq-server` with its own name, ports, data and
//! log directory under the temporary directory; it is stopped and removed on drop. The test
//! command stops nodes left behind by an interrupted run (`pwrtest-*` in `epmd -names`).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// Node names start with this (the test command's clean-up looks for it).
pub const NODE_PREFIX: &str = "pwrtest-";

pub struct BrokerNode {
    node: String,
    dir: PathBuf,
    port: u16,
    dist_port: u16,
    /// The TLS listener's port, when the node has one.
    tls_port: Option<u16>,
}

fn rabbitmqctl(node: &str, args: &[&str]) -> anyhow::Result<()> {
    rabbitmqctl_output(node, args).map(drop)
}

fn rabbitmqctl_output(node: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {args:?} on {node}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl BrokerNode {
    /// Starts a node and waits until it accepts AMQP connections (~7 s).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Like [`Self::start`], with a second listener speaking AMQP over TLS with `ca`'s server
    /// certificate (see [`Self::amqps_url`]).
    pub async fn start_with_tls(ca: &crate::tls::TestCa) -> anyhow::Result<Self> {
        Self::start_with(Some(ca)).await
    }

    async fn start_with(tls: Option<&crate::tls::TestCa>) -> anyhow::Result<Self> {
        let id = crate::unique_id();
        let node = format!("{NODE_PREFIX}{id}@localhost");
        let dir = std::env::temp_dir().join(format!("pwr-rabbit-{id}"));
        std::fs::create_dir_all(&dir)?;
        let port = crate::free_port()?;
        let dist_port = crate::free_port()?;
        let mut config = format!("listeners.tcp.local = 127.0.0.1:{port}\n");
        let tls_port = match tls {
            Some(ca) => {
                let tls_port = crate::free_port()?;
                let (ca_file, cert, key) = ca.copy_into(&dir)?;
                config.push_str(&format!(
                    "listeners.ssl.local = 127.0.0.1:{tls_port}\n\
                     ssl_options.cacertfile = {}\n\
                     ssl_options.certfile = {}\n\
                     ssl_options.keyfile = {}\n\
                     ssl_options.verify = verify_none\n\
                     ssl_options.fail_if_no_peer_cert = false\n",
                    ca_file.display(),
                    cert.display(),
                    key.display()
                ));
                Some(tls_port)
            }
            None => None,
        };
        std::fs::write(dir.join("rabbitmq.conf"), config)?;
        // As root, the server script drops to the `rabbitmq` user, which must own the data.
        if nix_is_root() {
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {}", dir.display());
        }
        let this = Self {
            node,
            dir,
            port,
            dist_port,
            tls_port,
        };
        this.launch().await?;
        Ok(this)
    }

    /// Starts the node's server process (fresh, or again with its data after [`Self::kill`])
    /// and waits until it accepts AMQP connections.
    async fn launch(&self) -> anyhow::Result<()> {
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("plugins"))
            .status()?;
        anyhow::ensure!(status.success(), "rabbitmq-server -detached failed");
        let pid_file = self.dir.join("pid");
        let pid_file = pid_file.to_string_lossy().into_owned();
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&node, &["wait", "--timeout", "90", &pid_file])
        })
        .await??;
        self.wait_accepting().await
    }

    /// The Erlang node name (`pwrtest-…@localhost`).
    pub fn name(&self) -> &str {
        &self.node
    }

    /// The AMQP port of the node.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the node's server process with SIGKILL (a crashed host): connections break
    /// without a close, and its data stays for [`Self::restart`].
    pub async fn kill(&self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("pid"))?;
        let status = Command::new("kill").args(["-9", pid.trim()]).status()?;
        anyhow::ensure!(status.success(), "kill -9 {pid}");
        let port = self.port;
        let closed = crate::poll_until(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        })
        .await;
        anyhow::ensure!(closed.is_some(), "node {} still listens", self.node);
        Ok(())
    }

    /// The last lines of the node's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            }
        }
        out
    }

    /// Starts a killed node again (it rejoins its cluster with its data).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.launch().await
    }

    /// Makes this (fresh) node a member of `other`'s cluster.
    pub async fn join(&self, other: &BrokerNode) -> anyhow::Result<()> {
        let (node, seed) = (self.node.clone(), other.node.clone());
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&node, &["stop_app"])?;
            rabbitmqctl(&node, &["join_cluster", &seed])?;
            rabbitmqctl(&node, &["start_app"])
        })
        .await??;
        self.wait_accepting().await
    }

    /// `rabbitmqctl <args>` against this node, its output.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let node = self.node.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            rabbitmqctl_output(&node, &args)
        })
        .await?
    }

    /// `amqp://` URL of the node.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://` URL of the node's TLS listener (`localhost`, the certificate's name).
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@localhost:{port}/%2f"))
    }

    /// Whether each client connection of the node uses TLS.
    pub async fn connections_tls(&self) -> anyhow::Result<Vec<bool>> {
        let node = self.node.clone();
        let out = tokio::task::spawn_blocking(move || {
            rabbitmqctl_output(&node, &["list_connections", "--no-table-headers", "ssl"])
        })
        .await??;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l == "true")
            .collect())
    }

    /// Stops the broker application: every connection is closed, nothing is accepted, the
    /// node's data stays (like a broker restart).
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || rabbitmqctl(&node, &["stop_app"])).await?
    }

    /// Starts the broker application again and waits until it accepts connections.
    pub async fn start_app(&self) -> anyhow::Result<()> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || rabbitmqctl(&node, &["start_app"])).await??;
        self.wait_accepting().await
    }

    async fn wait_accepting(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let connected = lapin::Connection::connect(
                &self.amqp_url(),
                lapin::ConnectionProperties::default(),
            )
            .await;
            match connected {
                Ok(c) => {
                    let _ = c.close(200, "ok".into()).await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("node {} never accepted AMQP: {e}", self.node)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Private nodes joined into one cluster (~30 s for three), each stopped and removed on drop.
pub struct BrokerCluster {
    pub nodes: Vec<BrokerNode>,
}

impl BrokerCluster {
    /// Starts `n` nodes and joins the others to the first.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let started = futures_util::future::join_all((0..n).map(|_| BrokerNode::start())).await;
        let nodes = started.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        for node in &nodes[1..] {
            node.join(&nodes[0]).await?;
        }
        Ok(Self { nodes })
    }

    /// `AMQP_URL` listing every node.
    pub fn amqp_urls(&self) -> String {
        self.nodes
            .iter()
            .map(BrokerNode::amqp_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `rabbitmqctl <args>` against the first node that answers.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = anyhow::anyhow!("no nodes");
        for node in &self.nodes {
            match node.ctl(args).await {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The indices of the nodes holding a client connection named `name`.
    pub async fn nodes_of_connection(&self, name: &str) -> anyhow::Result<Vec<usize>> {
        let out = self
            .ctl(&[
                "list_connections",
                "--no-table-headers",
                "port",
                "client_properties",
            ])
            .await?;
        let mut found = Vec::new();
        for line in out.lines() {
            let Some((port, properties)) = line.split_once('\t') else {
                continue;
            };
            let named = properties.contains("connection_name")
                && properties.contains(&format!("\"{name}\""));
            let index = self
                .nodes
                .iter()
                .position(|n| n.port().to_string() == port.trim());
            if let (true, Some(index)) = (named, index) {
                found.push(index);
            }
        }
        Ok(found)
    }

    /// The index of the node leading quorum queue `queue`.
    pub async fn leader_of(&self, queue: &str) -> anyhow::Result<usize> {
        let out = self
            .ctl(&["list_queues", "--no-table-headers", "name", "leader"])
            .await?;
        let leader = out
            .lines()
            .find_map(|l| {
                l.split_once('\t')
                    .filter(|(n, _)| *n == queue)
                    .map(|(_, leader)| leader.trim().to_owned())
            })
            .ok_or_else(|| anyhow::anyhow!("no queue {queue}: {out}"))?;
        self.nodes
            .iter()
            .position(|n| n.name() == leader)
            .ok_or_else(|| anyhow::anyhow!("leader {leader} is none of ours"))
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&self.node, &["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
