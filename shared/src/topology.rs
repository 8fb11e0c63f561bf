//! The RabbitMQ topology, declared in code by both services from this one definition.
//!
//! ```text
//!  api ──publish "jobs"──> [mail] (direct) ──> mail.jobs (quorum) ──> mail-worker
//!                            │   ^                   │ delivery limit
//!                            │   ├── TTL expiry ── mail.delay.<secs> (quorum) <── worker re-publishes "delay.<secs>" (retries)
//!                            │   └── TTL expiry ── mail.wait.<ms> (quorum) <──── worker re-publishes "wait.<ms>" (send budgets)
//!                            └──"dead"──> mail.dead (quorum) <─────────────┘
//!  api ──"user.password_reset", "user.account_locked"──> [events] (topic) ──> other services' queues
//! ```
//!
//! Every queue is a quorum queue, so a confirmed job survives the loss of any one node of a
//! three-node cluster, also while it waits for a retry. The broker's own dead-lettering (a
//! delay queue's TTL, the work queue's delivery limit) is `at-least-once`: a message leaves
//! its queue only after the target queue confirmed it, so a node lost in between drops no
//! retry (this needs `x-overflow: reject-publish`). Message TTL on quorum queues needs
//! RabbitMQ 3.10 or later; the same declarations work on 4.x (where classic queues are never
//! replicated, which is why the delay queues are not classic).
//!
//! Declarations are idempotent: declaring with the same arguments again is a no-op, so every
//! replica declares at start and no deploy step is needed. A queue that an older version
//! declared with other arguments is used as it is, with a warning (see [`Topology::declare`]).

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

/// The work queue's name (after the namespace prefix); also its `queue` metrics label.
pub const JOBS_QUEUE: &str = "mail.jobs";
/// The dead-letter queue's name (after the namespace prefix); also its metrics label.
pub const DEAD_QUEUE: &str = "mail.dead";
/// Routing key of new and retried jobs.
pub const JOBS_ROUTING_KEY: &str = "jobs";
/// Routing key of dead letters.
pub const DEAD_ROUTING_KEY: &str = "dead";
/// Routing key of the event published after a successful password reset.
pub const PASSWORD_RESET_EVENT: &str = "user.password_reset";
/// Routing key of the event an account lock publishes (its owner's "this wasn't me" link or
/// support staff): `{"user_id", "password_version", "occurred_at", "by"}`, `by` being
/// `"owner"` or `"operator"`.
pub const ACCOUNT_LOCKED_EVENT: &str = "user.account_locked";
/// Routing key of the event an erasure publishes (support staff, admin API or shell):
/// `{"user_id", "occurred_at"}`, so other services forget the account too.
pub const ACCOUNT_ERASED_EVENT: &str = "user.erased";
/// A message redelivered this many times (e.g. it crashed workers) is dead-lettered instead of
/// looping forever.
pub const DELIVERY_LIMIT: i64 = 20;
/// Default retry schedule (seconds), used when `MAIL_RETRY_SCHEDULE_SECS` is not set.
pub const DEFAULT_RETRY_SCHEDULE_SECS: [u64; 5] = [5, 30, 120, 600, 3600];
/// The waiting queues of jobs that wait for their turn at a send budget
/// (`SMTP_MAX_PER_SECOND`, `SMTP_DOMAIN_MAX_PER_MINUTE`) or for a throttled domain, by their
/// delay in ms: a ladder of doublings, apart from the retry queues.
///
/// A queue releases a message only from its head, so every message in a queue must have the
/// queue's own delay (no per-message TTL), or a short wait would sit behind a longer one and
/// come back late. A wait goes to the longest step not longer than it ([`Topology::budget_wait_step`]):
/// the job comes back early, at least halfway to its turn, asks again (keeping its place in
/// the budget's line) and waits for the rest. Never late by more than the broker's own lag.
pub const BUDGET_WAIT_STEPS_MS: [u64; 13] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
    1_024_000,
];

/// Names and declaration of the broker objects.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    retry_schedule_secs: Vec<u64>,
    expires_ms: Option<i64>,
}

impl Topology {
    /// A topology whose names start with `prefix` (empty in production; tests use a random
    /// one so they can share one broker) with one delay queue per distinct delay of the retry
    /// schedule and the waiting queues of [`BUDGET_WAIT_STEPS_MS`]. The api declares the same
    /// set, so both sides always agree; a version that does not know a queue simply never
    /// routes to it (a rolling upgrade only adds queues).
    pub fn new(prefix: impl Into<String>, retry_schedule_secs: &[u64]) -> Self {
        let mut delays = retry_schedule_secs.to_vec();
        delays.sort_unstable();
        delays.dedup();
        Self {
            prefix: prefix.into(),
            retry_schedule_secs: delays,
            expires_ms: None,
        }
    }

