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
//! The cookie is `v1.<device id>.<tag>[.<tag>…]`: a random 128-bit device id and, per account
//! (at most [`MAX_ACCOUNTS`], newest first), a tag = the first 128 bits of
//! HMAC-SHA256(key, device id ‖ 0 ‖ address key), the key derived from `TOKEN_SECRETS` (the
//! first signs, every one verifies, so rotation keeps devices recognised). A tag binds the
//! device to one address without naming it; a forged cookie, a tag of another account, or a
//! tag moved to another device id verifies for nothing and counts as no device. A stolen
//! cookie is worth one small budget of guesses ([`RATE_LIMIT_LOGIN_DEVICE_PER_HOUR`]), no more.
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
/// A cookie value longer than this is not ours (five tags take about 140 characters).
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
    tags: Vec<String>,
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

    /// The device id of the request's cookie, if it signed in to the address with key
    /// `email_key` before; `None` for no cookie, a forged one and another account's.
    pub fn recognise(&self, headers: &HeaderMap, email_key: &str) -> Option<String> {
        let cookie = self.read(headers)?;
        let recognised = cookie.tags.iter().any(|tag| {
            let Ok(tag) = B64.decode(tag) else {
                return false;
            };
            self.keys.iter().any(|key| {
                mac(key, &cookie.id, email_key)
                    .verify_truncated_left(&tag)
                    .is_ok()
            })
        });
        recognised.then_some(cookie.id)
    }

    /// The `Set-Cookie` value that adds the address with key `email_key` to the request's
    /// device cookie (a new device id when the request had none that reads as ours).
    pub fn issue(&self, headers: &HeaderMap, email_key: &str) -> HeaderValue {
        let cookie = self.read(headers).unwrap_or_else(|| Cookie {
            id: B64.encode(rand::random::<[u8; ID_BYTES]>()),
            tags: Vec::new(),
        });
        let signing_key = self.keys.first().map_or(&[][..], Vec::as_slice);
        let tag = mac(signing_key, &cookie.id, email_key)
            .finalize()
            .into_bytes();
        let tag = B64.encode(&tag[..TAG_BYTES]);
        let mut tags = vec![tag.clone()];
        tags.extend(cookie.tags.into_iter().filter(|t| *t != tag));
        tags.truncate(MAX_ACCOUNTS);
        let value = format!("{VERSION}.{}.{}", cookie.id, tags.join("."));
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
        let tags: Vec<String> = parts
            .filter(|t| B64.decode(t).is_ok_and(|b| b.len() == TAG_BYTES))
            .take(MAX_ACCOUNTS)
            .map(str::to_owned)
            .collect();
        Some(Cookie {
            id: id.to_owned(),
            tags,
        })
    }
}

/// The MAC that binds a device id to an address key.
fn mac(key: &[u8], device_id: &str, email_key: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(email_key.as_bytes());
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
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(pair).expect("value"));
        h
    }

    const A: &str = "first secret of at least thirty-two bytes!";
    const B: &str = "second secret of at least thirty-two bytes";

    #[test]
    fn a_browser_is_recognised_for_the_accounts_it_signed_in_to_and_no_other() {
        let d = devices(&[A]);
        let first = d.issue(&HeaderMap::new(), "owner@example.org");
        let h = sent_back(&first);
        let id = d.recognise(&h, "owner@example.org").expect("recognised");
        assert_eq!(d.recognise(&h, "other@example.org"), None);
        // A second account on the same browser keeps the device and the first account.
        let h = sent_back(&d.issue(&h, "other@example.org"));
        assert_eq!(
            d.recognise(&h, "owner@example.org").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            d.recognise(&h, "other@example.org").as_deref(),
            Some(id.as_str())
        );
    }

    #[test]
    fn the_cookie_is_httponly_lax_secure_host_prefixed_and_long_lived() {
        let c = devices(&[A]).issue(&HeaderMap::new(), "owner@example.org");
        let c = c.to_str().expect("ascii");
        assert!(c.starts_with("__Host-device=v1."), "{c}");
        assert!(c.ends_with(&format!(
            "; Path=/; HttpOnly; SameSite=Lax; Max-Age={COOKIE_MAX_AGE_SECS}; Secure"
        )));
        assert!(!c.contains("example"), "the cookie names no address: {c}");
    }

    #[test]
    fn forged_moved_and_foreign_tags_count_as_no_device() {
        let d = devices(&[A]);
        let h = sent_back(&d.issue(&HeaderMap::new(), "owner@example.org"));
        let value = crate::extract::cookie(&h, SECURE_COOKIE_NAME).expect("cookie");
        let parts: Vec<&str> = value.split('.').collect();
        let with = |v: String| {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{SECURE_COOKIE_NAME}={v}")).expect("value"),
            );
            h
        };
        // The tag moved to another device id.
        let other_id = B64.encode([7u8; ID_BYTES]);
        assert_eq!(
            d.recognise(
                &with(format!("v1.{other_id}.{}", parts[2])),
                "owner@example.org"
            ),
            None
        );
        // A tag of the right shape that nobody signed.
        let forged = B64.encode([9u8; TAG_BYTES]);
        assert_eq!(
            d.recognise(
                &with(format!("v1.{}.{forged}", parts[1])),
                "owner@example.org"
            ),
            None
        );
        // Signed by a server with another secret.
        assert_eq!(devices(&[B]).recognise(&h, "owner@example.org"), None);
        // Junk.
        for junk in ["", "v1", "v2.x.y", "v1..", &"v1.".repeat(200)] {
            assert_eq!(
                d.recognise(&with(junk.to_owned()), "owner@example.org"),
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn an_old_secret_still_recognises_after_rotation_and_the_list_is_bounded() {
        let old = devices(&[A]);
        let h = sent_back(&old.issue(&HeaderMap::new(), "owner@example.org"));
        let rotated = devices(&[B, A]);
        assert!(rotated.recognise(&h, "owner@example.org").is_some());
        let mut h = h;
        for i in 0..10 {
            h = sent_back(&rotated.issue(&h, &format!("user{i}@example.org")));
        }
        let value = crate::extract::cookie(&h, SECURE_COOKIE_NAME).expect("cookie");
        assert_eq!(value.split('.').count(), 2 + MAX_ACCOUNTS);
        assert!(rotated.recognise(&h, "user9@example.org").is_some());
        assert!(
            rotated.recognise(&h, "owner@example.org").is_none(),
            "the oldest fell off"
        );
    }
}
