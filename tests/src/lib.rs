//! Test support for the end-to-end suite and the api's integration tests: per-test
//! databases, key and queue namespaces, a fault-injecting TCP proxy and a job reader, all
//! against the real PostgreSQL, Redis and RabbitMQ of the machine.

// Tests measure real time against real services, and pace processes from plain threads.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]

pub mod broker;
pub mod client;
pub mod pgbouncer;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod stack;
pub mod tls;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicGetOptions},
};
use shared::message::Envelope;
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

/// PostgreSQL server URL without a database (`TEST_POSTGRES_URL`).
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into())
}

/// Redis URL (`TEST_REDIS_URL`), on the database [`use_own_redis_database`] chose, if any.
pub fn redis_url() -> String {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match OWN_REDIS_DATABASE.get() {
        Some(&db) => with_redis_database(&url, db),
        None => url,
    }
}

/// The Redis database of this process's stacks when it is not the URL's own.
static OWN_REDIS_DATABASE: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// Redis database of the benchmarks and the soak: they leave millions of keys behind, and
/// the tests list theirs with `KEYS`, which walks every key of its database.
pub const BENCH_REDIS_DATABASE: u8 = 15;

/// `url` with its database set to `db` (a URL that names a database already keeps it).
fn with_redis_database(url: &str, db: u8) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if matches!(parsed.path(), "" | "/") => {
            parsed.set_path(&format!("/{db}"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Makes every stack this process starts use Redis database `db` of `TEST_REDIS_URL`'s
/// server, and empties it: now, and again by [`empty_own_redis_database`] when the process is
/// done. For the benchmarks and the soak, whose keys would otherwise stay in the database
/// the tests use.
pub async fn use_own_redis_database(db: u8) -> anyhow::Result<()> {
    OWN_REDIS_DATABASE
        .set(db)
        .map_err(|_| anyhow::anyhow!("the Redis database of this process is chosen already"))?;
    empty_own_redis_database().await
}

/// Empties the database [`use_own_redis_database`] chose (nothing without one).
pub async fn empty_own_redis_database() -> anyhow::Result<()> {
    if OWN_REDIS_DATABASE.get().is_none() {
        return Ok(());
    }
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB")
        .arg("ASYNC")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// RabbitMQ URL (`TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Prefix of every database the tests create (dropped by the test command before a run).
pub const TEST_DB_PREFIX: &str = "pwr_test_";

/// A short random id for names.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A loopback port that was free a moment ago (for servers the tests start).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Creates an empty database for one test and returns its URL.
pub async fn create_database() -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let server = postgres_server_url();
    let name = format!("{TEST_DB_PREFIX}{}", unique_id());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    // The name is ours (prefix + hex), never input: safe to splice into the statement.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(format!("{server}/{name}"))
}

/// Retries `probe` until it returns `Some` or `timeout` passes.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP proxy in front of a real service that a test can cut and restore, to see how the
/// services behave when a dependency disappears and comes back.
#[derive(Clone)]
pub struct FaultProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Self {
            addr: listener.local_addr()?,
            down: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        let target = target.to_owned();
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if p.down.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the peer sees the connection closed at once
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut list) = p.connections.lock() {
                    list.retain(|h| !h.is_finished());
                    list.push(task.abort_handle());
                }
            }
        });
        Ok(proxy)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Ok(mut list) = self.connections.lock() {
            for h in list.drain(..) {
                h.abort();
            }
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// Reads messages from a queue of the real broker (the tests' view of what was published).
pub struct QueueReader {
    _connection: Connection,
    channel: lapin::Channel,
}

/// A message as read from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Received {
    /// Decodes the body as a mail job.
    pub fn envelope(&self) -> Envelope {
        Envelope::decode(&self.body).expect("a published job decodes")
    }
}

impl QueueReader {
    pub async fn connect() -> anyhow::Result<Self> {
        Self::connect_to(&amqp_url()).await
    }

    /// Connects to the broker at `url` (a private node, say).
    pub async fn connect_to(url: &str) -> anyhow::Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok(Self {
            _connection: connection,
            channel,
        })
    }

    /// The channel, for declaring extra test queues.
    pub fn channel(&self) -> &lapin::Channel {
        &self.channel
    }

    /// Takes (and acks) every message currently in `queue`.
    pub async fn drain(&self, queue: &str) -> anyhow::Result<Vec<Received>> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?
        {
            m.delivery.ack(BasicAckOptions::default()).await?;
            out.push(Received {
                body: m.delivery.data.clone(),
                properties: m.delivery.properties.clone(),
            });
        }
        Ok(out)
    }

    /// Takes messages from `queue` until `n` arrived or `timeout` passed.
    pub async fn take(
        &self,
        queue: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            let got = self.drain(queue).await?;
            if got.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out.extend(got);
        }
        Ok(out)
    }
}

