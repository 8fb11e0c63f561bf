//! What support staff do to an account, from the admin API ([`http`], on `ADMIN_API_BIND`) or
//! the shell (`api accounts …`): both call the operations of [`Desk`], so they cannot drift
//! apart. Every operation is audited with who acted (an admin key's id, or the operator's
//! login name) and, where it changes the account, a required reason.
//!
//! - look an account up by address;
//! - a recovery link and code for a support agent to hand over, or the ordinary reset email
//!   (an operator never chooses a password);
//! - revoke every session; lock (see [`crate::lock`]); unlock;
//! - export the account and its audit trail (a person's access request);
//! - erase the account (see [`Desk::erase`]).

pub mod http;
pub mod keys;
mod records;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::{
    audit::{Action, AuditEvent, Outcome},
    clock::Clock,
    locale::Locale,
    message::{Envelope, Job, Trace},
    redis_pool::RedisPool,
    token::{Purpose, TokenKeys},
};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

pub use records::{AccountView, AuditRecord, Export};

use crate::{
    config::Config, error::ApiError, hashing::Hasher, lock, rate_limit::RateLimiter,
    sessions::Sessions, state::AppState,
};

/// Who acts: an admin key (by its id) or an operator at the shell (by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key(String),
    Operator(String),
}

impl Actor {
    /// How the audit trail names the actor.
    fn name(&self) -> String {
        match self {
            Actor::Key(id) => format!("admin key {id}"),
            Actor::Operator(name) => name.clone(),
        }
    }

    /// The stored detail of an action: who acted and, when it has one, the reason, on one
    /// line without control characters, at most 1000 characters. Who acted comes first: an
    /// erasure keeps that part of the person's rows (see [`Desk::erase`]).
    pub fn detail(&self, reason: Option<&str>) -> String {
        let one_line = |s: &str| {
            let printable: String = s
                .chars()
                .filter(|c| !c.is_control() || c.is_whitespace())
                .collect();
            printable.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let by = one_line(&self.name()).replace(';', ",");
        let detail = match reason {
            Some(reason) => format!("by: {by}; reason: {}", one_line(reason)),
            None => format!("by: {by}"),
        };
        detail.chars().take(1000).collect()
    }
}

/// A required reason: trimmed, with something printable in it.
pub fn reason(reason: Option<&str>) -> Result<&str, ApiError> {
    match reason.map(str::trim) {
        Some(reason)
            if reason
                .chars()
                .any(|c| !c.is_control() && !c.is_whitespace()) =>
        {
            Ok(reason)
        }
        _ => Err(ApiError::ReasonRequired),
    }
}

/// A recovery link as handed to a support agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HandedLink {
    /// The reset link (built from `PUBLIC_BASE_URL`); one use, like the emailed one.
    pub link: String,
    /// Its one-time code, as the email shows it (for the reset-by-code page).
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// What a recovery request did.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// The link and code, for the agent to hand over.
    Handed(HandedLink),
    /// The ordinary reset email is queued.
    Emailed,
}

/// The handles the operations need, borrowed from the api's state or from what a shell
/// command connected.
pub struct Desk<'a> {
    pub db: &'a PgPool,
    pub redis: &'a RedisPool,
    pub sessions: &'a Sessions,
    pub limiter: &'a RateLimiter,
    pub tokens: &'a TokenKeys,
    pub hasher: &'a Hasher,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
}

impl<'a> Desk<'a> {
    /// The desk of a running api.
    pub fn of(state: &'a AppState) -> Self {
        Self {
            db: &state.db,
            redis: &state.redis,
            sessions: &state.sessions,
            limiter: &state.limiter,
            tokens: state.tokens.keys(),
            hasher: &state.hasher,
            clock: state.clock.as_ref(),
            config: &state.config,
        }
    }

    async fn audit(&self, event: &AuditEvent<'_>) -> Result<(), ApiError> {
        shared::audit::record_on(self.db, event).await?;
        Ok(())
    }

