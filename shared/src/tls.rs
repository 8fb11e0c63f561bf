//! What every TLS client of both services trusts: the Mozilla root set compiled into the
//! binaries (webpki roots) plus the private CAs of `TLS_CA_FILE`. PostgreSQL (sqlx), Redis
//! (node, cluster, sentinel), RabbitMQ (lapin) and SMTP (lettre and the worker's own
//! implicit-TLS connector) all get the same set from here, so one file configures them all
//! and no client reads the operating system's store (the images carry none).

use std::{path::Path, sync::Arc};

use base64::Engine;
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// The private CAs trusted in addition to the webpki roots (`TLS_CA_FILE`); empty when unset.
#[derive(Clone, Default)]
pub struct Trust {
    extra: Arc<Vec<CertificateDer<'static>>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust({} extra CA certificates)", self.extra.len())
    }
}

impl Trust {
    /// Reads the PEM certificates of `path` (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses PEM certificates; at least one is required.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let extra = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if extra.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &extra {
            roots
                .add(cert.clone())
                .map_err(|e| format!("a certificate cannot serve as a trust anchor: {e}"))?;
        }
        Ok(Self {
            extra: Arc::new(extra),
        })
    }

    /// The private CAs (DER), for clients that add certificates to the webpki roots
    /// themselves (lettre, the worker's implicit-TLS connector).
    pub fn extra(&self) -> &[CertificateDer<'static>] {
        &self.extra
    }

    /// The private CAs as PEM, `None` without `TLS_CA_FILE` (sqlx and lapin add these to
    /// their webpki roots).
    pub fn extra_pem(&self) -> Option<String> {
        (!self.extra.is_empty()).then(|| pem(self.extra.iter()))
    }

    /// The root certificates for the Redis client, `None` to keep its built-in webpki roots.
    /// The redis crate takes one PEM bundle that replaces its roots, so with private CAs the
    /// bundle is the Mozilla set (as certificates) plus them: the same trust as every other
    /// client.
    pub fn redis_certificates(&self) -> Option<redis::TlsCertificates> {
        if self.extra.is_empty() {
            return None;
        }
        let bundle = pem(webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .chain(self.extra.iter()));
        Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(bundle.into_bytes()),
        })
    }
}

fn pem<'a>(certs: impl Iterator<Item = &'a CertificateDer<'a>>) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = engine.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Makes aws-lc-rs the process's rustls crypto provider (the one every TLS client here is
/// built with); call once at start, before any connection. Idempotent.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is all this asks for.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_bundle_is_the_webpki_set_plus_the_private_cas() {
        // The first webpki root, as a stand-in private CA.
        let private = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].clone();
        let trust = Trust::from_pem(pem(std::iter::once(&private)).as_bytes()).expect("PEM");
        assert_eq!(trust.extra().len(), 1);
        let certs = trust.redis_certificates().expect("with a private CA");
        let bundle = certs.root_cert.expect("roots");
        let parsed = CertificateDer::pem_slice_iter(&bundle)
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM bundle");
        assert_eq!(
            parsed.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1
        );
        assert_eq!(parsed.last(), Some(&private));
        assert!(Trust::default().redis_certificates().is_none());
        assert!(Trust::default().extra_pem().is_none());
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        assert!(
            Trust::from_pem(b"")
                .expect_err("empty")
                .contains("no PEM certificate")
        );
        assert!(
            Trust::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}
