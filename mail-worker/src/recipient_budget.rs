//! The per-recipient budget: at most `MAIL_PER_RECIPIENT_PER_HOUR` emails to one address in a
//! sliding window, whatever their kind, counted right before each send.
//!
//! Why in the worker: every email passes here, whichever request (or dead-letter replay)
//! queued it, so no path — sign-up notices, verification emails, no-account notices, reset
//! links, password-changed notices — can make the service flood a mailbox. The api's
//! forgot-password budget stays in front of it (it also keeps reset links from being minted
//! again and again).
//!
//! The log lives in Redis under an HMAC of the address key (never the address), one key per
//! recipient, and is updated by one single-key script (valid on Redis Cluster). Its members are
//! job ids, so a job that is retried or redelivered is counted once.

use std::time::Duration;

use redis::Script;
use shared::{
    email,
    keys::pseudonym,
    redis_pool::{RedisError, RedisPool},
};
use uuid::Uuid;

/// What the budget says about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget; the job has just been counted.
    Counted,
    /// The job was counted by an earlier attempt (a retry or a redelivery): send it, it costs
    /// nothing more.
    AlreadyCounted,
    /// The recipient has had the budget's worth of emails in the window: do not send.
    Refused,
}

impl Verdict {
    /// Reads the script's verdict code (see `recipient_budget.lua`).
    fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Verdict::Counted),
            2 => Some(Verdict::AlreadyCounted),
            0 => Some(Verdict::Refused),
            _ => None,
        }
    }

    /// Whether the email may go out.
    pub fn allows_sending(self) -> bool {
        self != Verdict::Refused
    }
}

/// Why the budget could not be consulted. The job waits and is tried again; it is never sent
/// unchecked.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("the recipient budget script answered an unknown verdict {0}")]
    UnknownVerdict(i64),
}

/// The budget's settings and its script.
pub struct RecipientBudget {
    limit: u32,
    window: Duration,
    script: Script,
}

