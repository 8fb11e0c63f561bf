//! Checking and burning one-time tokens (reset and verification links).
//!
//! A token is accepted only if every check holds: signature under one of `TOKEN_SECRETS`,
//! purpose (salt), age, the user's current password version, the user's newest generation in
//! Redis, and no burn marker yet. Burning is a single `SET NX`, so of N concurrent uses
//! exactly one wins.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::token::{
    Claims, MAX_CLOCK_SKEW_SECS, Purpose, TokenError, TokenKeys, token_fingerprint,
};
use uuid::Uuid;

use shared::{audit::Outcome, redis_pool::RedisPool};

use crate::error::ApiError;

/// A token that passed the signature, age, generation and burn checks.
#[derive(Debug, Clone)]
pub struct CheckedToken {
    pub claims: Claims,
    fingerprint: String,
}

impl CheckedToken {
    /// The token's fingerprint (its burn marker's name).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// A refused token: the client's error, the user it named (when the signature was valid) and
/// a reason for the audit trail and metrics.
#[derive(Debug)]
pub struct Rejected {
    pub error: ApiError,
    pub user: Option<Uuid>,
    pub reason: Outcome,
}

impl Rejected {
    fn new(error: ApiError, user: Option<Uuid>, reason: Outcome) -> Self {
        metrics::counter!("tokens_rejected_total", "reason" => reason.as_str()).increment(1);
        Self {
            error,
            user,
            reason,
        }
    }
}

impl Rejected {
    /// The token named a user that does not exist (deleted account).
    pub fn unknown_user(user: Uuid) -> Self {
        Self::new(ApiError::TokenInvalid, Some(user), Outcome::UnknownUser)
    }

    /// The link was good but the password given with it is not the account's (verification):
    /// the link stays usable.
    pub fn wrong_password(user: Uuid) -> Self {
        Self::new(
            ApiError::InvalidCredentials,
            Some(user),
            Outcome::WrongPassword,
        )
    }

    /// The password check at verification is over a sign-in budget.
    pub fn rate_limited_login(user: Uuid, retry_after_secs: u64) -> Self {
        Self {
            error: ApiError::RateLimitedLogin { retry_after_secs },
            user: Some(user),
            reason: Outcome::RateLimited,
        }
    }

    /// The token lost the burn race or was used before.
    pub fn used(user: Uuid) -> Self {
        Self::new(ApiError::TokenUsed, Some(user), Outcome::Used)
    }
}

/// Infrastructure failures while checking a token: not the token's fault, not audited.
impl From<ApiError> for Rejected {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            user: None,
            reason: Outcome::Unavailable,
        }
    }
}

/// Token verification against the signing keys and Redis.
#[derive(Clone)]
pub struct TokenService {
    keys: std::sync::Arc<TokenKeys>,
    redis: RedisPool,
    reset_max_age: Duration,
    verify_max_age: Duration,
}

impl TokenService {
    pub fn new(
        keys: TokenKeys,
        redis: RedisPool,
        reset_max_age: Duration,
        verify_max_age: Duration,
    ) -> Self {
        Self {
            keys: std::sync::Arc::new(keys),
            redis,
            reset_max_age,
            verify_max_age,
        }
    }

