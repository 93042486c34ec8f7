//! `mtls-shield check`: load and validate a config exactly as `run` would, without binding a
//! port, and print what it would serve and trust, with warnings in the manner of API
//! Gateway's truststore warnings.
//!
//! The verdict comes from the same code `run` uses ([`Config::load`], then
//! `app::generation::build`), so `check` passes exactly when `run` would start. `run` stops at
//! the first broken file; `check` also loads each file on its own (through the same loaders
//! that [`TlsState::build`](crate::tls::TlsState::build) calls) so that every broken file
//! gets its own error line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::app::generation;
use crate::config::OcspMode;
use crate::config::{AllowConfig, Config, ProxyProtocol, SniPolicy, UpstreamConfig, ViewerMode};
use crate::policy::Policy;
use crate::tls::load::{self, LoadError};
use crate::tls::state::{self, BuildInputs};
use crate::x509::{cert_info, rfc3339_z, CertInfo, CrlInfo, CrlSignature};

/// A certificate that expires within this many days gets a warning (API Gateway's threshold).
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 30;

const DAY: i64 = 86_400;

/// How `check` prints its report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object (the [`Report`]), for scripts.
    Json,
}

/// A certificate's facts plus whole days until it expires (negative once expired).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertReport {
    /// The facts also used by metrics and reload logs.
    #[serde(flatten)]
    pub(crate) info: CertInfo,
    /// Whole days from the check to notAfter.
    pub(crate) days_left: i64,
}

/// Something that will not stop `run` but deserves attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Warning {
    /// Stable code, e.g. `crl_stale`.
    pub(crate) code: &'static str,
    /// The file it is about.
    pub(crate) file: PathBuf,
    /// What is wrong, what it does, what to do.
    pub(crate) message: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The config file checked.
    pub(crate) config: PathBuf,
    /// True when `run` would start with this config (warnings allowed).
    pub(crate) valid: bool,
    /// The check time, RFC 3339 UTC.
    pub(crate) checked_at: String,
    /// One line per error, each naming its file.
    pub(crate) errors: Vec<String>,
    /// Warnings.
    pub(crate) warnings: Vec<Warning>,
    /// `[listener]`, absent when the config itself does not load.
    pub(crate) listener: Option<ListenerReport>,
    /// The server leaf certificate, when it could be read.
    pub(crate) server_certificate: Option<CertReport>,
    /// The truststore file.
    pub(crate) truststore: Option<PathBuf>,
    /// Every truststore entry that could be read.
    pub(crate) anchors: Vec<CertReport>,
    /// Every CRL that could be read.
    pub(crate) crls: Vec<CrlInfo>,
    /// `[client_auth.allow]`; empty lists mean any certificate that verifies.
    pub(crate) allow: Option<AllowReport>,
    /// `[upstream]`.
    pub(crate) upstream: Option<UpstreamReport>,
    /// Each `client_auth.crl_urls` entry, fetched once.
    pub(crate) crl_urls: Vec<CrlUrlReport>,
    /// `listener.allow_sources` and its file, when either is set.
    pub(crate) sources: Option<SourcesReport>,
    /// Each `[[routes]]` entry, in config order.
    pub(crate) routes: Vec<RouteReport>,
    /// `client_auth.ocsp*`.
    pub(crate) ocsp: Option<OcspReport>,
    /// `[viewer]`, when viewer certificates are judged.
    pub(crate) viewer: Option<ViewerReport>,
}

/// `[viewer]` as `run` would judge viewer certificates.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ViewerReport {
    /// `cloudfront` or `rfc9440`.
    pub(crate) headers: crate::config::ViewerHeaders,
    /// The viewer truststore file.
    pub(crate) truststore: PathBuf,
    /// Its anchors, when it loaded.
    pub(crate) anchors: Vec<CertReport>,
    /// The viewer CRLs in force (files, and URLs fetched once).
    pub(crate) crls: Vec<CrlInfo>,
    /// `viewer.crl_urls`.
    pub(crate) crl_urls: Vec<String>,
    /// `viewer.required`.
    pub(crate) required: bool,
    /// `[viewer.edges]`: the connections whose viewer headers count.
    pub(crate) edges: AllowReport,
    /// `[viewer.allow]`; empty lists mean any viewer that verifies.
    pub(crate) allow: AllowReport,
    /// The routes with viewer rules of their own: `label: mode[, own viewer_allow]`.
    pub(crate) routes: Vec<String>,
}

