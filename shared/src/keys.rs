//! Redis key names, in one place so the api and the worker cannot drift apart.
//!
//! Every key carries a hash tag (`{…}`) chosen so that keys used together by one script or
//! multi-key command land in one Redis Cluster slot: all of a user's sessions and token
//! generations share `{u:<uid>}`; single-key scripts (rate limits, burns) tag the key itself.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::token::Purpose;

/// Builds key names under an optional namespace prefix (empty in production; a random one per
/// test so tests can share one Redis).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (may be empty).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sliding-window log of forgot-password requests for one (hashed) address.
    pub fn rate_email(&self, address_hash: &str) -> String {
        format!("{}rl:email:{{{address_hash}}}", self.prefix)
    }

    /// Sliding-window log of requests from one (hashed) client IP for one action.
    pub fn rate_ip(&self, action: &str, ip_hash: &str) -> String {
        format!("{}rl:ip:{action}:{{{ip_hash}}}", self.prefix)
    }

    /// A sign-in waiting for its second factor, by a SHA-256 of its `mfa_token` (a hash:
    /// the account, the password version it was created under, the wrong codes so far).
    pub fn mfa_challenge(&self, token_hash: &str) -> String {
        format!("{}mfa:{{{token_hash}}}", self.prefix)
    }

    /// The state of a passkey ceremony between its two requests (registration or sign-in),
    /// by a SHA-256 of its id.
    pub fn passkey_ceremony(&self, id_hash: &str) -> String {
        format!("{}pk:{{{id_hash}}}", self.prefix)
    }

    /// Burn marker of a used token (value: nothing of interest; existence is the fact).
    pub fn burn(&self, token_fingerprint: &str) -> String {
        format!("{}burn:{{{token_fingerprint}}}", self.prefix)
    }

    /// The newest token generation of a user for one purpose. A link is only valid while its
    /// `gen` equals this value, so issuing a new link kills older ones. Missing (e.g. Redis lost
    /// its data) matches no token: losing Redis can only kill links, never revive them.
    pub fn token_generation(&self, user: Uuid, purpose: Purpose) -> String {
        format!("{}tok:{{u:{user}}}:gen:{}", self.prefix, purpose.salt())
    }

    /// The link a mail job minted for a user (its generation, signing time and password
    /// version), so every attempt and redelivery of the job sends the same link. In the
    /// user's slot: minted by one script with [`Self::token_generation`].
    pub fn job_link(&self, user: Uuid, job_id: Uuid) -> String {
        format!("{}tok:{{u:{user}}}:job:{job_id}", self.prefix)
    }

    /// One session (hash of the session secret), holding the user's password version.
    pub fn session(&self, user: Uuid, secret_hash: &str) -> String {
        format!("{}sess:{{u:{user}}}:{secret_hash}", self.prefix)
    }

    /// When a session was created and last seen, its device name and its network (a hash
    /// beside the session, with its lifetime).
    pub fn session_meta(&self, user: Uuid, secret_hash: &str) -> String {
        format!("{}sess:{{u:{user}}}:{secret_hash}:meta", self.prefix)
    }

    /// Marks that a device (by a hash of its cookie id, or of its name and network) caused a
    /// new-sign-in notice to the user today.
    pub fn new_device_notice(&self, user: Uuid, device_hash: &str) -> String {
        format!("{}newdev:{{u:{user}}}:{device_hash}", self.prefix)
    }

    /// Set of a user's session hashes, so all sessions can be revoked in one script.
    pub fn user_sessions(&self, user: Uuid) -> String {
        format!("{}sess:{{u:{user}}}", self.prefix)
    }

    /// Marker that a rate-limit refusal of one (budget, IP, address) was audited recently, so
    /// a flood of refusals writes one audit row per minute, not one per request.
    pub fn audit_mark(&self, fingerprint: &str) -> String {
        format!("{}audit:rl:{{{fingerprint}}}", self.prefix)
    }

    /// Marker that a mail job was delivered (idempotency across redeliveries).
    pub fn job_sent(&self, job_id: Uuid) -> String {
        format!("{}mail:sent:{{{job_id}}}", self.prefix)
    }

    /// Sliding-window log of the emails sent to one (hashed) recipient, whatever their kind
    /// (the worker's per-recipient budget; members are job ids). Used by a single-key script,
    /// so the key is tagged on itself; the `r:` inside the tag keeps it out of the slot of the
    /// same address's forgot-password budget, so one targeted address spreads over two nodes.
    pub fn mail_recipient(&self, address_hash: &str) -> String {
        format!("{}mail:rcpt:{{r:{address_hash}}}", self.prefix)
    }

    /// The one-time code of an address's newest reset link (see [`crate::reset_code`]), under
    /// the address's code pseudonym. Used by single-key scripts, so tagged on itself.
    pub fn reset_code(&self, address: &str) -> String {
        format!("{}code:{{c:{address}}}", self.prefix)
    }

    /// The address's count of wrong codes over all its codes (see
    /// [`crate::reset_code::MAX_WRONG_CODES_PER_DAY`]); in the slot of [`Self::reset_code`].
    pub fn reset_code_wrong(&self, address: &str) -> String {
        format!("{}code:{{c:{address}}}:wrong", self.prefix)
    }

    /// The site-wide count of wrong reset codes in the minute starting at `minute` (seconds
    /// since the epoch / 60). Every minute shares one hash tag, so this minute's and the last
    /// one's are read with one `MGET` on Redis Cluster too.
    pub fn code_breaker(&self, minute: i64) -> String {
        format!("{}code-breaker:{{cb}}:{minute}", self.prefix)
    }

    /// The provider-wide send budget (`SMTP_MAX_PER_SECOND`), shared by every worker replica:
    /// `[0]` the log of recent sends, `[1]` the priority line of jobs waiting for a turn
    /// (tickets), `[2]` an unused throttle slot (the script takes the same keys for both
    /// budgets), `[3]` the bulk line (see `mail-worker/src/send_budget.lua`). One hash tag for
    /// them all, so one script may use them on Redis Cluster. A single slot for the whole
    /// provider is what a global rate is; it costs one script call per email on one node.
    pub fn send_provider(&self) -> [String; 4] {
        self.send_budget_keys("p")
    }

    /// The send budget of one recipient domain (`SMTP_DOMAIN_MAX_PER_MINUTE`) under the
    /// domain's pseudonym (a personal domain names a person as surely as an address): the
    /// log, the priority line, the throttle state (a pause after the provider's `421` /
    /// `4.7.x`) and the bulk line, tagged together.
    pub fn send_domain(&self, domain_hash: &str) -> [String; 4] {
        self.send_budget_keys(&format!("d:{domain_hash}"))
    }

    /// The places one requester (a client's pseudonym) holds in the bulk line of `budget`
    /// (keys of [`Self::send_provider`] or [`Self::send_domain`]), in the budget's slot.
    pub fn send_requester(&self, budget: &[String; 4], requester: &str) -> String {
        let base = budget[0].strip_suffix(":log").unwrap_or(&budget[0]);
        format!("{base}:held:{requester}")
    }

    fn send_budget_keys(&self, tag: &str) -> [String; 4] {
        let base = format!("{}mail:send:{{{tag}}}", self.prefix);
        [
            format!("{base}:log"),
            format!("{base}:line"),
            format!("{base}:throttle"),
            format!("{base}:bulk"),
        ]
    }
}

