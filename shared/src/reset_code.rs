//! The one-time code a reset email shows beside its link, for a person who reads the email on
//! one device and resets on another.
//!
//! The code belongs to the link: the worker derives it from the link's token (so every attempt
//! of a job shows the same code) and records, under the address's pseudonym, which link it
//! stands for (user, generation, password version, signing time, the token's fingerprint) and
//! a MAC of the code, never the code or the token. The api checks a submitted code against that
//! record and then burns the link's own fingerprint, so using either the link or the code kills
//! the other, and a newer email (a new generation) replaces the record and kills both.
//!
//! The record is keyed by the address, not the account: a code submitted for an unknown address
//! runs the very same script on a key that does not exist, with the same answer. Each wrong code
//! counts against the record; the [`MAX_WRONG_CODES`]th kills the code (the link stays usable:
//! it cannot be guessed). A killed or used record stays as a tombstone until it would have
//! expired, so a retry of the same job cannot bring its code back.

use uuid::Uuid;

use crate::{
    keys::pseudonym,
    redis_pool::{RedisError, RedisPool},
    token::token_fingerprint,
};

/// Digits in a code.
pub const CODE_DIGITS: usize = 8;

/// Wrong codes an issued code survives; the last of them kills it.
pub const MAX_WRONG_CODES: u32 = 5;

/// Wrong codes an address takes in [`WRONG_CODES_WINDOW_MS`] over all its codes: the codes of
/// new emails (3 an hour within the forgot-password budget) do not give a guesser 5 more tries
/// each. Reached, no code of the address works until the window has passed (its links do).
pub const MAX_WRONG_CODES_PER_DAY: u32 = 10;

/// The window of [`MAX_WRONG_CODES_PER_DAY`].
pub const WRONG_CODES_WINDOW_MS: u64 = 86_400_000;

/// The `mac` of a record whose code is dead (used, superseded or guessed at too often). No
/// MAC is ever this short, so no code matches it.
pub const DEAD: &str = "-";

/// The pseudonym that keys an address's code record ([`crate::keys::Keys::reset_code`]).
pub fn address_pseudonym(secret: &[u8], email_key: &str) -> String {
    pseudonym(secret, "reset-code-address", email_key)
}

/// The code of a reset link's token: 8 decimal digits from an HMAC of the token, so the same
/// token always shows the same code.
pub fn code_for_token(secret: &[u8], token: &str) -> String {
    let mac = pseudonym(secret, "reset-code", token);
    // 64 bits of the MAC reduced mod 10^8: the bias (2^64 mod 10^8 values of 2^64) is far
    // below anything an attacker with 5 guesses could use.
    let n = u64::from_str_radix(&mac[..16], 16).expect("a MAC is hex");
    format!("{:0width$}", n % 100_000_000, width = CODE_DIGITS)
}

/// The MAC stored for `code` in the record of `address` (its pseudonym): a copy of the
/// record reveals no code without the server's secret.
pub fn code_mac(secret: &[u8], address: &str, code: &str) -> String {
    pseudonym(secret, "reset-code-mac", &format!("{address}\0{code}"))
}

/// The code as typed, in canonical form: spaces and dashes dropped (the email shows it as
/// "1234 5678"), exactly [`CODE_DIGITS`] ASCII digits; `None` for anything else.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The code as an email shows it: two groups of four.
pub fn display(code: &str) -> String {
    if code.len() == CODE_DIGITS && code.is_ascii() {
        format!("{} {}", &code[..4], &code[4..])
    } else {
        code.to_owned()
    }
}

/// A reset link as minted, for its code record.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub user: Uuid,
    /// The address key of the account (the record's key is derived from it).
    pub email_key: &'a str,
    pub password_version: i32,
    pub generation: i64,
    /// When the token was signed (s).
    pub signed_at: i64,
    pub token: &'a str,
    /// Seconds the link has left.
    pub left_secs: u64,
}