/// The token secret of every test configuration ([`test_env`]).
pub const TEST_TOKEN_SECRETS: &str =
    "fe9530b2244f4068700349aa57ae2471cac9976fe0ae307268f014b08035663b";

/// The public base URL of every test configuration ([`test_env`]).
pub const TEST_PUBLIC_BASE_URL: &str = "https://account.example.test";

/// The environment every test api and worker runs with, in one table: the api's integration
/// tests, the worker's integration tests and the end-to-end stack each take it and add only
/// what is their own (a retry schedule, an SMTP server, a publish timeout, a log level).
///
/// The database is `database_url`; Redis keys and broker names are in `namespace`
/// (`<namespace>:` and `<namespace>.`), so tests never see each other's keys or queues. Every
/// listener binds port 0, hashing is cheap and the request budgets are out of reach (the
/// tests of a budget set their own). A service ignores the entries of the other one.
pub fn test_env(namespace: &str, database_url: &str) -> Vec<(String, String)> {
    const UNLIMITED: &str = "100000";
    [
        ("DATABASE_URL", database_url),
        ("REDIS_URL", &redis_url()),
        ("AMQP_URL", &amqp_url()),
        ("PUBLIC_BASE_URL", TEST_PUBLIC_BASE_URL),
        ("TOKEN_SECRETS", TEST_TOKEN_SECRETS),
        ("PRODUCT_NAME", "Example Accounts"),
        ("REDIS_KEY_PREFIX", &format!("{namespace}:")),
        ("BROKER_NAMESPACE", &format!("{namespace}.")),
        // Backstop for queues a killed test run could not delete.
        ("BROKER_QUEUE_EXPIRES_MS", "120000"),
        // The api.
        ("API_BIND", "127.0.0.1:0"),
        ("API_METRICS_BIND", "127.0.0.1:0"),
        ("COOKIE_SECURE", "true"),
        // Cheap hashing keeps the suite fast; production cost is the default.
        ("ARGON2_MEMORY_KIB", "64"),
        ("ARGON2_ITERATIONS", "1"),
        ("RATE_LIMIT_IP_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_LOGIN_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_SIGNUP_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_LOGIN_IP_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_TOKEN_PER_HOUR", UNLIMITED),
        ("RATE_LIMIT_CODE_PER_HOUR", UNLIMITED),
        // The worker.
        ("WORKER_HTTP_BIND", "127.0.0.1:0"),
        ("MAIL_FROM", "Example Security <security@example.test>"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The workspace this crate was built in (its sources, for [`workspace_binary`]).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The binaries the end-to-end tests run, each with the workspace paths it is built from:
/// its crates (all but their `tests/`: sources, migrations, templates, assets, build
/// scripts, manifests) and the workspace's manifest and lock file.
const SERVICE_BINARIES: [(&str, &[&str]); 2] = [
    ("api", &["api", "shared", "Cargo.toml", "Cargo.lock"]),
    (
        "mail-worker",
        &["mail-worker", "shared", "Cargo.toml", "Cargo.lock"],
    ),
];

/// The command that builds the service binaries (what a stale or missing one asks for).
pub const BUILD_COMMAND: &str = "cargo build -p api -p mail-worker --bins";

/// The newest modification time under `path` (a file, or a directory but its `tests/` and
/// `target/`), with the file that has it.
fn newest_mtime(path: &std::path::Path) -> Option<(std::time::SystemTime, std::path::PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| !matches!(entry.file_name().to_str(), Some("tests" | "target")))
        .filter_map(|entry| newest_mtime(&entry.path()))
        .max_by_key(|(time, _)| *time)
}

/// Why the service binaries in `profile_dir` cannot be run as they are (missing, or older
/// than a file they are built from), if so.
fn stale_binaries(profile_dir: &std::path::Path) -> Vec<String> {
    let root = workspace_root();
    let mut stale = Vec::new();
    for (binary, sources) in SERVICE_BINARIES {
        let path = profile_dir.join(binary);
        let Some(built) = std::fs::metadata(&path).and_then(|m| m.modified()).ok() else {
            stale.push(format!("{} is not built", path.display()));
            continue;
        };
        let newest = sources
            .iter()
            .filter_map(|source| newest_mtime(&root.join(source)))
            .max_by_key(|(time, _)| *time);
        if let Some((changed, file)) = newest.filter(|(changed, _)| *changed > built) {
            let by = changed.duration_since(built).unwrap_or_default();
            stale.push(format!(
                "{} is older than {} (by {:.0} s)",
                path.display(),
                file.strip_prefix(&root).unwrap_or(&file).display(),
                by.as_secs_f64()
            ));
        }
    }
    stale
}

/// Builds the service binaries into `profile_dir` if one is missing or older than its
/// sources, once per test process (every test of the process waits for the first one's
/// build): a test never runs a binary built from other sources than the ones it is read
/// with. `cargo test` holds the build lock only while it compiles, so this build can run.
fn ensure_fresh_binaries(profile_dir: &std::path::Path) -> Result<(), String> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let stale = stale_binaries(profile_dir);
            if stale.is_empty() {
                return Ok(());
            }
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug");
            let mut command = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            command.args(["build", "-p", "api", "-p", "mail-worker", "--bins"]);
            match profile {
                "debug" => {}
                "release" => {
                    command.arg("--release");
                }
                other => {
                    command.args(["--profile", other]);
                }
            }
            if let Some(target_dir) = profile_dir.parent() {
                command.arg("--target-dir").arg(target_dir);
            }
            eprintln!(
                "[e2e] {}; building them: `{BUILD_COMMAND}` (profile {profile})",
                stale.join("; ")
            );
            let status = command
                .current_dir(workspace_root())
                .stdout(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::inherit())
                .status()
                .map_err(|e| format!("cannot run `{BUILD_COMMAND}`: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "`{BUILD_COMMAND}` failed ({status}) for stale service binaries: {}",
                    stale.join("; ")
                ));
            }
            for (binary, _) in SERVICE_BINARIES {
                let path = profile_dir.join(binary);
                if !path.exists() {
                    return Err(format!("`{BUILD_COMMAND}` did not make {}", path.display()));
                }
            }
            Ok(())
        })
        .clone()
}

