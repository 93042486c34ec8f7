//! Shared integration-test harness: a PKI generated at test time (rcgen), a counting
//! upstream, the real `mtls-shield` binary on free loopback ports, and real clients (a
//! rustls + hyper client in Rust, plus helpers for curl and `openssl s_client`).
//!
//! Nothing here sleeps to pass: waits poll a condition until a deadline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;

/// Default deadline for waits.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it is true or `deadline` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

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

/// The base config. `extra` is inserted in the `[listener]` table's position-independent
/// way: it is appended, so it may add keys to `[client_auth]` only through a
/// `[client_auth.allow]`-style table; to change listener or client_auth keys, use
/// `listener_extra`/`client_auth_extra` via [`config_with`].
pub fn base_config(upstream: &str, extra: &str) -> String {
    config_with(upstream, "", "", extra)
}

/// A config with extra keys in `[listener]` and `[client_auth]`, and extra tables appended.
pub fn config_with(
    upstream: &str,
    listener_extra: &str,
    client_auth_extra: &str,
    tables: &str,
) -> String {
    format!(
        r#"[listener]
address = "127.0.0.1:0"
certificate = "server.pem"
private_key = "server.key"
handshake_timeout = "5s"
{listener_extra}

[client_auth]
truststore = "truststore.pem"
{client_auth_extra}

[upstream]
url = "{upstream}"
connect_timeout = "2s"
response_timeout = "5s"

[admin]
address = "127.0.0.1:0"

[log]
level = "info"
format = "text"

{tables}
"#
    )
}

/// A running `mtls-shield run` process.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl Proxy {
    /// Starts the binary with `config` and waits until it logs its bound addresses.
    pub fn start(config: &Path) -> Proxy {
        Self::try_start(config).unwrap_or_else(|logs| panic!("proxy did not start:\n{logs}"))
    }

    /// Like `start`, but returns the logs if the process exits or never listens.
    pub fn try_start(config: &Path) -> Result<Proxy, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mtls-shield");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let end = Instant::now() + DEADLINE;
        let mut addr = None;
        let mut admin = None;
        while Instant::now() < end {
            for line in logs.lock().unwrap().iter() {
                if let Some(a) = field(line, "address") {
                    if line.contains("admin listening") {
                        admin = a.parse().ok();
                    } else if line.contains(" listening ") {
                        addr = a.parse().ok();
                    }
                }
            }
            if let Some(addr) = addr {
                return Ok(Proxy {
                    child,
                    addr,
                    admin,
                    logs,
                    config: config.to_owned(),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Let the reader thread drain what is left.
        std::thread::sleep(Duration::from_millis(100));
        let text = logs.lock().unwrap().join("\n");
        Err(text)
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing every needle.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let mut found = None;
        wait_until(&format!("log line with {needles:?}"), DEADLINE, || {
            found = self
                .logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            found.is_some()
        });
        found.unwrap()
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let admin = self.admin.expect("admin listener configured");
        http_get_plain(admin, path)
    }

    /// The value of a metric line that starts with `prefix` (e.g. a name with labels), or 0.
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts `key=value` (value unquoted) from a text log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_owned())
    } else {
        Some(rest.split_whitespace().next()?.to_owned())
    }
}