/// `[listener]` as `run` would apply it, keyed as the config file writes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListenerReport {
    pub(crate) address: SocketAddr,
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
    pub(crate) session_resumption: bool,
    #[serde(with = "humantime_serde")]
    pub(crate) handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_request_body_bytes: Option<u64>,
    pub(crate) proxy_protocol: ProxyProtocol,
    pub(crate) require_sni_host_match: bool,
    /// The networks of `allow_sources`, as parsed.
    pub(crate) allow_sources: Option<Vec<String>>,
    pub(crate) allow_sources_file: Option<PathBuf>,
}

impl ListenerReport {
    fn of(config: &Config) -> Self {
        let l = &config.listener;
        Self {
            address: l.address,
            certificate: l.certificate.clone(),
            private_key: l.private_key.clone(),
            session_resumption: l.session_resumption,
            handshake_timeout: l.timeouts.handshake,
            header_read_timeout: l.timeouts.header_read,
            idle_timeout: l.timeouts.idle,
            shutdown_timeout: l.timeouts.shutdown,
            max_connections: l.limits.max_connections,
            max_header_bytes: l.limits.max_header_bytes,
            max_concurrent_streams: l.limits.max_concurrent_streams,
            max_request_body_bytes: l.limits.max_request_body_bytes,
            proxy_protocol: l.proxy_protocol,
            require_sni_host_match: l.sni == SniPolicy::RequireHostMatch,
            allow_sources: config
                .allow_sources
                .as_ref()
                .map(|nets| nets.iter().map(ToString::to_string).collect()),
            allow_sources_file: l.allow_sources_file.clone(),
        }
    }
}

/// An allow-list as written; every list empty means any certificate that verifies.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AllowReport {
    pub(crate) common_names: Vec<String>,
    pub(crate) organizational_units: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) uris: Vec<String>,
    pub(crate) fingerprints_sha256: Vec<String>,
    pub(crate) spki_sha256: Vec<String>,
}

impl AllowReport {
    /// The lists that have entries, on one line: `uris: a, b; common_names: c`.
    fn summary(&self) -> String {
        self.lists()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}: {}", v.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn lists(&self) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
        [
            ("common_names", &self.common_names),
            ("organizational_units", &self.organizational_units),
            ("dns_names", &self.dns_names),
            ("uris", &self.uris),
            ("fingerprints_sha256", &self.fingerprints_sha256),
            ("spki_sha256", &self.spki_sha256),
        ]
        .into_iter()
    }

    fn of(a: &AllowConfig) -> Self {
        Self {
            common_names: a.common_names.clone(),
            organizational_units: a.organizational_units.clone(),
            dns_names: a.dns_names.clone(),
            uris: a.uris.clone(),
            fingerprints_sha256: a.fingerprints_sha256.clone(),
            spki_sha256: a.spki_sha256.clone(),
        }
    }

    /// True when no list has an entry.
    fn is_empty(&self) -> bool {
        [
            &self.common_names,
            &self.organizational_units,
            &self.dns_names,
            &self.uris,
            &self.fingerprints_sha256,
            &self.spki_sha256,
        ]
        .iter()
        .all(|l| l.is_empty())
    }
}

/// An upstream as `run` would reach it, keyed as the config file writes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpstreamReport {
    /// Scheme, host and port, or the unix socket.
    pub(crate) url: String,
    #[serde(with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) response_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) pool_max_idle: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_certificate: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_name: Option<String>,
}

impl UpstreamReport {
    fn of(u: &UpstreamConfig) -> Self {
        let tls = u.tls.as_ref();
        let client = tls.and_then(|t| t.client.as_ref());
        Self {
            url: u.url.to_string(),
            connect_timeout: u.connect_timeout,
            response_timeout: u.response_timeout,
            pool_idle_timeout: u.pool_idle_timeout,
            pool_max_idle: u.pool_max_idle,
            ca: tls.map(|t| t.ca.clone()),
            client_certificate: client.map(|c| c.certificate.clone()),
            client_key: client.map(|c| c.key.clone()),
            server_name: tls.map(|t| t.server_name.clone()),
        }
    }
}

