//! Password hashes made by other frameworks, for accounts imported with the hash they had:
//! read ([`Foreign::parse`]) and verified ([`Foreign::verify`]) with the maintained
//! implementations of each function (`bcrypt`, RustCrypto `pbkdf2` and `scrypt`); argon2 PHC
//! strings, Django's included, are verified by [`crate::hashing`] itself. A foreign hash is
//! verified on the hashing threads like any other and replaced by argon2id at the first
//! successful sign-in (see [`crate::hashing::Hasher::needs_rehash`]).
//!
//! | format | made by |
//! | --- | --- |
//! | `$2a$`, `$2b$`, `$2y$` | bcrypt (Rails, Laravel, Node, pyca `bcrypt`) |
//! | `pbkdf2:sha256:N$salt$hex` (also `sha1`, `sha512`) | Werkzeug (Flask) |
//! | `scrypt:N:r:p$salt$hex` | Werkzeug 3's default |
//! | `pbkdf2_sha256$N$salt$base64` (also `pbkdf2_sha1`) | Django's default |
//! | `bcrypt_sha256$$2b$…` | Django (bcrypt of the password's SHA-256 hex digest) |
//! | `argon2$argon2id$…` | Django (an argon2 PHC string after `argon2`) |
//! | `$scrypt$ln=…,r=…,p=…$salt$hash`, `$pbkdf2-sha256$i=…,l=…$salt$hash` | PHC strings |
//!
//! Every parameter is capped, so a stored hash cannot make one verification cost more than
//! the caps allow (an import is checked against the same caps: a hash over them is refused).

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use sha2::{Digest as _, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

/// The most PBKDF2 iterations a stored hash may ask for (Django 5.2 and Werkzeug 3.1 use
/// 1,000,000).
pub const MAX_PBKDF2_ITERATIONS: u32 = 5_000_000;

/// The most memory a stored scrypt hash may ask for (128 · r · (N + p) bytes: the work area
/// and the lanes' block; Werkzeug's default is 32 MiB).
pub const MAX_SCRYPT_MEMORY_BYTES: u64 = 128 * 1024 * 1024;

/// The most scrypt lanes a stored hash may ask for (each lane is another pass over the work
/// area; the frameworks use 1).
pub const MAX_SCRYPT_P: u32 = 4;

/// The largest scrypt block size a stored hash may ask for (the frameworks use 8).
pub const MAX_SCRYPT_R: u32 = 32;

/// The highest bcrypt cost a stored hash may ask for (2^14 rounds, about a second).
pub const MAX_BCRYPT_COST: u32 = 14;

/// A stored hash that is not argon2 PHC, read and checked against the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// `$2a$`, `$2b$`, `$2y$` (the whole string, as the bcrypt crate reads it).
    Bcrypt(String),
    /// Django's `bcrypt_sha256$`: bcrypt of the hex SHA-256 of the password.
    DjangoBcryptSha256(String),
    /// PBKDF2-HMAC (Werkzeug, Django, PHC `$pbkdf2-…$`).
    Pbkdf2 {
        digest: Pbkdf2Digest,
        iterations: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
    },
    /// scrypt (Werkzeug, PHC `$scrypt$`).
    Scrypt {
        log_n: u8,
        r: u32,
        p: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
    },
}

/// The HMAC of a PBKDF2 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf2Digest {
    Sha1,
    Sha256,
    Sha512,
}

/// Why a stored hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No format this service reads.
    UnknownScheme,
    /// A known format with a part that does not read.
    Malformed(&'static str),
    /// Parameters over the caps.
    OverCaps(&'static str),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::UnknownScheme => f.write_str("unknown hash scheme"),
            Unusable::Malformed(what) => write!(f, "malformed hash: {what}"),
            Unusable::OverCaps(what) => write!(f, "hash over the verification caps: {what}"),
        }
    }
}

impl std::error::Error for Unusable {}

/// What kind of stored hash `stored` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An argon2 PHC string (`$argon2…`), verified by [`crate::hashing`].
    Argon2,
    /// Django's `argon2$…`: the argon2 PHC string after the prefix.
    DjangoArgon2,
    /// Anything else: [`Foreign`].
    Other,
}

