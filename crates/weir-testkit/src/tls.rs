//! Certificates made at test time (no key file is committed): a CA, a server
//! certificate it signed for `localhost` and `127.0.0.1`, a client certificate it
//! signed, as PEM files in a temporary directory, and rustls client settings that
//! trust that CA.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// ring, as the broker (the workspace's Cargo.toml says why).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and the certificates it signed, as files.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Certificates issued so far (each gets the next serial number).
    issued: u64,
}

impl Pki {
    /// A new CA with a server certificate (`server.pem`, `server.key`) for
    /// `localhost` and `127.0.0.1` and a client certificate (`client.pem`,
    /// `client.key`).
    pub fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir().context("a directory for certificates")?;
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        // A name of its own (from its key), so another test's CA is a stranger
        // rather than a namesake.
        let id = key.public_key_raw()[1..9]
            .iter()
            .fold(String::new(), |id, b| id + &format!("{b:02x}"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("weir test CA {id}"));
        let ca = CertifiedIssuer::self_signed(params, key)?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        let mut pki = Pki { dir, ca, issued: 0 };
        pki.issue_server("localhost")?;
        pki.issue("client", &["weir-test-client"])?;
        Ok(pki)
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path` as a string, for command lines.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `--tls-cert server.pem --tls-key server.key`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            self.arg("server.pem"),
            "--tls-key".to_owned(),
            self.arg("server.key"),
        ]
    }

    /// Writes a new server certificate and key over `server.pem` and `server.key`
    /// (a new serial number), for `name` and `127.0.0.1`.
    pub fn issue_server(&mut self, name: &str) -> anyhow::Result<()> {
        self.issue("server", &[name, "127.0.0.1"])
    }

    fn issue(&mut self, stem: &str, names: &[&str]) -> anyhow::Result<()> {
        self.issued += 1;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.serial_number = Some(rcgen::SerialNumber::from(self.issued));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("weir test {stem}"));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        // Written whole and renamed into place, as an operator's tooling would: a
        // reader never sees half a file.
        for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
            let tmp = self.path(&format!("{stem}.{ext}.tmp"));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, self.path(&format!("{stem}.{ext}")))?;
        }
        Ok(())
    }

    /// Client settings that trust this CA; with `client_cert`, presenting
    /// `client.pem`.
    pub fn client_config(&self, client_cert: bool) -> anyhow::Result<ClientConfig> {
        self.client_config_with(client_cert.then_some(self))
    }

    /// Client settings that trust this CA, presenting `identity`'s client
    /// certificate (another CA's, say) if given.
    pub fn client_config_with(&self, identity: Option<&Pki>) -> anyhow::Result<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(match identity {
            Some(pki) => {
                let chain = vec![CertificateDer::from_pem_file(pki.path("client.pem"))?];
                let key = PrivateKeyDer::from_pem_file(pki.path("client.key"))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        })
    }
}

/// `localhost`, the name the server certificate is for.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("invariant: a valid DNS name")
}