/// OCSP as `run` would apply it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OcspReport {
    /// `off`, `if_no_crl` or `always`.
    pub(crate) mode: OcspMode,
    /// `ocsp_responder`, when set (else each certificate's AIA URL).
    pub(crate) responder: Option<String>,
    /// `ocsp_timeout`, seconds.
    pub(crate) timeout_seconds: f64,
    /// `ocsp_refresh`, seconds.
    pub(crate) refresh_seconds: u64,
    /// `ocsp_soft_fail`.
    pub(crate) soft_fail: bool,
}

/// Who may connect at all.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourcesReport {
    /// `listener.allow_sources_file`, when set.
    pub(crate) file: Option<PathBuf>,
    /// Prefixes loaded from the key and the file together, as written (overlaps counted).
    pub(crate) prefixes: usize,
}

/// One `[[routes]]` entry as `run` compiled it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteReport {
    /// Its metrics and log label: the name, or the index.
    pub(crate) label: String,
    /// `any host`, an exact name, or `*.suffix`.
    pub(crate) host: String,
    /// The normalised prefix.
    pub(crate) path_prefix: String,
    /// Empty: every method.
    pub(crate) methods: Vec<String>,
    /// The named upstream, or `upstream` for the default.
    pub(crate) upstream: String,
    /// Whether the route has its own allow-list.
    pub(crate) restricted: bool,
}

/// One CRL URL, fetched once by `check`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CrlUrlReport {
    /// The URL.
    pub(crate) url: String,
    /// The CRL it served, when it served a usable one.
    pub(crate) crl: Option<CrlInfo>,
    /// Why it did not.
    pub(crate) problem: Option<String>,
}

impl Report {
    fn empty(config: &Path, now: i64) -> Report {
        Report {
            config: config.to_owned(),
            valid: false,
            checked_at: rfc3339_z(now),
            errors: Vec::new(),
            warnings: Vec::new(),
            listener: None,
            server_certificate: None,
            truststore: None,
            anchors: Vec::new(),
            crls: Vec::new(),
            allow: None,
            upstream: None,
            ocsp: None,
            viewer: None,
            crl_urls: Vec::new(),
            sources: None,
            routes: Vec::new(),
        }
    }

    fn error(&mut self, e: impl ToString) {
        let line = e.to_string();
        // The per-file pass and the full build usually report the same failure: once is enough.
        if !self.errors.contains(&line) {
            self.errors.push(line);
        }
    }

    fn warn(&mut self, code: &'static str, file: &Path, message: String) {
        self.warnings.push(Warning {
            code,
            file: file.to_owned(),
            message,
        });
    }
}

