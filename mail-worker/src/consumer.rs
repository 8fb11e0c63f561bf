//! The AMQP side: consume `mail.jobs` with manual acks and a prefetch of `WORKER_PREFETCH`
//! and hand the jobs delivered together to the [`Handler`] as one batch; consume `mail.dead`
//! into the `dead_letters` table (see [`dlq`]); report the queues' depths. Each delivery is
//! settled only after its effect is done: the SMTP server accepted the email, the job was
//! dropped and audited, or it was re-published (confirmed) to a delay queue, a budget wait
//! queue or `mail.dead`. Reconnects by itself; stops consuming on shutdown and lets in-flight
//! sends finish.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use shared::{
    amqp::Broker,
    topology::{DEAD_QUEUE, JOBS_QUEUE, Topology},
};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{
    dlq,
    handler::{Handler, Held, Republisher},
    process::Processor,
};

/// How long to wait for the broker to confirm a re-published (or replayed) job.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The consuming loop of one worker process.
pub struct Consumer {
    pub broker: Broker,
    pub topology: Topology,
    pub processor: Arc<Processor>,
    /// SMTP sends in flight at most.
    pub concurrency: usize,
    /// Unacknowledged jobs at most (AMQP prefetch), also the largest batch decided together.
    pub prefetch: u16,
    pub shutdown_timeout: Duration,
    /// Dead letters older than this many days are deleted (`DEAD_LETTER_RETENTION_DAYS`).
    pub dead_letter_retention_days: u64,
    /// True while a consumer is attached to the queue (readiness).
    pub connected: Arc<AtomicBool>,
    /// The longest random wait before a batch is worked on (`WORKER_TAKE_JITTER_MS`).
    pub take_jitter: Duration,
}

impl Consumer {
    /// Consumes until `stop` turns true, reconnecting after any broker failure.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let in_flight = Arc::new(Semaphore::new(self.concurrency));
        let mut backoff = Duration::from_millis(200);
        while !*stop.borrow() {
            match self.session(&mut stop, &in_flight).await {
                Ok(()) => break,
                Err(e) => {
                    self.connected.store(false, Ordering::SeqCst);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "broker session ended; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.connected.store(false, Ordering::SeqCst);
        // Let in-flight sends finish (they ack on their own channel) within the bound.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.shutdown_timeout, in_flight.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown timeout reached with sends still in flight; they will be redelivered"
            );
        }
    }

