//! Prometheus metrics (prometheus-client), served as text on the admin listener's `/metrics`.
//! One [`Metrics`] is created at start-up and shared; reloads update the certificate gauges.

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tls::Reason;
use crate::x509::Inventory;

/// The values of `mtls_shield_requests_total{code_class}`.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Handshake outcome.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum HandshakeResult {
    /// Verified and allowed.
    accepted,
    /// Refused; see `reason`.
    rejected,
}

/// Labels of `mtls_shield_handshakes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandshakeLabels {
    /// accepted or rejected
    pub(crate) result: HandshakeResult,
    /// `none` when accepted, else a stable reason code.
    pub(crate) reason: ReasonLabel,
}

/// A reason code, or `none` for accepted handshakes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) struct ReasonLabel(pub Option<Reason>);

impl EncodeLabelValue for ReasonLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        let code = self.0.map_or("none", Reason::as_str);
        std::fmt::Write::write_str(encoder, code)
    }
}

/// Labels of `mtls_shield_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeClassLabels {
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub(crate) code_class: &'static str,
}

/// Kinds of upstream failure.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum UpstreamErrorKind {
    /// Could not connect (refused, unreachable, connect timeout): 502.
    connect,
    /// No response headers within `upstream.response_timeout`: 504.
    timeout,
    /// Anything else (reset mid-request, protocol error): 502.
    other,
}

/// Labels of `mtls_shield_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamErrorLabels {
    /// What failed.
    pub(crate) kind: UpstreamErrorKind,
}

/// Where a request's upstream connection came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum UpstreamConnSource {
    /// The one the same client connection's previous request used.
    affine,
    /// An idle one from the upstream's pool.
    pooled,
    /// A new one.
    opened,
}

impl UpstreamConnSource {
    const ALL: [UpstreamConnSource; 3] = [Self::affine, Self::pooled, Self::opened];
}

/// Labels of `mtls_shield_upstream_connections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamConnLabels {
    /// Where the connection came from.
    pub(crate) source: UpstreamConnSource,
}

/// A free-text label value (a DN), escaped as the Prometheus and OpenMetrics text formats
/// require: `\`, `"` and newline become `\\`, `\"` and `\n`.
///
/// prometheus-client 0.22 writes label values verbatim. RFC 2253 DNs routinely hold
/// backslashes (`O=Example\, Inc.`), and a raw `\,` or `"` inside a label value is a
/// parse error that makes Prometheus drop the whole scrape, every metric with it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TextLabel(pub String);

impl EncodeLabelValue for TextLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of `mtls_shield_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct CertLabels {
    /// `server` or `trust_anchor`.
    pub(crate) role: &'static str,
    /// Subject DN, RFC 2253.
    pub(crate) subject: TextLabel,
}

/// Labels of `mtls_shield_crl_next_update_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct IssuerLabels {
    /// The CRL issuer DN, RFC 2253.
    pub(crate) issuer: TextLabel,
    /// `all`, or the partition a CRL with an issuingDistributionPoint covers (its URIs).
    pub(crate) scope: TextLabel,
}

/// How a reload ended: the `result` label of `mtls_shield_reloads_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ReloadOutcome {
    /// The new state was built and swapped in.
    success,
    /// Something did not load; the last good state stays.
    failure,
}

/// Labels of `mtls_shield_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadOutcome,
}

/// How a CRL fetch ended: the `result` label of `mtls_shield_crl_fetch_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum CrlFetchResult {
    /// A new CRL arrived and is in force.
    updated,
    /// 304: the CRL did not change.
    not_modified,
    /// 200 with the very bytes of the CRL in force: fetched without a condition because the
    /// server's only validator was a weak `Last-Modified` (see `app::fetch`).
    unchanged,
    /// The fetch failed, or what it brought was refused.
    failure,
}

const CRL_FETCH_RESULTS: [CrlFetchResult; 4] = [
    CrlFetchResult::updated,
    CrlFetchResult::not_modified,
    CrlFetchResult::unchanged,
    CrlFetchResult::failure,
];

/// Labels of `mtls_shield_crl_fetch_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlFetchLabels {
    url: TextLabel,
    result: CrlFetchResult,
}

