//! Deciding what a job means and doing it: look the recipients of a batch up at once
//! ([`Processor::plan`]), then per email count it against the recipient's budget, mint the
//! link, render, send ([`Processor::deliver`]). Returns an [`Outcome`]; the consumer turns it
//! into ack, retry or dead letter.

use std::{net::IpAddr, sync::Arc, time::Instant};

use lettre::message::Mailbox;
use shared::{
    audit,
    clock::Clock,
    email,
    keys::{Keys, pseudonym},
    links,
    message::{Envelope, Job},
    redis_pool::{RedisError, RedisPool},
    reset_code,
    token::{Claims, Purpose, TokenKeys},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    audit_log::{AuditLog, AuditRow},
    config::Config,
    mailer::{Mailer, Outgoing, SendError},
    recipient_budget::{self, RecipientBudget},
    render::{EmailContent, Renderer},
    send_budget::{self, Decision, SendBudget},
};

/// What the worker needs to know about a recipient.
pub use shared::account::Account as Recipient;

/// How long a delivered job's id is remembered (longer than any redelivery or retry path).
const SENT_MARKER_TTL_SECS: u64 = 7 * 86_400;

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The SMTP server accepted the email.
    Sent,
    /// Deliberately not sent, for this reason.
    Dropped(audit::Outcome),
    /// Failed in a way that may pass: retry later.
    Retry(String),
    /// A dependency of ours (database, Redis) is unavailable: try again later without
    /// spending a delivery attempt, so an outage of our own never dead-letters mail.
    Wait(String),
    /// Over a send budget, or the recipient's domain is paused after a throttling answer:
    /// park the job until its turn without spending an attempt (see [`crate::send_budget`]).
    Budget(BudgetWait),
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

impl Outcome {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent => audit::Outcome::Sent.as_str(),
            Outcome::Dropped(reason) => reason.as_str(),
            Outcome::Retry(_) => "retried",
            Outcome::Wait(_) => "waiting",
            Outcome::Budget(_) => "budget_wait",
            Outcome::Dead(_) => audit::Outcome::Dead.as_str(),
        }
    }
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
    pub budget: RecipientBudget,
    /// The provider's and the recipient domains' send budgets, and throttling pauses.
    pub send_budget: SendBudget,
    /// Where the audit rows of decisions go (written in groups).
    pub audit_log: AuditLog,
}

/// What a job asks for, after the lookups.
pub enum Plan {
    Send {
        to: String,
        draft: Draft,
        user: Option<Uuid>,
    },
    Drop {
        reason: audit::Outcome,
        user: Option<Uuid>,
    },
}

/// The email a job will send, before a link in it is minted.
///
/// Links are minted only once the recipient's budget has let the email through: minting
/// bumps the account's token generation, which kills the links it already holds, and a
/// refused email must not leave its owner with none.
pub enum Draft {
    /// Nothing left to mint.
    Ready(EmailContent),
    /// A reset link for this account.
    PasswordReset {
        recipient: Recipient,
        requested_from_ip: Option<String>,
    },
    /// A verification link for this account.
    EmailVerification { recipient: Recipient },
    /// The password-changed notice, with a "this wasn't me" link for this account.
    PasswordChanged {
        recipient: Recipient,
        changed_at: chrono::DateTime<chrono::Utc>,
        from_ip: Option<String>,
        /// The password version the change made.
        version: i32,
    },
}

impl Draft {
    /// Whether the email counts against the recipient's budget (`MAIL_PER_RECIPIENT_PER_HOUR`).
    ///
    /// Counted: what a stranger can make us send to any address at will (verification emails
    /// and account-exists notices through sign-up, no-account notices through forgot-password).
    /// Not counted: reset emails, which have their own per-address budget counted by the api
    /// (`RATE_LIMIT_EMAIL_PER_HOUR`), and the password-changed notice, which only a completed
    /// reset triggers. Otherwise a stranger signing up someone's address a few times an hour
    /// could crowd out that person's own reset email, or hide the notice of a reset.
    fn counts_against_recipient_budget(&self) -> bool {
        self.send_class() == send_budget::Class::Bulk
    }

