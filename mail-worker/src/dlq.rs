//! Dead letters: the worker moves every message of `mail.dead` into the `dead_letters` table
//! ([`archive`], acked once stored), so `mail-worker dlq list` is a query that streams rows
//! (bounded memory; nothing is redelivered, reordered or counted against a delivery limit,
//! however often it runs) and `mail-worker dlq replay [--id ID | --all]` publishes rows back to the work queue
//! with confirms, deleting each only once the broker confirmed it; `mail-worker dlq discard
//! (--id ID | --older-than DAYS)` deletes rows for good, audited ([`discard`]). Rows older
//! than `DEAD_LETTER_RETENTION_DAYS` are deleted ([`expire`]): they hold addresses and IPs.

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use std::time::Duration;

use lapin::{BasicProperties, message::Delivery, options::BasicAckOptions, types::FieldTable};
use serde::Serialize;
use shared::{
    amqp::Broker,
    message::Envelope,
    topology::{JOBS_ROUTING_KEY, Topology},
};
use sqlx::PgPool;

use crate::retry;

/// One dead letter as shown by `dlq list`.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub dead_at: Option<String>,
    pub attempts: Vec<String>,
    pub bytes: usize,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    message_id: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    attempts: Vec<String>,
    body: Vec<u8>,
    message_type: Option<String>,
    content_type: Option<String>,
    headers: sqlx::types::Json<FieldTable>,
    dead_at: chrono::DateTime<chrono::Utc>,
}

impl Row {
    fn describe(&self) -> DeadLetter {
        DeadLetter {
            id: self.message_id.clone(),
            kind: self.kind.clone(),
            reason: self.reason.clone(),
            dead_at: Some(self.dead_at.to_rfc3339()),
            attempts: self.attempts.clone(),
            bytes: self.body.len(),
        }
    }
}

/// Moves one delivery of `mail.dead` into the `dead_letters` table, then acks it. With
/// PostgreSQL down it stays unacked (held here, retried with backoff) rather than going back
/// to the queue: a return would count as a delivery, and a quorum queue with a delivery limit
/// (RabbitMQ 4.x has one by default) drops a message returned too often. If the connection
/// ends first, the broker keeps the message.
pub async fn archive(db: PgPool, delivery: Delivery) {
    let mut pause = Duration::from_millis(500);
    loop {
        match insert(&db, &delivery).await {
            Ok(()) => {
                // What the dead-letter alert reads: new dead letters, not the ones kept.
                metrics::counter!("mail_dead_letters_archived_total").increment(1);
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

/// Stores a delivery of `mail.dead`; ack it afterwards. One row per message id: the same
/// dead letter stored twice (a redelivery) changes nothing, and a job that died again after
/// a replay replaces its row (with its new death time, so the replay, which deletes only the
/// row it published, leaves it).
async fn insert(db: &PgPool, delivery: &Delivery) -> Result<(), sqlx::Error> {
    let properties = &delivery.properties;
    let headers = properties.headers().as_ref();
    let envelope = Envelope::decode(&delivery.data).ok();
    let message_id = properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| envelope.as_ref().map(|e| e.id.to_string()));
    let reason = retry::string_header(headers, retry::DEAD_REASON_HEADER).or_else(|| {
        // Dead-lettered by the broker itself (the delivery limit), not by a worker.
        headers
            .and_then(|h| h.inner().get("x-first-death-reason"))
            .map(|v| format!("broker: {v:?}"))
    });
    let dead_at = retry::string_header(headers, retry::DEAD_AT_HEADER)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map_or_else(
            || shared::clock::Clock::now(&shared::clock::SystemClock),
            |t| t.with_timezone(&chrono::Utc),
        );
    shared::db::execute(
        db,
        sqlx::query(
            "INSERT INTO dead_letters (message_id, kind, reason, attempts, body, message_type,
                                       content_type, headers, dead_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (message_id) DO UPDATE SET
                 kind = EXCLUDED.kind, reason = EXCLUDED.reason, attempts = EXCLUDED.attempts,
                 body = EXCLUDED.body, message_type = EXCLUDED.message_type,
                 content_type = EXCLUDED.content_type, headers = EXCLUDED.headers,
                 dead_at = EXCLUDED.dead_at",
        )
        .bind(message_id)
        .bind(envelope.as_ref().map(|e| e.job.kind()))
        .bind(reason)
        .bind(retry::history(headers))
        .bind(delivery.data.as_slice())
        .bind(properties.kind().as_ref().map(ToString::to_string))
        .bind(properties.content_type().as_ref().map(ToString::to_string))
        .bind(sqlx::types::Json(headers.cloned().unwrap_or_default()))
        .bind(dead_at),
    )
    .await
    .map(drop)
}

/// How many dead letters are stored.
pub async fn count(db: &PgPool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) =
        shared::db::fetch_optional(db, sqlx::query_as("SELECT count(*) FROM dead_letters"))
            .await?
            .unwrap_or((0,));
    Ok(n)
}

/// Publishes the number of stored dead letters as the `pwrecovery_mail_dead_letters` gauge.
pub async fn report_count(db: PgPool) {
    if let Ok(n) = count(&db).await {
        metrics::gauge!("mail_dead_letters").set(n as f64);
    }
}

/// Deletes the dead letters older than `days` (`DEAD_LETTER_RETENTION_DAYS`) and logs how
/// many.
pub async fn expire_old(db: PgPool, days: u64) {
    match expire(&db, days).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, days, "expired dead letters deleted"),
        Err(e) => tracing::warn!(error = %e, "could not delete expired dead letters"),
    }
}