    /// The topology of the settings `BROKER_NAMESPACE`, `MAIL_RETRY_SCHEDULE_SECS` and
    /// `BROKER_QUEUE_EXPIRES_MS` (see [`Self::expiring`]).
    pub fn configured(
        namespace: &str,
        retry_schedule_secs: &[u64],
        expires_ms: Option<i64>,
    ) -> Self {
        let topology = Self::new(namespace, retry_schedule_secs);
        match expires_ms {
            Some(ms) => topology.expiring(ms),
            None => topology,
        }
    }

    /// Makes every queue disappear after `ms` unused and every exchange once unbound. Only
    /// for tests: a test that dies halfway then leaves nothing behind on the shared broker.
    pub fn expiring(mut self, ms: i64) -> Self {
        self.expires_ms = Some(ms);
        self
    }

    /// The exchange every mail job is published to.
    pub fn mail_exchange(&self) -> String {
        format!("{}mail", self.prefix)
    }

    /// The work queue the workers consume.
    pub fn jobs_queue(&self) -> String {
        format!("{}{JOBS_QUEUE}", self.prefix)
    }

    /// Where jobs that will never be delivered end up, for inspection and replay.
    pub fn dead_queue(&self) -> String {
        format!("{}{DEAD_QUEUE}", self.prefix)
    }

    /// The delay queue for a retry after `delay_secs`. Named by its delay rather than by the
    /// attempt number, so changing `MAIL_RETRY_SCHEDULE_SECS` declares new queues instead of
    /// clashing with existing ones whose TTL differs (a redeclare with other arguments fails).
    /// (`mail.retry.<secs>` were the classic delay queues of earlier versions: nothing routes
    /// to them any more, and what they hold still returns to the work queue when it expires.)
    pub fn retry_queue(&self, delay_secs: u64) -> String {
        format!("{}mail.delay.{delay_secs}", self.prefix)
    }

    /// Routing key that reaches [`Self::retry_queue`] for `delay_secs`.
    pub fn retry_routing_key(delay_secs: u64) -> String {
        format!("delay.{delay_secs}")
    }

    /// Every queue of this topology: the work queue, the dead letters, the delay queues.
    pub fn queues(&self) -> Vec<String> {
        self.queue_declarations()
            .into_iter()
            .map(|(name, ..)| name)
            .collect()
    }

    /// Every exchange of this topology.
    pub fn exchanges(&self) -> [String; 2] {
        [self.mail_exchange(), self.events_exchange()]
    }

    /// The topic exchange for domain events other services subscribe to.
    pub fn events_exchange(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The distinct delays of the retry schedule this topology declares delay queues for.
    pub fn retry_delays(&self) -> &[u64] {
        &self.retry_schedule_secs
    }

    /// The waiting queue of a job that waits for its turn at a send budget, `step_ms` one of
    /// [`BUDGET_WAIT_STEPS_MS`].
    pub fn budget_wait_queue(&self, step_ms: u64) -> String {
        format!("{}mail.wait.{step_ms}", self.prefix)
    }

    /// Routing key that reaches [`Self::budget_wait_queue`] for `step_ms`.
    pub fn budget_wait_routing_key(step_ms: u64) -> String {
        format!("wait.{step_ms}")
    }

    /// The step (ms) of [`BUDGET_WAIT_STEPS_MS`] for a wait of `wait_ms`: the longest not
    /// longer than the wait (the shortest for a shorter wait).
    pub fn budget_wait_step(wait_ms: u64) -> u64 {
        BUDGET_WAIT_STEPS_MS
            .iter()
            .copied()
            .rev()
            .find(|&step| step <= wait_ms)
            .unwrap_or(BUDGET_WAIT_STEPS_MS[0])
    }

    /// Declares exchanges, queues and bindings on a channel of its own. Safe to call from
    /// every replica at every start.
    ///
    /// A queue that exists with other arguments (declared by an earlier version, e.g. without
    /// at-least-once dead-lettering) makes the broker refuse the declaration; it is then used
    /// as it is and a warning says how to bring it up to date (a policy, or recreating it when
    /// empty), instead of keeping the service from starting.
    pub async fn declare(&self, connection: &Connection) -> lapin::Result<()> {
        let mut channel = connection.create_channel().await?;
        let auto_delete = self.expires_ms.is_some();
        let exchange_options = ExchangeDeclareOptions {
            // Exchanges and queues must survive a broker restart, or queued mail is lost.
            durable: true,
            auto_delete,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.mail_exchange().into(),
                ExchangeKind::Direct,
                exchange_options,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                exchange_options,
                FieldTable::default(),
            )
            .await?;
        for (name, args, routing_key) in self.queue_declarations() {
            match declare_queue(&channel, &name, args).await {
                Ok(()) => {}
                Err(e) if is_precondition_failed(&e) => {
                    // The refusal closed the channel; check on a new one that the queue is
                    // there, and use it.
                    channel = connection.create_channel().await?;
                    channel
                        .queue_declare(
                            name.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await?;
                    tracing::warn!(queue = %name, error = %e,
                        "queue exists with other arguments (an earlier version's); using it as it is. \
                         Apply a policy with dead-letter-strategy=at-least-once and overflow=reject-publish \
                         to it, or delete it while it is empty so it is declared anew");
                }
                Err(e) => return Err(e),
            }
            channel
                .queue_bind(
                    name.as_str().into(),
                    self.mail_exchange().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Every queue with its arguments and the routing key that reaches it.
    fn queue_declarations(&self) -> Vec<(String, FieldTable, String)> {
        // The work queue: a message the workers keep failing to ack (it crashes them) is
        // dead-lettered after DELIVERY_LIMIT redeliveries.
        let mut jobs = self.quorum_args();
        jobs.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        self.dead_letter_to(&mut jobs, DEAD_ROUTING_KEY);
        let mut queues = vec![
            (self.jobs_queue(), jobs, JOBS_ROUTING_KEY.to_owned()),
            (
                self.dead_queue(),
                self.quorum_args(),
                DEAD_ROUTING_KEY.to_owned(),
            ),
        ];
        for &delay in &self.retry_schedule_secs {
            // Delay queues have no consumer: a message waits for its TTL, then the broker
            // dead-letters it back to the work queue. No worker sleeps on a retry.
            let mut args = self.quorum_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay_ms(delay)),
            );
            self.dead_letter_to(&mut args, JOBS_ROUTING_KEY);
            queues.push((
                self.retry_queue(delay),
                args,
                Self::retry_routing_key(delay),
            ));
        }
        for step in BUDGET_WAIT_STEPS_MS {
            // Waiting queues work like delay queues, one fixed delay each.
            let mut args = self.quorum_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(step).unwrap_or(i64::MAX)),
            );
            self.dead_letter_to(&mut args, JOBS_ROUTING_KEY);
            queues.push((
                self.budget_wait_queue(step),
                args,
                Self::budget_wait_routing_key(step),
            ));
        }
        queues
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), string("quorum"));
        if let Some(ms) = self.expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
    }

    /// Dead-letters to the mail exchange with `routing_key`, at least once.
    fn dead_letter_to(&self, args: &mut FieldTable, routing_key: &str) {
        args.insert(
            "x-dead-letter-exchange".into(),
            string(&self.mail_exchange()),
        );
        args.insert("x-dead-letter-routing-key".into(), string(routing_key));
        args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        args.insert("x-overflow".into(), string("reject-publish"));
    }
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(drop)
}

