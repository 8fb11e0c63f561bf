//! The `mfa_token` of a sign-in whose password was right for an account with a second
//! factor: 5 minutes, one use, five wrong codes at most. Redis keeps a SHA-256 of the token,
//! never the token.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use shared::redis_pool::RedisPool;
use uuid::Uuid;

use crate::error::ApiError;

/// How long a challenge waits for its factor.
pub const TTL_SECS: u64 = 300;
/// Wrong codes a challenge takes before it dies (the sign-in budgets count them too).
pub const MAX_WRONG: i64 = 5;

/// Counts a wrong code of a live challenge and deletes it at `ARGV[1]` wrong codes.
const WRONG_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'wrong', 1)
if n >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return n
";

/// A sign-in waiting for its factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub user: Uuid,
    /// The password version the password was right for.
    pub password_version: i32,
    /// The browser of the first step, when the account recognised it (its codes count in
    /// the device's budget, see [`crate::devices`]).
    pub device: Option<String>,
}

/// The challenges, in Redis.
#[derive(Clone)]
pub struct Challenges {
    redis: RedisPool,
}

fn key_of(redis: &RedisPool, token: &str) -> Option<String> {
    let valid = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        redis.keys().mfa_challenge(&hash)
    })
}

impl Challenges {
    pub fn new(redis: RedisPool) -> Self {
        Self { redis }
    }

    /// A new challenge for `pending`; its token.
    pub async fn create(&self, pending: Pending) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let key = key_of(&self.redis, &token).expect("a token of the right shape");
        let mut fields = vec![
            ("user", pending.user.to_string()),
            ("pv", pending.password_version.to_string()),
        ];
        if let Some(device) = pending.device {
            fields.push(("device", device));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, TTL_SECS as i64)
            .ignore();
        self.redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(token)
    }

    /// The sign-in `token` stands for, while it lives.
    pub async fn pending(&self, token: &str) -> Result<Option<Pending>, ApiError> {
        let Some(key) = key_of(&self.redis, token) else {
            return Ok(None);
        };
        let (user, pv, device): (Option<String>, Option<String>, Option<String>) = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("user")
                    .arg("pv")
                    .arg("device")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (user, pv) {
            (Some(user), Some(pv)) => {
                Uuid::parse_str(&user)
                    .ok()
                    .zip(pv.parse().ok())
                    .map(|(user, password_version)| Pending {
                        user,
                        password_version,
                        device,
                    })
            }
            _ => None,
        })
    }

    /// Counts a wrong code; the challenge dies at the [`MAX_WRONG`]th (one script: a
    /// challenge that expired meanwhile is not brought back without its expiry).
    pub async fn wrong(&self, token: &str) -> Result<(), ApiError> {
        let Some(key) = key_of(&self.redis, token) else {
            return Ok(());
        };
        let script = redis::Script::new(WRONG_LUA);
        self.redis
            .run(|mut c| async move {
                script
                    .key(&key)
                    .arg(MAX_WRONG)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Uses the challenge up; whether this call did (of two concurrent uses, one does).
    pub async fn take(&self, token: &str) -> Result<bool, ApiError> {
        let Some(key) = key_of(&self.redis, token) else {
            return Ok(false);
        };
        let deleted: i64 = self
            .redis
            .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(deleted == 1)
    }
}