    /// The send line the email waits in under the send budgets: the same split as the
    /// recipient's budget (what a stranger can cause waits behind what a person waits for).
    fn send_class(&self) -> send_budget::Class {
        match self {
            Draft::PasswordReset { .. } | Draft::PasswordChanged { .. } => {
                send_budget::Class::Priority
            }
            Draft::Ready(_) | Draft::EmailVerification { .. } => send_budget::Class::Bulk,
        }
    }
}

/// What a job needs looked up before it can be planned.
enum Lookup {
    /// Decided without the database.
    Ready(Plan),
    /// The account with this address key, if any.
    ByEmailKey(String),
    /// The account with this id, if any.
    ById(Uuid),
}

impl Processor {
    fn keys(&self) -> &Keys {
        self.redis.keys()
    }

    /// Plans a batch of jobs with one database statement for all their lookups. A job whose
    /// lookup failed gets `Err` with the reason: it waits (see [`Outcome::Wait`]).
    pub async fn plan(&self, jobs: &[&Envelope]) -> Vec<Result<Plan, String>> {
        let lookups: Vec<Lookup> = jobs.iter().map(|job| self.lookup(job)).collect();
        let email_keys: Vec<&str> = lookups
            .iter()
            .filter_map(|l| match l {
                Lookup::ByEmailKey(key) => Some(key.as_str()),
                _ => None,
            })
            .collect();
        let ids: Vec<Uuid> = lookups
            .iter()
            .filter_map(|l| match l {
                Lookup::ById(id) => Some(*id),
                _ => None,
            })
            .collect();
        let found = shared::account::lookup(&self.db, &email_keys, &ids)
            .await
            .map_err(|e| format!("database: {e}"));
        let plans = lookups
            .into_iter()
            .zip(jobs)
            .map(|(lookup, job)| {
                let found = |matches: &dyn Fn(&Recipient) -> bool| {
                    found
                        .as_ref()
                        .map(|users| users.iter().find(|u| matches(u)))
                        .map_err(Clone::clone)
                };
                match lookup {
                    Lookup::Ready(plan) => Ok(plan),
                    Lookup::ByEmailKey(key) => {
                        found(&|u| u.email_key == key).map(|user| self.decide(job, user))
                    }
                    Lookup::ById(id) => found(&|u| u.id == id).map(|user| self.decide(job, user)),
                }
            })
            .collect();
        self.drop_suppressed(plans).await
    }

    /// Turns the plans that would mail a suppressed address into drops (one statement for
    /// the batch). When the list cannot be read, those plans wait: mail to an address that
    /// may be suppressed is not sent unchecked.
    async fn drop_suppressed(&self, plans: Vec<Result<Plan, String>>) -> Vec<Result<Plan, String>> {
        // The address key and spelling of every plan that sends, computed once.
        let keys: Vec<Option<(String, String)>> = plans
            .iter()
            .map(|plan| match plan {
                Ok(Plan::Send { to, .. }) => Some((address_key(to), deliverable(to))),
                _ => None,
            })
            .collect();
        let sending: Vec<(String, String)> = keys.iter().flatten().cloned().collect();
        if sending.is_empty() {
            return plans;
        }
        let suppressed = shared::suppression::which(&self.db, &sending).await;
        plans
            .into_iter()
            .zip(keys)
            .map(|(plan, key)| match (plan, key, &suppressed) {
                (Ok(Plan::Send { user, .. }), Some((_, to)), Ok(list)) if list.contains(&to) => {
                    Ok(Plan::Drop {
                        reason: audit::Outcome::DroppedSuppressed,
                        user,
                    })
                }
                (_, Some(_), Err(e)) => Err(format!("suppression list: {e}")),
                (plan, ..) => plan,
            })
            .collect()
    }

