//! The jobs of one broker session, from delivery to settlement: a batch is planned together
//! (one lookup), the jobs that send nothing are settled at once, the others send (up to
//! `WORKER_CONCURRENCY` at a time), and each outcome is settled (see [`crate::settlement`])
//! by [`Handler::execute`], the one place that writes a job's audit row and `jobs_total`
//! and then tells the broker: ack, or re-publish (confirmed) first.

use std::{sync::Arc, time::Instant};

use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
};
use shared::{
    audit,
    message::{DecodeError, Envelope, Newer},
    topology::Topology,
};
use tokio::sync::{Semaphore, SemaphorePermit, watch};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    audit_log::AuditRow,
    consumer::CONFIRM_TIMEOUT,
    plan::Plan,
    process::{JobOutcome, Processor},
    settlement::{self, Action, Circumstances, Settlement},
};

/// How old a plan may be when its job gets a send slot. A job that waited longer for its
/// slot is decided again on the account as it is then; a shorter wait (the other sends of a
/// busy batch, a fraction of a second) keeps its batch's plan, so a busy worker does not look
/// every job up twice. Whatever the age of the plan, a link carries the password version the
/// plan read, so the api refuses it if the password changed since: a late decision costs at
/// most a pointless email, never a working link it should not have.
const REPLAN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What deciding and settling the jobs of one broker session needs (shared by its batches).
pub(crate) struct Handler {
    pub(crate) processor: Arc<Processor>,
    pub(crate) publisher: Republisher,
    pub(crate) topology: Topology,
    /// One permit per SMTP send in flight.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Turns true when the session ends (shutdown, or a broker failure): jobs not yet
    /// started are left unacknowledged (the broker gives them to another worker when this
    /// connection closes).
    pub(crate) ending: watch::Receiver<bool>,
}

/// The channel retries and dead letters are re-published on, with confirms. A publish that
/// is refused or not confirmed ends the session: after a cluster node died, a channel that
/// met a quorum queue during its leader election can keep being refused although the queue
/// has a new leader, and retrying on it would spin jobs towards the delivery limit.
#[derive(Clone)]
pub(crate) struct Republisher {
    pub(crate) channel: Channel,
    pub(crate) broken: Arc<tokio::sync::Notify>,
}

/// `mail_jobs_held`: the deliveries this process holds (received, not yet settled or given
/// back), what "the worker is idle" means beside an empty queue.
static HELD: std::sync::LazyLock<metrics::Gauge> =
    std::sync::LazyLock::new(|| metrics::gauge!("mail_jobs_held"));

/// A delivery this process holds; counted in `mail_jobs_held` until dropped (after its
/// settlement, or when its session ends and the broker takes it back).
pub(crate) struct Held(Delivery);

