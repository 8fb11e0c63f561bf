//! Carrying a job's plan out: look the recipients of a batch up at once and plan them
//! ([`Processor::plan`], the decisions themselves in [`crate::plan`]), then per email count
//! it against the recipient's budget, wait for a turn at the send budgets, mint the link,
//! render and send ([`Processor::deliver`]). Returns a [`JobOutcome`]; the handler settles it
//! (see [`crate::settlement`]) and writes the job's audit row.

use std::{sync::Arc, time::Instant};
use tracing::Instrument as _;

use lettre::message::Mailbox;
use shared::{
    audit,
    clock::Clock,
    db::Session,
    message::Envelope,
    redis_pool::{RedisError, RedisPool},
    token::TokenKeys,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    audit_log::AuditLog,
    config::Config,
    mailer::{Mailer, Outgoing, SendError},
    plan::{self, Draft, Plan, Planner},
    recipient_budget::{self, RecipientBudget},
    render::{Rendered, Renderer},
    send_budget::{self, Decision, SendBudget},
};

/// How long a delivered job's id is remembered (longer than any redelivery or retry path).
const SENT_MARKER_TTL_SECS: u64 = 7 * 86_400;

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The SMTP server accepted the email.
    Sent,
    /// Deliberately not sent, for this reason.
    Dropped(audit::Outcome),
    /// Failed in a way that may pass: retry later, in the delay queue of the next attempt.
    Retry(String),
    /// A dependency of ours (database, Redis) is unavailable: wait in a delay queue without
    /// spending a delivery attempt, so an outage of our own never dead-letters mail.
    DependencyDown(String),
    /// Over a send budget, or the recipient's domain is paused after a throttling answer:
    /// wait for the turn in a budget wait queue without spending an attempt (see
    /// [`crate::send_budget`]).
    BudgetWait(BudgetWait),
    /// Will never work: dead-letter with this reason.
    Dead(String),
}

/// How long a job waits for a send budget, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetWait {
    pub wait: std::time::Duration,
    pub limit: send_budget::Limit,
    /// The recipient domain's class (the `domain_class` metrics label).
    pub domain_class: &'static str,
    /// The provider's throttling answer that paused the domain, when this job got it: it goes
    /// into the job's history (no attempt is spent), so a job that dies waiting shows why.
    pub answer: Option<String>,
}

/// Everything needed to handle jobs; shared by all in-flight tasks.
pub struct Processor {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: RedisPool,
    pub tokens: TokenKeys,
    pub renderer: Renderer,
    pub mailer: Mailer,
    pub from: Mailbox,
    pub clock: Arc<dyn Clock>,
    /// How many emails one recipient may get per window, all kinds together.
    pub recipient_budget: RecipientBudget,
    /// The provider's and the recipient domains' send budgets, and throttling pauses.
    pub send_budget: SendBudget,
    /// Where the audit rows of decisions go (written in groups).
    pub audit_log: AuditLog,
}

/// The recipient's domain as the send budgets know it.
struct Domain {
    /// Its pseudonym, the key of its budget and pause.
    key: String,
    /// Its class (the `domain_class` metrics label).
    class: &'static str,
}

/// The connection of a batch's reads, taken when the first read needs it (a batch of stale
/// jobs reads nothing) and shared by the next; a failure to take it answers every read.
struct BatchReads<'a> {
    db: &'a PgPool,
    session: Option<Result<Session, String>>,
}

impl<'a> BatchReads<'a> {
    fn new(db: &'a PgPool) -> Self {
        Self { db, session: None }
    }

