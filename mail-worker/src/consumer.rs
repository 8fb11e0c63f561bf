//! The AMQP side: consume `mail.jobs` with manual acks and a prefetch of `WORKER_PREFETCH`,
//! decide the jobs delivered together as one batch (one lookup; the ones that send nothing
//! audited with one statement and acked at once), send up to `WORKER_CONCURRENCY` of the
//! others at a time, and settle each delivery only after its effect is done: the SMTP server
//! accepted the email, the job was dropped and audited, or it was re-published (confirmed) to
//! a delay queue or to `mail.dead`. Reconnects by itself; stops consuming on shutdown and lets
//! in-flight sends finish.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use shared::{
    amqp::Broker,
    audit,
    message::Envelope,
    topology::{DEAD_QUEUE, DEAD_ROUTING_KEY, JOBS_QUEUE, Topology},
};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use crate::{
    process::{Outcome, Plan, Processor},
    retry,
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
        let Attached {
            connection,
            channel,
            tag,
            mut deliveries,
            dead_channel,
            dead_tag,
            mut dead_letters,
            publisher,
        } = self.attach().await?;
        let (ending, ending_rx) = watch::channel(false);
        let settling = Arc::new(Settling {
            processor: self.processor.clone(),
            publisher: publisher.clone(),
            topology: self.topology.clone(),
            in_flight: in_flight.clone(),
            ending: ending_rx,
        });
        let mut expiry_tick = tokio::time::interval(Duration::from_secs(3600));
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(queue = %self.topology.jobs_queue(), prefetch = self.prefetch, "consuming");
        let mut tasks = tokio::task::JoinSet::new();
        let mut depth_tick = tokio::time::interval(Duration::from_secs(10));
        let result = loop {
            tokio::select! {
                _ = depth_tick.tick() => {
                    report_depth(&channel, &self.topology).await;
                    let db = self.processor.db.clone();
                    tasks.spawn(async move {
                        if let Ok(n) = crate::dlq::count(&db).await {
                            metrics::gauge!("mail_dead_letters").set(n as f64);
                        }
                    });
                }
                () = publisher.broken.notified() => {
                    // An unconfirmed re-publish: this connection is not trusted any more (see
                    // `Republisher`); the next session connects anew, to the next node.
                    break Err(anyhow::anyhow!("a re-publish was not confirmed; reconnecting"));
                }
                _ = stop.changed() => {
                    // Stop taking new jobs; unacked prefetched ones go back to the queue.
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    let _ = dead_channel.basic_cancel(dead_tag.as_str().into(), BasicCancelOptions::default()).await;
                    break Ok(());
                }
                _ = expiry_tick.tick() => {
                    tasks.spawn(expire_dead_letters(self.processor.db.clone(), self.dead_letter_retention_days));
                }
                next = dead_letters.next() => match next {
                    Some(Ok(delivery)) => {
                        let db = self.processor.db.clone();
                        tasks.spawn(async move { archive(&db, delivery).await });
                    }
                    Some(Err(e)) => break Err(anyhow::Error::new(e).context("dead-letter consumer failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the dead-letter consumer")),
                },
                next = deliveries.next() => {
                    let (batch, ended) = match next {
                        Some(Ok(delivery)) => self.batch(delivery, &mut deliveries),
                        Some(Err(e)) => break Err(anyhow::Error::new(e).context("consumer failed")),
                        None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                    };
                    let settling = settling.clone();
                    let jitter = take_delay(self.take_jitter);
                    tasks.spawn(async move {
                        // Work starts at a random moment after the jobs arrived: see
                        // `take_delay`.
                        if !jitter.is_zero() {
                            tokio::time::sleep(jitter).await;
                        }
                        settling.handle(batch).await
                    });
                    while tasks.try_join_next().is_some() {}
                    if let Some(e) = ended {
                        break Err(e);
                    }
                }
            }
        };
        // Jobs waiting for a send slot do not start any more; in-flight jobs need this
        // connection to settle, so it stays open until they are done.
        ending.send_replace(true);
        let _ = tokio::time::timeout(self.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let _ = connection.close(200, "bye".into()).await;
        result
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

/// Deletes the dead letters older than `days` (`DEAD_LETTER_RETENTION_DAYS`).
async fn expire_dead_letters(db: sqlx::PgPool, days: u64) {
    match crate::dlq::expire(&db, days).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, days, "expired dead letters deleted"),
        Err(e) => tracing::warn!(error = %e, "could not delete expired dead letters"),
    }
}

