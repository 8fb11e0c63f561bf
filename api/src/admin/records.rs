//! The admin operations' statements: the account as support staff see it, its audit trail,
//! and erasure's deletes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// An account as support staff see it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AccountView {
    pub id: Uuid,
    /// The address mail goes to.
    pub email: String,
    pub email_verified: bool,
    /// Locked by its owner ("this wasn't me") or by support staff: sign-in is refused until
    /// a reset.
    pub locked: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The kinds of second factor enrolled (`totp`, `passkey`).
    pub second_factors: Vec<String>,
    #[serde(skip)]
    pub email_key: String,
    #[serde(skip)]
    pub password_version: i32,
}

/// One audit row about the person.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditRecord {
    pub occurred_at: DateTime<Utc>,
    /// What was attempted (e.g. `sign_in`, `password_reset`).
    pub action: String,
    /// How it ended (e.g. `success`, `invalid_credentials`, `sent`).
    pub outcome: String,
    /// The client's IP, when the row has one.
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// An operator's reason and who acted.
    pub detail: Option<String>,
}

/// A person's access request: the account and every audit row about it, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Export {
    pub exported_at: DateTime<Utc>,
    pub account: AccountView,
    pub audit: Vec<AuditRecord>,
}

/// The columns of [`AccountView`].
macro_rules! select_view {
    ($where:literal) => {
        concat!(
            "SELECT id, email, email_key, password_version, ",
            "email_verified_at IS NOT NULL AS email_verified, locked_at IS NOT NULL AS locked, ",
            "created_at, updated_at, ",
            "ARRAY(SELECT 'totp' FROM user_totp t ",
            "WHERE t.user_id = users.id AND t.confirmed_at IS NOT NULL ",
            "UNION ALL SELECT DISTINCT 'passkey' FROM passkeys p WHERE p.user_id = users.id) ",
            "AS second_factors ",
            "FROM users WHERE ",
            $where
        )
    };
}

pub(super) async fn by_email_key(
    db: &PgPool,
    email_key: &str,
) -> Result<Option<AccountView>, sqlx::Error> {
    let query = sqlx::query_as(select_view!("email_key = $1"));
    shared::db::fetch_optional(db, query.bind(email_key)).await
}

pub(super) async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<AccountView>, sqlx::Error> {
    let query = sqlx::query_as(select_view!("id = $1"));
    shared::db::fetch_optional(db, query.bind(id)).await
}

/// Audit rows about the account: its id, or its address's pseudonyms (requests that named
/// the address, whether or not they found the account), oldest first.
pub(super) async fn audit_trail(
    db: &PgPool,
    id: Uuid,
    pseudonyms: &[String],
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    let query = sqlx::query_as(
        "SELECT occurred_at, action, outcome, host(ip) AS ip, request_id, detail
         FROM audit_events WHERE user_id = $1 OR address_hash = ANY($2)
         ORDER BY occurred_at, id",
    )
    .bind(id)
    .bind(pseudonyms);
    shared::db::fetch_all(db, query).await
}

/// Deletes the account row (read under lock first); its address and address key, or `None`
/// when there is no such account.
pub(super) async fn erase(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("DELETE FROM users WHERE id = $1 RETURNING email, email_key")
        .persistent(shared::db::named_statements())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
}

/// Removes what else names the erased person: its jobs in the outbox (by its id, and those
/// queued without one that name its address: an account-exists notice; its events, which name
/// only the id, still go out before the erasure's own), its dead letters
/// (jobs hold the address and the requester's IP), its suppression entry, and in every audit
/// row about it the IP, the address pseudonym, the request id (logs join on it) and the free
/// text but for who acted.
pub(super) async fn scrub(
    tx: &mut PgConnection,
    id: Uuid,
    pseudonyms: &[String],
    email: &str,
    email_key: &str,
) -> Result<(), sqlx::Error> {
    // A job names the address as a JSON string: `"email":"Ann@Example.org"`, in any spelling
    // of its key. Compared as bytes (a body need not be UTF-8), case-folded through the escape
    // encoding; quoted, so another address that contains this one is not matched.
    let names_address = "(position(convert_to($1, 'UTF8') in body) > 0
        OR position(convert_to($2, 'UTF8') in body) > 0
        OR strpos(lower(encode(body, 'escape')), lower(encode(convert_to($3, 'UTF8'), 'escape'))) > 0)";
    let (quoted_id, quoted_email, quoted_key) = (
        format!("\"{id}\""),
        json_string(email),
        json_string(email_key),
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM outbox
         WHERE kind = 'job' AND (user_id = $4 OR (user_id IS NULL AND {names_address}))"
    )))
    .persistent(shared::db::named_statements())
    .bind(&quoted_id)
    .bind(&quoted_email)
    .bind(&quoted_key)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM dead_letters WHERE {names_address}"
    )))
    .persistent(shared::db::named_statements())
    .bind(&quoted_id)
    .bind(&quoted_email)
    .bind(&quoted_key)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM suppressed_addresses WHERE address_key = $1")
        .persistent(shared::db::named_statements())
        .bind(email_key)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE audit_events
         SET ip = NULL, address_hash = NULL, request_id = NULL,
             detail = coalesce(substring(detail from '^(by: [^;]*)'),
                               substring(detail from '; (by: [^;]*)$'))
         WHERE user_id = $1 OR address_hash = ANY($2)",
    )
    .persistent(shared::db::named_statements())
    .bind(id)
    .bind(pseudonyms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// `value` as a JSON string literal (quoted and escaped as a job's body has it).
fn json_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}
