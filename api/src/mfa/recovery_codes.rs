//! Single-use recovery codes: ten at a time, 80 random bits each, written as four groups of
//! four characters of Crockford's base32 (no `i`, `l`, `o`, `u`: nothing to misread), and
//! stored as SHA-256 over the account id and the code only.

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Codes per set.
pub const COUNT: usize = 10;
/// Characters per code.
const LEN: usize = 16;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new set, as shown to the person (`abcd-efgh-jkmn-pqrs`).
pub fn generate() -> Vec<String> {
    (0..COUNT)
        .map(|_| {
            let mut bytes = [0u8; LEN];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            chars
                .chunks(4)
                .map(|group| group.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// The code in `input` (any case; spaces and dashes ignored; `o` read as `0`, `i` and `l` as
/// `1`), or `None` when it cannot be a recovery code.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect();
    (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// What is stored of a normalised code of `user`.
pub fn hash(user: Uuid, code: &str) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(b"recovery code v1\0");
    digest.update(user.as_bytes());
    digest.update(code.as_bytes());
    digest.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_ten_distinct_codes_that_read_back() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), COUNT);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            let read = normalize(code).expect("reads back");
            assert_eq!(read, code.replace('-', ""));
            assert_eq!(normalize(&code.to_uppercase()), Some(read.clone()));
            assert_eq!(normalize(&code.replace('-', " ")), Some(read));
        }
    }

    #[test]
    fn misread_letters_are_forgiven_and_other_text_refused() {
        assert_eq!(
            normalize("OIL0-aaaa-bbbb-cccc").as_deref(),
            Some("0110aaaabbbbcccc")
        );
        assert_eq!(normalize("aaaa-bbbb-cccc"), None);
        assert_eq!(normalize("aaaa-bbbb-cccc-uuuu"), None);
        assert_eq!(normalize("123456"), None);
    }

    #[test]
    fn the_hash_depends_on_the_account() {
        let code = "0123456789abcdef";
        assert_ne!(hash(Uuid::nil(), code), hash(Uuid::max(), code));
        assert_eq!(hash(Uuid::nil(), code), hash(Uuid::nil(), code));
    }
}
