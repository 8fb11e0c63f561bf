//! The test harness: one real worker per test, started in-process by its production start
//! (`Worker::build_with_clock`) on a database, Redis key prefix and broker namespace of its
//! own, in front of the real SMTP test server, with a clock the test moves.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use e2e::{QueueReader, Received, poll_until, stack::SmtpSink};
use lapin::{BasicProperties, Connection, options::QueueDeclareOptions, types::FieldTable};
use mail_worker::{config::Config, startup::Worker};
use shared::{
    audit::{Action, Outcome},
    clock::{Clock as _, ManualClock},
    keys::Keys,
    message::{Envelope, Job, Trace},
    topology::{JOBS_ROUTING_KEY, Topology},
};
use sqlx::PgPool;
use uuid::Uuid;

/// Long enough for any step of a test on a loaded machine; a passing test waits far less.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// The retry schedule of most tests: long delays, so a parked job stays where the test can
/// look at it.
pub(crate) const SLOW_RETRIES: &str = "60,600";

pub(crate) struct TestWorker {
    pub db: PgPool,
    pub clock: ManualClock,
    pub sink: SmtpSink,
    pub topology: Topology,
    pub keys: Keys,
    pub config: Config,
    pub reader: QueueReader,
    pub http: SocketAddr,
    publisher: lapin::Channel,
    _connection: Connection,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        e2e::delete_topology_blocking(&self.topology);
    }
}

/// Applies the schema (the api owns the migrations; both services use them).
async fn migrate(db: &PgPool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/migrations");
    sqlx::migrate::Migrator::new(dir)
        .await
        .expect("the api's migrations are readable")
        .run(db)
        .await
        .expect("migrations apply");
}

