//! Sessions in Redis: revocable one at a time or all at once per user, each carrying the
//! password version it was created under.
//!
//! A session token is `<user id>.<secret>`. Redis stores only a SHA-256 of the secret, so a
//! dump of Redis cannot be replayed as sessions. All keys of a user share one hash tag, so the
//! revoke-all script is valid on Redis Cluster.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use redis::Script;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use shared::redis_pool::RedisPool;

use crate::error::ApiError;

/// Name of the session cookie when it is `Secure`: the `__Host-` prefix makes browsers refuse
/// it unless it is Secure, host-only and `Path=/`, so a sibling subdomain cannot plant or
/// overwrite a session (session fixation through a cookie set for the parent domain).
pub const SECURE_COOKIE_NAME: &str = "__Host-session";
/// Name of the session cookie over plain http (`COOKIE_SECURE=false`, local development).
pub const PLAIN_COOKIE_NAME: &str = "session";

/// The session cookie's name under `COOKIE_SECURE`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE_NAME
    } else {
        PLAIN_COOKIE_NAME
    }
}

/// A parsed session token (never logged: its `Debug` hides the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub user: Uuid,
    secret: String,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl SessionToken {
    /// Parses `<uuid>.<secret>`; anything else is no session.
    pub fn parse(raw: &str) -> Option<Self> {
        let (user, secret) = raw.split_once('.')?;
        let user = Uuid::parse_str(user).ok()?;
        let valid = (32..=64).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| Self {
            user,
            secret: secret.to_owned(),
        })
    }

    /// The wire form handed to the client.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.user, self.secret)
    }

    fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

/// Session storage.
#[derive(Clone)]
pub struct Sessions {
    redis: RedisPool,
    ttl: Duration,
    revoke_all: Script,
}

/// Deletes every session of a user. `KEYS[1]` is the user's set of session hashes, `KEYS[2..]`
/// the session keys it listed when the caller read it, `ARGV` those hashes in the same order.
/// Every key is declared (Redis Cluster routes and checks a script by its declared keys; all
/// share the user's hash tag, so they are one slot). If the set changed since it was read (a
/// sign-in in between), nothing is deleted and -1 tells the caller to read it again.
const REVOKE_ALL_LUA: &str = r"
if redis.call('SCARD', KEYS[1]) ~= #ARGV then return -1 end
for _, m in ipairs(ARGV) do
  if redis.call('SISMEMBER', KEYS[1], m) == 0 then return -1 end
end
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', KEYS[1])
return #ARGV
";

/// Reads of the session set before giving up on a user who keeps signing in meanwhile (the
/// sessions still die by their password version).
const REVOKE_ALL_TRIES: usize = 5;

impl Sessions {
    pub fn new(redis: RedisPool, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            revoke_all: Script::new(REVOKE_ALL_LUA),
        }
    }

    /// How long a new session lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Creates a session for `user` bound to `password_version`.
    pub async fn create(
        &self,
        user: Uuid,
        password_version: i32,
        now: DateTime<Utc>,
    ) -> Result<(SessionToken, DateTime<Utc>), ApiError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = SessionToken {
            user,
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        };
        let keys = self.redis.keys();
        let hash = token.secret_hash();
        let ttl = self.ttl.as_secs();
        let set = keys.user_sessions(user);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(keys.session(user, &hash), password_version, ttl)
            .ignore()
            .sadd(&set, &hash)
            .ignore()
            .expire(&set, ttl as i64)
            .ignore();
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        let expires_at = now + chrono::Duration::seconds(ttl as i64);
        Ok((token, expires_at))
    }

    /// The password version of a live session, or `None` when it is unknown or expired.
    pub async fn lookup(&self, token: &SessionToken) -> Result<Option<i32>, ApiError> {
        let key = self.redis.keys().session(token.user, &token.secret_hash());
        let pv: Option<i32> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(pv)
    }

    /// Ends one session.
    pub async fn revoke(&self, token: &SessionToken) -> Result<(), ApiError> {
        let keys = self.redis.keys();
        let hash = token.secret_hash();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys.session(token.user, &hash))
            .ignore()
            .srem(keys.user_sessions(token.user), &hash)
            .ignore();
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(())
    }

    /// Ends every session of `user`; returns how many there were.
    pub async fn revoke_all(&self, user: Uuid) -> Result<u64, ApiError> {
        let keys = self.redis.keys();
        let set = keys.user_sessions(user);
        for _ in 0..REVOKE_ALL_TRIES {
            let set_key = set.clone();
            let members: Vec<String> = self
                .redis
                .run(|mut c| async move {
                    redis::cmd("SMEMBERS")
                        .arg(&set_key)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let mut invocation = self.revoke_all.key(&set);
            for member in &members {
                invocation.key(keys.session(user, member)).arg(member);
            }
            let deleted: i64 = self
                .redis
                .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            if deleted >= 0 {
                return Ok(deleted as u64);
            }
        }
        Err(ApiError::unavailable(anyhow::anyhow!(
            "the session set kept changing while it was being revoked"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_parse_only_in_their_own_shape() {
        let user = Uuid::new_v4();
        let secret = "A".repeat(43);
        let t = SessionToken::parse(&format!("{user}.{secret}")).expect("valid");
        assert_eq!(t.user, user);
        assert_eq!(t.expose(), format!("{user}.{secret}"));
        assert!(SessionToken::parse("nope").is_none());
        assert!(SessionToken::parse(&format!("{user}.short")).is_none());
        assert!(SessionToken::parse(&format!("{user}.{}", "a\"b".repeat(15))).is_none());
        assert!(SessionToken::parse(&format!("not-a-uuid.{secret}")).is_none());
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let user = Uuid::new_v4();
        let secret = "S".repeat(43);
        let t = SessionToken::parse(&format!("{user}.{secret}")).expect("valid");
        assert!(!format!("{t:?}").contains(&secret));
    }
}
