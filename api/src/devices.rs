//! Recognised devices: a long-lived, HttpOnly, signed cookie that a browser gets at every
//! successful sign-in, reset and verification, and that names (by MAC, never by address) the
//! accounts it proved itself for.
//!
//! Why: the per-address budget of failed sign-ins stops credential stuffing from many IPs, but
//! it is shared by everyone who names the address, so strangers could spend it and keep the
//! owner out for the whole window. A sign-in from a browser that signed in to the account
//! before is counted in a budget of its own (per device and address, see
//! [`crate::rate_limit::RateLimiter::check_login`]), so the owner's browser gets in while the
//! address is refused to everyone else.
//!
//! The cookie is `v1.<device id>.<entry>[.<entry>…]`: a random 128-bit device id and, per
//! account (at most [`MAX_ACCOUNTS`], newest first), an entry `<tag>~<password version>`, the
//! tag being the first 128 bits of HMAC-SHA256(key, device id ‖ 0 ‖ address key ‖ 0 ‖ password
//! version), the key derived from `TOKEN_SECRETS` (the first signs, every one verifies, so
//! rotation keeps devices recognised). A tag binds the device to one address without naming it;
//! a forged cookie, a tag of another account, or a tag moved to another device id verifies for
//! nothing and counts as no device. The password version it carries is compared with the
//! account's once the account is read (a sign-in reads it anyway): a reset or a lock bumps the
//! version, so every browser recognised before (an intruder's included, in the "this wasn't
//! me" case) is a stranger again, and the browser that reset gets a fresh entry. Until then a
//! stolen cookie is worth one small budget of guesses ([`RATE_LIMIT_LOGIN_DEVICE_PER_HOUR`]),
//! no more.
//!
//! [`RATE_LIMIT_LOGIN_DEVICE_PER_HOUR`]: crate::config::Config::login_device_limit_per_hour

use axum::http::{HeaderMap, HeaderValue};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The cookie's name when it is `Secure` (the `__Host-` prefix makes browsers refuse it from
/// a subdomain or without `Secure` and `Path=/`, so no sibling site can plant one).
pub const SECURE_COOKIE_NAME: &str = "__Host-device";
/// The cookie's name over plain http (local development only).
pub const PLAIN_COOKIE_NAME: &str = "device";
/// Accounts one browser is recognised for (the most recently signed-in ones).
pub const MAX_ACCOUNTS: usize = 5;
/// How long a browser stays recognised without signing in again (browsers cap cookies at
/// 400 days).
pub const COOKIE_MAX_AGE_SECS: u64 = 365 * 86_400;

const KEY_LABEL: &str = "pwrecovery/device-cookie/v1";
const VERSION: &str = "v1";
const ID_BYTES: usize = 16;
const TAG_BYTES: usize = 16;
/// A cookie value longer than this is not ours (five entries take about 160 characters).
const MAX_VALUE_LEN: usize = 512;

/// Issues and recognises device cookies.
#[derive(Clone)]
pub struct Devices {
    /// One derived key per `TOKEN_SECRETS` entry; the first signs.
    keys: Vec<Vec<u8>>,
    secure: bool,
}

/// A device cookie's parts (read, not yet verified for any account).
struct Cookie {
    id: String,
    entries: Vec<Entry>,
}

/// One account's entry: its tag and the password version it was issued under.
struct Entry {
    tag: Vec<u8>,
    password_version: i32,
}

impl Entry {
    fn parse(text: &str) -> Option<Self> {
        let (tag, version) = text.split_once('~')?;
        let tag = B64.decode(tag).ok().filter(|t| t.len() == TAG_BYTES)?;
        Some(Self {
            tag,
            password_version: version.parse().ok()?,
        })
    }

    fn write(&self) -> String {
        format!("{}~{}", B64.encode(&self.tag), self.password_version)
    }
}

/// A browser that signed in to the account before, as its cookie claims; the claim holds once
/// `password_version` is the account's current one (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognised {
    pub id: String,
    pub password_version: i32,
}

/// Who a request just proved to be (by the account's password, or by its mailbox): the
/// account's address key and its password version now, what its device entry is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub email_key: String,
    pub password_version: i32,
}

impl Devices {
    /// Devices whose tags are keyed by `token_secrets` (see the module's notes).
    pub fn new(token_secrets: &[Vec<u8>], secure: bool) -> Self {
        Self {
            keys: token_secrets
                .iter()
                .map(|s| shared::config::derive_key(s, KEY_LABEL))
                .collect(),
            secure,
        }
    }

