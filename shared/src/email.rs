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
/// `ann@x.org` are one account. In both, the domain is in its ASCII (IDNA, punycode) form, so
/// `ann@bücher.de`, `ann@BÜCHER.de`, `ann@ｂüｃｈｅｒ．ｄｅ` and `ann@xn--bcher-kva.de`
/// (one mailbox) are one account and one rate-limit budget, not four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedEmail {
    address: String,
    key: String,
}

impl NormalizedEmail {
    /// The address mail is delivered to (trimmed, NFC local part, lower-case ASCII domain:
    /// an ASCII domain is deliverable by every SMTP server, with or without SMTPUTF8).
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

/// Trims, applies Unicode NFC, converts the domain to its lower-case ASCII form (IDNA, UTS #46)
/// and checks the shape.
///
/// Deliberately conservative: control characters (CR/LF/NUL in particular, which would allow
/// header injection into the email), spaces, quotes and angle brackets are refused outright
/// instead of being escaped. The same rules are checked again on the ASCII domain, since
/// UTS #46 maps compatibility characters (full-width `＜` becomes `<`) and punycode makes
/// labels longer.
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
    let domain = ascii_domain(domain)?;
    let address = format!("{local}@{domain}");
    // Punycode can make the address longer than what was typed.
    if address.len() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    let key = address.to_lowercase();
    Ok(NormalizedEmail { address, key })
}

/// The domain's ASCII form per UTS #46 (mapping: case folding, full-width and other
/// compatibility forms, ideographic full stops; then punycode per label), checked against the
/// host-name rules.
///
/// Why: without it, Unicode spellings of one domain are different strings, and each would be
/// its own account and its own email budget while every mail server delivers them to the same
/// mailbox.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    // UTS #46 silently deletes invisible characters (zero-width space, soft hyphen, variation
    // selectors, …). Deleting them would be safe for the key, but an address that hides
    // characters is a spoofing attempt or a paste accident: refuse it, as before IDNA.
    if domain.chars().any(deleted_by_idna) {
        return Err(EmailError::Domain);
    }
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
    if valid_domain(&ascii) {
        Ok(ascii)
    } else {
        Err(EmailError::Domain)
    }
}

/// Whether UTS #46 maps `c` to nothing. The crate has no per-character query; mapping the
/// character alone is one (cheap) way to ask.
fn deleted_by_idna(c: char) -> bool {
    !c.is_ascii()
        && idna::domain_to_ascii(c.encode_utf8(&mut [0; 4])).is_ok_and(|mapped| mapped.is_empty())
}

