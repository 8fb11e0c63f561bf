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
//!
//! What a verification costs depends on a hash's parameters only, never on its salt or
//! output: [`Foreign::signature`] names those parameters (`bcrypt:12`,
//! `pbkdf2-sha256:600000:32`, `scrypt:32768:8:1`) and [`synthetic`] makes a hash with them, a
//! random salt and an all-zero output, whose verification costs what a real one does. An
//! import stores each account's signature and times its synthetic hash once; the api times
//! the costliest still stored so that every refused sign-in takes as long (see
//! [`crate::refusal_floor`]). Formats of one function share a signature (Werkzeug's, Django's
//! and PHC PBKDF2 run the same code): they cost the same.

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use base64::{
    Engine as _,
    alphabet::BCRYPT,
    engine::{
        GeneralPurpose,
        general_purpose::{NO_PAD, STANDARD, STANDARD_NO_PAD},
    },
};
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

impl Pbkdf2Digest {
    fn name(self) -> &'static str {
        match self {
            Pbkdf2Digest::Sha1 => "sha1",
            Pbkdf2Digest::Sha256 => "sha256",
            Pbkdf2Digest::Sha512 => "sha512",
        }
    }
}

/// bcrypt's own base64 (`./A–Za–z0–9`, unpadded), for the salt of a synthetic hash.
const BCRYPT_BASE64: GeneralPurpose = GeneralPurpose::new(&BCRYPT, NO_PAD);

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

    /// The parameters what verifying this hash costs depends on, without its salt or output:
    /// `bcrypt:COST` (Django's `bcrypt_sha256` too: one SHA-256 more is nothing beside
    /// bcrypt), `pbkdf2-DIGEST:ITERATIONS:OUTPUT_BYTES` (each output block of the digest's
    /// length costs the iterations again), `scrypt:N:r:p`. [`synthetic`] makes a hash of the
    /// same cost from it.
    pub fn signature(&self) -> String {
        match self {
            Foreign::Bcrypt(hash) | Foreign::DjangoBcryptSha256(hash) => {
                format!("bcrypt:{}", bcrypt_cost(hash))
            }
            Foreign::Pbkdf2 {
                digest,
                iterations,
                expected,
                ..
            } => format!("pbkdf2-{}:{iterations}:{}", digest.name(), expected.len()),
            Foreign::Scrypt { log_n, r, p, .. } => format!("scrypt:{}:{r}:{p}", 1u64 << log_n),
        }
    }

    /// The working memory one verification of this hash takes, in bytes: scrypt's work area
    /// and its lanes' block (bcrypt's 4 KiB and PBKDF2's few bytes count as none).
    pub fn memory_bytes(&self) -> u64 {
        match self {
            Foreign::Scrypt { log_n, r, p, .. } => scrypt_memory(*log_n, *r, *p),
            Foreign::Bcrypt(_) | Foreign::DjangoBcryptSha256(_) | Foreign::Pbkdf2 { .. } => 0,
        }
    }
}

/// A hash with the parameters `signature` names ([`Foreign::signature`]), a random salt and
/// an all-zero output: verifying a password against it does all the work a stored hash of
/// that signature asks for (and fails). Read back and checked against the caps like a stored
/// hash, so a signature over them makes no hash.
pub fn synthetic(signature: &str) -> Result<String, Unusable> {
    let mut parts = signature.split(':');
    let scheme = parts.next().unwrap_or_default();
    let numbers: Vec<u64> = parts
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| Unusable::Malformed("signature"))?;
    let salt: [u8; 16] = rand::random();
    let phc_salt = STANDARD_NO_PAD.encode(salt);
    let hash = match (scheme, numbers.as_slice()) {
        // 23 zero bytes of output are 31 `.` in bcrypt's base64.
        ("bcrypt", [cost]) => format!(
            "$2b${cost:02}${}{}",
            BCRYPT_BASE64.encode(salt),
            ".".repeat(31)
        ),
        ("scrypt", [n, r, p]) if n.is_power_of_two() => format!(
            "$scrypt$ln={},r={r},p={p}${phc_salt}${}",
            n.trailing_zeros(),
            STANDARD_NO_PAD.encode([0u8; 32])
        ),
        ("pbkdf2-sha1" | "pbkdf2-sha256" | "pbkdf2-sha512", [iterations, length]) => {
            let algorithm = if scheme == "pbkdf2-sha1" {
                "pbkdf2"
            } else {
                scheme
            };
            // A PHC output holds 10 to 64 bytes, as every stored PBKDF2 hash's does.
            let length = usize::try_from(*length)
                .ok()
                .filter(|l| (10..=64).contains(l))
                .ok_or(Unusable::Malformed("PBKDF2 output length"))?;
            format!(
                "${algorithm}$i={iterations},l={length}${phc_salt}${}",
                STANDARD_NO_PAD.encode(vec![0u8; length])
            )
        }
        ("bcrypt" | "scrypt" | "pbkdf2-sha1" | "pbkdf2-sha256" | "pbkdf2-sha512", _) => {
            return Err(Unusable::Malformed("signature"));
        }
        _ => return Err(Unusable::UnknownScheme),
    };
    Foreign::parse(&hash)?;
    Ok(hash)
}

/// The cost of a bcrypt string [`bcrypt_parts`] accepted (two digits after the version).
fn bcrypt_cost(hash: &str) -> u32 {
    // Unreachable for an accepted string; the costliest cost if it were not.
    (hash.get(4..6).and_then(|c| c.parse().ok())).unwrap_or(MAX_BCRYPT_COST)
}