impl Kind {
    pub fn of(stored: &str) -> Kind {
        if stored.starts_with("$argon2") {
            Kind::Argon2
        } else if stored.starts_with("argon2$argon2") {
            Kind::DjangoArgon2
        } else {
            Kind::Other
        }
    }
}

/// The argon2 PHC string inside Django's `argon2$…` (`None` for anything else).
pub fn django_argon2(stored: &str) -> Option<&str> {
    stored
        .strip_prefix("argon2")
        .filter(|s| s.starts_with("$argon2"))
}

impl Foreign {
    /// Reads `stored` and checks it against the caps.
    pub fn parse(stored: &str) -> Result<Foreign, Unusable> {
        if let Some(rest) = stored.strip_prefix("bcrypt_sha256$") {
            return bcrypt_parts(rest).map(|()| Foreign::DjangoBcryptSha256(rest.to_owned()));
        }
        if stored.starts_with("$2") {
            return bcrypt_parts(stored).map(|()| Foreign::Bcrypt(stored.to_owned()));
        }
        if let Some(rest) = stored.strip_prefix("pbkdf2:") {
            return werkzeug_pbkdf2(rest);
        }
        if let Some(rest) = stored.strip_prefix("scrypt:") {
            return werkzeug_scrypt(rest);
        }
        if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
            return django_pbkdf2(Pbkdf2Digest::Sha256, rest);
        }
        if let Some(rest) = stored.strip_prefix("pbkdf2_sha1$") {
            return django_pbkdf2(Pbkdf2Digest::Sha1, rest);
        }
        if stored.starts_with("$scrypt$") || stored.starts_with("$pbkdf2") {
            return phc(stored);
        }
        Err(Unusable::UnknownScheme)
    }

    /// Whether `password` is the one this hash was made from (outputs compared in constant
    /// time).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Foreign::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Foreign::DjangoBcryptSha256(hash) => {
                let digest = hex::encode(Sha256::digest(password));
                bcrypt::verify(digest.as_bytes(), hash).unwrap_or(false)
            }
            Foreign::Pbkdf2 {
                digest,
                iterations,
                salt,
                expected,
            } => {
                let mut out = vec![0u8; expected.len()];
                match digest {
                    Pbkdf2Digest::Sha1 => {
                        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, *iterations, &mut out);
                    }
                    Pbkdf2Digest::Sha256 => {
                        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, *iterations, &mut out);
                    }
                    Pbkdf2Digest::Sha512 => {
                        pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                    }
                }
                out.ct_eq(expected).into()
            }
            Foreign::Scrypt {
                log_n,
                r,
                p,
                salt,
                expected,
            } => {
                let Ok(params) = scrypt::Params::new(*log_n, *r, *p) else {
                    return false;
                };
                let mut out = vec![0u8; expected.len()];
                if scrypt::scrypt(password, salt, &params, &mut out).is_err() {
                    return false;
                }
                out.ct_eq(expected).into()
            }
        }
    }
}

/// Checks a bcrypt string's version and cost (the bcrypt crate reads the rest when it
/// verifies).
fn bcrypt_parts(hash: &str) -> Result<(), Unusable> {
    let mut parts = hash.split('$');
    let (Some(""), Some(version), Some(cost_text), Some(rest), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Unusable::Malformed("bcrypt layout"));
    };
    if !matches!(version, "2a" | "2b" | "2y") {
        return Err(Unusable::UnknownScheme);
    }
    let cost: u32 = cost_text
        .parse()
        .map_err(|_| Unusable::Malformed("bcrypt cost"))?;
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if !(4..=31).contains(&cost) || cost_text.len() != 2 || rest.len() != 53 {
        return Err(Unusable::Malformed("bcrypt cost or length"));
    }
    if !rest.bytes().all(alphabet) {
        return Err(Unusable::Malformed("bcrypt salt or hash"));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(Unusable::OverCaps("bcrypt cost"));
    }
    Ok(())
}

fn iterations(text: &str) -> Result<u32, Unusable> {
    let n: u32 = text
        .parse()
        .map_err(|_| Unusable::Malformed("iterations"))?;
    if n == 0 {
        return Err(Unusable::Malformed("iterations"));
    }
    if n > MAX_PBKDF2_ITERATIONS {
        return Err(Unusable::OverCaps("PBKDF2 iterations"));
    }
    Ok(n)
}

