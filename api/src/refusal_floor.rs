//! The refusal floor: the least time every refused sign-in takes while imported hashes
//! remain, so that timing does not tell an imported account from an unknown address.
//!
//! An unknown address costs one verification of the dummy hash (argon2id with the configured
//! parameters). A wrong password for an account imported with another framework's hash costs
//! a verification of that hash, which can take many times as long (BENCHMARKS.md, "Import":
//! 68 to 476 ms against 18 ms): a stranger could time sign-ins to learn which addresses came
//! with an import. So the api keeps a floor: what one verification of the costliest hash
//! signature still stored takes on this machine (`users.imported_hash_signature`, see
//! [`crate::foreign_hash`]; timed on a [`synthetic`](crate::hashing::synthetic) hash of it, on
//! the hashing threads like any verification), with a margin for the rest of the request.
//! Every refused sign-in (unknown address, wrong password, unusable hash) answers no sooner
//! than its start plus the floor, waiting on a timer, not on a hashing slot.
//!
//! Each imported hash is replaced by argon2id at its first successful sign-in (the signature
//! goes with it): the floor falls as accounts sign in, and is 0 once none remains, when
//! refusals take what they take. The signatures are read every [`REFRESH_EVERY`]; each is
//! timed when first seen and again after [`REMEASURE_AFTER`], so a replica costs at most a
//! verification per signature per quarter hour.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::time::Instant;

use crate::hashing::{self, Hasher};

/// How often the stored signatures are read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// How long a signature's timing is trusted before it is timed again (the machine's load and
/// its hardware change; a new signature is timed at once).
pub const REMEASURE_AFTER: Duration = Duration::from_secs(15 * 60);

/// The floor is the costliest verification plus a quarter and [`MARGIN_EXTRA`]: the timing is
/// of the hash alone, while a refused sign-in also reads the account, counts the attempt and
/// writes its audit row; and one timing may come out a little fast. Without the margin the
/// costliest accounts would answer a few milliseconds after the floor and every other refusal
/// at it.
const MARGIN_PERCENT: u32 = 25;
const MARGIN_EXTRA: Duration = Duration::from_millis(5);

/// The client the timings are queued as: an address no request comes from, so they wait for
/// their own turn and no client's (see [`Hasher`]).
const TIMING_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The floor of this process, shared by its handlers and the task that refreshes it.
#[derive(Clone, Default)]
pub struct RefusalFloor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The floor in nanoseconds (0: no imported hash remains).
    nanos: AtomicU64,
    /// Each signature's last timing; held for a whole refresh, so two refreshes (the task's
    /// and a test's) never interleave.
    timings: tokio::sync::Mutex<HashMap<String, Timing>>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    cost: Duration,
    at: Instant,
}

impl RefusalFloor {
    /// The floor now.
    pub fn current(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::Relaxed))
    }

    /// Waits until `started` plus the floor (at once when that has passed): what a refused
    /// sign-in does before it answers.
    pub async fn hold(&self, started: Instant) {
        let floor = self.current();
        if !floor.is_zero() {
            tokio::time::sleep_until(started + floor).await;
        }
    }

    /// Reads the signatures still stored, times those not timed within [`REMEASURE_AFTER`] on
    /// `hasher`'s threads, and sets the floor from the costliest. The new floor.
    pub async fn refresh(&self, db: &PgPool, hasher: &Hasher) -> anyhow::Result<Duration> {
        let mut timings = self.inner.timings.lock().await;
        let signatures = stored_signatures(db).await?;
        timings.retain(|signature, _| signatures.contains(signature));
        let mut costliest: Option<(&str, Duration)> = None;
        for signature in &signatures {
            let fresh = (timings.get(signature)).filter(|t| t.at.elapsed() < REMEASURE_AFTER);
            let cost = match fresh {
                Some(timing) => timing.cost,
                None => match time(hasher, signature).await {
                    Ok(cost) => {
                        let at = Instant::now();
                        timings.insert(signature.clone(), Timing { cost, at });
                        cost
                    }
                    // The pool saturated, or a signature no hash can have (written by hand):
                    // the last timing stands, or the next refresh tries again.
                    Err(e) => {
                        tracing::warn!(%signature, error = %format!("{e:#}"),
                            "could not time a stored hash signature");
                        match timings.get(signature) {
                            Some(timing) => timing.cost,
                            None => continue,
                        }
                    }
                },
            };
            if costliest.is_none_or(|(_, c)| cost > c) {
                costliest = Some((signature, cost));
            }
        }
        let floor = costliest.map_or(Duration::ZERO, |(_, cost)| with_margin(cost));
        let before = self.current();
        self.inner.nanos.store(
            u64::try_from(floor.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        metrics::gauge!("sign_in_refusal_floor_seconds").set(floor.as_secs_f64());
        // Said when it moves by a tenth or more (each new timing moves it a little).
        if before.abs_diff(floor) * 10 > before.max(floor) {
            tracing::info!(
                floor_ms = floor.as_millis(),
                costliest = costliest.map(|(s, _)| s),
                signatures = signatures.len(),
                "sign-in refusal floor changed"
            );
        }
        Ok(floor)
    }

    /// Refreshes the floor at once and every [`REFRESH_EVERY`], for the life of the task.
    pub async fn keep_fresh(self, db: PgPool, hasher: Hasher) {
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.refresh(&db, &hasher).await {
                // The database is away (the floor stays as it was).
                tracing::warn!(error = %format!("{e:#}"), "could not refresh the sign-in refusal floor");
            }
        }
    }
}

/// `cost` with the margin (see [`MARGIN_PERCENT`]).
fn with_margin(cost: Duration) -> Duration {
    cost + cost * MARGIN_PERCENT / 100 + MARGIN_EXTRA
}

/// One verification of a synthetic hash of `signature` on the hashing threads.
async fn time(hasher: &Hasher, signature: &str) -> anyhow::Result<Duration> {
    let synthetic = hashing::synthetic(signature)?;
    (hasher.time_verify(TIMING_CLIENT, synthetic).await).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The distinct signatures in `users`. Each step of the recursion takes the next larger one
/// from the partial index (a "loose index scan"): a few index probes per signature, however
/// many accounts hold it, where `SELECT DISTINCT` would read every entry.
async fn stored_signatures(db: &PgPool) -> sqlx::Result<Vec<String>> {
    let query = sqlx::query_as::<_, (String,)>(
        "WITH RECURSIVE s(signature) AS (
             (SELECT imported_hash_signature FROM users
              WHERE imported_hash_signature IS NOT NULL
              ORDER BY imported_hash_signature LIMIT 1)
             UNION ALL
             SELECT (SELECT imported_hash_signature FROM users
                     WHERE imported_hash_signature > s.signature
                     ORDER BY imported_hash_signature LIMIT 1)
             FROM s WHERE s.signature IS NOT NULL
         )
         SELECT signature FROM s WHERE signature IS NOT NULL",
    );
    let rows = shared::db::fetch_all(db, query).await?;
    Ok(rows.into_iter().map(|(signature,)| signature).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_covers_the_rest_of_the_request() {
        assert_eq!(
            with_margin(Duration::from_millis(200)),
            Duration::from_millis(255)
        );
        assert_eq!(with_margin(Duration::ZERO), MARGIN_EXTRA);
    }

    #[tokio::test]
    async fn a_refusal_is_held_until_its_start_plus_the_floor() {
        let floor = RefusalFloor::default();
        floor.inner.nanos.store(60_000_000, Ordering::Relaxed);
        assert_eq!(floor.current(), Duration::from_millis(60));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        floor.hold(started).await;
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
