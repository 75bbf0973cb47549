//! Test certificates: a private CA and a server certificate it signed, as PEM files.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1,
/// as PEM files in a directory.
#[derive(Debug)]
pub struct TestPki {
    /// The CA's certificate, for clients to trust.
    pub ca: PathBuf,
    /// The server's certificate followed by the CA's (a chain).
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl TestPki {
    /// Makes a fresh CA and server certificate in `dir`.
    pub fn new(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fledge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).unwrap();
        let pki = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, format!("{}{}", cert.pem(), ca.pem())).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    /// The config's `tls:` block for this certificate, as YAML flow text.
    pub fn yaml(&self, handshake_timeout: &str) -> String {
        format!(
            "{{cert: \"{}\", key: \"{}\", handshakeTimeout: {handshake_timeout}}}",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A reqwest client that trusts only this CA.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}