/// Checks the config at `path` as of `now` (Unix seconds).
pub(crate) fn check(path: &Path, now: i64) -> Report {
    let mut report = Report::empty(path, now);
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            report.error(e);
            return report;
        }
    };
    report.listener = Some(ListenerReport::of(&config));
    report.truststore = Some(config.client_auth.truststore.clone());
    report.allow = Some(AllowReport::of(&config.client_auth.allow));
    report.upstream = Some(UpstreamReport::of(&config.upstream));
    let ocsp = &config.client_auth.ocsp;
    report.ocsp = Some(OcspReport {
        mode: ocsp.mode,
        responder: ocsp.responder.clone(),
        timeout_seconds: ocsp.timeout.as_secs_f64(),
        refresh_seconds: ocsp.refresh.as_secs(),
        soft_fail: ocsp.soft_fail,
    });
    let policy = match Policy::compile(&config) {
        Ok(p) => p,
        Err(e) => {
            report.error(e);
            return report;
        }
    };
    report.routes = policy
        .routes
        .routes()
        .iter()
        .map(|r| RouteReport {
            label: r.label().to_owned(),
            host: r.host().to_string(),
            path_prefix: r.path_prefix().to_owned(),
            methods: r.methods().iter().map(|m| m.to_string()).collect(),
            upstream: r.upstream().unwrap_or("upstream").to_owned(),
            restricted: r.allow().is_some(),
        })
        .collect();
    report.viewer = config.viewer.as_ref().map(|v| ViewerReport {
        headers: v.headers,
        truststore: v.truststore.clone(),
        anchors: Vec::new(),
        crls: Vec::new(),
        crl_urls: v.crl_urls.clone(),
        required: v.required,
        edges: AllowReport::of(&v.edges),
        allow: AllowReport::of(&v.allow),
        routes: policy
            .routes
            .routes()
            .iter()
            .filter(|r| r.viewer().is_some() || r.viewer_allow().is_some())
            .map(|r| {
                let mode = match r.viewer() {
                    Some(ViewerMode::Required) => "required",
                    Some(ViewerMode::Optional) => "optional",
                    Some(ViewerMode::Ignored) => "ignored",
                    None if v.required => "required",
                    None => "optional",
                };
                let own = if r.viewer_allow().is_some() {
                    ", own viewer_allow"
                } else {
                    ""
                };
                format!("{}: {mode}{own}", r.label())
            })
            .collect(),
    });

    // Pass 1: every file on its own, so each broken one gets its own line.
    let server = check_server(&config, &mut report);
    let loaded_anchors = match state::load_anchors(&config.client_auth.truststore) {
        Ok(anchors) => anchors,
        Err(e) => {
            report.error(e);
            Vec::new()
        }
    };
    let algs = crate::tls::provider().signature_verification_algorithms;
    let mut loaded_crls = Vec::new();
    for crl_path in &config.client_auth.crls {
        match state::load_crl_file(crl_path, &loaded_anchors, &algs) {
            Ok(c) => loaded_crls.extend(c),
            Err(e) => report.error(e),
        }
    }
    let anchors: Vec<CertInfo> = loaded_anchors.into_iter().map(|a| a.info).collect();
    let crls: Vec<CrlInfo> = crate::tls::crl::choose(loaded_crls)
        .into_iter()
        .map(|c| c.info)
        .collect();

    // Pass 2: the verdict, from the very code `run` starts with (generation 1, no previous).
    // It also covers what pass 1 does not look at (the verifier build, the upstream client).
    // The CRL URLs, fetched once each (and the cache dir, as `run` reads it at start-up).
    let inputs = match crate::app::crl::fetch_offline(&config) {
        Ok((fetched, outcomes)) => {
            for (url, outcome) in outcomes {
                let (crl, problem) = match outcome {
                    Ok(info) => (Some(info), None),
                    Err(e) => {
                        report.warn(
                            "crl_url_unusable",
                            Path::new(&url),
                            format!("{e}; `run` starts anyway, but /readyz stays 503 until this URL (or the cache dir) delivers a usable CRL"),
                        );
                        (None, Some(e))
                    }
                };
                report.crl_urls.push(CrlUrlReport { url, crl, problem });
            }
            BuildInputs {
                fetched,
                distribution_points: None,
                ocsp: None,
                viewer_ocsp: None,
            }
        }
        Err(e) => {
            report.error(e);
            BuildInputs::default()
        }
    };
    let built = generation::build(config.clone(), 1, None, &inputs);
    let (server_info, anchors, crls) = match &built {
        // When everything loads, report what `run` would actually serve.
        Ok(generation) => {
            report.sources = generation.sources.prefixes().map(|prefixes| SourcesReport {
                file: config.listener.allow_sources_file.clone(),
                prefixes,
            });
            if let (Some(vr), Some(vt)) = (&mut report.viewer, &generation.viewer) {
                vr.anchors = vt.anchor_infos().map(|a| cert_report(a, now)).collect();
                vr.crls = vt.crls.clone();
            }
            let inv = generation.inventory().clone();
            (Some(inv.server), inv.anchors, inv.crls)
        }
        Err(e) => {
            report.error(e);
            (server, anchors, crls)
        }
    };

    if let Some(s) = &server_info {
        cert_warnings(
            &mut report,
            "server_certificate",
            "server certificate",
            &config.listener.certificate,
            s,
            now,
        );
        report.server_certificate = Some(cert_report(s, now));
    }
    let truststore = config.client_auth.truststore.clone();
    for a in &anchors {
        cert_warnings(&mut report, "anchor", "trust anchor", &truststore, a, now);
        if !a.is_ca {
            report.warn(
                "anchor_not_ca",
                &truststore,
                format!(
                    "truststore entry {} is not a CA certificate (no basicConstraints CA:TRUE): it issues no client certificates and only matches a client presenting this very self-signed certificate; if it is an intermediate or leaf added by mistake, put its issuing CA here instead",
                    a.subject
                ),
            );
        }
        if a.key_cert_sign_forbidden && a.is_ca {
            report.warn(
                "anchor_cannot_issue",
                &truststore,
                format!(
                    "truststore entry {} has a keyUsage extension without keyCertSign: it may not issue certificates (RFC 5280 §6.1.4(n)), so every client chain through it is refused (unknown_ca); re-issue the CA certificate with keyUsage = keyCertSign, cRLSign",
                    a.subject
                ),
            );
        }
        report.anchors.push(cert_report(a, now));
    }
    for c in &crls {
        crl_warnings(&mut report, c, &crls, &anchors, now);
    }
    viewer_warnings(&mut report, now);
    report.crls = crls;
    report.valid = built.is_ok() && report.errors.is_empty();
    report
}

