//! The TOML configuration: its schema, its defaults (all of them, in this file), and
//! loading with errors that name the file and the key and say what to do.
//!
//! Every relative path in the file is resolved against the folder of the config file, so a
//! config can be moved together with its certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors raised while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read at all.
    // The field is not named `source`: thiserror would make it the error's source, and
    // anyhow's `{:#}` would then print the OS error twice on the one line the user sees.
    #[error("{path}: cannot read config file: {reason}; check the path given to --config")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why the read failed.
        reason: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, flattened to one line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `upstream.url`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mTLS listener.
    pub listener: ListenerConfig,
    /// Client-certificate verification.
    pub client_auth: ClientAuthConfig,
    /// Where accepted requests go.
    pub upstream: UpstreamConfig,
    /// Which identity headers the upstream receives.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// The optional admin listener (health, readiness, metrics).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Hot reload by polling.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Tokio runtime sizing.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The folder that relative paths were resolved against; not a TOML key.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this config was read from; not a TOML key.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[listener]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Socket address to bind, e.g. `0.0.0.0:8443`.
    pub address: SocketAddr,
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 PEM private key.
    pub private_key: PathBuf,
    /// Allow TLS session resumption (tickets and a session cache). Off by default.
    #[serde(default)]
    pub session_resumption: bool,
    /// A peer that has not finished the TLS handshake by then is dropped.
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A client must send a complete request header block within this time.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this long without a request.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[serde(default = "defaults::shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Connections served at once; further connections wait in the kernel backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Largest request header block accepted (HTTP/1.1 read buffer and h2 header list).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// h2 streams per connection.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Largest request body accepted, in bytes; larger bodies get 413. Enforced while the
    /// body streams (a declared Content-Length over it is refused before the upstream is
    /// contacted). Absent: no limit.
    #[serde(default = "defaults::max_request_body_bytes")]
    pub max_request_body_bytes: Option<u64>,
    /// PROXY protocol header from a load balancer in front (`off`, `v1`, `v2`,
    /// `optional`): its client address replaces the TCP peer in X-Forwarded-For and logs.
    /// Enable only where the port is reachable solely through that balancer.
    #[serde(default = "defaults::proxy_protocol")]
    pub proxy_protocol: crate::proxy::proxy_protocol::ProxyProtocol,
}

/// `[client_auth]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle; every certificate in it is a trust anchor.
    pub truststore: PathBuf,
    /// CRL files, PEM or DER.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Reject a client whose issuer has no configured CRL (`revocation_unknown`).
    #[serde(default)]
    pub require_crl: bool,
    /// Accepted chains remembered per trust state, so a client presenting the same
    /// certificate again skips re-verifying its signatures; 0 turns the memo off.
    #[serde(default = "defaults::verified_chain_cache")]
    pub verified_chain_cache: usize,
    /// Identity allow-list; absent or empty means any certificate that verifies.
    #[serde(default)]
    pub allow: AllowConfig,
}

/// `[client_auth.allow]`: a certificate is allowed if it matches one entry of any list.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// Subject commonName values.
    #[serde(default)]
    pub common_names: Vec<String>,
    /// Subject organizationalUnitName values.
    #[serde(default)]
    pub organizational_units: Vec<String>,
    /// SAN dNSName values, compared case-insensitively.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// SAN URI values; a trailing `/*` matches one path prefix.
    #[serde(default)]
    pub uris: Vec<String>,
    /// SHA-256 of the leaf certificate DER, hex; colons and case are ignored.
    #[serde(default)]
    pub fingerprints_sha256: Vec<String>,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER, base64 or hex.
    #[serde(default)]
    pub spki_sha256: Vec<String>,
}

impl AllowConfig {
    /// True when no list has an entry: every verified certificate is allowed.
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty()
            && self.organizational_units.is_empty()
            && self.dns_names.is_empty()
            && self.uris.is_empty()
            && self.fingerprints_sha256.is_empty()
            && self.spki_sha256.is_empty()
    }
}

