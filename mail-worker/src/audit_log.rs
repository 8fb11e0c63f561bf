//! The worker's audit rows, written in groups: every row asked for while the previous
//! statement ran, or within [`LINGER`] of the first, goes into the next one (one multi-row
//! INSERT and one commit for all of them, on a connection the writer keeps). A caller waits
//! until its row is committed (or failed), so a job is still settled only after its audit row
//! is written; under load hundreds of jobs share one commit, and a lone row waits [`LINGER`]
//! longer than it would on its own.

use std::net::IpAddr;

use shared::db::Kept;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    email,
    keys::pseudonym,
    message::{Envelope, Job},
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most rows written by one statement.
const MAX_ROWS: usize = 512;
/// Longest wait for one statement: a connection that hangs (no answer, no error) must not
/// hold every job that waits for its audit row.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the writer waits for more rows after the first of a group. A job's ack waits for
/// its row, so this is what a lone job's settlement costs more; under load it turns a
/// statement and a commit per sent email into one per several.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// How long without a row before the writer gives its connection back to the pool.
const KEEP_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// One audit row of the worker, owned so it can wait for the writer.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub action: Action,
    pub outcome: Outcome,
    pub user_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub address_hash: Option<String>,
    pub request_id: Option<String>,
}

impl AuditRow {
    /// The row of a final decision about `job`: the address as a pseudonym under `secret`,
    /// the IP only if it really is one. A job for an account that is gone (one naming its
    /// account, dropped as unknown: erased since) keeps neither: the erasure left no address
    /// or IP of the person, and mail in flight must not bring them back.
    pub fn of_job(job: &Envelope, outcome: Outcome, user: Option<Uuid>, secret: &[u8]) -> Self {
        let gone = outcome == Outcome::DroppedUnknown && user.is_some();
        let (address, ip) = match &job.job {
            Job::PasswordResetRequested { email, ip, .. } => (email.as_str(), ip.as_deref()),
            Job::EmailVerification { email, .. } | Job::AccountExistsNotice { email, .. } => {
                (email.as_str(), None)
            }
            Job::PasswordChanged { email, ip, .. } | Job::SecurityNotice { email, ip, .. } => {
                (email.as_str(), ip.as_deref())
            }
        };
        AuditRow {
            action: Action::of_job(&job.job),
            outcome,
            user_id: user,
            ip: ip
                .filter(|_| !gone)
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
            address_hash: (email::normalize(address).ok())
                .filter(|_| !gone)
                .map(|a| pseudonym(secret, "email", a.key())),
            request_id: job.trace.request_id.clone(),
        }
    }

    fn event(&self) -> AuditEvent<'_> {
        AuditEvent {
            action: self.action,
            outcome: self.outcome,
            user_id: self.user_id,
            ip: self.ip,
            address_hash: self.address_hash.as_deref(),
            request_id: self.request_id.as_deref(),
            detail: None,
        }
    }
}

struct Pending {
    row: AuditRow,
    written: oneshot::Sender<()>,
}

/// Handle to the writer task; the task ends when the last handle is dropped, after writing
/// what it holds.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Pending>,
}

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(db: sqlx::PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(db, rx));
        Self { tx }
    }

    /// Writes `rows` and returns once they are committed or their statement failed (failures
    /// are logged: the email's fate must not depend on the audit table).
    pub async fn record(&self, rows: impl IntoIterator<Item = AuditRow>) {
        let waits: Vec<oneshot::Receiver<()>> = rows
            .into_iter()
            .filter_map(|row| {
                let (written, wait) = oneshot::channel();
                match self.tx.send(Pending { row, written }) {
                    Ok(()) => Some(wait),
                    Err(lost) => {
                        tracing::error!(
                            action = %lost.0.row.action,
                            outcome = %lost.0.row.outcome,
                            "the audit writer is gone; audit row not written"
                        );
                        None
                    }
                }
            })
            .collect();
        for wait in waits {
            let _ = wait.await;
        }
    }
}

async fn write_loop(db: sqlx::PgPool, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut conn = Kept::new(db);
    let mut group = Vec::with_capacity(MAX_ROWS);
    loop {
        // The connection is kept while rows keep coming; a quiet moment gives it back (a
        // pool that closes at shutdown waits for every connection).
        let received =
            match tokio::time::timeout(KEEP_IDLE, rx.recv_many(&mut group, MAX_ROWS)).await {
                Ok(received) => received,
                Err(_) => {
                    conn.give_back();
                    rx.recv_many(&mut group, MAX_ROWS).await
                }
            };
        if received == 0 {
            break;
        }
        // The rows of jobs settled one by one (each sent email) arrive a few at a time: wait
        // a moment for more, so that they share the statement and its commit.
        let until = tokio::time::Instant::now() + LINGER;
        while group.len() < MAX_ROWS {
            let room = MAX_ROWS - group.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut group, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let events: Vec<AuditEvent<'_>> = group.iter().map(|p| p.row.event()).collect();
        let result = tokio::time::timeout(WRITE_TIMEOUT, write(&mut conn, &events)).await;
        drop(events);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, rows = group.len(), "could not write audit rows");
            }
            Err(_) => tracing::error!(
                rows = group.len(),
                timeout_secs = WRITE_TIMEOUT.as_secs(),
                "audit rows not confirmed in time; they may or may not be written"
            ),
        }
        for pending in group.drain(..) {
            let _ = pending.written.send(());
        }
    }
}

/// Writes `events` on the kept connection. When the connection itself was lost (the server
/// restarted, a network cut, a pooler's idle timeout), once more on a fresh one: a lost
/// connection almost always lost its statement with it, so a repeated row is rare and a
/// lost one rarer.
async fn write(conn: &mut Kept, events: &[AuditEvent<'_>]) -> Result<(), sqlx::Error> {
    match write_once(conn, events).await {
        Err(e) if shared::db::connection_lost(&e) => write_once(conn, events).await,
        other => other,
    }
}

/// One statement on the kept connection (pinned behind a transaction pooler).
async fn write_once(kept: &mut Kept, events: &[AuditEvent<'_>]) -> Result<(), sqlx::Error> {
    kept.pinned(async |conn| shared::audit::record_many(conn, events).await)
        .await
}