/// A plain HTTP/1.1 GET with std networking: (status, body).
pub fn http_get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The test upstream: counts requests and answers by path.
/// - `/pets`: the PetStore JSON
/// - `/headers`: request headers as a JSON object of arrays
/// - `/bytes/N`: N bytes of a repeating pattern
/// - `/upload`: reads the body, answers `<len> <sha256-hex>`
/// - `/slow/MS`: waits MS milliseconds, then 200
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    pub rt: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let h = hits.clone();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        upstream_answer(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            conns,
            rt,
        }
    }

    /// Connections the upstream has accepted so far.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A byte pattern for big bodies: byte i is `(i % 251) as u8`.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn upstream_answer(
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let full = |s: String| Full::new(Bytes::from(s)).boxed();
    let resp = if path == "/pets" {
        Response::new(full(mtls_shield::demo::PETS.to_owned()))
    } else if path == "/headers" {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            map.entry(k.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        Response::new(full(serde_json::to_string(&map).unwrap()))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let stream = futures_stream(n);
        Response::new(stream)
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut len = 0u64;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                len += d.len() as u64;
                ctx.update(d);
            }
        }
        Response::new(full(format!("{len} {}", hex::encode(ctx.finish()))))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full("slow done".into()))
    } else {
        let mut r = Response::new(full("not found".into()));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

/// A streaming body of `n` pattern bytes in 64 KiB frames, never held whole.
fn futures_stream(n: u64) -> BoxBody {
    struct Pattern {
        sent: u64,
        total: u64,
    }
    impl hyper::body::Body for Pattern {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            if self.sent >= self.total {
                return std::task::Poll::Ready(None);
            }
            let len = (self.total - self.sent).min(64 * 1024);
            let start = self.sent;
            let chunk: Vec<u8> = (start..start + len).map(pattern).collect();
            self.sent += len;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(chunk)))))
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(self.total - self.sent)
        }
    }
    Pattern { sent: 0, total: n }.boxed()
}

/// A client identity for the Rust client.
#[derive(Clone)]
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Vec<u8>,
}

impl ClientCert {
    pub fn leaf(i: &Issued) -> ClientCert {
        ClientCert {
            chain: vec![i.cert_der.clone()],
            key: i.key_der.clone(),
        }
    }
    pub fn with_chain(i: &Issued, intermediates: &[&Ca]) -> ClientCert {
        let mut chain = vec![i.cert_der.clone()];
        chain.extend(intermediates.iter().map(|c| c.cert.der().clone()));
        ClientCert {
            chain,
            key: i.key_der.clone(),
        }
    }
}

/// Options for the Rust client.
#[derive(Clone)]
pub struct ClientOpts {
    pub cert: Option<ClientCert>,
    pub h2: bool,
    pub tls12_only: bool,
    pub resumption: Option<Arc<dyn rustls::client::ClientSessionStore>>,
}

impl ClientOpts {
    pub fn with(cert: ClientCert) -> ClientOpts {
        ClientOpts {
            cert: Some(cert),
            h2: false,
            tls12_only: false,
            resumption: None,
        }
    }
    pub fn anonymous() -> ClientOpts {
        ClientOpts {
            cert: None,
            h2: false,
            tls12_only: false,
            resumption: None,
        }
    }
}

/// A rustls client config trusting `root`.
pub fn client_config(root: &Ca, opts: &ClientOpts) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match &opts.cert {
        // `CertifiedKey::new` does not check that the key belongs to the certificate (unlike
        // `with_client_auth_cert`), so a test can present a certificate it does not hold the
        // key of and prove the server checks possession.
        Some(c) => {
            let key = provider
                .key_provider
                .load_private_key(PrivateKeyDer::try_from(c.key.clone()).unwrap())
                .unwrap();
            let certified = rustls::sign::CertifiedKey::new(c.chain.clone(), key);
            b.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if let Some(store) = &opts.resumption {
        cfg.resumption = rustls::client::Resumption::store(store.clone());
    } else {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

/// A response seen by the Rust client.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `/headers` echo as a map.
    pub fn echoed(&self) -> BTreeMap<String, Vec<String>> {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// The error a refused client sees, and every byte it received after the handshake.
#[derive(Debug)]
pub struct Refused {
    pub error: String,
}

/// Connects over TLS with `opts`; returns the TLS stream.
pub async fn tls_connect(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(root, opts));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One request over a fresh connection. `Err` holds the client-side error (a refused
/// handshake surfaces here, often only at the first read in TLS 1.3).
pub async fn request(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
    req: Request<Full<Bytes>>,
) -> Result<Got, String> {
    let tls = tls_connect(addr, root, opts)
        .await
        .map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let resp = if opts.h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Got {
        status,
        headers,
        body,
    })
}

/// `GET path` with Host: localhost.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `GET path` through `proxy` as the PKI's good client (`my-client`) over HTTP/1.1;
/// panics with the client's error if the request fails.
pub fn get_as_client(proxy: &Proxy, pki: &Pki, path: &str) -> Got {
    block_request(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&pki.client)),
        get(path),
    )
    .unwrap_or_else(|e| panic!("GET {path} as my-client failed: {e}"))
}

/// A blocking wrapper around [`request`] for tests that are not async.
pub fn block_request(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
    req: Request<Full<Bytes>>,
) -> Result<Got, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(DEADLINE, request(addr, root, opts, req))
                .await
                .map_err(|_| "client timed out".to_owned())?
        })
}

