//! Sealing of second-factor secrets at rest: AES-256-GCM under a key derived from each
//! `TOKEN_SECRETS` entry, the first one sealing. A sealed value names its key by a short id;
//! a value sealed under an older secret still opens while that secret is listed, and is
//! sealed again under the current one at its next use (see [`Opened::stale`]), so rotation
//! needs no batch job: list the new secret first, keep the old one until its values moved.

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

/// The label of the key derivation (see [`shared::config::derive_key`]).
const KEY_LABEL: &str = "second-factor secrets v1";

/// A sealed value and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    /// The nonce, then the ciphertext and its tag.
    pub bytes: Vec<u8>,
}

/// An opened value.
pub struct Opened {
    pub plaintext: Vec<u8>,
    /// Sealed under another key than the current one: seal it again.
    pub stale: bool,
}

/// The keys, current first.
pub struct SecretBox {
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretBox").field("key_ids", &ids).finish()
    }
}

impl SecretBox {
    /// The keys of `token_secrets` (the first one seals).
    pub fn new(token_secrets: &[Vec<u8>]) -> Self {
        let keys = token_secrets
            .iter()
            .map(|secret| {
                let key = shared::config::derive_key(secret, KEY_LABEL);
                let id = hex::encode(&shared::config::derive_key(&key, "key id")[..4]);
                let unbound = UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key");
                (id, LessSafeKey::new(unbound))
            })
            .collect();
        Self {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// Seals `plaintext` bound to `context` (the account id: a value moved to another account
    /// does not open).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Sealed {
        let (key_id, key) = self
            .keys
            .first()
            .expect("TOKEN_SECRETS has at least one secret");
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut in_out,
        )
        .expect("sealing a short value");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&in_out);
        Sealed {
            key_id: key_id.clone(),
            bytes,
        }
    }

    /// Opens a sealed value; `None` when its key is no longer listed or it does not verify.
    pub fn open(&self, context: &[u8], sealed: &Sealed) -> Option<Opened> {
        let position = self.keys.iter().position(|(id, _)| *id == sealed.key_id)?;
        let key = &self.keys[position].1;
        if sealed.bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = key
            .open_in_place(nonce, Aad::from(context), &mut in_out)
            .ok()?;
        Some(Opened {
            plaintext: plaintext.to_vec(),
            stale: position != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Vec<u8> {
        (0..32).map(|i| byte.wrapping_add(i)).collect()
    }

    #[test]
    fn a_sealed_value_opens_under_its_key_and_context_only() {
        let sealing = SecretBox::new(&[secret(1)]);
        let sealed = sealing.seal(b"account-a", b"the secret");
        assert_ne!(sealed.bytes[NONCE_LEN..], b"the secret"[..]);
        let opened = sealing.open(b"account-a", &sealed).expect("opens");
        assert_eq!(opened.plaintext, b"the secret");
        assert!(!opened.stale);
        assert!(sealing.open(b"account-b", &sealed).is_none());
        let mut tampered = sealed.clone();
        *tampered.bytes.last_mut().expect("a tag") ^= 1;
        assert!(sealing.open(b"account-a", &tampered).is_none());
        assert!(
            SecretBox::new(&[secret(2)])
                .open(b"account-a", &sealed)
                .is_none()
        );
    }

    #[test]
    fn rotation_opens_old_values_and_says_they_are_stale() {
        let old = SecretBox::new(&[secret(1)]);
        let sealed = old.seal(b"a", b"x");
        let rotated = SecretBox::new(&[secret(2), secret(1)]);
        let opened = rotated
            .open(b"a", &sealed)
            .expect("the old key is still listed");
        assert!(opened.stale);
        let resealed = rotated.seal(b"a", &opened.plaintext);
        assert_ne!(resealed.key_id, sealed.key_id);
        assert!(!rotated.open(b"a", &resealed).expect("opens").stale);
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(
            rotated.seal(b"a", b"x").bytes,
            rotated.seal(b"a", b"x").bytes
        );
    }
}