impl RecipientBudget {
    /// At most `limit` emails per recipient in any `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            script: Script::new(include_str!("recipient_budget.lua")),
        }
    }

    /// Counts `job` against the budget of the recipient whose [`recipient_pseudonym`] is
    /// `recipient`.
    pub async fn check(
        &self,
        redis: &RedisPool,
        recipient: &str,
        job: Uuid,
    ) -> Result<Verdict, BudgetError> {
        let key = redis.keys().mail_recipient(recipient);
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let limit = self.limit;
        let script = &self.script;
        let (code, _in_window): (i64, i64) = redis
            .run(|mut c| async move {
                script
                    .key(&key)
                    .arg(window_ms)
                    .arg(limit)
                    .arg(job.to_string())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Verdict::from_code(code).ok_or(BudgetError::UnknownVerdict(code))
    }
}

/// The pseudonym naming the budget of the recipient `to` (as the email will be addressed):
/// the same HMAC of the address key as in audit rows and the api's rate-limit keys.
pub fn recipient_pseudonym(secret: &[u8], to: &str) -> String {
    pseudonym(secret, "email", &recipient_key(to))
}

/// The subject of the budget: the address key (so every spelling of one mailbox — case,
/// Unicode or punycode domain — shares one budget), or, for an address that no longer passes
/// normalisation (an old row), its trimmed lower-case text, which is still one budget per
/// recipient.
pub fn recipient_key(to: &str) -> String {
    match email::normalize(to) {
        Ok(address) => address.key().to_owned(),
        Err(_) => to.trim().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shared::keys::Keys;

    use super::*;

    #[test]
    fn the_script_verdict_codes_map_to_verdicts() {
        assert_eq!(Verdict::from_code(1), Some(Verdict::Counted));
        assert_eq!(Verdict::from_code(2), Some(Verdict::AlreadyCounted));
        assert_eq!(Verdict::from_code(0), Some(Verdict::Refused));
        assert_eq!(Verdict::from_code(3), None);
        assert!(Verdict::Counted.allows_sending());
        assert!(Verdict::AlreadyCounted.allows_sending());
        assert!(!Verdict::Refused.allows_sending());
    }

    #[test]
    fn every_spelling_of_one_mailbox_shares_one_budget() {
        let key = recipient_key("Ann@bücher.de");
        for spelling in [
            "ann@BÜCHER.de",
            "ANN@xn--bcher-kva.de",
            " ann@b\u{fc}cher\u{3002}de ",
        ] {
            assert_eq!(recipient_key(spelling), key, "{spelling:?}");
        }
        assert_ne!(recipient_key("bob@bücher.de"), key);
        // An address that no longer normalises still has a budget of its own.
        assert_eq!(recipient_key(" Odd@Host "), "odd@host");
    }

    // The script against the real Redis (TEST_REDIS_URL), one key namespace per test.

    fn pool() -> RedisPool {
        RedisPool::new(
            &e2e::redis_url(),
            Keys::new(format!("budget-{}:", e2e::unique_id())),
        )
        .unwrap()
    }

    const SECRET: &[u8] = b"budget-test-secret-0123456789abcdef";

    async fn verdicts(
        budget: &RecipientBudget,
        redis: &RedisPool,
        to: &str,
        jobs: &[Uuid],
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        for job in jobs {
            let recipient = recipient_pseudonym(SECRET, to);
            out.push(budget.check(redis, &recipient, *job).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_recipient_gets_at_most_the_limit_and_others_keep_their_own_budget() {
        let redis = pool();
        let budget = RecipientBudget::new(3, Duration::from_secs(3600));
        let jobs: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        use Verdict::{Counted, Refused};
        assert_eq!(
            verdicts(&budget, &redis, "victim@example.org", &jobs).await,
            [Counted, Counted, Counted, Refused, Refused]
        );
        // Another spelling of the same mailbox is the same recipient.
        assert_eq!(
            verdicts(&budget, &redis, "VICTIM@Example.ORG", &[Uuid::new_v4()]).await,
            [Refused]
        );
        assert_eq!(
            verdicts(&budget, &redis, "bystander@example.org", &jobs[..3]).await,
            [Counted, Counted, Counted]
        );
    }

    #[tokio::test]
    async fn a_retried_or_redelivered_job_is_allowed_without_being_counted_again() {
        let redis = pool();
        let budget = RecipientBudget::new(2, Duration::from_secs(3600));
        let first = Uuid::new_v4();
        use Verdict::{AlreadyCounted, Counted, Refused};
        // The first job is tried three times (two retries), then a second and third job come.
        assert_eq!(
            verdicts(&budget, &redis, "ann@example.org", &[first, first, first]).await,
            [Counted, AlreadyCounted, AlreadyCounted]
        );
        let second = Uuid::new_v4();
        assert_eq!(
            verdicts(
                &budget,
                &redis,
                "ann@example.org",
                &[second, Uuid::new_v4(), second]
            )
            .await,
            [Counted, Refused, AlreadyCounted],
            "the budget counted jobs, not attempts"
        );
        // A redelivery of a counted job still goes out once the budget is spent.
        assert_eq!(
            verdicts(&budget, &redis, "ann@example.org", &[first]).await,
            [AlreadyCounted]
        );
    }

    #[tokio::test]
    async fn the_window_slides_on_redis_time() {
        let redis = pool();
        let budget = RecipientBudget::new(1, Duration::from_secs(1));
        let to = "slide@example.org";
        assert_eq!(
            verdicts(&budget, &redis, to, &[Uuid::new_v4()]).await,
            [Verdict::Counted]
        );
        assert_eq!(
            verdicts(&budget, &redis, to, &[Uuid::new_v4()]).await,
            [Verdict::Refused]
        );
        let later = e2e::poll_until(Duration::from_secs(5), || async {
            let recipient = recipient_pseudonym(SECRET, to);
            let v = budget
                .check(&redis, &recipient, Uuid::new_v4())
                .await
                .ok()?;
            (v == Verdict::Counted).then_some(())
        })
        .await;
        assert!(
            later.is_some(),
            "the budget comes back once the window has passed"
        );
    }

    #[tokio::test]
    async fn the_log_is_kept_under_a_pseudonym_and_expires_with_the_window() {
        let redis = pool();
        let budget = RecipientBudget::new(3, Duration::from_secs(60));
        let to = "private@example.org";
        let recipient = recipient_pseudonym(SECRET, to);
        assert_eq!(recipient, pseudonym(SECRET, "email", "private@example.org"));
        budget
            .check(&redis, &recipient, Uuid::new_v4())
            .await
            .unwrap();
        let key = redis.keys().mail_recipient(&recipient);
        assert!(!key.contains("private"), "{key}");
        let probe = key.clone();
        let (members, ttl_ms): (u64, i64) = redis
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("ZCARD")
                    .arg(&probe)
                    .cmd("PTTL")
                    .arg(&probe)
                    .query_async(&mut c)
                    .await
            })
            .await
            .unwrap();
        assert_eq!(members, 1);
        assert!((1..=60_000).contains(&ttl_ms), "{ttl_ms}");
    }
}
