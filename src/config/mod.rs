//! The TOML configuration: its schema, its defaults (all of them, in this module), and
//! loading with errors that name the file and the key and say what to do.
//!
//! Loading parses, it does not merely validate: the TOML is read into the raw tables of
//! `raw`, which are then turned into the types the rest of the program takes (a parsed
//! [`UpstreamTarget`], parsed networks), so nothing is parsed twice and nothing downstream has
//! to handle a value that the config should have refused. The allow-lists and `[[routes]]`
//! stay as written: `policy` compiles them (and refuses a malformed entry, naming its key).
//!
//! Every relative path in the file is resolved against the folder of the config file, so a
//! config can be moved together with its certificates.
//!
//! This module is at the bottom of the crate: it imports no other module of it.

mod allow;
mod error;
pub mod keys;
mod raw;
mod routes;
mod sources;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use allow::AllowConfig;
pub use error::ConfigError;
pub use routes::{RawRoute, ViewerMode};
pub use sources::{parse_allow_sources, parse_cidr};
pub use upstream::{
    UpstreamClientCert, UpstreamConfig, UpstreamTarget, UpstreamTls, UpstreamUrlError,
};

/// The whole configuration, loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The mTLS listener.
    pub listener: ListenerConfig,
    /// Client-certificate verification.
    pub client_auth: ClientAuthConfig,
    /// Where accepted requests go, unless a route names another upstream.
    pub upstream: UpstreamConfig,
    /// `[upstreams.NAME]`: more upstreams, for routes.
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
    /// `[[routes]]` as written; `policy::Policy::compile` checks and compiles them.
    pub routes: Vec<RawRoute>,
    /// `listener.allow_sources`, parsed (`None`: the key is absent).
    pub allow_sources: Option<Vec<ipnet::IpNet>>,
    /// Which identity headers the upstream receives.
    pub forward: ForwardConfig,
    /// The optional admin listener (health, readiness, metrics).
    pub admin: Option<AdminConfig>,
    /// `[viewer]`: the certificates an edge (CloudFront) forwards from its viewers, judged
    /// on every request; `None`: viewer headers are removed and never judged.
    pub viewer: Option<ViewerConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Hot reload by polling.
    pub reload: ReloadConfig,
    /// Tokio runtime sizing.
    pub runtime: RuntimeConfig,
    /// The folder that relative paths were resolved against.
    pub base_dir: PathBuf,
    /// The file this config was read from.
    pub source: PathBuf,
}

/// `[listener]`, checked: the address and certificate, and the settings in small groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Socket address to bind, e.g. `0.0.0.0:8443`.
    pub address: SocketAddr,
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 PEM private key.
    pub private_key: PathBuf,
    /// Allow TLS session resumption (tickets and a session cache).
    pub session_resumption: bool,
    /// How long each stage of a connection may take.
    pub timeouts: Timeouts,
    /// How much a connection and its requests may hold.
    pub limits: Limits,
    /// PROXY protocol header from a load balancer in front.
    pub proxy_protocol: ProxyProtocol,
    /// Whether a request's Host must name its connection's SNI.
    pub sni: SniPolicy,
    /// The file of more networks that may connect (the list itself is
    /// [`Config::allow_sources`]).
    pub allow_sources_file: Option<PathBuf>,
}

/// `listener.*_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `handshake_timeout`: a peer that has not finished the TLS handshake by then is dropped.
    pub handshake: Duration,
    /// `header_read_timeout`: a request header block must arrive whole within this.
    pub header_read: Duration,
    /// `idle_timeout`: a keep-alive connection with no request for this long is closed.
    pub idle: Duration,
    /// `shutdown_timeout`: in-flight requests get this long when draining or refused.
    pub shutdown: Duration,
}