    /// The cookie's name under this configuration.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE_NAME
        } else {
            PLAIN_COOKIE_NAME
        }
    }

    /// The request's device, if its cookie says it signed in to the address with key
    /// `email_key` before (with the password version it did so under, still to be compared
    /// with the account's); `None` for no cookie, a forged one and another account's.
    pub fn recognise(&self, headers: &HeaderMap, email_key: &str) -> Option<Recognised> {
        let cookie = self.read(headers)?;
        let entry = cookie
            .entries
            .iter()
            .find(|entry| self.verifies(&cookie.id, email_key, entry))?;
        Some(Recognised {
            id: cookie.id.clone(),
            password_version: entry.password_version,
        })
    }

    /// Whether `entry` was issued to device `id` for the address with key `email_key`.
    fn verifies(&self, id: &str, email_key: &str, entry: &Entry) -> bool {
        self.keys.iter().any(|key| {
            mac(key, id, email_key, entry.password_version)
                .verify_truncated_left(&entry.tag)
                .is_ok()
        })
    }

    /// The `Set-Cookie` value that adds the address with key `email_key`, under its password
    /// version `password_version`, to the request's device cookie (replacing that account's
    /// older entry; a new device id when the request had no cookie that reads as ours).
    pub fn issue(
        &self,
        headers: &HeaderMap,
        email_key: &str,
        password_version: i32,
    ) -> HeaderValue {
        let cookie = self.read(headers).unwrap_or_else(|| Cookie {
            id: B64.encode(rand::random::<[u8; ID_BYTES]>()),
            entries: Vec::new(),
        });
        let signing_key = self.keys.first().map_or(&[][..], Vec::as_slice);
        let tag = mac(signing_key, &cookie.id, email_key, password_version)
            .finalize()
            .into_bytes();
        let fresh = Entry {
            tag: tag[..TAG_BYTES].to_vec(),
            password_version,
        };
        let mut entries = vec![fresh.write()];
        entries.extend(
            cookie
                .entries
                .iter()
                .filter(|entry| !self.verifies(&cookie.id, email_key, entry))
                .map(Entry::write),
        );
        entries.truncate(MAX_ACCOUNTS);
        let value = format!("{VERSION}.{}.{}", cookie.id, entries.join("."));
        let secure = if self.secure { "; Secure" } else { "" };
        let header = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={COOKIE_MAX_AGE_SECS}{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&header)
            .unwrap_or_else(|_| HeaderValue::from_static("device=; Max-Age=0"))
    }

    /// The request's device cookie, if it has the shape of one of ours.
    fn read(&self, headers: &HeaderMap) -> Option<Cookie> {
        let value = crate::extract::cookie(headers, self.cookie_name())?;
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut parts = value.split('.');
        if parts.next()? != VERSION {
            return None;
        }
        let id = parts.next()?;
        if B64.decode(id).ok()?.len() != ID_BYTES {
            return None;
        }
        let entries: Vec<Entry> = parts.filter_map(Entry::parse).take(MAX_ACCOUNTS).collect();
        Some(Cookie {
            id: id.to_owned(),
            entries,
        })
    }
}

/// Tells the owner of a sign-in from a browser new to the account (no entry of the account in
/// its device cookie, under any password version): a security notice with the device's name,
/// its network and the "this wasn't me" link. At most one a day per device: the cookie's device
/// id when it has one, else its name and network (a client that keeps no cookies would
/// otherwise get a notice at every sign-in). Best effort: a failure is logged, the sign-in
/// stands.
pub(crate) async fn tell_if_new(
    state: &crate::state::AppState,
    ctx: &crate::extract::RequestContext,
    headers: &HeaderMap,
    account: &crate::routes::sessions::SignedIn<'_>,
    origin: &crate::sessions::Origin,
) {
    use sha2::Digest as _;
    if state
        .devices
        .recognise(headers, account.email_key)
        .is_some()
    {
        return;
    }
    let user = account.credentials.id;
    let device = match state.devices.read(headers) {
        Some(cookie) => format!("cookie\0{}", cookie.id),
        None => format!("origin\0{}\0{}", origin.device, origin.network),
    };
    let key = (state.redis.keys()).new_device_notice(user, &hex::encode(Sha256::digest(device)));
    let first_today = state
        .redis
        .run(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(NEW_DEVICE_NOTICE_EVERY_SECS)
                .query_async::<Option<String>>(&mut c)
                .await
        })
        .await;
    match first_today {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not check for a new-sign-in notice today");
            return;
        }
    }
    let event = shared::message::SecurityEvent::NewSignIn {
        device: origin.device.clone(),
        ip_prefix: Some(origin.network.clone()),
    };
    let queued = async {
        let mut tx = state.db.begin().await?;
        let version = account.credentials.password_version;
        crate::mfa::notice(&mut tx, state, ctx, user, account.email, version, event).await?;
        tx.commit().await
    }
    .await;
    match queued {
        Ok(()) => {
            state.outbox.wake();
            metrics::counter!("new_device_notices_total").increment(1);
        }
        Err(e) => tracing::warn!(error = %e, "could not queue a new-sign-in notice"),
    }
}

/// How often one device can cause a new-sign-in notice.
const NEW_DEVICE_NOTICE_EVERY_SECS: u64 = 86_400;

