//! The physical limits the product's figures are divided by, each a minimal program doing
//! only the expensive part of the work against the same services: confirmed publishes to
//! RabbitMQ (lapin), argon2id hashes, and SMTP sends with lettre.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lapin::{
    BasicProperties, Connection,
    options::QueuePurgeOptions,
    types::{AMQPValue, FieldTable, LongString},
};
use shared::{
    message::{Envelope, Job, Trace},
    topology::Topology,
};

use crate::load::LoadResult;

/// A publisher doing only what the api's publish does: one connection, one confirm channel
/// shared by all tasks, persistent `mandatory` messages of the same size and properties to a
/// quorum queue declared by `shared::topology` (its own namespace, deleted at the end).
pub(crate) struct RawPublisher {
    connection: Connection,
    channel: lapin::Channel,
    topology: Topology,
}

impl RawPublisher {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let topology =
            Topology::new(format!("bench-raw-{}.", e2e::unique_id()), &[1]).expiring(120_000);
        let broker = shared::amqp::Broker::new(vec![e2e::amqp_url()], Default::default());
        let (connection, channel) = broker.connect_confirmed("bench-raw", &topology).await?;
        Ok(Self {
            connection,
            channel,
            topology,
        })
    }

    /// A consumer on the raw queue that acks every message at once (prefetch `prefetch`):
    /// the cheapest possible worker, for the raw pipeline.
    pub(crate) async fn drain_continuously(
        &self,
        prefetch: u16,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        use futures_util::StreamExt as _;
        use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                self.topology.jobs_queue().into(),
                "bench-raw-consumer".into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        Ok(tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        }))
    }

    /// `tasks` tasks publish back to back, each waiting for its confirm, for `duration`.
    pub(crate) async fn run(&self, tasks: usize, duration: Duration) -> anyhow::Result<LoadResult> {
        self.publish_loop(tasks, duration, None).await
    }

    /// Open loop: `rate` publishes per second spread over `tasks` tasks for `duration` (the
    /// same schedule as [`crate::load::open_loop`]).
    pub(crate) async fn run_at(
        &self,
        tasks: usize,
        rate: f64,
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        self.publish_loop(tasks, duration, Some(rate)).await
    }

    async fn publish_loop(
        &self,
        tasks: usize,
        duration: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<LoadResult> {
        let errors = Arc::new(AtomicU64::new(0));
        let late = Arc::new(AtomicU64::new(0));
        let started = Instant::now() + Duration::from_millis(20);
        let deadline = started + duration;
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
        let mut handles = Vec::with_capacity(tasks);
        for t in 0..tasks {
            let channel = self.channel.clone();
            let exchange = self.topology.mail_exchange();
            let (errors, late) = (errors.clone(), late.clone());
            handles.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                loop {
                    if let Some(interval) = interval {
                        let planned =
                            started + interval.mul_f64((n * tasks as u64 + t as u64) as f64);
                        if planned >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(planned.into()).await;
                        if Instant::now().duration_since(planned) > Duration::from_millis(5) {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if Instant::now() >= deadline {
                        break;
                    }
                    n += 1;
                    let (body, properties) = job(&format!("u{t}-{n}@example.org"));
                    let sent = Instant::now();
                    let confirmed = shared::amqp::publish_confirmed(
                        &channel,
                        &exchange,
                        shared::topology::JOBS_ROUTING_KEY,
                        &body,
                        properties,
                        true,
                        Duration::from_secs(10),
                    )
                    .await;
                    match confirmed {
                        Ok(()) => latencies.push(sent.elapsed()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            }));
        }
        LoadResult::gather(
            handles,
            started,
            errors.load(Ordering::Relaxed),
            late.load(Ordering::Relaxed),
        )
        .await
    }

    /// Empties the work queue (so every phase starts from the same queue length).
    pub(crate) async fn purge(&self) -> anyhow::Result<()> {
        self.channel
            .queue_purge(
                self.topology.jobs_queue().into(),
                QueuePurgeOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// Empties another topology's work queue through this connection.
    /// Messages ready in `queue`.
    pub(crate) async fn depth(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self
            .channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?
            .message_count())
    }

    pub(crate) async fn purge_queue(&self, queue: &str) -> anyhow::Result<()> {
        self.channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await?;
        Ok(())
    }

    pub(crate) async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
        e2e::delete_topology_blocking(&self.topology);
    }
}

/// A forgot-password job with the properties the api sets.
fn job(email: &str) -> (Vec<u8>, BasicProperties) {
    let envelope = Envelope::new(
        Job::PasswordResetRequested {
            email: email.to_owned(),
            ip: Some("127.0.0.1".into()),
            within_budget: true,
            user_id: None,
        },
        chrono::Utc::now(),
        chrono::Duration::hours(1),
        "en",
        Trace {
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            traceparent: None,
        },
    );
    let mut headers = FieldTable::default();
    if let Some(id) = &envelope.trace.request_id {
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(LongString::from(id.as_str())),
        );
    }
    let properties = BasicProperties::default()
        .with_message_id(envelope.id.to_string().into())
        .with_type(envelope.job.kind().into())
        .with_timestamp(envelope.created_at.timestamp().max(0) as u64)
        .with_headers(headers)
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    (envelope.encode(), properties)
}

/// argon2id hashes per second with the given cost on `threads` blocking threads (all cores).
pub(crate) async fn argon2_rate(
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let params = Params::new(memory_kib, iterations, parallelism, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let params = params.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let password = format!("correct-horse-{t}-{n}-battery-staple");
                argon
                    .hash_password(password.as_bytes())
                    .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// One email as it went over the wire: SMTP envelope and message bytes.
pub(crate) struct Mail {
    pub envelope: lettre::address::Envelope,
    pub bytes: Vec<u8>,
}

/// The emails the sink stored, without the sink's own `X-Sink-*` lines: exactly what the
/// worker sent, to be sent again by the raw loops.
pub(crate) fn replayable(emails: &[e2e::stack::StoredEmail]) -> anyhow::Result<Vec<Mail>> {
    emails
        .iter()
        .map(|e| {
            let from = e.header("X-Sink-Mail-From").context("no sender")?;
            let to = e.rcpt_to();
            let envelope = lettre::address::Envelope::new(
                Some(from.trim().parse()?),
                vec![to.trim().parse()?],
            )?;
            let mut rest = &e.raw[..];
            while rest.starts_with(b"X-Sink-") {
                let end = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .context("unterminated sink header")?;
                rest = &rest[end + 2..];
            }
            Ok(Mail {
                envelope,
                bytes: rest.to_vec(),
            })
        })
        .collect()
}

/// Sends `mails` over `concurrency` persistent SMTP connections on TCP streams with
/// `TCP_NODELAY` (what a client without the delayed-ACK stall achieves).
pub(crate) async fn nodelay_connections(
    port: u16,
    concurrency: usize,
    mails: Arc<Vec<Mail>>,
) -> anyhow::Result<()> {
    use lettre::transport::smtp::{client::AsyncSmtpConnection, extension::ClientId};
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (mails, next) = (mails.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default())
                    .await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(mail) = mails.get(i) else { break };
                connection.send(&mail.envelope, &mail.bytes).await?;
            }
            let _ = connection.quit().await;
            Ok::<(), anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

/// Sends `mails` through lettre's stock pooled `AsyncSmtpTransport`, configured as the
/// worker configures it, from `concurrency` tasks.
pub(crate) async fn stock_pool(
    url: &str,
    concurrency: usize,
    mails: Arc<Vec<Mail>>,
) -> anyhow::Result<()> {
    use lettre::{
        AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor, transport::smtp::PoolConfig,
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
        .timeout(Some(Duration::from_secs(30)))
        .pool_config(
            PoolConfig::new()
                .max_size(concurrency as u32)
                .idle_timeout(Duration::from_secs(60)),
        )
        .build();
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (mails, next, transport) = (mails.clone(), next.clone(), transport.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(mail) = mails.get(i) else { break };
                transport.send_raw(&mail.envelope, &mail.bytes).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}
