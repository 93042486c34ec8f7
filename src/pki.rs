//! A throwaway development PKI made with rcgen, for `demo` and `gen-certs`: a root CA, a
//! server certificate for `localhost` and 127.0.0.1, and a client certificate with the
//! clientAuth extended key usage. Never use it in production: the CA key sits on disk.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// PEM texts of a development PKI.
#[derive(Debug)]
pub(crate) struct DevPki {
    /// Root CA certificate.
    pub(crate) ca_cert: String,
    /// Root CA private key.
    pub(crate) ca_key: String,
    /// Server certificate (localhost, 127.0.0.1, ::1).
    pub(crate) server_cert: String,
    /// Server private key.
    pub(crate) server_key: String,
    /// Client certificate, CN=my-client, EKU clientAuth.
    pub(crate) client_cert: String,
    /// Client private key.
    pub(crate) client_key: String,
}

/// Errors making or writing the PKI.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PkiError {
    /// rcgen failed.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("{path}: cannot write: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "mtls-shield dev");
    d.push(DnType::CommonName, cn);
    d
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for machines whose clocks disagree slightly.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
}

impl DevPki {
    /// Generates a fresh PKI (ECDSA P-256 keys).
    pub(crate) fn generate() -> Result<DevPki, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn("mtls-shield dev root CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca, 3650);
        let ca_cert = ca.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
        server.distinguished_name = dn("localhost");
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut server, 365);
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::default();
        client.distinguished_name = dn("my-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut client, 365);
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;

        Ok(DevPki {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key`, `client.pem`, `client.key`
    /// and `truststore.pem` into `dir` (created if missing). Keys are mode 0600.
    pub(crate) fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, PkiError> {
        std::fs::create_dir_all(dir).map_err(|reason| PkiError::Write {
            path: dir.to_owned(),
            reason,
        })?;
        let files = [
            ("ca.pem", &self.ca_cert, false),
            ("ca.key", &self.ca_key, true),
            ("server.pem", &self.server_cert, false),
            ("server.key", &self.server_key, true),
            ("client.pem", &self.client_cert, false),
            ("client.key", &self.client_key, true),
            ("truststore.pem", &self.ca_cert, false),
        ];
        let mut written = Vec::new();
        for (name, content, secret) in files {
            let path = dir.join(name);
            write_file(&path, content, secret).map_err(|reason| PkiError::Write {
                path: path.clone(),
                reason,
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

fn write_file(path: &Path, content: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    // `mode` above only applies when the file is created. With `--force` over an existing,
    // perhaps world-readable key file, set the mode explicitly, before any key byte is written.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(content.as_bytes())
}