    async fn conn(&mut self) -> Result<&mut sqlx::PgConnection, String> {
        let session = match self.session.take() {
            Some(session) => session,
            None => Session::begin(self.db).await.map_err(|e| e.to_string()),
        };
        match self.session.insert(session) {
            Ok(session) => Ok(session.conn()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Behind a transaction pooler the reads ran in a transaction of their own; its end
    /// changes nothing they read.
    async fn finish(self) {
        if let Some(Ok(session)) = self.session {
            let _ = session.finish().await;
        }
    }
}

impl Processor {
    /// Plans a batch of jobs with one database statement for all their lookups and one for
    /// the suppression list, both on one connection. A job whose lookup failed gets
    /// [`Plan::DependencyDown`].
    pub async fn plan(&self, jobs: &[&Envelope]) -> Vec<Plan> {
        let planner = Planner {
            public_base_url: &self.config.public_base_url,
            notify_unknown_recipients: self.config.notify_unknown_recipients,
            now: self.clock.now(),
        };
        let lookups: Vec<plan::Lookup> = jobs.iter().map(|job| planner.lookup(job)).collect();
        let (email_keys, ids) = plan::wanted(&lookups);
        let mut reads = BatchReads::new(&self.db);
        let found = if email_keys.is_empty() && ids.is_empty() {
            Ok(Vec::new())
        } else {
            match reads.conn().await {
                Ok(conn) => shared::account::lookup(conn, &email_keys, &ids)
                    .await
                    .map_err(|e| format!("database: {e}")),
                Err(e) => Err(format!("database: {e}")),
            }
        };
        let plans = planner.plans(jobs, lookups, found.as_deref().map_err(String::as_str));
        let recipients = plan::recipients(&plans);
        let sending: Vec<(String, String)> = recipients.iter().flatten().cloned().collect();
        let suppressed = if sending.is_empty() {
            Ok(Vec::new())
        } else {
            match reads.conn().await {
                Ok(conn) => shared::suppression::which(conn, &sending)
                    .await
                    .map_err(|e| format!("suppression list: {e}")),
                Err(e) => Err(format!("suppression list: {e}")),
            }
        };
        reads.finish().await;
        plan::drop_suppressed(
            plans,
            recipients,
            suppressed.as_deref().map_err(String::as_str),
        )
    }

    /// Carries out a plan: an email is counted against its recipient's budget, waits for its
    /// turn at the send budgets, gets its link minted, is rendered and sent (without acking;
    /// that is the handler's business). A sent email is recorded with
    /// [`Processor::mark_sent`], which the caller runs after giving its send slot back.
    pub async fn deliver(&self, job: &Envelope, plan: Plan) -> JobOutcome {
        let (to, draft, languages) = match plan {
            Plan::Send {
                to,
                draft,
                languages,
                ..
            } => (to, draft, languages),
            Plan::Drop { reason, .. } => return JobOutcome::Dropped(reason),
            Plan::DependencyDown(error) => return JobOutcome::DependencyDown(error),
        };
        // Mail goes to the normalised address (ASCII domain), also for accounts stored before
        // domains were normalised to that form.
        let to = plan::deliverable(&to);
        // The idempotency check and the recipient's budget go to Redis together (one round
        // trip): the budget counts a job once, however often it is asked, so a repeat of a
        // sent job spends nothing.
        let budget = async {
            if draft.counts_against_recipient_budget() {
                self.spend_recipient_budget(job, &to).await
            } else {
                None
            }
        };
        let (sent, refused) = tokio::join!(self.already_sent(job.id), budget);
        match sent {
            Ok(true) => return JobOutcome::Dropped(audit::Outcome::Duplicate),
            Ok(false) => {}
            Err(e) => return JobOutcome::DependencyDown(format!("idempotency check: {e}")),
        }
        if let Some(refused) = refused {
            return refused;
        }
        // The send budgets last, right before the link is minted: a job that waits for its
        // turn leaves the account's links as they are.
        let domain = send_budget::recipient_domain(&to);
        let domain = Domain {
            key: send_budget::domain_pseudonym(self.config.pseudonym_secret(), &domain),
            class: send_budget::domain_class(&domain),
        };
        if let Some(not_now) = self.take_send_turn(job, &draft, &domain).await {
            return not_now;
        }
        let content = match self.complete(draft, job.id).await {
            Ok(Some(content)) => content,
            // A newer email (or a password change) made this job's link dead: sending it
            // would only hand the user a link that fails.
            Ok(None) => return JobOutcome::Dropped(audit::Outcome::DroppedSuperseded),
            Err(e) => return JobOutcome::DependencyDown(e.to_string()),
        };
        // The account's languages, then the request's, then the api's built-in choice.
        let tag = (languages.iter().chain(&job.languages))
            .find(|tag| self.renderer.knows(tag))
            .map_or(job.locale.as_str(), String::as_str);
        match self.renderer.render_tag(&content, tag) {
            Ok(rendered) => self.send(job, &to, &rendered, &domain).await,
            Err(e) => JobOutcome::Dead(format!("cannot render: {e}")),
        }
    }

    /// Takes the email's turn at the send budgets. `None` when it may go out now; otherwise
    /// what becomes of the job.
    async fn take_send_turn(
        &self,
        job: &Envelope,
        draft: &Draft,
        domain: &Domain,
    ) -> Option<JobOutcome> {
        let requester = send_budget::requester_pseudonym(
            self.config.pseudonym_secret(),
            job.job.requester_ip(),
        );
        let ticket = send_budget::Ticket {
            job: job.id,
            class: draft.send_class(),
            requester: requester.as_deref(),
            deadline: job.not_after,
        };
        match self
            .send_budget
            .take(&self.redis, &domain.key, ticket)
            .await
        {
            Ok(Decision::Send) => None,
            Ok(Decision::Wait { wait, limit }) => {
                Some(budget_wait(wait, limit, domain.class, None))
            }
            Ok(Decision::TooLate { limit }) => {
                // Its turn comes after its link (or its news) is dead: it would only be
                // dropped as stale then, after holding up the jobs that can still go.
                tracing::warn!(job_id = %job.id, limit = limit.as_str(), domain_class = domain.class,
                    "the send budget's next turn is past the job's life; dropped as stale");
                Some(JobOutcome::Dropped(audit::Outcome::Stale))
            }
            Err(e) => Some(JobOutcome::DependencyDown(format!("send budget: {e}"))),
        }
    }

    /// Sends the rendered email and classifies the SMTP server's answer.
    async fn send(
        &self,
        job: &Envelope,
        to: &str,
        rendered: &Rendered,
        domain: &Domain,
    ) -> JobOutcome {
        let started = Instant::now();
        let outgoing = Outgoing {
            job_id: job.id,
            composed_at: job.created_at.into(),
            to,
            content: rendered,
        };
        // Only for an exported trace: within it the worker logs no more than debug lines
        // about its connections, and a span costs its fields' formatting even unread.
        let span = if shared::otel::exporting() {
            tracing::info_span!(
                "smtp send",
                otel.name = "smtp send",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                network.protocol.name = "smtp",
                email.domain_class = domain.class,
            )
        } else {
            tracing::Span::none()
        };
        let result = self
            .mailer
            .send(&self.from, outgoing)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics::histogram!("smtp_send_duration_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => JobOutcome::Sent,
            Err(SendError::Transient(e)) => JobOutcome::Retry(e),
            Err(SendError::Throttled(e)) => self.throttled(domain, e).await,
            Err(SendError::Permanent(e)) => JobOutcome::Dead(e),
            Err(SendError::NoSuchMailbox(e)) => {
                self.suppress(to, &e).await;
                JobOutcome::Dead(e)
            }
        }
    }

    /// Counts the email to `to` against the recipient's budget. `None` when it may go out;
    /// otherwise what becomes of the job: dropped when the budget is spent, waiting when
    /// Redis cannot tell (never sent unchecked).
    async fn spend_recipient_budget(&self, job: &Envelope, to: &str) -> Option<JobOutcome> {
        let recipient = recipient_budget::recipient_pseudonym(self.config.pseudonym_secret(), to);
        match self
            .recipient_budget
            .check(&self.redis, &recipient, job.id)
            .await
        {
            Ok(verdict) if verdict.allows_sending() => None,
            Ok(_) => {
                metrics::counter!("mail_recipient_budget_hits_total", "kind" => job.job.kind())
                    .increment(1);
                tracing::warn!(job_id = %job.id, kind = job.job.kind(), recipient,
                    "the recipient's email budget is spent; not sending");
                Some(JobOutcome::Dropped(audit::Outcome::RecipientBudget))
            }
            Err(e) => Some(JobOutcome::DependencyDown(format!("recipient budget: {e}"))),
        }
    }

    /// The provider throttles mail to the job's domain: pause the domain for every replica,
    /// and let the job wait for the pause's end without spending an attempt (the provider
    /// refused the pace, not the message). With pauses off, or Redis unreachable, it is an
    /// ordinary retry.
    async fn throttled(&self, domain: &Domain, answer: String) -> JobOutcome {
        metrics::counter!("mail_smtp_throttled_total", "domain_class" => domain.class).increment(1);
        if !self.send_budget.pauses_on_throttling() {
            return JobOutcome::Retry(answer);
        }
        match self.send_budget.throttled(&self.redis, &domain.key).await {
            Ok(wait) => {
                tracing::warn!(
                    domain = domain.key,
                    domain_class = domain.class,
                    answer,
                    wait_ms = wait.as_millis() as u64,
                    "the provider throttles this domain; its mail pauses"
                );
                budget_wait(
                    wait,
                    send_budget::Limit::Throttled,
                    domain.class,
                    Some(answer),
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not pause a throttled domain; retrying the job");
                JobOutcome::Retry(answer)
            }
        }
    }

    /// Puts the address whose mailbox does not exist on the suppression list. A failure is
    /// logged: the job is dead-lettered either way.
    async fn suppress(&self, to: &str, answer: &str) {
        match shared::suppression::add(&self.db, &plan::address_key(to), to, answer).await {
            Ok(()) => {
                metrics::counter!("mail_suppressions_total").increment(1);
                tracing::warn!(recipient = %recipient_budget::recipient_pseudonym(self.config.pseudonym_secret(), to),
                    "no such mailbox; the address is suppressed");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not suppress an address whose mailbox does not exist");
            }
        }
    }

    /// Whether the email of `job` was delivered already (its marker is set).
    pub async fn already_sent(&self, job: Uuid) -> Result<bool, RedisError> {
        let sent_key = self.redis.keys().job_sent(job);
        self.redis
            .run(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(&sent_key)
                    .query_async::<bool>(&mut c)
                    .await
            })
            .await
    }

    /// Records that the email of `job` was delivered (its idempotency marker).
    pub async fn mark_sent(&self, job: Uuid) {
        let key = self.redis.keys().job_sent(job);
        let result = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("EX")
                    .arg(SENT_MARKER_TTL_SECS)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = result {
            // The email went out; a redelivery could now send it twice. Rare, and better than
            // failing a delivered job.
            tracing::warn!(job_id = %job, error = %e, "could not record the delivery");
        }
    }
}

/// A job that waits `wait` for its turn at a send budget (counted in
/// `mail_send_budget_waits_total`).
fn budget_wait(
    wait: std::time::Duration,
    limit: send_budget::Limit,
    domain_class: &'static str,
    answer: Option<String>,
) -> JobOutcome {
    tracing::debug!(
        limit = limit.as_str(),
        domain_class,
        wait_ms = wait.as_millis() as u64,
        "over a send budget; the job waits for its turn"
    );
    metrics::counter!("mail_send_budget_waits_total",
        "limit" => limit.as_str(), "domain_class" => domain_class)
    .increment(1);
    JobOutcome::BudgetWait(BudgetWait {
        wait,
        limit,
        domain_class,
        answer,
    })
}
