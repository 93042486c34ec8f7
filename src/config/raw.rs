//! The config file as TOML spells it, and its conversion into the checked types of
//! [`super`]. Unknown keys are refused here (`deny_unknown_fields`); defaults come from
//! [`super::defaults`]; every refusal names the file and the dotted key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::sources::parse_allow_sources;
use super::{
    defaults, AdminConfig, AllowConfig, ClientAuthConfig, Config, ConfigError, CrlFetchConfig,
    ForwardConfig, Limits, ListenerConfig, LogConfig, OcspConfig, OcspMode, ProxyProtocol,
    RawRoute, ReloadConfig, ReportOnlyConfig, RuntimeConfig, SniPolicy, Timeouts,
    UpstreamClientCert, UpstreamConfig, UpstreamTarget, UpstreamTls, ViewerConfig, ViewerHeaders,
};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listener: RawListener,
    client_auth: RawClientAuth,
    upstream: RawUpstream,
    #[serde(default)]
    upstreams: std::collections::BTreeMap<String, RawUpstream>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    forward: ForwardConfig,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    viewer: Option<RawViewer>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    reload: ReloadConfig,
    #[serde(default)]
    runtime: RuntimeConfig,
}

/// `[listener]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    /// Socket address to bind, e.g. `0.0.0.0:8443`.
    address: SocketAddr,
    /// PEM chain, leaf first.
    certificate: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 PEM private key.
    private_key: PathBuf,
    /// Allow TLS session resumption (tickets and a session cache). Off by default.
    #[serde(default)]
    session_resumption: bool,
    /// A peer that has not finished the TLS handshake by then is dropped.
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    handshake_timeout: Duration,
    /// A client must send a complete request header block within this time.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this long without a request.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[serde(default = "defaults::shutdown_timeout", with = "humantime_serde")]
    shutdown_timeout: Duration,
    /// Connections served at once; further connections wait in the kernel backlog.
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    /// Largest request header block accepted (HTTP/1.1 read buffer and h2 header list).
    #[serde(default = "defaults::max_header_bytes")]
    max_header_bytes: usize,
    /// h2 streams per connection.
    #[serde(default = "defaults::max_concurrent_streams")]
    max_concurrent_streams: u32,
    /// Largest request body accepted, in bytes; larger bodies get 413. Enforced while the
    /// body streams (a declared Content-Length over it is refused before the upstream is
    /// contacted). Absent: no limit.
    #[serde(default = "defaults::max_request_body_bytes")]
    max_request_body_bytes: Option<u64>,
    /// PROXY protocol header from a load balancer in front (`off`, `v1`, `v2`,
    /// `optional`): its client address replaces the TCP peer in X-Forwarded-For and logs.
    /// Enable only where the port is reachable solely through that balancer.
    #[serde(default = "defaults::proxy_protocol")]
    proxy_protocol: ProxyProtocol,
    /// Answer `421 Misdirected Request` to a request whose Host (or `:authority`) is not the
    /// server name (SNI) its connection was opened for. Off by default: CloudFront sends the
    /// origin domain as SNI but forwards the viewer's Host when an origin request policy
    /// includes it.
    #[serde(default)]
    require_sni_host_match: bool,
    /// Networks (CIDR) that may connect; a connection from anywhere else is closed before a
    /// byte is read. Absent: every source.
    #[serde(default)]
    allow_sources: Option<Vec<String>>,
    /// A file of more networks: AWS's `ip-ranges.json` (its CLOUDFRONT_ORIGIN_FACING prefixes)
    /// or one CIDR a line; reloaded like every file.
    #[serde(default)]
    allow_sources_file: Option<PathBuf>,
}

/// `[client_auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    truststore: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default)]
    require_crl: bool,
    #[serde(default = "defaults::verified_chain_cache")]
    verified_chain_cache: usize,
    #[serde(default)]
    allow: AllowConfig,
    #[serde(default)]
    crl_urls: Vec<String>,
    #[serde(default = "defaults::crl_refresh", with = "humantime_serde")]
    crl_refresh: Duration,
    #[serde(default = "defaults::crl_fetch_timeout", with = "humantime_serde")]
    crl_fetch_timeout: Duration,
    #[serde(default = "defaults::crl_max_bytes")]
    crl_max_bytes: u64,
    #[serde(default)]
    crl_cache_dir: Option<PathBuf>,
    #[serde(default)]
    crl_ca: Option<PathBuf>,
    #[serde(default)]
    crl_from_distribution_points: bool,
    #[serde(default = "defaults::advertise_ca_names")]
    advertise_ca_names: bool,
    #[serde(default)]
    report_only: Option<RawReportOnly>,
    #[serde(default)]
    ocsp: OcspMode,
    #[serde(default)]
    ocsp_responder: String,
    #[serde(default = "defaults::ocsp_timeout", with = "humantime_serde")]
    ocsp_timeout: Duration,
    #[serde(default)]
    ocsp_soft_fail: bool,
    #[serde(default = "defaults::ocsp_refresh", with = "humantime_serde")]
    ocsp_refresh: Duration,
}

