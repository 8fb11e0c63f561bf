//! The schema's migrations and sqlx's ledger of them (`_sqlx_migrations`).
//!
//! During a rolling deploy release N−1 runs beside N, and after a rollback N−1 runs alone, on
//! a schema N may have extended. Migrations only expand within a release (see deploy/README),
//! so an older build serves a newer schema: it applies what it has pending, logs the versions
//! it does not know and goes on. A migration it knows whose SQL changed, or one left half
//! applied, still stops it: that is a broken schema, not a newer one.

use std::collections::BTreeMap;

use anyhow::Context as _;
use sqlx::{PgPool, migrate::Migrator};

/// The embedded migrations (also run by `api migrate`); applied versions it does not know are
/// a newer release's and are left alone.
pub static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations")
};

/// One migration as this build and the ledger know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

/// What the ledger holds against this build's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Known to this build and applied.
    pub applied: Vec<Migration>,
    /// Known to this build, not applied yet.
    pub pending: Vec<Migration>,
    /// Applied, unknown to this build: a newer release's (this build serves on).
    pub unknown: Vec<Migration>,
    /// Applied but failed halfway (the ledger's `success = false`); nothing serves until an
    /// operator repairs it.
    pub failed: Vec<Migration>,
}

impl Status {
    /// Compares `ledger` (version, description, success) with `known` (this build's).
    pub fn compare(known: &[Migration], ledger: &[(i64, String, bool)]) -> Self {
        let applied: BTreeMap<i64, (&str, bool)> = ledger
            .iter()
            .map(|(version, description, success)| (*version, (description.as_str(), *success)))
            .collect();
        let mut status = Self::default();
        for migration in known {
            match applied.get(&migration.version) {
                Some((_, true)) => status.applied.push(migration.clone()),
                Some((_, false)) => status.failed.push(migration.clone()),
                None => status.pending.push(migration.clone()),
            }
        }
        for (version, (description, success)) in &applied {
            if known.iter().any(|m| m.version == *version) {
                continue;
            }
            let migration = Migration {
                version: *version,
                description: (*description).to_owned(),
            };
            if *success {
                status.unknown.push(migration);
            } else {
                status.failed.push(migration);
            }
        }
        status
    }

    /// The versions of [`Self::unknown`], for a log line.
    pub fn unknown_versions(&self) -> Vec<i64> {
        self.unknown.iter().map(|m| m.version).collect()
    }

    /// One line per migration: `applied|pending|unknown|failed VERSION DESCRIPTION`, oldest
    /// first within each group.
    pub fn lines(&self) -> Vec<String> {
        let groups = [
            ("applied", &self.applied),
            ("pending", &self.pending),
            ("unknown", &self.unknown),
            ("failed", &self.failed),
        ];
        groups
            .into_iter()
            .flat_map(|(state, migrations)| {
                migrations
                    .iter()
                    .map(move |m| format!("{state:<8} {} {}", m.version, m.description))
            })
            .collect()
    }
}

/// This build's migrations.
pub fn known() -> Vec<Migration> {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Migration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect()
}

/// Reads the ledger; an empty one when the database was never migrated.
pub async fn status(db: &PgPool) -> anyhow::Result<Status> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .persistent(shared::db::named_statements())
        .fetch_one(db)
        .await
        .context("reading the migration ledger")?;
    let ledger: Vec<(i64, String, bool)> = if exists {
        sqlx::query_as("SELECT version, description, success FROM _sqlx_migrations")
            .persistent(shared::db::named_statements())
            .fetch_all(db)
            .await
            .context("reading the migration ledger")?
    } else {
        Vec::new()
    };
    Ok(Status::compare(&known(), &ledger))
}

/// Applies pending migrations and the data tasks that follow them; logs the versions of a
/// newer release it found applied.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(db)
        .await
        .context("running database migrations")?;
    crate::store::maintenance::run_pending(db)
        .await
        .context("running data tasks after the migrations")?;
    log_unknown(db).await;
    Ok(())
}

/// Logs the applied migrations this build does not know (a newer release's), if any. A
/// failure to read the ledger is logged too, never fatal: it only informs.
pub async fn log_unknown(db: &PgPool) {
    match status(db).await {
        Ok(status) if !status.unknown.is_empty() => tracing::warn!(
            unknown = ?status.unknown_versions(),
            "the schema has migrations of a newer release; serving on it (migrations only expand within a release)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not read the migration ledger"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i64, description: &str) -> Migration {
        Migration {
            version,
            description: description.to_owned(),
        }
    }

    #[test]
    fn the_ledger_sorts_into_applied_pending_unknown_and_failed() {
        let known = [m(1, "users"), m(2, "sessions"), m(3, "codes")];
        let ledger = [
            (1, "users".to_owned(), true),
            (3, "codes".to_owned(), false),
            (29_991_231_000_000, "from later".to_owned(), true),
            (29_991_231_000_001, "broken later".to_owned(), false),
        ];
        let status = Status::compare(&known, &ledger);
        assert_eq!(status.applied, [m(1, "users")]);
        assert_eq!(status.pending, [m(2, "sessions")]);
        assert_eq!(status.unknown, [m(29_991_231_000_000, "from later")]);
        assert_eq!(
            status.failed,
            [m(3, "codes"), m(29_991_231_000_001, "broken later")]
        );
        assert_eq!(
            status.lines(),
            [
                "applied  1 users",
                "pending  2 sessions",
                "unknown  29991231000000 from later",
                "failed   3 codes",
                "failed   29991231000001 broken later",
            ]
        );
    }

    #[test]
    fn the_embedded_migrations_leave_a_newer_release_alone() {
        assert!(MIGRATOR.ignore_missing);
        assert!(!known().is_empty());
    }
}
