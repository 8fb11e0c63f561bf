//! The `users` table.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A user as the api reads one for sessions and links (never the hash; see
/// [`shared::account`]).
pub use shared::account::{Account as User, by_id};

/// Credentials for sign-in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub password_hash: String,
    pub password_version: i32,
    pub email_verified: bool,
    /// The account has a second factor: a right password opens no session by itself.
    pub has_factor: bool,
}

/// Inserts a new user unless the address is taken; `None` means it was taken.
async fn insert_if_absent(
    db: impl PgExecutor<'_>,
    email: &str,
    email_key: &str,
    password_hash: &str,
    locale: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (id, email, email_key, password_hash, locale) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email_key) DO NOTHING
         RETURNING id",
    )
    .persistent(shared::db::named_statements())
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(email_key)
    .bind(password_hash)
    .bind(locale)
    .fetch_optional(db)
    .await
}

/// Sign-up's write: the account (with the languages of its emails, those its sign-up asked
/// for) if the address is free, and in the same transaction one
/// audit row and the job `email_job` makes of the outcome (the new account's id, or `None`
/// when the address was taken), into the outbox. Both paths therefore insert the same rows
/// and commit (one WAL flush each), so the database work does not differ by whether the
/// address was taken.
pub async fn sign_up(
    db: &PgPool,
    email: &str,
    email_key: &str,
    password_hash: &str,
    languages: &[String],
    audit: shared::audit::AuditEvent<'_>,
    email_job: impl FnOnce(Option<Uuid>) -> shared::message::Envelope,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let locale = stored_languages(languages);
    let created =
        insert_if_absent(&mut *tx, email, email_key, password_hash, locale.as_deref()).await?;
    crate::outbox::add_job(&mut tx, created, &email_job(created)).await?;
    let event = shared::audit::AuditEvent {
        outcome: if created.is_some() {
            shared::audit::Outcome::Created
        } else {
            shared::audit::Outcome::Exists
        },
        user_id: created,
        ..audit
    };
    shared::audit::record(&mut *tx, &event).await?;
    tx.commit().await?;
    Ok(created)
}

/// Loads sign-in credentials by address key.
pub async fn credentials(db: &PgPool, email_key: &str) -> Result<Option<Credentials>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIALS} FROM users WHERE email_key = $1"
        )))
        .bind(email_key),
    )
    .await
}

/// Credentials of the user a link names (verification checks the password too).
pub async fn credentials_by_id(db: &PgPool, id: Uuid) -> Result<Option<Credentials>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIALS} FROM users WHERE id = $1"
        )))
        .bind(id),
    )
    .await
}

/// The columns of [`Credentials`].
const CREDENTIALS: &str = "id, password_hash, password_version, \
    email_verified_at IS NOT NULL AS email_verified, \
    (EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = users.id AND t.confirmed_at IS NOT NULL) \
    OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = users.id)) AS has_factor";

/// Replaces the stored hash of an unchanged password (new argon2 parameters) if the stored
/// hash is still `old_hash`; the password version does not move.
pub async fn replace_hash(
    db: &PgPool,
    id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<(), sqlx::Error> {
    shared::db::execute(
        db,
        sqlx::query(
            "UPDATE users SET password_hash = $3, updated_at = now()
         WHERE id = $1 AND password_hash = $2",
        )
        .bind(id)
        .bind(old_hash)
        .bind(new_hash),
    )
    .await?;
    Ok(())
}

/// Replaces the password if the version is still `expected_version`; bumps the version,
/// marks the address verified (the reset link proved it) and ends a lock (`locked_at`; a
/// reset is the way back in). Returns the new version; `None` when the version moved.
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
             locked_at = NULL,
             updated_at = now()
         WHERE id = $1 AND password_version = $2
         RETURNING password_version",
    )
    .persistent(shared::db::named_statements())
    .bind(id)
    .bind(expected_version)
    .bind(password_hash)
    .fetch_optional(db)
    .await
}

/// Locks the account if the version is still `expected_version`: bumps the version (every
/// session and link of the old one dies) and replaces the hash with `unusable_hash` (the hash
/// of a secret nobody keeps), so no password signs in until a reset sets one, whichever
/// version of the api answers (an earlier one does not read `locked_at`). Returns the new
/// version; `None` when the version moved.
pub async fn lock(
    db: impl PgExecutor<'_>,
    id: Uuid,
    expected_version: i32,
    unusable_hash: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users
         SET password_hash = $3,
             password_version = password_version + 1,
             locked_at = COALESCE(locked_at, now()),
             updated_at = now()
         WHERE id = $1 AND password_version = $2
         RETURNING password_version",
    )
    .persistent(shared::db::named_statements())
    .bind(id)
    .bind(expected_version)
    .bind(unusable_hash)
    .fetch_optional(db)
    .await
}

/// Marks the address verified; `true` when it was not verified before (idempotent).
pub async fn mark_verified(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let changed = shared::db::execute(
        db,
        sqlx::query(
            "UPDATE users SET email_verified_at = now(), updated_at = now()
         WHERE id = $1 AND email_verified_at IS NULL",
        )
        .bind(id),
    )
    .await?;
    Ok(changed.rows_affected() == 1)
}

/// Undoes [`mark_verified`] (a verification whose follow-up could not be completed).
pub async fn mark_unverified(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    shared::db::execute(
        db,
        sqlx::query("UPDATE users SET email_verified_at = NULL, updated_at = now() WHERE id = $1")
            .bind(id),
    )
    .await?;
    Ok(())
}

/// The `users.locale` of `languages` (comma-separated, most wanted first); `None` for none.
fn stored_languages(languages: &[String]) -> Option<String> {
    (!languages.is_empty()).then(|| languages.join(","))
}

/// Gives an account without languages (one imported, or signed up by a client that asked for
/// none) those of its owner's browser: the first sign-in's that asks for any. An account's
/// languages, once set, stay.
pub async fn adopt_languages(
    db: &PgPool,
    id: Uuid,
    languages: &[String],
) -> Result<(), sqlx::Error> {
    let Some(locale) = stored_languages(languages) else {
        return Ok(());
    };
    let query = sqlx::query("UPDATE users SET locale = $2 WHERE id = $1 AND locale IS NULL");
    shared::db::execute(db, query.bind(id).bind(&locale)).await?;
    Ok(())
}

/// Whether the account is locked (its owner's "this wasn't me", or support staff): nothing
/// signs in until a reset, a passkey neither.
pub async fn is_locked(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let locked: Option<(bool,)> = shared::db::fetch_optional(
        db,
        sqlx::query_as("SELECT locked_at IS NOT NULL FROM users WHERE id = $1").bind(id),
    )
    .await?;
    Ok(locked.is_none_or(|(locked,)| locked))
}
