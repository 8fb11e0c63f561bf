//! PostgreSQL settings both services apply to every query.
//!
//! Behind a PgBouncer in transaction pooling mode, consecutive transactions of one client
//! connection run on different server connections, so a named prepared statement made in one
//! is missing (or already taken) in the next. sqlx names every statement it may reuse, even
//! with its statement cache off, so each query of ours asks for an unnamed statement when
//! `DATABASE_URL` turns the cache off (`statement-cache-capacity=0`, the documented PgBouncer
//! setting). A direct connection keeps named, cached statements (one round trip per query).
//!
//! An unnamed statement is parsed and described in one exchange and bound and executed in the
//! next; between the two the pooler may hand the client another server connection, whose
//! unnamed statement is a different one. [`Session`] therefore pins one server connection for
//! the statements outside a transaction of ours by running them in one (`BEGIN` ... `COMMIT`,
//! simple-protocol messages that need no statement), and only then.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{
    FromRow, PgConnection, PgPool, Postgres, Transaction,
    pool::PoolConnection,
    postgres::{PgArguments, PgQueryResult, PgRow},
    query::{Query, QueryAs},
};

static NAMED_STATEMENTS: AtomicBool = AtomicBool::new(true);

/// Reads the statement setting from the database URL a process runs with.
pub fn configure(database_url: &str) {
    NAMED_STATEMENTS.store(!statement_cache_off(database_url), Ordering::Relaxed);
}

/// Whether queries may use named (prepared and cached) statements: pass it to every query's
/// `.persistent(…)`.
pub fn named_statements() -> bool {
    NAMED_STATEMENTS.load(Ordering::Relaxed)
}

/// Whether `url` sets `statement-cache-capacity=0`.
pub fn statement_cache_off(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.trim() == "statement-cache-capacity=0")
    })
}

/// Runs `work` on one connection of `db`, pinned behind a transaction pooler (see [`Session`]).
pub async fn pinned<T>(
    db: &PgPool,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    let mut session = Session::begin(db).await?;
    let value = work(session.conn()).await?;
    session.finish().await?;
    Ok(value)
}

/// Executes one statement on its own (not in a transaction of the caller's), with the
/// process's statement naming and, behind a transaction pooler, pinned (see [`Session`]).
pub async fn execute(
    db: &PgPool,
    query: Query<'_, Postgres, PgArguments>,
) -> Result<PgQueryResult, sqlx::Error> {
    let query = query.persistent(named_statements());
    pinned(db, async |c| query.execute(c).await).await
}

/// Fetches at most one row with one statement on its own, as [`execute`] runs it.
pub async fn fetch_optional<O>(
    db: &PgPool,
    query: QueryAs<'_, Postgres, O, PgArguments>,
) -> Result<Option<O>, sqlx::Error>
where
    O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
{
    let query = query.persistent(named_statements());
    pinned(db, async |c| query.fetch_optional(c).await).await
}

/// Fetches every row of one statement on its own, as [`execute`] runs it.
pub async fn fetch_all<O>(
    db: &PgPool,
    query: QueryAs<'_, Postgres, O, PgArguments>,
) -> Result<Vec<O>, sqlx::Error>
where
    O: Send + Unpin + for<'r> FromRow<'r, PgRow>,
{
    let query = query.persistent(named_statements());
    pinned(db, async |c| query.fetch_all(c).await).await
}

/// A connection for a few statements outside a transaction of the caller's: the pooled
/// connection itself, or (behind a transaction pooler) a transaction that pins one server
/// connection. End it with [`Session::finish`].
pub enum Session {
    Direct(PoolConnection<Postgres>),
    Pinned(Transaction<'static, Postgres>),
}

impl Session {
    /// Takes a connection from `db`.
    pub async fn begin(db: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(if named_statements() {
            Session::Direct(db.acquire().await?)
        } else {
            Session::Pinned(db.begin().await?)
        })
    }

    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut PgConnection {
        match self {
            Session::Direct(c) => c,
            Session::Pinned(t) => t,
        }
    }

    /// Commits a pinning transaction; returns a direct connection to the pool.
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Session::Direct(_) => Ok(()),
            Session::Pinned(t) => t.commit().await,
        }
    }
}

/// One pooled connection kept for the statements of a long-lived loop (the worker's audit
/// writer): taken once and used again and again, so its statements skip the pool's checks of
/// a connection when it is taken and when it is given back (a round trip each). After a
/// failed statement the loop gives it back ([`Kept::give_back`]); the pool's check decides
/// whether it is still good, and the next statement takes one anew.
pub struct Kept {
    db: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl Kept {
    pub fn new(db: PgPool) -> Self {
        Self { db, conn: None }
    }

    /// The kept connection, taken from the pool first when there is none.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.db.acquire().await?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Gives the kept connection back to the pool.
    pub fn give_back(&mut self) {
        self.conn = None;
    }

    /// Runs `work` on the kept connection, pinned behind a transaction pooler as [`pinned`]
    /// pins; after a failure the connection is given back, and the pool's check decides
    /// whether it is still good.
    pub async fn pinned<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let result = self.pinned_once(work).await;
        if result.is_err() {
            self.give_back();
        }
        result
    }

    async fn pinned_once<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let conn = self.conn().await?;
        if named_statements() {
            return work(conn).await;
        }
        let mut transaction = sqlx::Connection::begin(conn).await?;
        let value = work(&mut transaction).await?;
        transaction.commit().await?;
        Ok(value)
    }
}

/// Whether `error` means the connection is gone rather than the statement refused: I/O and
/// TLS failures, and the server's connection exceptions (class 08) and operator
/// interventions (57P01 and its kin: a shutdown, a terminated backend).
pub fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_zero_statement_cache_turns_named_statements_off() {
        assert!(statement_cache_off(
            "postgres://u@h:6432/db?statement-cache-capacity=0"
        ));
        assert!(statement_cache_off(
            "postgres://u@h/db?sslmode=require&statement-cache-capacity=0"
        ));
        assert!(!statement_cache_off("postgres://u@h/db"));
        assert!(!statement_cache_off(
            "postgres://u@h/db?statement-cache-capacity=100"
        ));
    }
}
