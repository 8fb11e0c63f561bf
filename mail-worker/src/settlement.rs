//! What becomes of a delivery once its job's outcome is known, decided without I/O:
//! [`settle`] turns a [`JobOutcome`] into one [`Settlement`] (ack; re-publish to a delay queue
//! or a budget wait queue with these headers; dead-letter with this reason), together with
//! the job's audit outcome and its `jobs_total` label. The handler carries it out (see
//! [`crate::handler`]): one place writes every job's audit row and metric, so no path can
//! dead-letter a job without its row.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString};
use shared::{
    audit,
    message::Envelope,
    topology::{DEAD_ROUTING_KEY, Topology},
};

use crate::{
    process::{BudgetWait, JobOutcome},
    retry,
};

/// The `jobs_total` label of a job re-published for another attempt.
const RETRIED: &str = "retried";
/// The `jobs_total` label of a job that waits for a dependency of ours.
const WAITING: &str = "waiting";
/// The `jobs_total` label of a job that waits for its turn at a send budget.
const BUDGET_WAIT: &str = "budget_wait";
/// The `jobs_total` label of a job of a newer release left for a worker that knows it.
pub const HELD_FOR_NEWER: &str = "held_for_newer";
/// The `jobs_total` label of a job of a newer release that no worker took before its
/// `not_after`.
pub const EXPIRED_NEWER: &str = "expired";
/// How long a job of a newer release waits before it is offered again (a budget wait queue's
/// step, so no queue is added for it): during a rolling deploy the next worker to take it is
/// soon a newer one; after a rollback it comes back until one is, or it is useless.
pub const HOLD_FOR_NEWER_MS: u64 = 32_000;
const _: () = assert!(shared::topology::BUDGET_WAIT_STEPS_MS[7] == HOLD_FOR_NEWER_MS);

/// What the broker is told about a delivery, and what is recorded about its job.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub action: Action,
    /// The outcome of the job's audit row: its final decision. `None` while the job is to be
    /// tried again, for a repeat of a job decided before, and for a delivery that is no job.
    pub audit: Option<audit::Outcome>,
    /// The `outcome` label of `jobs_total`.
    pub label: &'static str,
}

/// What the broker is told about a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Acknowledge: the job is done.
    Ack,
    /// Re-publish `body` to the delay queue of `delay_secs`, then ack: a retry (its attempt
    /// counted in `body`) or a wait for a dependency of ours (not counted). The message
    /// expires after `expiration_ms`, 80–100 % of the delay, so jobs that failed together do
    /// not all come back in the same instant.
    Delay {
        delay_secs: u64,
        expiration_ms: u64,
        body: Vec<u8>,
        headers: FieldTable,
        /// Why the job waits (for the log).
        error: String,
    },
    /// Re-publish the job as it is (same body, same attempt) to the budget wait queue of
    /// `step_ms` (one of [`shared::topology::BUDGET_WAIT_STEPS_MS`]), then ack. It expires
    /// with the queue's own delay, so the queue stays in order.
    Park { step_ms: u64, headers: FieldTable },
    /// Re-publish the delivery as it is to `mail.dead` (its headers carrying the reason and
    /// time), then ack.
    DeadLetter { reason: String, headers: FieldTable },
}

/// A re-publish that comes before a delivery's ack.
pub struct Republish {
    pub routing_key: String,
    /// The body to publish; `None`: the delivery's own.
    pub body: Option<Vec<u8>>,
    /// The per-message expiry, if any.
    pub expiration_ms: Option<u64>,
    pub headers: FieldTable,
}

impl Action {
    /// Where the delivery goes before it is acked; `None` when it is only acked.
    pub fn into_republish(self) -> Option<Republish> {
        match self {
            Action::Ack => None,
            Action::Delay {
                delay_secs,
                expiration_ms,
                body,
                headers,
                ..
            } => Some(Republish {
                routing_key: Topology::retry_routing_key(delay_secs),
                body: Some(body),
                expiration_ms: Some(expiration_ms),
                headers,
            }),
            Action::Park { step_ms, headers } => Some(Republish {
                routing_key: Topology::budget_wait_routing_key(step_ms),
                body: None,
                expiration_ms: Some(step_ms),
                headers,
            }),
            Action::DeadLetter { headers, .. } => Some(Republish {
                routing_key: DEAD_ROUTING_KEY.to_owned(),
                body: None,
                expiration_ms: None,
                headers,
            }),
        }
    }
}