/// Runs curl with `args` (plus `-sS --max-time 20`): (exit code, stdout bytes, stderr).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install -y curl)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The URL of `path` on the proxy, as curl should use it (with `--resolve`-free localhost).
pub fn url(p: &Proxy, path: &str) -> String {
    format!("https://localhost:{}{path}", p.addr.port())
}

/// curl with this PKI's CA and (optionally) a client cert/key from the PKI folder.
pub fn curl_pki(
    pki: &Pki,
    client: Option<(&str, &str)>,
    extra: &[&str],
    url: &str,
) -> (i32, Vec<u8>, String) {
    let ca = pki.path("root.pem");
    let mut args: Vec<String> = vec!["--cacert".into(), ca.display().to_string()];
    if let Some((c, k)) = client {
        args.push("--cert".into());
        args.push(pki.path(c).display().to_string());
        args.push("--key".into());
        args.push(pki.path(k).display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

// ---- Refusal probes, openssl s_client, the binary's other commands (issue 2 tests) ----

/// What a client saw on a connection the proxy may refuse: the client-side handshake result
/// and every application byte received after sending a request line.
#[derive(Debug)]
pub struct Attempt {
    /// `Err` when the handshake failed on the client side (TLS 1.2, or TLS 1.3 alerts
    /// that arrive early).
    pub handshake: Result<(), String>,
    /// Application bytes received after the request line was sent.
    pub received: Vec<u8>,
    /// How reading ended: `None` for a clean EOF, else the error (usually a TLS alert).
    pub read_error: Option<String>,
}

/// The request line [`attempt_raw`] sends.
pub const RAW_REQUEST: &[u8] = b"GET /pets HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Connects, sends [`RAW_REQUEST`] and reads until the server closes: a refused client must
/// see no application byte at all (TLS 1.3 clients finish their side of the handshake before
/// the server has judged their certificate, so the refusal shows up at the first read).
pub async fn attempt_raw(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> Attempt {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = match tls_connect(addr, root, opts).await {
        Ok(t) => t,
        Err(e) => {
            return Attempt {
                handshake: Err(e.to_string()),
                received: Vec::new(),
                read_error: None,
            }
        }
    };
    let _ = tls.write_all(RAW_REQUEST).await;
    let _ = tls.flush().await;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read_error = loop {
        match tls.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.to_string()),
        }
    };
    Attempt {
        handshake: Ok(()),
        received,
        read_error,
    }
}

/// Blocking [`attempt_raw`] with the default deadline.
pub fn block_attempt(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> Attempt {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(DEADLINE, attempt_raw(addr, root, opts))
                .await
                .expect("refused connection should close before the deadline")
        })
}

/// Asserts that the Rust client with `opts` is refused: no HTTP byte, the connection ends in
/// an error, the proxy logs `handshake rejected` with `reason` and the peer, and `upstream`
/// was never contacted. Returns the log line.
pub fn assert_refused(
    proxy: &Proxy,
    upstream: &Upstream,
    root: &Ca,
    opts: &ClientOpts,
    reason: &str,
) -> String {
    let before = upstream.hits();
    let a = block_attempt(proxy.addr, root, opts);
    assert!(
        a.received.is_empty(),
        "refused client received bytes: {:?}",
        String::from_utf8_lossy(&a.received)
    );
    assert!(
        a.handshake.is_err() || a.read_error.is_some(),
        "refused connection should end with a TLS error, got {a:?}"
    );
    let line = proxy.wait_log(&["handshake rejected", &format!("reason=\"{reason}\"")]);
    assert!(line.contains("peer=127.0.0.1:"), "no peer in: {line}");
    assert_eq!(upstream.hits(), before, "upstream was contacted");
    line
}

/// Runs `openssl s_client -connect 127.0.0.1:<port> -servername localhost -ign_eof <args>`
/// with `input` on stdin (under `timeout 20`): (exit code, stdout, stderr). `-ign_eof` keeps
/// it reading until the server closes, so everything the server sent is in stdout.
pub fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", addr.port()))
        .args(["-servername", "localhost", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A refused handshake may close stdin's peer before we finish; ignore EPIPE.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args` to completion (for commands that exit on their own). A command
/// that has not exited by [`DEADLINE`] (say, `run` with a config that was meant to be refused
/// but starts) is killed and fails the test, instead of hanging the suite.
pub fn shield_cmd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtls-shield"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mtls-shield");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("mtls-shield {args:?} did not exit within {DEADLINE:?}; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// VmRSS of a process in KiB, from /proc/<pid>/status.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---- Keep-alive connections (issue 4 tests) ----

/// One HTTP/1.1 keep-alive connection kept open across requests, on its own runtime.
pub struct KeepAlive {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl KeepAlive {
    /// Connects with `cert` and completes the TLS and HTTP/1.1 handshakes.
    pub fn open(addr: SocketAddr, root: &Ca, cert: &Issued) -> KeepAlive {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (sender, conn) = rt.block_on(async {
            let tls = tls_connect(addr, root, &ClientOpts::with(ClientCert::leaf(cert)))
                .await
                .unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            (sender, tokio::spawn(conn))
        });
        KeepAlive { rt, sender, conn }
    }

    /// `GET path` on this connection: (status, body).
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                sender.ready().await.map_err(|e| e.to_string())?;
                let resp = sender
                    .send_request(get(path))
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((
                    status,
                    String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                ))
            })
            .await
            .map_err(|_| "timed out".to_owned())?
        })
    }

    /// Waits (up to `deadline`) for the server to close the connection; true if it did.
    pub fn wait_closed(&mut self, deadline: Duration) -> bool {
        let conn = &mut self.conn;
        self.rt
            .block_on(async { tokio::time::timeout(deadline, conn).await.is_ok() })
    }
}

