//! Publishing to RabbitMQ with publisher confirms, reconnecting by itself.
//!
//! A forgot-password request only gets its 2xx after the broker confirmed its job (it is then
//! on disk in a quorum queue); sign-up and reset answer on their commit, and the outbox relay
//! publishes through here. An unroutable message (`mandatory`), a nack, a lost connection or a
//! confirm slower than `PUBLISH_TIMEOUT_MS` is an error: a 503 for a request, a later retry
//! for the relay.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties, Channel, Connection,
    types::{AMQPValue, FieldTable, LongString},
};
use shared::{
    amqp::{Broker, PublishError},
    message::Envelope,
    topology::Topology,
};
use tokio::sync::{Mutex, RwLock};

use crate::error::ApiError;

/// Minimum pause between two failed reconnection attempts, so an outage is not a storm.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

struct Link {
    connection: Connection,
    channel: Channel,
}

struct Inner {
    broker: Broker,
    topology: Topology,
    confirm_timeout: Duration,
    link: RwLock<Option<Link>>,
    /// Held while (re)connecting; remembers when the last attempt failed.
    reconnecting: Mutex<Option<Instant>>,
}

/// A cloneable publisher shared by all requests (one AMQP channel; confirms are matched to
/// publishes by the channel, so concurrent publishes are safe and pipelined).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// Creates the publisher and tries to connect once. A broker that is down at start is not
    /// fatal: requests get 503 and the keeper task connects when the broker is back.
    pub async fn start(broker: Broker, topology: Topology, confirm_timeout: Duration) -> Self {
        let publisher = Self {
            inner: Arc::new(Inner {
                broker,
                topology,
                confirm_timeout,
                link: RwLock::new(None),
                reconnecting: Mutex::new(None),
            }),
        };
        if let Err(e) = publisher.channel().await {
            tracing::warn!(error = %format!("{e:#}"), "RabbitMQ unreachable at start; will keep trying");
        }
        let keeper = publisher.clone();
        tokio::spawn(async move {
            // Reconnect in the background too, so readiness recovers without traffic.
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if Arc::strong_count(&keeper.inner) == 1 {
                    break; // the application is gone
                }
                if !keeper.is_connected().await {
                    let _ = keeper.channel().await;
                }
            }
        });
        publisher
    }

    /// The topology this publisher declared.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Whether a usable channel is open (readiness).
    pub async fn is_connected(&self) -> bool {
        self.inner
            .link
            .read()
            .await
            .as_ref()
            .is_some_and(Link::usable)
    }

    /// Publishes a mail job and waits for the broker's confirm, in a producer span that
    /// continues the job's trace (the request's, also when the outbox relays the job later).
    pub async fn publish_job(&self, envelope: &Envelope) -> Result<(), ApiError> {
        use tracing::Instrument as _;
        let exchange = self.inner.topology.mail_exchange();
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {exchange}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = %exchange,
            messaging.rabbitmq.destination.routing_key = shared::topology::JOBS_ROUTING_KEY,
            messaging.message.id = %envelope.id,
            job.kind = envelope.job.kind(),
        );
        shared::otel::continue_trace(&span, envelope.trace.traceparent.as_deref());
        let result = self
            .publish_job_in(envelope, exchange, shared::otel::traceparent(&span))
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// See [`Self::publish_job`]; `traceparent` is the producer span's, when exported.
    async fn publish_job_in(
        &self,
        envelope: &Envelope,
        exchange: String,
        traceparent: Option<String>,
    ) -> Result<(), ApiError> {
        let mut headers = FieldTable::default();
        if let Some(id) = &envelope.trace.request_id {
            headers.insert(
                "x-request-id".into(),
                AMQPValue::LongString(LongString::from(id.as_str())),
            );
        }
        if let Some(tp) = traceparent.as_ref().or(envelope.trace.traceparent.as_ref()) {
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(LongString::from(tp.as_str())),
            );
        }
        let properties = BasicProperties::default()
            .with_message_id(envelope.id.to_string().into())
            .with_type(envelope.job.kind().into())
            .with_timestamp(envelope.created_at.timestamp().max(0) as u64)
            .with_headers(headers);
        let started = Instant::now();
        let result = self
            .publish(
                exchange,
                shared::topology::JOBS_ROUTING_KEY,
                &envelope.encode(),
                properties,
                true,
            )
            .await;
        metrics::histogram!("publish_duration_seconds", "kind" => envelope.job.kind())
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("publish_failures_total", "kind" => envelope.job.kind()).increment(1);
        }
        result
    }

    /// Publishes a domain event (JSON `body`, id `message_id`: the same on a repeat) to the
    /// `events` topic exchange. Not `mandatory`: an event nobody subscribed to yet is not an
    /// error.
    pub async fn publish_event_bytes(
        &self,
        routing_key: &str,
        message_id: uuid::Uuid,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let properties = BasicProperties::default()
            .with_message_id(message_id.to_string().into())
            .with_type(routing_key.into());
        self.publish(
            self.inner.topology.events_exchange(),
            routing_key,
            body,
            properties,
            false,
        )
        .await
    }

    async fn publish(
        &self,
        exchange: String,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), ApiError> {
        let channel = self.channel().await?;
        let properties = properties.with_content_type("application/json".into());
        let published = shared::amqp::publish_confirmed(
            &channel,
            &exchange,
            routing_key,
            body,
            properties,
            mandatory,
            self.inner.confirm_timeout,
        )
        .await;
        match published {
            Ok(()) => Ok(()),
            Err(e) => {
                if e.distrusts_channel() {
                    // The next publish opens a new connection (to the next node).
                    self.discard(&channel).await;
                }
                Err(match e {
                    PublishError::NotConfirming => ApiError::Internal(e.into()),
                    e => ApiError::unavailable(e),
                })
            }
        }
    }

    /// The longest one publish may take: connecting (every node in turn) and the confirm.
    pub fn publish_limit(&self) -> Duration {
        self.inner.broker.connect_limit() + self.inner.confirm_timeout
    }

    /// Drops the link of `channel` if it is still the current one (its connection is closed
    /// in the background).
    async fn discard(&self, channel: &Channel) {
        let mut link = self.inner.link.write().await;
        if link
            .as_ref()
            .is_some_and(|l| l.channel.id() == channel.id())
            && let Some(old) = link.take()
        {
            tokio::spawn(async move {
                let _ = old.connection.close(200, "publishes refused".into()).await;
            });
        }
    }

    /// A usable channel, reconnecting when the current one is gone.
    async fn channel(&self) -> Result<Channel, ApiError> {
        if let Some(link) = self.inner.link.read().await.as_ref()
            && link.usable()
        {
            return Ok(link.channel.clone());
        }
        // One task reconnects; the others fail fast instead of queueing behind it.
        let Ok(mut last_failure) = self.inner.reconnecting.try_lock() else {
            return Err(ApiError::unavailable(anyhow::anyhow!(
                "reconnecting to RabbitMQ"
            )));
        };
        if let Some(link) = self.inner.link.read().await.as_ref()
            && link.usable()
        {
            return Ok(link.channel.clone());
        }
        if last_failure.is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF) {
            return Err(ApiError::unavailable(anyhow::anyhow!(
                "RabbitMQ unreachable"
            )));
        }
        let limit = self.inner.broker.connect_limit();
        match tokio::time::timeout(limit, self.connect()).await {
            Ok(Ok(link)) => {
                let channel = link.channel.clone();
                let old = self.inner.link.write().await.replace(link);
                if let Some(old) = old {
                    let _ = old.connection.close(200, "replaced".into()).await;
                }
                *last_failure = None;
                tracing::info!("connected to RabbitMQ");
                Ok(channel)
            }
            Ok(Err(e)) => {
                *last_failure = Some(Instant::now());
                Err(ApiError::unavailable(
                    e.context("cannot connect to RabbitMQ"),
                ))
            }
            Err(_) => {
                *last_failure = Some(Instant::now());
                Err(ApiError::unavailable(anyhow::anyhow!(
                    "connecting to RabbitMQ timed out"
                )))
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Link> {
        let (connection, channel) = self
            .inner
            .broker
            .connect_confirmed("api", &self.inner.topology)
            .await?;
        Ok(Link {
            connection,
            channel,
        })
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        if let Some(link) = self.inner.link.write().await.take() {
            let _ = link.connection.close(200, "shutting down".into()).await;
        }
    }
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}