/// Path of a service binary of this workspace (`api` or `mail-worker`), built next to the
/// running test. Built first (see [`BUILD_COMMAND`]) if it is missing or older than any file
/// it is built from, so a test never passes on a stale build.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, binaries in target/<profile>/.
    let dir = exe.parent().expect("target dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    if SERVICE_BINARIES.iter().any(|(binary, _)| *binary == name)
        && let Err(e) = ensure_fresh_binaries(dir)
    {
        panic!("{e}");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `{BUILD_COMMAND}`",
        path.display()
    );
    path
}

/// Where service processes started from now on write their output, instead of into the
/// memory of this process (see [`log_services_to`]).
static LOG_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sends the output of every service process started from now on to a file in `dir`, read
/// back only when asked for: a benchmark then does not pay for collecting the services' log
/// lines (an access-log line per request) in its own process.
pub fn log_services_to(dir: std::path::PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let _ = LOG_DIR.set(dir);
    Ok(())
}

/// A running service process whose JSON log lines are collected.
pub struct ServiceProcess {
    pub child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The file the output goes to, when it is not collected (see [`log_services_to`]).
    log_file: Option<std::path::PathBuf>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts `binary` with exactly `env` (plus PATH) and collects its stdout and stderr. Its
    /// standard input is empty.
    pub fn spawn(
        binary: &std::path::Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::spawn_with_input(binary, args, env, None)
    }

    /// [`Self::spawn`] with `input` written to its standard input (then closed).
    pub fn spawn_with_input(
        binary: &std::path::Path,
        args: &[&str],
        env: &[(String, String)],
        input: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .kill_on_drop(true);
        if input.is_some() {
            cmd.stdin(std::process::Stdio::piped());
        } else {
            cmd.stdin(std::process::Stdio::null());
        }
        let feed = |child: &mut tokio::process::Child| {
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                tokio::spawn(async move {
                    let _ = stdin.write_all(&input).await;
                });
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(dir) = LOG_DIR.get() {
            let name = binary.file_name().unwrap_or_default().to_string_lossy();
            let path = dir.join(format!("{name}-{}.log", unique_id()));
            let file = std::fs::File::create(&path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
            let mut child = cmd.spawn()?;
            feed(&mut child);
            return Ok(Self {
                child,
                lines,
                log_file: Some(path),
                readers: Vec::new(),
            });
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        feed(&mut child);
        let mut readers = Vec::new();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for reader in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            readers.push(tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            }));
        }
        Ok(Self {
            child,
            lines,
            log_file: None,
            readers,
        })
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> Vec<String> {
        if let Some(path) = &self.log_file {
            return std::fs::read_to_string(path)
                .map(|text| text.lines().map(str::to_owned).collect())
                .unwrap_or_default();
        }
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for a JSON log line whose `message` is `message` and returns its `field`.
    pub async fn wait_for_log_field(
        &self,
        message: &str,
        field: &str,
        timeout: Duration,
    ) -> Option<String> {
        poll_until(timeout, || async {
            self.output().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                (v["message"] == message).then(|| v[field].as_str().map(str::to_owned))?
            })
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("process already exited"))?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        self.wait_exit(timeout).await
    }

    /// Waits for the process to exit and for its output to be read to the end, so
    /// [`Self::output`] then holds every line it printed.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await??;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        Ok(status)
    }
}