/// The viewer anchors' expiry and the viewer CRLs' freshness, as for `client_auth`'s.
fn viewer_warnings(report: &mut Report, now: i64) {
    let Some(v) = report.viewer.clone() else {
        return;
    };
    for a in &v.anchors {
        cert_warnings(
            report,
            "viewer_anchor",
            "viewer trust anchor",
            &v.truststore,
            &a.info,
            now,
        );
    }
    let infos: Vec<CertInfo> = v.anchors.iter().map(|a| a.info.clone()).collect();
    for c in &v.crls {
        crl_warnings(report, c, &v.crls, &infos, now);
    }
}

/// Loads the server certificate and key through the same loader as `run`, reporting the
/// certificate file and the key file separately.
fn check_server(config: &Config, report: &mut Report) -> Option<CertInfo> {
    let l = &config.listener;
    let provider = crate::tls::provider();
    match load::server_identity(&l.certificate, &l.private_key, &provider) {
        Ok(certified) => {
            if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) =
                certified.keys_match()
            {
                // `run` accepts a key whose type rustls cannot compare with the certificate;
                // say so rather than imply the pair was proven to match.
                report.warn(
                    "server_key_unverified",
                    &l.private_key,
                    format!(
                        "cannot confirm that this key matches {}; check that both come from the same issuance",
                        l.certificate.display()
                    ),
                );
            }
            let leaf = certified.cert.first()?;
            match cert_info(leaf) {
                Ok(info) => Some(info),
                Err(m) => {
                    report.error(LoadError::new(&l.certificate, m));
                    None
                }
            }
        }
        Err(e) => {
            // A key that does not match its certificate is an error, not a warning (the issue
            // lists it among the warnings): `run` refuses to start with it, because every
            // handshake would fail, and `check` must pass exactly when `run` would start.
            let on_certificate = e.path == l.certificate;
            report.error(e);
            if on_certificate {
                // The loader stopped at the certificate: look at the key on its own too.
                if let Err(k) = load::private_key(&l.private_key) {
                    report.error(k);
                }
                None
            } else {
                // The certificate itself read fine (the key is the problem): still show it.
                load::certificates(&l.certificate, "server certificate")
                    .ok()
                    .and_then(|chain| chain.first().and_then(|c| cert_info(c).ok()))
            }
        }
    }
}

fn cert_report(info: &CertInfo, now: i64) -> CertReport {
    CertReport {
        info: info.clone(),
        days_left: (info.not_after - now).div_euclid(DAY),
    }
}

fn cert_warnings(
    report: &mut Report,
    code_prefix: &'static str,
    what: &str,
    file: &Path,
    c: &CertInfo,
    now: i64,
) {
    let (expired, expiring, not_yet) = match code_prefix {
        "server_certificate" => (
            "server_certificate_expired",
            "server_certificate_expiring",
            "server_certificate_not_yet_valid",
        ),
        _ => ("anchor_expired", "anchor_expiring", "anchor_not_yet_valid"),
    };
    // What an expired certificate does differs: clients check the server certificate, while
    // rustls-webpki uses a trust anchor's name and key only and never its dates.
    let effect = if code_prefix == "server_certificate" {
        "clients that verify it (CloudFront does) will refuse the handshake"
    } else {
        "mtls-shield keeps trusting it (a trust anchor's own dates are not checked) but other tools will not; replace it"
    };
    if c.not_after < now {
        report.warn(
            expired,
            file,
            format!(
                "{what} {} expired on {}: {effect}",
                c.subject,
                rfc3339_z(c.not_after)
            ),
        );
    } else if c.not_after - now < EXPIRY_WARNING_DAYS * DAY {
        report.warn(
            expiring,
            file,
            format!(
                "{what} {} expires on {} ({} days left, under {EXPIRY_WARNING_DAYS}): renew it",
                c.subject,
                rfc3339_z(c.not_after),
                (c.not_after - now).div_euclid(DAY)
            ),
        );
    }
    if c.not_before > now {
        report.warn(
            not_yet,
            file,
            format!(
                "{what} {} is not valid before {}",
                c.subject,
                rfc3339_z(c.not_before)
            ),
        );
    }
}