/// `listener.max_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections`: connections served at once.
    pub max_connections: usize,
    /// `max_header_bytes`: the largest request header block.
    pub max_header_bytes: usize,
    /// `max_concurrent_streams`: h2 streams per connection.
    pub max_concurrent_streams: u32,
    /// `max_request_body_bytes`: the largest request body; `None`: no limit.
    pub max_request_body_bytes: Option<u64>,
}

/// `listener.require_sni_host_match`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SniPolicy {
    /// Any Host on any connection (CloudFront sends the origin domain as SNI but may forward
    /// the viewer's Host).
    #[default]
    AnyHost,
    /// A request whose Host is not its connection's SNI name gets 421.
    RequireHostMatch,
}

/// `listener.proxy_protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No PROXY header is expected; one would be refused as `not_tls`.
    #[default]
    Off,
    /// Every connection must start with a version 1 (text) header.
    V1,
    /// Every connection must start with a version 2 (binary) header.
    V2,
    /// A v1 or v2 header is used when present; connections without one are served with
    /// their TCP peer address.
    Optional,
}

/// `[client_auth]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// PEM bundle; every certificate in it is a trust anchor.
    pub truststore: PathBuf,
    /// CRL files, PEM or DER.
    pub crls: Vec<PathBuf>,
    /// Reject a client whose issuer has no configured CRL (`revocation_unknown`).
    pub require_crl: bool,
    /// Accepted chains remembered per trust state, so a client presenting the same
    /// certificate again skips re-verifying its signatures; 0 turns the memo off.
    pub verified_chain_cache: usize,
    /// Identity allow-list as written; empty means any certificate that verifies.
    pub allow: AllowConfig,
    /// CRLs the shield fetches itself.
    pub crl_fetch: CrlFetchConfig,
    /// Send the truststore's CA names in the CertificateRequest (clients pick a certificate
    /// by them); false sends none, for large truststores or to keep the CA list private.
    pub advertise_ca_names: bool,
    /// A candidate policy judged on every handshake beside the enforced one, never enforced.
    pub report_only: Option<ReportOnlyConfig>,
    /// OCSP for client certificates (`client_auth.ocsp*`).
    pub ocsp: OcspConfig,
}

/// `client_auth.ocsp`: when the shield asks an OCSP responder about a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OcspMode {
    /// Never.
    #[default]
    Off,
    /// For a certificate no CRL in force covers.
    IfNoCrl,
    /// For every certificate on the path that names a responder, CRLs or not.
    Always,
}

/// OCSP for client certificates (`client_auth.ocsp`, `ocsp_responder`, `ocsp_timeout`,
/// `ocsp_soft_fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspConfig {
    /// When to ask.
    pub mode: OcspMode,
    /// Ask this `http://` URL instead of the certificate's AIA OCSP URL.
    pub responder: Option<String>,
    /// One lookup (connect, request, answer) takes at most this long.
    pub timeout: Duration,
    /// No usable answer in time: accept the client and count it (never the default).
    pub soft_fail: bool,
    /// An answer in use is asked for again after at most this long (and halfway to its
    /// nextUpdate when that comes sooner).
    pub refresh: Duration,
}

/// `[client_auth.report_only]`: a candidate policy, to rotate pins and CAs without an outage.
/// Every key left out is the enforced policy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOnlyConfig {
    /// The candidate truststore; `None`: the enforced one.
    pub truststore: Option<PathBuf>,
    /// The candidate CRL files; `None`: the enforced ones (fetched CRLs included).
    pub crls: Option<Vec<PathBuf>>,
    /// The candidate allow-list as written; `None`: the enforced one.
    pub allow: Option<AllowConfig>,
}