/// `[client_auth.report_only]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReportOnly {
    #[serde(default)]
    truststore: Option<PathBuf>,
    #[serde(default)]
    crls: Option<Vec<PathBuf>>,
    #[serde(default)]
    allow: Option<AllowConfig>,
}

/// `[viewer]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawViewer {
    #[serde(default)]
    headers: ViewerHeaders,
    truststore: PathBuf,
    #[serde(default)]
    intermediates: Option<PathBuf>,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default)]
    crl_urls: Vec<String>,
    #[serde(default)]
    require_crl: bool,
    #[serde(default)]
    ocsp: OcspMode,
    #[serde(default)]
    ocsp_responder: String,
    #[serde(default)]
    ocsp_soft_fail: bool,
    #[serde(default = "defaults::verified_chain_cache")]
    verified_chain_cache: usize,
    #[serde(default = "defaults::viewer_required")]
    required: bool,
    #[serde(default)]
    edges: Option<AllowConfig>,
    #[serde(default)]
    allow: AllowConfig,
}

/// `[upstream]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "defaults::response_timeout", with = "humantime_serde")]
    response_timeout: Duration,
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    pool_idle_timeout: Duration,
    #[serde(default = "defaults::pool_max_idle")]
    pool_max_idle: usize,
    #[serde(default = "defaults::upstream_ca")]
    ca: Option<PathBuf>,
    #[serde(default = "defaults::upstream_client_certificate")]
    client_certificate: Option<PathBuf>,
    #[serde(default = "defaults::upstream_client_key")]
    client_key: Option<PathBuf>,
    #[serde(default = "defaults::upstream_server_name")]
    server_name: Option<String>,
}

/// Where a refusal is reported: the config file, and relative paths' base.
struct Ctx<'a> {
    source: &'a Path,
    base: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_relative() {
            self.base.join(p)
        } else {
            p
        }
    }
}

impl RawConfig {
    /// Checks every value and builds the typed config. `source` is the config file; relative
    /// paths resolve against `base`.
    pub(super) fn into_config(self, source: &Path, base: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx { source, base };
        let raw_listener = self.listener;
        check_listener(&ctx, &raw_listener)?;
        let allow_sources = parse_allow_sources(
            raw_listener.allow_sources.as_deref(),
            raw_listener.allow_sources_file.is_some(),
            source,
        )?;
        let listener = raw_listener.into_typed(&ctx);
        let mut client_auth = self.client_auth.into_typed(&ctx)?;
        let viewer = self
            .viewer
            .map(|v| v.into_typed(&ctx, &client_auth))
            .transpose()?;
        if let Some(v) = &viewer {
            // One fetcher fetches every CRL URL, with one set of fetch settings; each trust
            // domain then uses only the CRLs its own CAs signed.
            let urls = &mut client_auth.crl_fetch.urls;
            for url in &v.crl_urls {
                if !urls.contains(url) {
                    urls.push(url.clone());
                }
            }
        }
        let upstream = self.upstream.into_typed(&ctx, "upstream")?;
        let mut upstreams = std::collections::BTreeMap::new();
        for (name, raw) in self.upstreams {
            let table = format!("upstreams.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ctx.invalid(
                    &table,
                    "an upstream name is letters, digits, '-' and '_' only",
                ));
            }
            upstreams.insert(name, raw.into_typed(&ctx, &table)?);
        }
        let routes = self.routes;
        if matches!(self.runtime.worker_threads, Some(0)) {
            return Err(ctx.invalid("runtime.worker_threads", "must be at least 1"));
        }
        if matches!(self.reload.watch_interval, Some(d) if d < Duration::from_millis(10)) {
            return Err(ctx.invalid("reload.watch_interval", "must be at least 10ms"));
        }
        if self.forward.client_cert_headers.is_empty() {
            return Err(ctx.invalid(
                "forward.client_cert_headers",
                "must name at least one of \"xfcc\", \"alb\", \"rfc9440\"; the upstream needs the verified identity",
            ));
        }
        Ok(Config {
            listener,
            client_auth,
            upstream,
            upstreams,
            routes,
            allow_sources,
            forward: self.forward,
            admin: self.admin.map(|mut a| {
                a.bearer_token_file = a.bearer_token_file.map(|p| ctx.resolve(p));
                a
            }),
            viewer,
            log: self.log,
            reload: self.reload,
            runtime: self.runtime,
            base_dir: base.to_owned(),
            source: source.to_owned(),
        })
    }
}