/// Records the code of `link` (see [`ISSUE_LUA`]) and returns it; `secret` is the pseudonym
/// key. A retry of the same job finds its own record and leaves it as it is.
pub async fn issue(
    redis: &RedisPool,
    secret: &[u8],
    link: &Link<'_>,
) -> Result<String, RedisError> {
    let code = code_for_token(secret, link.token);
    let address = address_pseudonym(secret, link.email_key);
    let key = redis.keys().reset_code(&address);
    let mac = code_mac(secret, &address, &code);
    let fingerprint = token_fingerprint(link.token);
    // The record lives as long as the link can, and a minute longer (clock skew).
    let ttl_ms = (link.left_secs + 60) * 1000;
    let script = redis::Script::new(ISSUE_LUA);
    let (key, mac, fingerprint) = (&key, &mac, &fingerprint);
    redis
        .run(|mut c| async move {
            script
                .key(key)
                .arg(link.user.to_string())
                .arg(link.generation)
                .arg(link.password_version)
                .arg(link.signed_at)
                .arg(fingerprint)
                .arg(mac)
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await?;
    Ok(code)
}

/// Records the code of a newly minted link (worker). `KEYS[1]` the address's record; `ARGV`
/// user id, generation, password version, signing time (s), token fingerprint, code MAC,
/// time to live (ms). A record of a newer generation stays (a late retry of an older job must
/// not replace it); the record of this very link stays as it is (a retry must not reset the
/// wrong-code count or revive a dead code). Returns 1 when the record is this link's.
pub const ISSUE_LUA: &str = r"
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local new = tonumber(ARGV[2])
if new < gen then return 0 end
if new == gen and redis.call('HGET', KEYS[1], 'fp') == ARGV[5] then return 1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'gen', ARGV[2], 'pv', ARGV[3], 'at', ARGV[4],
  'fp', ARGV[5], 'mac', ARGV[6], 'wrong', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
";

/// Checks a submitted code (api). `KEYS[1]` the address's record, `KEYS[2]` the address's
/// count of wrong codes over all its codes (the same hash tag); `ARGV` the submitted code's
/// MAC, [`MAX_WRONG_CODES`], [`MAX_WRONG_CODES_PER_DAY`], [`WRONG_CODES_WINDOW_MS`]. Answers
/// `{0}` (no live code: none issued, unknown address, dead), `{1}` (wrong; counted, and the
/// last allowed wrong code kills it) or `{2, uid, gen, pv, at, fp}` (right, and the address
/// under its daily count).
///
/// Every path that is not a right code makes the same writes: a wrong code counts in its record
/// and in the address's count; a code for an address without a record counts in a record and
/// a count created and deleted again in the same script (nothing is left behind; an address
/// whose record expired keeps its count). Measured on Redis 7, a write on
/// one path only made a wrong code for a known address answer a few microseconds later than
/// one for an unknown address, in three of four interleaved pairs; with a write on both paths,
/// in about half.
pub const CHECK_LUA: &str = r"
local r = redis.call('HMGET', KEYS[1], 'mac', 'uid', 'gen', 'pv', 'at', 'fp')
local today = tonumber(redis.call('GET', KEYS[2]) or '0')
if r[1] and r[1] ~= '-' and r[1] == ARGV[1] and today < tonumber(ARGV[3]) then
  return {2, r[2], r[3], r[4], r[5], r[6]}
end
local wrong = redis.call('HINCRBY', KEYS[1], 'wrong', 1)
today = redis.call('INCR', KEYS[2])
if today == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
if not r[1] then
  -- No record: the same writes, taken back (a count the address already had stays).
  redis.call('DEL', KEYS[1])
  if today == 1 then redis.call('DEL', KEYS[2]) end
  return {0}
end
if r[1] == '-' then return {0} end
if wrong >= tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'mac', '-') end
return {1}
";

/// Kills the code of `KEYS[1]` if it still stands for the link with fingerprint `ARGV[1]`
/// (its link was used, by the code or otherwise).
pub const KILL_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'mac', '-')
  return 1
end
return 0
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_always_gives_the_same_eight_digit_code_and_another_token_another() {
        let code = code_for_token(b"k", "token-1");
        assert_eq!(code.len(), CODE_DIGITS);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(code, code_for_token(b"k", "token-1"));
        assert_ne!(code, code_for_token(b"k", "token-2"));
        assert_ne!(code, code_for_token(b"other key", "token-1"));
    }

    #[test]
    fn codes_spread_over_every_digit_position() {
        // Leading zeros are kept: the code is a string of 8 digits, not a number.
        let codes: Vec<String> = (0..2000)
            .map(|i| code_for_token(b"k", &i.to_string()))
            .collect();
        assert!(codes.iter().all(|c| c.len() == CODE_DIGITS));
        assert!(codes.iter().any(|c| c.starts_with('0')));
        for position in 0..CODE_DIGITS {
            let distinct: std::collections::HashSet<u8> =
                codes.iter().map(|c| c.as_bytes()[position]).collect();
            assert_eq!(distinct.len(), 10, "position {position}");
        }
    }

    #[test]
    fn typed_codes_are_read_with_spaces_and_dashes_and_nothing_else() {
        assert_eq!(normalize("1234 5678").as_deref(), Some("12345678"));
        assert_eq!(normalize(" 1234-5678 ").as_deref(), Some("12345678"));
        assert_eq!(normalize("12345678").as_deref(), Some("12345678"));
        for bad in [
            "",
            "1234567",
            "123456789",
            "1234567a",
            "１２３４５６７８",
            "1234_5678",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(display("01234567"), "0123 4567");
    }

    #[test]
    fn the_mac_binds_the_code_to_the_address() {
        let mac = code_mac(b"k", "addr-a", "12345678");
        assert_eq!(mac, code_mac(b"k", "addr-a", "12345678"));
        assert_ne!(mac, code_mac(b"k", "addr-b", "12345678"));
        assert_ne!(mac, code_mac(b"k", "addr-a", "12345679"));
        assert!(mac.len() > DEAD.len());
        assert_ne!(
            address_pseudonym(b"k", "ann@example.org"),
            pseudonym(b"k", "email", "ann@example.org"),
            "the record's key is not the rate limits' pseudonym"
        );
    }
}
