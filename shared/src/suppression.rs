//! The suppression list (`suppressed_addresses`): addresses whose mailbox does not exist.
//! The worker adds an address when a delivery to it gets a permanent "no such mailbox"
//! answer and drops later jobs to it (`dropped_suppressed`); the api takes it off when its
//! owner signs in or resets the password; `mail-worker suppression` lists and removes.

use sqlx::{PgExecutor, PgPool};

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Suppressed {
    pub address_key: String,
    /// The spellings that bounced (`None`: every spelling of the key, rows from before
    /// spellings were kept).
    pub addresses: Option<Vec<String>>,
    pub reason: String,
    pub suppressed_at: chrono::DateTime<chrono::Utc>,
}

/// Most spellings kept per address key; a key that bounced in more spellings than that keeps
/// the first ones (each needs a bounce, so this only bounds a row someone keeps growing).
pub const MAX_SPELLINGS: i32 = 20;

/// Puts the spelling `address` (whose key is `address_key`) on the list, beside the spellings
/// of the key that bounced before; the newest reason and time win. Only those spellings are
/// suppressed: mailbox names may be case-sensitive, so a spelling a stranger typed that bounced
/// says nothing about the owner's. A row that suppresses every spelling stays so.
pub async fn add(
    db: &PgPool,
    address_key: &str,
    address: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    crate::db::execute(
        db,
        sqlx::query(
            "INSERT INTO suppressed_addresses AS s (address_key, addresses, reason)
             VALUES ($1, ARRAY[$2], $3)
             ON CONFLICT (address_key) DO UPDATE SET
               addresses = CASE
                 WHEN s.addresses IS NULL OR $2 = ANY(s.addresses)
                      OR cardinality(s.addresses) >= $4 THEN s.addresses
                 ELSE array_append(s.addresses, $2) END,
               reason = $3, suppressed_at = now()",
        )
        .bind(address_key)
        .bind(address)
        .bind(reason)
        .bind(MAX_SPELLINGS),
    )
    .await
    .map(drop)
}

/// Takes `address_key` (every spelling of it) off the list; whether it was on it.
pub async fn remove(db: impl PgExecutor<'_>, address_key: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM suppressed_addresses WHERE address_key = $1")
        .persistent(crate::db::named_statements())
        .bind(address_key)
        .execute(db)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Which of `addresses` (each `(key, spelling)`) are on the list, as their spellings (one
/// statement for a batch of jobs; the worker runs it on the connection of its lookup).
pub async fn which(
    db: impl PgExecutor<'_>,
    addresses: &[(String, String)],
) -> Result<Vec<String>, sqlx::Error> {
    if addresses.is_empty() {
        return Ok(Vec::new());
    }
    let (keys, spellings): (Vec<&str>, Vec<&str>) = addresses
        .iter()
        .map(|(key, spelling)| (key.as_str(), spelling.as_str()))
        .unzip();
    sqlx::query_scalar(
        "SELECT j.address FROM unnest($1::text[], $2::text[]) AS j(address_key, address)
         JOIN suppressed_addresses s ON s.address_key = j.address_key
          AND (s.addresses IS NULL OR j.address = ANY(s.addresses))",
    )
    .bind(keys)
    .bind(spellings)
    .persistent(crate::db::named_statements())
    .fetch_all(db)
    .await
}

/// Every suppressed address, oldest first.
pub async fn list(db: &PgPool) -> Result<Vec<Suppressed>, sqlx::Error> {
    let query = sqlx::query_as(
        "SELECT address_key, addresses, reason, suppressed_at FROM suppressed_addresses
         ORDER BY suppressed_at, address_key",
    )
    .persistent(crate::db::named_statements());
    crate::db::pinned(db, async |c| query.fetch_all(c).await).await
}

/// Whether an SMTP answer says the recipient's mailbox does not exist: a 5xx reply with an
/// enhanced status of the addressing class (`5.1.x`: bad mailbox, bad domain, bad syntax,
/// mailbox moved), or a plain 551/553. Policy refusals (`5.7.x`, spam blocks) and a bare 550
/// are not: the mailbox may well exist.
pub fn is_no_such_mailbox(code: u16, text: &str) -> bool {
    let addressing = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .any(|word| {
            let mut parts = word.trim_end_matches(['.', ':']).split('.');
            matches!(
                (parts.next(), parts.next(), parts.next(), parts.next()),
                (Some("5"), Some("1"), Some(detail), None)
                    if !detail.is_empty() && detail.len() <= 3 && detail.bytes().all(|b| b.is_ascii_digit())
            )
        });
    (500..600).contains(&code) && (addressing || code == 551 || code == 553)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addressing_failures_suppress() {
        assert!(is_no_such_mailbox(550, "5.1.1 no such user"));
        assert!(is_no_such_mailbox(
            550,
            "Requested action not taken: mailbox unavailable (5.1.1)"
        ));
        assert!(is_no_such_mailbox(554, "5.1.2 bad destination system"));
        assert!(is_no_such_mailbox(551, "user not local"));
        assert!(is_no_such_mailbox(553, "mailbox name not allowed"));
        assert!(!is_no_such_mailbox(550, "5.7.1 message refused as spam"));
        assert!(!is_no_such_mailbox(550, "mailbox unavailable"));
        assert!(!is_no_such_mailbox(452, "4.1.1 try later"));
        assert!(!is_no_such_mailbox(421, "5.1.1 confused server"));
        assert!(!is_no_such_mailbox(552, "5.2.2 mailbox full"));
        assert!(!is_no_such_mailbox(550, "version 5.1.12345"));
    }
}