/// How an OCSP lookup ended: the `result` label of `mtls_shield_ocsp_requests_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum OcspResult {
    /// The responder says good.
    good,
    /// The responder says revoked.
    revoked,
    /// The responder does not know the certificate.
    unknown,
    /// No usable answer: unreachable, too slow, or an answer that failed its checks.
    error,
    /// No usable answer, and `ocsp_soft_fail` let the client in.
    soft_fail,
}

/// Labels of `mtls_shield_ocsp_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OcspLabels {
    result: OcspResult,
}

/// Labels of `mtls_shield_crl_last_success_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: TextLabel,
}

/// A verdict: the `enforced` and `candidate` labels of `mtls_shield_report_only_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum VerdictLabel {
    /// The chain was accepted.
    accepted,
    /// The chain was refused.
    rejected,
}

/// Labels of `mtls_shield_report_only_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportOnlyLabels {
    enforced: VerdictLabel,
    candidate: VerdictLabel,
    /// The candidate's refusal reason, `none` when it accepted.
    reason: ReasonLabel,
}

/// Labels of `mtls_shield_requests_denied_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// The route's name, or its index.
    route: TextLabel,
}

/// Labels of `mtls_shield_tls_handshakes_total`: IANA names, from a bounded set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TlsLabels {
    /// `TLSv1_3` or `TLSv1_2`.
    pub(crate) version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub(crate) suite: &'static str,
    /// The key-exchange group, e.g. `X25519MLKEM768`; `none` when there was none.
    pub(crate) group: &'static str,
}

/// Labels of `mtls_shield_clients_expiring`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabels {
    /// `7d` or `30d`.
    within: &'static str,
}

/// Labels of `mtls_shield_viewer_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewerLabels {
    /// accepted or rejected
    result: HandshakeResult,
    /// `none` when accepted, else a `viewer_*` reason code.
    reason: &'static str,
    /// The route's name or index; `none` when no route covers the request.
    route: RouteName,
}

/// A route's label as a metric label value, shared with the route: a request is counted
/// without copying the string. Route names are letters, digits, `-`, `_` and `.` only
/// (`policy::routes`), so they need no escaping.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RouteName(Option<std::sync::Arc<str>>);

impl EncodeLabelValue for RouteName {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0.as_deref().unwrap_or("none"))
    }
}

/// Labels of `mtls_shield_connections_closed_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    /// The reason code of the judgement that refused the connection's chain.
    reason: ReasonLabel,
}

/// Labels of `mtls_shield_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabels {
    /// Crate version.
    pub(crate) version: &'static str,
}