/// Starts a worker with the test settings, `overrides` winning.
pub(crate) async fn spawn_with(overrides: &[(&str, &str)]) -> TestWorker {
    if std::env::var_os("TEST_LOG").is_some() {
        shared::telemetry::init("mail-worker", "info");
    }
    shared::tls::install_crypto_provider();
    let id = e2e::unique_id();
    let database_url = e2e::create_database().await.expect("test database");
    let db = PgPool::connect(&database_url).await.expect("connect");
    migrate(&db).await;
    let sink = SmtpSink::start().await.expect("SMTP test server");
    // The tests' common table and the worker tests' own settings.
    let mut env: std::collections::HashMap<String, String> =
        e2e::test_env(&format!("w-{id}"), &database_url)
            .into_iter()
            .collect();
    for (k, v) in [
        ("SMTP_URL", sink.url().as_str()),
        ("SMTP_TIMEOUT_SECS", "5"),
        ("MAIL_RETRY_SCHEDULE_SECS", SLOW_RETRIES),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("valid test configuration");
    let clock = ManualClock::new(chrono::Utc::now());
    let worker = Worker::build_with_clock(config.clone(), Arc::new(clock.clone()))
        .await
        .expect("the worker starts");
    let http = worker.http_addr().expect("bound");
    let topology = worker.topology().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let (connection, publisher) = config
        .broker()
        .connect_confirmed("worker-test", &topology)
        .await
        .expect("broker");
    let worker = TestWorker {
        db,
        clock,
        sink,
        keys: Keys::new(config.redis_key_prefix.clone()),
        topology,
        config,
        reader: QueueReader::connect().await.expect("broker"),
        http,
        publisher,
        _connection: connection,
        stop: Some(stop),
        task: Some(task),
    };
    worker.wait_ready().await;
    worker
}

pub(crate) async fn spawn() -> TestWorker {
    spawn_with(&[]).await
}

impl TestWorker {
    /// Waits until `/readyz` says ready (a consumer is attached to the declared topology).
    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.http);
        let ready = poll_until(PATIENCE, || async {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(ready.is_some(), "the worker did not become ready");
    }

    /// Stops the worker as SIGTERM does and waits until it has returned.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("worker task").expect("worker ran");
        }
    }

    /// A job created now (by the test's clock), as the api would publish it, with a request
    /// id of its own so its audit row can be found.
    pub(crate) fn job(&self, job: Job) -> Envelope {
        Envelope::new(
            job,
            self.clock.now(),
            chrono::Duration::hours(1),
            "en",
            Trace {
                request_id: Some(format!("req-{}", e2e::unique_id())),
                traceparent: None,
            },
        )
    }

    /// Publishes `envelope` to the work queue (confirmed), as the api does.
    pub(crate) async fn publish(&self, envelope: &Envelope) {
        self.publish_raw(&envelope.encode(), Some(envelope.id))
            .await;
    }

    /// Publishes raw bytes as a job (confirmed).
    pub(crate) async fn publish_raw(&self, body: &[u8], id: Option<Uuid>) {
        let mut properties =
            BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.to_string().into());
        }
        shared::amqp::publish_confirmed(
            &self.publisher,
            &self.topology.mail_exchange(),
            JOBS_ROUTING_KEY,
            body,
            properties,
            true,
            PATIENCE,
        )
        .await
        .expect("the broker took the job");
    }

    /// A user as the api stores one.
    pub(crate) async fn add_user(&self, email: &str, verified: bool) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, email_verified_at)
             VALUES ($1, $2, $3, 'not-a-hash', CASE WHEN $4 THEN now() END)",
        )
        .bind(id)
        .bind(email)
        .bind(email.to_lowercase())
        .bind(verified)
        .execute(&self.db)
        .await
        .expect("insert user");
        id
    }

    /// The audit outcomes written for `job` (found by its request id), once there are `n`.
    pub(crate) async fn audit_outcomes(&self, job: &Envelope, n: usize) -> Vec<Outcome> {
        let request_id = job.trace.request_id.clone();
        let read = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT outcome FROM audit_events WHERE request_id = $1 AND action = $2 ORDER BY id",
            )
            .bind(&request_id)
            .bind(Action::of_job(&job.job).as_str())
            .fetch_all(&self.db)
            .await
            .expect("audit rows")
        };
        let rows = poll_until(PATIENCE, || async {
            let rows = read().await;
            (rows.len() >= n).then_some(rows)
        })
        .await
        .unwrap_or(read().await);
        rows.iter()
            .map(|text| {
                *Outcome::ALL
                    .iter()
                    .find(|o| o.as_str() == text)
                    .unwrap_or_else(|| panic!("{text} is no audit outcome"))
            })
            .collect()
    }

    /// The one audit outcome of `job`, once written.
    pub(crate) async fn outcome(&self, job: &Envelope) -> Outcome {
        let mut rows = self.audit_outcomes(job, 1).await;
        assert_eq!(rows.len(), 1, "one audit row for job {}: {rows:?}", job.id);
        rows.remove(0)
    }

    /// Messages ready in `queue` (not counting the ones a consumer holds).
    pub(crate) async fn ready_in(&self, queue: &str) -> u32 {
        self.reader
            .channel()
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Waits until `queue` holds `n` messages, then takes them.
    pub(crate) async fn take(&self, queue: &str, n: usize) -> Vec<Received> {
        self.reader.take(queue, n, PATIENCE).await.expect("read")
    }

    /// The dead letters the worker archived (reason, kind), once there are `n`.
    pub(crate) async fn dead_letters(&self, n: usize) -> Vec<(String, Option<String>)> {
        let read = || async {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT reason, kind FROM dead_letters ORDER BY id",
            )
            .fetch_all(&self.db)
            .await
            .expect("dead letters")
        };
        poll_until(PATIENCE, || async {
            let rows = read().await;
            (rows.len() >= n).then_some(rows)
        })
        .await
        .unwrap_or(read().await)
    }

    /// A Redis connection (for the keys the worker keeps).
    pub(crate) async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(e2e::redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    /// Whether the worker recorded `job` as delivered (its idempotency marker).
    pub(crate) async fn marked_sent(&self, job: &Envelope) -> bool {
        redis::cmd("EXISTS")
            .arg(self.keys.job_sent(job.id))
            .query_async::<bool>(&mut self.redis().await)
            .await
            .expect("redis")
    }

    /// This process's count of `pwrecovery_jobs_total{kind, outcome}`.
    pub(crate) fn jobs_total(&self, kind: &str, outcome: &str) -> u64 {
        let wanted = format!("pwrecovery_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} ");
        shared::telemetry::prometheus()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&wanted)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The `x-attempt-history` lines of a parked job.
pub(crate) fn history(parked: &Received) -> Vec<String> {
    use lapin::types::AMQPValue;
    let headers = parked.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(mail_worker::retry::HISTORY_HEADER) {
        Some(AMQPValue::FieldArray(lines)) => lines
            .as_slice()
            .iter()
            .filter_map(|line| match line {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