/// Deletes dead letters older than `days`; how many.
pub async fn expire(db: &PgPool, days: u64) -> Result<u64, sqlx::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    Ok(shared::db::execute(
        db,
        sqlx::query("DELETE FROM dead_letters WHERE dead_at < now() - make_interval(days => $1)")
            .bind(days),
    )
    .await?
    .rows_affected())
}

/// Which dead letters `dlq discard` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// The one with this id (as `dlq list` shows it).
    Id(String),
    /// Every one that died more than this many days ago (at least 1).
    OlderThanDays(u32),
}

/// Checks an id given to `dlq discard --id`: the job id `dlq list` shows, an AMQP message id
/// (at most 255 bytes, printable, no spaces). Anything else cannot name a dead letter.
pub fn parse_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(
            "not a dead letter's id: give the id `mail-worker dlq list` shows \
                    (up to 255 printable characters, no spaces)"
                .into(),
        );
    }
    Ok(id.to_owned())
}

/// Who runs an operator command, as the audit trail names them: the login name.
pub fn operator_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "an unnamed operator".into())
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// Deletes the selected dead letters for good and writes one audit row saying who deleted
/// which and how many, in one transaction (no deletion without its row); returns how many.
/// For mail that must not go out any more (a notice that is stale, a job for an address
/// that is gone): the dead-letter count falls and `dlq list` no longer shows them.
pub async fn discard(db: &PgPool, which: &Discard, operator: &str) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    let (deleted, what) = match which {
        Discard::Id(id) => {
            let deleted = sqlx::query("DELETE FROM dead_letters WHERE message_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            (deleted, format!("id: {id}"))
        }
        Discard::OlderThanDays(days) => {
            // Refused here too, not only by the command line: 0 would delete every one.
            anyhow::ensure!(*days >= 1, "--older-than: at least 1 day");
            let deleted = sqlx::query(
                "DELETE FROM dead_letters WHERE dead_at < now() - make_interval(days => $1)",
            )
            .bind(i32::try_from(*days).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            (deleted, format!("older than {days} days"))
        }
    };
    let by = operator.replace(';', ",");
    let detail = format!("by: {by}; {what}; discarded: {deleted}");
    shared::audit::record(
        &mut *tx,
        &shared::audit::AuditEvent {
            detail: Some(&detail),
            ..shared::audit::AuditEvent::new(
                shared::audit::Action::DeadLetterDiscard,
                shared::audit::Outcome::Success,
            )
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(discarded = deleted, operator = %by, selection = %what, "dead letters discarded");
    Ok(deleted)
}

const COLUMNS: &str = "id, message_id, kind, reason, attempts, body, message_type, content_type, \
                       headers, dead_at";

/// Writes every dead letter, oldest first, to `out` as one JSON line each (streamed, so memory
/// stays bounded however many there are); returns how many.
pub async fn list(db: &PgPool, out: &mut impl std::io::Write) -> anyhow::Result<usize> {
    let mut conn = db.acquire().await?;
    let query = format!("SELECT {COLUMNS} FROM dead_letters ORDER BY id");
    let mut rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(query))
        .persistent(shared::db::named_statements())
        .fetch(&mut *conn);
    let mut n = 0;
    while let Some(row) = rows.try_next().await? {
        writeln!(out, "{}", serde_json::to_string(&row.describe())?)?;
        n += 1;
    }
    Ok(n)
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Id(String),
}

/// Publishes the selected dead letters back to `mail.jobs` with a fresh attempt count and
/// deletes each row once the broker confirmed its copy (a crash in between duplicates, never
/// loses; the worker's idempotency absorbs the duplicate). Only what is dead when it starts:
/// a replayed job that fails again is archived anew and waits for the next replay. Returns how
/// many were replayed.
pub async fn replay(
    db: &PgPool,
    broker: &Broker,
    topology: &Topology,
    selection: &Selection,
) -> anyhow::Result<usize> {
    let (connection, publisher) = broker
        .connect_confirmed("mail-worker dlq", topology)
        .await?;
    let last: Option<i64> =
        shared::db::fetch_optional(db, sqlx::query_as("SELECT max(id) FROM dead_letters"))
            .await?
            .and_then(|(max,): (Option<i64>,)| max);
    let Some(last) = last else {
        connection.close(200, "nothing to replay".into()).await?;
        return Ok(0);
    };
    let mut after = 0_i64;
    let mut replayed = 0;
    loop {
        // A page at a time (bounded memory), by id.
        let query = format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE id > $1 AND id <= $2
             AND ($3::text IS NULL OR message_id = $3) ORDER BY id LIMIT 100"
        );
        let id_filter = match selection {
            Selection::All => None,
            Selection::Id(id) => Some(id.clone()),
        };
        let page: Vec<Row> = shared::db::pinned(db, async |c| {
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .persistent(shared::db::named_statements())
                .bind(after)
                .bind(last)
                .bind(id_filter)
                .fetch_all(c)
                .await
        })
        .await?;
        let Some(end) = page.last().map(|r| r.id) else {
            break;
        };
        after = end;
        for row in page {
            publish(&publisher, topology, &row).await?;
            // Only the row as published: if the job already died again, its row is newer.
            shared::db::execute(
                db,
                sqlx::query("DELETE FROM dead_letters WHERE id = $1 AND dead_at = $2")
                    .bind(row.id)
                    .bind(row.dead_at),
            )
            .await?;
            replayed += 1;
        }
    }
    connection.close(200, "replayed".into()).await?;
    Ok(replayed)
}

async fn publish(publisher: &lapin::Channel, topology: &Topology, row: &Row) -> anyhow::Result<()> {
    // A replayed job starts its retry schedule afresh.
    let body = match Envelope::decode(&row.body) {
        Ok(mut envelope) => {
            envelope.attempt = 0;
            envelope.encode()
        }
        Err(_) => row.body.clone(),
    };
    let mut properties = BasicProperties::default();
    if let Some(id) = &row.message_id {
        properties = properties.with_message_id(id.as_str().into());
    }
    if let Some(kind) = &row.message_type {
        properties = properties.with_type(kind.as_str().into());
    }
    if let Some(ct) = &row.content_type {
        properties = properties.with_content_type(ct.as_str().into());
    }
    // The history stays (it explains earlier failures); the dead-letter marks, the outage
    // waits and the broker's own death records go, so the job starts afresh.
    let kept: std::collections::BTreeMap<_, _> = row
        .headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                retry::DEAD_REASON_HEADER | retry::DEAD_AT_HEADER | retry::WAITS_HEADER
            ) && !k.as_str().starts_with("x-death")
                && !k.as_str().starts_with("x-first-death")
                && !k.as_str().starts_with("x-last-death")
                && k.as_str() != "x-delivery-count"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    properties = properties.with_headers(retry::with_bounded_history(kept.into()));
    shared::amqp::publish_confirmed(
        publisher,
        &topology.mail_exchange(),
        JOBS_ROUTING_KEY,
        &body,
        properties,
        true,
        crate::consumer::CONFIRM_TIMEOUT,
    )
    .await
    .with_context(|| format!("replaying the job {:?}", row.message_id))
}
