//! Building and running the worker. `Worker::build` is both the production start and the
//! test harness (HTTP on port 0, own database, key and queue namespaces per test).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use lettre::message::Mailbox;
use shared::{clock::Clock, token::TokenKeys, topology::Topology};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::{Config, Transport},
    consumer::Consumer,
    http::{self, HttpState},
    mailer::Mailer,
    process::Processor,
    recipient_budget::RecipientBudget,
    render::Renderer,
    send_budget::SendBudget,
};

/// A built, not yet running worker.
pub struct Worker {
    config: Arc<Config>,
    processor: Processor,
    topology: Topology,
    listener: TcpListener,
    http: HttpState,
}

impl Worker {
    /// Connects PostgreSQL and prepares Redis, SMTP and the HTTP port (RabbitMQ is connected
    /// by the consumer, which keeps reconnecting).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(shared::clock::SystemClock)).await
    }

    /// Like [`Self::build`] with an injected clock.
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let db = config.database()?;
        let redis = config.redis()?;
        let tokens = TokenKeys::new(config.token_secrets.clone(), config.token_digest)
            .map_err(|e| anyhow::anyhow!("TOKEN_SECRETS: {e}"))?;
        let from: Mailbox = config.mail_from.parse().context("MAIL_FROM")?;
        let product = config.product_name.clone();
        // Every template, the directory's and the built-in ones, renders every kind of email
        // before a job is taken; a problem stops the start naming its file and line.
        let renderer = crate::templates::load(&product, config.template_dir.as_deref())
            .map_err(|problems| anyhow::anyhow!("email templates:\n{problems}"))?
            .renderer;
        let mailer = Mailer::new(
            &config.transport,
            config.smtp_timeout,
            config.concurrency,
            &config.tls,
        )?;
        let topology = config.topology();
        let listener = TcpListener::bind(config.http_bind)
            .await
            .with_context(|| format!("cannot bind WORKER_HTTP_BIND={}", config.http_bind))?;
        let config = Arc::new(config);
        let http = HttpState {
            db: db.clone(),
            redis: redis.clone(),
            consuming: Arc::new(AtomicBool::new(false)),
            metrics: metrics_handle(),
        };
        let processor = Processor {
            config: config.clone(),
            audit_log: crate::audit_log::AuditLog::start(db.clone()),
            db,
            redis,
            tokens,
            renderer,
            mailer,
            from,
            clock,
            recipient_budget: RecipientBudget::new(
                config.mail_per_recipient,
                config.mail_per_recipient_window,
            ),
            send_budget: SendBudget::new(
                config.smtp_max_per_second,
                config.smtp_domain_max_per_minute,
                config.smtp_throttle_pause,
            )
            .with_requester_share(config.smtp_requester_share_percent)
            .with_domain_window(config.smtp_domain_window),
        };
        Ok(Self {
            config,
            processor,
            topology,
            listener,
            http,
        })
    }

    /// The worker with `renderer` instead of the one of the embedded templates. For tests
    /// only: the embedded templates render every job, and a test of what becomes of a job
    /// that cannot be rendered needs a template that fails.
    pub fn with_renderer(mut self, renderer: Renderer) -> Self {
        self.processor.renderer = renderer;
        self
    }

    /// The HTTP port's address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The broker topology this worker consumes.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Consumes until `shutdown` resolves, then stops consuming, lets in-flight sends finish
    /// (up to `SHUTDOWN_TIMEOUT_SECS`) and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.http_addr()?;
        let destination = match &self.config.transport {
            Transport::Smtp { .. } => "smtp".to_owned(),
            Transport::File { dir } => format!("files in {}", dir.display()),
        };
        tracing::info!(%addr, queue = %self.topology.jobs_queue(), emails_to = destination, "mail-worker listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let processor = Arc::new(self.processor);
        let consumer = Consumer {
            broker: self.config.broker(),
            topology: self.topology.clone(),
            processor: processor.clone(),
            concurrency: self.config.concurrency,
            prefetch: self.config.prefetch,
            shutdown_timeout: self.config.shutdown_timeout,
            dead_letter_retention_days: self.config.dead_letter_retention_days,
            connected: self.http.consuming.clone(),
            take_jitter: self.config.take_jitter,
        };
        let consuming = tokio::spawn(consumer.run(stop_rx));
        let mut http_stop = stop_tx.subscribe();
        let server = axum::serve(self.listener, http::router(self.http.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            });
        let server = tokio::spawn(async move { server.await });
        shutdown.await;
        tracing::info!("shutting down: no new jobs, finishing in-flight sends");
        let _ = stop_tx.send(true);
        consuming.await.context("consumer task")?;
        let _ = server.await;
        processor.db.close().await;
        tracing::info!("mail-worker stopped");
        Ok(())
    }
}

/// The Prometheus handle, with the counters that exist from the start, at 0 (a dashboard
/// shows 0 rather than no data).
fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    let handle = shared::telemetry::prometheus();
    shared::telemetry::record_build_info(
        "mail-worker",
        env!("CARGO_PKG_VERSION"),
        build_info::COMMIT,
    );
    metrics::counter!("mail_suppressions_total").increment(0);
    metrics::counter!("mail_dead_letters_archived_total").increment(0);
    for class in crate::send_budget::DOMAIN_CLASSES {
        metrics::counter!("mail_smtp_throttled_total", "domain_class" => class).increment(0);
        for limit in crate::send_budget::Limit::ALL {
            metrics::counter!("mail_send_budget_waits_total",
                "limit" => limit.as_str(), "domain_class" => class)
            .increment(0);
        }
    }
    handle
}