/// `[viewer]`: verify the certificate an edge (CloudFront viewer mTLS, an ALB in passthrough)
/// forwards from each end user, per request, with the handshake's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerConfig {
    /// Which headers carry the viewer's certificate.
    pub headers: ViewerHeaders,
    /// The CAs that issue viewer certificates (separate from `client_auth.truststore`).
    pub truststore: PathBuf,
    /// Untrusted intermediates offered to path building, for headers that carry the leaf only.
    pub intermediates: Option<PathBuf>,
    /// CRL files of the viewer CAs, PEM or DER.
    pub crls: Vec<PathBuf>,
    /// CRL URLs of the viewer CAs; the one fetcher fetches them with `client_auth`'s
    /// `crl_refresh`, `crl_fetch_timeout`, `crl_max_bytes`, `crl_cache_dir` and `crl_ca`.
    pub crl_urls: Vec<String>,
    /// Refuse a viewer whose issuer has no CRL in force.
    pub require_crl: bool,
    /// OCSP for viewer certificates; timeout and refresh are `client_auth`'s.
    pub ocsp: OcspConfig,
    /// Verified viewer chains remembered per trust state; 0 turns the memo off.
    pub verified_chain_cache: usize,
    /// A request without a viewer certificate gets 403 (`viewer_no_certificate`); routes may
    /// say otherwise.
    pub required: bool,
    /// Which connections may carry viewer certificates: their own verified identity must
    /// match this allow table (never empty).
    pub edges: AllowConfig,
    /// Which viewers may pass, as written; empty: any viewer whose chain verifies.
    pub allow: AllowConfig,
}

/// `viewer.headers`: where the viewer's certificate arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerHeaders {
    /// CloudFront: `Client-Cert`/`Client-Cert-Chain` (passthrough mode) or
    /// `CloudFront-Viewer-Cert-Pem` with `-Present` and `-Sha256` (required/optional modes).
    #[default]
    Cloudfront,
    /// RFC 9440's `Client-Cert` and `Client-Cert-Chain` only.
    Rfc9440,
}

/// The CRLs fetched from URLs (`client_auth.crl_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFetchConfig {
    /// `http://` or `https://` URLs of CRLs (DER or PEM), fetched in the background.
    pub urls: Vec<String>,
    /// At most this long between two fetches of one URL.
    pub refresh: Duration,
    /// One fetch (connect, redirects, the whole body) takes at most this long.
    pub timeout: Duration,
    /// A CRL larger than this is refused.
    pub max_bytes: u64,
    /// The last good CRL of each URL is kept here, so a restart can use it while the URL is
    /// unreachable.
    pub cache_dir: Option<PathBuf>,
    /// PEM bundle trusted for `https://` CRL URLs instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Also fetch the http(s) CRL distribution points of chains that verified.
    pub from_distribution_points: bool,
}

impl CrlFetchConfig {
    /// True when there is anything to fetch.
    pub fn is_active(&self) -> bool {
        !self.urls.is_empty() || self.from_distribution_points
    }
}

/// The identity header families the proxy can send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderFamily {
    /// Envoy's `x-forwarded-client-cert`.
    Xfcc,
    /// AWS ALB's `X-Amzn-Mtls-Clientcert-*`.
    Alb,
    /// RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
    Rfc9440,
}

/// `[forward]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Families of identity headers to send.
    #[serde(default = "defaults::client_cert_headers")]
    pub client_cert_headers: Vec<HeaderFamily>,
    /// Add `Cert="<URL-encoded PEM>"` to XFCC.
    #[serde(default)]
    pub xfcc_include_cert: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            client_cert_headers: defaults::client_cert_headers(),
            xfcc_include_cert: false,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the plain-HTTP admin listener. Keep it on loopback or a private port.
    pub address: SocketAddr,
    /// Distinct client and viewer certificates kept in the inventory of `/trust`; 0 turns
    /// the inventory off.
    #[serde(default = "defaults::inventory_max")]
    pub inventory_max: usize,
    /// A file holding the bearer token that `/trust`, `/` and `/metrics` require; absent:
    /// no token (keep the listener private).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `mtls_shield=debug`; `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Write one access-log line per request.
    #[serde(default = "defaults::access_log")]
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
            format: LogFormat::Text,
            access_log: defaults::access_log(),
        }
    }
}