// ---- Environment, JSON logs and independent certificate facts (issue 3 tests) ----

/// The `address` of a start-up line, text (`address=…`) or JSON (`"address":"…"`), and
/// whether it is the admin listener's.
pub fn listening_address(line: &str) -> Option<(bool, SocketAddr)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let msg = v.get("message")?.as_str()?;
        let addr = v.get("address")?.as_str()?.parse().ok()?;
        return match msg {
            "admin listening" => Some((true, addr)),
            "listening" => Some((false, addr)),
            _ => None,
        };
    }
    let addr = field(line, "address")?.parse().ok()?;
    if line.contains("admin listening") {
        Some((true, addr))
    } else if line.contains(" listening ") {
        Some((false, addr))
    } else {
        None
    }
}

/// Like [`Proxy::start`], with extra environment variables (such as `RUST_LOG`; it is
/// removed otherwise), and reading the bound addresses from text or JSON log lines.
pub fn start_proxy_env(config: &Path, env: &[(&str, &str)]) -> Proxy {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-shield"));
    cmd.args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    start_proxy_cmd(cmd, config)
}

/// Starts `cmd`, which must end up exec-ing the shield with `config` (e.g. through `sh -c
/// '…; exec "$0" run --config "$1"'`), and waits until it logs its bound addresses.
pub fn start_proxy_cmd(mut cmd: Command, config: &Path) -> Proxy {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mtls-shield");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        let (mut addr, mut admin) = (None, None);
        for line in logs.lock().unwrap().iter() {
            match listening_address(line) {
                Some((true, a)) => admin = Some(a),
                Some((false, a)) => addr = Some(a),
                None => {}
            }
        }
        if let Some(addr) = addr {
            return Proxy {
                child,
                addr,
                admin,
                logs,
                config: config.to_owned(),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "proxy exited ({status}):\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "proxy did not log its address:\n{}",
        logs.lock().unwrap().join("\n")
    );
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

/// How a [`CrlServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlMode {
    /// Serves its files, with ETag and 304 for a matching If-None-Match.
    Serve,
    /// Answers 503 to everything.
    Unavailable,
}

/// Requests a [`CrlServer`] saw: (path, the If-None-Match it carried).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A CRL server of the test's own: serves files that the test changes, on loopback.
pub struct CrlServer {
    pub addr: SocketAddr,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    mode: Arc<Mutex<CrlMode>>,
    /// Requests seen: (path, If-None-Match sent).
    seen: Seen,
    /// When set, the server answers like Python's `http.server`: this `Last-Modified` (one-second
    /// granularity), no ETag, and 304 when `If-Modified-Since` is not older.
    last_modified: Arc<Mutex<Option<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl CrlServer {
    pub fn start() -> CrlServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let mode = Arc::new(Mutex::new(CrlMode::Serve));
        let seen: Seen = Arc::default();
        let last_modified: Arc<Mutex<Option<String>>> = Arc::default();
        let (f, m, s, lm) = (
            files.clone(),
            mode.clone(),
            seen.clone(),
            last_modified.clone(),
        );
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (f, m, s, lm) = (f.clone(), m.clone(), s.clone(), lm.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (f, m, s, lm) = (f.clone(), m.clone(), s.clone(), lm.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let inm = req
                                .headers()
                                .get("if-none-match")
                                .map(|v| v.to_str().unwrap_or("").to_owned());
                            s.lock().unwrap().push((path.clone(), inm.clone()));
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            if *m.lock().unwrap() == CrlMode::Unavailable {
                                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                            let Some(body) = f.lock().unwrap().get(&path).cloned() else {
                                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                                return Ok(resp);
                            };
                            if let Some(lm) = lm.lock().unwrap().clone() {
                                let ims = req
                                    .headers()
                                    .get("if-modified-since")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| httpdate::parse_http_date(v).ok());
                                let modified = httpdate::parse_http_date(&lm).unwrap();
                                if ims.is_some_and(|ims| modified <= ims) {
                                    *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                                } else {
                                    *resp.body_mut() = Full::new(Bytes::from(body));
                                }
                                let now = httpdate::fmt_http_date(std::time::SystemTime::now());
                                resp.headers_mut()
                                    .insert("last-modified", lm.parse().unwrap());
                                resp.headers_mut().insert("date", now.parse().unwrap());
                                return Ok(resp);
                            }
                            let etag = format!(
                                "\"{}\"",
                                hex::encode(aws_lc_rs::digest::digest(
                                    &aws_lc_rs::digest::SHA256,
                                    &body
                                ))
                            );
                            if inm.as_deref() == Some(etag.as_str()) {
                                *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                            } else {
                                *resp.body_mut() = Full::new(Bytes::from(body));
                            }
                            resp.headers_mut().insert("etag", etag.parse().unwrap());
                            Ok(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CrlServer {
            addr,
            files,
            mode,
            seen,
            last_modified,
            _rt: rt,
        }
    }

    /// Answers from now on like a server that dates files to the second and sends no ETag:
    /// `Last-Modified: <last_modified>` on every answer, 304 when `If-Modified-Since` is not
    /// older than it.
    pub fn last_modified_only(&self, last_modified: std::time::SystemTime) {
        *self.last_modified.lock().unwrap() = Some(httpdate::fmt_http_date(last_modified));
    }

    /// Serves `body` at `path` from now on.
    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.files.lock().unwrap().insert(path.into(), body.into());
    }

    pub fn set_mode(&self, mode: CrlMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests for `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, inm)| inm.clone())
            .collect()
    }
}

// ---- An OCSP responder of the test's own: `openssl ocsp` over an index file it re-reads ----

/// `openssl ocsp` answering for `ca`, signing with `signer` (the CA itself, or a delegated
/// responder certificate), from an index file; revoking rewrites it and restarts the responder.
pub struct OcspResponder {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    entries: Mutex<Vec<(String, Option<String>)>>,
}

impl OcspResponder {
    /// Starts a responder on loopback `port`; `valid` are the certificates it knows.
    pub fn start_on(
        port: u16,
        ca: &Ca,
        signer: (&str, &str),
        valid: &[&SerialNumber],
    ) -> OcspResponder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("signer.pem"), signer.0).unwrap();
        std::fs::write(dir.path().join("signer.key"), signer.1).unwrap();
        let entries: Vec<(String, Option<String>)> =
            valid.iter().map(|sn| (index_serial(sn), None)).collect();
        write_index(dir.path(), &entries);
        let child = spawn_ocsp(dir.path(), port);
        OcspResponder {
            port,
            dir,
            child,
            entries: Mutex::new(entries),
        }
    }

    /// The responder's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Marks `cert` revoked from now on (the responder re-reads its index when it changes).
    pub fn revoke(&mut self, serial: &SerialNumber) {
        let serial = index_serial(serial);
        let mut entries = self.entries.lock().unwrap();
        for e in entries.iter_mut().filter(|e| e.0 == serial) {
            e.1 = Some(openssl_time(
                OffsetDateTime::now_utc() - time::Duration::minutes(1),
            ));
        }
        write_index(self.dir.path(), &entries);
        // `openssl ocsp` 3.0 reads its index once: start it again, on the same port.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_ocsp(self.dir.path(), self.port);
    }
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serial as `openssl ca` writes it in its index: upper-case hex, no leading zero bytes.
fn index_serial(serial: &SerialNumber) -> String {
    let bytes = serial.to_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    hex::encode_upper(&bytes[first..])
}

fn openssl_time(t: OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Starts `openssl ocsp` in `dir` on `port` and waits until it says it is listening.
fn spawn_ocsp(dir: &Path, port: u16) -> Child {
    let mut child = Command::new("openssl")
        .args([
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "signer.pem",
        ])
        .args(["-rkey", "signer.key", "-nmin", "10", "-ignore_err"])
        .args(["-port", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (apt-get install -y openssl)");
    // Wait for its own word, not a probe connection: `openssl ocsp` serves one connection
    // at a time and would sit on a probe that sends nothing.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stderr = child.stderr.take().unwrap();
    let flag = ready.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("waiting for OCSP client connections") {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });
    wait_until("the OCSP responder to listen", DEADLINE, || {
        ready.load(Ordering::SeqCst)
    });
    child
}

/// An `openssl ca` index: V(alid) or R(evoked) lines, written through a rename.
fn write_index(dir: &Path, entries: &[(String, Option<String>)]) {
    let expiry = openssl_time(OffsetDateTime::now_utc() + time::Duration::days(365));
    let mut text = String::new();
    for (serial, revoked) in entries {
        match revoked {
            None => text.push_str(&format!("V\t{expiry}\t\t{serial}\tunknown\t/CN=x\n")),
            Some(at) => text.push_str(&format!("R\t{expiry}\t{at}\t{serial}\tunknown\t/CN=x\n")),
        }
    }
    let tmp = dir.join("index.txt.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("index.txt")).unwrap();
}