/// All metrics.
pub(crate) struct Metrics {
    registry: Registry,
    /// `mtls_shield_handshakes_total`
    pub(crate) handshakes: Family<HandshakeLabels, Counter>,
    /// `mtls_shield_connections_active`
    pub(crate) connections_active: Gauge,
    /// `mtls_shield_requests_total`
    pub(crate) requests: Family<CodeClassLabels, Counter>,
    /// The `requests` series, resolved once: counting a request is then one atomic add
    /// instead of a lock and a hashed label lookup (the same counters, shared by `Arc`).
    requests_by_class: [Counter; 5],
    /// `mtls_shield_request_duration_seconds`
    pub(crate) request_duration: Histogram,
    /// `mtls_shield_upstream_errors_total`
    pub(crate) upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// `mtls_shield_upstream_connections_total`
    upstream_connections: Family<UpstreamConnLabels, Counter>,
    /// Its series, resolved once (as `requests_by_class`), in `UpstreamConnSource::ALL` order.
    upstream_connections_by_source: [Counter; 3],
    /// `mtls_shield_certificate_expiry_timestamp_seconds`
    pub(crate) cert_expiry: Family<CertLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `mtls_shield_crl_next_update_timestamp_seconds`
    pub(crate) crl_next_update: Family<IssuerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `mtls_shield_reloads_total`
    reloads: Family<ReloadLabels, Counter>,
    /// `mtls_shield_connections_closed_total`
    connections_closed: Family<ClosedLabels, Counter>,
    /// `mtls_shield_crl_fetch_total`
    crl_fetches: Family<CrlFetchLabels, Counter>,
    /// `mtls_shield_ocsp_requests_total`
    ocsp_requests: Family<OcspLabels, Counter>,
    /// `mtls_shield_ocsp_cache_entries`
    ocsp_cache_entries: Gauge,
    /// `mtls_shield_ocsp_oldest_answer_age_seconds`
    ocsp_oldest_answer: Gauge,
    /// `mtls_shield_report_only_total`
    report_only: Family<ReportOnlyLabels, Counter>,
    /// `mtls_shield_requests_denied_total`
    requests_denied: Family<RouteLabels, Counter>,
    /// `mtls_shield_viewer_requests_total`
    viewer_requests: Family<ViewerLabels, Counter>,
    /// `mtls_shield_tls_handshakes_total`
    tls_handshakes: Family<TlsLabels, Counter>,
    /// `mtls_shield_clients_seen`
    clients_seen: Gauge,
    /// `mtls_shield_clients_expiring{within}`
    clients_expiring: Family<WithinLabels, Gauge>,
    /// `mtls_shield_viewer_verifications_total`
    viewer_verifications: Counter,
    /// `mtls_shield_viewer_headers_removed_total`
    viewer_headers_removed: Counter,
    /// `mtls_shield_crl_last_success_timestamp_seconds`
    crl_last_success: Family<UrlLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `mtls_shield_access_log_dropped_total`, caught up with [`crate::logs::dropped`] at
    /// each scrape.
    access_log_dropped: Counter,
    /// `mtls_shield_log_dropped_total`, likewise.
    log_dropped: Counter,
    /// Serialises that catching up, so two concurrent scrapes cannot add the same drops twice.
    dropped_sync: Mutex<()>,
    /// `mtls_shield_accept_errors_total`
    accept_errors: Counter,
    /// `mtls_shield_build_info`
    pub(crate) build_info: Family<VersionLabels, Gauge>,
    /// The certificate and CRL series the last inventory set, so the next one can remove
    /// exactly the series that disappeared (see [`Metrics::set_inventory`]).
    inventory_series: Mutex<(Vec<CertLabels>, Vec<IssuerLabels>)>,
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
    pub(crate) fn new() -> Self {
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
            upstream_connections: Family::default(),
            upstream_connections_by_source: Default::default(),
            cert_expiry: Family::default(),
            crl_next_update: Family::default(),
            reloads: Family::default(),
            connections_closed: Family::default(),
            crl_fetches: Family::default(),
            ocsp_requests: Family::default(),
            ocsp_cache_entries: Gauge::default(),
            ocsp_oldest_answer: Gauge::default(),
            report_only: Family::default(),
            requests_denied: Family::default(),
            viewer_requests: Family::default(),
            tls_handshakes: Family::default(),
            clients_seen: Gauge::default(),
            clients_expiring: Family::default(),
            viewer_verifications: Counter::default(),
            viewer_headers_removed: Counter::default(),
            crl_last_success: Family::default(),
            access_log_dropped: Counter::default(),
            log_dropped: Counter::default(),
            dropped_sync: Mutex::default(),
            accept_errors: Counter::default(),
            build_info: Family::default(),
            inventory_series: Mutex::default(),
            requests_by_class: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "handshakes",
            "TLS handshakes by result (accepted, rejected) and rejection reason (a code of docs/troubleshooting.md; none when accepted)",
            m.handshakes.clone(),
        );
        registry.register(
            "connections_active",
            "Connections open now, handshaking or serving",
            m.connections_active.clone(),
        );
        registry.register(
            "requests",
            "Requests answered through the proxy by status class (1xx to 5xx), its own 502 and 504 answers included",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request head received to the last response byte sent",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed at the upstream, by kind: connect (502), timeout (no response headers within upstream.response_timeout, 504), other (502)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "upstream_connections",
            "Requests sent upstream, by where their connection came from: the same client \
             connection's previous one (affine), the upstream's idle pool (pooled), or new (opened)",
            m.upstream_connections.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter, Unix seconds, of the server certificate (role=server) and of every trust anchor (role=trust_anchor), by subject (RFC 2253)",
            m.cert_expiry.clone(),
        );
        registry.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate, Unix seconds, of every CRL in force, by issuer (RFC 2253) and scope (all, or the partition's IDP URIs)",
            m.crl_next_update.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by result (success, failure); a fetched CRL or OCSP answer that changed also reloads",
            m.reloads.clone(),
        );
        registry.register(
            "connections_closed",
            "Open connections closed because a later judgement refused their chain (a new trust state, an expiry, a CRL past nextUpdate), by reason",
            m.connections_closed.clone(),
        );
        registry.register(
            "requests_denied",
            "Requests refused with 403 because the matching route's allow-list refuses the client, by route (its name, or its index)",
            m.requests_denied.clone(),
        );
        registry.register(
            "clients_seen",
            "Distinct client and viewer certificates in the inventory of /trust (at most admin.inventory_max)",
            m.clients_seen.clone(),
        );
        registry.register(
            "clients_expiring",
            "Certificates of the inventory whose notAfter is within 7d or 30d (or past), by window",
            m.clients_expiring.clone(),
        );
        registry.register(
            "tls_handshakes",
            "Accepted handshakes by protocol version, cipher suite and key-exchange group (IANA names; X25519MLKEM768 is the hybrid post-quantum group)",
            m.tls_handshakes.clone(),
        );
        registry.register(
            "viewer_requests",
            "Requests whose viewer certificate [viewer] judged, by result (accepted, rejected), reason (none, or a viewer_* code) and route (its name or index; none when no route covers the request)",
            m.viewer_requests.clone(),
        );
        registry.register(
            "viewer_verifications",
            "Full verifications of a viewer chain (the first sight of a chain in a trust state; later requests with it use the memo)",
            m.viewer_verifications.clone(),
        );
        registry.register(
            "viewer_headers_removed",
            "Requests whose viewer certificate headers were removed unjudged, because their connection is not one of [viewer.edges]",
            m.viewer_headers_removed.clone(),
        );
        registry.register(
            "report_only",
            "Handshakes judged by the report-only candidate policy, by enforced and candidate verdict (accepted, rejected) and the candidate's refusal reason (none when it accepts)",
            m.report_only.clone(),
        );
        registry.register(
            "crl_fetch",
            "CRL fetches by URL and result: updated, not_modified (a 304), unchanged (a 200 with the CRL already in force), failure (also a CRL fetched but refused)",
            m.crl_fetches.clone(),
        );
        registry.register(
            "ocsp_requests",
            "OCSP lookups of client certificates by result: good, revoked, unknown, error (no usable answer: down, too slow, or failed its checks), soft_fail (let in without one)",
            m.ocsp_requests.clone(),
        );
        registry.register(
            "ocsp_cache_entries",
            "OCSP answers kept in the cache",
            m.ocsp_cache_entries.clone(),
        );
        registry.register(
            "ocsp_oldest_answer_age_seconds",
            "Age (now minus thisUpdate) of the oldest OCSP answer in the cache, seconds",
            m.ocsp_oldest_answer.clone(),
        );
        registry.register(
            "crl_last_success_timestamp_seconds",
            "When a CRL URL last answered with a usable CRL (or a 304), Unix seconds; 0 until it first has",
            m.crl_last_success.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the lines waiting to be written reached their bound (stderr not keeping up)",
            m.access_log_dropped.clone(),
        );
        registry.register(
            "log_dropped",
            "Other log lines (not access lines) dropped because the lines waiting to be written reached their bound",
            m.log_dropped.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accept() calls on the mTLS and admin listeners (e.g. EMFILE: out of file descriptors)",
            m.accept_errors.clone(),
        );
        registry.register(
            "build_info",
            "The running version (always 1)",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        for result in [ReloadOutcome::success, ReloadOutcome::failure] {
            let _ = m.reloads.get_or_create(&ReloadLabels { result });
        }
        // Every series whose labels come from a closed set exists from start-up, at 0.
        // Prometheus cannot tell a missing series from "nothing happened", and a counter that
        // first appears at 1 has no earlier sample, so `increase()`/`rate()` miss that first
        // event: an alert such as `increase(...{reason="revoked"}[5m]) > 0` would not fire on
        // the first revoked client, and dashboards would show "no data" instead of 0. The sets
        // are small and fixed (15 handshake outcomes, 5 status classes, 3 upstream error
        // kinds), so this costs a few lines of /metrics and no cardinality risk.
        let _ = m.handshakes.get_or_create(&HandshakeLabels {
            result: HandshakeResult::accepted,
            reason: ReasonLabel(None),
        });
        for &reason in Reason::ALL {
            let _ = m.handshakes.get_or_create(&HandshakeLabels {
                result: HandshakeResult::rejected,
                reason: ReasonLabel(Some(reason)),
            });
            let _ = m.connections_closed.get_or_create(&ClosedLabels {
                reason: ReasonLabel(Some(reason)),
            });
        }
        let requests_by_class = CODE_CLASSES.map(|code_class| {
            m.requests
                .get_or_create(&CodeClassLabels { code_class })
                .clone()
        });
        for kind in [
            UpstreamErrorKind::connect,
            UpstreamErrorKind::timeout,
            UpstreamErrorKind::other,
        ] {
            let _ = m
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels { kind });
        }
        let upstream_connections_by_source = UpstreamConnSource::ALL.map(|source| {
            m.upstream_connections
                .get_or_create(&UpstreamConnLabels { source })
                .clone()
        });
        Metrics {
            registry,
            requests_by_class,
            upstream_connections_by_source,
            ..m
        }
    }

    /// Counts a handshake outcome.
    pub(crate) fn handshake(&self, reason: Option<Reason>) {
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

    /// Counts an open connection closed because a later judgement refused its chain.
    pub(crate) fn connection_closed(&self, reason: Reason) {
        self.connections_closed
            .get_or_create(&ClosedLabels {
                reason: ReasonLabel(Some(reason)),
            })
            .inc();
    }

    /// Creates the fetch series of a CRL URL at 0, so the first failure shows as an increase,
    /// and its last success at 0 until it has delivered a CRL.
    pub(crate) fn crl_fetch_series(&self, url: &str) {
        for result in CRL_FETCH_RESULTS {
            let _ = self.crl_fetches.get_or_create(&CrlFetchLabels {
                url: TextLabel(url.to_owned()),
                result,
            });
        }
        let _ = self.crl_last_success.get_or_create(&UrlLabels {
            url: TextLabel(url.to_owned()),
        });
    }

    /// Counts an OCSP lookup.
    pub(crate) fn ocsp(&self, result: OcspResult) {
        self.ocsp_requests
            .get_or_create(&OcspLabels { result })
            .inc();
    }

    /// Sets the OCSP cache gauges: answers kept, age of the oldest.
    pub(crate) fn ocsp_cache(&self, entries: usize, oldest_age: i64) {
        self.ocsp_cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.ocsp_oldest_answer.set(oldest_age);
    }

    /// Removes the series of a CRL URL that is no longer configured.
    pub(crate) fn crl_url_forget(&self, url: &str) {
        for result in CRL_FETCH_RESULTS {
            self.crl_fetches.remove(&CrlFetchLabels {
                url: TextLabel(url.to_owned()),
                result,
            });
        }
        self.crl_last_success.remove(&UrlLabels {
            url: TextLabel(url.to_owned()),
        });
    }

    /// Counts a CRL fetch.
    pub(crate) fn crl_fetch(&self, url: &str, result: CrlFetchResult) {
        self.crl_fetches
            .get_or_create(&CrlFetchLabels {
                url: TextLabel(url.to_owned()),
                result,
            })
            .inc();
    }

    /// Records a CRL URL's last success.
    pub(crate) fn crl_success(&self, url: &str, unix: i64) {
        self.crl_last_success
            .get_or_create(&UrlLabels {
                url: TextLabel(url.to_owned()),
            })
            .set(unix);
    }

    /// Creates every report-only series at 0 (called when a candidate is configured).
    pub(crate) fn report_only_series(&self) {
        for enforced in [VerdictLabel::accepted, VerdictLabel::rejected] {
            let _ = self.report_only.get_or_create(&ReportOnlyLabels {
                enforced,
                candidate: VerdictLabel::accepted,
                reason: ReasonLabel(None),
            });
            for &reason in Reason::ALL {
                let _ = self.report_only.get_or_create(&ReportOnlyLabels {
                    enforced,
                    candidate: VerdictLabel::rejected,
                    reason: ReasonLabel(Some(reason)),
                });
            }
        }
    }

    /// Counts a handshake judged by the report-only candidate: `candidate` is `None` when it
    /// accepted, its refusal reason otherwise.
    pub(crate) fn report_only(&self, enforced_accepted: bool, candidate: Option<Reason>) {
        let verdict = |accepted| {
            if accepted {
                VerdictLabel::accepted
            } else {
                VerdictLabel::rejected
            }
        };
        self.report_only
            .get_or_create(&ReportOnlyLabels {
                enforced: verdict(enforced_accepted),
                candidate: verdict(candidate.is_none()),
                reason: ReasonLabel(candidate),
            })
            .inc();
    }

    /// Creates the denied-request series of every route at 0.
    pub(crate) fn route_series<'a>(&self, labels: impl IntoIterator<Item = &'a str>) {
        for route in labels {
            let _ = self.requests_denied.get_or_create(&RouteLabels {
                route: TextLabel(route.to_owned()),
            });
        }
    }

    /// Counts a request a route's allow-list refused.
    pub(crate) fn request_denied(&self, route: &str) {
        self.requests_denied
            .get_or_create(&RouteLabels {
                route: TextLabel(route.to_owned()),
            })
            .inc();
    }

    /// Counts a request whose viewer certificate `[viewer]` judged: `reason` is `None` when
    /// it passed (with or without a viewer), else the `viewer_*` code.
    pub(crate) fn viewer_request(
        &self,
        reason: Option<&'static str>,
        route: Option<&std::sync::Arc<str>>,
    ) {
        self.viewer_requests
            .get_or_create(&ViewerLabels {
                result: if reason.is_none() {
                    HandshakeResult::accepted
                } else {
                    HandshakeResult::rejected
                },
                reason: reason.unwrap_or("none"),
                route: RouteName(route.cloned()),
            })
            .inc();
    }

    /// Sets the inventory gauges: certificates seen, and those expiring within 7 and 30 days.
    pub(crate) fn clients(&self, seen: usize, within_7d: usize, within_30d: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.clients_seen.set(g(seen));
        for (within, n) in [("7d", within_7d), ("30d", within_30d)] {
            self.clients_expiring
                .get_or_create(&WithinLabels { within })
                .set(g(n));
        }
    }

    /// Counts an accepted handshake by what it negotiated.
    pub(crate) fn tls_handshake(&self, labels: TlsLabels) {
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// Counts a full verification of a viewer chain (the memo did not have it).
    pub(crate) fn viewer_verification(&self) {
        self.viewer_verifications.inc();
    }

    /// Counts a request whose viewer headers were removed unjudged: its connection is not
    /// one of `[viewer.edges]`.
    pub(crate) fn viewer_headers_removed(&self) {
        self.viewer_headers_removed.inc();
    }

    /// Counts a reload.
    pub(crate) fn reload(&self, result: ReloadOutcome) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts a finished request.
    pub(crate) fn request(&self, status: u16, seconds: f64) {
        self.requests_by_class[code_class_index(status)].inc();
        self.request_duration.observe(seconds);
    }

    /// Counts a failed accept().
    pub(crate) fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Counts an answer whose duration is not known (hyper's own answer to an unparsable
    /// request head): in `requests_total`, not in the duration histogram.
    pub(crate) fn request_without_duration(&self, status: u16) {
        self.requests_by_class[code_class_index(status)].inc();
    }

    /// Counts a request sent upstream on a connection from `source`.
    pub(crate) fn upstream_connection(&self, source: UpstreamConnSource) {
        self.upstream_connections_by_source[source as usize].inc();
    }

    /// Counts an upstream failure.
    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { kind })
            .inc();
    }

    /// Replaces the certificate and CRL gauges with a new inventory's.
    ///
    /// New values are set first and only then are the series that disappeared removed, so a
    /// scrape during a reload never sees the gauges missing (an expiry alert built on
    /// `absent()` or `min()` would otherwise flap on every reload).
    pub(crate) fn set_inventory(&self, inv: &Inventory) {
        let mut certs = vec![(
            CertLabels {
                role: "server",
                subject: TextLabel(inv.server.subject.clone()),
            },
            inv.server.not_after,
        )];
        certs.extend(inv.anchors.iter().map(|a| {
            (
                CertLabels {
                    role: "trust_anchor",
                    subject: TextLabel(a.subject.clone()),
                },
                a.not_after,
            )
        }));
        let crls: Vec<(IssuerLabels, i64)> = inv
            .crls
            .iter()
            .filter(|c| c.in_use)
            .filter_map(|c| {
                c.next_update.map(|next| {
                    (
                        IssuerLabels {
                            issuer: TextLabel(c.issuer.clone()),
                            scope: TextLabel(
                                c.scope
                                    .as_ref()
                                    .map_or_else(|| "all".to_owned(), |s| s.uris.join(" ")),
                            ),
                        },
                        next,
                    )
                })
            })
            .collect();
        // A poisoned lock only means another thread panicked mid-update; the label lists are
        // still usable, and metrics must never take the process down.
        let mut previous = self
            .inventory_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (labels, value) in &certs {
            self.cert_expiry.get_or_create(labels).set(*value);
        }
        for (labels, value) in &crls {
            self.crl_next_update.get_or_create(labels).set(*value);
        }
        let cert_labels: Vec<CertLabels> = certs.into_iter().map(|(l, _)| l).collect();
        let crl_labels: Vec<IssuerLabels> = crls.into_iter().map(|(l, _)| l).collect();
        for gone in previous.0.iter().filter(|l| !cert_labels.contains(l)) {
            self.cert_expiry.remove(gone);
        }
        for gone in previous.1.iter().filter(|l| !crl_labels.contains(l)) {
            self.crl_next_update.remove(gone);
        }
        *previous = (cert_labels, crl_labels);
    }

    /// Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        {
            let _sync = self.dropped_sync.lock();
            let (access, other) = crate::logs::dropped();
            for (counter, total) in [
                (&self.access_log_dropped, access),
                (&self.log_dropped, other),
            ] {
                let have = counter.get();
                if total > have {
                    counter.inc_by(total - have);
                }
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would only mean a metric
        // refused to encode, and an empty page is the honest answer then.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `docs/metrics.md`: every series of the registry, with its type, labels and help text.
///
/// It is read from the registry itself: a fresh [`Metrics`] whose label-carrying series are
/// each bumped once with an example (a CRL URL, a route, an inventory), then encoded, so a
/// metric registered or renamed in [`Metrics::new`] shows up here without a second list.
pub(crate) fn reference_markdown() -> String {
    let m = Metrics::new();
    let url = "http://crl.example.com/ca.crl";
    m.crl_fetch_series(url);
    m.crl_fetch(url, CrlFetchResult::updated);
    m.crl_success(url, 0);
    m.ocsp(OcspResult::good);
    m.report_only_series();
    m.route_series(["admin"]);
    m.viewer_request(None, Some(&std::sync::Arc::from("devices")));
    m.clients(1, 0, 0);
    m.tls_handshake(TlsLabels {
        version: "TLSv1_3",
        suite: "TLS13_AES_256_GCM_SHA384",
        group: "X25519MLKEM768",
    });
    m.set_inventory(&example_inventory());
    let mut families: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for line in m.encode().lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push((name.to_owned(), String::new(), help.to_owned(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some(f), Some((_, kind))) = (families.last_mut(), rest.split_once(' ')) {
                f.1 = kind.to_owned();
            }
        } else if let (Some(f), Some((_, labels))) = (families.last_mut(), line.split_once('{')) {
            for pair in labels.split("\",") {
                if let Some((label, _)) = pair.split_once("=\"") {
                    if label != "le" && !f.3.iter().any(|l| l == label) {
                        f.3.push(label.to_owned());
                    }
                }
            }
        }
    }
    let mut out = String::from(METRICS_INTRO);
    for (name, kind, help, labels) in families {
        // Counters are exposed with `_total`, which the HELP line leaves out.
        let shown = if kind == "counter" {
            format!("{name}_total")
        } else {
            name
        };
        let labels = if labels.is_empty() {
            "—".to_owned()
        } else {
            labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{shown}` | {kind} | {labels} | {} |\n",
            help.replace('|', "\\|")
        ));
    }
    out.push_str(METRICS_ALERTS);
    out
}

/// A server certificate, an anchor and a CRL, to make the inventory's series appear.
fn example_inventory() -> Inventory {
    let cert = |subject: &str| crate::x509::CertInfo {
        subject: subject.into(),
        issuer: subject.into(),
        sans: vec![],
        not_before: 0,
        not_after: 0,
        is_ca: true,
        key_cert_sign_forbidden: false,
        crl_sign_forbidden: false,
        fingerprint: String::new(),
    };
    Inventory {
        server: cert("CN=origin.example.com"),
        anchors: vec![cert("CN=Example Root CA")],
        crls: vec![crate::x509::CrlInfo {
            path: "ca.crl".into(),
            issuer: "CN=Example Root CA".into(),
            number: None,
            this_update: 0,
            next_update: Some(0),
            revoked: 0,
            signature: crate::x509::CrlSignature::Verified,
            scope: None,
            in_use: true,
        }],
    }
}

const METRICS_INTRO: &str = r#"# Metrics reference

<!-- Generated from the registry in src/metrics.rs (Metrics::new). Do not edit: change the
     registry, then run  UPDATE_DOCS=1 cargo test --test it generated_docs
-->

`GET /metrics` on the admin listener (`[admin] address`) answers the Prometheus text format.
Every series whose labels come from a closed set (the handshake reasons, status classes,
upstream error kinds, reload results) exists from start-up at 0, so `increase()` sees the
first event. Series with open labels (a CRL URL, a route, a certificate subject) appear when
their object does and leave with it: a reload that removes a CRL URL removes its series.

| metric | type | labels | meaning |
|---|---|---|---|
"#;

const METRICS_ALERTS: &str = r#"
## Alerts worth having

```promql
# server certificate or a trust anchor expires within 14 days
mtls_shield_certificate_expiry_timestamp_seconds - time() < 14 * 86400
# a CRL is due within 6 hours (past it, that issuer's clients get revocation_unknown)
mtls_shield_crl_next_update_timestamp_seconds - time() < 6 * 3600
# a CRL URL has not answered usefully for an hour
time() - mtls_shield_crl_last_success_timestamp_seconds > 3600
# open connections are being cut by trust changes
sum by (reason) (increase(mtls_shield_connections_closed_total[10m])) > 0
# clients are being refused for a reason worth a look
sum by (reason) (increase(mtls_shield_handshakes_total{result="rejected",reason!~"not_tls|handshake_timeout|other"}[10m])) > 0
```
"#;

/// The index of `status`'s class in `requests_by_class` (the order of `CODE_CLASSES`).
fn code_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::{CertInfo, CrlInfo, CrlSignature};

    fn cert(subject: &str, not_after: i64) -> CertInfo {
        CertInfo {
            subject: subject.into(),
            issuer: subject.into(),
            sans: vec![],
            not_before: 0,
            not_after,
            is_ca: true,
            key_cert_sign_forbidden: false,
            crl_sign_forbidden: false,
            fingerprint: String::new(),
        }
    }

    fn inventory(anchors: &[(&str, i64)], crl_issuer: Option<&str>) -> Inventory {
        Inventory {
            server: cert("CN=localhost", 10),
            anchors: anchors.iter().map(|(s, t)| cert(s, *t)).collect(),
            crls: crl_issuer
                .map(|i| CrlInfo {
                    path: "crl.pem".into(),
                    issuer: i.into(),
                    number: None,
                    this_update: 0,
                    next_update: Some(99),
                    revoked: 0,
                    signature: CrlSignature::Verified,
                    scope: None,
                    in_use: true,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn dn_label_values_are_escaped() {
        let m = Metrics::new();
        m.set_inventory(&inventory(&[(r#"CN=a\"b\\c,O=Example\, Inc."#, 5)], None));
        let text = m.encode();
        assert!(
            text.contains(
                r#"mtls_shield_certificate_expiry_timestamp_seconds{role="trust_anchor",subject="CN=a\\\"b\\\\c,O=Example\\, Inc."} 5"#
            ),
            "{text}"
        );
    }

    #[test]
    fn closed_label_sets_start_at_zero() {
        let text = Metrics::new().encode();
        for &r in Reason::ALL {
            let line = format!(
                "mtls_shield_handshakes_total{{result=\"rejected\",reason=\"{}\"}} 0\n",
                r.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        for line in [
            "mtls_shield_handshakes_total{result=\"accepted\",reason=\"none\"} 0\n",
            "mtls_shield_requests_total{code_class=\"5xx\"} 0\n",
            "mtls_shield_upstream_errors_total{kind=\"timeout\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing");
        }
    }

    #[test]
    fn a_new_inventory_replaces_the_old_series() {
        let m = Metrics::new();
        m.set_inventory(&inventory(&[("CN=old", 1), ("CN=kept", 2)], Some("CN=old")));
        m.set_inventory(&inventory(&[("CN=kept", 3), ("CN=new", 4)], Some("CN=new")));
        let text = m.encode();
        assert!(!text.contains("CN=old"), "{text}");
        assert!(text.contains(r#"subject="CN=kept"} 3"#), "{text}");
        assert!(text.contains(r#"subject="CN=new"} 4"#), "{text}");
        assert!(
            text.contains(r#"issuer="CN=new",scope="all"} 99"#),
            "{text}"
        );
    }
}
