//! Prometheus metrics (prometheus-client), served as text on the admin listener's `/metrics`.
//! One [`Metrics`] is created at start-up and shared; reloads update the certificate gauges.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tls::state::Inventory;
use crate::tls::Reason;

/// Handshake outcome.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum HandshakeResult {
    /// Verified and allowed.
    accepted,
    /// Refused; see `reason`.
    rejected,
}

/// Labels of `mtls_shield_handshakes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// accepted or rejected
    pub result: HandshakeResult,
    /// `none` when accepted, else a stable reason code.
    pub reason: ReasonLabel,
}

/// A reason code, or `none` for accepted handshakes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct ReasonLabel(pub Option<Reason>);

impl EncodeLabelValue for ReasonLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        match self.0 {
            Some(r) => r.encode(encoder),
            None => std::fmt::Write::write_str(encoder, "none"),
        }
    }
}

/// Labels of `mtls_shield_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeClassLabels {
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub code_class: &'static str,
}

/// Kinds of upstream failure.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, unreachable, connect timeout): 502.
    connect,
    /// No response headers within `upstream.response_timeout`: 504.
    timeout,
    /// Anything else (reset mid-request, protocol error): 502.
    other,
}

/// Labels of `mtls_shield_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// What failed.
    pub kind: UpstreamErrorKind,
}

/// Labels of `mtls_shield_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `server` or `trust_anchor`.
    pub role: &'static str,
    /// Subject DN, RFC 2253.
    pub subject: String,
}

/// Labels of `mtls_shield_crl_next_update_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    /// The CRL issuer DN, RFC 2253.
    pub issuer: String,
}

/// Labels of `mtls_shield_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `mtls_shield_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Crate version.
    pub version: &'static str,
}

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// `mtls_shield_handshakes_total`
    pub handshakes: Family<HandshakeLabels, Counter>,
    /// `mtls_shield_connections_active`
    pub connections_active: Gauge,
    /// `mtls_shield_requests_total`
    pub requests: Family<CodeClassLabels, Counter>,
    /// `mtls_shield_request_duration_seconds`
    pub request_duration: Histogram,
    /// `mtls_shield_upstream_errors_total`
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// `mtls_shield_certificate_expiry_timestamp_seconds`
    pub cert_expiry: Family<CertLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `mtls_shield_crl_next_update_timestamp_seconds`
    pub crl_next_update: Family<IssuerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `mtls_shield_reloads_total`
    pub reloads: Family<ReloadLabels, Counter>,
    /// `mtls_shield_build_info`
    pub build_info: Family<VersionLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mtls_shield");
        let m = Metrics {
            handshakes: Family::default(),
            connections_active: Gauge::default(),
            requests: Family::default(),
            request_duration: Histogram::new(
                [
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]
                .into_iter(),
            ),
            upstream_errors: Family::default(),
            cert_expiry: Family::default(),
            crl_next_update: Family::default(),
            reloads: Family::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "handshakes",
            "TLS handshakes by result and rejection reason",
            m.handshakes.clone(),
        );
        registry.register(
            "connections_active",
            "Connections currently open (handshaking or serving)",
            m.connections_active.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response body",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed at the upstream",
            m.upstream_errors.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the server certificate and each trust anchor",
            m.cert_expiry.clone(),
        );
        registry.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate of each loaded CRL",
            m.crl_next_update.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        registry.register("build_info", "Build information", m.build_info.clone());
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&ReloadLabels { result });
        }
        Metrics { registry, ..m }
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, reason: Option<Reason>) {
        let result = if reason.is_some() {
            HandshakeResult::rejected
        } else {
            HandshakeResult::accepted
        };
        self.handshakes
            .get_or_create(&HandshakeLabels {
                result,
                reason: ReasonLabel(reason),
            })
            .inc();
    }

    /// Counts a finished request.
    pub fn request(&self, status: u16, seconds: f64) {
        let code_class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&CodeClassLabels { code_class })
            .inc();
        self.request_duration.observe(seconds);
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { kind })
            .inc();
    }

    /// Replaces the certificate and CRL gauges with a new inventory's.
    pub fn set_inventory(&self, inv: &Inventory) {
        self.cert_expiry.clear();
        self.cert_expiry
            .get_or_create(&CertLabels {
                role: "server",
                subject: inv.server.subject.clone(),
            })
            .set(inv.server.not_after);
        for a in &inv.anchors {
            self.cert_expiry
                .get_or_create(&CertLabels {
                    role: "trust_anchor",
                    subject: a.subject.clone(),
                })
                .set(a.not_after);
        }
        self.crl_next_update.clear();
        for c in &inv.crls {
            if let Some(next) = c.next_update {
                self.crl_next_update
                    .get_or_create(&IssuerLabels {
                        issuer: c.issuer.clone(),
                    })
                    .set(next);
            }
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would only mean a metric
        // refused to encode, and an empty page is the honest answer then.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
