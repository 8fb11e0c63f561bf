//! Breached passwords (OWASP ASVS 6.2.12): a new password that appears in the Pwned Passwords
//! corpus is refused at sign-up, reset and password change. The corpus is read by range, the
//! first five hex digits of the password's SHA-1 (k-anonymity: about a million passwords share
//! a range, and the rest of the digest never leaves the process), either
//!
//! - from range files, laid out as the official downloader writes them
//!   (`PWNED_PASSWORDS_DIR`: one file per range, `ABCDE` or `ABCDE.txt`, each line
//!   `SUFFIX:COUNT`): nothing about a password leaves the machine; or
//! - from the range API (`PWNED_PASSWORDS_URL`, the range appended: `…/range/ABCDE`), asked
//!   with `Add-Padding: true` so the answer's size does not tell the range either.
//!
//! A line with count 0 is padding, not a breach.
//!
//! A range that cannot be read in time (`PWNED_PASSWORDS_TIMEOUT_MS`) is a failure of the
//! check, not a verdict: `PWNED_PASSWORDS_FAIL=open` (the default) accepts the password and
//! counts it, `closed` answers 503 so that no password goes unchecked.

use std::{path::PathBuf, time::Duration};

use sha1::{Digest as _, Sha1};

use crate::error::ApiError;

/// What a range says about a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Breached,
    Clean,
}

/// Where the ranges come from.
#[derive(Debug, Clone)]
pub enum Corpus {
    /// Range files (`PWNED_PASSWORDS_DIR`).
    Files(PathBuf),
    /// A range API (`PWNED_PASSWORDS_URL`): the base the range is appended to.
    Api {
        base: String,
        client: reqwest::Client,
    },
}

impl Corpus {
    /// The range API at `base`, trusting the system's roots and `extra` (`TLS_CA_FILE`).
    pub fn api(
        base: &str,
        extra: &[rustls_pki_types::CertificateDer<'static>],
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("password-recovery-api/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(base.starts_with("https://"));
        for der in extra {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
        }
        Ok(Corpus::Api {
            base: base.to_owned(),
            client: builder.build()?,
        })
    }
}

/// The check, as configured.
#[derive(Debug, Clone)]
pub struct BreachedPasswords {
    corpus: Option<Corpus>,
    timeout: Duration,
    fail_closed: bool,
}

impl BreachedPasswords {
    /// `corpus`: where ranges come from, `None` for no check.
    pub fn new(corpus: Option<Corpus>, timeout: Duration, fail_closed: bool) -> Self {
        Self {
            corpus,
            timeout,
            fail_closed,
        }
    }

    /// Refuses `password` when the corpus lists it (`422 breached_password`); a range that
    /// cannot be read is a 503 when the check fails closed, and passes otherwise.
    pub async fn refuse_breached(&self, password: &str) -> Result<(), ApiError> {
        let Some(corpus) = &self.corpus else {
            return Ok(());
        };
        let (prefix, suffix) = range_of(password);
        let range = async {
            match corpus {
                Corpus::Files(dir) => read_file(dir.clone(), prefix).await,
                Corpus::Api { base, client } => fetch(client, base, &prefix).await,
            }
        };
        let looked_up = tokio::time::timeout(self.timeout, range).await;
        let verdict = match looked_up {
            Ok(Ok(text)) => verdict(&text, &suffix),
            failed => {
                let error = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("no answer within {} ms", self.timeout.as_millis()),
                };
                metrics::counter!("breached_password_checks_total", "result" => "unavailable")
                    .increment(1);
                tracing::warn!(%error, fail_closed = self.fail_closed, "breached-password range unreadable");
                if self.fail_closed {
                    return Err(ApiError::unavailable(anyhow::anyhow!(
                        "breached-password check: {error}"
                    )));
                }
                return Ok(());
            }
        };
        let label = match verdict {
            Verdict::Breached => "breached",
            Verdict::Clean => "clean",
        };
        metrics::counter!("breached_password_checks_total", "result" => label).increment(1);
        match verdict {
            Verdict::Breached => Err(ApiError::BreachedPassword),
            Verdict::Clean => Ok(()),
        }
    }
}

/// The range (first five hex digits of the SHA-1, upper case) and the rest of the digest.
pub fn range_of(password: &str) -> (String, String) {
    let digest = hex::encode_upper(Sha1::digest(password.as_bytes()));
    let (prefix, suffix) = digest.split_at(5);
    (prefix.to_owned(), suffix.to_owned())
}

/// Asks the range API for the range `prefix` (and nothing else: no header, body or query
/// names anything of the password).
async fn fetch(client: &reqwest::Client, base: &str, prefix: &str) -> anyhow::Result<String> {
    let url = format!("{base}{prefix}");
    let response = client
        .get(&url)
        .header("Add-Padding", "true")
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "range {prefix}: the range API answered {status}"
    );
    Ok(response.text().await?)
}

/// Reads the range file of `prefix`.
async fn read_file(dir: PathBuf, prefix: String) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let plain = dir.join(&prefix);
    let text = match tokio::fs::read_to_string(&plain).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let with_extension = dir.join(format!("{prefix}.txt"));
            tokio::fs::read_to_string(&with_extension)
                .await
                .with_context(|| format!("range {prefix} (neither {prefix} nor {prefix}.txt)"))?
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("range {prefix}"))),
    };
    Ok(text)
}

/// Whether the range `text` lists `suffix` (any case) with a count above 0.
pub fn verdict(text: &str, suffix: &str) -> Verdict {
    let listed = text.lines().any(|line| {
        let mut parts = line.trim().split(':');
        let (Some(s), Some(count)) = (parts.next(), parts.next()) else {
            return false;
        };
        s.eq_ignore_ascii_case(suffix) && count.trim().parse::<u64>().is_ok_and(|n| n > 0)
    });
    if listed {
        Verdict::Breached
    } else {
        Verdict::Clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_the_first_five_hex_digits_of_the_sha1() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let (prefix, suffix) = range_of("password");
        assert_eq!(prefix, "5BAA6");
        assert_eq!(suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
    }

    #[test]
    fn a_listed_suffix_is_a_breach_and_padding_is_not() {
        let range = "0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n\
                     1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n\
                     00D4F6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n";
        let breached = "1e4c9b93f3f0682250b6cf8331b7ee68fd8";
        assert_eq!(verdict(range, breached), Verdict::Breached);
        assert_eq!(
            verdict(range, "00D4F6E8FA6EECAD2A3AA415EEC418D38EC"),
            Verdict::Clean
        );
        assert_eq!(
            verdict(range, "FFFFF6E8FA6EECAD2A3AA415EEC418D38EC"),
            Verdict::Clean
        );
        assert_eq!(verdict("garbage\n:\n", breached), Verdict::Clean);
    }
}