/// `[reload]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Poll the config and every file it names this often; reload when content changes.
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
}

/// `[runtime]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; default: the CPUs this process may use.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// Every default value, as constants that [`keys::KEYS`] (the reference) and the serde
/// attributes both use, and the functions serde's `default = "…"` needs. Why a value is what
/// it is is said here; what the key means is said in [`keys::KEYS`].
pub mod defaults {
    use super::HeaderFamily;
    use std::path::PathBuf;
    use std::time::Duration;

    /// `listener.handshake_timeout`
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `listener.header_read_timeout`
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// `listener.idle_timeout`: longer than CloudFront's default origin keep-alive (5 s), so
    /// CloudFront, not the origin, closes idle connections and never reuses one we just closed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `listener.shutdown_timeout`
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `listener.max_connections`
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// `listener.max_header_bytes`
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    /// `listener.max_concurrent_streams`
    pub const MAX_CONCURRENT_STREAMS: u32 = 100;
    /// `client_auth.verified_chain_cache`: far more distinct client certificates than one
    /// origin normally sees (CloudFront presents one), and a few MiB at most when full.
    pub const VERIFIED_CHAIN_CACHE: usize = 1024;
    /// `client_auth.advertise_ca_names`: on, so clients that choose a certificate by the CA
    /// names in the CertificateRequest (browsers, curl with several identities) find theirs.
    pub const ADVERTISE_CA_NAMES: bool = true;
    /// `admin.inventory_max`: far more distinct certificates than an origin behind CloudFront
    /// sees, a few MiB when full (an entry keeps the chain as presented).
    pub const INVENTORY_MAX: usize = 10_000;
    /// `viewer.required`: fail closed; a route that lets viewers without a certificate pass
    /// says so itself.
    pub const VIEWER_REQUIRED: bool = true;
    /// `client_auth.crl_refresh`: CRLs are usually published daily or more often; an hour
    /// bounds how long a new revocation waits for the shield to see it.
    pub const CRL_REFRESH: Duration = Duration::from_secs(3600);
    /// `client_auth.crl_fetch_timeout`
    pub const CRL_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
    /// `client_auth.ocsp_timeout`: the lookup holds a new connection before its first request;
    /// a responder that needs longer is down for practical purposes.
    pub const OCSP_TIMEOUT: Duration = Duration::from_secs(3);
    /// `client_auth.ocsp_refresh`: a revocation reaches open connections within this long even
    /// when the responder's answers are valid for days.
    pub const OCSP_REFRESH: Duration = Duration::from_secs(300);
    /// `client_auth.crl_max_bytes`: far above any real CRL a client CA publishes, far below
    /// what would hurt the process.
    pub const CRL_MAX_BYTES: u64 = 32 * 1024 * 1024;
    /// `upstream.connect_timeout`
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `upstream.response_timeout`
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `upstream.pool_idle_timeout`
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// `upstream.pool_max_idle`
    pub const POOL_MAX_IDLE: usize = 64;
    /// `log.access_log`
    pub const ACCESS_LOG: bool = true;
    /// `log.level`
    pub const LOG_LEVEL: &str = "info";