/// Deletes a test's queues and exchanges from the broker, synchronously (callable from
/// `Drop`, also while a failed test unwinds). Queues hold file descriptors on the broker; a
/// suite that leaves hundreds behind runs the broker out of them.
pub fn delete_topology_blocking(topology: &shared::topology::Topology) {
    let topology = topology.clone();
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
                let connection =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                for queue in topology.queues() {
                    let _ = channel
                        .queue_delete(queue.into(), QueueDeleteOptions::default())
                        .await;
                }
                for exchange in topology.exchanges() {
                    let _ = channel
                        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                        .await;
                }
                connection.close(200, "cleaned up".into()).await
            })
            .await;
        });
    });
    let _ = worker.join();
}

/// Publishes `bodies` to the work queue of `topology` with confirms (as the api would), each
/// with its message id when it is a valid job.
pub async fn publish_raw_jobs(
    topology: &shared::topology::Topology,
    bodies: &[Vec<u8>],
) -> anyhow::Result<()> {
    use lapin::options::BasicPublishOptions;
    let broker = shared::amqp::Broker::new(vec![amqp_url()], shared::tls::Trust::default());
    let (connection, channel) = broker.connect_confirmed("e2e", topology).await?;
    // Published back to back, the confirms awaited together (faster than one at a time).
    let mut confirms = Vec::with_capacity(bodies.len());
    for body in bodies {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Ok(envelope) = Envelope::decode(body) {
            properties = properties
                .with_message_id(envelope.id.to_string().into())
                .with_type(envelope.job.kind().into());
        }
        confirms.push(
            channel
                .basic_publish(
                    topology.mail_exchange().into(),
                    shared::topology::JOBS_ROUTING_KEY.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "broker refused a job");
    }
    connection.close(200, "published".into()).await?;
    Ok(())
}

/// `n` account-exists notices to distinct addresses `<prefix>-<i>@example.org`: jobs that
/// need no account in the database and always produce exactly one email.
pub fn notice_jobs(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            Envelope::new(
                shared::message::Job::AccountExistsNotice {
                    email: format!("{prefix}-{i}@example.org"),
                    ip: None,
                },
                chrono::Utc::now(),
                chrono::Duration::hours(1),
                "en",
                shared::message::Trace::default(),
            )
            .encode()
        })
        .collect()
}

/// Parses every YAML document of `files` with PyYAML (in the test command's virtualenv) and
/// returns them as JSON values, per file.
pub fn parse_yaml(files: &[std::path::PathBuf]) -> Vec<Vec<serde_json::Value>> {
    let python = test_python();
    let script = "import json, sys, yaml\n\
                  print(json.dumps([list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]]))";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "YAML did not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML printed JSON")
}

/// Hashes of `password` made by the frameworks' own libraries in the test virtualenv
/// (`tests/hashes/foreign_hashes.py --fast`: Werkzeug, Django, pyca bcrypt, argon2-cffi, and
/// PHC strings of hashlib's scrypt and PBKDF2), scheme name -> hash; cheap parameters of each
/// format, what a test in a debug build can afford.
pub fn foreign_hashes(password: &str) -> std::collections::BTreeMap<String, String> {
    hashes_of(password, &["--fast"])
}

/// [`foreign_hashes`] with each library's default parameters (what a site's accounts hold).
pub fn foreign_hashes_as_made(password: &str) -> std::collections::BTreeMap<String, String> {
    hashes_of(password, &[])
}

fn hashes_of(password: &str, args: &[&str]) -> std::collections::BTreeMap<String, String> {
    let python = test_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hashes/foreign_hashes.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(password)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (source deploy/local/venv.sh)"));
    assert!(
        out.status.success(),
        "{script} failed (source deploy/local/venv.sh for its libraries): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints a JSON object")
}

/// The test virtualenv's Python (`SMTP_SINK_PYTHON`, set by `deploy/local/venv.sh`): aiosmtpd,
/// PyYAML, schemathesis and the frameworks' password hashers.
pub fn test_python() -> String {
    std::env::var("SMTP_SINK_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[cfg(test)]
mod redis_database_tests {
    use super::with_redis_database;

    #[test]
    fn a_bench_database_goes_into_a_url_without_one_and_never_replaces_one() {
        assert_eq!(
            with_redis_database("redis://127.0.0.1:6379", 15),
            "redis://127.0.0.1:6379/15"
        );
        assert_eq!(
            with_redis_database("redis://:pass@cache:6380/", 15),
            "redis://:pass@cache:6380/15"
        );
        assert_eq!(
            with_redis_database("redis://cache:6380/3", 15),
            "redis://cache:6380/3"
        );
    }
}