    /// Carries out a plan: a dropped job is audited; an email is counted against its
    /// recipient's budget, its link minted, rendered and sent (without acking; that is the
    /// consumer's business). A sent email is recorded with [`Processor::record_sent`], which
    /// the caller runs after giving its send slot back.
    pub async fn deliver(&self, job: &Envelope, plan: Plan) -> Outcome {
        let (to, draft, user) = match plan {
            Plan::Drop { reason, user } => {
                self.audit(job, reason, user).await;
                return Outcome::Dropped(reason);
            }
            Plan::Send { to, draft, user } => (to, draft, user),
        };
        match self.already_sent(job.id).await {
            Ok(true) => return Outcome::Dropped(audit::Outcome::Duplicate),
            Ok(false) => {}
            Err(e) => return Outcome::Wait(format!("idempotency check: {e}")),
        }
        // Mail goes to the normalised address (ASCII domain), also for accounts stored before
        // domains were normalised to that form.
        let to = deliverable(&to);
        if draft.counts_against_recipient_budget()
            && let Some(refused) = self.spend_budget(job, &to, user).await
        {
            return refused;
        }
        // The send budgets last, right before the link is minted: a job that waits for its
        // turn leaves the account's links as they are.
        let domain = send_budget::recipient_domain(&to);
        let domain_class = send_budget::domain_class(&domain);
        let secret = self.config.pseudonym_secret();
        let domain_key = send_budget::domain_pseudonym(secret, &domain);
        let requester = send_budget::requester_pseudonym(secret, job.job.requester_ip());
        let ticket = send_budget::Ticket {
            job: job.id,
            class: draft.send_class(),
            requester: requester.as_deref(),
            deadline: job.not_after,
        };
        match self
            .send_budget
            .take(&self.redis, &domain_key, ticket)
            .await
        {
            Ok(Decision::Send) => {}
            Ok(Decision::Wait { wait, limit }) => {
                return Outcome::Budget(BudgetWait {
                    wait,
                    limit,
                    domain_class,
                    answer: None,
                });
            }
            Ok(Decision::TooLate { limit }) => {
                // Its turn comes after its link (or its news) is dead: it would only be
                // dropped as stale then, after holding up the jobs that can still go.
                tracing::warn!(job_id = %job.id, limit = limit.as_str(), domain_class,
                    "the send budget's next turn is past the job's life; dropped as stale");
                self.audit(job, audit::Outcome::Stale, user).await;
                return Outcome::Dropped(audit::Outcome::Stale);
            }
            Err(e) => return Outcome::Wait(format!("send budget: {e}")),
        }
        let content = match self.complete(draft, job.id).await {
            Ok(Some(content)) => content,
            Ok(None) => {
                // A newer email (or a password change) made this job's link dead: sending it
                // would only hand the user a link that fails.
                self.audit(job, audit::Outcome::DroppedSuperseded, user)
                    .await;
                return Outcome::Dropped(audit::Outcome::DroppedSuperseded);
            }
            Err(e) => return Outcome::Wait(e.to_string()),
        };
        let rendered = match self.renderer.render(&content, &job.locale) {
            Ok(r) => r,
            Err(e) => return Outcome::Dead(format!("cannot render: {e}")),
        };
        let started = Instant::now();
        let result = self
            .mailer
            .send(
                &self.from,
                Outgoing {
                    job_id: job.id,
                    composed_at: job.created_at.into(),
                    to: &to,
                    content: &rendered,
                },
            )
            .await;
        metrics::histogram!("smtp_send_duration_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => Outcome::Sent,
            Err(SendError::Transient(e)) => Outcome::Retry(e),
            Err(SendError::Throttled(e)) => self.throttled(&domain_key, domain_class, e).await,
            Err(SendError::Permanent(e)) => {
                self.audit(job, audit::Outcome::Dead, user).await;
                Outcome::Dead(e)
            }
            Err(SendError::NoSuchMailbox(e)) => {
                self.suppress(&to, &e).await;
                self.audit(job, audit::Outcome::Dead, user).await;
                Outcome::Dead(e)
            }
        }
    }

