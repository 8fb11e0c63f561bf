//! Request extractors: JSON bodies with our error shape, the request's context (client IP,
//! locale, trace) and the authenticated user.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use ipnet::IpNet;
use shared::{locale::Locale, message::Trace};

use crate::{error::ApiError, sessions, state::AppState, store::users::User};

/// `Json<T>` whose rejections answer with our error shape: 415 for a missing JSON content
/// type, 413 over the body limit, 400 for malformed JSON, 422 for well-formed JSON that is
/// not an object with the expected fields.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        // serde would happily read a struct from an array (`["a@b.c"]`); the contract is an
        // object, so anything else is refused.
        if !value.is_object() {
            return Err(ApiError::InvalidBody("expected a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(AppJson)
            .map_err(|e| ApiError::InvalidBody(clip(&e.to_string())))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(clip(&e.body_text())),
            JsonRejection::JsonDataError(e) => ApiError::InvalidBody(clip(&e.body_text())),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::MalformedJson(clip(&other.body_text())),
        }
    }
}

/// Keeps error messages short: they may quote the client's own input back.
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Who asks, in which language, under which ids: what every handler that acts on a request
/// needs beside its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The client's IP: the socket peer, or the forwarded address when the peer is a trusted
    /// proxy (see [`client_ip`]). Headers from anyone else are ignored, so a client cannot
    /// pick its own rate-limit bucket by sending `X-Forwarded-For`.
    pub ip: IpAddr,
    /// The language of the pages and emails of this request, from `Accept-Language`.
    pub locale: Locale,
    /// Every language `Accept-Language` asks for, most wanted first (see
    /// [`shared::locale::preferences`]); jobs carry them to the worker.
    pub languages: Vec<String>,
    /// Correlation ids: our `x-request-id` (set by the request-id layer) and the caller's W3C
    /// `traceparent`, copied into every job so logs can be joined across services.
    pub trace: Trace,
}

impl RequestContext {
    /// Our id of the request (audit rows carry it).
    pub fn request_id(&self) -> Option<&str> {
        self.trace.request_id.as_deref()
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("server started without connect info"))
            })?;
        let headers = &parts.headers;
        Ok(RequestContext {
            ip: client_ip(peer, headers, &state.config.trusted_proxies),
            locale: locale(headers),
            languages: shared::locale::preferences(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
            trace: trace(headers),
        })
    }
}

/// Resolves the client address from the peer and `X-Forwarded-For`, trusting only `trusted`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Walk the chain from the nearest hop outwards; the first address that is not one of our
    // proxies is the client. Everything left of it was written by the client and is ignored.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(&client) {
                    break;
                }
            }
            // A garbled entry: stop at the last address a trusted proxy vouched for.
            Err(_) => break,
        }
    }
    client
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The language of the request's pages and emails, from `Accept-Language` (see
/// [`Locale::negotiate`]).
pub fn locale(headers: &HeaderMap) -> Locale {
    let header = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Locale::negotiate(header)
}

/// The signed-in user, from `Authorization: Bearer …` or the session cookie.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session: sessions::SessionToken,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let raw = bearer(&parts.headers)
            .or_else(|| {
                let name = sessions::cookie_name(state.config.cookie_secure);
                cookie(&parts.headers, name)
            })
            // Sessions opened before the cookie got its `__Host-` name keep working until
            // they expire (`SESSION_TTL_SECS`); only ever the prefixed one is set now. Drop
            // this once every such session has expired.
            .or_else(|| cookie(&parts.headers, sessions::PLAIN_COOKIE_NAME))
            .ok_or(ApiError::Unauthorized)?;
        let session = sessions::SessionToken::parse(&raw).ok_or(ApiError::Unauthorized)?;
        let Some(pv) = state.sessions.lookup(&session, state.clock.now()).await? else {
            return Err(ApiError::Unauthorized);
        };
        let user = crate::store::users::by_id(&state.db, session.user)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        // A session dies with the password it was created under, even if its revocation in
        // Redis was missed; and no session of an unverified account counts (sign-in requires
        // a verified address, so only sessions from before that rule can be affected).
        if user.password_version != pv || !user.email_verified {
            return Err(ApiError::Unauthorized);
        }
        Ok(AuthUser { user, session })
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The value of the request's cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// The request's correlation ids: our `x-request-id` and a `traceparent`. When spans are
/// exported, the request's server span's (its jobs' spans are its children); otherwise the
/// caller's when it sent a valid one, else a trace whose id is our request id, so a reset can
/// be followed from HTTP to SMTP either way.
fn trace(headers: &HeaderMap) -> Trace {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned)
    };
    let request_id = get("x-request-id");
    if let Some(traceparent) = shared::otel::traceparent(&tracing::Span::current()) {
        return Trace {
            request_id,
            traceparent: Some(traceparent),
        };
    }
    let traceparent = get("traceparent")
        .filter(|t| valid_traceparent(t))
        .or_else(|| {
            let trace_id = request_id.as_deref()?.replace('-', "");
            (trace_id.len() == 32)
                .then(|| format!("00-{trace_id}-{:016x}-01", rand::random::<u64>()))
        });
    Trace {
        request_id,
        traceparent,
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub(crate) fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            client_ip(ip("203.0.113.5"), &xff("1.2.3.4"), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("203.0.113.5"), &xff("1.2.3.4"), &[]),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn a_trusted_proxy_chain_yields_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let h = xff("6.6.6.6, 198.51.100.7, 10.1.1.1");
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("198.51.100.7"));
        // No header: the proxy itself is the client.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last vouched-for address.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("1.1.1.1, nonsense"), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_are_treated_as_ipv4() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().expect("net")];
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &xff("192.0.2.1"), &trusted),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn only_well_formed_traceparents_are_continued() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("garbage\r\nheader: injected"));
    }

    #[test]
    fn session_tokens_come_from_bearer_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("abc.def"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "session").as_deref(), Some("xyz"));
    }
}