/// The MAC that binds a device id to an address key and a password version.
fn mac(key: &[u8], device_id: &str, email_key: &str, password_version: i32) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(email_key.as_bytes());
    mac.update(b"\0");
    mac.update(&password_version.to_be_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    fn devices(secrets: &[&str]) -> Devices {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        Devices::new(&secrets, true)
    }

    /// The request headers a browser sends back after `set_cookie`.
    fn sent_back(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair");
        cookie_header(pair)
    }

    fn cookie_header(pair: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(pair).expect("value"));
        h
    }

    fn value(h: &HeaderMap) -> String {
        crate::extract::cookie(h, SECURE_COOKIE_NAME).expect("cookie")
    }

    const A: &str = "first secret of at least thirty-two bytes!";
    const B: &str = "second secret of at least thirty-two bytes";
    const OWNER: &str = "owner@example.org";

    #[test]
    fn a_browser_is_recognised_for_the_accounts_it_signed_in_to_and_no_other() {
        let d = devices(&[A]);
        let h = sent_back(&d.issue(&HeaderMap::new(), OWNER, 3));
        let seen = d.recognise(&h, OWNER).expect("recognised");
        assert_eq!(seen.password_version, 3);
        assert_eq!(d.recognise(&h, "other@example.org"), None);
        // A second account on the same browser keeps the device and the first account.
        let h = sent_back(&d.issue(&h, "other@example.org", 1));
        assert_eq!(d.recognise(&h, OWNER), Some(seen.clone()));
        let other = d.recognise(&h, "other@example.org").expect("recognised");
        assert_eq!((other.id, other.password_version), (seen.id, 1));
    }

    #[test]
    fn a_new_password_version_replaces_the_accounts_entry() {
        let d = devices(&[A]);
        let h = sent_back(&d.issue(&HeaderMap::new(), OWNER, 3));
        let h = sent_back(&d.issue(&h, OWNER, 4));
        assert_eq!(d.recognise(&h, OWNER).map(|r| r.password_version), Some(4));
        assert_eq!(value(&h).split('.').count(), 3, "one entry for the account");
    }

    #[test]
    fn the_cookie_is_httponly_lax_secure_host_prefixed_and_long_lived() {
        let c = devices(&[A]).issue(&HeaderMap::new(), OWNER, 1);
        let c = c.to_str().expect("ascii");
        assert!(c.starts_with("__Host-device=v1."), "{c}");
        assert!(c.ends_with(&format!(
            "; Path=/; HttpOnly; SameSite=Lax; Max-Age={COOKIE_MAX_AGE_SECS}; Secure"
        )));
        assert!(!c.contains("example"), "the cookie names no address: {c}");
    }

    #[test]
    fn forged_moved_relabelled_and_foreign_entries_count_as_no_device() {
        let d = devices(&[A]);
        let h = sent_back(&d.issue(&HeaderMap::new(), OWNER, 1));
        let value = value(&h);
        let parts: Vec<&str> = value.split('.').collect();
        let with = |v: String| cookie_header(&format!("{SECURE_COOKIE_NAME}={v}"));
        // The entry moved to another device id.
        let other_id = B64.encode([7u8; ID_BYTES]);
        assert_eq!(
            d.recognise(&with(format!("v1.{other_id}.{}", parts[2])), OWNER),
            None
        );
        // An entry of the right shape that nobody signed.
        let forged = B64.encode([9u8; TAG_BYTES]);
        assert_eq!(
            d.recognise(&with(format!("v1.{}.{forged}~1", parts[1])), OWNER),
            None
        );
        // The right tag claiming a newer password version.
        let tag = parts[2].split('~').next().expect("tag");
        assert_eq!(
            d.recognise(&with(format!("v1.{}.{tag}~2", parts[1])), OWNER),
            None
        );
        // Signed by a server with another secret.
        assert_eq!(devices(&[B]).recognise(&h, OWNER), None);
        // Junk.
        for junk in ["", "v1", "v2.x.y", "v1..", "v1.a.b~c", &"v1.".repeat(200)] {
            assert_eq!(d.recognise(&with(junk.to_owned()), OWNER), None, "{junk}");
        }
    }

    #[test]
    fn an_old_secret_still_recognises_after_rotation_and_the_list_is_bounded() {
        let old = devices(&[A]);
        let h = sent_back(&old.issue(&HeaderMap::new(), OWNER, 1));
        let rotated = devices(&[B, A]);
        assert!(rotated.recognise(&h, OWNER).is_some());
        let mut h = h;
        for i in 0..10 {
            h = sent_back(&rotated.issue(&h, &format!("user{i}@example.org"), 1));
        }
        assert_eq!(value(&h).split('.').count(), 2 + MAX_ACCOUNTS);
        assert!(rotated.recognise(&h, "user9@example.org").is_some());
        assert!(
            rotated.recognise(&h, OWNER).is_none(),
            "the oldest fell off"
        );
    }
}