    /// The signing keys (the worker mints with the same ones).
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// How long a link of `purpose` stays valid.
    pub fn max_age(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::PasswordReset => self.reset_max_age,
            Purpose::EmailVerify => self.verify_max_age,
            Purpose::AccountLock => Duration::from_secs(shared::token::ACCOUNT_LOCK_MAX_AGE_SECS),
        }
    }

    /// Verifies `token` without consuming it. GET-safe: a mail scanner opening a link calls
    /// only this.
    pub async fn check(
        &self,
        purpose: Purpose,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<CheckedToken, Rejected> {
        let max_age = self.max_age(purpose).as_secs() as i64;
        let claims = match self
            .keys
            .verify::<Claims>(purpose, token, now.timestamp(), max_age)
        {
            Ok(v) => v.value,
            Err(e) => return Err(Self::signature_rejection(&e)),
        };
        let fingerprint = token_fingerprint(token);
        let (generation, burned) = self
            .generation_and_burn(claims.uid, purpose, &fingerprint)
            .await?;
        if burned {
            metrics::counter!("burned_token_replays_total").increment(1);
            return Err(Rejected::new(
                ApiError::TokenUsed,
                Some(claims.uid),
                Outcome::Used,
            ));
        }
        // A missing generation (Redis lost its data) matches nothing: fail closed.
        if generation != Some(claims.r#gen) {
            return Err(Rejected::new(
                ApiError::TokenInvalid,
                Some(claims.uid),
                Outcome::Superseded,
            ));
        }
        Ok(CheckedToken {
            claims,
            fingerprint,
        })
    }

    /// Checks the password version the token was issued under against the current one. When
    /// it moved because this very token won a concurrent submission a moment ago, the answer
    /// is `token_used`, not `token_invalid`.
    pub async fn check_password_version(
        &self,
        token: &CheckedToken,
        current: i32,
    ) -> Result<(), Rejected> {
        if token.claims.pv == current {
            return Ok(());
        }
        let key = self.redis.keys().burn(&token.fingerprint);
        let burned: bool = self
            .redis
            .run(|mut c| async move { redis::cmd("EXISTS").arg(&key).query_async(&mut c).await })
            .await
            .map_err(ApiError::from)?;
        Err(if burned {
            Rejected::used(token.claims.uid)
        } else {
            Rejected::new(
                ApiError::TokenInvalid,
                Some(token.claims.uid),
                Outcome::PasswordChanged,
            )
        })
    }

    /// Consumes the token: `true` for exactly one caller, `false` if it was already used.
    ///
    /// The marker holds a value unique to this attempt, so a `SET NX` that a cluster client
    /// retried after a lost answer (the first try had set it) is still recognised as ours:
    /// "already there" alone would make the winner lose too, and burn the link for nobody.
    pub async fn burn(&self, purpose: Purpose, token: &CheckedToken) -> Result<bool, ApiError> {
        self.burn_fingerprint(purpose, &token.fingerprint).await
    }

    /// [`Self::burn`] by the token's fingerprint (a reset code burns its link this way).
    pub async fn burn_fingerprint(
        &self,
        purpose: Purpose,
        fingerprint: &str,
    ) -> Result<bool, ApiError> {
        let key = self.redis.keys().burn(fingerprint);
        // Keep the marker as long as the token could still verify.
        let ttl = self.max_age(purpose).as_secs() + MAX_CLOCK_SKEW_SECS as u64 + 60;
        let attempt = uuid::Uuid::new_v4().to_string();
        let (key_ref, attempt_ref) = (&key, &attempt);
        let set: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key_ref)
                    .arg(attempt_ref)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let won = match set {
            Some(_) => true,
            None => {
                let holder: Option<String> =
                    self.redis
                        .run(|mut c| async move {
                            redis::cmd("GET").arg(key_ref).query_async(&mut c).await
                        })
                        .await?;
                holder.as_deref() == Some(attempt.as_str())
            }
        };
        if !won {
            metrics::counter!("burned_token_replays_total").increment(1);
        }
        Ok(won)
    }

    /// Gives a burned token back after the change it was burned for was rolled back (the
    /// broker refused the notice, the database failed), so the person can simply retry.
    /// Safe: the winner's change did not happen, and the next use burns it again.
    pub async fn unburn(&self, token: &CheckedToken) {
        self.unburn_fingerprint(&token.fingerprint).await;
    }

    /// [`Self::unburn`] by the token's fingerprint.
    pub async fn unburn_fingerprint(&self, fingerprint: &str) {
        let key = self.redis.keys().burn(fingerprint);
        let result = self
            .redis
            .run(
                |mut c| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await },
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not release a token after a rolled-back change");
        }
    }

    /// Why the link minted under `generation` for `user`, with token fingerprint
    /// `fingerprint`, is dead (used, or no longer the user's newest), or `None` while it
    /// lives: the checks [`Self::check`] makes of a link, for a reset code (which stands for a
    /// link the api never sees).
    pub async fn link_is_dead(
        &self,
        user: Uuid,
        purpose: Purpose,
        generation: i64,
        fingerprint: &str,
    ) -> Result<Option<Outcome>, ApiError> {
        let (current, burned) = self.generation_and_burn(user, purpose, fingerprint).await?;
        Ok(if burned {
            Some(Outcome::Used)
        } else if current != Some(generation) {
            Some(Outcome::Superseded)
        } else {
            None
        })
    }

    /// The user's current generation for `purpose` and whether the token with `fingerprint`
    /// is burned. Two independent reads of keys in different cluster slots: sent at once as
    /// two commands (a pipeline must stay within one slot on Redis Cluster); on the shared
    /// multiplexed connection they still travel together.
    async fn generation_and_burn(
        &self,
        user: Uuid,
        purpose: Purpose,
        fingerprint: &str,
    ) -> Result<(Option<i64>, bool), ApiError> {
        let keys = self.redis.keys();
        let (gen_key, burn_key) = (keys.token_generation(user, purpose), keys.burn(fingerprint));
        let (generation, burned) = tokio::join!(
            self.redis.run(|mut c| async move {
                redis::cmd("GET")
                    .arg(&gen_key)
                    .query_async::<Option<i64>>(&mut c)
                    .await
            }),
            self.redis.run(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(&burn_key)
                    .query_async::<bool>(&mut c)
                    .await
            }),
        );
        Ok((generation?, burned?))
    }

    /// Every check of a link short of consuming it: signature, purpose, age, generation,
    /// burn marker, the user it names, and that user's current password version. Shared by
    /// the reset, verification and lock endpoints and by the GET of the pages (which must only
    /// look).
    pub async fn check_link(
        &self,
        db: &sqlx::PgPool,
        purpose: Purpose,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(CheckedToken, crate::store::users::User), Rejected> {
        let checked = self.check(purpose, token, now).await?;
        let user = crate::store::users::by_id(db, checked.claims.uid)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Rejected::unknown_user(checked.claims.uid))?;
        self.check_password_version(&checked, user.password_version)
            .await?;
        Ok((checked, user))
    }

    fn signature_rejection(e: &TokenError) -> Rejected {
        let reason = match e {
            TokenError::Expired { .. } => {
                return Rejected::new(ApiError::TokenExpired, None, Outcome::Expired);
            }
            TokenError::Oversized | TokenError::DecompressedTooLarge => Outcome::Oversized,
            TokenError::Malformed => Outcome::Malformed,
            TokenError::Truncated => Outcome::Truncated,
            TokenError::WrongPurpose => Outcome::WrongPurpose,
            TokenError::WrongDigest => Outcome::WrongDigest,
            TokenError::BadSignature => Outcome::BadSignature,
            TokenError::FutureDated => Outcome::FutureDated,
        };
        Rejected::new(ApiError::TokenInvalid, None, reason)
    }
}
