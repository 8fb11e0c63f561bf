//! The `audit_events` table, written by the api (reset and verification attempts) and the
//! worker (forgot-password decisions).

use std::net::IpAddr;

use ipnet::IpNet;
use sqlx::PgExecutor;
use uuid::Uuid;

/// One audit row.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent<'a> {
    pub action: &'a str,
    pub outcome: &'a str,
    pub user_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub address_hash: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Appends an audit row on its own (not inside a transaction of the caller's).
pub async fn record_on(db: &sqlx::PgPool, e: &AuditEvent<'_>) -> Result<(), sqlx::Error> {
    let mut session = crate::db::Session::begin(db).await?;
    record(session.conn(), e).await?;
    session.finish().await
}

/// Appends many audit rows with one statement (one round trip and, outside a transaction,
/// one commit for all of them).
pub async fn record_many(db: &sqlx::PgPool, events: &[AuditEvent<'_>]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let actions: Vec<&str> = events.iter().map(|e| e.action).collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome).collect();
    let users: Vec<Option<Uuid>> = events.iter().map(|e| e.user_id).collect();
    let ips: Vec<Option<IpNet>> = events.iter().map(|e| e.ip.map(IpNet::from)).collect();
    let hashes: Vec<Option<&str>> = events.iter().map(|e| e.address_hash).collect();
    let request_ids: Vec<Option<&str>> = events.iter().map(|e| e.request_id).collect();
    crate::db::execute(
        db,
        sqlx::query(
            "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::inet[], $5::text[], $6::text[])",
        )
        .bind(actions)
        .bind(outcomes)
        .bind(users)
        .bind(ips)
        .bind(hashes)
        .bind(request_ids),
    )
    .await?;
    Ok(())
}

/// Appends an audit row.
pub async fn record(db: impl PgExecutor<'_>, e: &AuditEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (action, outcome, user_id, ip, address_hash, request_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .persistent(crate::db::named_statements())
    .bind(e.action)
    .bind(e.outcome)
    .bind(e.user_id)
    .bind(e.ip.map(IpNet::from))
    .bind(e.address_hash)
    .bind(e.request_id)
    .execute(db)
    .await?;
    Ok(())
}