    /// The account of `address` (any spelling), audited under the address's pseudonym.
    pub async fn find(
        &self,
        actor: &Actor,
        address: &str,
    ) -> Result<Option<AccountView>, ApiError> {
        let address =
            shared::email::normalize(address).map_err(|e| ApiError::InvalidEmail(e.to_string()))?;
        let found = records::by_email_key(self.db, address.key()).await?;
        let address_hash = self.limiter.address_pseudonym(address.key());
        let detail = actor.detail(None);
        let outcome = if found.is_some() {
            Outcome::Success
        } else {
            Outcome::UnknownUser
        };
        self.audit(&AuditEvent {
            user_id: found.as_ref().map(|a| a.id),
            address_hash: Some(&address_hash),
            detail: Some(&detail),
            ..AuditEvent::new(Action::AdminLookup, outcome)
        })
        .await?;
        Ok(found)
    }

    /// The account `id`, or `404`.
    pub async fn account(&self, id: Uuid) -> Result<AccountView, ApiError> {
        records::by_id(self.db, id).await?.ok_or(ApiError::NotFound)
    }

    /// Ends every session of the account now (its password and links stay).
    pub async fn revoke_sessions(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: &str,
    ) -> Result<u64, ApiError> {
        let account = self.account(id).await?;
        let revoked = self.sessions.revoke_all(account.id).await?;
        let detail = actor.detail(Some(reason));
        self.audit(&AuditEvent {
            user_id: Some(account.id),
            detail: Some(&detail),
            ..AuditEvent::new(Action::SessionsRevoke, Outcome::Success)
        })
        .await?;
        metrics::counter!("admin_actions_total", "action" => "revoke_sessions").increment(1);
        Ok(revoked)
    }

    /// Locks the account (see [`crate::lock`]): sessions revoked, password version bumped,
    /// sign-in refused until a reset, a reset email to the owner (relayed by the outbox).
    pub async fn lock(&self, actor: &Actor, id: Uuid, reason: &str) -> Result<(), ApiError> {
        let Some(user) = store_user(self.db, id).await? else {
            return Err(ApiError::NotFound);
        };
        let unusable_hash = lock::unusable_hash(self.hasher).await?;
        let detail = actor.detail(Some(reason));
        let trace = Trace::default();
        let lock = lock::Lock {
            ip: None,
            trace: &trace,
            locale: Locale::En,
            detail: Some(&detail),
            reset_max_age: self.config.reset_token_max_age,
            now: self.clock.now(),
            unusable_hash: &unusable_hash,
        };
        if lock::commit(self.db, &user, &lock).await?.is_none() {
            return Err(ApiError::AccountChanged);
        }
        lock::revoke_sessions(self.sessions, user.id).await;
        metrics::counter!("account_locks_total", "by" => "operator").increment(1);
        Ok(())
    }

    /// Lifts the account's lock mark and clears its address's budget of failed sign-ins (an
    /// owner that strangers kept out by failing on purpose gets in at once). A lock replaced
    /// the password, so a locked account still signs in only after a reset: the lock already
    /// emailed one, [`Self::recovery`] gives another.
    pub async fn unlock(&self, actor: &Actor, id: Uuid, reason: &str) -> Result<(), ApiError> {
        let account = self.account(id).await?;
        let detail = actor.detail(Some(reason));
        let mut tx = self.db.begin().await?;
        let found =
            sqlx::query("UPDATE users SET locked_at = NULL, updated_at = now() WHERE id = $1")
                .persistent(shared::db::named_statements())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if found.rows_affected() == 0 {
            // Erased in the meantime.
            return Err(ApiError::NotFound);
        }
        shared::audit::record(
            &mut *tx,
            &AuditEvent {
                user_id: Some(id),
                detail: Some(&detail),
                ..AuditEvent::new(Action::AccountUnlock, Outcome::Success)
            },
        )
        .await?;
        tx.commit().await?;
        self.limiter.clear_login_failures(&account.email_key).await;
        metrics::counter!("admin_actions_total", "action" => "unlock").increment(1);
        Ok(())
    }

