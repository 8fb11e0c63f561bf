//! `api accounts …`: the admin API's operations from the shell (see [`crate::admin`]), for an
//! operator without the admin API or with a list of addresses. Each reads `DATABASE_URL` and
//! the Redis settings, and is audited with the operator's name (and, where it changes the
//! account, the required reason). Mail they queue (a lock's reset email, `recovery --send`)
//! leaves through the outbox, which a running api relays.

use std::sync::Arc;

use shared::token::TokenKeys;

use crate::{
    admin::{Actor, Desk, Recovery},
    config::Config,
    hashing::Hasher,
    rate_limit::{Limits, RateLimiter},
    sessions::Sessions,
};

/// What to do to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Print the account (JSON).
    Show,
    RevokeSessions,
    Lock,
    Unlock,
    /// Remove the second factor and recovery codes (after proving who the person is).
    RemoveFactors,
    /// Print a reset link and code for the operator to hand over.
    RecoveryLink,
    /// Queue the ordinary reset email.
    RecoveryEmail,
    /// Print the account and its audit trail (JSON).
    Export,
    Erase,
}

impl Act {
    /// Whether the act changes the account (and so needs a reason).
    pub fn needs_reason(self) -> bool {
        matches!(
            self,
            Act::RevokeSessions | Act::Lock | Act::Unlock | Act::RemoveFactors | Act::Erase
        )
    }
}

/// An operator's request.
#[derive(Debug, Clone)]
pub struct Request {
    pub act: Act,
    pub address: String,
    pub reason: Option<String>,
    /// Who acts (defaults to the login name).
    pub operator: String,
}

/// What a shell command connects to once, for every address it is given.
pub struct Connected {
    db: sqlx::PgPool,
    redis: shared::redis_pool::RedisPool,
    sessions: Sessions,
    limiter: RateLimiter,
    tokens: TokenKeys,
    hasher: Hasher,
    clock: Arc<dyn shared::clock::Clock>,
    config: Config,
}

impl Connected {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = config.database()?;
        let redis = config.redis()?;
        let tokens = TokenKeys::new(config.token_secrets.clone(), config.token_digest)
            .map_err(|e| anyhow::anyhow!("TOKEN_SECRETS: {e}"))?;
        Ok(Self {
            sessions: Sessions::new(redis.clone(), config.session_ttl),
            limiter: RateLimiter::new(
                redis.clone(),
                config.pseudonym_secret(),
                Limits::from_config(&config),
            ),
            hasher: Hasher::new(config.argon2, 1)?,
            tokens,
            clock: Arc::new(shared::clock::SystemClock),
            db,
            redis,
            config,
        })
    }

    fn desk(&self) -> Desk<'_> {
        Desk {
            db: &self.db,
            redis: &self.redis,
            sessions: &self.sessions,
            limiter: &self.limiter,
            tokens: &self.tokens,
            hasher: &self.hasher,
            clock: self.clock.as_ref(),
            config: &self.config,
        }
    }

    /// Carries out `request`; the text to print (an account's id, never its address, except
    /// in `show` and `export`, whose point is the account's data).
    pub async fn run(&self, request: &Request) -> anyhow::Result<String> {
        let reason = match (request.act.needs_reason(), request.reason.as_deref()) {
            (false, _) => None,
            (true, reason) => Some(crate::admin::reason(reason).map_err(|_| {
                anyhow::anyhow!("--reason must say why (it is kept in the audit trail)")
            })?),
        };
        let actor = Actor::Operator(request.operator.clone());
        let desk = self.desk();
        let account = desk
            .find(&actor, &request.address)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| anyhow::anyhow!("no account has this address"))?;
        let id = account.id;
        let reason = reason.unwrap_or_default();
        let fail = |e: crate::error::ApiError| anyhow::anyhow!("{e}");
        Ok(match request.act {
            Act::Show => serde_json::to_string(&account)?,
            Act::RevokeSessions => {
                let n = desk
                    .revoke_sessions(&actor, id, reason)
                    .await
                    .map_err(fail)?;
                format!("revoked every session of account {id} ({n} open)")
            }
            Act::Lock => {
                desk.lock(&actor, id, reason).await.map_err(fail)?;
                format!(
                    "locked account {id}: sessions revoked, sign-in refused until a reset, a reset email queued to its owner"
                )
            }
            Act::Unlock => {
                desk.unlock(&actor, id, reason).await.map_err(fail)?;
                format!("unlocked account {id}")
            }
            Act::RemoveFactors => {
                desk.remove_factors(&actor, id, reason)
                    .await
                    .map_err(fail)?;
                format!(
                    "removed the second factor of account {id}: a notice is queued to its owner"
                )
            }
            Act::RecoveryLink | Act::RecoveryEmail => {
                let send = request.act == Act::RecoveryEmail;
                match desk.recovery(&actor, id, send).await.map_err(fail)? {
                    Recovery::Handed(link) => serde_json::to_string(&link)?,
                    Recovery::Emailed => format!("a reset email is queued to account {id}"),
                }
            }
            Act::Export => serde_json::to_string(&desk.export(&actor, id).await.map_err(fail)?)?,
            Act::Erase => {
                desk.erase(&actor, id, reason).await.map_err(fail)?;
                format!("erased account {id}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_is_one_line_with_the_reason_and_who_acted() {
        let sam = Actor::Operator("  sam ".into());
        assert_eq!(
            sam.detail(Some("ticket 42:\n  phished\r\n\0")),
            "by: sam; reason: ticket 42: phished"
        );
        let odd = Actor::Operator("sam; reason: forged".into());
        assert_eq!(odd.detail(None), "by: sam, reason: forged");
        assert_eq!(sam.detail(Some(&"x".repeat(5000))).chars().count(), 1000);
        let key = Actor::Key("0a1b2c3d".into());
        assert_eq!(key.detail(None), "by: admin key 0a1b2c3d");
    }

    #[test]
    fn a_reason_needs_something_printable() {
        for refused in [None, Some(""), Some("  \n"), Some("\0\u{7}")] {
            assert!(crate::admin::reason(refused).is_err(), "{refused:?}");
        }
        assert_eq!(
            crate::admin::reason(Some(" ticket 7 ")).ok(),
            Some("ticket 7")
        );
    }

    #[test]
    fn only_acts_that_change_the_account_need_a_reason() {
        assert!(Act::Erase.needs_reason() && Act::Lock.needs_reason());
        assert!(!Act::Show.needs_reason() && !Act::RecoveryLink.needs_reason());
    }
}
