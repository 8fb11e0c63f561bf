//! `api users import PATH|-`: bringing a site's existing accounts in with the hashes they have.
//!
//! JSON lines `{"email", "password_hash" (string or null), "email_verified" (default true)}`,
//! streamed in batches of [`BATCH`] rows (a line is never held longer than its batch, so a
//! million rows take the memory of one batch). Each hash is read and checked against the
//! verification caps ([`crate::hashing::usable`]): argon2 PHC, bcrypt, Werkzeug, Django and
//! PHC scrypt/PBKDF2 (see [`crate::foreign_hash`]). `null`: the account has no password until
//! its owner resets (it holds the hash of a secret nobody keeps, as a locked account does, so
//! sign-in answers as for a wrong password after the same work). An address that has an
//! account already, in the database or earlier in the file, is skipped, never overwritten; a
//! bad line is refused with its number and the rest imported. Each batch commits with one
//! audit row per account it created (`import`), so running the same file again imports
//! nothing.
//!
//! Each account keeps its hash's cost signature (scheme and cost parameters, see
//! [`crate::hashing::signature`]) until its first sign-in replaces the hash: the api makes
//! every refused sign-in as slow as the costliest signature still stored
//! ([`crate::refusal_floor`]). So an import times one verification of each new signature
//! here, and refuses the hashes whose signature takes longer than its budget
//! (`IMPORT_MAX_VERIFY_MS`, `hash_too_costly`): no imported account can make a verification,
//! nor every refused sign-in, cost more than that.

use std::{collections::HashMap, fmt, time::Duration};

use serde::Deserialize;
use shared::audit::{Action, Outcome};
use sqlx::PgPool;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};
use uuid::Uuid;

use crate::hashing::Hasher;

/// Rows per insert (and per transaction).
pub const BATCH: usize = 1000;

/// The longest line read; a longer one is refused (and skipped without being held).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The budget of [`run`]: the default of `IMPORT_MAX_VERIFY_MS`.
pub const DEFAULT_MAX_VERIFY: Duration = Duration::from_millis(1000);

/// What one line holds. Every field is named on purpose: `password_hash` must be there (a
/// misspelt one must not import an account without its password), and an unknown field is
/// refused rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    email: String,
    /// `None` when the line has no such field; `Some(None)` for `null`.
    #[serde(default, deserialize_with = "present")]
    password_hash: Option<Option<String>>,
    #[serde(default = "verified_by_default")]
    email_verified: bool,
}

fn verified_by_default() -> bool {
    true
}

/// A field that is there, `null` or not (serde calls this only for a field the line has).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A line that was not imported, and why (`code` is stable, `reason` for people).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub line: u64,
    pub code: &'static str,
    #[serde(skip)]
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} ({})", self.line, self.reason, self.code)
    }
}

/// The counts of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub imported: u64,
    pub skipped: u64,
    pub refused: u64,
}

/// One account, ready to insert.
struct Account {
    email: String,
    email_key: String,
    password_hash: Option<String>,
    /// The hash's cost signature (`None` without a hash).
    signature: Option<String>,
    verified: bool,
}

/// Reads `line` (number `n`) into an account, or says why not.
fn read(n: u64, line: &str) -> Result<Account, Refusal> {
    let refuse = |code: &'static str, reason: String| Refusal {
        line: n,
        code,
        reason,
    };
    // The reason names where, never what: serde's own messages quote the input (an address,
    // a hash), and refusals are printed.
    let line: Line = serde_json::from_str(line).map_err(|e| {
        let (code, what) = if e.is_data() {
            (
                "invalid_fields",
                "not the fields email, password_hash, email_verified",
            )
        } else {
            ("invalid_json", "not a JSON object")
        };
        refuse(code, format!("{what} (column {})", e.column()))
    })?;
    let Some(password_hash) = line.password_hash else {
        let reason = "no password_hash (null for an account without a password)".into();
        return Err(refuse("invalid_fields", reason));
    };
    let address = shared::email::normalize(&line.email)
        .map_err(|e| refuse("invalid_email", e.to_string()))?;
    // Read and checked against the caps as a sign-in would.
    let signature = (password_hash.as_deref())
        .map(crate::hashing::signature)
        .transpose()
        .map_err(|e| refuse("unusable_hash", format!("{e:#}")))?;
    Ok(Account {
        email: address.address().to_owned(),
        email_key: address.key().to_owned(),
        password_hash,
        signature,
        verified: line.email_verified,
    })
}