/// The broker refused a declaration because the object exists with other properties.
fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn delay_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Parses a retry schedule such as `5,30,120,600,3600`.
pub fn parse_retry_schedule(raw: &str) -> Result<Vec<u64>, String> {
    let schedule: Result<Vec<u64>, _> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<u64>)
        .collect();
    match schedule {
        Ok(s) if !s.is_empty() && s.iter().all(|&d| (1..=86_400).contains(&d)) => Ok(s),
        _ => Err(format!(
            "expected a comma-separated list of delays in seconds between 1 and 86400, e.g. \
             \"5,30,120,600,3600\"; got {raw:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_retry_queues_are_named_by_delay() {
        let t = Topology::new("t-1.", &[30, 5, 30]);
        assert_eq!(t.jobs_queue(), "t-1.mail.jobs");
        assert_eq!(t.dead_queue(), "t-1.mail.dead");
        assert_eq!(t.retry_queue(5), "t-1.mail.delay.5");
        assert_eq!(Topology::retry_routing_key(5), "delay.5");
        assert_eq!(t.retry_delays(), &[5, 30]);
        assert_eq!(t.budget_wait_queue(500), "t-1.mail.wait.500");
        assert_eq!(Topology::budget_wait_routing_key(500), "wait.500");
        assert_eq!(Topology::new("", &[1]).mail_exchange(), "mail");
    }

    #[test]
    fn a_budget_wait_goes_to_the_longest_step_not_longer_than_the_wait() {
        assert_eq!(Topology::budget_wait_step(0), 250);
        assert_eq!(Topology::budget_wait_step(249), 250);
        assert_eq!(Topology::budget_wait_step(250), 250);
        assert_eq!(Topology::budget_wait_step(999), 500);
        assert_eq!(Topology::budget_wait_step(59_000), 32_000);
        assert_eq!(Topology::budget_wait_step(u64::MAX), 1_024_000);
        // Never later than the wait (past the shortest step), and at least halfway there.
        for wait in (250..3_000_000).step_by(997) {
            let step = Topology::budget_wait_step(wait);
            assert!(
                step <= wait && 2 * step > wait || wait >= 1_024_000,
                "{wait}: {step}"
            );
        }
        // Every step has its declared queue.
        let t = Topology::new("", &[2]);
        let queues = t.queues();
        for step in BUDGET_WAIT_STEPS_MS {
            assert!(queues.contains(&t.budget_wait_queue(step)));
        }
    }

    #[test]
    fn retry_schedules_parse_or_explain_the_expected_form() {
        assert_eq!(
            parse_retry_schedule("5, 30,120").expect("valid"),
            vec![5, 30, 120]
        );
        assert!(parse_retry_schedule("").is_err());
        assert!(parse_retry_schedule("5,x").is_err());
        assert!(parse_retry_schedule("0").is_err());
        assert!(parse_retry_schedule("5,30").is_ok());
    }
}