    pub(super) fn handshake_timeout() -> Duration {
        HANDSHAKE_TIMEOUT
    }
    pub(super) fn header_read_timeout() -> Duration {
        HEADER_READ_TIMEOUT
    }
    pub(super) fn idle_timeout() -> Duration {
        IDLE_TIMEOUT
    }
    pub(super) fn shutdown_timeout() -> Duration {
        SHUTDOWN_TIMEOUT
    }
    pub(super) fn max_connections() -> usize {
        MAX_CONNECTIONS
    }
    pub(super) fn max_header_bytes() -> usize {
        MAX_HEADER_BYTES
    }
    pub(super) fn max_concurrent_streams() -> u32 {
        MAX_CONCURRENT_STREAMS
    }
    pub(super) fn max_request_body_bytes() -> Option<u64> {
        None
    }
    pub(super) fn verified_chain_cache() -> usize {
        VERIFIED_CHAIN_CACHE
    }
    pub(super) fn inventory_max() -> usize {
        INVENTORY_MAX
    }
    pub(super) fn viewer_required() -> bool {
        VIEWER_REQUIRED
    }
    pub(super) fn advertise_ca_names() -> bool {
        ADVERTISE_CA_NAMES
    }
    pub(super) fn crl_refresh() -> Duration {
        CRL_REFRESH
    }
    pub(super) fn crl_fetch_timeout() -> Duration {
        CRL_FETCH_TIMEOUT
    }
    pub(super) fn ocsp_timeout() -> Duration {
        OCSP_TIMEOUT
    }
    pub(super) fn ocsp_refresh() -> Duration {
        OCSP_REFRESH
    }
    pub(super) fn crl_max_bytes() -> u64 {
        CRL_MAX_BYTES
    }
    pub(super) fn proxy_protocol() -> super::ProxyProtocol {
        super::ProxyProtocol::Off
    }
    pub(super) fn connect_timeout() -> Duration {
        CONNECT_TIMEOUT
    }
    pub(super) fn response_timeout() -> Duration {
        RESPONSE_TIMEOUT
    }
    pub(super) fn pool_idle_timeout() -> Duration {
        POOL_IDLE_TIMEOUT
    }
    pub(super) fn pool_max_idle() -> usize {
        POOL_MAX_IDLE
    }
    pub(super) fn upstream_ca() -> Option<PathBuf> {
        None
    }
    pub(super) fn upstream_client_certificate() -> Option<PathBuf> {
        None
    }
    pub(super) fn upstream_client_key() -> Option<PathBuf> {
        None
    }
    pub(super) fn upstream_server_name() -> Option<String> {
        None
    }
    pub(super) fn client_cert_headers() -> Vec<HeaderFamily> {
        vec![HeaderFamily::Xfcc]
    }
    pub(super) fn log_level() -> String {
        LOG_LEVEL.to_owned()
    }
    pub(super) fn access_log() -> bool {
        ACCESS_LOG
    }
}

impl Config {
    /// Reads, parses and checks a config file, resolving relative paths.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|reason| ConfigError::Read {
            path: path.to_owned(),
            reason,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of the config file at `path` (already read).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Self::from_toml(text, path)
    }

    /// Parses config text as if it had been read from `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(&e, text),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        raw.into_config(path, &base)
    }

    /// Every file the config names, for change detection by the reloader. The config file
    /// itself comes first.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.source.clone(),
            self.listener.certificate.clone(),
            self.listener.private_key.clone(),
            self.client_auth.truststore.clone(),
        ];
        files.extend(self.listener.allow_sources_file.iter().cloned());
        files.extend(
            self.admin
                .iter()
                .flat_map(|a| a.bearer_token_file.iter().cloned()),
        );
        files.extend(self.client_auth.crls.iter().cloned());
        files.extend(self.client_auth.crl_fetch.ca.iter().cloned());
        if let Some(v) = &self.viewer {
            files.push(v.truststore.clone());
            files.extend(v.intermediates.iter().cloned());
            files.extend(v.crls.iter().cloned());
        }
        if let Some(r) = &self.client_auth.report_only {
            files.extend(r.truststore.iter().cloned());
            files.extend(r.crls.iter().flatten().cloned());
        }
        files.extend(self.upstream.files());
        for u in self.upstreams.values() {
            files.extend(u.files());
        }
        files
    }
}