/// Issues the next token generation for one user and purpose.
///
/// The generation is `max(previous + 1, now in ms)`, not a bare counter: if Redis loses the
/// key, a plain `INCR` would start again at 1 and re-issue generations that old, unexpired
/// links carry, bringing them back to life. Anchoring it to the clock keeps generations
/// increasing across data loss. The key lives as long as the longest-lived link.
pub const NEXT_GENERATION_LUA: &str = r"
local g = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
local now = tonumber(ARGV[1])
if now > g then g = now end
redis.call('SET', KEYS[1], g, 'PX', ARGV[2])
return g
";

/// Mints a job's link once: `KEYS[1]` the user's generation for the purpose, `KEYS[2]` the
/// job's link ([`Keys::job_link`]); `ARGV` now (ms), the generation's TTL (ms), the password
/// version, the link record's TTL (ms). A job seen before gets its recorded
/// `"<generation>:<signed at, s>:<password version>"` back; a new one bumps the generation as
/// [`NEXT_GENERATION_LUA`] does and records it (with `ARGV[5]` = `join`, a new one takes the
/// current generation when there is one, so links minted before stay alive). Also returns the
/// user's current generation, so the caller sees when a newer email has made this job's link
/// dead.
pub const MINT_ONCE_LUA: &str = r"
local minted = redis.call('GET', KEYS[2])
if minted then
  return {minted, redis.call('GET', KEYS[1]) or '0'}
