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
}

fn rabbitmqctl(node: &str, args: &[&str]) -> anyhow::Result<()> {
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
    Ok(())
}

impl BrokerNode {
    /// Starts a node and waits until it accepts AMQP connections (~7 s).
    pub async fn start() -> anyhow::Result<Self> {
        let id = crate::unique_id();
        let node = format!("{NODE_PREFIX}{id}@localhost");
        let dir = std::env::temp_dir().join(format!("pwr-rabbit-{id}"));
        std::fs::create_dir_all(&dir)?;
        let port = crate::free_port()?;
        let dist_port = crate::free_port()?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )?;
        // As root, the server script drops to the `rabbitmq` user, which must own the data.
        if nix_is_root() {
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {}", dir.display());
        }
        let this = Self { node, dir, port };
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &this.node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", this.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", this.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", this.dir.join("log"))
            .env("RABBITMQ_PID_FILE", this.dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", this.dir.join("plugins"))
            .status()?;
        anyhow::ensure!(status.success(), "rabbitmq-server -detached failed");
        let pid_file = this.dir.join("pid");
        let pid_file = pid_file.to_string_lossy().into_owned();
        let node = this.node.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&node, &["wait", "--timeout", "90", &pid_file])
        })
        .await??;
        this.wait_accepting().await?;
        Ok(this)
    }

    /// `amqp://` URL of the node.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
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