impl Held {
    pub(crate) fn new(delivery: Delivery) -> Self {
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

/// A delivery with its decoded job and the job's consumer span.
struct Job {
    delivery: Held,
    envelope: Envelope,
    span: tracing::Span,
}

/// The consumer span of a job: the child of its publish when the AMQP headers carry the
/// producer span's `traceparent` (else the job's own), so the api's and the worker's spans
/// are one trace. Every line logged within it carries the `trace_id`.
fn consumer_span(delivery: &Delivery, envelope: &Envelope) -> tracing::Span {
    let header =
        delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("traceparent") {
                Some(lapin::types::AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            });
    let traceparent = header.or_else(|| envelope.trace.traceparent.clone());
    let span = tracing::info_span!(
        "job",
        otel.name = "process mail.jobs",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.message.id = %envelope.id,
        job_id = %envelope.id,
        kind = envelope.job.kind(),
        attempt = envelope.attempt,
        request_id = envelope.trace.request_id.as_deref().unwrap_or(""),
        trace_id = tracing::field::Empty,
    );
    shared::otel::continue_trace(&span, traceparent.as_deref());
    let trace_id = shared::otel::trace_id(&span)
        .or_else(|| Some(shared::otel::trace_id_of(traceparent.as_deref()?)?.to_owned()));
    span.record("trace_id", trace_id.as_deref().unwrap_or(""));
    span
}

/// A delivery with its settlement, ready to be carried out.
struct Settled<'a> {
    delivery: &'a Delivery,
    /// The job's consumer span (`None` for a delivery that is no job).
    span: Option<&'a tracing::Span>,
    /// `None` for a delivery that is no job.
    job: Option<&'a Envelope>,
    /// The account the job is about, when known (its audit row's user).
    user: Option<Uuid>,
    settlement: Settlement,
}

impl Handler {
    /// Decides the deliveries together and settles each: the jobs that send nothing are
    /// audited with one statement and acknowledged at once; the others send, `concurrency`
    /// at most at a time, and are settled one by one.
    pub(crate) async fn handle(&self, deliveries: Vec<Held>) {
        let mut jobs = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match Envelope::decode(&delivery.data) {
                Ok(envelope) => {
                    let span = consumer_span(&delivery, &envelope);
                    jobs.push(Job {
                        delivery,
                        envelope,
                        span,
                    });
                }
                Err(DecodeError::Newer(newer)) => self.newer(&delivery, &newer).await,
                Err(e) => self.undecodable(&delivery, &e.to_string()).await,
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
        let planned_at = Instant::now();
        let mut dropped = Vec::new();
        let mut others = Vec::new();
        for (job, plan) in jobs.into_iter().zip(plans) {
            match plan {
                Plan::Drop { reason, user } => dropped.push((job, reason, user)),
                plan => others.push((job, plan)),
            }
        }
        let send_all = futures_util::future::join_all(
            others
                .into_iter()
                .map(|(job, plan)| self.send(job, plan, planned_at)),
        );
        tokio::join!(self.drop_all(&dropped), send_all);
    }

    /// Settles the jobs of a batch that send nothing, together.
    async fn drop_all(&self, dropped: &[(Job, audit::Outcome, Option<Uuid>)]) {
        if dropped.is_empty() {
            return;
        }
        // A redelivered job may have been sent before its ack was lost: then it is a repeat
        // (no audit row), not a new decision about an account that changed since.
        let repeats = futures_util::future::join_all(dropped.iter().map(|(job, ..)| async {
            job.delivery.redelivered
                && self
                    .processor
                    .already_sent(job.envelope.id)
                    .await
                    .unwrap_or(false)
        }))
        .await;
        let settled = dropped
            .iter()
            .zip(repeats)
            .map(|((job, reason, user), repeat)| {
                let reason = if repeat {
                    audit::Outcome::Duplicate
                } else {
                    *reason
                };
                self.settled(job, *user, &JobOutcome::Dropped(reason))
            })
            .collect();
        self.execute(settled).await;
    }

    /// Carries out one job's plan (made at `planned_at`) and settles it.
    async fn send(&self, job: Job, plan: Plan, planned_at: Instant) {
        let envelope = &job.envelope;
        let span = job.span.clone();
        let Some((outcome, user)) = self
            .deliver(envelope, plan, planned_at)
            .instrument(span.clone())
            .await
        else {
            return;
        };
        self.execute(vec![self.settled(&job, user, &outcome)])
            .instrument(span)
            .await;
    }

    /// Carries out a plan (made at `planned_at`) within a send slot; with the account it is
    /// about. `None` when the session ended while the job waited for a slot (the broker takes
    /// the job back).
    async fn deliver(
        &self,
        envelope: &Envelope,
        plan: Plan,
        planned_at: Instant,
    ) -> Option<(JobOutcome, Option<Uuid>)> {
        if let Plan::DependencyDown(error) = plan {
            return Some((JobOutcome::DependencyDown(error), None));
        }
        // A send slot; given back as soon as the SMTP server answered, so recording the
        // delivery and settling it do not hold a connection's turn.
        let (permit, plan) = match self.in_flight.try_acquire() {
            Ok(permit) => (permit, plan),
            Err(_) => {
                let permit = self.send_slot().await?;
                if planned_at.elapsed() < REPLAN_AFTER {
                    (permit, plan)
                } else {
                    // The wait took several sends' time: decide again on what the account is
                    // now (a newer password, a verified address, a stale job).
                    (permit, self.processor.plan(&[envelope]).await.pop()?)
                }
            }
        };
        let user = plan.user();
        let outcome = self.processor.deliver(envelope, plan).await;
        drop(permit);
        if outcome == JobOutcome::Sent {
            self.processor.mark_sent(envelope.id).await;
        }
        Some((outcome, user))
    }

    /// Waits for a send slot; `None` when the session ends first.
    async fn send_slot(&self) -> Option<SemaphorePermit<'_>> {
        let mut ending = self.ending.clone();
        tokio::select! {
            biased;
            _ = ending.wait_for(|ending| *ending) => None,
            permit = self.in_flight.acquire() => permit.ok(),
        }
    }

