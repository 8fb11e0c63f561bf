//! Minting a link: the worker for the link of an email job, the api for a link an operator
//! hands over. Issuing bumps the user's generation for the purpose (older links die) and
//! records what was minted under the job's id, so every later attempt and redelivery of the
//! same job signs the very same token.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    redis_pool::{RedisError, RedisPool},
    token::{Claims, Purpose, TokenKeys},
};

/// Who a link is for: the account and its password version as read.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    pub user: Uuid,
    pub password_version: i32,
}

/// A link as minted: the token, the seconds it has left, and what it was minted under.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub left: u64,
    pub generation: i64,
    pub signed_at: i64,
}

/// The link of `job` for `holder` (see the module): issued at the first call for the job and
/// recorded, signed again from the record afterwards. `None` when the recorded link is dead
/// by now: a newer link bumped the generation, the password changed, or it expired.
pub async fn mint(
    redis: &RedisPool,
    keys: &TokenKeys,
    now: DateTime<Utc>,
    purpose: Purpose,
    max_age: std::time::Duration,
    holder: Holder,
    job: Uuid,
) -> Result<Option<Minted>, RedisError> {
    mint_with(redis, keys, now, purpose, max_age, holder, job, "bump").await
}

/// [`mint`], but beside the links minted before rather than instead of them: the link takes
/// the user's current generation (a new one only when there is none). For the "this wasn't
/// me" links of security notices: a later notice must not kill the link of an earlier one
/// (a password-changed notice's, say); each dies when it is used or the password changes.
pub async fn mint_beside(
    redis: &RedisPool,
    keys: &TokenKeys,
    now: DateTime<Utc>,
    purpose: Purpose,
    max_age: std::time::Duration,
    holder: Holder,
    job: Uuid,
) -> Result<Option<Minted>, RedisError> {
    mint_with(redis, keys, now, purpose, max_age, holder, job, "join").await
}

#[allow(
    clippy::too_many_arguments,
    reason = "the two public forms above name them"
)]
async fn mint_with(
    redis: &RedisPool,
    keys: &TokenKeys,
    now: DateTime<Utc>,
    purpose: Purpose,
    max_age: std::time::Duration,
    holder: Holder,
    job: Uuid,
    generation: &'static str,
) -> Result<Option<Minted>, RedisError> {
    let generation_key = redis.keys().token_generation(holder.user, purpose);
    let link_key = redis.keys().job_link(holder.user, job);
    // Keep the generation and the job's record a little longer than any link can live.
    let ttl_ms = (max_age.as_secs() + 3600) * 1000;
    let now_ms = now.timestamp_millis();
    let script = redis::Script::new(crate::keys::MINT_ONCE_LUA);
    let (minted, current): (String, String) = redis
        .run(|mut c| async move {
            script
                .key(&generation_key)
                .key(&link_key)
                .arg(now_ms)
                .arg(ttl_ms)
                .arg(holder.password_version)
                .arg(ttl_ms)
                .arg(generation)
                .invoke_async(&mut c)
                .await
        })
        .await?;
    let mut fields = minted.split(':').map(str::parse::<i64>);
    let (Some(Ok(generation)), Some(Ok(signed_at)), Some(Ok(password_version))) =
        (fields.next(), fields.next(), fields.next())
    else {
        tracing::warn!(job_id = %job, "unreadable link record; no link");
        return Ok(None);
    };
    if current.parse::<i64>().ok() != Some(generation)
        || password_version != i64::from(holder.password_version)
    {
        return Ok(None);
    }
    let left = signed_at + i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX) - now.timestamp();
    let Ok(left @ 1..) = u64::try_from(left) else {
        return Ok(None);
    };
    let claims = Claims::for_job(holder.user, holder.password_version, generation, job);
    Ok(Some(Minted {
        token: keys.sign(purpose, &claims, signed_at),
        left,
        generation,
        signed_at,
    }))
}
