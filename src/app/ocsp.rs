//! Asking OCSP responders: the [`Resolver`] that admission calls for pending queries (one
//! HTTP POST each, bounded by `client_auth.ocsp_timeout`, with `ocsp_soft_fail` applied), and
//! the refresher that asks again halfway through each answer's validity, so connections that
//! stay open never meet a stale answer. An answer that changes (good to revoked) rebuilds the
//! trust state, which judges every open connection again, exactly as a new CRL does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OnceCell};

use crate::config::OcspConfig;
use crate::metrics::{Metrics, OcspResult};
use crate::proxy::trust::unix_now;
use crate::tls::ocsp::{
    check_response, nonce, request_der, Answer, OcspCache, OcspKey, OcspQuery, OcspResolver,
    OcspStatus, Resolved,
};
use crate::tls::Reason;

/// An OCSP answer is small (a few KiB with a responder certificate); anything larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Answers nobody looked up for this long are not refreshed any more (they expire on their
/// own). Long: a busy CloudFront connection stays open for days without a new handshake, and
/// its answer must stay fresh all that time. The cache's bound keeps the work bounded.
const KEEP_FRESH_FOR: i64 = 7 * 24 * 3600;

/// Lookups under way, by CertID, shared by every generation: connections that arrive together
/// with the same uncached chain (CloudFront opens many at once) wait for one POST, instead of
/// each sending its own to the responder.
pub(crate) type InFlight = Arc<Mutex<HashMap<OcspKey, Arc<OnceCell<Result<Answer, String>>>>>>;

/// Asks responders for one generation: its timeout and soft-fail policy over the shared cache.
#[derive(Debug)]
pub(crate) struct Resolver {
    cache: Arc<OcspCache>,
    in_flight: InFlight,
    timeout: Duration,
    soft_fail: bool,
    /// `ocsp_refresh`, seconds.
    pub(crate) refresh_every: i64,
    metrics: Arc<Metrics>,
    /// Notified when an answer's status changed: the app rebuilds the trust state.
    changed: Arc<Notify>,
}

impl Resolver {
    /// A resolver with `config`'s settings.
    pub(crate) fn new(
        config: &OcspConfig,
        cache: Arc<OcspCache>,
        in_flight: InFlight,
        metrics: Arc<Metrics>,
        changed: Arc<Notify>,
    ) -> Self {
        Resolver {
            cache,
            in_flight,
            timeout: config.timeout,
            soft_fail: config.soft_fail,
            refresh_every: i64::try_from(config.refresh.as_secs()).unwrap_or(i64::MAX),
            metrics,
            changed,
        }
    }