    /// A job of a newer release is left for a worker that knows it (see
    /// [`settlement::held_for_newer`]): never dead-lettered. If the wait cannot be published,
    /// the delivery goes back to the queue.
    async fn newer(&self, delivery: &Delivery, newer: &Newer) {
        let headers = delivery.properties.headers().as_ref();
        let settlement =
            settlement::held_for_newer(headers, newer.not_after, self.processor.clock.now());
        let (kind, version, outcome) = (newer.kind(), newer.version, settlement.label);
        metrics::counter!("jobs_total", "kind" => "newer", "outcome" => outcome).increment(1);
        let Some(republish) = settlement.action.into_republish() else {
            tracing::warn!(
                kind,
                version,
                outcome,
                "a job of a newer release was useless before a worker that knows it took it"
            );
            return ack(delivery).await;
        };
        tracing::warn!(
            kind,
            version,
            outcome,
            wait_ms = republish.expiration_ms,
            "a job of a newer release; left for a worker that knows it"
        );
        self.republish(delivery, republish, true).await;
    }

    /// Never crash, never loop: an undecodable job goes to the dead letters as is.
    async fn undecodable(&self, delivery: &Delivery, error: &str) {
        let headers = delivery.properties.headers().as_ref();
        let settlement = settlement::undecodable(headers, error, self.processor.clock.now());
        self.execute(vec![Settled {
            delivery,
            span: None,
            job: None,
            user: None,
            settlement,
        }])
        .await;
    }

