//! Passkeys (WebAuthn, `webauthn-rs`): registered by the signed-in owner as a second factor,
//! and a way to sign in with no address or password at all (a discoverable credential: the
//! browser offers the account's passkey; user verification required, so the passkey is two
//! factors by itself: the device and its PIN or biometric).
//!
//! Each ceremony takes two requests: the options (a challenge) and the browser's answer. Its
//! state waits in Redis between them, under a random id, for [`CEREMONY_TTL_SECS`], and is
//! taken (deleted) by the answer, so a challenge is answered once.
//!
//! The relying party is `PUBLIC_BASE_URL`: its host is the RP ID, its origin the only origin
//! accepted (links are built from configuration, never from the request's Host; so are
//! passkeys).

use std::sync::Arc;

use base64::Engine as _;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};
use shared::redis_pool::RedisPool;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};

use crate::{error::ApiError, store};

/// How long a ceremony's challenge waits for its answer.
pub const CEREMONY_TTL_SECS: u64 = 300;

/// The relying party and where ceremonies wait; off when `PUBLIC_BASE_URL`'s host is an IP
/// address (a passkey belongs to a domain: browsers refuse IP addresses as relying parties).
#[derive(Clone)]
pub struct Passkeys {
    webauthn: Option<Arc<Webauthn>>,
    redis: RedisPool,
}

/// A ceremony's first half: its id (to send back with the answer) and the options for
/// `navigator.credentials.create` / `.get` (`{publicKey: …}`, binary values in base64url).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ceremony {
    pub ceremony_id: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// What a registration or an assertion that verified gives.
pub struct Verified {
    pub user: Uuid,
    pub credential_id: Vec<u8>,
}

impl Passkeys {
    /// The relying party of `public_base_url`, named `product_name` to the person.
    pub fn new(
        public_base_url: &str,
        product_name: &str,
        redis: RedisPool,
    ) -> anyhow::Result<Self> {
        let origin = Url::parse(public_base_url)?;
        let webauthn = match origin.host() {
            Some(url::Host::Domain(rp_id)) => Some(Arc::new(
                WebauthnBuilder::new(rp_id, &origin)?
                    .rp_name(product_name)
                    .build()?,
            )),
            _ => {
                tracing::warn!(
                    "passkeys are off: PUBLIC_BASE_URL's host is an IP address, and a passkey belongs to a domain"
                );
                None
            }
        };
        Ok(Self { webauthn, redis })
    }

