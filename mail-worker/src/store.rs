//! The worker's reads of the `users` table (the api owns the schema and its migrations).

use sqlx::PgPool;
use uuid::Uuid;

/// What the worker needs to know about a recipient.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub id: Uuid,
    pub email: String,
    pub password_version: i32,
    pub email_verified: bool,
    /// Versions whose change was undone (the api moved past them without keeping them).
    pub undone_password_versions: Vec<i32>,
}

const COLUMNS: &str = "id, email, password_version, email_verified_at IS NOT NULL AS email_verified, \
     undone_password_versions";

/// Looks an account up by its case-folded address key.
pub async fn by_email_key(db: &PgPool, email_key: &str) -> Result<Option<Recipient>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE email_key = $1"
        )))
        .bind(email_key),
    )
    .await
}

/// Looks an account up by id.
pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<Recipient>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id),
    )
    .await
}