/// What the settlement of a job is decided from besides its outcome: the retry schedule
/// (`MAIL_RETRY_SCHEDULE_SECS`), the time, and a uniform draw in `[0, 1)` that places a
/// delayed job's expiry within its jitter (see [`retry::jittered_expiration_ms`]).
#[derive(Debug, Clone, Copy)]
pub struct Circumstances<'a> {
    pub schedule: &'a [u64],
    pub now: DateTime<Utc>,
    pub jitter: f64,
}

/// The settlement of a delivery of `job` (with its AMQP `headers`) after `outcome`.
pub fn settle(
    outcome: &JobOutcome,
    job: &Envelope,
    headers: Option<&FieldTable>,
    at: Circumstances<'_>,
) -> Settlement {
    match outcome {
        JobOutcome::Sent => ack(Some(audit::Outcome::Sent), audit::Outcome::Sent.as_str()),
        // A repeat is no new decision about the account: no audit row.
        JobOutcome::Dropped(audit::Outcome::Duplicate) => {
            ack(None, audit::Outcome::Duplicate.as_str())
        }
        JobOutcome::Dropped(reason) => ack(Some(*reason), reason.as_str()),
        JobOutcome::Retry(error) => retry(job, headers, at, error),
        JobOutcome::DependencyDown(error) => dependency_down(job, headers, at, error),
        JobOutcome::BudgetWait(budget) => budget_wait(job, headers, at.now, budget),
        JobOutcome::Dead(reason) => dead_letter(
            retry::with_history(headers, job.attempt + 1, at.now, reason),
            reason,
            at.now,
            Some(audit::Outcome::Dead),
        ),
    }
}

/// The settlement of a delivery that is no job (`error` says why): a dead letter as it is,
/// with no audit row (there is no job to audit).
pub fn undecodable(headers: Option<&FieldTable>, error: &str, now: DateTime<Utc>) -> Settlement {
    dead_letter(
        headers.cloned().unwrap_or_default(),
        &format!("undecodable: {error}"),
        now,
        None,
    )
}

