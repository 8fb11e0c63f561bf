//! TLS servers for the tests: a certificate authority made here (rcgen), and real servers
//! listening only with TLS under its certificate: a Redis node (`--tls-port`) and a private
//! PostgreSQL instance (`ssl = on`, `hostssl` only). The RabbitMQ TLS listener is in
//! [`crate::broker`]. Each is on a free loopback port and removed on drop.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A private CA and one server certificate it signed for `localhost` and `127.0.0.1`, as PEM
/// files in a temporary directory.
pub struct TestCa {
    dir: PathBuf,
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pwr-ca-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pwrecovery test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        // Client authentication too: cluster nodes present it to each other on the bus.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("server.pem"), cert.pem())?;
        std::fs::write(dir.join("server.key"), key.serialize_pem())?;
        Ok(Self { dir })
    }

    /// The CA certificate (what `TLS_CA_FILE` points at).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Copies the CA, the server certificate and its key into `dir` (a server's own directory,
    /// which may then be handed to the server's user); returns (ca, cert, key).
    pub fn copy_into(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
        let files = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        );
        std::fs::copy(self.ca_file(), &files.0)?;
        std::fs::copy(self.cert_file(), &files.1)?;
        std::fs::copy(self.key_file(), &files.2)?;
        std::fs::set_permissions(&files.2, std::fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}

/// `redis-cli` options that reach a TLS-only server whose certificate `ca` (a file) issued.
pub fn redis_cli_tls(ca: &Path) -> Vec<String> {
    vec![
        "--tls".to_owned(),
        "--cacert".to_owned(),
        ca.display().to_string(),
    ]
}

async fn accepts(port: u16, timeout: Duration) -> bool {
    crate::poll_until(timeout, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await
    .is_some()
}

/// A Redis node that speaks only TLS (`--port 0 --tls-port`), client certificates not asked.
pub struct TlsRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsRedis {
    pub async fn start(ca: &TestCa) -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir = std::env::temp_dir().join(format!("pwr-redis-tls-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let (ca_file, cert, key) = ca.copy_into(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let redis = Self { child, dir, port };
        anyhow::ensure!(
            accepts(port, Duration::from_secs(10)).await,
            "redis-server --tls-port {port} did not listen"
        );
        Ok(redis)
    }

    /// `rediss://localhost:<port>` (the name the certificate is for).
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// The same node without TLS on the client side (refused by a TLS-only server).
    pub fn plain_url(&self) -> String {
        format!("redis://localhost:{}", self.port)
    }
}

/// A private PostgreSQL instance (the installed server binaries, a fresh data directory)
/// accepting only TLS connections (`hostssl`), with the test CA's server certificate.
pub struct TlsPostgres {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (the data is thrown away).
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the newest installed PostgreSQL server binaries (Debian keeps them in
/// `/usr/lib/postgresql/<version>/bin`), or `None` to find them on the `PATH`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of the `postgres` user (the server refuses to run as root).
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        anyhow::ensure!(out.status.success(), "no postgres user");
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TlsPostgres {
    /// Initialises and starts the instance (~3 s), TLS-only, trust authentication.
    pub async fn start(ca: &TestCa) -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir = std::env::temp_dir().join(format!("pwr-pg-tls-{}", crate::unique_id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)?;
        let (_, cert, key) = ca.copy_into(&dir)?;
        let bin = |name: &str| postgres_bin_dir().map_or(PathBuf::from(name), |b| b.join(name));
        let as_server_user = |command: &mut Command| -> anyhow::Result<()> {
            if is_root() {
                let (uid, gid) = postgres_user()?;
                command.uid(uid).gid(gid);
            }
            Ok(())
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {}", dir.display());
        }
        let mut initdb = Command::new(bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb)?;
        let out = tokio::task::spawn_blocking(move || initdb.output()).await??;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )?;
        let mut postgres = Command::new(bin("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "ssl=on", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_server_user(&mut postgres)?;
        let child = postgres.spawn()?;
        let server = Self { child, dir, port };
        anyhow::ensure!(
            accepts(port, Duration::from_secs(20)).await,
            "the private PostgreSQL did not listen on {port}"
        );
        Ok(server)
    }

    /// `postgres://postgres@localhost:<port>/<database>` without TLS settings.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@localhost:{}/{database}", self.port)
    }

    /// Creates `database` (over TLS, checked against `ca`).
    pub async fn create_database(&self, database: &str, ca: &TestCa) -> anyhow::Result<()> {
        use sqlx::{ConnectOptions as _, Connection as _, postgres::PgConnectOptions};
        let options: PgConnectOptions = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.url("postgres"),
            ca.ca_file().display()
        )
        .parse()?;
        let connected = crate::poll_until(Duration::from_secs(20), || {
            let options = options.clone();
            async move { options.connect().await.ok() }
        })
        .await;
        let mut admin =
            connected.ok_or_else(|| anyhow::anyhow!("cannot connect to the private PostgreSQL"))?;
        // The name is the test's own, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}