/// Host-name rules on an ASCII domain (letters, digits, inner hyphens; labels of 1 to 63
/// octets).
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    // A dot is required: bare hosts ("localhost") are not deliverable addresses for this product.
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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
        let e = normalize("user+tag@bücher.de").expect("valid");
        assert_eq!(e.address(), "user+tag@xn--bcher-kva.de");
        assert!(normalize("a@b.co").is_ok());
        assert_eq!(
            normalize("a@☃.com").expect("valid").address(),
            "a@xn--n3h.com"
        );
    }

    #[test]
    fn every_spelling_of_one_idn_domain_gives_one_key_and_one_ascii_address() {
        for spelling in [
            "user@bücher.de",
            "user@BÜCHER.de",
            "user@Bücher.DE",
            "user@xn--bcher-kva.de",
            "user@XN--BCHER-KVA.DE",
            // Decomposed "u" + combining diaeresis.
            "user@bu\u{308}cher.de",
            // Full-width letters and full stop.
            "user@\u{ff42}ü\u{ff43}\u{ff48}\u{ff45}\u{ff52}\u{ff0e}\u{ff44}\u{ff45}",
            // Ideographic full stop as the label separator.
            "user@bücher\u{3002}de",
        ] {
            let e = normalize(spelling).unwrap_or_else(|err| panic!("{spelling:?}: {err}"));
            assert_eq!(e.key(), "user@xn--bcher-kva.de", "{spelling:?}");
            assert_eq!(e.address(), "user@xn--bcher-kva.de", "{spelling:?}");
        }
    }

    #[test]
    fn the_local_part_keeps_its_case_beside_an_ascii_domain() {
        let e = normalize("Ann.Lee@Bücher.DE").expect("valid");
        assert_eq!(e.address(), "Ann.Lee@xn--bcher-kva.de");
        assert_eq!(e.key(), "ann.lee@xn--bcher-kva.de");
        // Compatibility forms are mapped in the domain only: the mailbox name is the
        // receiving server's business.
        let e = normalize("\u{ff41}nn@example.org").expect("valid");
        assert_eq!(e.key(), "\u{ff41}nn@example.org");
    }

    #[test]
    fn normalising_a_normalised_address_changes_nothing() {
        // The stored address is normalised again by the worker and by later requests: it must
        // map to itself, or one account would have two keys.
        for typed in [
            "Ann.Lee@Example.ORG",
            "user+tag@BÜCHER.de",
            "jose\u{301}@\u{ff45}xample\u{3002}com",
            "a@\u{2167}.com",
        ] {
            let once = normalize(typed).expect("valid");
            let twice = normalize(once.address()).expect("still valid");
            assert_eq!(twice, once, "{typed:?}");
        }
    }

    #[test]
    fn different_idn_domains_stay_different() {
        // IDNA 2008 (non-transitional): "ß" is its own letter, not "ss".
        assert_ne!(
            normalize("a@straße.de").expect("valid").key(),
            normalize("a@strasse.de").expect("valid").key()
        );
    }

    #[test]
    fn refuses_domains_that_are_not_valid_idna() {
        for bad in [
            // Not decodable as punycode.
            "a@xn--a.de",
            "a@xn--zz.de",
            // A joiner outside the context that allows it.
            "a@a\u{200d}b.com",
            // A label starting with a combining mark.
            "a@\u{301}a.com",
            // A private-use code point.
            "a@\u{e000}.com",
            // The replacement character.
            "a@\u{fffd}.com",
            // Invisible characters UTS #46 would delete: zero-width space, soft hyphen, word
            // joiner, byte order mark, variation selector, Hangul filler.
            "a@exa\u{200b}mple.org",
            "a@bü\u{ad}cher.de",
            "a@exa\u{2060}mple.org",
            "a@exa\u{feff}mple.org",
            "a@exa\u{fe0f}mple.org",
            "a@exa\u{3164}mple.org",
        ] {
            assert_eq!(normalize(bad), Err(EmailError::Domain), "{bad:?}");
        }
    }

    #[test]
    fn host_name_rules_also_hold_after_the_idna_mapping() {
        // Full-width "<" maps to "<"; the forbidden-character check saw only the full-width one.
        assert_eq!(normalize("a@exa\u{ff1c}mple.com"), Err(EmailError::Domain));
        // Full-width "localhost" is still a bare host; a trailing ideographic full stop is an
        // empty label.
        assert_eq!(
            normalize("a@\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}"),
            Err(EmailError::Domain)
        );
        assert_eq!(normalize("a@bücher.de\u{3002}"), Err(EmailError::Domain));
        assert_eq!(normalize("a@a_b.com"), Err(EmailError::Domain));
        assert_eq!(normalize("a@x-.com"), Err(EmailError::Domain));
    }

    #[test]
    fn a_label_that_punycode_makes_longer_than_63_octets_is_refused() {
        // 40 distinct CJK characters: 40 characters typed, 117 octets as punycode.
        let label: String = (0..40u32)
            .map(|i| char::from_u32(0x4e00 + i * 97).expect("a CJK character"))
            .collect();
        assert_eq!(
            normalize(&format!("a@{label}.com")),
            Err(EmailError::Domain)
        );
    }

    #[test]
    fn the_length_limit_applies_to_the_ascii_address_too() {
        // 20 characters, 29 octets of UTF-8, 34 octets as punycode.
        let label = "aäbåcçdðeéfgñhøiüjþk";
        let domain = format!("{}.de", [label; 6].join("."));
        let typed = format!("{}@{domain}", "a".repeat(64));
        assert!(typed.len() <= MAX_EMAIL_LEN, "{}", typed.len());
        assert_eq!(normalize(&typed), Err(EmailError::TooLong));
        // The same with one label fewer fits.
        let domain = format!("{}.de", [label; 5].join("."));
        assert!(normalize(&format!("{}@{domain}", "a".repeat(64))).is_ok());
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