/// scrypt's working memory in bytes: 128 · r · (N + p), the work area and the lanes' block.
fn scrypt_memory(log_n: u8, r: u32, p: u32) -> u64 {
    let blocks = 1u64
        .checked_shl(log_n.into())
        .unwrap_or(u64::MAX)
        .saturating_add(u64::from(p));
    128u64.saturating_mul(u64::from(r)).saturating_mul(blocks)
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
    if scrypt_memory(log_n, r, p) > MAX_SCRYPT_MEMORY_BYTES || p > MAX_SCRYPT_P || r > MAX_SCRYPT_R
    {
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
    /// `python tests/hashes/foreign_hashes.py "correct horse battery staple 42" --fast`; and
    /// `argon2id_v16` by argon2-cffi's `argon2.low_level.hash_secret(PASSWORD,
    /// b"sixteen byte slt", time_cost=1, memory_cost=1024, parallelism=1, hash_len=32,
    /// type=Type.ID, version=16)`, `argon2id_no_version` the same without its `v=16$` (as
    /// libargon2 before version 1.3 wrote it; its `verify_secret` accepts both).
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

    #[test]
    fn a_signature_names_the_cost_parameters_and_nothing_else() {
        let v = vectors();
        for (scheme, signature) in [
            ("werkzeug_scrypt", "scrypt:32768:8:1"),
            ("phc_scrypt", "scrypt:1024:8:1"),
            ("werkzeug_pbkdf2_sha256", "pbkdf2-sha256:1000:32"),
            ("django_pbkdf2_sha256", "pbkdf2-sha256:1000:32"),
            ("phc_pbkdf2_sha256", "pbkdf2-sha256:1000:32"),
            ("werkzeug_pbkdf2_sha512", "pbkdf2-sha512:1000:64"),
            ("django_pbkdf2_sha1", "pbkdf2-sha1:1000:20"),
            ("bcrypt_2a", "bcrypt:4"),
            ("bcrypt_2b", "bcrypt:4"),
            ("bcrypt_2y", "bcrypt:4"),
            ("django_bcrypt_sha256", "bcrypt:4"),
        ] {
            let foreign = Foreign::parse(&v[scheme]).expect(scheme);
            assert_eq!(foreign.signature(), signature, "{scheme}");
        }
        let bcrypt_12 = v["bcrypt_2b"].replacen("$04$", "$12$", 1);
        let foreign = Foreign::parse(&bcrypt_12).expect("bcrypt cost 12");
        assert_eq!(foreign.signature(), "bcrypt:12");
    }

    #[test]
    fn a_synthetic_hash_has_the_signature_and_memory_of_the_real_one_and_verifies_nothing() {
        let mut checked = 0;
        for (scheme, hash) in vectors() {
            if Kind::of(&hash) != Kind::Other {
                continue;
            }
            let real = Foreign::parse(&hash).expect(&scheme);
            let made = synthetic(&real.signature()).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            let read = Foreign::parse(&made).unwrap_or_else(|e| panic!("{scheme}: {made}: {e}"));
            assert_eq!(read.signature(), real.signature(), "{scheme}");
            assert_eq!(read.memory_bytes(), real.memory_bytes(), "{scheme}");
            assert!(!read.verify(PASSWORD), "{scheme}");
            let again = synthetic(&real.signature()).expect(&scheme);
            assert_ne!(again, made, "{scheme}: each has a salt of its own");
            checked += 1;
        }
        assert_eq!(checked, 11);
    }

    #[test]
    fn a_signature_over_the_caps_or_not_one_of_ours_makes_no_hash() {
        for over in [
            "bcrypt:15",
            "scrypt:1048576:8:1",
            "scrypt:32768:8:5",
            "pbkdf2-sha256:6000000:32",
            // Two output blocks of 3,000,000 iterations.
            "pbkdf2-sha256:3000000:64",
        ] {
            assert!(
                matches!(synthetic(over), Err(Unusable::OverCaps(_))),
                "{over}: {:?}",
                synthetic(over)
            );
        }
        for unknown in ["md5:1000", "pbkdf2-md5:1000:16", "", "argon2id:19:1024:1:1"] {
            assert_eq!(
                synthetic(unknown),
                Err(Unusable::UnknownScheme),
                "{unknown}"
            );
        }
        for malformed in [
            "bcrypt",
            "bcrypt:x",
            "bcrypt:4:4",
            "scrypt:1000:8:1",
            "scrypt:32768:8",
            "pbkdf2-sha256:1000:200",
            "pbkdf2-sha256:1000:4",
            "pbkdf2-sha256:0:32",
        ] {
            assert!(
                matches!(synthetic(malformed), Err(Unusable::Malformed(_))),
                "{malformed}: {:?}",
                synthetic(malformed)
            );
        }
    }

    #[test]
    fn only_scrypt_counts_working_memory() {
        let v = vectors();
        let memory = |scheme: &str| Foreign::parse(&v[scheme]).expect(scheme).memory_bytes();
        // 128 · 8 · (32768 + 1) bytes: Werkzeug's 32 MiB and one lane's block.
        assert_eq!(memory("werkzeug_scrypt"), 128 * 8 * (32768 + 1));
        assert_eq!(memory("phc_scrypt"), 128 * 8 * (1024 + 1));
        assert_eq!(memory("bcrypt_2b"), 0);
        assert_eq!(memory("django_pbkdf2_sha256"), 0);
    }
}