/// `[upstream]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` of the app.
    pub url: String,
    /// Connecting to the upstream takes at most this long (502 after).
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response headers (504 after).
    #[serde(default = "defaults::response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Idle upstream connections are kept this long for reuse.
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per host.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle: usize,
    /// `https://` upstreams: PEM bundle of the CAs trusted for the upstream's server
    /// certificate (required; no system roots are used).
    #[serde(default = "defaults::upstream_ca")]
    pub ca: Option<PathBuf>,
    /// `https://` upstreams: PEM chain presented to the upstream (re-originated mTLS).
    #[serde(default = "defaults::upstream_client_certificate")]
    pub client_certificate: Option<PathBuf>,
    /// `https://` upstreams: the private key of `client_certificate`.
    #[serde(default = "defaults::upstream_client_key")]
    pub client_key: Option<PathBuf>,
    /// `https://` upstreams: the name sent as SNI and verified in the upstream's
    /// certificate; default: the host of `url`.
    #[serde(default = "defaults::upstream_server_name")]
    pub server_name: Option<String>,
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the plain-HTTP admin listener. Keep it on loopback or a private port.
    pub address: SocketAddr,
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Poll the config and every file it names this often; reload when content changes.
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
}

/// `[runtime]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; default: the CPUs this process may use.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// Every default value, in one place.
pub mod defaults {
    use super::HeaderFamily;
    use std::path::PathBuf;
    use std::time::Duration;

    /// `listener.handshake_timeout`
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// `listener.header_read_timeout`
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// `listener.idle_timeout`: longer than CloudFront's default origin keep-alive (5 s), so
    /// CloudFront, not the origin, closes idle connections and never reuses one we just closed.
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    /// `listener.shutdown_timeout`
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    /// `listener.max_connections`
    pub fn max_connections() -> usize {
        10_000
    }
    /// `listener.max_header_bytes`
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    /// `listener.max_concurrent_streams`
    pub fn max_concurrent_streams() -> u32 {
        100
    }
    /// `listener.max_request_body_bytes`: no limit; the upstream decides.
    pub fn max_request_body_bytes() -> Option<u64> {
        None
    }
    /// `client_auth.verified_chain_cache`: far more distinct client certificates than one
    /// origin normally sees (CloudFront presents one), and about 2 MiB when full.
    pub fn verified_chain_cache() -> usize {
        1024
    }
    /// `listener.proxy_protocol`: off (clients connect directly).
    pub fn proxy_protocol() -> crate::proxy::proxy_protocol::ProxyProtocol {
        crate::proxy::proxy_protocol::ProxyProtocol::Off
    }
    /// `upstream.connect_timeout`
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    /// `upstream.response_timeout`
    pub fn response_timeout() -> Duration {
        Duration::from_secs(60)
    }
    /// `upstream.pool_idle_timeout`
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    /// `upstream.pool_max_idle`
    pub fn pool_max_idle() -> usize {
        64
    }
    /// `upstream.ca`: none (required for `https://` upstreams).
    pub fn upstream_ca() -> Option<PathBuf> {
        None
    }
    /// `upstream.client_certificate`: none (no client certificate to the upstream).
    pub fn upstream_client_certificate() -> Option<PathBuf> {
        None
    }
    /// `upstream.client_key`: none.
    pub fn upstream_client_key() -> Option<PathBuf> {
        None
    }
    /// `upstream.server_name`: none (the host of `upstream.url`).
    pub fn upstream_server_name() -> Option<String> {
        None
    }
    /// `forward.client_cert_headers`
    pub fn client_cert_headers() -> Vec<HeaderFamily> {
        vec![HeaderFamily::Xfcc]
    }
    /// `log.level`
    pub fn log_level() -> String {
        "info".to_owned()
    }
    /// `log.access_log`
    pub fn access_log() -> bool {
        true
    }
}

