//! The worker's reads of the `users` table (the api owns the schema and its migrations).

use sqlx::PgPool;
use uuid::Uuid;

/// What the worker needs to know about a recipient.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub id: Uuid,
    /// The case-folded address key the account is found by.
    pub email_key: String,
    pub email: String,
    pub password_version: i32,
    pub email_verified: bool,
    /// Versions whose change was undone (the api moved past them without keeping them).
    pub undone_password_versions: Vec<i32>,
}

/// Every account whose address key is in `email_keys` or whose id is in `ids`, with one
/// statement (a batch of jobs is looked up at once).
pub async fn lookup(
    db: &PgPool,
    email_keys: &[&str],
    ids: &[Uuid],
) -> Result<Vec<Recipient>, sqlx::Error> {
    if email_keys.is_empty() && ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = sqlx::query_as(
        "SELECT id, email_key, email, password_version, \
                email_verified_at IS NOT NULL AS email_verified, undone_password_versions \
         FROM users WHERE email_key = ANY($1) OR id = ANY($2)",
    )
    .bind(email_keys)
    .bind(ids)
    .persistent(shared::db::named_statements());
    shared::db::pinned(db, async |c| query.fetch_all(c).await).await
}
