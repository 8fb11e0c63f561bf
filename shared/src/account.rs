//! The `users` table as both services read it: the api owns the schema (its migrations) and
//! writes it; the api (sessions, links) and the worker (whom a job mails) read an account
//! with the one statement here.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// An account as read for sessions, links and mail (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    /// The case-folded address key the account is found by.
    pub email_key: String,
    /// The address mail goes to.
    pub email: String,
    /// Bumped on every password change; links and sessions carry the version they were
    /// issued under.
    pub password_version: i32,
    pub email_verified: bool,
    /// Versions whose change was undone (the api moved past them without keeping them).
    pub undone_password_versions: Vec<i32>,
    /// The languages of its emails, comma-separated BCP 47 tags, most wanted first (see the
    /// `users.locale` migration); `None` when it has none.
    pub locale: Option<String>,
}

impl Account {
    /// The languages its emails are written in, most wanted first (none: the requester's).
    pub fn languages(&self) -> Vec<String> {
        (self.locale.as_deref().unwrap_or_default().split(','))
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The statement reading [`Account`]s that match `$where`.
macro_rules! select_accounts {
    ($where:literal) => {
        concat!(
            "SELECT id, email_key, email, password_version, ",
            "email_verified_at IS NOT NULL AS email_verified, undone_password_versions, locale ",
            "FROM users WHERE ",
            $where
        )
    };
}

/// The account with this id, if any.
pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<Account>, sqlx::Error> {
    crate::db::fetch_optional(db, sqlx::query_as(select_accounts!("id = $1")).bind(id)).await
}

/// Every account whose address key is in `email_keys` or whose id is in `ids`, with one
/// statement (the worker looks a batch of jobs up at once, on the connection of a
/// [`crate::db::Session`]).
pub async fn lookup(
    db: impl PgExecutor<'_>,
    email_keys: &[&str],
    ids: &[Uuid],
) -> Result<Vec<Account>, sqlx::Error> {
    if email_keys.is_empty() && ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(select_accounts!("email_key = ANY($1) OR id = ANY($2)"))
        .bind(email_keys)
        .bind(ids)
        .persistent(crate::db::named_statements())
        .fetch_all(db)
        .await
}
