//! The admin API's keys (`ADMIN_API_KEYS`): random secrets like `TOKEN_SECRETS`, presented as
//! `Authorization: Bearer <key>`. A key is known by its id, the first 8 hex digits of its
//! SHA-256, which the audit trail keeps instead of the key.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The accepted keys, as digests.
#[derive(Clone)]
pub struct AdminKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys({} keys)", self.digests.len())
    }
}

/// A key's id: a prefix of its digest (never the key).
pub fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..4])
}

impl AdminKeys {
    pub fn new(keys: &[Vec<u8>]) -> Self {
        Self {
            digests: keys.iter().map(|k| Sha256::digest(k).into()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The id of the key an `Authorization` header value presents, if it is one of ours.
    /// Every key is compared, in constant time, whatever matched.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<String> {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let authorization = authorization?;
        let (scheme, presented) = authorization.split_at_checked(7)?;
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        let presented = presented.trim_ascii();
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut matched = subtle::Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&digest);
        }
        bool::from(matched).then(|| key_id(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_key_as_a_bearer_token_is_accepted_and_known_by_its_id() {
        let keys = AdminKeys::new(&[b"first-key".to_vec(), b"second-key".to_vec()]);
        let id = keys.authenticate(Some(b"Bearer second-key"));
        assert_eq!(keys.authenticate(Some(b"bearer second-key")), id);
        assert_eq!(id.as_deref(), Some(key_id(b"second-key").as_str()));
        assert_eq!(id.map(|id| id.len()), Some(8));
        for refused in [
            None,
            Some(&b"second-key"[..]),
            Some(b"Bearer second-ke"),
            Some(b"Basic second-key"),
            Some(b"Bearer "),
            Some(b"Bearer third-key"),
        ] {
            assert_eq!(keys.authenticate(refused), None, "{refused:?}");
        }
    }
}
