//! The one place a request is recorded once its answer is known: the per-request metrics
//! (`mtls_shield_requests_total`, the duration histogram) and the access line. Like Pingora's
//! single `logging()` phase, every request goes through [`Finish::record`], whether the
//! upstream answered, the proxy answered itself, or hyper answered a request head it could
//! not parse ([`record_unparsed`]), so the counters and the access log cannot disagree.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::StatusCode;

use super::activity::Activity;
use crate::identity::{capped_for_log, ClientIdentity};
use crate::logs::ViewerFields;
use crate::metrics::Metrics;

/// A request's bookkeeping from its head to its status: the clock, and the access record
/// when the access log prints.
pub(crate) struct RequestRecord {
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    start: Instant,
    access: Option<AccessRecord>,
}

/// The fields of one access-log line that are known before the body ends.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// Client address.
    pub(crate) peer: IpAddr,
    /// Verified identity.
    pub(crate) identity: Arc<ClientIdentity>,
    /// Request method.
    pub(crate) method: http::Method,
    /// Request path (no query string: queries may carry secrets).
    pub(crate) path: String,
    /// HTTP version as seen from the client.
    pub(crate) version: http::Version,
    /// Request body bytes received so far (final when the response ends).
    pub(crate) bytes_in: Arc<AtomicU64>,
    /// Time to the upstream's response headers, if it answered.
    pub(crate) upstream: Option<Duration>,
    /// The `[[routes]]` entry the request matched (its name, or its index).
    pub(crate) route: Option<String>,
    /// The verdict on the request's viewer certificate, when one was judged.
    pub(crate) viewer: Option<ViewerNote>,
}

/// A request's viewer, for its access line.
#[derive(Debug, Clone)]
pub(crate) struct ViewerNote {
    /// `None`: the viewer passed; else the `viewer_*` reason.
    pub(crate) reason: Option<&'static str>,
    /// The viewer's certificate, when it could be read.
    pub(crate) identity: Option<Arc<ClientIdentity>>,
}

/// What the response body needs to record the request once it ends.
#[derive(Debug)]
pub(crate) struct Finish {
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    start: Instant,
    status: u16,
    access: Option<AccessRecord>,
}

/// Who the request came from, for a record.
pub(crate) struct Client<'a> {
    /// Its address.
    pub(crate) peer: IpAddr,
    /// Its verified identity.
    pub(crate) identity: &'a ClientIdentity,
}

impl RequestRecord {
    /// Opens the record of a request whose head arrived at `start`. `access` is the client
    /// when an access line will be written, `None` when nothing would print it.
    pub(crate) fn open(
        activity: &Arc<Activity>,
        metrics: &Arc<Metrics>,
        access: Option<(IpAddr, &Arc<ClientIdentity>)>,
        start: Instant,
        parts: &Parts,
    ) -> RequestRecord {
        RequestRecord {
            activity: activity.clone(),
            metrics: metrics.clone(),
            start,
            access: access.map(|(peer, identity)| AccessRecord {
                peer,
                identity: identity.clone(),
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                version: parts.version,
                bytes_in: Arc::new(AtomicU64::new(0)),
                upstream: None,
                route: None,
                viewer: None,
            }),
        }
    }

    /// Notes the verdict on the request's viewer certificate, for the access log.
    pub(crate) fn viewer(&mut self, note: ViewerNote) {
        if let Some(a) = &mut self.access {
            a.viewer = Some(note);
        }
    }

    /// Notes the route the request matched, for the access log.
    pub(crate) fn route(&mut self, label: &str) {
        if let Some(a) = &mut self.access {
            a.route = Some(label.to_owned());
        }
    }

    /// The request-body byte counter the access record reads (a fresh one when nothing prints).
    pub(crate) fn bytes_in(&self) -> Arc<AtomicU64> {
        self.access
            .as_ref()
            .map(|a| a.bytes_in.clone())
            .unwrap_or_default()
    }

    /// The status is known: what the response body records once it ends.
    pub(crate) fn close(self, status: StatusCode, upstream: Option<Duration>) -> Finish {
        Finish {
            activity: self.activity,
            metrics: self.metrics,
            start: self.start,
            status: status.as_u16(),
            access: self.access.map(|a| AccessRecord { upstream, ..a }),
        }
    }
}

impl Finish {
    /// Records the request, `bytes_out` body bytes sent: its metrics, its access line, and
    /// the end of its activity.
    pub(crate) fn record(self, bytes_out: u64) {
        let elapsed = self.start.elapsed();
        self.metrics.request(self.status, elapsed.as_secs_f64());
        if let Some(a) = &self.access {
            let client_cn = a.identity.cn_for_log();
            let viewer_subject = a
                .viewer
                .as_ref()
                .and_then(|v| v.identity.as_ref())
                .map(|i| capped_for_log(&i.subject));
            crate::logs::write(&crate::logs::Line {
                peer: a.peer,
                client_cn: &client_cn,
                client_fingerprint: &a.identity.fingerprint,
                method: a.method.as_str(),
                path: &a.path,
                version: a.version,
                status: self.status,
                bytes_in: a.bytes_in.load(Ordering::Relaxed),
                bytes_out,
                total: elapsed,
                upstream: a.upstream,
                route: a.route.as_deref(),
                viewer: a.viewer.as_ref().map(|v| ViewerFields {
                    reason: v.reason,
                    subject: viewer_subject.as_deref(),
                    fingerprint: v.identity.as_ref().map(|i| &i.fingerprint),
                }),
            });
        }
        self.activity.request_finished();
    }
}

/// Records a request hyper answered itself (400, 414, 431) before the service saw it: counted
/// in `requests_total`, and, when `client` is given (the access log prints), written with
/// method and path `-` and a duration of 0, since no request line was parsed.
pub(crate) fn record_unparsed(metrics: &Metrics, client: Option<Client<'_>>, status: u16) {
    metrics.request_without_duration(status);
    let Some(c) = client else { return };
    let client_cn = c.identity.cn_for_log();
    crate::logs::write(&crate::logs::Line {
        peer: c.peer,
        client_cn: &client_cn,
        client_fingerprint: &c.identity.fingerprint,
        method: "-",
        path: "-",
        version: http::Version::HTTP_11,
        status,
        bytes_in: 0,
        bytes_out: 0,
        total: Duration::ZERO,
        upstream: None,
        route: None,
        viewer: None,
    });
}
