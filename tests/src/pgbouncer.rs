//! A private PgBouncer (Debian's package, installed by the test command) in transaction
//! pooling mode in front of the local PostgreSQL, on a free loopback port, removed on drop.
//! Its admin console (the `pgbouncer` database, user `postgres`) tells what went through it.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// A running PgBouncer in `pool_mode = transaction`.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PgBouncer {
    /// Starts PgBouncer forwarding every database to the PostgreSQL at `postgres_host_port`
    /// (trust authentication, as the local server uses).
    pub async fn start(postgres_host_port: &str) -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir = std::env::temp_dir().join(format!("pwr-pgbouncer-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let (host, pg_port) = postgres_host_port
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("expected host:port, got {postgres_host_port}"))?;
        let config = format!(
            "[databases]\n\
             * = host={host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             admin_users = postgres\n\
             stats_users = postgres\n\
             stats_period = 1\n\
             ignore_startup_parameters = extra_float_digits\n\
             max_client_conn = 500\n\
             default_pool_size = 8\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config)?;
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n")?;
        let mut command = Command::new(pgbouncer_binary());
        // PgBouncer refuses to run as root; it switches to the postgres user itself.
        if is_root() {
            make_writable(&dir)?;
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start pgbouncer (is it installed?): {e}"))?;
        let bouncer = Self { child, dir, port };
        let up = crate::poll_until(Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        anyhow::ensure!(
            up.is_some(),
            "pgbouncer did not listen on {port}: {}",
            bouncer.log()
        );
        Ok(bouncer)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `database_url` (a direct URL of the local server) rewritten to go through PgBouncer.
    pub fn url_for(&self, database_url: &str) -> String {
        let (_, rest) = database_url
            .split_once('@')
            .expect("a postgres:// URL with credentials");
        let (_, path) = rest.split_once('/').expect("a database name");
        format!("postgres://postgres@127.0.0.1:{}/{path}", self.port)
    }

    /// The rows of an admin console command (`SHOW STATS`, `SHOW CLIENTS`, …), each a map
    /// from column to value as text (NULL as an empty string).
    pub async fn show(&self, command: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        use sqlx::{Column as _, Connection as _, Row as _, ValueRef as _};
        let url = format!("postgres://postgres@127.0.0.1:{}/pgbouncer", self.port);
        let mut console = sqlx::PgConnection::connect(&url).await?;
        // The console speaks only the simple query protocol (text values).
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(command.to_owned()))
            .fetch_all(&mut console)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = BTreeMap::new();
            for column in row.columns() {
                let raw = row.try_get_raw(column.ordinal())?;
                let text = if raw.is_null() {
                    String::new()
                } else {
                    raw.as_str().map_err(|e| anyhow::anyhow!("{e}"))?.to_owned()
                };
                values.insert(column.name().to_owned(), text);
            }
            out.push(values);
        }
        let _ = console.close().await;
        Ok(out)
    }

    /// `total_xact_count` of `database` in `SHOW STATS`: the transactions clients ran
    /// through the pooler against it (refreshed every second, `stats_period`).
    pub async fn transactions(&self, database: &str) -> anyhow::Result<u64> {
        let stats = self.show("SHOW STATS").await?;
        Ok(stats
            .iter()
            .find(|row| row.get("database").is_some_and(|d| d == database))
            .and_then(|row| row.get("total_xact_count")?.parse().ok())
            .unwrap_or(0))
    }

    /// The `application_name` of every client connected to `database` (`SHOW CLIENTS`).
    pub async fn clients_of(&self, database: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .show("SHOW CLIENTS")
            .await?
            .into_iter()
            .filter(|row| row.get("database").is_some_and(|d| d == database))
            .map(|row| row.get("application_name").cloned().unwrap_or_default())
            .collect())
    }

    /// PgBouncer's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

fn pgbouncer_binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pgbouncer"))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn make_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    for file in ["pgbouncer.ini", "users.txt"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