/// A job of a newer release (see [`shared::message::Newer`]) is never dead-lettered nor
/// dropped while it is of use: it goes back, as it is, to wait [`HOLD_FOR_NEWER_MS`] and be
/// offered again, to a newer worker if one runs. Past its `not_after` (the envelope's promise
/// every version keeps) it is acked, as any worker would drop it.
pub fn held_for_newer(
    headers: Option<&FieldTable>,
    not_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Settlement {
    if now > not_after {
        return ack(None, EXPIRED_NEWER);
    }
    let mut headers = headers.cloned().unwrap_or_default();
    let held = retry::held(Some(&headers)).saturating_add(1);
    headers.insert(retry::HELD_HEADER.into(), AMQPValue::LongUInt(held));
    Settlement {
        action: Action::Park {
            step_ms: HOLD_FOR_NEWER_MS,
            headers,
        },
        audit: None,
        label: HELD_FOR_NEWER,
    }
}

fn ack(audit: Option<audit::Outcome>, label: &'static str) -> Settlement {
    Settlement {
        action: Action::Ack,
        audit,
        label,
    }
}

/// A job whose dependency is down waits in a delay queue. Not a delivery attempt: an outage
/// of our own never dead-letters mail. The job backs off along the schedule by its own count
/// of waits.
fn dependency_down(
    job: &Envelope,
    headers: Option<&FieldTable>,
    at: Circumstances<'_>,
    error: &str,
) -> Settlement {
    let wait = retry::waits(headers).saturating_add(1);
    let delay_secs = retry::wait_delay(at.schedule, wait);
    let mut headers =
        retry::with_history(headers, job.attempt, at.now, &format!("waiting: {error}"));
    headers.insert(retry::WAITS_HEADER.into(), AMQPValue::LongUInt(wait));
    Settlement {
        action: Action::Delay {
            delay_secs,
            expiration_ms: retry::jittered_expiration_ms(delay_secs, at.jitter),
            body: job.encode(),
            headers,
            error: error.to_owned(),
        },
        audit: None,
        label: WAITING,
    }
}

/// A job waits for its turn at a send budget in the budget wait queue of its wait.
fn budget_wait(
    job: &Envelope,
    headers: Option<&FieldTable>,
    now: DateTime<Utc>,
    budget: &BudgetWait,
) -> Settlement {
    // The attempt and `x-waits` stay as they are: waiting for a turn is neither a failure
    // nor an outage. The history gets a line only for the provider's throttling answer (a
    // burst would otherwise add hundreds of lines to a job).
    let mut headers = match &budget.answer {
        Some(answer) => {
            retry::with_history(headers, job.attempt, now, &format!("throttled: {answer}"))
        }
        None => headers.cloned().unwrap_or_default(),
    };
    let waits = retry::budget_waits(Some(&headers)).saturating_add(1);
    headers.insert(
        retry::BUDGET_WAITS_HEADER.into(),
        AMQPValue::LongUInt(waits),
    );
    let wait_ms = u64::try_from(budget.wait.as_millis()).unwrap_or(u64::MAX);
    Settlement {
        action: Action::Park {
            step_ms: Topology::budget_wait_step(wait_ms),
            headers,
        },
        audit: None,
        label: BUDGET_WAIT,
    }
}

/// A failed delivery waits in the delay queue of its next attempt, or is dead-lettered when
/// the schedule is spent.
fn retry(
    job: &Envelope,
    headers: Option<&FieldTable>,
    at: Circumstances<'_>,
    error: &str,
) -> Settlement {
    let attempt = job.attempt + 1;
    let headers = retry::with_history(headers, attempt, at.now, error);
    match retry::delay_for(at.schedule, attempt) {
        Some(delay_secs) => Settlement {
            action: Action::Delay {
                delay_secs,
                expiration_ms: retry::jittered_expiration_ms(delay_secs, at.jitter),
                body: Envelope {
                    attempt,
                    ..job.clone()
                }
                .encode(),
                headers,
                error: error.to_owned(),
            },
            audit: None,
            label: RETRIED,
        },
        None => dead_letter(
            headers,
            &format!("retries exhausted after {attempt} attempts; last error: {error}"),
            at.now,
            Some(audit::Outcome::Dead),
        ),
    }
}

/// A dead letter: `headers` with the reason (at most 1,000 bytes) and the time added.
fn dead_letter(
    mut headers: FieldTable,
    reason: &str,
    now: DateTime<Utc>,
    audit: Option<audit::Outcome>,
) -> Settlement {
    let reason = retry::cut(reason, 1000).to_owned();
    headers.insert(
        retry::DEAD_REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.clone())),
    );
    headers.insert(
        retry::DEAD_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(now.to_rfc3339())),
    );
    Settlement {
        action: Action::DeadLetter { reason, headers },
        audit,
        label: audit::Outcome::Dead.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::message::{Job, Trace};

    use super::*;
    use crate::send_budget::Limit;

    const SCHEDULE: [u64; 2] = [60, 600];

    fn at() -> Circumstances<'static> {
        Circumstances {
            schedule: &SCHEDULE,
            now: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
            jitter: 0.5,
        }
    }

    fn job(attempt: u32) -> Envelope {
        let job = Job::PasswordResetRequested {
            email: "ann@example.org".into(),
            ip: None,
            within_budget: true,
            user_id: None,
        };
        Envelope {
            attempt,
            ..Envelope::new(
                job,
                at().now,
                chrono::Duration::hours(1),
                "en",
                Trace::default(),
            )
        }
    }

    fn headers(counts: &[(&str, u32)]) -> FieldTable {
        let mut headers = FieldTable::default();
        for (name, n) in counts {
            headers.insert((*name).into(), AMQPValue::LongUInt(*n));
        }
        headers
    }

    /// Where a settlement sends the delivery, in one line: `ack`, `delay <secs> attempt <n>`,
    /// `park <ms>`, `dead: <reason>`.
    fn destination(action: &Action) -> String {
        match action {
            Action::Ack => "ack".to_owned(),
            Action::Delay {
                delay_secs, body, ..
            } => {
                let attempt = Envelope::decode(body).expect("a job").attempt;
                format!("delay {delay_secs} attempt {attempt}")
            }
            Action::Park { step_ms, .. } => format!("park {step_ms}"),
            Action::DeadLetter { reason, .. } => format!("dead: {reason}"),
        }
    }

    fn published_headers(action: &Action) -> Option<&FieldTable> {
        match action {
            Action::Ack => None,
            Action::Delay { headers, .. }
            | Action::Park { headers, .. }
            | Action::DeadLetter { headers, .. } => Some(headers),
        }
    }

    fn budget(wait_ms: u64, answer: Option<&str>) -> JobOutcome {
        JobOutcome::BudgetWait(BudgetWait {
            wait: Duration::from_millis(wait_ms),
            limit: Limit::Throttled,
            domain_class: "other",
            answer: answer.map(str::to_owned),
        })
    }

    /// An outcome, the job's attempt and headers; where it goes, its audit outcome, its label
    /// and the history it carries.
    type Case = (
        JobOutcome,
        u32,
        FieldTable,
        &'static str,
        Option<audit::Outcome>,
        &'static str,
        Vec<String>,
    );

    #[test]
    fn a_job_of_a_newer_release_waits_as_it_is_until_it_is_useless() {
        let now = at().now;
        let first = held_for_newer(None, now + chrono::Duration::minutes(5), now);
        assert_eq!(first.label, HELD_FOR_NEWER);
        assert_eq!(first.audit, None, "no decision about it is taken");
        let Action::Park { step_ms, headers } = &first.action else {
            panic!("{first:?}");
        };
        assert_eq!(*step_ms, HOLD_FOR_NEWER_MS);
        assert_eq!(retry::held(Some(headers)), 1);
        let again = held_for_newer(Some(headers), now + chrono::Duration::minutes(5), now);
        let Action::Park { headers, .. } = &again.action else {
            panic!("{again:?}");
        };
        assert_eq!(retry::held(Some(headers)), 2, "counted, body untouched");
        let republish = again.action.clone().into_republish().expect("re-published");
        assert!(republish.body.is_none(), "the delivery's own bytes");
        assert_eq!(republish.expiration_ms, Some(HOLD_FOR_NEWER_MS));

        let late = held_for_newer(Some(headers), now - chrono::Duration::seconds(1), now);
        assert_eq!(
            (late.action, late.audit, late.label),
            (Action::Ack, None, EXPIRED_NEWER)
        );
    }

    #[test]
    fn every_outcome_settles_to_one_destination_audit_outcome_and_label() {
        use audit::Outcome::{Dead, DroppedUnknown, Duplicate, Sent};
        let retry = || JobOutcome::Retry("451 try later".into());
        let down = || JobOutcome::DependencyDown("database: gone".into());
        let t = "2026-11-26T10:00:00Z";
        #[rustfmt::skip]
        let table: Vec<Case> = vec![
            (JobOutcome::Sent, 0, headers(&[]), "ack", Some(Sent), "sent", vec![]),
            (JobOutcome::Dropped(DroppedUnknown), 0, headers(&[]), "ack", Some(DroppedUnknown), "dropped_unknown", vec![]),
            // A repeat of a job decided before is no new decision.
            (JobOutcome::Dropped(Duplicate), 1, headers(&[]), "ack", None, "duplicate", vec![]),
            // A failure waits in the delay queue of its attempt …
            (retry(), 0, headers(&[]), "delay 60 attempt 1", None, "retried",
                vec![format!("attempt 1 at {t}: 451 try later")]),
            (retry(), 1, headers(&[]), "delay 600 attempt 2", None, "retried",
                vec![format!("attempt 2 at {t}: 451 try later")]),
            // … until the schedule is spent: a dead letter, audited.
            (retry(), 2, headers(&[]), "dead: retries exhausted after 3 attempts; last error: 451 try later",
                Some(Dead), "dead", vec![format!("attempt 3 at {t}: 451 try later")]),
            // A dependency of ours down: no attempt spent, backing off by its own waits.
            (down(), 1, headers(&[]), "delay 60 attempt 1", None, "waiting",
                vec![format!("attempt 1 at {t}: waiting: database: gone")]),
            (down(), 0, headers(&[(retry::WAITS_HEADER, 5)]), "delay 600 attempt 0", None, "waiting",
                vec![format!("attempt 0 at {t}: waiting: database: gone")]),
            // A send budget's turn: the longest waiting step not longer than the wait.
            (budget(1_500, None), 0, headers(&[]), "park 1000", None, "budget_wait", vec![]),
            (budget(100, Some("421 slow down")), 1, headers(&[(retry::BUDGET_WAITS_HEADER, 2)]), "park 250",
                None, "budget_wait", vec![format!("attempt 1 at {t}: throttled: 421 slow down")]),
            // Every dead letter is audited, whatever made it one.
            (JobOutcome::Dead("cannot render: template error".into()), 0, headers(&[]),
                "dead: cannot render: template error", Some(Dead), "dead",
                vec![format!("attempt 1 at {t}: cannot render: template error")]),
            (JobOutcome::Dead("550 no such user".into()), 1, headers(&[]), "dead: 550 no such user",
                Some(Dead), "dead", vec![format!("attempt 2 at {t}: 550 no such user")]),
        ];
        for (outcome, attempt, original, to, audit, label, history) in table {
            let settled = settle(&outcome, &job(attempt), Some(&original), at());
            assert_eq!(destination(&settled.action), to, "{outcome:?}");
            assert_eq!(settled.audit, audit, "{outcome:?}");
            assert_eq!(settled.label, label, "{outcome:?}");
            assert_eq!(
                retry::history(published_headers(&settled.action)),
                history,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn waits_for_a_dependency_and_for_a_budget_are_counted_apart() {
        let down = JobOutcome::DependencyDown("redis: gone".into());
        let original = headers(&[(retry::WAITS_HEADER, 2), (retry::BUDGET_WAITS_HEADER, 7)]);
        let settled = settle(&down, &job(0), Some(&original), at());
        let published = published_headers(&settled.action);
        assert_eq!(retry::waits(published), 3);
        assert_eq!(retry::budget_waits(published), 7);

        let settled = settle(&budget(300, None), &job(0), Some(&original), at());
        let published = published_headers(&settled.action);
        assert_eq!(retry::waits(published), 2);
        assert_eq!(retry::budget_waits(published), 8);
    }

    #[test]
    fn a_delayed_job_expires_within_its_jitter_and_a_parked_one_with_its_queue() {
        let retry = JobOutcome::Retry("timed out".into());
        for (jitter, expected) in [(0.0, 48_000), (0.5, 54_000), (0.999_999, 60_000)] {
            let settled = settle(&retry, &job(0), None, Circumstances { jitter, ..at() });
            let republish = settled.action.into_republish().expect("re-published");
            assert_eq!(republish.expiration_ms, Some(expected), "{jitter}");
            assert_eq!(republish.routing_key, Topology::retry_routing_key(60));
        }
        let parked = settle(&budget(2_500, None), &job(0), None, at());
        let republish = parked.action.into_republish().expect("re-published");
        assert_eq!(republish.expiration_ms, Some(2_000));
        assert_eq!(
            republish.routing_key,
            Topology::budget_wait_routing_key(2_000)
        );
        assert_eq!(republish.body, None, "the job as it is");
        assert!(
            settle(&JobOutcome::Sent, &job(0), None, at())
                .action
                .into_republish()
                .is_none()
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_original_headers_and_adds_its_reason_and_time() {
        let mut original = headers(&[]);
        original.insert("x-request-id".into(), AMQPValue::LongString("r1".into()));
        let long = "x".repeat(3000);
        let settled = settle(&JobOutcome::Dead(long), &job(0), Some(&original), at());
        let republish = settled.action.into_republish().expect("re-published");
        assert_eq!(republish.routing_key, DEAD_ROUTING_KEY);
        assert_eq!(republish.body, None, "the delivery as it is");
        assert_eq!(republish.expiration_ms, None);
        let headers = Some(&republish.headers);
        let reason = retry::string_header(headers, retry::DEAD_REASON_HEADER).expect("reason");
        assert_eq!(reason.len(), 1000, "cut to 1,000 characters");
        assert_eq!(
            retry::string_header(headers, retry::DEAD_AT_HEADER).as_deref(),
            Some("2026-11-26T10:00:00+00:00")
        );
        assert_eq!(
            retry::string_header(headers, "x-request-id").as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn a_delivery_that_is_no_job_is_a_dead_letter_without_an_audit_row() {
        let settled = undecodable(None, "not a valid envelope", at().now);
        assert_eq!(
            destination(&settled.action),
            "dead: undecodable: not a valid envelope"
        );
        assert_eq!(settled.audit, None);
        assert_eq!(settled.label, "dead");
    }
}
