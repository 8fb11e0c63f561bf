//! Checking a reset email's one-time code (see [`shared::reset_code`] for how the worker issues
//! it and why the record is keyed by the address).
//!
//! Enumeration-safe by construction: before a code matches, the address is never looked up in
//! the database; a known address with a wrong code and an unknown address run the same
//! single-key script on Redis (one round trip) and get the same answer.

use chrono::{DateTime, Utc};
use shared::reset_code;
use uuid::Uuid;

use crate::{error::ApiError, startup::AppState};

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
pub async fn check(state: &AppState, email_key: &str, code: &str) -> Result<CodeCheck, ApiError> {
    let secret = state.config.pseudonym_secret();
    let address = reset_code::address_pseudonym(secret, email_key);
    let key = state.redis.keys().reset_code(&address);
    let wrong_key = state.redis.keys().reset_code_wrong(&address);
    let mac = reset_code::code_mac(secret, &address, code);
    let script = redis::Script::new(reset_code::CHECK_LUA);
    let (key_ref, wrong_key, mac) = (&key, &wrong_key, &mac);
    let answer: Vec<String> = state
        .redis
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
    /// Whether the link is past its lifetime at `now`.
    pub fn expired(&self, state: &AppState, now: DateTime<Utc>) -> bool {
        let max_age = state
            .tokens
            .max_age(shared::token::Purpose::PasswordReset)
            .as_secs();
        self.signed_at + i64::try_from(max_age).unwrap_or(i64::MAX) <= now.timestamp()
    }

    /// Kills the code (best effort: its link is burned, which kills it anyway).
    pub async fn kill(&self, state: &AppState) {
        let script = redis::Script::new(reset_code::KILL_LUA);
        let (key, fp) = (&self.key, &self.fingerprint);
        let result = state
            .redis
            .run(|mut c| async move { script.key(key).arg(fp).invoke_async::<i64>(&mut c).await })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not retire a used reset code");
        }
    }
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
