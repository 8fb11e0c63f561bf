//! Sessions in Redis: revocable one at a time or all at once per user, each carrying the
//! password version it was created under, and listed to their owner with where they were
//! opened (device name, network) and when they were last used.
//!
//! A session token is `<user id>.<secret>`. Redis stores only a SHA-256 of the secret, so a
//! dump of Redis cannot be replayed as sessions. Beside each session a hash (`…:meta`, same
//! lifetime) holds when it was created and last seen, its device name and its network; the
//! session key itself keeps holding only the password version, so an older api reads new
//! sessions unchanged. A session is named to its owner by the first 16 hex digits of its hash.
//! All keys of a user share one hash tag, so the revoke-all script is valid on Redis Cluster.

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
    touch: Script,
}

/// Where a session is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The device's name from its User-Agent (see [`crate::user_agent::device_name`]).
    pub device: String,
    /// The client's network (see [`crate::user_agent::network`]).
    pub network: String,
}

/// A session as its owner sees it in the list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The session's name in `DELETE /v1/sessions/{id}` (not the token: it cannot be used).
    pub id: String,
    pub created_at: Option<DateTime<Utc>>,
    /// When it last made a request (to the minute).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// `Firefox on Linux`; absent for sessions opened before names were kept.
    pub device: Option<String>,
    /// `203.0.113.0/24`, `2001:db8:1:2::/64`: where it was opened, not the full address.
    pub network: Option<String>,
    /// The session of this request.
    pub current: bool,
}

/// Characters of a session's public id.
const ID_LEN: usize = 16;
/// How stale `last seen` may get before a request writes it again.
const SEEN_EVERY_SECS: i64 = 60;

/// Sets a session's `seen` time if its metadata still exists (an expired one is not brought
/// back without its expiry).
const TOUCH_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end
return 0
";

/// Deletes every session of a user. `KEYS[1]` is the user's set of session hashes, `KEYS[2..]`
/// the session keys (and their metadata keys) it listed when the caller read it, `ARGV` those
/// hashes.
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
            touch: Script::new(TOUCH_LUA),
        }
    }

    /// How long a new session lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Creates a session for `user` bound to `password_version`, opened from `origin`.
    pub async fn create(
        &self,
        user: Uuid,
        password_version: i32,
        now: DateTime<Utc>,
        origin: &Origin,
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
        let meta = keys.session_meta(user, &hash);
        let at = now.timestamp().to_string();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(keys.session(user, &hash), password_version, ttl)
            .ignore()
            .hset_multiple(
                &meta,
                &[
                    ("created", at.as_str()),
                    ("seen", at.as_str()),
                    ("device", origin.device.as_str()),
                    ("net", origin.network.as_str()),
                ],
            )
            .ignore()
            .expire(&meta, ttl as i64)
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

    /// The password version of a live session, or `None` when it is unknown or expired;
    /// notes that it was seen at `now` (at most once a minute).
    pub async fn lookup(
        &self,
        token: &SessionToken,
        now: DateTime<Utc>,
    ) -> Result<Option<i32>, ApiError> {
        let keys = self.redis.keys();
        let hash = token.secret_hash();
        let (key, meta) = (
            keys.session(token.user, &hash),
            keys.session_meta(token.user, &hash),
        );
        let mut pipe = redis::pipe();
        pipe.get(&key).hget(&meta, "seen");
        let (pv, seen): (Option<i32>, Option<i64>) = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        if pv.is_some() && seen.is_some_and(|seen| now.timestamp() - seen >= SEEN_EVERY_SECS) {
            let mut touch = self.touch.key(&meta);
            touch.arg(now.timestamp());
            let touched = self
                .redis
                .run(|mut c| async move { touch.invoke_async::<i64>(&mut c).await })
                .await;
            if let Err(e) = touched {
                tracing::debug!(error = %e, "could not note when a session was last seen");
            }
        }
        Ok(pv)
    }

    /// Ends one session.
    pub async fn revoke(&self, token: &SessionToken) -> Result<(), ApiError> {
        self.end_hashes(token.user, &[token.secret_hash()]).await
    }

    /// Ends the sessions of `user` with these hashes.
    async fn end_hashes(&self, user: Uuid, hashes: &[String]) -> Result<(), ApiError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for hash in hashes {
            pipe.del(keys.session(user, hash))
                .ignore()
                .del(keys.session_meta(user, hash))
                .ignore()
                .srem(keys.user_sessions(user), hash)
                .ignore();
        }
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(())
    }

    /// The hashes in the user's set.
    async fn members(&self, user: Uuid) -> Result<Vec<String>, ApiError> {
        let set = self.redis.keys().user_sessions(user);
        Ok(self
            .redis
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(&set).query_async(&mut c).await })
            .await?)
    }

    /// The user's live sessions, `current`'s first, then the most recently seen.
    pub async fn list(&self, current: &SessionToken) -> Result<Vec<SessionInfo>, ApiError> {
        let user = current.user;
        let members = self.members(user).await?;
        let keys = self.redis.keys();
        let mut pipe = redis::pipe();
        for hash in &members {
            pipe.exists(keys.session(user, hash))
                .hgetall(keys.session_meta(user, hash));
        }
        type Meta = std::collections::HashMap<String, String>;
        let found: Vec<(bool, Meta)> = if members.is_empty() {
            Vec::new()
        } else {
            self.redis
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let current_hash = current.secret_hash();
        let time = |meta: &Meta, field: &str| {
            let secs = meta.get(field)?.parse::<i64>().ok()?;
            DateTime::<Utc>::from_timestamp(secs, 0)
        };
        let mut sessions: Vec<SessionInfo> = members
            .iter()
            .zip(found)
            .filter(|(_, (live, _))| *live)
            .map(|(hash, (_, meta))| SessionInfo {
                id: hash[..ID_LEN.min(hash.len())].to_owned(),
                created_at: time(&meta, "created"),
                last_seen_at: time(&meta, "seen"),
                device: meta.get("device").cloned(),
                network: meta.get("net").cloned(),
                current: *hash == current_hash,
            })
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse((s.current, s.last_seen_at)));
        Ok(sessions)
    }

    /// Ends the session of `user` named `id` (see [`SessionInfo::id`]); whether there was one.
    pub async fn end(&self, user: Uuid, id: &str) -> Result<bool, ApiError> {
        let valid =
            id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Ok(false);
        }
        let members = self.members(user).await?;
        let named: Vec<String> = members.into_iter().filter(|h| h.starts_with(id)).collect();
        if named.is_empty() {
            return Ok(false);
        }
        self.end_hashes(user, &named).await?;
        Ok(true)
    }

    /// Ends every session of the user but `keep`; how many ended.
    pub async fn end_others(&self, keep: &SessionToken) -> Result<usize, ApiError> {
        let keep_hash = keep.secret_hash();
        let others: Vec<String> = (self.members(keep.user).await?)
            .into_iter()
            .filter(|h| *h != keep_hash)
            .collect();
        self.end_hashes(keep.user, &others).await?;
        Ok(others.len())
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
                invocation
                    .key(keys.session(user, member))
                    .key(keys.session_meta(user, member))
                    .arg(member);
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