fn crl_warnings(report: &mut Report, c: &CrlInfo, all: &[CrlInfo], anchors: &[CertInfo], now: i64) {
    if let Some(next) = c.next_update {
        if next < now {
            // The verifier enforces nextUpdate (fail closed), so this is more than cosmetic.
            report.warn(
                "crl_stale",
                &c.path,
                format!(
                    "CRL of {} (number {}) is stale: its nextUpdate {} has passed, so clients of that issuer are refused (revocation_unknown) until a fresh CRL is loaded",
                    c.issuer,
                    c.number.as_deref().unwrap_or("-"),
                    rfc3339_z(next)
                ),
            );
        }
    }
    if c.scope.as_ref().is_some_and(|s| s.uris.is_empty()) {
        // webpki takes a fullName of other name forms, but a partition is matched to
        // certificates by URI only: such a CRL covers no certificate, so it can revoke only
        // through a listed serial, and with require_crl its clients are refused.
        report.warn(
            "crl_scope_without_uri",
            &c.path,
            format!(
                "CRL of {} has an issuingDistributionPoint whose fullName has no URI, so it covers no certificate's cRLDistributionPoints: its revoked serials are still refused, but it never makes a certificate's status known (require_crl refuses them)",
                c.issuer
            ),
        );
    }
    if c.signature == CrlSignature::IssuerNotInTruststore {
        report.warn(
            "crl_issuer_not_in_truststore",
            &c.path,
            format!(
                "CRL issuer {} is not a certificate in the truststore, so its signature cannot be checked at load: the CRL only applies to clients whose chain includes an intermediate CA with that name (its signature is then checked against that intermediate at each handshake), otherwise it has no effect",
                c.issuer
            ),
        );
    }
    if !c.in_use {
        let winner = all
            .iter()
            .find(|w| w.in_use && w.issuer == c.issuer && w.scope == c.scope)
            .map_or_else(String::new, |w| {
                format!(
                    " by number {} in {}",
                    w.number.as_deref().unwrap_or("-"),
                    w.path.display()
                )
            });
        report.warn(
            "crl_superseded",
            &c.path,
            format!(
                "CRL of {} ({}, number {}) is not used: it is superseded{winner}; of the CRLs with the same issuer and scope only the newest (highest cRLNumber, then latest thisUpdate) is used, while partitions of different scopes are all in force. Remove the older file",
                c.issuer,
                c.scope
                    .as_ref()
                    .map_or_else(|| "all certificates".to_owned(), ToString::to_string),
                c.number.as_deref().unwrap_or("-"),
            ),
        );
    }
    let _ = anchors;
}

/// Prints `report` in `format` and returns the exit code: 0 valid, 1 invalid.
pub(crate) fn print(report: &Report, format: Format) -> anyhow::Result<ExitCode> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Format::Text => print!("{}", text(report)),
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `mtls-shield check`: checks and prints.
pub(crate) fn run(path: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    print(&check(path, now), format)
}

fn expiry(c: &CertReport) -> String {
    format!(
        "{} ({} days left)",
        rfc3339_z(c.info.not_after),
        c.days_left
    )
}

