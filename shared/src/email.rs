//! Email address normalisation and validation.
//!
//! One function decides what an address *is* for the whole product, so the api's rate-limit
//! keys, the stored address and the worker's lookup can never disagree.

use unicode_normalization::UnicodeNormalization;

/// Longest address accepted (RFC 5321: 254 octets in a path).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;

/// A syntactically valid, normalised address.
///
/// `address` keeps the local part's case (it is what mail is sent to); `key` folds the whole
/// address to lower case and is what uniqueness and lookups use, so `Ann@x.org` and
/// `ann@x.org` are one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedEmail {
    address: String,
    key: String,
}

impl NormalizedEmail {
    /// The address mail is delivered to (trimmed, NFC, lower-case domain).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The case-folded form used for uniqueness, lookups and rate-limit keys.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Why an address was refused. The api answers all of these with `422 invalid_email`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than {MAX_EMAIL_LEN} bytes")]
    TooLong,
    #[error("the address contains control characters or spaces")]
    ForbiddenCharacter,
    #[error("the address needs exactly one @ with text on both sides")]
    Shape,
    #[error("the domain part is not a valid host name")]
    Domain,
}

/// Trims, applies Unicode NFC, lower-cases the domain and checks the shape.
///
/// Deliberately conservative: control characters (CR/LF/NUL in particular, which would allow
/// header injection into the email), spaces, quotes and angle brackets are refused outright
/// instead of being escaped.
pub fn normalize(raw: &str) -> Result<NormalizedEmail, EmailError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    if trimmed.len() > MAX_EMAIL_LEN * 4 {
        // Reject absurd input before doing Unicode work on it.
        return Err(EmailError::TooLong);
    }
    let nfc: String = trimmed.nfc().collect();
    if nfc.len() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    if nfc.chars().any(|c| {
        c.is_control()
            || c.is_whitespace()
            || matches!(
                c,
                '"' | '<' | '>' | '\\' | ',' | ';' | ':' | '(' | ')' | '[' | ']'
            )
    }) {
        return Err(EmailError::ForbiddenCharacter);
    }
    let (local, domain) = nfc.rsplit_once('@').ok_or(EmailError::Shape)?;
    if local.is_empty() || local.contains('@') || local.len() > MAX_LOCAL_LEN {
        return Err(EmailError::Shape);
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::Shape);
    }
    let domain = domain.to_lowercase();
    if !valid_domain(&domain) {
        return Err(EmailError::Domain);
    }
    let address = format!("{local}@{domain}");
    let key = address.to_lowercase();
    Ok(NormalizedEmail { address, key })
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    // A dot is required: bare hosts ("localhost") are not deliverable addresses for this product.
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases_only_the_domain() {
        let e = normalize("  Ann.Lee@Example.ORG \n").expect("valid");
        assert_eq!(e.address(), "Ann.Lee@example.org");
        assert_eq!(e.key(), "ann.lee@example.org");
    }

    #[test]
    fn composes_unicode_to_nfc() {
        // "e" + combining acute accent becomes the single code point "é".
        let e = normalize("jose\u{301}@example.com").expect("valid");
        assert_eq!(e.address(), "jos\u{e9}@example.com");
        assert_eq!(normalize("jos\u{e9}@example.com").expect("valid"), e);
    }

    #[test]
    fn accepts_internationalised_domains_and_plus_tags() {
        assert!(normalize("user+tag@bücher.de").is_ok());
        assert!(normalize("a@b.co").is_ok());
    }

    #[test]
    fn refuses_control_characters_that_would_inject_headers() {
        for bad in [
            "a\r\nBcc: x@y.z@example.com",
            "a\0@example.com",
            "a@exam\tple.com",
            "a\u{7f}@example.com",
        ] {
            assert_eq!(
                normalize(bad),
                Err(EmailError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(normalize(""), Err(EmailError::Empty));
        assert_eq!(normalize("   "), Err(EmailError::Empty));
        assert_eq!(normalize("no-at-sign"), Err(EmailError::Shape));
        assert_eq!(normalize("@example.com"), Err(EmailError::Shape));
        assert_eq!(normalize("a@@example.com"), Err(EmailError::Shape));
        assert_eq!(normalize(".a@example.com"), Err(EmailError::Shape));
        assert_eq!(normalize("a..b@example.com"), Err(EmailError::Shape));
        assert_eq!(normalize("a@localhost"), Err(EmailError::Domain));
        assert_eq!(normalize("a@-x.com"), Err(EmailError::Domain));
        assert_eq!(normalize("a@x..com"), Err(EmailError::Domain));
        assert_eq!(normalize("a b@x.com"), Err(EmailError::ForbiddenCharacter));
        assert_eq!(normalize("<a@x.com>"), Err(EmailError::ForbiddenCharacter));
        assert_eq!(normalize("a:b@x.com"), Err(EmailError::ForbiddenCharacter));
    }

    #[test]
    fn refuses_overlong_addresses() {
        let long = format!("{}@example.com", "a".repeat(64));
        assert!(normalize(&long).is_ok());
        let local_too_long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(normalize(&local_too_long), Err(EmailError::Shape));
        let too_long = format!("a@{}.com", "b".repeat(260));
        assert_eq!(normalize(&too_long), Err(EmailError::TooLong));
        assert_eq!(normalize(&"a".repeat(10_000)), Err(EmailError::TooLong));
    }
}
