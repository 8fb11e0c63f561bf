//! `SMTP_URL`: the forms lettre's `AsyncSmtpTransport::from_url` accepts, with its default ports
//! and credential handling, parsed into an [`Endpoint`].

use std::borrow::Cow;

use lettre::transport::smtp::{
    SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, authentication::Credentials, extension::ClientId,
};
use url::{Host, Url};

/// Where and how to reach the SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// DNS name or IP address (IPv6 without brackets); also the name the TLS certificate must carry.
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The name sent with `EHLO`: the URL's path if it has one, else this machine's host name.
    pub hello_name: ClientId,
    /// Only when the URL has a password, as lettre does (`smtp://user@host` sends no AUTH).
    pub credentials: Option<Credentials>,
}

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://host:port`: never encrypted (default port 25).
    Plain,
    /// `smtp://host?tls=required` (STARTTLS or fail) or `?tls=opportunistic` (STARTTLS when the
    /// server offers it); default port 587.
    StartTls { required: bool },
    /// `smtps://host`: TLS from the first byte; default port 465.
    Implicit,
}

/// Why an `SMTP_URL` cannot be used. The text never contains the URL itself, which may hold a
/// password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not a URL ({0})")]
    Syntax(url::ParseError),
    #[error("no host name")]
    NoHost,
    #[error(
        "unknown scheme {scheme:?} or tls={tls:?}: expected smtp://host:port, \
         smtp://host:587?tls=required, smtp://host:587?tls=opportunistic or smtps://host:465"
    )]
    Form { scheme: String, tls: Option<String> },
    #[error("the user name or password is not UTF-8 once percent-decoded")]
    Credentials,
}

impl Endpoint {
    /// Parses `scheme://user:pass@host:port/ehlo-name?tls=...`.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = Url::parse(text).map_err(UrlError::Syntax)?;
        let tls = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, SMTP_PORT),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, SUBMISSION_PORT),
            ("smtp", Some("opportunistic")) => {
                (Security::StartTls { required: false }, SUBMISSION_PORT)
            }
            // lettre ignores `tls=` on smtps: the connection is encrypted from the start anyway.
            ("smtps", _) => (Security::Implicit, SUBMISSIONS_PORT),
            (scheme, tls) => {
                return Err(UrlError::Form {
                    scheme: scheme.to_owned(),
                    tls: tls.map(str::to_owned),
                });
            }
        };
        let host = match url.host() {
            None => return Err(UrlError::NoHost),
            Some(Host::Domain("")) => return Err(UrlError::NoHost),
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
        };
        let hello_name = if url.path().len() > 1 {
            ClientId::Domain(url.path().trim_matches('/').to_owned())
        } else {
            ClientId::default()
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(url.username())?,
                percent_decode(password)?,
            )),
            None => None,
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            hello_name,
            credentials,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, UrlError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| UrlError::Credentials)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Endpoint {
        Endpoint::parse(text).unwrap()
    }

    #[test]
    fn plain_smtp_defaults_to_port_25_without_auth() {
        let e = parse("smtp://mail.example.org");
        assert_eq!(e.host, "mail.example.org");
        assert_eq!(e.port, 25);
        assert_eq!(e.security, Security::Plain);
        assert_eq!(e.credentials, None);
        assert_eq!(e.hello_name, ClientId::default());
        assert_eq!(parse("smtp://127.0.0.1:1025").port, 1025);
    }

    #[test]
    fn starttls_forms_default_to_the_submission_port() {
        let e = parse("smtp://mail.example.org?tls=required");
        assert_eq!(
            (e.port, e.security),
            (587, Security::StartTls { required: true })
        );
        let e = parse("smtp://mail.example.org:2525?tls=opportunistic");
        assert_eq!(
            (e.port, e.security),
            (2525, Security::StartTls { required: false })
        );
    }

    #[test]
    fn smtps_is_implicit_tls_on_port_465_whatever_tls_says() {
        let e = parse("smtps://mail.example.org");
        assert_eq!((e.port, e.security), (465, Security::Implicit));
        let e = parse("smtps://mail.example.org:2465?tls=opportunistic");
        assert_eq!((e.port, e.security), (2465, Security::Implicit));
    }

    #[test]
    fn credentials_are_percent_decoded_and_need_a_password() {
        let e = parse("smtps://api%20key:p%40ss%3Aw%2Frd@mail.example.org");
        assert_eq!(
            e.credentials,
            Some(Credentials::new("api key".into(), "p@ss:w/rd".into()))
        );
        assert_eq!(parse("smtp://apikey@mail.example.org").credentials, None);
        assert_eq!(
            parse("smtp://:secret@mail.example.org").credentials,
            Some(Credentials::new(String::new(), "secret".into()))
        );
    }

    #[test]
    fn the_path_names_the_client_in_ehlo() {
        let e = parse("smtp://mail.example.org:25/worker.example.com");
        assert_eq!(e.hello_name, ClientId::Domain("worker.example.com".into()));
    }

    #[test]
    fn ip_hosts_are_kept_without_brackets() {
        assert_eq!(parse("smtp://[::1]:1025").host, "::1");
        assert_eq!(parse("smtps://192.0.2.7").host, "192.0.2.7");
    }

    #[test]
    fn bad_forms_are_refused_with_a_reason() {
        let error = |text: &str| Endpoint::parse(text).unwrap_err();
        assert!(matches!(
            error("smtp://mail.example.org?tls=always"),
            UrlError::Form { tls: Some(t), .. } if t == "always"
        ));
        assert!(matches!(
            error("smtp://mail.example.org?tls=none"),
            UrlError::Form { .. }
        ));
        assert!(
            matches!(error("http://mail.example.org"), UrlError::Form { scheme, .. } if scheme == "http")
        );
        assert!(matches!(
            error("mail.example.org:25"),
            UrlError::Form { .. }
        ));
        assert_eq!(error("smtp://"), UrlError::NoHost);
        assert_eq!(error("smtp:relay"), UrlError::NoHost);
        assert!(matches!(
            error("smtp://mail.example.org:99999"),
            UrlError::Syntax(_)
        ));
        assert!(matches!(error("not a url"), UrlError::Syntax(_)));
        assert_eq!(
            error("smtp://user:%FF%FE@mail.example.org"),
            UrlError::Credentials
        );
    }

    #[test]
    fn refusals_never_echo_the_password() {
        for text in [
            "smtp://user:hunter2@mail.example.org?tls=bogus",
            "ftp://user:hunter2@mail.example.org",
            "smtp://user:hunter2%FF@mail.example.org",
            "smtp://user:hunter2@mail.example.org:70000",
        ] {
            let message = Endpoint::parse(text).unwrap_err().to_string();
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