    /// The settlement of `job` after `outcome`.
    fn settled<'a>(&self, job: &'a Job, user: Option<Uuid>, outcome: &JobOutcome) -> Settled<'a> {
        let at = Circumstances {
            schedule: &self.processor.config.retry_schedule_secs,
            now: self.processor.clock.now(),
            jitter: rand::random(),
        };
        let headers = job.delivery.properties.headers().as_ref();
        Settled {
            delivery: &job.delivery,
            span: Some(&job.span),
            job: Some(&job.envelope),
            user,
            settlement: settlement::settle(outcome, &job.envelope, headers, at),
        }
    }

    /// Carries out settlements: first the jobs' audit rows (one statement for all; failures
    /// are logged, the email's fate must not depend on the audit table), then each one's log
    /// line and `jobs_total`, then what the broker is told, all at once.
    async fn execute(&self, settled: Vec<Settled<'_>>) {
        let secret = self.processor.config.pseudonym_secret();
        let rows = settled.iter().filter_map(|s| {
            let outcome = s.settlement.audit?;
            Some(AuditRow::of_job(s.job?, outcome, s.user, secret))
        });
        self.processor.audit_log.record(rows).await;
        for s in &settled {
            match s.span {
                Some(span) => {
                    if matches!(s.settlement.action, Action::DeadLetter { .. }) {
                        span.record("otel.status_code", "ERROR");
                    }
                    span.in_scope(|| s.log());
                }
                None => s.log(),
            }
            metrics::counter!("jobs_total", "kind" => s.kind(), "outcome" => s.settlement.label)
                .increment(1);
        }
        // Acked each on its own, all at once (a `multiple` ack, tried, cost the broker more:
        // it can only be sent once every earlier delivery is settled).
        futures_util::future::join_all(settled.into_iter().map(|s| self.carry_out(s))).await;
    }

    /// Tells the broker: acks, after a confirmed re-publish when there is one. An
    /// unconfirmed re-publish returns the job to the queue (it will be tried again); a
    /// delivery that is no job is rejected instead, so the queue's dead-letter exchange
    /// takes it and it cannot loop.
    async fn carry_out(&self, settled: Settled<'_>) {
        let Settled {
            delivery,
            job,
            settlement,
            ..
        } = settled;
        match settlement.action.into_republish() {
            Some(republish) => self.republish(delivery, republish, job.is_some()).await,
            None => ack(delivery).await,
        }
    }

    /// Re-publishes `delivery` as `republish` says, then acks it. When the broker does not
    /// confirm, the delivery goes back to its queue if `requeue`, else it is rejected (its
    /// queue's dead-letter exchange takes it).
    async fn republish(
        &self,
        delivery: &Delivery,
        republish: settlement::Republish,
        requeue: bool,
    ) {
        let mut properties = delivery.properties.clone();
        if let Some(ms) = republish.expiration_ms {
            properties = properties.with_expiration(ms.to_string().into());
        }
        let body = republish.body.as_deref().unwrap_or(&delivery.data);
        let properties = properties.with_headers(republish.headers);
        if self.publish(&republish.routing_key, body, properties).await {
            ack(delivery).await;
        } else if requeue {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            let _ = delivery.nack(requeue).await;
        } else {
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
        }
    }

    /// Publishes to the mail exchange and waits for the confirm. `true` when the broker has
    /// it.
    async fn publish(&self, routing_key: &str, body: &[u8], properties: BasicProperties) -> bool {
        let result = shared::amqp::publish_confirmed(
            &self.publisher.channel,
            &self.topology.mail_exchange(),
            routing_key,
            body,
            properties,
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
}

impl Settled<'_> {
    /// The `kind` label of `jobs_total`.
    fn kind(&self) -> &'static str {
        self.job.map_or("undecodable", |job| job.job.kind())
    }

    /// The settlement's log line.
    fn log(&self) {
        let job_id = self.job.map(|job| tracing::field::display(job.id));
        let attempt = self.job.map(|job| job.attempt);
        let request_id = self.job.and_then(|job| job.trace.request_id.as_deref());
        let (kind, outcome) = (self.kind(), self.settlement.label);
        match &self.settlement.action {
            Action::Ack => {
                tracing::info!(job_id, kind, attempt, request_id, outcome, "job done");
            }
            Action::Delay {
                delay_secs, error, ..
            } => tracing::warn!(
                job_id,
                kind,
                attempt,
                request_id,
                outcome,
                error,
                delay_secs,
                "the job waits in a delay queue"
            ),
            Action::Park { step_ms, .. } => tracing::debug!(
                job_id,
                kind,
                attempt,
                request_id,
                outcome,
                step_ms,
                "the job waits for its turn at a send budget"
            ),
            Action::DeadLetter { reason, .. } if self.job.is_none() => tracing::error!(
                reason,
                bytes = self.delivery.data.len(),
                "undecodable job; dead-lettering"
            ),
            Action::DeadLetter { reason, .. } => tracing::error!(
                job_id,
                kind,
                attempt,
                request_id,
                outcome,
                reason,
                bytes = self.delivery.data.len(),
                "dead-lettering"
            ),
        }
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died after the effect: the broker will redeliver, and the idempotency
        // marker makes the redelivery a no-op.
        tracing::warn!(error = %e, "ack failed; the job will be redelivered and skipped");
    }
}