end
local now = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[1])
local g
if ARGV[5] == 'join' and current then
  g = tonumber(current)
else
  g = tonumber(current or '0') + 1
  if now > g then g = now end
end
redis.call('SET', KEYS[1], g, 'PX', ARGV[2])
minted = string.format('%d:%d:%s', g, math.floor(now / 1000), ARGV[3])
redis.call('SET', KEYS[2], minted, 'PX', ARGV[4])
return {minted, tostring(g)}
";

/// The unit an IP budget applies to: the address for IPv4, the /64 network for IPv6 (one
/// subscriber usually owns a whole /64 and can pick any address in it per request).
pub fn ip_subject(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

/// Pseudonymises an address key or an IP for Redis keys, logs and audit rows.
///
/// An HMAC (not a bare hash) so that the pseudonyms cannot be reversed by hashing a list of
/// known addresses without the server's secret.
pub fn pseudonym(secret: &[u8], purpose: &str, value: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_tag(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = key[open..].find('}').expect("tag closes") + open;
        &key[open + 1..close]
    }

    #[test]
    fn a_users_sessions_and_generations_share_one_cluster_slot() {
        let keys = Keys::new("t1:");
        let user = Uuid::new_v4();
        let tag = slot_tag(&keys.user_sessions(user)).to_owned();
        assert_eq!(slot_tag(&keys.session(user, "abc")), tag);
        assert_eq!(
            slot_tag(&keys.token_generation(user, Purpose::PasswordReset)),
            tag
        );
        assert_eq!(
            slot_tag(&keys.token_generation(user, Purpose::EmailVerify)),
            tag
        );
        assert_eq!(slot_tag(&keys.job_link(user, Uuid::new_v4())), tag);
    }

    #[test]
    fn the_prefix_namespaces_every_key() {
        let keys = Keys::new("ns:");
        assert!(keys.rate_email("h").starts_with("ns:"));
        assert!(keys.burn("f").starts_with("ns:"));
        assert!(keys.job_sent(Uuid::nil()).starts_with("ns:"));
    }

    #[test]
    fn the_recipient_budget_key_is_namespaced_and_tagged_on_its_own() {
        let keys = Keys::new("ns:");
        let key = keys.mail_recipient("abc");
        assert!(key.starts_with("ns:"), "{key}");
        assert_eq!(slot_tag(&key), "r:abc");
        assert_ne!(slot_tag(&key), slot_tag(&keys.rate_email("abc")));
        assert_ne!(key, keys.mail_recipient("abd"));
    }

    #[test]
    fn each_send_budget_keeps_its_keys_in_one_slot_of_its_own() {
        let keys = Keys::new("ns:");
        let provider = keys.send_provider();
        let domain = keys.send_domain("abc");
        for set in [&provider, &domain] {
            let held = keys.send_requester(set, "r1");
            assert!(
                set.iter().chain([&held]).all(|k| k.starts_with("ns:")),
                "{set:?}"
            );
            assert!(
                set.iter()
                    .chain([&held])
                    .all(|k| slot_tag(k) == slot_tag(&set[0])),
                "{set:?} {held}"
            );
            assert_ne!(held, keys.send_requester(set, "r2"));
        }
        assert_eq!(slot_tag(&domain[0]), "d:abc");
        assert_ne!(slot_tag(&provider[0]), slot_tag(&domain[0]));
        assert_ne!(keys.send_domain("abd")[0], domain[0]);
    }

    #[test]
    fn pseudonyms_depend_on_secret_and_purpose() {
        let a = pseudonym(b"secret-one", "email", "ann@example.org");
        assert_eq!(a.len(), 64);
        assert_eq!(a, pseudonym(b"secret-one", "email", "ann@example.org"));
        assert_ne!(a, pseudonym(b"secret-two", "email", "ann@example.org"));
        assert_ne!(a, pseudonym(b"secret-one", "ip", "ann@example.org"));
    }
}
