//! Checking a reset email's one-time code (see [`shared::reset_code`] for how the worker issues
//! it and why the record is keyed by the address).
//!
//! Enumeration-safe by construction: before a code matches, the address is never looked up in
//! the database; a known address with a wrong code and an unknown address run the same
//! single-key script on Redis (one round trip) and get the same answer.

use chrono::{DateTime, Utc};
use shared::redis_pool::RedisPool;
use shared::reset_code;
use uuid::Uuid;

use crate::error::ApiError;

/// The link a right code stands for.
#[derive(Debug, Clone)]
pub struct CodeLink {
    pub user: Uuid,
    pub generation: i64,
    pub password_version: i32,
    pub signed_at: i64,
    pub fingerprint: String,
    /// The record's key, to kill the code once its link is used.
    key: String,
}

/// What the record says about a submitted code.
#[derive(Debug)]
pub enum CodeCheck {
    /// No live code matches: wrong (counted), dead, or no code for the address.
    Wrong,
    /// The code is right; the link it stands for still has to pass the link's checks.
    Right(CodeLink),
}

/// Checks `code` (normalised) for the address with key `email_key`, counting a wrong one.
/// `secret` is the pseudonym key the worker issued the code under.
pub async fn check(
    redis: &RedisPool,
    secret: &[u8],
    email_key: &str,
    code: &str,
) -> Result<CodeCheck, ApiError> {
    let address = reset_code::address_pseudonym(secret, email_key);
    let key = redis.keys().reset_code(&address);
    let wrong_key = redis.keys().reset_code_wrong(&address);
    let mac = reset_code::code_mac(secret, &address, code);
    let script = redis::Script::new(reset_code::CHECK_LUA);
    let (key_ref, wrong_key, mac) = (&key, &wrong_key, &mac);
    let answer: Vec<String> = redis
        .run(|mut c| async move {
            script
                .key(key_ref)
                .key(wrong_key)
                .arg(mac)
                .arg(reset_code::MAX_WRONG_CODES)
                .arg(reset_code::MAX_WRONG_CODES_PER_DAY)
                .arg(reset_code::WRONG_CODES_WINDOW_MS)
                .invoke_async(&mut c)
                .await
        })
        .await?;
    Ok(parse(answer, key))
}

/// Reads the script's answer; anything unreadable is a wrong code.
fn parse(answer: Vec<String>, key: String) -> CodeCheck {
    let user = |s: Option<&String>| s.and_then(|s| s.parse::<Uuid>().ok());
    match answer.first().map(String::as_str) {
        Some("2") => {
            let field = |i: usize| answer.get(i).and_then(|s| s.parse::<i64>().ok());
            match (
                user(answer.get(1)),
                field(2),
                field(3).and_then(|v| i32::try_from(v).ok()),
                field(4),
                answer.get(5),
            ) {
                (
                    Some(user),
                    Some(generation),
                    Some(password_version),
                    Some(signed_at),
                    Some(fp),
                ) => CodeCheck::Right(CodeLink {
                    user,
                    generation,
                    password_version,
                    signed_at,
                    fingerprint: fp.clone(),
                    key,
                }),
                _ => CodeCheck::Wrong,
            }
        }
        _ => CodeCheck::Wrong,
    }
}

impl CodeLink {
    /// Whether the link is past its lifetime (`max_age`, the reset link's) at `now`.
    pub fn expired(&self, max_age: std::time::Duration, now: DateTime<Utc>) -> bool {
        let max_age = max_age.as_secs();
        self.signed_at + i64::try_from(max_age).unwrap_or(i64::MAX) <= now.timestamp()
    }

    /// Kills the code (best effort: its link is burned, which kills it anyway).
    pub async fn kill(&self, redis: &RedisPool) {
        let script = redis::Script::new(reset_code::KILL_LUA);
        let (key, fp) = (&self.key, &self.fingerprint);
        let result = redis
            .run(|mut c| async move { script.key(key).arg(fp).invoke_async::<i64>(&mut c).await })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not retire a used reset code");
        }
    }
}

/// The site-wide breaker on wrong codes. Per-IP budgets bound one client, but a guesser with
/// many networks (an IPv6 /32, a botnet) stays under each of them; with 10^8 codes and
/// many accounts, what bounds the total is the rate of wrong codes over the whole site. Past
/// `limit` wrong codes in a sliding minute, code entry pauses for everyone (503
/// `code_entry_paused`); links keep working, since they cannot be guessed. Wrong codes are
/// not counted while paused (nobody gets to enter one), so the rate falls back and code
/// entry resumes by itself within about two minutes.
///
/// Minutes are of `now` (the api's clock); the estimate weighs the last minute by the part of
/// it still inside the sliding window, as a sliding-window counter does.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// Wrong codes per minute, over the site, that pause code entry.
    pub limit: u32,
}

impl Breaker {
    /// `Err(CodeEntryPaused)` while the site-wide rate of wrong codes is over the limit.
    pub async fn check(&self, redis: &RedisPool, now: DateTime<Utc>) -> Result<(), ApiError> {
        let (minute, into_minute) = minute_of(now);
        let keys = [
            redis.keys().code_breaker(minute),
            redis.keys().code_breaker(minute - 1),
        ];
        let keys = &keys;
        let counts: Vec<Option<u64>> = redis
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys[..]).query_async(&mut c).await })
            .await?;
        let count = |i: usize| counts.get(i).copied().flatten().unwrap_or(0) as f64;
        let estimate = count(0) + count(1) * (60.0 - into_minute) / 60.0;
        let paused = estimate >= f64::from(self.limit);
        metrics::gauge!("code_entry_paused").set(if paused { 1.0 } else { 0.0 });
        if paused {
            metrics::counter!("code_entry_refused_total").increment(1);
            return Err(ApiError::CodeEntryPaused {
                retry_after_secs: 60,
            });
        }
        Ok(())
    }

    /// Counts one wrong code. Best effort: a lost count is one guess the breaker misses.
    pub async fn count_wrong(&self, redis: &RedisPool, now: DateTime<Utc>) {
        let key = redis.keys().code_breaker(minute_of(now).0);
        let key = &key;
        let result = redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .incr(key, 1)
                    .ignore()
                    .expire(key, 180)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not count a wrong reset code site-wide");
        }
    }
}

/// The minute `now` falls in (seconds since the epoch / 60) and the seconds into it.
fn minute_of(now: DateTime<Utc>) -> (i64, f64) {
    let ms = now.timestamp_millis();
    (ms.div_euclid(60_000), ms.rem_euclid(60_000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_scripts_answers_are_read_and_anything_else_is_a_wrong_code() {
        let user = Uuid::new_v4().to_string();
        let right = parse(
            strings(&["2", &user, "1700000000000", "3", "1700000000", "fp"]),
            "k".into(),
        );
        let CodeCheck::Right(link) = right else {
            panic!("a right code: {right:?}")
        };
        assert_eq!(link.user.to_string(), user);
        assert_eq!(
            (link.generation, link.password_version, link.signed_at),
            (1_700_000_000_000, 3, 1_700_000_000)
        );
        assert_eq!(link.fingerprint, "fp");
        assert!(matches!(
            parse(strings(&["1"]), "k".into()),
            CodeCheck::Wrong
        ));
        for unreadable in [
            strings(&["0"]),
            strings(&[]),
            strings(&["2", &user, "x", "3", "1", "fp"]),
            strings(&["2", "not-a-uuid", "1", "3", "1", "fp"]),
            strings(&["7"]),
        ] {
            assert!(matches!(
                parse(unreadable.clone(), "k".into()),
                CodeCheck::Wrong
            ));
        }
    }
}