    /// Asks `query`'s responder once: the checked answer, stored and counted.
    pub(crate) async fn ask(&self, query: &OcspQuery) -> Result<Answer, String> {
        let nonce = nonce();
        let body = request_der(query, &nonce);
        let outcome = match tokio::time::timeout(self.timeout, post(&query.url, body)).await {
            Err(_) => Err(format!(
                "no answer within client_auth.ocsp_timeout ({:?})",
                self.timeout
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(answer)) => {
                let algs = crate::tls::provider().signature_verification_algorithms;
                check_response(&answer, query, &nonce, unix_now(), &algs).map_err(|e| e.to_string())
            }
        };
        match &outcome {
            Ok(answer) => {
                self.metrics.ocsp(match answer.status {
                    OcspStatus::Good => OcspResult::good,
                    OcspStatus::Revoked { .. } => OcspResult::revoked,
                    OcspStatus::Unknown => OcspResult::unknown,
                });
                let before = self.cache.store(query, *answer);
                if before.is_some_and(|b| b != answer.status) {
                    tracing::warn!(url = %query.url, subject = %query.subject, status = ?answer.status, "OCSP status changed; judging open connections again");
                    self.changed.notify_one();
                }
            }
            Err(e) => {
                self.metrics.ocsp(OcspResult::error);
                tracing::warn!(url = %query.url, subject = %query.subject, error = %e, "OCSP lookup failed");
            }
        }
        let (entries, oldest) = self.cache.stats(unix_now());
        self.metrics.ocsp_cache(entries, oldest);
        outcome
    }

    /// [`Resolver::ask`], joined with a lookup of the same CertID already under way.
    async fn ask_once(&self, query: &OcspQuery) -> Result<Answer, String> {
        let cell = self
            .in_flight
            .lock()
            .ok()
            .map(|mut m| m.entry(query.key.clone()).or_default().clone());
        let Some(cell) = cell else {
            return self.ask(query).await;
        };
        let answer = cell.get_or_init(|| self.ask(query)).await.clone();
        if let Ok(mut m) = self.in_flight.lock() {
            if m.get(&query.key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                m.remove(&query.key);
            }
        }
        answer
    }

    async fn resolve_all(&self, queries: &[OcspQuery]) -> Resolved {
        let mut until = i64::MAX;
        for query in queries {
            let answer = match self.cache.fresh(&query.key, unix_now()) {
                Some(a) => Ok(a),
                None => self.ask_once(query).await,
            };
            match answer {
                Ok(a) => match a.status {
                    OcspStatus::Good => until = until.min(a.fresh_until()),
                    OcspStatus::Revoked { since } => {
                        return Err((
                            Reason::Revoked,
                            format!(
                                "the OCSP responder {} says {} is revoked since {}",
                                query.url,
                                query.subject,
                                crate::x509::rfc3339_z(since)
                            ),
                        ))
                    }
                    OcspStatus::Unknown => {
                        return Err((
                            Reason::RevocationUnknown,
                            format!(
                                "the OCSP responder {} does not know {} (status unknown)",
                                query.url, query.subject
                            ),
                        ))
                    }
                },
                // Security: no answer means the status is unknown, and unknown refuses
                // unless the operator chose availability over certainty (soft fail).
                Err(e) if self.soft_fail => {
                    self.metrics.ocsp(OcspResult::soft_fail);
                    tracing::warn!(url = %query.url, subject = %query.subject, error = %e, "no usable OCSP answer; accepted because client_auth.ocsp_soft_fail is on");
                }
                Err(e) => {
                    return Err((
                        Reason::RevocationUnknown,
                        format!("no usable OCSP answer from {}: {e}", query.url),
                    ))
                }
            }
        }
        Ok(until)
    }
}

impl OcspResolver for Resolver {
    fn resolve<'a>(
        &'a self,
        queries: &'a [OcspQuery],
    ) -> Pin<Box<dyn Future<Output = Resolved> + Send + 'a>> {
        Box::pin(self.resolve_all(queries))
    }
}

/// POSTs an OCSP request to an `http://` responder and returns the answer's bytes.
async fn post(url: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// OCSP responders are asked"));
    }
    let host = uri.host().ok_or_else(|| format!("{url} has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let req = Request::post(uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(
            header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(header::CONTENT_TYPE, "application/ocsp-request")
        .header(header::ACCEPT, "application/ocsp-response")
        .header(
            header::USER_AGENT,
            concat!("mtls-shield/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("the responder answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_ANSWER_BYTES {
                return Err(format!("an answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes)
}

/// Keeps the answers in use fresh until the program drains: each is asked again halfway
/// through its validity, with the current generation's settings (`resolver()`).
pub(crate) async fn keep_fresh(
    cache: Arc<OcspCache>,
    resolver: impl Fn() -> Option<Resolver>,
    draining: impl Fn() -> bool,
) {
    loop {
        let now = unix_now();
        let mut failed = false;
        let mut every = i64::MAX;
        if let Some(r) = resolver() {
            every = r.refresh_every;
            for query in cache.due(now, now - KEEP_FRESH_FOR, every) {
                failed |= r.ask(&query).await.is_err();
            }
        }
        if draining() {
            return;
        }
        let next = cache
            .next_refresh(unix_now() - KEEP_FRESH_FOR, every)
            .unwrap_or(i64::MAX);
        // After a failure, a responder that is down is not asked every second.
        let floor = if failed { 10 } else { 1 };
        // An answer that arrives while this sleeps is due `every` seconds later at the latest.
        let wait = (next - unix_now()).clamp(floor, every.clamp(floor, 60));
        tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(1))).await;
    }
}