fn check_listener(ctx: &Ctx<'_>, l: &RawListener) -> Result<(), ConfigError> {
    if l.max_connections == 0 {
        return Err(ctx.invalid("listener.max_connections", "must be at least 1"));
    }
    if l.max_header_bytes < 1024 {
        return Err(ctx.invalid("listener.max_header_bytes", "must be at least 1024"));
    }
    if l.max_concurrent_streams == 0 {
        return Err(ctx.invalid("listener.max_concurrent_streams", "must be at least 1"));
    }
    if l.max_request_body_bytes == Some(0) {
        return Err(ctx.invalid(
            "listener.max_request_body_bytes",
            "must be at least 1; remove the key for no limit",
        ));
    }
    for (key, d) in [
        ("listener.handshake_timeout", l.handshake_timeout),
        ("listener.header_read_timeout", l.header_read_timeout),
        ("listener.idle_timeout", l.idle_timeout),
    ] {
        if d.is_zero() {
            return Err(ctx.invalid(key, "must be greater than zero, e.g. \"10s\""));
        }
    }
    Ok(())
}

impl RawListener {
    /// The checked `[listener]`, its paths resolved.
    fn into_typed(self, ctx: &Ctx<'_>) -> ListenerConfig {
        ListenerConfig {
            address: self.address,
            certificate: ctx.resolve(self.certificate),
            private_key: ctx.resolve(self.private_key),
            session_resumption: self.session_resumption,
            timeouts: Timeouts {
                handshake: self.handshake_timeout,
                header_read: self.header_read_timeout,
                idle: self.idle_timeout,
                shutdown: self.shutdown_timeout,
            },
            limits: Limits {
                max_connections: self.max_connections,
                max_header_bytes: self.max_header_bytes,
                max_concurrent_streams: self.max_concurrent_streams,
                max_request_body_bytes: self.max_request_body_bytes,
            },
            proxy_protocol: self.proxy_protocol,
            sni: if self.require_sni_host_match {
                SniPolicy::RequireHostMatch
            } else {
                SniPolicy::AnyHost
            },
            allow_sources_file: self.allow_sources_file.map(|p| ctx.resolve(p)),
        }
    }
}

impl RawClientAuth {
    fn into_typed(self, ctx: &Ctx<'_>) -> Result<ClientAuthConfig, ConfigError> {
        if self.require_crl
            && self.crls.is_empty()
            && self.crl_urls.is_empty()
            && !self.crl_from_distribution_points
        {
            // Fail closed at start-up rather than silently accepting: with no CRL at all,
            // there would be no revocation check, and `require_crl` would promise one that
            // never happens.
            return Err(ctx.invalid(
                "client_auth.require_crl",
                "is true but client_auth.crls is empty; add the CRL of every client CA, or set require_crl = false",
            ));
        }
        let crl_fetch = self.crl_fetch(ctx)?;
        let ocsp = self.ocsp(ctx)?;
        let allow = self.allow.clone();
        Ok(ClientAuthConfig {
            truststore: ctx.resolve(self.truststore),
            crls: self.crls.into_iter().map(|p| ctx.resolve(p)).collect(),
            require_crl: self.require_crl,
            verified_chain_cache: self.verified_chain_cache,
            allow,
            crl_fetch,
            advertise_ca_names: self.advertise_ca_names,
            report_only: self.report_only.map(|r| r.into_typed(ctx)).transpose()?,
            ocsp,
        })
    }

