//! The transactional outbox: the jobs and events that follow a database change are inserted
//! into `outbox` in the change's transaction ([`add_job`], [`add_event`]), and a relay in
//! every api replica publishes them with confirms and deletes what the broker confirmed. The
//! request answers once its transaction commits; a crash (a SIGKILL, an OOM kill, a lost
//! node) between the commit and the publish loses nothing, since the row waits for the next
//! relay pass, here or in another replica.
//!
//! A relay claims a batch under an id of its own for a lease longer than any publish can take
//! (so a relay that dies mid-batch is replaced after that), instead of holding a database
//! connection across publishes; it deletes or releases only rows it still holds. Rows of one
//! user go out in order: a batch takes only each user's oldest row, so a user's later row
//! waits until the earlier one is confirmed and deleted. A row whose publish failed waits
//! [`RETRY_AFTER`] before the next try. A claimed row whose confirm was lost in a crash is
//! published again: delivery is at least once, and stable message ids (the job id, the
//! event's id) let the worker and subscribers drop the repeat.

use std::{sync::Arc, time::Duration};

use shared::message::Envelope;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::publisher::Publisher;

/// The shortest lease on claimed rows; longer when a publish may take longer (see
/// [`Outbox::relay`]).
const MIN_CLAIM: Duration = Duration::from_secs(30);
/// The pause before a row whose publish failed is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Rows per relay pass.
const BATCH: i64 = 64;
/// How often a relay looks for rows without being woken (rows of a relay that died, rows
/// whose publish failed).
const POLL: Duration = Duration::from_secs(1);
/// How often a relay reports the backlog (`pwrecovery_outbox_rows`,
/// `pwrecovery_outbox_oldest_row_age_seconds`): one small query per replica, whatever the
/// request rate.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// The most rows the backlog count reads: past this the gauge says "at least this many",
/// and a count during a long broker outage stays a bounded read.
const BACKLOG_COUNT_LIMIT: i64 = 100_000;

/// Adds a mail job for `user` (its ordering key; `None`: no order with anything else).
pub async fn add_job(
    conn: &mut PgConnection,
    user: Option<Uuid>,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    add(
        conn,
        user,
        "job",
        shared::topology::JOBS_ROUTING_KEY,
        envelope.id,
        &envelope.encode(),
    )
    .await
}

/// Adds a domain event for `user` to the `events` exchange under `routing_key`.
pub async fn add_event(
    conn: &mut PgConnection,
    user: Uuid,
    routing_key: &str,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    add(
        conn,
        Some(user),
        "event",
        routing_key,
        Uuid::now_v7(),
        &bytes,
    )
    .await
}

async fn add(
    conn: &mut PgConnection,
    user: Option<Uuid>,
    kind: &str,
    routing_key: &str,
    message_id: Uuid,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (user_id, kind, routing_key, message_id, body)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .bind(kind)
    .bind(routing_key)
    .bind(message_id)
    .bind(body)
    .execute(conn)
    .await
    .map(drop)
}

/// A handle to this replica's relay: [`Outbox::wake`] after a commit that added rows.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    kind: String,
    routing_key: String,
    message_id: Uuid,
    body: Vec<u8>,
}