    /// One broker session: attach the consumers, decide and settle what arrives until `stop`
    /// turns true (`Ok`) or the connection fails (`Err`), then let in-flight jobs finish.
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        in_flight: &Arc<Semaphore>,
    ) -> anyhow::Result<()> {
        let mut attached = self.attach().await?;
        let (ending, ending_rx) = watch::channel(false);
        let handler = Arc::new(Handler {
            processor: self.processor.clone(),
            publisher: attached.publisher.clone(),
            topology: self.topology.clone(),
            in_flight: in_flight.clone(),
            ending: ending_rx,
        });
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.jobs_queue(), prefetch = self.prefetch, "consuming");
        let mut tasks = JoinSet::new();
        let result = self
            .consume(&mut attached, &handler, stop, &mut tasks)
            .await;
        // Jobs waiting for a send slot do not start any more; in-flight jobs need this
        // connection to settle, so it stays open until they are done.
        ending.send_replace(true);
        let _ = tokio::time::timeout(self.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let _ = attached.connection.close(200, "bye".into()).await;
        result
    }

    /// Takes what arrives, spawning its work into `tasks`, until `stop` turns true (`Ok`: the
    /// consumers are cancelled, unacked prefetched jobs go back to the queue) or the
    /// connection fails (`Err`).
    async fn consume(
        &self,
        attached: &mut Attached,
        handler: &Arc<Handler>,
        stop: &mut watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let db = &self.processor.db;
        let mut expiry_tick = tokio::time::interval(Duration::from_secs(3600));
        let mut depth_tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = depth_tick.tick() => {
                    report_depth(&attached.channel, &self.topology).await;
                    tasks.spawn(dlq::report_count(db.clone()));
                }
                () = attached.publisher.broken.notified() => {
                    // An unconfirmed re-publish: this connection is not trusted any more (see
                    // `Republisher`); the next session connects anew, to the next node.
                    anyhow::bail!("a re-publish was not confirmed; reconnecting");
                }
                _ = stop.changed() => {
                    attached.cancel().await;
                    return Ok(());
                }
                _ = expiry_tick.tick() => {
                    tasks.spawn(dlq::expire_old(db.clone(), self.dead_letter_retention_days));
                }
                next = attached.dead_letters.next() => match next {
                    Some(Ok(delivery)) => {
                        tasks.spawn(dlq::archive(db.clone(), delivery));
                    }
                    Some(Err(e)) => return Err(anyhow::Error::new(e).context("dead-letter consumer failed")),
                    None => anyhow::bail!("the broker cancelled the dead-letter consumer"),
                },
                next = attached.deliveries.next() => {
                    let (batch, ended) = match next {
                        Some(Ok(delivery)) => self.batch(delivery, &mut attached.deliveries),
                        Some(Err(e)) => return Err(anyhow::Error::new(e).context("consumer failed")),
                        None => anyhow::bail!("the broker cancelled the consumer"),
                    };
                    let handler = handler.clone();
                    let jitter = take_delay(self.take_jitter);
                    tasks.spawn(async move {
                        // Work starts at a random moment after the jobs arrived: see
                        // `take_delay`.
                        if !jitter.is_zero() {
                            tokio::time::sleep(jitter).await;
                        }
                        handler.handle(batch).await;
                    });
                    while tasks.try_join_next().is_some() {}
                    if let Some(e) = ended {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Connects, declares the topology and attaches the consumers of the work queue (with a
    /// prefetch of `WORKER_PREFETCH`) and of the dead letters.
    async fn attach(&self) -> anyhow::Result<Attached> {
        let (connection, channel_for_publishing) = self
            .broker
            .connect_confirmed("mail-worker", &self.topology)
            .await?;
        let channel = connection.create_channel().await?;
        // Prefetch bounds the unacked jobs this process holds; a crash returns at most these.
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("mail-worker-{}", uuid::Uuid::new_v4().simple());
        let deliveries = channel
            .basic_consume(
                self.topology.jobs_queue().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Dead letters move into PostgreSQL (see `dlq`), where looking at them changes nothing.
        let dead_channel = connection.create_channel().await?;
        dead_channel
            .basic_qos(16, BasicQosOptions::default())
            .await?;
        let dead_tag = format!("{tag}-dead");
        let dead_letters = dead_channel
            .basic_consume(
                self.topology.dead_queue().into(),
                dead_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Attached {
            connection,
            channel,
            tag,
            deliveries,
            dead_channel,
            dead_tag,
            dead_letters,
            publisher: Republisher {
                channel: channel_for_publishing,
                broken: Arc::new(tokio::sync::Notify::new()),
            },
        })
    }

    /// `first` and every job already delivered after it (up to the prefetch): one batch, with
    /// one lookup and one audit statement for all of them. With the error that ended the
    /// consumer, if it ended while the batch was taken.
    fn batch(
        &self,
        first: Delivery,
        deliveries: &mut lapin::Consumer,
    ) -> (Vec<Held>, Option<anyhow::Error>) {
        let mut batch = vec![Held::new(first)];
        while batch.len() < usize::from(self.prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(Held::new(delivery)),
                Some(Some(Err(e))) => {
                    return (
                        batch,
                        Some(anyhow::Error::new(e).context("consumer failed")),
                    );
                }
                Some(None) => {
                    return (
                        batch,
                        Some(anyhow::anyhow!("the broker cancelled the consumer")),
                    );
                }
                None => break,
            }
        }
        (batch, None)
    }
}

/// How long a batch waits before it is worked on: uniform in `[0, jitter]`.
///
/// Where the api and a worker share a machine (the run command's default, small deployments),
/// the worker's work for a job competes with the api for the CPU: a reset email for a
/// registered address costs a lookup, a render and a send, a job for an unknown address a
/// lookup and an audit row. Done the instant the job arrives, that difference lands in the
/// api's answer to whatever request comes next, and an attacker who sends a forgot-password
/// request for a target and at once another one could time the second to learn whether the
/// target is registered. Started at a random moment within `jitter` instead, the work falls
/// on a later request only by chance, the same chance for every kind of job. The jobs held
/// meanwhile count against the prefetch like any other; throughput is unchanged.
pub fn take_delay(jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let max = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::random_range(0..=max))
}

/// What one broker session consumes and publishes on.
struct Attached {
    connection: lapin::Connection,
    /// The work queue's channel and consumer.
    channel: Channel,
    tag: String,
    deliveries: lapin::Consumer,
    /// The dead letters' channel and consumer.
    dead_channel: Channel,
    dead_tag: String,
    dead_letters: lapin::Consumer,
    /// Where retries and dead letters are re-published (with confirms).
    publisher: Republisher,
}

impl Attached {
    /// Stops taking new jobs and dead letters.
    async fn cancel(&self) {
        let options = BasicCancelOptions::default();
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), options)
            .await;
        let _ = (self.dead_channel)
            .basic_cancel(self.dead_tag.as_str().into(), options)
            .await;
    }
}

/// Publishes the depth of the work and dead-letter queues as gauges (what autoscalers and
/// alerts look at: a growing `mail.jobs` means too few workers, a growing `mail.dead` means
/// mail that will never go out without an operator).
async fn report_depth(channel: &Channel, topology: &Topology) {
    for (label, queue) in [
        (JOBS_QUEUE, topology.jobs_queue()),
        (DEAD_QUEUE, topology.dead_queue()),
    ] {
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Ok(q) = declared {
            metrics::gauge!("mail_queue_depth", "queue" => label).set(f64::from(q.message_count()));
            if label == JOBS_QUEUE && q.message_count() == 0 {
                // Nothing waiting: no job is old.
                metrics::gauge!("mail_oldest_job_age_seconds").set(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_a_uniform_random_time_up_to_the_jitter() {
        assert_eq!(take_delay(Duration::ZERO), Duration::ZERO);
        let jitter = Duration::from_millis(20);
        let waits: Vec<Duration> = (0..1000).map(|_| take_delay(jitter)).collect();
        assert!(waits.iter().all(|w| *w <= jitter));
        let early = waits.iter().filter(|w| **w < jitter / 2).count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 in the first half"
        );
    }
}