/// The digest's output length: what Werkzeug and Django store.
fn digest_len(digest: Pbkdf2Digest) -> usize {
    match digest {
        Pbkdf2Digest::Sha1 => 20,
        Pbkdf2Digest::Sha256 => 32,
        Pbkdf2Digest::Sha512 => 64,
    }
}

/// `sha256:N$salt$hex` (after `pbkdf2:`); Werkzeug's salt is used as its text's bytes.
fn werkzeug_pbkdf2(rest: &str) -> Result<Foreign, Unusable> {
    let (method, salt, hash) = three(rest)?;
    let (digest, rounds) = method.split_once(':').unwrap_or((method, "1000000"));
    let digest = match digest {
        "sha1" => Pbkdf2Digest::Sha1,
        "sha256" => Pbkdf2Digest::Sha256,
        "sha512" => Pbkdf2Digest::Sha512,
        _ => return Err(Unusable::UnknownScheme),
    };
    let expected = hex::decode(hash).map_err(|_| Unusable::Malformed("hex digest"))?;
    framework_pbkdf2(digest, rounds, salt, expected)
}

/// A PBKDF2 hash as Werkzeug and Django store it: the salt is its text's bytes, the digest
/// as long as the HMAC's output.
fn framework_pbkdf2(
    digest: Pbkdf2Digest,
    rounds: &str,
    salt: &str,
    expected: Vec<u8>,
) -> Result<Foreign, Unusable> {
    if expected.len() != digest_len(digest) {
        return Err(Unusable::Malformed("digest length"));
    }
    Ok(Foreign::Pbkdf2 {
        digest,
        iterations: iterations(rounds)?,
        salt: salt.as_bytes().to_vec(),
        expected,
    })
}

/// `N:r:p$salt$hex` (after `scrypt:`): Werkzeug's `hashlib.scrypt` with a 64-byte output.
fn werkzeug_scrypt(rest: &str) -> Result<Foreign, Unusable> {
    let (method, salt, hash) = three(rest)?;
    let mut numbers = method.split(':').map(str::parse::<u64>);
    let (Some(Ok(n)), Some(Ok(r)), Some(Ok(p)), None) = (
        numbers.next(),
        numbers.next(),
        numbers.next(),
        numbers.next(),
    ) else {
        return Err(Unusable::Malformed("scrypt parameters"));
    };
    if !n.is_power_of_two() || n < 2 {
        return Err(Unusable::Malformed("scrypt N"));
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| Unusable::Malformed("scrypt N"))?;
    let expected = hex::decode(hash).map_err(|_| Unusable::Malformed("hex digest"))?;
    scrypt_within_caps(log_n, r, p, salt.as_bytes().to_vec(), expected)
}

fn scrypt_within_caps(
    log_n: u8,
    r: u64,
    p: u64,
    salt: Vec<u8>,
    expected: Vec<u8>,
) -> Result<Foreign, Unusable> {
    let (r, p) = (
        u32::try_from(r).map_err(|_| Unusable::Malformed("scrypt r"))?,
        u32::try_from(p).map_err(|_| Unusable::Malformed("scrypt p"))?,
    );
    if r == 0 || p == 0 || log_n == 0 || log_n >= 64 {
        return Err(Unusable::Malformed("scrypt parameters"));
    }
    let blocks = (1u64 << log_n).saturating_add(u64::from(p));
    let memory = 128u64.saturating_mul(u64::from(r)).saturating_mul(blocks);
    if memory > MAX_SCRYPT_MEMORY_BYTES || p > MAX_SCRYPT_P || r > MAX_SCRYPT_R {
        return Err(Unusable::OverCaps("scrypt memory, block size or lanes"));
    }
    if scrypt::Params::new(log_n, r, p).is_err() || expected.is_empty() || expected.len() > 128 {
        return Err(Unusable::Malformed("scrypt parameters"));
    }
    Ok(Foreign::Scrypt {
        log_n,
        r,
        p,
        salt,
        expected,
    })
}

/// `N$salt$base64` (after `pbkdf2_sha256$`): Django's salt is its text's bytes, the digest
/// standard base64.
fn django_pbkdf2(digest: Pbkdf2Digest, rest: &str) -> Result<Foreign, Unusable> {
    let (rounds, salt, hash) = three(rest)?;
    let expected = STANDARD
        .decode(hash)
        .map_err(|_| Unusable::Malformed("base64 digest"))?;
    framework_pbkdf2(digest, rounds, salt, expected)
}