impl Outbox {
    /// Makes the relay look now (rows just committed go out without waiting for the poll).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the relay until `stop` resolves (a pass in progress is abandoned; its rows go
    /// out when their lease ends). `publish_limit` is the longest one publish may take
    /// (connecting and the confirm); the lease on claimed rows is at least twice that.
    pub async fn relay(
        self,
        db: PgPool,
        publisher: Publisher,
        publish_limit: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let lease = (publish_limit * 2).max(MIN_CLAIM);
        tokio::pin!(stop);
        let mut reported: Option<tokio::time::Instant> = None;
        loop {
            // Pass after pass while there is work (a user's next row waits for the pass
            // after its previous one).
            loop {
                let due = reported.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY);
                let outcome = tokio::select! {
                    biased;
                    () = &mut stop => return,
                    outcome = async {
                        if due {
                            report_backlog(&db).await;
                        }
                        pass(&db, &publisher, lease).await
                    } => outcome,
                };
                if due {
                    reported = Some(tokio::time::Instant::now());
                }
                match outcome {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "outbox relay pass failed");
                        break;
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Makes both backlog gauges exist (at 0) before the relay's first report.
pub fn register_metrics() {
    metrics::gauge!("outbox_rows").set(0.0);
    metrics::gauge!("outbox_oldest_row_age_seconds").set(0.0);
}

/// Sets the backlog gauges: how many rows wait (counted up to [`BACKLOG_COUNT_LIMIT`]) and
/// how long the oldest has waited (0 when none does). Every replica reports the same table,
/// so dashboards take the `max` over replicas, not the sum. The oldest row is the one with
/// the lowest id, found by the primary key, not by reading every `created_at`.
async fn report_backlog(db: &PgPool) {
    let query = sqlx::query_as::<_, (i64, Option<f64>)>(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT $1) AS capped),
                (SELECT EXTRACT(EPOCH FROM now() - created_at)::float8
                 FROM outbox ORDER BY id LIMIT 1)",
    )
    .bind(BACKLOG_COUNT_LIMIT);
    match shared::db::fetch_optional(db, query).await {
        Ok(Some((rows, oldest))) => {
            metrics::gauge!("outbox_rows").set(rows as f64);
            metrics::gauge!("outbox_oldest_row_age_seconds").set(oldest.unwrap_or(0.0).max(0.0));
        }
        Ok(None) => {}
        // The pass that follows reports the same failure: a debug line is enough here.
        Err(e) => tracing::debug!(error = %e, "could not count the outbox backlog"),
    }
}

/// Claims up to `BATCH` rows for `me` until `lease` from now: unclaimed (or whose claim
/// ran out) and each its user's oldest, so a user's rows go out in order.
async fn claim(db: &PgPool, me: Uuid, lease: Duration) -> Result<Vec<Row>, sqlx::Error> {
    shared::db::pinned(db, async |conn| {
        sqlx::query_as(
            "UPDATE outbox SET claimed_until = now() + make_interval(secs => $1), claimed_by = $3
             WHERE id IN (
                 SELECT o.id FROM outbox o
                 WHERE (o.claimed_until IS NULL OR o.claimed_until < now())
                   AND NOT EXISTS (SELECT 1 FROM outbox e
                                   WHERE e.user_id = o.user_id AND e.id < o.id)
                 ORDER BY o.id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, routing_key, message_id, body",
        )
        .persistent(shared::db::named_statements())
        .bind(lease.as_secs_f64())
        .bind(BATCH)
        .bind(me)
        .fetch_all(conn)
        .await
    })
    .await
}

/// Publishes one row (confirmed). An undecodable job cannot become publishable: it is
/// logged and counts as done.
async fn relay(publisher: &Publisher, row: &Row) -> Result<(), crate::error::ApiError> {
    match row.kind.as_str() {
        "job" => match Envelope::decode(&row.body) {
            Ok(envelope) => publisher.publish_job(&envelope).await,
            Err(e) => {
                tracing::error!(id = row.id, error = %e, "undecodable outbox job; dropped");
                Ok(())
            }
        },
        _ => {
            publisher
                .publish_event_bytes(&row.routing_key, row.message_id, &row.body)
                .await
        }
    }
}

/// Claims a batch, publishes it and deletes what the broker confirmed; the number of rows
/// confirmed.
async fn pass(db: &PgPool, publisher: &Publisher, lease: Duration) -> anyhow::Result<usize> {
    let me = Uuid::new_v4();
    let claimed = claim(db, me, lease).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let published = futures_util::future::join_all(
        claimed
            .iter()
            .map(|row| async move { relay(publisher, row).await.map(|()| row.id) }),
    )
    .await;
    let done: Vec<i64> = published
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    if let Some(Err(e)) = published.iter().find(|r| r.is_err()) {
        tracing::warn!(error = %e, failed = published.len() - done.len(),
            "outbox rows not confirmed; retried on a later pass");
    }
    if !done.is_empty() {
        shared::db::execute(
            db,
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1) AND claimed_by = $2")
                .bind(&done)
                .bind(me),
        )
        .await?;
    }
    // Rows whose publish failed go back to the pool after a pause (no spinning on a row the
    // broker keeps refusing).
    let failed: Vec<i64> = claimed
        .iter()
        .map(|r| r.id)
        .filter(|id| !done.contains(id))
        .collect();
    if !failed.is_empty() {
        shared::db::execute(
            db,
            sqlx::query(
                "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2),
                                   claimed_by = NULL
                 WHERE id = ANY($1) AND claimed_by = $3",
            )
            .bind(&failed)
            .bind(RETRY_AFTER.as_secs_f64())
            .bind(me),
        )
        .await?;
        // Nothing got through: let the broker (or the publisher's backoff) breathe.
        if done.is_empty() {
            return Ok(0);
        }
    }
    Ok(done.len())
}
