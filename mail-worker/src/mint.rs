//! The links of an email, minted once its job may send: a reset link and its one-time code,
//! a verification link, or the "this wasn't me" link of a password-changed or security
//! notice. Each is minted once per job and recorded, so every attempt and redelivery of the
//! job sends the very same link.

use shared::{
    links,
    mint::{Holder, Minted},
    redis_pool::RedisError,
    reset_code,
    token::Purpose,
};
use uuid::Uuid;

use crate::{
    plan::{Draft, Recipient},
    process::Processor,
    render::EmailContent,
};

impl Processor {
    /// Mints the link a draft needs, if any, and returns the email's content; `None` when the
    /// job's link is dead already (a newer email or a password change superseded it).
    pub(crate) async fn complete(
        &self,
        draft: Draft,
        job: Uuid,
    ) -> Result<Option<EmailContent>, RedisError> {
        let base = &self.config.public_base_url;
        Ok(match draft {
            Draft::Ready(content) => Some(content),
            Draft::PasswordReset {
                recipient,
                requested_from_ip,
            } => {
                let Some(link) = self.mint(Purpose::PasswordReset, &recipient, job).await? else {
                    return Ok(None);
                };
                let code = self.issue_code(&recipient, &link).await?;
                Some(EmailContent::PasswordReset {
                    link: links::with_token(base, links::RESET_PASSWORD_PATH, &link.token),
                    code: reset_code::display(&code),
                    code_url: links::page(base, links::RESET_PASSWORD_PATH),
                    expires_in_minutes: link.left.div_ceil(60).max(1),
                    requested_from_ip,
                })
            }
            Draft::EmailVerification { recipient } => self
                .mint(Purpose::EmailVerify, &recipient, job)
                .await?
                .map(|link| EmailContent::EmailVerification {
                    link: links::with_token(base, links::VERIFY_EMAIL_PATH, &link.token),
                    expires_in_hours: link.left.div_ceil(3600).max(1),
                }),
            // The notice is true whatever became of its link, and goes without one when the
            // link is dead (a newer notice minted another) or would be out of place: the
            // password changed again since (a late notice must neither lock the newer password
            // nor kill the lock link of the newer change's notice).
            Draft::PasswordChanged {
                recipient,
                changed_at,
                from_ip,
                version,
            } => Some(EmailContent::PasswordChanged {
                changed_at,
                from_ip,
                forgot_password_url: links::page(base, links::FORGOT_PASSWORD_PATH),
                lock_url: if recipient.password_version == version {
                    self.mint(Purpose::AccountLock, &recipient, job)
                        .await?
                        .map(|link| links::with_token(base, links::LOCK_ACCOUNT_PATH, &link.token))
                } else {
                    None
                },
            }),
            // Like the password-changed notice, a link only while the password is the one the
            // event happened under; minted beside the links of earlier emails, not instead of
            // them (a new sign-in must not kill the link of the password-changed notice the
            // owner is about to use). Without one, the notice goes with the reset link only.
            Draft::SecurityNotice {
                recipient,
                version,
                at,
                from_ip,
                event,
            } => Some(EmailContent::SecurityNotice {
                event,
                at,
                from_ip,
                forgot_password_url: links::page(base, links::FORGOT_PASSWORD_PATH),
                lock_url: if recipient.password_version == version {
                    self.mint_as(Purpose::AccountLock, &recipient, job, true)
                        .await?
                        .map(|link| links::with_token(base, links::LOCK_ACCOUNT_PATH, &link.token))
                } else {
                    None
                },
            }),
        })
    }

    /// Records the one-time code of a reset link (see [`shared::reset_code`]) and returns it.
    async fn issue_code(&self, user: &Recipient, link: &Minted) -> Result<String, RedisError> {
        let record = reset_code::Link {
            user: user.id,
            email_key: &user.email_key,
            password_version: user.password_version,
            generation: link.generation,
            signed_at: link.signed_at,
            token: &link.token,
            left_secs: link.left,
        };
        reset_code::issue(&self.redis, self.config.pseudonym_secret(), &record).await
    }

    /// The link of `job` (see [`shared::mint`]): the same token at every attempt and
    /// redelivery, so a repeat after a lost SMTP reply is byte-identical and the copy the
    /// provider may already have delivered keeps working. `None` when the recorded link is
    /// dead by now.
    async fn mint(
        &self,
        purpose: Purpose,
        user: &Recipient,
        job: Uuid,
    ) -> Result<Option<Minted>, RedisError> {
        self.mint_as(purpose, user, job, false).await
    }

    /// [`Self::mint`]; `beside`: the links minted before stay alive (see
    /// [`shared::mint::mint_beside`]).
    async fn mint_as(
        &self,
        purpose: Purpose,
        user: &Recipient,
        job: Uuid,
        beside: bool,
    ) -> Result<Option<Minted>, RedisError> {
        let max_age = match purpose {
            Purpose::PasswordReset => self.config.reset_token_max_age,
            Purpose::EmailVerify => self.config.verify_token_max_age,
            Purpose::AccountLock => {
                std::time::Duration::from_secs(shared::token::ACCOUNT_LOCK_MAX_AGE_SECS)
            }
        };
        let holder = Holder {
            user: user.id,
            password_version: user.password_version,
        };
        let now = self.clock.now();
        let (redis, tokens) = (&self.redis, &self.tokens);
        if beside {
            shared::mint::mint_beside(redis, tokens, now, purpose, max_age, holder, job).await
        } else {
            shared::mint::mint(redis, tokens, now, purpose, max_age, holder, job).await
        }
    }
}