/// What one verification of each signature met so far costs here, against the budget.
struct Costs {
    budget: Duration,
    timed: HashMap<String, Duration>,
    /// The hashing pool the timings run on (inside the api: its memory bound and fairness);
    /// `None`: a blocking thread of its own (the command line).
    pool: Option<Hasher>,
}

impl Costs {
    fn new(budget: Duration, pool: Option<Hasher>) -> Self {
        Self {
            budget,
            timed: HashMap::new(),
            pool,
        }
    }

    /// `account` (line `n`), or its refusal when its hash's signature costs over the budget.
    async fn within(
        &mut self,
        n: u64,
        account: Account,
    ) -> anyhow::Result<Result<Account, Refusal>> {
        let Some(signature) = &account.signature else {
            return Ok(Ok(account));
        };
        let cost = match self.timed.get(signature) {
            Some(cost) => *cost,
            None => {
                let cost = time(signature, self.budget, self.pool.as_ref()).await?;
                self.timed.insert(signature.clone(), cost);
                cost
            }
        };
        if cost <= self.budget {
            return Ok(Ok(account));
        }
        Ok(Err(Refusal {
            line: n,
            code: "hash_too_costly",
            reason: format!(
                "one verification of its parameters ({signature}) takes {} ms here, over the \
                 budget of {} ms (IMPORT_MAX_VERIFY_MS)",
                cost.as_millis(),
                self.budget.as_millis()
            ),
        }))
    }
}

/// What one verification of `signature` costs on this machine: its synthetic hash verified on
/// `pool` (else a blocking thread), the fastest of three when the first is over `budget` (a
/// moment of load does not refuse a hash).
async fn time(
    signature: &str,
    budget: Duration,
    pool: Option<&Hasher>,
) -> anyhow::Result<Duration> {
    let synthetic = crate::hashing::synthetic(signature)?;
    if let Some(pool) = pool {
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut fastest = Duration::MAX;
        for _ in 0..3 {
            let took = (pool.time_verify(client, synthetic.clone()).await)
                .map_err(|e| anyhow::anyhow!("timing a signature: {e}"))?;
            fastest = fastest.min(took);
            if fastest <= budget {
                break;
            }
        }
        return Ok(fastest);
    }
    tokio::task::spawn_blocking(move || {
        let mut fastest = crate::hashing::time_verify_here(&synthetic)?;
        for _ in 0..2 {
            if fastest <= budget {
                break;
            }
            fastest = fastest.min(crate::hashing::time_verify_here(&synthetic)?);
        }
        Ok(fastest)
    })
    .await?
}

