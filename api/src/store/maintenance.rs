//! Data tasks that need the application's own code, run after the migrations on every start
//! (and by `api migrate`). Each is idempotent and cheap when there is nothing to do, and runs
//! on every start rather than once: replicas of an older version may still write old-form
//! rows during a rolling deploy. `maintenance_tasks` records when each last ran.

use sqlx::PgPool;
use uuid::Uuid;

/// Re-keys accounts whose address was stored with a Unicode domain before domains were
/// normalised to their IDNA ASCII form (`bücher.de` → `xn--bcher-kva.de`). Without this,
/// such an account could no longer be found by sign-in or forgot-password, and its owner could
/// register the same mailbox a second time. Two stored spellings of one mailbox cannot both
/// take the new key: the second is left as it is and logged for an operator to merge.
const IDNA_KEYS: &str = "idna-domain-keys";

/// Runs every task and records when it ran.
pub async fn run_pending(db: &PgPool) -> Result<(), sqlx::Error> {
    rekey_unicode_domains(db).await?;
    sqlx::query(
        "INSERT INTO maintenance_tasks (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET done_at = now()",
    )
    .persistent(shared::db::named_statements())
    .bind(IDNA_KEYS)
    .execute(db)
    .await?;
    Ok(())
}

/// See [`IDNA_KEYS`]. Returns how many accounts were re-keyed.
pub async fn rekey_unicode_domains(db: &PgPool) -> Result<u64, sqlx::Error> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE email_key ~ '[^[:ascii:]]'")
            .persistent(shared::db::named_statements())
            .fetch_all(db)
            .await?;
    let mut rekeyed = 0;
    for (id, email) in rows {
        let Ok(address) = shared::email::normalize(&email) else {
            tracing::warn!(user_id = %id, "stored address no longer valid; left as it is");
            continue;
        };
        let result = sqlx::query("UPDATE users SET email = $2, email_key = $3 WHERE id = $1")
            .persistent(shared::db::named_statements())
            .bind(id)
            .bind(address.address())
            .bind(address.key())
            .execute(db)
            .await;
        match result {
            Ok(_) => rekeyed += 1,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tracing::error!(user_id = %id,
                    "another account already holds this mailbox's normalised address; merge them by hand");
            }
            Err(e) => return Err(e),
        }
    }
    if rekeyed > 0 {
        tracing::info!(rekeyed, "accounts re-keyed to IDNA ASCII domains");
    }
    Ok(rekeyed)
}