impl Config {
    /// Reads, parses and validates a config file, resolving relative paths.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            path: path.to_owned(),
            reason,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses config text as if it had been read from `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(&e, text),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.resolve_paths(&base);
        config.base_dir = base;
        config.source = path.to_owned();
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.listener.certificate);
        fix(&mut self.listener.private_key);
        fix(&mut self.client_auth.truststore);
        self.client_auth.crls.iter_mut().for_each(fix);
        for p in [
            &mut self.upstream.ca,
            &mut self.upstream.client_certificate,
            &mut self.upstream.client_key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let target = crate::proxy::forward::UpstreamTarget::parse(&self.upstream.url)
            .map_err(|m| self.invalid("upstream.url", m))?;
        self.validate_upstream_tls(target.is_tls())?;
        if self.listener.max_connections == 0 {
            return Err(self.invalid("listener.max_connections", "must be at least 1"));
        }
        if self.listener.max_header_bytes < 1024 {
            return Err(self.invalid("listener.max_header_bytes", "must be at least 1024"));
        }
        if self.listener.max_concurrent_streams == 0 {
            return Err(self.invalid("listener.max_concurrent_streams", "must be at least 1"));
        }
        if self.listener.max_request_body_bytes == Some(0) {
            return Err(self.invalid(
                "listener.max_request_body_bytes",
                "must be at least 1; remove the key for no limit",
            ));
        }
        for (key, d) in [
            (
                "listener.handshake_timeout",
                self.listener.handshake_timeout,
            ),
            (
                "listener.header_read_timeout",
                self.listener.header_read_timeout,
            ),
            ("listener.idle_timeout", self.listener.idle_timeout),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.response_timeout", self.upstream.response_timeout),
        ] {
            if d.is_zero() {
                return Err(self.invalid(key, "must be greater than zero, e.g. \"10s\""));
            }
        }
        if self.client_auth.require_crl && self.client_auth.crls.is_empty() {
            // Fail closed at start-up rather than silently accepting: with no CRL at all,
            // rustls would skip revocation entirely and `require_crl` would promise a check
            // that never happens.
            return Err(self.invalid(
                "client_auth.require_crl",
                "is true but client_auth.crls is empty; add the CRL of every client CA, or set require_crl = false",
            ));
        }
        if matches!(self.runtime.worker_threads, Some(0)) {
            return Err(self.invalid("runtime.worker_threads", "must be at least 1"));
        }
        if matches!(self.reload.watch_interval, Some(d) if d < Duration::from_millis(10)) {
            return Err(self.invalid("reload.watch_interval", "must be at least 10ms"));
        }
        if self.forward.client_cert_headers.is_empty() {
            return Err(self.invalid(
                "forward.client_cert_headers",
                "must name at least one of \"xfcc\", \"alb\", \"rfc9440\"; the upstream needs the verified identity",
            ));
        }
        crate::tls::allow::AllowList::compile(&self.client_auth.allow)
            .map_err(|(key, m)| self.invalid(&format!("client_auth.allow.{key}"), m))?;
        Ok(())
    }

    /// The TLS keys of `[upstream]` apply to `https://` only, and fail closed: an https
    /// upstream without `ca` would otherwise have to trust something implicit.
    fn validate_upstream_tls(&self, https: bool) -> Result<(), ConfigError> {
        let u = &self.upstream;
        if !https {
            for (key, set) in [
                ("upstream.ca", u.ca.is_some()),
                (
                    "upstream.client_certificate",
                    u.client_certificate.is_some(),
                ),
                ("upstream.client_key", u.client_key.is_some()),
                ("upstream.server_name", u.server_name.is_some()),
            ] {
                if set {
                    return Err(self.invalid(
                        key,
                        "only applies to an https:// upstream.url; remove it or use https://",
                    ));
                }
            }
            return Ok(());
        }
        if u.ca.is_none() {
            return Err(self.invalid(
                "upstream.ca",
                "is required for an https:// upstream: the PEM file of the CA(s) that issued the upstream's certificate",
            ));
        }
        if u.client_certificate.is_some() != u.client_key.is_some() {
            return Err(self.invalid(
                if u.client_certificate.is_some() {
                    "upstream.client_key"
                } else {
                    "upstream.client_certificate"
                },
                "upstream.client_certificate and upstream.client_key must be set together",
            ));
        }
        if let Some(name) = &u.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(self.invalid(
                    "upstream.server_name",
                    format!("{name:?} is not a DNS name or IP address"),
                ));
            }
        }
        Ok(())
    }

    /// Every file the config names, for change detection by the reloader.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.source.clone(),
            self.listener.certificate.clone(),
            self.listener.private_key.clone(),
            self.client_auth.truststore.clone(),
        ];
        files.extend(self.client_auth.crls.iter().cloned());
        files.extend(
            [
                &self.upstream.ca,
                &self.upstream.client_certificate,
                &self.upstream.client_key,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
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
        let text = include_str!("../config/mtls-shield.toml");
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
        assert_eq!(c.listener.handshake_timeout, Duration::from_secs(10));
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