/// The human-readable report.
/// The `viewer:` section of the text report.
fn viewer_text(o: &mut String, v: &ViewerReport) {
    use std::fmt::Write as _;
    let headers = match v.headers {
        crate::config::ViewerHeaders::Cloudfront => {
            "cloudfront (Client-Cert/Client-Cert-Chain or CloudFront-Viewer-Cert-Pem)"
        }
        crate::config::ViewerHeaders::Rfc9440 => "rfc9440 (Client-Cert/Client-Cert-Chain)",
    };
    let _ = writeln!(
        o,
        "viewer: headers {headers}, {}",
        if v.required { "required" } else { "optional" }
    );
    let _ = writeln!(
        o,
        "  truststore: {} ({} anchor{})",
        v.truststore.display(),
        v.anchors.len(),
        if v.anchors.len() == 1 { "" } else { "s" }
    );
    for a in &v.anchors {
        let _ = writeln!(o, "    - {}, expires {}", a.info.subject, expiry(a));
    }
    for c in &v.crls {
        let _ = writeln!(
            o,
            "  CRL {}: issuer {}, number {}, next update {}, {} revoked",
            c.path.display(),
            c.issuer,
            c.number.as_deref().unwrap_or("-"),
            c.next_update.map_or_else(|| "-".to_owned(), rfc3339_z),
            c.revoked
        );
    }
    for u in &v.crl_urls {
        let _ = writeln!(o, "  CRL URL: {u}");
    }
    let _ = writeln!(o, "  edges: {}", v.edges.summary());
    let _ = writeln!(
        o,
        "  allow: {}",
        if v.allow.is_empty() {
            "any viewer that verifies".to_owned()
        } else {
            v.allow.summary()
        }
    );
    for r in &v.routes {
        let _ = writeln!(o, "  route {r}");
    }
}