    fn ocsp(&self, ctx: &Ctx<'_>) -> Result<OcspConfig, ConfigError> {
        let responder = check_ocsp_responder(ctx, "client_auth", &self.ocsp_responder)?;
        if self.ocsp_timeout.is_zero() {
            return Err(ctx.invalid(
                "client_auth.ocsp_timeout",
                "must be greater than zero, e.g. \"3s\"",
            ));
        }
        if self.ocsp_refresh < Duration::from_secs(1) {
            return Err(ctx.invalid("client_auth.ocsp_refresh", "must be at least 1s"));
        }
        Ok(OcspConfig {
            refresh: self.ocsp_refresh,
            mode: self.ocsp,
            responder,
            timeout: self.ocsp_timeout,
            soft_fail: self.ocsp_soft_fail,
        })
    }

    fn crl_fetch(&self, ctx: &Ctx<'_>) -> Result<CrlFetchConfig, ConfigError> {
        check_crl_urls(ctx, "client_auth", &self.crl_urls)?;
        if self.crl_refresh < Duration::from_secs(1) {
            return Err(ctx.invalid("client_auth.crl_refresh", "must be at least 1s"));
        }
        if self.crl_fetch_timeout.is_zero() {
            return Err(ctx.invalid(
                "client_auth.crl_fetch_timeout",
                "must be greater than zero, e.g. \"10s\"",
            ));
        }
        if self.crl_max_bytes < 1024 {
            return Err(ctx.invalid("client_auth.crl_max_bytes", "must be at least 1024"));
        }
        Ok(CrlFetchConfig {
            urls: self.crl_urls.clone(),
            refresh: self.crl_refresh,
            timeout: self.crl_fetch_timeout,
            max_bytes: self.crl_max_bytes,
            cache_dir: self.crl_cache_dir.clone().map(|p| ctx.resolve(p)),
            ca: self.crl_ca.clone().map(|p| ctx.resolve(p)),
            from_distribution_points: self.crl_from_distribution_points,
        })
    }
}

