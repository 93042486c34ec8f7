//! The test PKI, made with rcgen at test time the way real CAs make certificates (AWS
//! Private CA serials, partitioned CRLs, OCSP URLs), and the openssl CLI helpers that read it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::*;

static SERIAL: AtomicU64 = AtomicU64::new(1000);

fn next_serial() -> u64 {
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// A certificate authority (root or intermediate).
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub name: String,
}

impl Ca {
    /// A self-signed root.
    pub fn root(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(name, None);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = OffsetDateTime::now_utc() - days(1);
        p.not_after = OffsetDateTime::now_utc() + days(3650);
        p.serial_number = Some(SerialNumber::from(next_serial()));
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert,
            key,
            name: name.into(),
        }
    }

    /// An intermediate signed by `self`.
    pub fn intermediate(&self, name: &str) -> Ca {
        self.signed_intermediate(name, SerialNumber::from(next_serial()), vec![])
    }

    /// An intermediate CA certificate for `name` signed by `self`, with `serial` and `extensions`.
    fn signed_intermediate(
        &self,
        name: &str,
        serial: SerialNumber,
        extensions: Vec<rcgen::CustomExtension>,
    ) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(name, None);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = OffsetDateTime::now_utc() - days(1);
        p.not_after = OffsetDateTime::now_utc() + days(1000);
        p.serial_number = Some(serial);
        p.custom_extensions = extensions;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Ca {
            cert,
            key,
            name: name.into(),
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// An intermediate signed by `self` whose AIA names `ocsp_url` (its issuer's responder),
    /// and its serial.
    pub fn intermediate_with_ocsp(&self, name: &str, ocsp_url: &str) -> (Ca, SerialNumber) {
        let serial = pca_serial(next_serial());
        let ca = self.signed_intermediate(name, serial.clone(), vec![aia_ocsp(ocsp_url)]);
        (ca, serial)
    }

    /// Issues a leaf from `spec`.
    pub fn issue(&self, spec: Leaf) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&spec.cn, spec.ou.as_deref());
        let mut sans: Vec<SanType> = spec
            .dns
            .iter()
            .map(|d| SanType::DnsName(d.as_str().try_into().unwrap()))
            .collect();
        sans.extend(
            spec.uris
                .iter()
                .map(|u| SanType::URI(u.as_str().try_into().unwrap())),
        );
        sans.extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.subject_alt_names = sans;
        p.extended_key_usages = spec.eku.clone();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + days(spec.not_before_days);
        if !spec.crl_dps.is_empty() {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: spec.crl_dps.clone(),
            }];
        }
        if let Some(url) = &spec.ocsp_url {
            p.custom_extensions = vec![aia_ocsp(url)];
        }
        p.not_after = match spec.not_after_secs {
            Some(secs) => now + time::Duration::seconds(secs),
            None => now + days(spec.not_after_days),
        };
        let serial = next_serial();
        let serial_number = match spec.pca_serial {
            true => pca_serial(serial),
            false => SerialNumber::from(serial),
        };
        p.serial_number = Some(serial_number.clone());
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            serial,
            serial_number,
        }
    }

    /// A partitioned CRL, as AWS Private CA publishes them: a critical issuingDistributionPoint
    /// naming `partition_url`, revoking `revoked` (which must name that URL as their
    /// cRLDistributionPoint to be in the partition).
    pub fn partition_crl(&self, revoked: &[&Issued], number: u64, partition_url: &str) -> String {
        let now = OffsetDateTime::now_utc();
        let p = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + days(7),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint {
                    uris: vec![partition_url.to_owned()],
                },
                scope: Some(rcgen::CrlScope::UserCertsOnly),
            }),
            revoked_certs: revoked
                .iter()
                .map(|i| RevokedCertParams {
                    serial_number: i.serial_number.clone(),
                    revocation_time: now - time::Duration::hours(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        p.signed_by(&self.cert, &self.key).unwrap().pem().unwrap()
    }

    /// A CRL revoking `serials`, valid from `this_update_days` to `next_update_days` (relative
    /// to now).
    pub fn crl(
        &self,
        serials: &[u64],
        number: u64,
        this_update_days: i64,
        next_update_days: i64,
    ) -> String {
        self.crl_until(
            serials,
            number,
            this_update_days,
            time::Duration::days(next_update_days),
        )
    }

    /// A CRL whose nextUpdate is `next_update` from now (seconds are fine).
    pub fn crl_until(
        &self,
        serials: &[u64],
        number: u64,
        this_update_days: i64,
        next_update: time::Duration,
    ) -> String {
        let now = OffsetDateTime::now_utc();
        let p = CertificateRevocationListParams {
            this_update: now + days(this_update_days),
            next_update: now + next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        p.signed_by(&self.cert, &self.key).unwrap().pem().unwrap()
    }
}

/// DER tag-length-value (short lengths only: test extensions are small).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 128);
    [&[tag, content.len() as u8][..], content].concat()
}

/// `authorityInfoAccess` with one `id-ad-ocsp` URI.
fn aia_ocsp(url: &str) -> rcgen::CustomExtension {
    let ad_ocsp = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let access = tlv(0x30, &[&ad_ocsp[..], &tlv(0x86, url.as_bytes())].concat());
    rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], tlv(0x30, &access))
}

/// A serial number like AWS Private CA's: 16 random-looking bytes with the top bit set, so
/// its DER INTEGER carries a leading zero byte (unique per `n`).
fn pca_serial(n: u64) -> SerialNumber {
    let mut b = [0u8; 16];
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &n.to_be_bytes());
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[0] |= 0x80;
    b[8..].copy_from_slice(&n.to_be_bytes());
    SerialNumber::from_slice(&b)
}