pub(crate) fn text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(o, "config: {}", r.config.display());
    if let Some(l) = &r.listener {
        let _ = writeln!(
            o,
            "listener: {} (session resumption {}, handshake timeout {}, idle timeout {}, shutdown timeout {})",
            l.address,
            if l.session_resumption { "on" } else { "off" },
            humantime::format_duration(l.handshake_timeout),
            humantime::format_duration(l.idle_timeout),
            humantime::format_duration(l.shutdown_timeout),
        );
        let _ = writeln!(o, "server certificate: {}", l.certificate.display());
        match &r.server_certificate {
            Some(s) => {
                let _ = writeln!(o, "  subject: {}", s.info.subject);
                let _ = writeln!(o, "  issuer: {}", s.info.issuer);
                let sans = if s.info.sans.is_empty() {
                    "none".to_owned()
                } else {
                    s.info.sans.join(", ")
                };
                let _ = writeln!(o, "  SANs: {sans}");
                let _ = writeln!(o, "  expires: {}", expiry(s));
            }
            None => {
                let _ = writeln!(o, "  (not readable)");
            }
        }
    }
    if let Some(t) = &r.truststore {
        let _ = writeln!(
            o,
            "truststore: {} ({} anchor{})",
            t.display(),
            r.anchors.len(),
            if r.anchors.len() == 1 { "" } else { "s" }
        );
        for a in &r.anchors {
            let _ = writeln!(
                o,
                "  - {}: {}, expires {}",
                a.info.subject,
                if a.info.is_ca { "CA" } else { "NOT a CA" },
                expiry(a)
            );
        }
    }
    if r.listener.is_some() {
        if r.crls.is_empty() {
            let _ = writeln!(o, "CRLs: none");
        } else {
            let _ = writeln!(o, "CRLs:");
        }
        for c in &r.crls {
            let _ = writeln!(
                o,
                "  - {}: issuer {}, number {}, next update {}, {} revoked{}",
                c.path.display(),
                c.issuer,
                c.number.as_deref().unwrap_or("-"),
                c.next_update.map_or_else(|| "-".to_owned(), rfc3339_z),
                c.revoked,
                c.scope
                    .as_ref()
                    .map_or_else(String::new, |s| format!(", scope {s}"))
            );
            let _ = writeln!(
                o,
                "    signature: {}{}",
                match c.signature {
                    CrlSignature::Verified => "verified with the truststore CA",
                    CrlSignature::IssuerNotInTruststore =>
                        "not checked at load (issuer not in the truststore)",
                    CrlSignature::VerifiedWithIntermediate =>
                        "verified with the intermediate CA that named its distribution point",
                },
                if c.in_use {
                    ""
                } else {
                    "; superseded by a newer CRL of the same issuer and scope (not used)"
                }
            );
        }
    }
    if let Some(oc) = r.ocsp.as_ref().filter(|oc| oc.mode != OcspMode::Off) {
        let _ = writeln!(
            o,
            "OCSP: {} at {}, timeout {}s, refresh every {}s{}",
            match oc.mode {
                OcspMode::Always => "always",
                _ => "for certificates no CRL covers",
            },
            oc.responder
                .as_deref()
                .unwrap_or("each certificate's AIA OCSP URL"),
            oc.timeout_seconds,
            oc.refresh_seconds,
            if oc.soft_fail {
                "; soft fail: a client is accepted when no answer comes"
            } else {
                ""
            }
        );
    }
    if let Some(a) = &r.allow {
        if a.is_empty() {
            let _ = writeln!(o, "allow-list: any certificate that verifies");
        } else {
            let _ = writeln!(o, "allow-list: a certificate matching any of");
            for (key, values) in a.lists() {
                if !values.is_empty() {
                    let _ = writeln!(o, "  {key}: {}", values.join(", "));
                }
            }
        }
    }
    for u in &r.crl_urls {
        match (&u.crl, &u.problem) {
            (Some(c), _) => {
                let _ = writeln!(
                    o,
                    "CRL URL {}: issuer {}, number {}, next update {}, {} revoked",
                    u.url,
                    c.issuer,
                    c.number.as_deref().unwrap_or("-"),
                    c.next_update.map_or_else(|| "-".to_owned(), rfc3339_z),
                    c.revoked
                );
            }
            (None, p) => {
                let _ = writeln!(
                    o,
                    "CRL URL {}: {}",
                    u.url,
                    p.as_deref().unwrap_or("unusable")
                );
            }
        }
    }
    if let Some(u) = &r.upstream {
        let _ = writeln!(
            o,
            "upstream: {} (connect timeout {}, response timeout {})",
            u.url,
            humantime::format_duration(u.connect_timeout),
            humantime::format_duration(u.response_timeout),
        );
    }
    if let Some(s) = &r.sources {
        let _ = writeln!(
            o,
            "allow_sources: {} prefix{}{}; connections from anywhere else are closed before TLS",
            s.prefixes,
            if s.prefixes == 1 { "" } else { "es" },
            s.file
                .as_ref()
                .map_or_else(String::new, |f| format!(" (with {})", f.display())),
        );
    }
    if !r.routes.is_empty() {
        let _ = writeln!(o, "routes:");
    }
    for route in &r.routes {
        let _ = writeln!(
            o,
            "  - {}: host {}, path {}, methods {}, to {}, {}",
            route.label,
            route.host,
            route.path_prefix,
            if route.methods.is_empty() {
                "any".to_owned()
            } else {
                route.methods.join(",")
            },
            route.upstream,
            if route.restricted {
                "own allow-list"
            } else {
                "every client that connected"
            }
        );
    }
    if let Some(v) = &r.viewer {
        viewer_text(&mut o, v);
    }
    for w in &r.warnings {
        let _ = writeln!(
            o,
            "warning: {}: {}: {}",
            w.code,
            w.file.display(),
            w.message
        );
    }
    for e in &r.errors {
        let _ = writeln!(o, "error: {e}");
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if r.valid {
        let _ = writeln!(o, "result: valid ({})", plural(r.warnings.len(), "warning"));
    } else {
        let _ = writeln!(
            o,
            "result: invalid ({}, {})",
            plural(r.errors.len(), "error"),
            plural(r.warnings.len(), "warning")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: i64, not_after: i64) -> CertInfo {
        CertInfo {
            subject: "CN=x".into(),
            issuer: "CN=x".into(),
            sans: vec![],
            not_before,
            not_after,
            is_ca: true,
            key_cert_sign_forbidden: false,
            crl_sign_forbidden: false,
            fingerprint: String::new(),
        }
    }

    fn codes(c: &CertInfo, now: i64) -> Vec<&'static str> {
        let mut r = Report::empty(Path::new("c.toml"), now);
        cert_warnings(&mut r, "anchor", "trust anchor", Path::new("t.pem"), c, now);
        r.warnings.iter().map(|w| w.code).collect()
    }

    #[test]
    fn expiry_thresholds() {
        let now = 1_000_000_000;
        assert!(codes(&cert(0, now + 30 * DAY), now).is_empty());
        assert_eq!(
            codes(&cert(0, now + 30 * DAY - 1), now),
            ["anchor_expiring"]
        );
        assert_eq!(codes(&cert(0, now - 1), now), ["anchor_expired"]);
        assert_eq!(
            codes(&cert(now + 1, now + 365 * DAY), now),
            ["anchor_not_yet_valid"]
        );
    }

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        let now = 1_000_000_000;
        assert_eq!(cert_report(&cert(0, now + DAY - 1), now).days_left, 0);
        assert_eq!(cert_report(&cert(0, now - 1), now).days_left, -1);
    }
}