/// Imports the JSON lines of `input` into `db` with the default budget
/// ([`DEFAULT_MAX_VERIFY`]; see [`run_within`]).
pub async fn run(
    db: &PgPool,
    input: impl AsyncBufRead + Unpin,
    no_password: &str,
    report: impl FnMut(Report<'_>),
) -> anyhow::Result<Summary> {
    run_within(db, input, no_password, DEFAULT_MAX_VERIFY, report).await
}

/// Imports the JSON lines of `input` into `db`. `no_password` is the hash stored for a
/// `null` one (see the module's documentation); a hash whose verification takes longer than
/// `max_verify` here is refused; `report` hears of each refused line and of the counts after
/// each batch.
pub async fn run_within(
    db: &PgPool,
    input: impl AsyncBufRead + Unpin,
    no_password: &str,
    max_verify: Duration,
    report: impl FnMut(Report<'_>),
) -> anyhow::Result<Summary> {
    import(db, input, no_password, Costs::new(max_verify, None), report).await
}

/// [`run_within`], each new signature timed on `pool` (the api's hashing threads, so an
/// import over the admin API keeps to their memory bound and fairness).
pub async fn run_on(
    db: &PgPool,
    input: impl AsyncBufRead + Unpin,
    no_password: &str,
    max_verify: Duration,
    pool: &Hasher,
    report: impl FnMut(Report<'_>),
) -> anyhow::Result<Summary> {
    let costs = Costs::new(max_verify, Some(pool.clone()));
    import(db, input, no_password, costs, report).await
}

async fn import(
    db: &PgPool,
    input: impl AsyncBufRead + Unpin,
    no_password: &str,
    mut costs: Costs,
    mut report: impl FnMut(Report<'_>),
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut batch: Vec<Account> = Vec::with_capacity(BATCH);
    let mut lines = Lines::new(input);
    while let Some((n, line)) = lines.next().await? {
        // A byte-order mark some exporters write first.
        let line = line.map(|text| {
            if n == 1 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            }
        });
        let account = match line {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => read(n, text.trim()),
            Err(LineError::TooLong) => Err(Refusal {
                line: n,
                code: "line_too_long",
                reason: format!("longer than {MAX_LINE_BYTES} bytes"),
            }),
            Err(LineError::NotUtf8) => Err(Refusal {
                line: n,
                code: "invalid_json",
                reason: "not UTF-8".into(),
            }),
        };
        let account = match account {
            Ok(account) => costs.within(n, account).await?,
            Err(refusal) => Err(refusal),
        };
        match account {
            Ok(account) => batch.push(account),
            Err(refusal) => {
                summary.refused += 1;
                report(Report::Refused(&refusal));
            }
        }
        if batch.len() == BATCH {
            insert(db, &mut batch, no_password, &mut summary).await?;
            report(Report::Progress(summary, n));
        }
    }
    if !batch.is_empty() {
        insert(db, &mut batch, no_password, &mut summary).await?;
    }
    report(Report::Progress(summary, lines.read));
    Ok(summary)
}

/// What [`run`] tells as it goes.
#[derive(Debug)]
pub enum Report<'a> {
    Refused(&'a Refusal),
    /// The counts so far, after this many lines.
    Progress(Summary, u64),
}

/// Inserts `batch` (emptied) in one transaction: the new accounts and an `import` audit row
/// for each; addresses that have an account already are skipped.
async fn insert(
    db: &PgPool,
    batch: &mut Vec<Account>,
    no_password: &str,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let emails: Vec<&str> = batch.iter().map(|a| a.email.as_str()).collect();
    let keys: Vec<&str> = batch.iter().map(|a| a.email_key.as_str()).collect();
    let hashes: Vec<&str> = (batch.iter())
        .map(|a| a.password_hash.as_deref().unwrap_or(no_password))
        .collect();
    let verified: Vec<bool> = batch.iter().map(|a| a.verified).collect();
    let signatures: Vec<Option<&str>> = batch.iter().map(|a| a.signature.as_deref()).collect();
    let query = sqlx::query_scalar::<_, i64>(
        "WITH rows AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                                  $8::text[])
                 WITH ORDINALITY AS r(id, email, email_key, password_hash, verified, signature, n)
         ), new AS (
             INSERT INTO users (id, email, email_key, password_hash, email_verified_at,
                                imported_hash_signature)
             SELECT id, email, email_key, password_hash, CASE WHEN verified THEN now() END,
                    signature
             FROM rows
             -- The file's order: of two lines for one address, the first is the account.
             ORDER BY n
             ON CONFLICT (email_key) DO NOTHING
             RETURNING id
         ), audited AS (
             INSERT INTO audit_events (action, outcome, user_id)
             SELECT $6, $7, id FROM new
             RETURNING 1
         )
         SELECT count(*) FROM audited",
    )
    .bind(&ids)
    .bind(&emails)
    .bind(&keys)
    .bind(&hashes)
    .bind(&verified)
    .bind(Action::Import.as_str())
    .bind(Outcome::Created.as_str())
    .bind(&signatures)
    .persistent(shared::db::named_statements());
    let created = shared::db::pinned(db, async |c| query.fetch_one(c).await).await?;
    let created = u64::try_from(created).unwrap_or(0);
    summary.imported += created;
    summary.skipped += batch.len() as u64 - created;
    batch.clear();
    Ok(())
}

/// Why a line is no text to read.
#[derive(Debug, Clone, Copy)]
enum LineError {
    TooLong,
    NotUtf8,
}

/// The lines of the input, numbered from 1, each at most [`MAX_LINE_BYTES`]: a longer one is
/// read past (not held).
struct Lines<R> {
    input: R,
    buffer: Vec<u8>,
    read: u64,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            buffer: Vec::new(),
            read: 0,
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<(u64, Result<&str, LineError>)>> {
        self.buffer.clear();
        // Room for the line ending (`\r\n`) beyond the longest line.
        let limit = MAX_LINE_BYTES as u64 + 3;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        self.read += 1;
        let ending = match self.buffer.as_slice() {
            [.., b'\r', b'\n'] => 2,
            [.., b'\n'] => 1,
            _ => 0,
        };
        if self.buffer.len() - ending > MAX_LINE_BYTES {
            if ending > 0 {
                return Ok(Some((self.read, Err(LineError::TooLong))));
            }
            // The rest of the line, read and dropped a chunk at a time.
            loop {
                let chunk = self.input.fill_buf().await?;
                if chunk.is_empty() {
                    break;
                }
                let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                self.input.consume(used);
                if done {
                    break;
                }
            }
            return Ok(Some((self.read, Err(LineError::TooLong))));
        }
        let text = std::str::from_utf8(&self.buffer).map_err(|_| LineError::NotUtf8);
        Ok(Some((self.read, text)))
    }
}
