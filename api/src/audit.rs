//! Best-effort audit rows written outside a transaction: a failed audit write must not turn
//! an answer into a 503, so it is logged instead. Rows that belong to a change (a password
//! reset, a sign-up) are written inside that change's transaction, not here.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shared::{
    audit::{Action, AuditEvent, Outcome},
    redis_pool::RedisPool,
};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::rate_limit::Verdict;

/// Appends `event`, logging (not returning) a failure.
pub async fn record(db: &PgPool, event: &AuditEvent<'_>) {
    if let Err(e) = shared::audit::record_on(db, event).await {
        tracing::error!(error = %e, action = %event.action, outcome = %event.outcome, "could not write audit row");
    }
}

/// How long one audit row stands for every refusal by the same budget key.
const REFUSAL_AUDIT_PERIOD_SECS: u64 = 60;

/// Refusal rows being written at once by one process; a refusal that finds them all taken is
/// counted in `rate_limit_audit_skipped_total` and writes nothing.
pub const REFUSAL_AUDIT_WRITERS: u32 = 4;

/// Budget keys this process remembers having marked (see [`RefusalAudit`]); past it, the
/// memory is cleared rather than grown.
const RECENT_MARKS: usize = 4096;

/// The refusal rows of one process: the writers, and the budget keys it marked in the last
/// minute. A flood from one source hits the same budget key with every request; remembering
/// it here means the flood's refusals after the first take neither a writer nor a Redis
/// call, so they cannot crowd out the rows of other refusals (a credential-stuffing campaign
/// against another account, say). Other replicas still share the minute through the marker
/// in Redis.
pub struct RefusalAudit {
    db: PgPool,
    redis: RedisPool,
    /// Keys the budget keys' fingerprints (`PSEUDONYM_SECRET`).
    secret: Arc<[u8]>,
    writers: Arc<Semaphore>,
    recent: Mutex<HashMap<String, Instant>>,
}

impl RefusalAudit {
    pub fn new(db: PgPool, redis: RedisPool, secret: &[u8]) -> Self {
        Self {
            db,
            redis,
            secret: secret.into(),
            writers: Arc::new(Semaphore::new(REFUSAL_AUDIT_WRITERS as usize)),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `fingerprint` was not marked by this process within the period; remembers it.
    fn first_this_period(&self, fingerprint: &str) -> bool {
        let period = Duration::from_secs(REFUSAL_AUDIT_PERIOD_SECS);
        let Ok(mut recent) = self.recent.lock() else {
            return true;
        };
        let now = Instant::now();
        if recent
            .get(fingerprint)
            .is_some_and(|at| now.duration_since(*at) < period)
        {
            return false;
        }
        if recent.len() >= RECENT_MARKS {
            recent.retain(|_, at| now.duration_since(*at) < period);
            if recent.len() >= RECENT_MARKS {
                recent.clear();
            }
        }
        recent.insert(fingerprint.to_owned(), now);
        true
    }
}

impl RefusalAudit {
    /// Records a request refused by a rate limit: which budget (the verdict's `refused_by`),
    /// from which IP, and for which address pseudonym when the request named one. A campaign
    /// against one account (credential stuffing from many IPs) thus leaves rows under that
    /// account's pseudonym, whether or not the account exists.
    ///
    /// The refused path is the one a flood takes, so it must cost the flood's target nothing
    /// that grows with the flood:
    /// - at most one row per refusing budget key per minute (remembered in the process, and a
    ///   marker in Redis, `SET NX EX`, for the other replicas; keyed by the budget's own
    ///   pseudonymous key: the client's IPv4 address or IPv6 network for a client budget, never
    ///   the address the request named, so naming a new address per request makes no new row
    ///   and no new key); the metric counts every refusal;
    /// - the refusal never waits for it: the marker and the row are written by a task of their
    ///   own, at most [`REFUSAL_AUDIT_WRITERS`] at a time per process, so a flood cannot tie up
    ///   the database pool that every other request needs. Without Redis or a free writer the
    ///   row is skipped (and counted).
    pub fn refused(
        &self,
        verdict: &Verdict,
        ip: IpAddr,
        address_hash: Option<&str>,
        request_id: Option<&str>,
    ) {
        let label = verdict.refused_by.unwrap_or(Outcome::RateLimited);
        metrics::counter!("rate_limit_hits_total", "kind" => label.as_str()).increment(1);
        let subject = format!("{label}\0{}", verdict.refused_key.as_deref().unwrap_or(""));
        let fingerprint = shared::keys::pseudonym(&self.secret, "audit", &subject);
        if !self.first_this_period(&fingerprint) {
            return;
        }
        let Ok(permit) = self.writers.clone().try_acquire_owned() else {
            metrics::counter!("rate_limit_audit_skipped_total").increment(1);
            return;
        };
        let key = self.redis.keys().audit_mark(&fingerprint);
        let (db, redis) = (self.db.clone(), self.redis.clone());
        let address_hash = address_hash.map(str::to_owned);
        let request_id = request_id.map(str::to_owned);
        tokio::spawn(async move {
            let _permit = permit;
            match redis.set_marker(&key, REFUSAL_AUDIT_PERIOD_SECS).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "rate-limit refusal not audited: Redis unavailable");
                    metrics::counter!("rate_limit_audit_skipped_total").increment(1);
                    return;
                }
            }
            let event = AuditEvent {
                ip: Some(ip),
                address_hash: address_hash.as_deref(),
                request_id: request_id.as_deref(),
                ..AuditEvent::new(Action::RateLimited, label)
            };
            record(&db, &event).await;
        });
    }

    /// Waits until every refusal row started so far is written (or skipped): for tests, and for
    /// the drain at shutdown.
    pub async fn settle(&self) {
        if let Ok(all) = self.writers.acquire_many(REFUSAL_AUDIT_WRITERS).await {
            drop(all);
        }
    }
}

/// Rows one statement of [`prune`] deletes: small enough that a pass never holds many row
/// locks or a long transaction, whatever the backlog.
pub const PRUNE_BATCH: i64 = 5_000;

/// Deletes audit rows that occurred before `before`, in batches of `batch` (each its own
/// statement; replicas pruning at once skip each other's rows); how many were deleted.
pub async fn prune(
    db: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let batch = batch.max(1);
    let mut deleted = 0;
    loop {
        let query = sqlx::query(
            "DELETE FROM audit_events WHERE id IN (
                 SELECT id FROM audit_events WHERE occurred_at < $1
                 ORDER BY occurred_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        );
        let n = shared::db::execute(db, query.bind(before).bind(batch))
            .await?
            .rows_affected();
        deleted += n;
        if n < u64::try_from(batch).unwrap_or(0) {
            return Ok(deleted);
        }
    }
}

/// How often a replica prunes the audit table (`AUDIT_RETENTION_DAYS`).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the audit table at start and then every hour, keeping `days` days; runs until the
/// process ends. A failed pass is logged and tried again at the next.
pub async fn keep_for(db: PgPool, clock: Arc<dyn shared::clock::Clock>, days: u32) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let before = clock.now() - chrono::Duration::days(i64::from(days));
        match prune(&db, before, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    deleted = n,
                    days,
                    "audit rows past AUDIT_RETENTION_DAYS deleted"
                );
                metrics::counter!("audit_rows_pruned_total").increment(n);
            }
            Err(e) => tracing::warn!(error = %e, "audit pruning failed; trying again in an hour"),
        }
    }
}