    /// Removes the account's second factors (the authenticator app, its passkeys and the
    /// recovery codes) for a person who lost them and has no recovery code left, once support
    /// staff proved who they are (the documented procedure, README "Lost second factor"). Audited
    /// with the reason; the owner gets a notice with the "this wasn't me" link, so a removal
    /// obtained by deceit is seen at once. Sessions and password stay.
    pub async fn remove_factors(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: &str,
    ) -> Result<(), ApiError> {
        let Some(user) = store_user(self.db, id).await? else {
            return Err(ApiError::NotFound);
        };
        let detail = actor.detail(Some(reason));
        let mut tx = self.db.begin().await?;
        let Some(factor) = crate::store::factors::remove_all_factors(&mut tx, id).await? else {
            return Err(ApiError::MfaNotEnabled);
        };
        shared::audit::record(
            &mut *tx,
            &AuditEvent {
                user_id: Some(id),
                detail: Some(&detail),
                ..AuditEvent::new(Action::MfaRemove, Outcome::Success)
            },
        )
        .await?;
        let event = shared::message::SecurityEvent::FactorRemoved {
            factor,
            by_support: true,
        };
        let job = Job::SecurityNotice {
            user_id: id,
            email: user.email.clone(),
            ip: None,
            password_version: user.password_version,
            event,
        };
        let now = self.clock.now();
        let languages = user.languages();
        let envelope = Envelope::new(
            job,
            now,
            crate::mfa::NOTICE_TTL,
            Locale::En,
            Trace::default(),
        )
        .asked_in(&languages);
        crate::outbox::add_job(&mut tx, Some(id), &envelope).await?;
        tx.commit().await?;
        metrics::counter!("admin_actions_total", "action" => "remove_factors").increment(1);
        Ok(())
    }

    /// A reset link for the account: for a support agent to hand over (`send: false`: the
    /// link, its code and when they expire), or the ordinary reset email (`send: true`). Either
    /// way the account's older reset links die, as with every new reset email.
    pub async fn recovery(
        &self,
        actor: &Actor,
        id: Uuid,
        send: bool,
    ) -> Result<Recovery, ApiError> {
        let account = self.account(id).await?;
        if send {
            self.email_reset(actor, &account).await?;
            metrics::counter!("admin_actions_total", "action" => "recovery_email").increment(1);
            return Ok(Recovery::Emailed);
        }
        let handed = self.hand_over(actor, &account).await?;
        metrics::counter!("admin_actions_total", "action" => "recovery_link").increment(1);
        Ok(Recovery::Handed(handed))
    }

