//! `api accounts …`: what support staff do to an account, each audited with a required
//! reason and the operator's name.
//!
//! - `revoke-sessions ADDRESS --reason …`: every session of the account ends now (the
//!   password and every link stay as they are).
//! - `lock ADDRESS --reason …`: the lock of a "this wasn't me" link (see [`crate::lock`]):
//!   sessions revoked, password version bumped, sign-in refused until a reset, a fresh reset
//!   email to the owner, `user.account_locked`. The reset email and the event leave through
//!   the outbox, which a running api relays.
//!
//! Both read `DATABASE_URL` and the Redis settings; neither prints the address back.

use anyhow::Context as _;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    message::Trace,
};

use crate::{config::Config, lock, sessions::Sessions};

/// What to do to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    RevokeSessions,
    Lock,
}

/// An operator's request.
#[derive(Debug, Clone)]
pub struct Request {
    pub act: Act,
    pub address: String,
    pub reason: String,
    /// Who acts (defaults to the login name).
    pub operator: String,
}

/// The stored detail of an operator's action: the reason and who gave it, on one line.
pub fn detail(reason: &str, operator: &str) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = format!("reason: {}; by: {}", one_line(reason), one_line(operator));
    detail.chars().take(1000).collect()
}

/// Carries out `request`; the line to print.
pub async fn run(config: &Config, request: &Request) -> anyhow::Result<String> {
    let reason = request.reason.trim();
    anyhow::ensure!(
        !reason.is_empty(),
        "--reason must say why (it is kept in the audit trail)"
    );
    let address = shared::email::normalize(&request.address)
        .map_err(|e| anyhow::anyhow!("not an email address: {e}"))?;
    let db = config.database()?;
    let redis = config.redis()?;
    let sessions = Sessions::new(redis, config.session_ttl);
    let accounts = shared::account::lookup(&db, &[address.key()], &[])
        .await
        .context("reading the account")?;
    let Some(user) = accounts.into_iter().next() else {
        anyhow::bail!("no account has this address");
    };
    let detail = detail(reason, &request.operator);
    match request.act {
        Act::RevokeSessions => {
            sessions
                .revoke_all(user.id)
                .await
                .map_err(|e| anyhow::anyhow!("revoking the sessions: {e:?}"))?;
            let event = AuditEvent {
                user_id: Some(user.id),
                detail: Some(&detail),
                ..AuditEvent::new(Action::SessionsRevoke, Outcome::Success)
            };
            shared::audit::record_on(&db, &event)
                .await
                .context("writing the audit row")?;
            Ok(format!("revoked every session of account {}", user.id))
        }
        Act::Lock => {
            let hasher = crate::hashing::Hasher::new(config.argon2, 1)?;
            let unusable_hash = hasher
                .hash_for(
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    lock::unusable_secret(),
                )
                .await
                .map_err(|e| anyhow::Error::new(e).context("hashing"))?;
            let trace = Trace::default();
            let lock = lock::Lock {
                ip: None,
                trace: &trace,
                locale: shared::locale::Locale::En,
                detail: Some(&detail),
                reset_max_age: config.reset_token_max_age,
                now: shared::clock::Clock::now(&shared::clock::SystemClock),
                unusable_hash: &unusable_hash,
            };
            let committed = lock::commit(&db, &user, &lock)
                .await
                .map_err(|e| anyhow::Error::new(e).context("locking the account"))?;
            anyhow::ensure!(
                committed.is_some(),
                "the account changed while it was being locked; run the command again"
            );
            lock::revoke_sessions(&sessions, user.id).await;
            Ok(format!(
                "locked account {}: sessions revoked, sign-in refused until a reset, a reset email queued to its owner",
                user.id
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_is_one_line_with_the_reason_and_the_operator() {
        assert_eq!(
            detail("ticket 42:\n  phished\r\n", "  sam "),
            "reason: ticket 42: phished; by: sam"
        );
        assert_eq!(detail(&"x".repeat(5000), "sam").chars().count(), 1000);
    }
}
