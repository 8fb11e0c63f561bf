//! The `users` table.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A user as the api needs it (never the hash, except for sign-in).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password_version: i32,
    pub email_verified: bool,
}

/// Credentials for sign-in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub password_hash: String,
    pub password_version: i32,
}

/// Inserts a new user unless the address is taken; `None` means it was taken.
pub async fn insert_if_absent(
    db: impl PgExecutor<'_>,
    email: &str,
    email_key: &str,
    password_hash: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (id, email, email_key, password_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email_key) DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(email_key)
    .bind(password_hash)
    .fetch_optional(db)
    .await
}

/// Loads a user by id.
pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, password_version, email_verified_at IS NOT NULL AS email_verified
         FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Loads sign-in credentials by address key.
pub async fn credentials(db: &PgPool, email_key: &str) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, password_hash, password_version FROM users WHERE email_key = $1")
        .bind(email_key)
        .fetch_optional(db)
        .await
}

/// Replaces the password if the version is still `expected_version`; bumps the version and
/// marks the address verified (the reset link proved it). `None` when the version moved.
pub async fn replace_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    expected_version: i32,
    password_hash: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users
         SET password_hash = $3,
             password_version = password_version + 1,
             email_verified_at = COALESCE(email_verified_at, now()),
             updated_at = now()
         WHERE id = $1 AND password_version = $2
         RETURNING password_version",
    )
    .bind(id)
    .bind(expected_version)
    .bind(password_hash)
    .fetch_optional(db)
    .await
}

/// Marks the address verified (idempotent).
pub async fn mark_verified(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
