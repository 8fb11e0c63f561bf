//! Process plumbing shared by both binaries: JSON logs on stdout (filtered by `RUST_LOG`),
//! the Prometheus recorder and the PostgreSQL pool.

use std::{sync::OnceLock, time::Duration};

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{Layer as _, PrefixLayer};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber of the process `service` (`api`, `mail-worker`).
/// `LOG_FORMAT=pretty` gives human-readable lines for local work; anything else gives one JSON
/// object per line, which is what log pipelines expect; a line written within a request or a
/// job carries its span's fields, among them `trace_id`. When an OTLP endpoint is configured
/// (see [`crate::otel`]) the spans of this workspace's crates are exported too, whatever
/// `RUST_LOG` keeps of the lines. `.env` is loaded first, so `RUST_LOG`, `LOG_FORMAT` and the
/// `OTEL_*` variables written there apply too.
pub fn init(service: &'static str, default_filter: &str) {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let _ = dotenvy::dotenv();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let lines = if pretty {
        tracing_subscriber::fmt::layer().with_target(true).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    };
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("api", tracing::Level::INFO)
        .with_target("mail_worker", tracing::Level::INFO)
        .with_target("shared", tracing::Level::INFO);
    // A second init (tests build several services in one process) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(crate::otel::layer(service).map(|otel| otel.with_filter(ours)))
        .try_init();
}

/// Histogram buckets (seconds) for every latency metric, so each has `_bucket` series.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often the recorder folds recorded histogram samples into its buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The prefix of every metric either service records: call sites name a metric by its short
/// name (`jobs_total`), `/metrics` shows `pwrecovery_jobs_total`. One prefix for both
/// services keeps their series apart from every other program's in a shared Prometheus. The
/// standard `process_*` metrics keep their usual names (see [`crate::process_metrics`]).
pub const METRIC_PREFIX: &str = "pwrecovery";

/// The process-wide Prometheus recorder, installed on first use (tests build several
/// services in one process; they share it), behind a layer that adds [`METRIC_PREFIX`].
///
/// The recorder keeps every histogram sample until it is folded into the buckets, which a
/// scrape does, or the upkeep this starts on a thread of its own every [`UPKEEP_EVERY`].
/// Without it a process nobody scrapes grows by every request's samples (measured: the api
/// at 3,000 requests/s grew by about 8 MiB a minute).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // The layer joins prefix and name with a `.`, which the exporter writes as `_`.
            let prefixed = PrefixLayer::new(METRIC_PREFIX).layer(recorder);
            let handle = match metrics::set_global_recorder(prefixed) {
                Ok(()) => handle,
                // Another recorder is installed (an embedding program): keep ours private.
                // Nothing is recorded into it, so there is nothing for a prefix to rename.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        #[allow(
                            clippy::disallowed_methods,
                            reason = "a thread of its own, outside the async runtime"
                        )]
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "could not start the metrics upkeep; only scrapes will fold histogram samples");
            }
            handle
        })
        .clone()
}

/// Sets `pwrecovery_build_info{service, version, commit}` to 1: which release and commit
/// each replica runs (a rollout shows as two series, one per version).
pub fn record_build_info(service: &'static str, version: &'static str, commit: &'static str) {
    metrics::gauge!("build_info", "service" => service, "version" => version, "commit" => commit)
        .set(1.0);
}

/// Connects a PostgreSQL pool. Acquiring a connection is bounded, so an unreachable database
/// turns into prompt errors (503 in the api, retries in the worker) instead of stalls.
pub async fn connect_db(
    url: &str,
    max_connections: u32,
    trust: &crate::tls::Trust,
) -> anyhow::Result<PgPool> {
    pool_options(max_connections)
        .connect_with(pg_options(url, trust)?)
        .await
        .context("cannot connect to PostgreSQL (check DATABASE_URL and that the server runs)")
}

/// A PostgreSQL pool that opens its connections when they are first needed: a database that
/// is down at start makes requests fail (503 in the api, waiting jobs in the worker) until it
/// is back, instead of keeping the service from starting. Only a malformed URL fails here.
pub fn lazy_db(
    url: &str,
    max_connections: u32,
    trust: &crate::tls::Trust,
) -> anyhow::Result<PgPool> {
    Ok(pool_options(max_connections).connect_lazy_with(pg_options(url, trust)?))
}

/// The connection settings of `url`; TLS as its `sslmode` says (`require`: encrypted;
/// `verify-ca` / `verify-full`: the server's certificate checked against the webpki roots
/// plus `TLS_CA_FILE`, unless the URL names its own `sslrootcert`).
pub fn pg_options(url: &str, trust: &crate::tls::Trust) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let names_root = url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            name == "sslrootcert" || name == "ssl-root-cert"
        })
    });
    Ok(match trust.extra_pem() {
        Some(pem) if !names_root => options.ssl_root_cert_from_pem(pem.into_bytes()),
        _ => options,
    })
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
}

/// Resolves on SIGTERM (orchestrators) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The process exit code for a binary's result; a failure is logged and printed once.
pub fn exit_code(binary: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    crate::otel::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{binary} failed");
            eprintln!("{binary}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What one readiness probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub postgres: bool,
    pub redis: bool,
    pub rabbitmq: bool,
}

impl Readiness {
    /// Probes PostgreSQL and Redis (bounded); PostgreSQL counts only with `schema_ready` (the
    /// caller's migrations have run), and `rabbitmq` is the caller's own view of its broker
    /// connection.
    pub async fn probe(
        db: &PgPool,
        redis: &crate::redis_pool::RedisPool,
        schema_ready: bool,
        rabbitmq: bool,
    ) -> Self {
        let postgres = async {
            schema_ready
                && tokio::time::timeout(
                    Duration::from_secs(2),
                    sqlx::raw_sql("SELECT 1").execute(db),
                )
                .await
                .is_ok_and(|r| r.is_ok())
        };
        let (postgres, redis) = tokio::join!(postgres, redis.ping());
        Self {
            postgres,
            redis,
            rabbitmq,
        }
    }

    /// Every dependency answered.
    pub fn ready(&self) -> bool {
        self.postgres && self.redis && self.rabbitmq
    }

    /// `200 {"status": "ready"}` or `503 {"status": "unavailable"}`, with `checks` (which
    /// dependency failed) only when `detailed`: the public port names no dependency.
    pub fn response(&self, detailed: bool) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let status = if self.ready() { "ready" } else { "unavailable" };
        let body = if detailed {
            serde_json::json!({
                "status": status,
                "checks": { "postgres": self.postgres, "redis": self.redis, "rabbitmq": self.rabbitmq },
            })
        } else {
            serde_json::json!({ "status": status })
        };
        let code = if self.ready() {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        };
        (code, axum::Json(body)).into_response()
    }
}

/// The answer of a service's private `/readyz`: `200 {"status": "ready", "checks": {…}}`, or
/// `503` with `"unavailable"` and the failing check (see [`Readiness::probe`]).
pub async fn readiness(
    db: &PgPool,
    redis: &crate::redis_pool::RedisPool,
    schema_ready: bool,
    rabbitmq: bool,
) -> axum::response::Response {
    Readiness::probe(db, redis, schema_ready, rabbitmq)
        .await
        .response(true)
}

/// The answer of a service's `/metrics`: the Prometheus text exposition of `handle`, and
/// the `process_*` metrics read now.
pub fn metrics_response(handle: &PrometheusHandle) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut text = handle.render();
    crate::process_metrics::Process::read().render(&mut text);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
