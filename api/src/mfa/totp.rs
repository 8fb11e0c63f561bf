//! RFC 6238 codes: SHA-1, 6 digits, 30-second steps, one step either side of now.

use totp_rs::{Algorithm, Builder, Totp};

/// Bytes of a new secret (160 bits, the length RFC 4226 recommends for HMAC-SHA-1).
pub const SECRET_LEN: usize = 20;
/// Seconds per step.
pub const STEP_SECS: u64 = 30;

/// A new random secret.
pub fn generate() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    secret
}

/// The code generator of `secret`, labelled for an authenticator app: `issuer` (the product)
/// and `account` (the address). A `:` would end the label early, so it becomes a space.
fn totp(secret: &[u8], issuer: &str, account: &str) -> Totp {
    let label = |s: &str| s.replace(':', " ");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec())
        .with_account_name(label(account))
        .with_issuer(Some(label(issuer)))
        .build()
        .expect("a 160-bit secret and labels without ':'")
}

/// The `otpauth://` URI an authenticator app reads (from a QR code or pasted).
pub fn uri(secret: &[u8], issuer: &str, account: &str) -> String {
    totp(secret, issuer, account)
        .to_url()
        .expect("labels without ':'")
}

/// The secret as authenticator apps take it typed in: base32 without padding.
pub fn base32(secret: &[u8]) -> String {
    totp(secret, "-", "-").secret().to_base32()
}

/// The secret of its base32 text (what an authenticator app reads from the URI).
pub fn decode(base32: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::try_from_base32(base32)
        .ok()
        .map(|s| s.as_ref().to_vec())
}

/// The six digits of `input` (spaces ignored), or `None` when it is no TOTP code.
pub fn normalize(input: &str) -> Option<String> {
    let digits: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The step whose code `code` is, within one step of `unix_secs`.
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    totp(secret, "-", "-").check(code, unix_secs)
}

/// The code of the step of `unix_secs` (tests and the bench act as an authenticator app).
pub fn code_at(secret: &[u8], unix_secs: u64) -> String {
    totp(secret, "-", "-").generate(unix_secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (its 8-digit codes end in these 6 digits).
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(secret, time), code, "{time}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_one_either_side_only() {
        let secret = generate();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        let step = now / STEP_SECS;
        assert_eq!(matching_step(&secret, &code, now), Some(step));
        assert_eq!(matching_step(&secret, &code, now + STEP_SECS), Some(step));
        assert_eq!(matching_step(&secret, &code, now - STEP_SECS), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 2 * STEP_SECS), None);
        assert_eq!(matching_step(&secret, &code, now - 2 * STEP_SECS), None);
    }

    #[test]
    fn the_uri_carries_the_labels_and_the_secret() {
        let secret = generate();
        let uri = uri(&secret, "Acme: Accounts", "ann@example.org");
        assert!(
            uri.starts_with("otpauth://totp/Acme%20%20Accounts:ann%40example.org?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", base32(&secret))),
            "{uri}"
        );
        assert!(uri.contains("issuer=Acme%20%20Accounts"), "{uri}");
        assert_eq!(base32(&secret).len(), 32);
        assert_eq!(decode(&base32(&secret)), Some(secret));
    }

    #[test]
    fn only_six_digits_are_a_code() {
        assert_eq!(normalize(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize("12345"), None);
        assert_eq!(normalize("1234567"), None);
        assert_eq!(normalize("12345a"), None);
        assert_eq!(normalize("１２３４５６"), None);
    }
}
