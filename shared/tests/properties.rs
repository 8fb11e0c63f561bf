//! Property tests of the two parsers that take untrusted input: the token parser (links from
//! the internet) and the job decoder (messages from the broker). Neither may panic on any
//! input, a valid token must survive a round trip, and no single-character change may pass.
//!
//! The suite runs 512 cases per property; for a longer run:
//! `PROPTEST_CASES=200000 cargo test -p shared --release --test properties`.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use shared::{
    message::Envelope,
    token::{Digest, Purpose, TokenKeys},
};

fn keys() -> TokenKeys {
    TokenKeys::new(
        vec![
            b"property-secret-0123456789abcdefghijkl".to_vec(),
            b"older-secret-0123456789abcdefghijklmno".to_vec(),
        ],
        Digest::Sha256,
    )
    .unwrap()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

const NOW: i64 = 1_800_000_000;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_token_parser_never_panics_on_arbitrary_text(token in ".{0,600}") {
        let _ = keys().verify_bytes(Purpose::PasswordReset, &token, NOW, 3600);
    }

    #[test]
    fn the_token_parser_never_panics_on_token_shaped_input(
        a in "[A-Za-z0-9_.=-]{0,200}", b in "[A-Za-z0-9_=-]{0,12}", c in "[A-Za-z0-9_=-]{0,60}"
    ) {
        let keys = keys();
        for token in [format!("{a}.{b}.{c}"), format!(".{a}.{b}.{c}"), format!("{a}.{c}")] {
            prop_assert!(keys.verify_bytes(Purpose::PasswordReset, &token, NOW, 3600).is_err());
        }
    }

    #[test]
    fn a_signed_payload_round_trips(payload in prop::collection::vec(any::<u8>(), 0..2000), age in 0i64..3600) {
        let keys = keys();
        let json = serde_json::to_vec(&payload).unwrap();
        let token = keys.sign_bytes(Purpose::EmailVerify, &json, NOW - age);
        let verified = keys.verify_bytes(Purpose::EmailVerify, &token, NOW, 3600).unwrap();
        prop_assert_eq!(verified.value, json);
        prop_assert_eq!(verified.issued_at, NOW - age);
    }

    #[test]
    fn no_single_character_change_passes(text in "[a-z ]{0,300}", index in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
        let keys = keys();
        let json = serde_json::to_vec(&text).unwrap();
        let token = keys.sign_bytes(Purpose::PasswordReset, &json, NOW);
        let i = index.index(token.len());
        let mut tampered: Vec<char> = token.chars().collect();
        let new = replacement.chars().next().unwrap();
        prop_assume!(tampered[i] != new);
        tampered[i] = new;
        let tampered: String = tampered.into_iter().collect();
        prop_assert!(keys.verify_bytes(Purpose::PasswordReset, &tampered, NOW, 3600).is_err(), "{tampered}");
    }

    #[test]
    fn the_job_decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn the_job_decoder_never_panics_on_json_shaped_input(
        kind in "[a-z_]{0,30}", version in any::<i64>(), attempt in any::<i64>(), payload in ".{0,200}"
    ) {
        let doc = serde_json::json!({
            "id": "01a21861-54d8-72db-b71e-6fa15b661053", "version": version, "attempt": attempt,
            "created_at": "2026-11-26T10:00:00Z", "not_after": "2026-11-26T11:00:00Z",
            "locale": "en", "trace": {}, "kind": kind, "payload": { "email": payload },
        });
        let _ = Envelope::decode(&serde_json::to_vec(&doc).unwrap());
    }
}