/// toml's errors span several lines with a source excerpt; the contract is one clear line
/// that says where: `line 12, in [upstream]: unknown field `urll`, expected one of …`.
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let on_line = before[line_start..].trim_start();
    let place = if let Some(header) = on_line.strip_prefix('[') {
        // The error is inside a table header such as `[client_auth.bogus]`: the key at fault
        // is a segment of the header, and it belongs to the table named by the segments
        // before it (none: the top level).
        let parent = header.trim_start_matches('[');
        let parent = parent.rsplit_once('.').map_or("", |(p, _)| p).trim();
        if parent.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{parent}]")
        }
    } else {
        // The innermost [table] or [[array]] header above the error's line names the section.
        before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .and_then(|l| l.split('#').next())
            .map(str::trim)
            .map_or_else(|| "at the top level".to_owned(), |t| format!("in {t}"))
    };
    let hint = if msg.starts_with("unknown field") {
        "; fix the spelling or remove the key (see config/mtls-shield.toml for every key)"
    } else {
        ""
    };
    format!("line {line}, {place}: {msg}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listener]
address = "127.0.0.1:8443"
certificate = "server.pem"
private_key = "server.key"
[client_auth]
truststore = "/abs/truststore.pem"
[upstream]
url = "http://127.0.0.1:8080"
"#;

    #[test]
    fn relative_paths_resolve_against_config_folder() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/shield/shield.toml")).unwrap();
        assert_eq!(c.listener.certificate, Path::new("/etc/shield/server.pem"));
        assert_eq!(c.client_auth.truststore, Path::new("/abs/truststore.pem"));
    }

    #[test]
    fn annotated_example_config_parses() {
        let text = include_str!("../../config/mtls-shield.toml");
        let c = Config::from_toml(text, Path::new("config/mtls-shield.toml")).unwrap();
        assert_eq!(
            c.listener.certificate,
            Path::new("config/../certs/server.pem")
        );
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml(MINIMAL, Path::new("c.toml")).unwrap();
        assert!(!c.listener.session_resumption);
        assert_eq!(c.listener.timeouts.handshake, Duration::from_secs(10));
        assert_eq!(c.forward.client_cert_headers, vec![HeaderFamily::Xfcc]);
        assert_eq!(c.client_auth.verified_chain_cache, 1024);
        assert!(c.admin.is_none());
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let text = MINIMAL.replace("[upstream]", "[upstream]\nurll = \"x\"");
        let e = Config::from_toml(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("urll"), "{e}");
    }

    #[test]
    fn an_unknown_top_level_key_is_reported_at_the_top_level() {
        for (text, want) in [
            (
                format!("{MINIMAL}[bogus]\nx = 1\n"),
                "line 10, at the top level: unknown field `bogus`",
            ),
            (
                format!("bogus = 1\n{MINIMAL}"),
                "line 1, at the top level: unknown field `bogus`",
            ),
            (
                format!("{MINIMAL}[client_auth.bogus]\nx = 1\n"),
                "line 10, in [client_auth]: unknown field `bogus`",
            ),
            (
                MINIMAL.replace("[upstream]", "[upstream]\nurll = 1"),
                "line 9, in [upstream]: unknown field `urll`",
            ),
        ] {
            let e = Config::from_toml(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}\nwanted: {want}");
        }
    }

    #[test]
    fn missing_file_error_states_the_os_error_once() {
        let e = Config::load(Path::new("/nonexistent/mtls-shield.toml")).unwrap_err();
        // No error source: anyhow's `{:#}` would otherwise repeat the OS error.
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e))
                .matches("os error")
                .count(),
            1
        );
    }

    #[test]
    fn require_crl_without_crls_is_refused() {
        let text = MINIMAL.replace("[upstream]", "require_crl = true\n[upstream]");
        let e = Config::from_toml(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_auth.require_crl"), "{e}");
    }

    #[test]
    fn bad_upstream_url_is_named() {
        let text = MINIMAL.replace("http://127.0.0.1:8080", "ftp://x");
        let e = Config::from_toml(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.url"), "{e}");
    }
}
