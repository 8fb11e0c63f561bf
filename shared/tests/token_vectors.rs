//! Cross-checks `shared::token` against tokens produced by Python's itsdangerous 2.2.
//!
//! The vectors come from `tests/vectors/gen_vectors.py` (see its docstring to regenerate).
//! For each one: Rust verifies the Python token, Rust re-signs the same JSON bytes at the same
//! timestamp into the byte-identical token (so Python accepts Rust's tokens), and the other
//! purpose / other digest are rejected with the specific diagnosis.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use shared::token::{Claims, Digest, Purpose, TokenError, TokenKeys};

const VECTORS: &str = include_str!("vectors/itsdangerous.json");
const MAX_AGE: i64 = 3600;

#[derive(Debug, Deserialize)]
struct File {
    itsdangerous_version: String,
    vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct Vector {
    secret: String,
    secrets_python_order: Vec<String>,
    salt: String,
    digest: String,
    payload_json: String,
    timestamp: i64,
    token: String,
    compressed: bool,
}

impl Vector {
    fn purpose(&self) -> Purpose {
        Purpose::from_salt(&self.salt).unwrap()
    }

    fn digest(&self) -> Digest {
        self.digest.parse().unwrap()
    }

    fn keys(&self, digest: Digest) -> TokenKeys {
        TokenKeys::new(vec![self.secret.as_bytes().to_vec()], digest).unwrap()
    }

    fn now(&self) -> i64 {
        self.timestamp + 10
    }
}

fn load() -> File {
    let file: File = serde_json::from_str(VECTORS).unwrap();
    assert!(file.itsdangerous_version.starts_with("2.2."));
    assert!(!file.vectors.is_empty());
    file
}

#[test]
fn the_vectors_cover_both_digests_both_purposes_compression_and_rotation() {
    let file = load();
    for digest in Digest::ALL {
        for purpose in Purpose::ALL {
            assert!(
                file.vectors
                    .iter()
                    .any(|v| v.digest() == digest && v.purpose() == purpose),
                "{digest} {purpose}"
            );
        }
    }
    assert!(file.vectors.iter().any(|v| v.compressed));
    assert!(
        file.vectors
            .iter()
            .any(|v| v.secrets_python_order.len() > 1)
    );
}

#[test]
fn rust_verifies_every_python_token_to_the_exact_payload_and_timestamp() {
    for v in load().vectors {
        let keys = v.keys(v.digest());
        let got = keys
            .verify_bytes(v.purpose(), &v.token, v.now(), MAX_AGE)
            .unwrap_or_else(|e| panic!("{e:?} for {}", v.token));
        assert_eq!(got.value, v.payload_json.as_bytes(), "{}", v.token);
        assert_eq!(got.issued_at, v.timestamp, "{}", v.token);
        assert_eq!(v.token.starts_with('.'), v.compressed);
    }
}

#[test]
fn rust_signs_the_same_json_and_timestamp_into_the_byte_identical_token() {
    for v in load().vectors {
        let keys = v.keys(v.digest());
        let ours = keys.sign_bytes(v.purpose(), v.payload_json.as_bytes(), v.timestamp);
        assert_eq!(ours, v.token, "payload {}", v.payload_json);
    }
}

#[test]
fn typed_claims_sign_like_python_when_the_payload_is_claims() {
    let mut seen = 0;
    for v in load().vectors {
        let Ok(claims) = serde_json::from_str::<Claims>(&v.payload_json) else {
            continue;
        };
        seen += 1;
        let keys = v.keys(v.digest());
        assert_eq!(keys.sign(v.purpose(), &claims, v.timestamp), v.token);
        let back = keys
            .verify::<Claims>(v.purpose(), &v.token, v.now(), MAX_AGE)
            .unwrap();
        assert_eq!(back.value, claims);
    }
    assert!(seen > 0);
}

#[test]
fn python_rotation_tokens_verify_with_rust_key_lists_in_either_order() {
    let mut seen = 0;
    for v in load()
        .vectors
        .iter()
        .filter(|v| v.secrets_python_order.len() > 1)
    {
        seen += 1;
        // Python signs with its last secret, Rust with its first.
        assert_eq!(v.secrets_python_order.last(), Some(&v.secret));
        let python_order: Vec<Vec<u8>> = v
            .secrets_python_order
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let mut rust_order = python_order.clone();
        rust_order.reverse();
        for secrets in [python_order, rust_order.clone()] {
            let keys = TokenKeys::new(secrets, v.digest()).unwrap();
            assert!(
                keys.verify_bytes(v.purpose(), &v.token, v.now(), MAX_AGE)
                    .is_ok()
            );
        }
        let keys = TokenKeys::new(rust_order, v.digest()).unwrap();
        assert_eq!(
            keys.sign_bytes(v.purpose(), v.payload_json.as_bytes(), v.timestamp),
            v.token
        );
    }
    assert!(seen > 0);
}

#[test]
fn python_tokens_fail_for_the_other_purpose_and_the_other_digest() {
    for v in load().vectors {
        let digest = v.digest();
        let keys = v.keys(digest);
        for other in Purpose::ALL.into_iter().filter(|p| *p != v.purpose()) {
            assert_eq!(
                keys.verify_bytes(other, &v.token, v.now(), MAX_AGE),
                Err(TokenError::WrongPurpose),
                "{}",
                v.token
            );
        }
        let other_digest = Digest::ALL.into_iter().find(|d| *d != digest).unwrap();
        assert_eq!(
            v.keys(other_digest)
                .verify_bytes(v.purpose(), &v.token, v.now(), MAX_AGE),
            Err(TokenError::WrongDigest),
            "{}",
            v.token
        );
    }
}

#[test]
fn python_tokens_signed_by_an_unknown_secret_are_bad_signatures() {
    for v in load().vectors {
        let keys = TokenKeys::new(vec![vec![b'z'; 32]], v.digest()).unwrap();
        assert_eq!(
            keys.verify_bytes(v.purpose(), &v.token, v.now(), MAX_AGE),
            Err(TokenError::BadSignature)
        );
    }
}