    /// Whether the site has passkeys (its public address is a domain).
    pub fn on(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn, ApiError> {
        self.webauthn.as_deref().ok_or(ApiError::PasskeysOff)
    }

    /// Options to register a passkey for `user` (not one of `existing` again), asking for a
    /// discoverable credential (it signs in without the address).
    pub async fn registration(
        &self,
        user: Uuid,
        email: &str,
        existing: &[Passkey],
    ) -> Result<Ceremony, ApiError> {
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (options, state) = self
            .webauthn()?
            .start_passkey_registration(user, email, email, Some(exclude))
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("passkey registration: {e}")))?;
        let mut options = serde_json::to_value(options).map_err(internal)?;
        // A passkey that signs in by itself must be discoverable (resident on the device).
        if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
            selection["residentKey"] = "required".into();
            selection["requireResidentKey"] = true.into();
        }
        let id = self.put(Purpose::Register, &(user, state)).await?;
        Ok(Ceremony {
            ceremony_id: id,
            options,
        })
    }

    /// Verifies the browser's answer to registration `ceremony` for `user`; the new passkey.
    pub async fn register(
        &self,
        user: Uuid,
        ceremony: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<Passkey, ApiError> {
        let Some((owner, state)) = self
            .take::<(Uuid, PasskeyRegistration)>(Purpose::Register, ceremony)
            .await?
        else {
            return Err(ApiError::PasskeyInvalid);
        };
        if owner != user {
            return Err(ApiError::PasskeyInvalid);
        }
        self.webauthn()?
            .finish_passkey_registration(credential, &state)
            .map_err(|e| {
                tracing::info!(error = %e, "a passkey registration did not verify");
                ApiError::PasskeyInvalid
            })
    }

    /// Options to sign in with any passkey of this site the device holds.
    pub async fn sign_in_options(&self) -> Result<Ceremony, ApiError> {
        let (options, state) = self
            .webauthn()?
            .start_discoverable_authentication()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("passkey sign-in: {e}")))?;
        let mut options = serde_json::to_value(options).map_err(internal)?;
        // The page asks when the person presses the button, not in the address field's
        // autofill: no conditional mediation.
        if let Some(options) = options.as_object_mut() {
            options.remove("mediation");
        }
        let id = self.put(Purpose::SignIn, &state).await?;
        Ok(Ceremony {
            ceremony_id: id,
            options,
        })
    }

    /// Verifies a sign-in assertion: the account and credential, once the stored passkey's
    /// signature verified (and its use is recorded). `401 passkey_invalid` for anything else.
    pub async fn sign_in(
        &self,
        db: &sqlx::PgPool,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<Verified, ApiError> {
        let webauthn = self.webauthn()?;
        let Some(state) = self
            .take::<DiscoverableAuthentication>(Purpose::SignIn, ceremony)
            .await?
        else {
            return Err(ApiError::PasskeyInvalid);
        };
        let (user, credential_id) = webauthn
            .identify_discoverable_authentication(credential)
            .map_err(|_| ApiError::PasskeyInvalid)?;
        let Some(row) = store::factors::passkey(db, credential_id).await? else {
            return Err(ApiError::PasskeyInvalid);
        };
        if row.user_id != user || row.suspended {
            return Err(ApiError::PasskeyInvalid);
        }
        let mut passkey: Passkey = serde_json::from_value(row.passkey.0).map_err(internal)?;
        let result = webauthn
            .finish_discoverable_authentication_v2(credential, state, &passkey)
            .map_err(|e| {
                tracing::info!(error = %e, "a passkey assertion did not verify");
                ApiError::PasskeyInvalid
            })?;
        let changed = passkey.update_credential(&result) == Some(true);
        let record = changed
            .then(|| serde_json::to_value(&passkey))
            .transpose()
            .map_err(internal)?;
        store::factors::passkey_used(db, &row.credential_id, record.as_ref()).await?;
        Ok(Verified {
            user,
            credential_id: row.credential_id,
        })
    }

    /// Options for `user` to prove the second factor with one of `passkeys` (a sign-in's
    /// second step, a reset); `409 mfa_not_enabled` without one.
    pub async fn factor_options(
        &self,
        user: Uuid,
        passkeys: &[Passkey],
    ) -> Result<Ceremony, ApiError> {
        if passkeys.is_empty() {
            return Err(ApiError::MfaNotEnabled);
        }
        let (options, state) = self
            .webauthn()?
            .start_passkey_authentication(passkeys)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("passkey factor: {e}")))?;
        let options = serde_json::to_value(options).map_err(internal)?;
        let id = self.put(Purpose::Factor, &(user, state)).await?;
        Ok(Ceremony {
            ceremony_id: id,
            options,
        })
    }

    /// Whether `credential` answers factor ceremony `ceremony` of `user` with one of its
    /// passkeys (whose use is then recorded). A ceremony is answered once.
    pub async fn verify_factor(
        &self,
        db: &sqlx::PgPool,
        user: Uuid,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<bool, ApiError> {
        let webauthn = self.webauthn()?;
        let Some((owner, state)) = self
            .take::<(Uuid, PasskeyAuthentication)>(Purpose::Factor, ceremony)
            .await?
        else {
            return Ok(false);
        };
        if owner != user {
            return Ok(false);
        }
        let result = match webauthn.finish_passkey_authentication(credential, &state) {
            Ok(result) => result,
            Err(e) => {
                tracing::info!(error = %e, "a passkey assertion did not verify");
                return Ok(false);
            }
        };
        let Some(row) = store::factors::passkey(db, result.cred_id()).await? else {
            return Ok(false);
        };
        if row.user_id != user || row.suspended {
            return Ok(false);
        }
        let mut passkey = read(&row)?;
        let changed = passkey.update_credential(&result) == Some(true);
        let record = changed.then(|| record(&passkey)).transpose()?;
        store::factors::passkey_used(db, &row.credential_id, record.as_ref()).await?;
        Ok(true)
    }

    /// Keeps a ceremony's state; its id.
    async fn put(&self, purpose: Purpose, state: &impl Serialize) -> Result<String, ApiError> {
        let id =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = self.key(purpose, &id);
        let value = serde_json::to_string(state).map_err(internal)?;
        self.redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(CEREMONY_TTL_SECS)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Ok(id)
    }

    /// Takes a ceremony's state (once).
    async fn take<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        id: &str,
    ) -> Result<Option<T>, ApiError> {
        if id.len() != 43
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let key = self.key(purpose, id);
        let value: Option<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("GETDEL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// A ceremony's key: its purpose and id hashed, so an id answers only the ceremony it
    /// was given for.
    fn key(&self, purpose: Purpose, id: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(purpose.tag());
        digest.update(id.as_bytes());
        self.redis
            .keys()
            .passkey_ceremony(&hex::encode(digest.finalize()))
    }
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Register,
    SignIn,
    Factor,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Register => b"register\0",
            Purpose::SignIn => b"sign-in\0",
            Purpose::Factor => b"factor\0",
        }
    }
}

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(e.into())
}

/// The stored record of a passkey (JSON).
pub fn record(passkey: &Passkey) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(passkey).map_err(internal)
}

/// A stored passkey's record read back.
pub fn read(row: &store::factors::PasskeyRow) -> Result<Passkey, ApiError> {
    serde_json::from_value(row.passkey.0.clone()).map_err(internal)
}
