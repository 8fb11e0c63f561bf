//! The `user_totp` and `recovery_codes` tables (second factors, see [`crate::mfa`]).
//!
//! Every query names its statement only when the pool may (behind a transaction pooler it
//! may not; see [`shared::db`]).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::mfa::secret_box::Sealed;

/// What an account has enrolled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Enrolment {
    /// A confirmed authenticator app.
    pub totp: bool,
    /// Passkeys.
    pub passkeys: i64,
    /// Unspent recovery codes.
    pub recovery_codes_left: i64,
}

impl Enrolment {
    /// Whether the account has a second factor (recovery codes alone are none: they come
    /// with, and go with, a factor).
    pub fn has_factor(&self) -> bool {
        self.totp || self.passkeys > 0
    }
}

/// What the account has enrolled.
pub async fn enrolment(db: &PgPool, user: Uuid) -> Result<Enrolment, sqlx::Error> {
    let found = shared::db::fetch_optional(
        db,
        sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL) AS totp,
                    (SELECT count(*) FROM passkeys WHERE user_id = $1) AS passkeys,
                    (SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL) AS recovery_codes_left",
        )
        .bind(user),
    )
    .await?;
    Ok(found.unwrap_or_default())
}

/// An account's TOTP secret as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpRow {
    pub sealed: Vec<u8>,
    pub key_id: String,
    pub confirmed: bool,
    pub last_step: i64,
}

impl TotpRow {
    pub fn sealed(&self) -> Sealed {
        Sealed {
            key_id: self.key_id.clone(),
            bytes: self.sealed.clone(),
        }
    }
}

/// The account's TOTP secret, confirmed or waiting for its first code.
pub async fn totp(db: &PgPool, user: Uuid) -> Result<Option<TotpRow>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(
            "SELECT sealed, key_id, confirmed_at IS NOT NULL AS confirmed, last_step
             FROM user_totp WHERE user_id = $1",
        )
        .bind(user),
    )
    .await
}

/// Stores a new secret waiting for its first code, replacing one that waits; `false` when
/// the account has a confirmed one (it must be removed first).
pub async fn begin_totp(db: &PgPool, user: Uuid, sealed: &Sealed) -> Result<bool, sqlx::Error> {
    let done = shared::db::execute(
        db,
        sqlx::query(
            "INSERT INTO user_totp (user_id, sealed, key_id) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE
                 SET sealed = EXCLUDED.sealed, key_id = EXCLUDED.key_id, last_step = 0,
                     created_at = now()
                 WHERE user_totp.confirmed_at IS NULL",
        )
        .bind(user)
        .bind(&sealed.bytes)
        .bind(&sealed.key_id),
    )
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the code of `step` of the confirmed secret was accepted, if no code of this
/// step or a later one was (each code is accepted once). Whether it was recorded here (of
/// concurrent uses of one code, one is).
pub async fn spend_step(
    conn: &mut PgConnection,
    user: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE user_totp SET last_step = $2
         WHERE user_id = $1 AND last_step < $2 AND confirmed_at IS NOT NULL",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .bind(step)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Confirms the waiting secret `sealed` with the code of `step` (which is spent), if that
/// secret still waits: an enrolment started over in between is not confirmed by a code of
/// the one it replaced.
pub async fn confirm_step(
    conn: &mut PgConnection,
    user: Uuid,
    step: i64,
    sealed: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE user_totp SET last_step = $2, confirmed_at = now()
         WHERE user_id = $1 AND last_step < $2 AND confirmed_at IS NULL AND sealed = $3",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .bind(step)
    .bind(sealed)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the account has a second factor, locking the account's row for the transaction
/// (a removal of its last factor waits, or is waited for).
pub async fn lock_factors(conn: &mut PgConnection, user: Uuid) -> Result<bool, sqlx::Error> {
    let has: Option<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)
             OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)
         FROM users WHERE id = $1 FOR UPDATE",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(has == Some(true))
}

/// A passkey as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRow {
    pub credential_id: Vec<u8>,
    pub user_id: Uuid,
    pub name: String,
    pub passkey: sqlx::types::Json<serde_json::Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Suspended by a lock: it proves nothing until its owner removes it.
    pub suspended: bool,
}

/// The columns of [`PasskeyRow`].
const PASSKEY: &str = "credential_id, user_id, name, passkey, created_at, last_used_at, \
    suspended_at IS NOT NULL AS suspended";

/// The account's passkeys, oldest first.
pub async fn passkeys(db: &PgPool, user: Uuid) -> Result<Vec<PasskeyRow>, sqlx::Error> {
    shared::db::fetch_all(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY} FROM passkeys WHERE user_id = $1 ORDER BY created_at"
        )))
        .bind(user),
    )
    .await
}

/// The passkey with this credential id.
pub async fn passkey(db: &PgPool, credential_id: &[u8]) -> Result<Option<PasskeyRow>, sqlx::Error> {
    shared::db::fetch_optional(
        db,
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {PASSKEY} FROM passkeys WHERE credential_id = $1"
        )))
        .bind(credential_id),
    )
    .await
}