fn dn(cn: &str, ou: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "mtls-shield tests");
    if let Some(ou) = ou {
        d.push(DnType::OrganizationalUnitName, ou);
    }
    d.push(DnType::CommonName, cn);
    d
}

/// What to put in a leaf certificate.
#[derive(Clone)]
pub struct Leaf {
    pub cn: String,
    pub ou: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub not_before_days: i64,
    pub not_after_days: i64,
    /// When set, notAfter is this many seconds from now (instead of `not_after_days`).
    pub not_after_secs: Option<i64>,
    /// CRL distribution point URLs.
    pub crl_dps: Vec<String>,
    /// A 16-byte serial with its top bit set, as AWS Private CA issues them.
    pub pca_serial: bool,
    /// An authorityInfoAccess OCSP responder URL.
    pub ocsp_url: Option<String>,
}

impl Leaf {
    /// A valid client certificate with EKU clientAuth.
    pub fn client(cn: &str) -> Leaf {
        Leaf {
            cn: cn.into(),
            ou: None,
            dns: vec![],
            uris: vec![],
            ips: vec![],
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before_days: -1,
            not_after_days: 365,
            not_after_secs: None,
            crl_dps: vec![],
            pca_serial: false,
            ocsp_url: None,
        }
    }

    /// The server certificate for localhost and 127.0.0.1.
    pub fn server() -> Leaf {
        Leaf {
            cn: "localhost".into(),
            ou: None,
            dns: vec!["localhost".into()],
            uris: vec![],
            ips: vec!["127.0.0.1".parse().unwrap()],
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            not_before_days: -1,
            not_after_days: 365,
            not_after_secs: None,
            crl_dps: vec![],
            pca_serial: false,
            ocsp_url: None,
        }
    }

    pub fn ou(mut self, ou: &str) -> Leaf {
        self.ou = Some(ou.into());
        self
    }
    pub fn dns(mut self, d: &str) -> Leaf {
        self.dns.push(d.into());
        self
    }
    pub fn uri(mut self, u: &str) -> Leaf {
        self.uris.push(u.into());
        self
    }
    pub fn eku(mut self, eku: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        self.eku = eku;
        self
    }
    pub fn valid_days(mut self, not_before: i64, not_after: i64) -> Leaf {
        self.not_before_days = not_before;
        self.not_after_days = not_after;
        self
    }
    /// A CRL distribution point.
    pub fn crl_dp(mut self, url: &str) -> Leaf {
        self.crl_dps.push(url.into());
        self
    }
    /// An authorityInfoAccess extension naming `url` as the OCSP responder.
    pub fn ocsp_url(mut self, url: &str) -> Leaf {
        self.ocsp_url = Some(url.into());
        self
    }
    /// A serial shaped like AWS Private CA's (see [`pca_serial`]).
    pub fn pca_serial(mut self) -> Leaf {
        self.pca_serial = true;
        self
    }
    /// notAfter `secs` seconds from now.
    pub fn expires_in_secs(mut self, secs: i64) -> Leaf {
        self.not_after_secs = Some(secs);
        self
    }
}

/// An issued leaf.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// The counter the serial was made from (the serial itself unless `pca_serial`).
    pub serial: u64,
    /// The serial as issued.
    pub serial_number: SerialNumber,
}

impl Issued {
    /// Writes `<name>.pem` and `<name>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }

    /// SHA-256 of the DER, lower-case hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            self.cert_der.as_ref(),
        ))
    }
}

/// The standard test PKI: a root, a server certificate, and a good client.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub root: Ca,
    pub server: Issued,
    pub client: Issued,
}

impl Pki {
    /// Generates and writes `root.pem` (also `truststore.pem`), `server.pem/.key`,
    /// `client.pem/.key`.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::root("Test Root CA");
        let server = root.issue(Leaf::server());
        let client = root.issue(Leaf::client("my-client"));
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("truststore.pem"), root.pem()).unwrap();
        server.write(dir.path(), "server");
        client.write(dir.path(), "client");
        Pki {
            dir,
            root,
            server,
            client,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with this PKI, listener and admin on free ports, and `extra` TOML appended
    /// (extra tables, or keys for tables that the base leaves open: see `base_config`).
    pub fn config(&self, upstream: &str, extra: &str) -> String {
        base_config(upstream, extra)
    }

    /// Writes the config into the PKI folder and returns its path.
    pub fn write_config(&self, upstream: &str, extra: &str) -> PathBuf {
        let p = self.path("mtls-shield.toml");
        std::fs::write(&p, self.config(upstream, extra)).unwrap();
        p
    }
}

/// `openssl x509 -in <pem> -noout <args>`, stdout trimmed: facts about a certificate computed
/// by OpenSSL, independently of the proxy's own parsing.
pub fn openssl_x509(pem: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("x509")
        .arg("-in")
        .arg(pem)
        .arg("-noout")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl x509 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The value after `key=` in one line of OpenSSL output (`subject=CN=a` → `CN=a`).
pub fn after_eq<'a>(s: &'a str, key: &str) -> &'a str {
    s.strip_prefix(key)
        .and_then(|r| r.strip_prefix('='))
        .unwrap_or_else(|| panic!("{s:?} does not start with {key}="))
        .trim()
}

/// Unix seconds of a date as OpenSSL prints it (`Nov  1 12:00:00 2027 GMT`), by GNU date.
pub fn unix_of_openssl_date(date: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date could not parse {date:?}"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a date as OpenSSL prints it, by GNU date.
pub fn rfc3339_of_openssl_date(date: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