    /// What `job` needs looked up, or its plan when it needs nothing.
    fn lookup(&self, job: &Envelope) -> Lookup {
        if job.is_stale(self.clock.now()) {
            // Its link would be dead or its news old; sending it would only confuse.
            return Lookup::Ready(Plan::Drop {
                reason: audit::Outcome::Stale,
                user: None,
            });
        }
        match &job.job {
            Job::PasswordResetRequested {
                email,
                within_budget,
                ..
            } => {
                if !within_budget {
                    return Lookup::Ready(Plan::Drop {
                        reason: audit::Outcome::DroppedOverBudget,
                        user: None,
                    });
                }
                match email::normalize(email) {
                    Ok(address) => Lookup::ByEmailKey(address.key().to_owned()),
                    Err(_) => Lookup::Ready(Plan::Drop {
                        reason: audit::Outcome::DroppedInvalidAddress,
                        user: None,
                    }),
                }
            }
            Job::EmailVerification { user_id, .. } | Job::PasswordChanged { user_id, .. } => {
                Lookup::ById(*user_id)
            }
            // The notice goes to the account's stored spelling, never the one the stranger
            // typed (which may differ in case and bounce, and must not decide where the
            // owner's mail goes or whether it is suppressed).
            Job::AccountExistsNotice { email, .. } => match email::normalize(email) {
                Ok(address) => Lookup::ByEmailKey(address.key().to_owned()),
                Err(_) => Lookup::Ready(Plan::Drop {
                    reason: audit::Outcome::DroppedInvalidAddress,
                    user: None,
                }),
            },
        }
    }

    /// The plan of a job that needed an account looked up, given what was found.
    fn decide(&self, job: &Envelope, found: Option<&Recipient>) -> Plan {
        let base = &self.config.public_base_url;
        match (&job.job, found) {
            (Job::PasswordResetRequested { ip, .. }, Some(user)) => Plan::Send {
                to: user.email.clone(),
                user: Some(user.id),
                draft: Draft::PasswordReset {
                    recipient: user.clone(),
                    requested_from_ip: checked_ip(ip.as_deref()),
                },
            },
            (Job::PasswordResetRequested { email, .. }, None)
                if self.config.notify_unknown_recipients =>
            {
                match email::normalize(email) {
                    Ok(address) => Plan::Send {
                        to: address.address().to_owned(),
                        draft: Draft::Ready(EmailContent::NoAccount {
                            sign_up_url: format!("{base}/"),
                        }),
                        user: None,
                    },
                    Err(_) => Plan::Drop {
                        reason: audit::Outcome::DroppedInvalidAddress,
                        user: None,
                    },
                }
            }
            (Job::EmailVerification { .. }, Some(user)) if !user.email_verified => Plan::Send {
                to: user.email.clone(),
                user: Some(user.id),
                draft: Draft::EmailVerification {
                    recipient: user.clone(),
                },
            },
            (Job::EmailVerification { .. }, Some(user)) => Plan::Drop {
                reason: audit::Outcome::DroppedAlreadyVerified,
                user: Some(user.id),
            },
            // The notice goes to the address on file now, and only if the change it announces
            // happened: a later change does not make it untrue; an undone one (its version is
            // listed as undone; the undo moved the version forward) does.
            (
                Job::PasswordChanged {
                    password_version,
                    ip,
                    ..
                },
                Some(user),
            ) if user.password_version >= *password_version
                && !user.undone_password_versions.contains(password_version) =>
            {
                Plan::Send {
                    to: user.email.clone(),
                    draft: Draft::PasswordChanged {
                        recipient: user.clone(),
                        changed_at: job.created_at,
                        from_ip: checked_ip(ip.as_deref()),
                        version: *password_version,
                    },
                    user: Some(user.id),
                }
            }
            (Job::PasswordChanged { .. }, Some(user)) => Plan::Drop {
                reason: audit::Outcome::DroppedRolledBack,
                user: Some(user.id),
            },
            (
                Job::EmailVerification { user_id, .. } | Job::PasswordChanged { user_id, .. },
                None,
            ) => Plan::Drop {
                reason: audit::Outcome::DroppedUnknown,
                user: Some(*user_id),
            },
            (Job::PasswordResetRequested { .. }, None) => Plan::Drop {
                reason: audit::Outcome::DroppedUnknown,
                user: None,
            },
            // The account's own spelling when it is found; the typed one (normalised) only
            // when the account is gone since the attempt (as notices were sent before).
            (Job::AccountExistsNotice { email, .. }, found) => Plan::Send {
                to: found.map_or_else(
                    || {
                        email::normalize(email)
                            .map_or_else(|_| email.clone(), |a| a.address().to_owned())
                    },
                    |user| user.email.clone(),
                ),
                draft: Draft::Ready(EmailContent::AccountExists {
                    sign_in_url: format!("{base}/"),
                    forgot_password_url: links::page(base, links::FORGOT_PASSWORD_PATH),
                }),
                user: found.map(|user| user.id),
            },
        }
    }