/// A PHC string of scrypt or PBKDF2, read by the `password-hash` crate; its salt and output
/// are the decoded bytes, as the RustCrypto implementations write them.
fn phc(stored: &str) -> Result<Foreign, Unusable> {
    let parsed = PasswordHash::new(stored).map_err(|_| Unusable::Malformed("PHC string"))?;
    let (Some(salt), Some(hash)) = (&parsed.salt, &parsed.hash) else {
        return Err(Unusable::Malformed("PHC salt or output"));
    };
    let salt = salt.as_ref().to_vec();
    let expected = hash.as_bytes().to_vec();
    let number = |name: &str| parsed.params.get_decimal(name);
    match parsed.algorithm.as_str() {
        "scrypt" => {
            let log_n = number("ln").ok_or(Unusable::Malformed("scrypt ln"))?;
            let log_n = u8::try_from(log_n).map_err(|_| Unusable::Malformed("scrypt ln"))?;
            let r = number("r").ok_or(Unusable::Malformed("scrypt r"))?;
            let p = number("p").ok_or(Unusable::Malformed("scrypt p"))?;
            scrypt_within_caps(log_n, r.into(), p.into(), salt, expected)
        }
        algorithm => {
            let digest = match algorithm {
                "pbkdf2-sha256" => Pbkdf2Digest::Sha256,
                "pbkdf2-sha512" => Pbkdf2Digest::Sha512,
                "pbkdf2" => Pbkdf2Digest::Sha1,
                _ => return Err(Unusable::UnknownScheme),
            };
            let rounds = number("i").ok_or(Unusable::Malformed("PBKDF2 i"))?;
            let iterations = iterations(&rounds.to_string())?;
            if expected.is_empty() {
                return Err(Unusable::Malformed("PBKDF2 output"));
            }
            // Each output block of the digest's length costs the iterations again.
            let blocks = expected.len().div_ceil(digest_len(digest)) as u64;
            if u64::from(iterations) * blocks > u64::from(MAX_PBKDF2_ITERATIONS) {
                return Err(Unusable::OverCaps("PBKDF2 iterations x output blocks"));
            }
            Ok(Foreign::Pbkdf2 {
                digest,
                iterations,
                salt,
                expected,
            })
        }
    }
}