/// The `crl_urls` of `table`: each an http(s) URL with a host, none listed twice.
fn check_crl_urls(ctx: &Ctx<'_>, table: &str, urls: &[String]) -> Result<(), ConfigError> {
    for (i, url) in urls.iter().enumerate() {
        let key = format!("{table}.crl_urls[{i}]");
        let uri: http::Uri = url.parse().map_err(|e| {
            ctx.invalid(
                &key,
                format!("{url:?} is not a URL ({e}); expected http://host/path.crl"),
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ctx.invalid(
                &key,
                format!("{url:?}: a CRL URL must be http:// or https:// with a host"),
            ));
        }
        if urls[..i].contains(url) {
            return Err(ctx.invalid(&key, format!("{url:?} is listed twice")));
        }
    }
    Ok(())
}

/// The `ocsp_responder` of `table`, trimmed: `None` when empty, else an `http://` URL.
fn check_ocsp_responder(
    ctx: &Ctx<'_>,
    table: &str,
    responder: &str,
) -> Result<Option<String>, ConfigError> {
    let responder = responder.trim();
    if !responder.is_empty() && !responder.starts_with("http://") {
        // OCSP is plain HTTP by design (RFC 6960 §A.1): the answer is signed, and an
        // https responder would need its own revocation check to be trusted.
        return Err(ctx.invalid(
            &format!("{table}.ocsp_responder"),
            format!("{responder:?} is not an http:// URL; OCSP responders are reached over plain HTTP (the answers are signed)"),
        ));
    }
    Ok((!responder.is_empty()).then(|| responder.to_owned()))
}

impl RawViewer {
    /// The checked `[viewer]`; OCSP's timeout and refresh are `client_auth`'s.
    fn into_typed(
        self,
        ctx: &Ctx<'_>,
        client_auth: &ClientAuthConfig,
    ) -> Result<ViewerConfig, ConfigError> {
        // Security: the edges are the trust boundary. Without them any client that may
        // connect could write a viewer certificate header and be taken for that viewer.
        let edges = match self.edges {
            Some(e) if !e.is_empty() => e,
            _ => {
                return Err(ctx.invalid(
                    "viewer.edges",
                    "is required and must not be empty: name the connections that may carry viewer certificates, e.g. fingerprints_sha256 = [\"<CloudFront origin certificate SHA-256>\"]",
                ))
            }
        };
        if self.require_crl && self.crls.is_empty() && self.crl_urls.is_empty() {
            // Fail closed at start-up, as client_auth.require_crl does.
            return Err(ctx.invalid(
                "viewer.require_crl",
                "is true but viewer.crls and viewer.crl_urls are empty; add the CRL of every viewer CA, or set require_crl = false",
            ));
        }
        check_crl_urls(ctx, "viewer", &self.crl_urls)?;
        let responder = check_ocsp_responder(ctx, "viewer", &self.ocsp_responder)?;
        Ok(ViewerConfig {
            headers: self.headers,
            truststore: ctx.resolve(self.truststore),
            intermediates: self.intermediates.map(|p| ctx.resolve(p)),
            crls: self.crls.into_iter().map(|p| ctx.resolve(p)).collect(),
            crl_urls: self.crl_urls,
            require_crl: self.require_crl,
            ocsp: OcspConfig {
                mode: self.ocsp,
                responder,
                timeout: client_auth.ocsp.timeout,
                soft_fail: self.ocsp_soft_fail,
                refresh: client_auth.ocsp.refresh,
            },
            verified_chain_cache: self.verified_chain_cache,
            required: self.required,
            edges,
            allow: self.allow,
        })
    }
}

impl RawReportOnly {
    fn into_typed(self, ctx: &Ctx<'_>) -> Result<ReportOnlyConfig, ConfigError> {
        let allow = self.allow;
        Ok(ReportOnlyConfig {
            truststore: self.truststore.map(|p| ctx.resolve(p)),
            crls: self
                .crls
                .map(|c| c.into_iter().map(|p| ctx.resolve(p)).collect()),
            allow,
        })
    }
}

impl RawUpstream {
    /// The typed upstream of the table at `table` (e.g. `upstream`).
    fn into_typed(self, ctx: &Ctx<'_>, table: &str) -> Result<UpstreamConfig, ConfigError> {
        let key = |k: &str| format!("{table}.{k}");
        let url = UpstreamTarget::parse(&self.url)
            .map_err(|e| ctx.invalid(&key("url"), e.to_string()))?;
        for (k, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if d.is_zero() {
                return Err(ctx.invalid(&key(k), "must be greater than zero, e.g. \"10s\""));
            }
        }
        let tls = self.tls(ctx, table, &url)?;
        Ok(UpstreamConfig {
            url,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle: self.pool_max_idle,
            tls,
        })
    }

    /// The TLS keys apply to `https://` only, and fail closed: an https upstream without `ca`
    /// would otherwise have to trust something implicit.
    fn tls(
        &self,
        ctx: &Ctx<'_>,
        table: &str,
        url: &UpstreamTarget,
    ) -> Result<Option<UpstreamTls>, ConfigError> {
        let key = |k: &str| format!("{table}.{k}");
        if !url.is_tls() {
            for (k, set) in [
                ("ca", self.ca.is_some()),
                ("client_certificate", self.client_certificate.is_some()),
                ("client_key", self.client_key.is_some()),
                ("server_name", self.server_name.is_some()),
            ] {
                if set {
                    return Err(ctx.invalid(
                        &key(k),
                        "only applies to an https:// upstream.url; remove it or use https://",
                    ));
                }
            }
            return Ok(None);
        }
        let Some(ca) = &self.ca else {
            return Err(ctx.invalid(
                &key("ca"),
                "is required for an https:// upstream: the PEM file of the CA(s) that issued the upstream's certificate",
            ));
        };
        let client = match (&self.client_certificate, &self.client_key) {
            (Some(certificate), Some(k)) => Some(UpstreamClientCert {
                certificate: ctx.resolve(certificate.clone()),
                key: ctx.resolve(k.clone()),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(ctx.invalid(
                    &key(if self.client_certificate.is_some() {
                        "client_key"
                    } else {
                        "client_certificate"
                    }),
                    "upstream.client_certificate and upstream.client_key must be set together",
                ))
            }
        };
        let server_name = match (&self.server_name, url.host()) {
            (Some(name), _) => name.clone(),
            (None, Some(host)) => host.to_owned(),
            (None, None) => {
                return Err(ctx.invalid(&key("server_name"), "is required for this upstream"))
            }
        };
        if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
            return Err(ctx.invalid(
                &key("server_name"),
                format!("{server_name:?} is not a DNS name or IP address"),
            ));
        }
        Ok(Some(UpstreamTls {
            ca: ctx.resolve(ca.clone()),
            client,
            server_name,
        }))
    }
}
