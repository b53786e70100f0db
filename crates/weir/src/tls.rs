//! TLS settings of the `amqps_listen`, `kafka_tls_listen` and `https_listen` listeners, built from the
//! `[tls]` files, and their reload on SIGHUP.
//!
//! rustls with the ring provider (the workspace's Cargo.toml says why), TLS 1.2 and
//! 1.3 only. One certificate serves both listeners; HTTPS also offers ALPN
//! `http/1.1`. With `[tls] ca`, a client must present a certificate signed by one of
//! its CAs (webpki verification; no revocation lists).
//!
//! Each front end holds a `watch::Receiver` of its `ServerConfig` and takes the
//! current one for each connection it accepts. A reload reads every file again and
//! sends the new settings only if all of them load: a missing file, a key that does
//! not match its certificate or a bad CA file logs an error and keeps the old
//! settings. Open connections are never touched.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;

use crate::config::TlsSection;

/// The settings of both TLS listeners, as sent to the front ends.
pub struct Settings {
    amqps: watch::Sender<Arc<ServerConfig>>,
    https: watch::Sender<Arc<ServerConfig>>,
    files: TlsSection,
}

impl Settings {
    /// Loads the `[tls]` files.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable certificate or key, or a key
    /// that does not match the certificate.
    pub fn load(files: &TlsSection) -> anyhow::Result<Settings> {
        let (amqps, https) = build(files)?;
        Ok(Settings {
            amqps: watch::Sender::new(amqps),
            https: watch::Sender::new(https),
            files: files.clone(),
        })
    }

    /// What the AMQP front end's TLS listener follows.
    pub fn amqps(&self) -> weir_amqp::TlsSettings {
        self.amqps.subscribe()
    }

    /// What the Kafka front end's TLS listener follows (the AMQP listener's
    /// settings: neither offers ALPN).
    pub fn kafka(&self) -> weir_kafka::TlsSettings {
        self.amqps.subscribe()
    }

    /// What the HTTP front end's TLS listener follows.
    pub fn https(&self) -> weir_http::TlsSettings {
        self.https.subscribe()
    }

    /// Reads the files again; new connections get the new settings. On failure the
    /// old ones stay (and the error is returned to be logged).
    pub fn reload(&self) -> anyhow::Result<()> {
        let (amqps, https) = build(&self.files)?;
        self.amqps.send_replace(amqps);
        self.https.send_replace(https);
        Ok(())
    }
}

/// The AMQP and the HTTP listener's settings (they differ only in ALPN).
fn build(files: &TlsSection) -> anyhow::Result<(Arc<ServerConfig>, Arc<ServerConfig>)> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        bail!("tls.cert and tls.key are both needed");
    };
    let amqps = server_config(cert, key, files.ca.as_deref())?;
    let mut https = amqps.clone();
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(amqps), Arc::new(https)))
}

/// ring on purpose (the workspace's Cargo.toml says why). rustls 0.23.48 deprecates
/// it for lacking post-quantum key exchange; docs/security.md says so.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(cert: &Path, key: &Path, ca: Option<&Path>) -> anyhow::Result<ServerConfig> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from tls.key {}", key.display()))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3 with the ring provider")?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("a CA certificate in tls.ca {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("client verification with tls.ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Checks that the key is the certificate's.
    builder
        .with_single_cert(chain, key)
        .context("tls.key does not go with tls.cert")
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::tls::Pki;

    fn files(pki: &Pki, ca: bool) -> TlsSection {
        TlsSection {
            cert: Some(pki.path("server.pem")),
            key: Some(pki.path("server.key")),
            ca: ca.then(|| pki.path("ca.pem")),
        }
    }

    #[test]
    fn loads_with_and_without_a_client_ca() {
        let pki = Pki::new().unwrap();
        let settings = Settings::load(&files(&pki, false)).unwrap();
        assert!(settings.https().borrow().alpn_protocols == vec![b"http/1.1".to_vec()]);
        assert!(settings.amqps().borrow().alpn_protocols.is_empty());
        Settings::load(&files(&pki, true)).unwrap();
    }

    #[test]
    fn bad_files_are_errors_naming_the_key() {
        let pki = Pki::new().unwrap();
        let mut bad = files(&pki, false);
        bad.key = Some(pki.path("client.key"));
        let e = format!("{:#}", Settings::load(&bad).err().unwrap());
        assert!(e.contains("does not go with"), "{e}");
        bad.key = Some(pki.path("missing.key"));
        let e = format!("{:#}", Settings::load(&bad).err().unwrap());
        assert!(e.contains("tls.key"), "{e}");
        let mut bad = files(&pki, true);
        bad.ca = Some(pki.path("server.key"));
        let e = format!("{:#}", Settings::load(&bad).err().unwrap());
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_settings() {
        let mut pki = Pki::new().unwrap();
        let settings = Settings::load(&files(&pki, false)).unwrap();
        let amqps = settings.amqps();
        let before = Arc::clone(&amqps.borrow());
        std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
        assert!(settings.reload().is_err());
        assert!(Arc::ptr_eq(&before, &amqps.borrow()));
        pki.issue_server("example.invalid").unwrap();
        settings.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &amqps.borrow()));
    }
}