/// Moves one delivery of `mail.dead` into the `dead_letters` table. With PostgreSQL down it
/// stays unacked (held here, retried with backoff) rather than going back to the queue: a
/// return would count as a delivery, and a quorum queue with a delivery limit (RabbitMQ 4.x
/// has one by default) drops a message returned too often. If the connection ends first, the
/// broker keeps the message.
async fn archive(db: &sqlx::PgPool, delivery: Delivery) {
    let mut pause = Duration::from_millis(500);
    loop {
        match crate::dlq::archive(db, &delivery).await {
            Ok(()) => {
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "ack failed; the dead letter will be stored again");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64,
                    "could not store a dead letter; it stays in the queue until stored");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
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

/// What deciding and settling the jobs of one broker session needs (shared by its batches).
struct Settling {
    processor: Arc<Processor>,
    publisher: Republisher,
    topology: Topology,
    /// One permit per SMTP send in flight.
    in_flight: Arc<Semaphore>,
    /// Turns true when the session ends (shutdown, or a broker failure): jobs not yet
    /// started are left unacknowledged (the broker gives them to another worker when this
    /// connection closes).
    ending: watch::Receiver<bool>,
}

/// `mail_jobs_held`: the deliveries this process holds (received, not yet settled or given
/// back), what "the worker is idle" means beside an empty queue.
static HELD: std::sync::LazyLock<metrics::Gauge> =
    std::sync::LazyLock::new(|| metrics::gauge!("mail_jobs_held"));

/// A delivery this process holds; counted in `mail_jobs_held` until dropped (after its
/// settlement, or when its session ends and the broker takes it back).
struct Held(Delivery);

impl Held {
    fn new(delivery: Delivery) -> Self {
        HELD.increment(1.0);
        Self(delivery)
    }
}

impl std::ops::Deref for Held {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.decrement(1.0);
    }
}

/// A delivery with its decoded job.
struct Job {
    delivery: Held,
    envelope: Envelope,
}

impl Settling {
    /// Decides the deliveries together and settles each: the jobs that send nothing are
    /// audited with one statement and acknowledged at once; the others send, `concurrency`
    /// at most at a time, and are settled one by one.
    async fn handle(&self, deliveries: Vec<Held>) {
        let mut jobs = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match Envelope::decode(&delivery.data) {
                Ok(envelope) => jobs.push(Job { delivery, envelope }),
                Err(e) => self.undecodable(delivery, &e.to_string()).await,
            }
        }
        let Some(first) = jobs.first() else {
            return;
        };
        // The work queue is FIFO: the first job of a batch is the oldest one that was waiting.
        let waited = (self.processor.clock.now() - first.envelope.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        metrics::gauge!("mail_oldest_job_age_seconds").set(waited);
        let envelopes: Vec<&Envelope> = jobs.iter().map(|j| &j.envelope).collect();
        let plans = self.processor.plan(&envelopes).await;
        let mut dropped = Vec::new();
        let mut others = Vec::new();
        for (job, plan) in jobs.into_iter().zip(plans) {
            match plan {
                Ok(Plan::Drop { reason, user }) => dropped.push((job, reason, user)),
                Ok(plan) => others.push((job, Ok(plan))),
                Err(wait) => others.push((job, Err(wait))),
            }
        }
        let send_all = futures_util::future::join_all(
            others.into_iter().map(|(job, plan)| self.send(job, plan)),
        );
        tokio::join!(self.drop_all(&dropped), send_all);
    }

    /// Settles the jobs of a batch that send nothing: their audit rows with one statement,
    /// then each acked (all at once).
    async fn drop_all(&self, dropped: &[(Job, audit::Outcome, Option<uuid::Uuid>)]) {
        if dropped.is_empty() {
            return;
        }
        // A redelivered job may have been sent before its ack was lost: then it is a repeat
        // (no audit row), not a new decision about an account that changed since.
        let repeats = if dropped.iter().any(|(job, ..)| job.delivery.redelivered) {
            futures_util::future::join_all(dropped.iter().map(|(job, ..)| async {
                job.delivery.redelivered
                    && self
                        .processor
                        .already_sent(job.envelope.id)
                        .await
                        .unwrap_or(false)
            }))
            .await
        } else {
            vec![false; dropped.len()]
        };
        let rows = dropped
            .iter()
            .zip(&repeats)
            .filter(|(_, repeat)| !**repeat)
            .map(|((job, reason, user), _)| {
                self.processor.audit_row(&job.envelope, *reason, *user)
            });
        self.processor.audit_log.record(rows).await;
        for ((job, reason, _), repeat) in dropped.iter().zip(&repeats) {
            let envelope = &job.envelope;
            let outcome = if *repeat {
                audit::Outcome::Duplicate
            } else {
                *reason
            }
            .as_str();
            tracing::info!(job_id = %envelope.id, kind = envelope.job.kind(),
                attempt = envelope.attempt,
                request_id = envelope.trace.request_id.as_deref().unwrap_or(""),
                outcome, "job done");
            metrics::counter!("jobs_total", "kind" => envelope.job.kind(), "outcome" => outcome)
                .increment(1);
        }
        // Acked each on its own, all at once (a `multiple` ack, tried, cost the broker more:
        // it can only be sent once every earlier delivery is settled).
        futures_util::future::join_all(dropped.iter().map(|(job, ..)| ack(&job.delivery))).await;
    }

    /// Carries out one job's plan (or its wait) and settles it.
    async fn send(&self, job: Job, plan: Result<Plan, String>) {
        let Job { delivery, envelope } = job;
        let span = tracing::info_span!("job", job_id = %envelope.id, kind = envelope.job.kind(), attempt = envelope.attempt,
            request_id = envelope.trace.request_id.as_deref().unwrap_or(""),
            traceparent = envelope.trace.traceparent.as_deref().unwrap_or(""));
        let plan = match plan {
            Ok(plan) => plan,
            Err(wait) => {
                return self
                    .settle(&span, &delivery, &envelope, Outcome::Wait(wait))
                    .await;
            }
        };
        // A send slot; given back as soon as the SMTP server answered, so recording the
        // delivery and settling it do not hold a connection's turn.
        let (permit, plan) = match self.in_flight.try_acquire() {
            Ok(permit) => (permit, plan),
            Err(_) => {
                let mut ending = self.ending.clone();
                let permit = tokio::select! {
                    biased;
                    _ = ending.wait_for(|ending| *ending) => return,
                    permit = self.in_flight.acquire() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                // Waiting may have taken several sends' time: decide again on what the
                // account is now (a newer password, a verified address, a stale job).
                match self.processor.plan(&[&envelope]).await.pop() {
                    Some(Ok(plan)) => (permit, plan),
                    Some(Err(wait)) => {
                        drop(permit);
                        return self
                            .settle(&span, &delivery, &envelope, Outcome::Wait(wait))
                            .await;
                    }
                    None => return,
                }
            }
        };
        let user = match &plan {
            Plan::Send { user, .. } | Plan::Drop { user, .. } => *user,
        };
        let outcome = self
            .processor
            .deliver(&envelope, plan)
            .instrument(span.clone())
            .await;
        drop(permit);
        if outcome == Outcome::Sent {
            self.processor.record_sent(&envelope, user).await;
        }
        self.settle(&span, &delivery, &envelope, outcome).await;
    }

    /// Never crash, never loop: an undecodable job goes to the dead letters as is.
    async fn undecodable(&self, delivery: Held, error: &str) {
        tracing::error!(
            error,
            bytes = delivery.data.len(),
            "undecodable job; dead-lettering"
        );
        metrics::counter!("jobs_total", "kind" => "undecodable", "outcome" => audit::Outcome::Dead.as_str()).increment(1);
        let reason = format!("undecodable: {error}");
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        self.dead_letter(&delivery, headers, &reason, true).await;
    }

    /// Settles one delivery after its job's outcome: ack, or re-publish to a delay queue or
    /// the dead letters first.
    async fn settle(
        &self,
        span: &tracing::Span,
        delivery: &Delivery,
        envelope: &Envelope,
        outcome: Outcome,
    ) {
        let processor = &self.processor;
        let kind = envelope.job.kind();
        match &outcome {
            Outcome::Sent | Outcome::Dropped(_) => {
                tracing::info!(parent: span, outcome = outcome.label(), "job done");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => outcome.label())
                    .increment(1);
                ack(delivery).await;
            }
            Outcome::Retry(error) => self.retry(span, delivery, envelope, error).await,
            Outcome::Budget(budget) => {
                let waits =
                    retry::budget_waits(delivery.properties.headers().as_ref()).saturating_add(1);
                tracing::debug!(parent: span, limit = budget.limit.as_str(), domain_class = budget.domain_class,
                    wait_ms = budget.wait.as_millis() as u64, waits, "over a send budget; the job waits for its turn");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => outcome.label())
                    .increment(1);
                metrics::counter!("mail_send_budget_waits_total",
                    "limit" => budget.limit.as_str(), "domain_class" => budget.domain_class)
                .increment(1);
                // The attempt and `x-waits` stay as they are: waiting for a turn is neither a
                // failure nor an outage. The history gets a line only for the provider's
                // throttling answer (a burst would otherwise add hundreds of lines to a job).
                let mut headers = match &budget.answer {
                    Some(answer) => retry::with_history(
                        delivery.properties.headers().as_ref(),
                        envelope.attempt,
                        processor.clock.now(),
                        &format!("throttled: {answer}"),
                    ),
                    None => delivery.properties.headers().clone().unwrap_or_default(),
                };
                headers.insert(
                    retry::BUDGET_WAITS_HEADER.into(),
                    AMQPValue::LongUInt(waits),
                );
                self.park(delivery, budget.wait, headers).await;
            }
            Outcome::Wait(error) => {
                let wait = retry::waits(delivery.properties.headers().as_ref()).saturating_add(1);
                let delay = retry::wait_delay(&processor.config.retry_schedule_secs, wait);
                tracing::warn!(parent: span, error, wait, delay_secs = delay, "a dependency is unavailable; the job waits");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => "waiting")
                    .increment(1);
                let mut headers = retry::with_history(
                    delivery.properties.headers().as_ref(),
                    envelope.attempt,
                    processor.clock.now(),
                    &format!("waiting: {error}"),
                );
                headers.insert(retry::WAITS_HEADER.into(), AMQPValue::LongUInt(wait));
                self.later(delivery, envelope, delay, headers).await;
            }
            Outcome::Dead(reason) => {
                tracing::error!(parent: span, reason, "permanent failure; dead-lettering");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => audit::Outcome::Dead.as_str()).increment(1);
                let headers = retry::with_history(
                    delivery.properties.headers().as_ref(),
                    envelope.attempt + 1,
                    processor.clock.now(),
                    reason,
                );
                self.dead_letter(delivery, headers, reason, false).await;
            }
        }
    }

    /// Parks a job whose delivery failed in a way that may pass in the delay queue of its
    /// next attempt, or dead-letters it when the schedule is spent.
    async fn retry(
        &self,
        span: &tracing::Span,
        delivery: &Delivery,
        envelope: &Envelope,
        error: &str,
    ) {
        let processor = &self.processor;
        let kind = envelope.job.kind();
        let attempt = envelope.attempt + 1;
        let headers = retry::with_history(
            delivery.properties.headers().as_ref(),
            attempt,
            processor.clock.now(),
            error,
        );
        match retry::delay_for(&processor.config.retry_schedule_secs, attempt) {
            Some(delay) => {
                tracing::warn!(parent: span, error, delay_secs = delay, "delivery failed; will retry");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => "retried")
                    .increment(1);
                let mut next = envelope.clone();
                next.attempt = attempt;
                self.later(delivery, &next, delay, headers).await;
            }
            None => {
                let reason =
                    format!("retries exhausted after {attempt} attempts; last error: {error}");
                tracing::error!(parent: span, reason, "dead-lettering");
                metrics::counter!("jobs_total", "kind" => kind, "outcome" => audit::Outcome::Dead.as_str()).increment(1);
                processor.audit(envelope, audit::Outcome::Dead, None).await;
                self.dead_letter(delivery, headers, &reason, false).await;
            }
        }
    }

    /// Parks `next` in the delay queue of `delay` seconds (jittered), then settles the
    /// delivery.
    async fn later(&self, delivery: &Delivery, next: &Envelope, delay: u64, headers: FieldTable) {
        let properties = delivery
            .properties
            .clone()
            .with_expiration(retry::jittered_expiration_ms(delay).to_string().into());
        let ok = self
            .publish(
                &Topology::retry_routing_key(delay),
                &next.encode(),
                &properties,
                headers,
            )
            .await;
        self.settle_published(delivery, ok, false).await;
    }

    /// Parks the job as it is (same body, same attempt) in the waiting queue of the longest
    /// step not longer than `wait` (see [`shared::topology::BUDGET_WAIT_STEPS_MS`]), then
    /// settles the delivery. Its expiry is the queue's own, so the queue stays in order.
    async fn park(&self, delivery: &Delivery, wait: Duration, headers: FieldTable) {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let step = Topology::budget_wait_step(wait_ms);
        let properties = delivery
            .properties
            .clone()
            .with_expiration(step.to_string().into());
        let ok = self
            .publish(
                &Topology::budget_wait_routing_key(step),
                &delivery.data,
                &properties,
                headers,
            )
            .await;
        self.settle_published(delivery, ok, false).await;
    }

    /// Moves the delivery's original body to `mail.dead` with the reason and time added to
    /// `headers`, then settles the delivery.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        mut headers: FieldTable,
        reason: &str,
        undecodable: bool,
    ) {
        let reason: String = reason.chars().take(1000).collect();
        headers.insert(
            retry::DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            retry::DEAD_AT_HEADER.into(),
            AMQPValue::LongString(LongString::from(self.processor.clock.now().to_rfc3339())),
        );
        let ok = self
            .publish(
                DEAD_ROUTING_KEY,
                &delivery.data,
                &delivery.properties,
                headers,
            )
            .await;
        self.settle_published(delivery, ok, undecodable).await;
    }

    /// Publishes to the mail exchange and waits for the confirm. `true` when the broker has
    /// it.
    async fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: &BasicProperties,
        headers: FieldTable,
    ) -> bool {
        let result = shared::amqp::publish_confirmed(
            &self.publisher.channel,
            &self.topology.mail_exchange(),
            routing_key,
            body,
            properties.clone().with_headers(headers),
            true,
            CONFIRM_TIMEOUT,
        )
        .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(routing_key, error = %e, "re-publish not confirmed");
                self.publisher.broken.notify_one();
                false
            }
        }
    }

    /// Acks once the re-publish is confirmed. Otherwise the job goes back to the queue (it
    /// will be tried again); an undecodable one is rejected instead, so the queue's
    /// dead-letter exchange takes it and it cannot loop.
    async fn settle_published(&self, delivery: &Delivery, published: bool, undecodable: bool) {
        if published {
            ack(delivery).await;
        } else if undecodable {
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
        } else {
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// The channel retries and dead letters are re-published on, with confirms. A publish that
/// is refused or not confirmed ends the session: after a cluster node died, a channel that
/// met a quorum queue during its leader election can keep being refused although the queue
/// has a new leader, and retrying on it would spin jobs towards the delivery limit.
#[derive(Clone)]
struct Republisher {
    channel: Channel,
    broken: Arc<tokio::sync::Notify>,
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died after the effect: the broker will redeliver, and the idempotency
        // marker makes the redelivery a no-op.
        tracing::warn!(error = %e, "ack failed; the job will be redelivered and skipped");
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