    /// Queues the ordinary reset email (through the outbox), with its audit row.
    async fn email_reset(&self, actor: &Actor, account: &AccountView) -> Result<(), ApiError> {
        let detail = format!("{}; emailed", actor.detail(None));
        let ttl = chrono::Duration::from_std(self.config.reset_token_max_age)
            .unwrap_or(chrono::Duration::hours(1));
        let job = Job::PasswordResetRequested {
            email: account.email.clone(),
            ip: None,
            within_budget: true,
            user_id: Some(account.id),
        };
        let email = Envelope::new(job, self.clock.now(), ttl, Locale::En, Trace::default());
        let mut tx = self.db.begin().await?;
        crate::outbox::add_job(&mut tx, Some(account.id), &email).await?;
        let event = AuditEvent {
            user_id: Some(account.id),
            detail: Some(&detail),
            ..AuditEvent::new(Action::AdminRecovery, Outcome::Success)
        };
        shared::audit::record(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mints a reset link and its code for the agent, as the worker mints an email's.
    async fn hand_over(
        &self,
        actor: &Actor,
        account: &AccountView,
    ) -> Result<HandedLink, ApiError> {
        let now = self.clock.now();
        let holder = shared::mint::Holder {
            user: account.id,
            password_version: account.password_version,
        };
        let (purpose, max_age) = (Purpose::PasswordReset, self.config.reset_token_max_age);
        let job = Uuid::now_v7();
        let minted =
            shared::mint::mint(self.redis, self.tokens, now, purpose, max_age, holder, job)
                .await?
                .ok_or(ApiError::AccountChanged)?;
        let record = shared::reset_code::Link {
            user: account.id,
            email_key: &account.email_key,
            password_version: account.password_version,
            generation: minted.generation,
            signed_at: minted.signed_at,
            token: &minted.token,
            left_secs: minted.left,
        };
        let secret = self.config.pseudonym_secret();
        let code = shared::reset_code::issue(self.redis, secret, &record).await?;
        let detail = format!("{}; handed to support", actor.detail(None));
        self.audit(&AuditEvent {
            user_id: Some(account.id),
            detail: Some(&detail),
            ..AuditEvent::new(Action::AdminRecovery, Outcome::Success)
        })
        .await?;
        let base = &self.config.public_base_url;
        let path = shared::links::RESET_PASSWORD_PATH;
        Ok(HandedLink {
            link: shared::links::with_token(base, path, &minted.token),
            code: shared::reset_code::display(&code),
            expires_at: DateTime::from_timestamp(minted.signed_at, 0).unwrap_or(now)
                + chrono::Duration::from_std(max_age).unwrap_or_default(),
        })
    }

    /// The account and every audit row about it (by its id, or its address's pseudonym).
    pub async fn export(&self, actor: &Actor, id: Uuid) -> Result<Export, ApiError> {
        let account = self.account(id).await?;
        let pseudonyms = self.address_pseudonyms(&account.email_key);
        let detail = actor.detail(None);
        self.audit(&AuditEvent {
            user_id: Some(id),
            detail: Some(&detail),
            ..AuditEvent::new(Action::AdminExport, Outcome::Success)
        })
        .await?;
        let audit = records::audit_trail(self.db, id, &pseudonyms).await?;
        metrics::counter!("admin_actions_total", "action" => "export").increment(1);
        Ok(Export {
            exported_at: self.clock.now(),
            account,
            audit,
        })
    }

    /// Erases the account (a person's erasure request), in one transaction: the account
    /// row; its jobs still in the outbox; its dead letters; its suppression entry;
    /// and, in every audit row about it (by id or address pseudonym under any secret), the
    /// IP, the address pseudonym, the request id and the free text but for who acted, so
    /// nothing left names or locates the person while what staff did to the account stays
    /// on record. One row records the erasure (the account's id, the reason and who acted);
    /// the `user.erased` event tells other services. Then, in Redis, its
    /// sessions, link generations, reset code and failed-sign-in budget. Mail already on the
    /// broker finds no account and is dropped; links and codes name an account that is gone.
    /// The address is then like one never seen: it can sign up again.
    pub async fn erase(&self, actor: &Actor, id: Uuid, reason: &str) -> Result<(), ApiError> {
        let detail = actor.detail(Some(reason));
        let mut tx = self.db.begin().await?;
        let Some((email, email_key)) = records::erase(&mut tx, id).await? else {
            return Err(ApiError::NotFound);
        };
        let pseudonyms = self.address_pseudonyms(&email_key);
        records::scrub(&mut tx, id, &pseudonyms, &email, &email_key).await?;
        shared::audit::record(
            &mut *tx,
            &AuditEvent {
                user_id: Some(id),
                detail: Some(&detail),
                ..AuditEvent::new(Action::AccountErase, Outcome::Success)
            },
        )
        .await?;
        let event = serde_json::json!({ "user_id": id, "occurred_at": self.clock.now() });
        let topic = shared::topology::ACCOUNT_ERASED_EVENT;
        crate::outbox::add_event(&mut tx, id, topic, &event).await?;
        tx.commit().await?;
        // The rest dies with the account (sessions and links name an account that is gone);
        // removing it now leaves nothing of the person behind for its expiry.
        lock::revoke_sessions(self.sessions, id).await;
        self.limiter.clear_login_failures(&email_key).await;
        let keys = self.redis.keys();
        let code_owner =
            shared::reset_code::address_pseudonym(self.config.pseudonym_secret(), &email_key);
        let mut gone: Vec<String> = Purpose::ALL
            .iter()
            .map(|p| keys.token_generation(id, *p))
            .collect();
        gone.push(keys.reset_code(&code_owner));
        gone.push(keys.reset_code_wrong(&code_owner));
        let address_hash = self.limiter.address_pseudonym(&email_key);
        gone.push(keys.rate_email(&address_hash));
        gone.push(keys.mail_recipient(&address_hash));
        for key in &gone {
            let deleted =
                self.redis
                    .run(|mut c| async move {
                        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
                    })
                    .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "an erased account's key stays until it expires");
            }
        }
        metrics::counter!("admin_actions_total", "action" => "erase").increment(1);
        Ok(())
    }
}

impl Desk<'_> {
    /// The address's pseudonym under every secret of `TOKEN_SECRETS` (the first keys new
    /// rows; rows from before a rotation are keyed by an older one).
    fn address_pseudonyms(&self, email_key: &str) -> Vec<String> {
        let label = shared::config::PSEUDONYM_KEY_LABEL;
        (self.config.token_secrets.iter())
            .map(|secret| shared::config::derive_key(secret, label))
            .map(|key| shared::keys::pseudonym(&key, "email", email_key))
            .collect()
    }
}

/// The account as the lock reads it.
async fn store_user(db: &PgPool, id: Uuid) -> Result<Option<crate::store::users::User>, ApiError> {
    Ok(crate::store::users::by_id(db, id).await?)
}