    /// Counts the email to `to` against the recipient's budget. `None` when it may go out;
    /// otherwise what becomes of the job: dropped when the budget is spent, waiting when
    /// Redis cannot tell (never sent unchecked).
    async fn spend_budget(&self, job: &Envelope, to: &str, user: Option<Uuid>) -> Option<Outcome> {
        let recipient = recipient_budget::recipient_pseudonym(self.config.pseudonym_secret(), to);
        match self.budget.check(&self.redis, &recipient, job.id).await {
            Ok(verdict) if verdict.allows_sending() => None,
            Ok(_) => {
                metrics::counter!("mail_recipient_budget_hits_total", "kind" => job.job.kind())
                    .increment(1);
                tracing::warn!(job_id = %job.id, kind = job.job.kind(), recipient,
                    "the recipient's email budget is spent; not sending");
                self.audit(job, audit::Outcome::RecipientBudget, user).await;
                Some(Outcome::Dropped(audit::Outcome::RecipientBudget))
            }
            Err(e) => Some(Outcome::Wait(format!("recipient budget: {e}"))),
        }
    }

    /// The provider throttles mail to the job's domain: pause the domain for every replica,
    /// and let the job wait for the pause's end without spending an attempt (the provider
    /// refused the pace, not the message). With pauses off, or Redis unreachable, it is an
    /// ordinary retry.
    async fn throttled(
        &self,
        domain_key: &str,
        domain_class: &'static str,
        answer: String,
    ) -> Outcome {
        metrics::counter!("mail_smtp_throttled_total", "domain_class" => domain_class).increment(1);
        if !self.send_budget.pauses_on_throttling() {
            return Outcome::Retry(answer);
        }
        match self.send_budget.throttled(&self.redis, domain_key).await {
            Ok(wait) => {
                tracing::warn!(
                    domain = domain_key,
                    domain_class,
                    answer,
                    wait_ms = wait.as_millis() as u64,
                    "the provider throttles this domain; its mail pauses"
                );
                Outcome::Budget(BudgetWait {
                    wait,
                    limit: send_budget::Limit::Throttled,
                    domain_class,
                    answer: Some(answer),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not pause a throttled domain; retrying the job");
                Outcome::Retry(answer)
            }
        }
    }

    /// Mints the link a draft needs, if any, and returns the email's content; `None` when the
    /// job's link is dead already (a newer email or a password change superseded it).
    async fn complete(&self, draft: Draft, job: Uuid) -> Result<Option<EmailContent>, RedisError> {
        let base = &self.config.public_base_url;
        Ok(match draft {
            Draft::Ready(content) => Some(content),
            Draft::PasswordReset {
                recipient,
                requested_from_ip,
            } => {
                let Some(link) = self.mint(Purpose::PasswordReset, &recipient, job).await? else {
                    return Ok(None);
                };
                let code = self.issue_code(&recipient, &link).await?;
                Some(EmailContent::PasswordReset {
                    link: links::with_token(base, links::RESET_PASSWORD_PATH, &link.token),
                    code: reset_code::display(&code),
                    code_url: links::page(base, links::RESET_PASSWORD_PATH),
                    expires_in_minutes: link.left.div_ceil(60).max(1),
                    requested_from_ip,
                })
            }
            Draft::EmailVerification { recipient } => self
                .mint(Purpose::EmailVerify, &recipient, job)
                .await?
                .map(|link| EmailContent::EmailVerification {
                    link: links::with_token(base, links::VERIFY_EMAIL_PATH, &link.token),
                    expires_in_hours: link.left.div_ceil(3600).max(1),
                }),
            // The notice is true whatever became of its link, and goes without one when the
            // link is dead (a newer notice minted another) or would be out of place: the
            // password changed again since (a late notice must neither lock the newer password
            // nor kill the lock link of the newer change's notice).
            Draft::PasswordChanged {
                recipient,
                changed_at,
                from_ip,
                version,
            } => Some(EmailContent::PasswordChanged {
                changed_at,
                from_ip,
                forgot_password_url: links::page(base, links::FORGOT_PASSWORD_PATH),
                lock_url: if recipient.password_version == version {
                    self.mint(Purpose::AccountLock, &recipient, job)
                        .await?
                        .map(|link| links::with_token(base, links::LOCK_ACCOUNT_PATH, &link.token))
                } else {
                    None
                },
            }),
        })
    }

    /// Records the one-time code of a reset link (see [`shared::reset_code`]) and returns it.
    async fn issue_code(&self, user: &Recipient, link: &Minted) -> Result<String, RedisError> {
        let record = reset_code::Link {
            user: user.id,
            email_key: &user.email_key,
            password_version: user.password_version,
            generation: link.generation,
            signed_at: link.signed_at,
            token: &link.token,
            left_secs: link.left,
        };
        reset_code::issue(&self.redis, self.config.pseudonym_secret(), &record).await
    }

    /// The link of `job`: issued at the job's first attempt (the user's generation for this
    /// purpose bumped, so older links die) and recorded, so every later attempt and
    /// redelivery signs the very same token. A repeat after a lost SMTP reply is then
    /// byte-identical, and the copy the provider may already have delivered keeps working.
    /// With the token, the seconds the link has left (a retry sends the link of the first
    /// attempt, so less than the full lifetime). `None` when the recorded link is dead by
    /// now: a newer email bumped the generation, the password changed, or it expired.
    async fn mint(
        &self,
        purpose: Purpose,
        user: &Recipient,
        job: Uuid,
    ) -> Result<Option<Minted>, RedisError> {
        let generation_key = self.keys().token_generation(user.id, purpose);
        let link_key = self.keys().job_link(user.id, job);
        let max_age = match purpose {
            Purpose::PasswordReset => self.config.reset_token_max_age,
            Purpose::EmailVerify => self.config.verify_token_max_age,
            Purpose::AccountLock => {
                std::time::Duration::from_secs(shared::token::ACCOUNT_LOCK_MAX_AGE_SECS)
            }
        };
        // Keep the generation and the job's record a little longer than any link can live.
        let ttl_ms = (max_age.as_secs() + 3600) * 1000;
        let now_ms = self.clock.now().timestamp_millis();
        let script = redis::Script::new(shared::keys::MINT_ONCE_LUA);
        let (minted, current): (String, String) = self
            .redis
            .run(|mut c| async move {
                script
                    .key(&generation_key)
                    .key(&link_key)
                    .arg(now_ms)
                    .arg(ttl_ms)
                    .arg(user.password_version)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut fields = minted.split(':').map(str::parse::<i64>);
        let (Some(Ok(generation)), Some(Ok(signed_at)), Some(Ok(password_version))) =
            (fields.next(), fields.next(), fields.next())
        else {
            tracing::warn!(job_id = %job, "unreadable link record; no link sent");
            return Ok(None);
        };
        if current.parse::<i64>().ok() != Some(generation)
            || password_version != i64::from(user.password_version)
        {
            return Ok(None);
        }
        let left = signed_at + i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
            - self.clock.now().timestamp();
        let Ok(left @ 1..) = u64::try_from(left) else {
            return Ok(None);
        };
        let claims = Claims::for_job(user.id, user.password_version, generation, job);
        Ok(Some(Minted {
            token: self.tokens.sign(purpose, &claims, signed_at),
            left,
            generation,
            signed_at,
        }))
    }

    /// Puts the address whose mailbox does not exist on the suppression list. A failure is
    /// logged: the job is dead-lettered either way.
    async fn suppress(&self, to: &str, answer: &str) {
        match shared::suppression::add(&self.db, &address_key(to), to, answer).await {
            Ok(()) => {
                metrics::counter!("mail_suppressions_total").increment(1);
                tracing::warn!(recipient = %recipient_budget::recipient_pseudonym(self.config.pseudonym_secret(), to),
                    "no such mailbox; the address is suppressed");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not suppress an address whose mailbox does not exist")
            }
        }
    }

    /// Whether the email of `job` was delivered already (its marker is set).
    pub async fn already_sent(&self, job: Uuid) -> Result<bool, RedisError> {
        let sent_key = self.keys().job_sent(job);
        self.redis
            .run(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(&sent_key)
                    .query_async::<bool>(&mut c)
                    .await
            })
            .await
    }

    /// Records a delivered email: the job's idempotency marker and its audit row.
    pub async fn record_sent(&self, job: &Envelope, user: Option<Uuid>) {
        self.mark_sent(job.id).await;
        self.audit(job, audit::Outcome::Sent, user).await;
    }

    async fn mark_sent(&self, job: Uuid) {
        let key = self.keys().job_sent(job);
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

    /// Writes the audit row of a final decision. Audit failures are logged, not retried: the
    /// email's fate must not depend on the audit table.
    pub async fn audit(&self, job: &Envelope, outcome: audit::Outcome, user: Option<Uuid>) {
        self.audit_log
            .record([self.audit_row(job, outcome, user)])
            .await;
    }

    /// The audit row of a final decision about `job`.
    pub fn audit_row(
        &self,
        job: &Envelope,
        outcome: audit::Outcome,
        user: Option<Uuid>,
    ) -> AuditRow {
        let (address, ip) = match &job.job {
            Job::PasswordResetRequested { email, ip, .. } => (email.as_str(), ip.as_deref()),
            Job::EmailVerification { email, .. } | Job::AccountExistsNotice { email, .. } => {
                (email.as_str(), None)
            }
            Job::PasswordChanged { email, ip, .. } => (email.as_str(), ip.as_deref()),
        };
        AuditRow {
            action: audit::Action::of_job(&job.job),
            outcome,
            user_id: user,
            ip: ip.and_then(|ip| ip.parse::<IpAddr>().ok()),
            address_hash: email::normalize(address)
                .ok()
                .map(|a| pseudonym(self.config.pseudonym_secret(), "email", a.key())),
            request_id: job.trace.request_id.clone(),
        }
    }
}

/// A job's link as minted: the token, the seconds it has left, and what it was minted under.
struct Minted {
    token: String,
    left: u64,
    generation: i64,
    signed_at: i64,
}

/// The key an address is suppressed under (see [`shared::email`]); an address that does not
/// parse is keyed by its lower-cased text.
/// The spelling mail to `to` goes out with (and is suppressed under): normalised, the domain
/// in lower-case ASCII, the local part as it is.
fn deliverable(to: &str) -> String {
    email::normalize(to).map_or_else(|_| to.to_owned(), |a| a.address().to_owned())
}

fn address_key(to: &str) -> String {
    email::normalize(to).map_or_else(|_| to.to_lowercase(), |a| a.key().to_owned())
}

/// An IP from the job, only if it really is one: the text part shows it verbatim, so a
/// forged job must not be able to add lines to the email.
fn checked_ip(ip: Option<&str>) -> Option<String> {
    ip.and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mail_a_stranger_can_trigger_at_will_counts_against_the_recipient_budget() {
        let url = || "https://account.example.test/x".to_owned();
        let counted = [
            Draft::Ready(EmailContent::AccountExists {
                sign_in_url: url(),
                forgot_password_url: url(),
            }),
            Draft::Ready(EmailContent::NoAccount { sign_up_url: url() }),
        ];
        assert!(counted.iter().all(Draft::counts_against_recipient_budget));
        let recipient = || Recipient {
            id: Uuid::nil(),
            email_key: "ann@example.org".into(),
            email: "ann@example.org".into(),
            password_version: 1,
            email_verified: false,
            undone_password_versions: Vec::new(),
        };
        let reset = Draft::PasswordReset {
            recipient: recipient(),
            requested_from_ip: None,
        };
        assert!(!reset.counts_against_recipient_budget());
        let changed = Draft::PasswordChanged {
            recipient: recipient(),
            changed_at: chrono::Utc::now(),
            from_ip: None,
            version: 1,
        };
        assert!(!changed.counts_against_recipient_budget());
        let verification = Draft::EmailVerification {
            recipient: recipient(),
        };
        assert!(verification.counts_against_recipient_budget());
    }
}