/// `method$salt$hash`.
fn three(text: &str) -> Result<(&str, &str, &str), Unusable> {
    let mut parts = text.splitn(3, '$');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) if !b.is_empty() && !c.is_empty() && !c.contains('$') => {
            Ok((a, b, c))
        }
        _ => Err(Unusable::Malformed("layout")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Hashes of [`PASSWORD`] made by the frameworks' own libraries:
    /// `python tests/hashes/foreign_hashes.py "correct horse battery staple 42" --fast`.
    const VECTORS: &str = include_str!("foreign_hash_vectors.json");
    const PASSWORD: &[u8] = b"correct horse battery staple 42";

    fn vectors() -> BTreeMap<String, String> {
        serde_json::from_str(VECTORS).expect("the vectors parse")
    }

    #[test]
    fn every_foreign_format_verifies_its_password_and_no_other() {
        let mut checked = 0;
        for (scheme, hash) in vectors() {
            match Kind::of(&hash) {
                Kind::Argon2 | Kind::DjangoArgon2 => continue,
                Kind::Other => {}
            }
            let foreign = Foreign::parse(&hash).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert!(foreign.verify(PASSWORD), "{scheme} verifies its password");
            assert!(
                !foreign.verify(b"correct horse battery staple 43"),
                "{scheme}"
            );
            assert!(!foreign.verify(b""), "{scheme}");
            checked += 1;
        }
        assert_eq!(
            checked, 11,
            "every foreign format of the vectors was checked"
        );
    }

    #[test]
    fn argon2_strings_and_djangos_are_left_to_the_argon2_verifier() {
        let v = vectors();
        assert_eq!(Kind::of(&v["argon2id"]), Kind::Argon2);
        assert_eq!(Kind::of(&v["argon2i"]), Kind::Argon2);
        assert_eq!(Kind::of(&v["django_argon2"]), Kind::DjangoArgon2);
        let inner = django_argon2(&v["django_argon2"]).expect("an argon2 PHC string inside");
        assert!(inner.starts_with("$argon2id$v=19$"));
        assert_eq!(django_argon2(&v["argon2id"]), None);
    }

    #[test]
    fn parameters_over_the_caps_and_unknown_or_broken_hashes_are_refused() {
        let v = vectors();
        let over = [
            // bcrypt cost 15.
            v["bcrypt_2b"].replacen("$04$", "$15$", 1),
            // 6,000,000 PBKDF2 iterations.
            v["django_pbkdf2_sha256"].replacen("$1000$", "$6000000$", 1),
            v["werkzeug_pbkdf2_sha256"].replacen(":1000$", ":6000000$", 1),
            // scrypt N = 2^20, r = 8: 1 GiB.
            v["werkzeug_scrypt"].replacen("scrypt:32768:", "scrypt:1048576:", 1),
            v["phc_scrypt"].replacen("ln=10", "ln=20", 1),
            // 5 scrypt lanes.
            v["werkzeug_scrypt"].replacen(":8:1$", ":8:5$", 1),
            // A small N with a huge block size: 128 · r · p bytes before the work.
            format!("scrypt:2:524288:4$salt${}", "ab".repeat(64)),
            format!("scrypt:2:33:1$salt${}", "ab".repeat(64)),
            // A PHC PBKDF2 output of 2 blocks at 3,000,000 iterations: 6,000,000 rounds.
            format!(
                "$pbkdf2-sha256$i=3000000,l=64$c2FsdHNhbHQ${}",
                "A".repeat(86)
            ),
        ];
        for hash in over {
            assert!(
                matches!(Foreign::parse(&hash), Err(Unusable::OverCaps(_))),
                "{hash}: {:?}",
                Foreign::parse(&hash)
            );
        }
        for unknown in [
            "md5$salt$5f4dcc3b5aa765d61d8327deb882cf99",
            "sha1$salt$abc",
            "$1$salt$hash",
            "$2x$04$N56urM2yEfcb.Na7yN/oqu1WtmvGEfqoUk9Qb/Nesh9uCT9Bmp8pC",
            "pbkdf2:md5:1000$salt$abcd",
            "plain text password",
            "",
        ] {
            assert_eq!(
                Foreign::parse(unknown),
                Err(Unusable::UnknownScheme),
                "{unknown}"
            );
        }
        for broken in [
            "$2b$04$short",
            "$2b$xx$N56urM2yEfcb.Na7yN/oqu1WtmvGEfqoUk9Qb/Nesh9uCT9Bmp8pC",
            "pbkdf2:sha256:1000$salt$nothex",
            "pbkdf2:sha256:1000$salt$abcd",
            "pbkdf2:sha256:0$salt$a5432f4491da62ccaf65f84f894c8a4d710829920862af499f478ffa111045e3",
            "pbkdf2_sha256$1000$salt",
            "pbkdf2_sha256$1000$salt$!!!",
            "scrypt:1000:8:1$salt$abcd",
            "scrypt:32768:8$salt$abcd",
            "$scrypt$ln=10,r=8$c2FsdA$abcd",
            "$scrypt$ln=0,r=8,p=1$c2FsdA$YWJjZA",
            "$2b$4$N56urM2yEfcb.Na7yN/oqu1WtmvGEfqoUk9Qb/Nesh9uCT9Bmp8pCx",
            "$2b$04$!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "$pbkdf2-sha256$l=32$c2FsdA$abcd",
        ] {
            assert!(
                matches!(Foreign::parse(broken), Err(Unusable::Malformed(_))),
                "{broken}: {:?}",
                Foreign::parse(broken)
            );
        }
    }

    #[test]
    fn a_hash_that_differs_in_its_salt_or_output_does_not_verify() {
        let v = vectors();
        for scheme in [
            "werkzeug_scrypt",
            "django_pbkdf2_sha256",
            "phc_pbkdf2_sha256",
        ] {
            let hash = &v[scheme];
            // A character inside the output, changed (not the last: base64 padding).
            let mut bent: Vec<char> = hash.chars().collect();
            let i = bent.len() - 5;
            bent[i] = if bent[i] == 'A' { 'B' } else { 'A' };
            let bent: String = bent.into_iter().collect();
            let foreign = Foreign::parse(&bent).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert!(!foreign.verify(PASSWORD), "{scheme}: {bent}");
        }
    }
}