/// Stores a new passkey; `false` when its credential id is taken.
pub async fn add_passkey(
    conn: &mut PgConnection,
    user: Uuid,
    credential_id: &[u8],
    name: &str,
    passkey: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO passkeys (credential_id, user_id, name, passkey) VALUES ($1, $2, $3, $4)
         ON CONFLICT (credential_id) DO NOTHING",
    )
    .persistent(shared::db::named_statements())
    .bind(credential_id)
    .bind(user)
    .bind(name)
    .bind(sqlx::types::Json(passkey))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes a passkey's use (and its record, when the use changed its counter or flags).
pub async fn passkey_used(
    db: &PgPool,
    credential_id: &[u8],
    passkey: Option<&serde_json::Value>,
) -> Result<(), sqlx::Error> {
    shared::db::execute(
        db,
        sqlx::query(
            "UPDATE passkeys SET last_used_at = now(), passkey = coalesce($2, passkey)
             WHERE credential_id = $1",
        )
        .bind(credential_id)
        .bind(passkey.map(sqlx::types::Json)),
    )
    .await?;
    Ok(())
}

/// Suspends every passkey of the account (a lock).
pub async fn suspend_passkeys(conn: &mut PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE passkeys SET suspended_at = now() WHERE user_id = $1 AND suspended_at IS NULL",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes one of the account's passkeys; whether it was one.
pub async fn remove_passkey(
    conn: &mut PgConnection,
    user: Uuid,
    credential_id: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1 AND credential_id = $2")
        .persistent(shared::db::named_statements())
        .bind(user)
        .bind(credential_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the account has unspent recovery codes.
pub async fn has_recovery_codes(conn: &mut PgConnection, user: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL)",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .fetch_one(conn)
    .await
}

/// Seals the secret again (under the current key), if it is still the one read.
pub async fn reseal_totp(
    db: &PgPool,
    user: Uuid,
    old: &Sealed,
    new: &Sealed,
) -> Result<(), sqlx::Error> {
    shared::db::execute(
        db,
        sqlx::query(
            "UPDATE user_totp SET sealed = $3, key_id = $4 WHERE user_id = $1 AND sealed = $2",
        )
        .bind(user)
        .bind(&old.bytes)
        .bind(&new.bytes)
        .bind(&new.key_id),
    )
    .await?;
    Ok(())
}

/// Up to `limit` secrets sealed under another key than `current`, of accounts after `after`
/// (in id order).
pub async fn sealed_under_other_keys(
    db: &PgPool,
    current: &str,
    after: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, Vec<u8>, String)>, sqlx::Error> {
    shared::db::fetch_all(
        db,
        sqlx::query_as(
            "SELECT user_id, sealed, key_id FROM user_totp
             WHERE key_id <> $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(current)
        .bind(after)
        .bind(limit),
    )
    .await
}

/// Removes the account's TOTP secret and its recovery codes; whether it had a confirmed one.
pub async fn remove_totp(conn: &mut PgConnection, user: Uuid) -> Result<bool, sqlx::Error> {
    let confirmed: Option<bool> = sqlx::query_scalar(
        "DELETE FROM user_totp WHERE user_id = $1 RETURNING confirmed_at IS NOT NULL",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    drop_recovery_codes_without_factor(conn, user).await?;
    Ok(confirmed == Some(true))
}

/// Deletes the account's recovery codes unless a factor is left (they come and go with the
/// account's factors).
pub async fn drop_recovery_codes_without_factor(
    conn: &mut PgConnection,
    user: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM recovery_codes WHERE user_id = $1
         AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)
         AND NOT EXISTS (SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes every factor of the account and its recovery codes (support staff's removal);
/// the factor it had (the app when it had both), if any.
pub async fn remove_all_factors(
    conn: &mut PgConnection,
    user: Uuid,
) -> Result<Option<shared::message::Factor>, sqlx::Error> {
    lock_factors(&mut *conn, user).await?;
    let app = remove_totp(&mut *conn, user).await?;
    let passkeys = sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
        .persistent(shared::db::named_statements())
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    drop_recovery_codes_without_factor(conn, user).await?;
    use shared::message::Factor;
    Ok(if app {
        Some(Factor::Totp)
    } else {
        (passkeys > 0).then_some(Factor::Passkey)
    })
}

/// Replaces the account's recovery codes with these hashes.
pub async fn replace_recovery_codes(
    conn: &mut PgConnection,
    user: Uuid,
    hashes: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .persistent(shared::db::named_statements())
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO recovery_codes (user_id, code_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .bind(hashes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Spends the recovery code with this hash if it is unspent; the unspent codes left, or
/// `None` when it was no unspent code of the account.
pub async fn spend_recovery_code(
    conn: &mut PgConnection,
    user: Uuid,
    hash: &[u8],
) -> Result<Option<i64>, sqlx::Error> {
    let spent = sqlx::query(
        "UPDATE recovery_codes SET used_at = now()
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .bind(hash)
    .execute(&mut *conn)
    .await?;
    if spent.rows_affected() != 1 {
        return Ok(None);
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .persistent(shared::db::named_statements())
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(left))
}
