//! The first stage of a connection: admission. A PROXY header when configured, a look at the
//! first byte, the TLS handshake (inside which the verifier decides), and the re-check of a
//! resumed session. It ends in an [`Admitted`] connection or a [`Refusal`], which is logged and
//! counted in one place, [`Refusal::record`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::HandshakeKind;
use rustls_pki_types::UnixTime;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::activity::{Activity, Tracked};
use super::generation::Generation;
use super::proxy_protocol::{self, AcceptError, Rewind};
use crate::config::ProxyProtocol;
use crate::identity::{capped_for_log, ClientIdentity};
use crate::metrics::Metrics;
use crate::tls::verifier::{with_notes, Accepted, CandidateVerdict, HandshakeNotes};
use crate::tls::Reason;

/// The client's TCP stream after any PROXY header (bytes read past it are put back).
pub(crate) type ClientStream = Rewind<TcpStream>;

/// A connection whose client certificate was accepted.
pub(crate) struct Admitted {
    /// The TLS stream, its TCP socket tracked for the idle and header timeouts.
    pub(crate) tls: TlsStream<Tracked<ClientStream>>,
    /// The client: the TCP peer, or the address a PROXY header gave.
    pub(crate) peer: SocketAddr,
    /// The verifier's acceptance: the identity, and until when it holds.
    pub(crate) accepted: Arc<Accepted>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub(crate) tls_version: Option<&'static str>,
    /// ALPN chose h2.
    pub(crate) is_h2: bool,
    /// The report-only candidate's verdict, when one is configured.
    pub(crate) candidate: Option<CandidateVerdict>,
    /// The server name (SNI) the client asked for, lower-cased.
    pub(crate) sni: Option<Box<str>>,
    /// The protocol version, cipher suite and key-exchange group negotiated.
    pub(crate) posture: Posture,
}

/// What a handshake negotiated, as the IANA names rustls gives them (a bounded set: the
/// provider's versions, suites and groups), `none` where there is none (a resumed TLS 1.2
/// session has no key exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Posture {
    /// `TLSv1_3` or `TLSv1_2`.
    pub(crate) version: &'static str,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub(crate) suite: &'static str,
    /// e.g. `X25519MLKEM768`.
    pub(crate) group: &'static str,
}

impl Posture {
    /// What `conn` negotiated.
    fn of(conn: &rustls::ServerConnection) -> Posture {
        Posture {
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("none"),
            suite: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("none"),
            group: conn
                .negotiated_key_exchange_group()
                .and_then(|g| g.name().as_str())
                .unwrap_or("none"),
        }
    }
}

/// A refused connection: one connection-log line and one count, written by [`Refusal::record`].
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The client.
    pub(crate) peer: SocketAddr,
    /// The stable reason code.
    pub(crate) reason: Reason,
    /// The TLS version our ServerHello chose, when one was sent.
    pub(crate) tls_version: Option<&'static str>,
    /// The certificate presented, when there was one and it could be parsed.
    pub(crate) certificate: Option<Arc<ClientIdentity>>,
    /// What happened, in words.
    pub(crate) detail: String,
    /// The report-only candidate's verdict on the presented chain, when one is configured.
    pub(crate) candidate: Option<CandidateVerdict>,
}

impl Refusal {
    fn new(peer: SocketAddr, reason: Reason, detail: impl Into<String>) -> Refusal {
        Refusal {
            peer,
            reason,
            tls_version: None,
            certificate: None,
            detail: detail.into(),
            candidate: None,
        }
    }

    /// A source outside `listener.allow_sources`, named by a PROXY header.
    fn quiet_source(peer: SocketAddr) -> Refusal {
        Refusal::new(
            peer,
            Reason::SourceNotAllowed,
            "source not in listener.allow_sources",
        )
    }

    /// Counts the refusal and writes its connection-log line (target
    /// `mtls_shield::connection`, WARN).
    pub(crate) fn record(&self, metrics: &Metrics) {
        if self.reason == Reason::SourceNotAllowed {
            // Counted and logged like one refused at accept: rate-limited.
            source_refused(metrics, self.peer);
            return;
        }
        metrics.handshake(Some(self.reason));
        let (subject, issuer, serial, fingerprint) =
            certificate_fields(self.certificate.as_deref());
        tracing::warn!(
            target: crate::logs::target::CONNECTION,
            peer = %self.peer,
            reason = self.reason.as_str(),
            tls_version = self.tls_version.unwrap_or("-"),
            subject = subject.as_ref(),
            issuer = issuer.as_ref(),
            serial = serial.as_str(),
            fingerprint = %fingerprint,
            detail = self.detail.as_str(),
            "handshake rejected"
        );
        report_candidate(
            metrics,
            self.peer,
            self.certificate.as_deref(),
            Err(self.reason),
            self.candidate.as_ref(),
        );
    }
}

/// Counts the report-only candidate's verdict beside the enforced one, and logs one line when
/// they differ (the line an operator watches while rotating a pin or a CA).
pub(crate) fn report_candidate(
    metrics: &Metrics,
    peer: SocketAddr,
    cert: Option<&ClientIdentity>,
    enforced: Result<(), Reason>,
    candidate: Option<&CandidateVerdict>,
) {
    let Some(candidate) = candidate else {
        return;
    };
    let candidate_reason = candidate.as_ref().err().map(|(r, _)| *r);
    metrics.report_only(enforced.is_ok(), candidate_reason);
    if enforced.is_ok() == candidate.is_ok() {
        return;
    }
    let (subject, issuer, serial, fingerprint) = certificate_fields(cert);
    let verdict = |ok: bool| if ok { "accepted" } else { "rejected" };
    tracing::warn!(
        target: crate::logs::target::CONNECTION,
        peer = %peer,
        enforced = verdict(enforced.is_ok()),
        enforced_reason = enforced.err().map_or("none", Reason::as_str),
        candidate = verdict(candidate.is_ok()),
        candidate_reason = candidate_reason.map_or("none", Reason::as_str),
        subject = subject.as_ref(),
        issuer = issuer.as_ref(),
        serial = serial.as_str(),
        fingerprint = %fingerprint,
        detail = candidate.as_ref().err().map_or("", |(_, d)| d.as_str()),
        "report-only policy disagrees with the enforced one"
    );
}

/// Counts a connection from outside `listener.allow_sources`, and logs it at most once a second
/// (a scanner can open thousands a second), with how many were not logged in between.
pub(crate) fn source_refused(metrics: &Metrics, peer: SocketAddr) {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    metrics.handshake(Some(Reason::SourceNotAllowed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    tracing::warn!(
        target: crate::logs::target::CONNECTION,
        peer = %peer,
        reason = Reason::SourceNotAllowed.as_str(),
        not_logged_since_last_line = UNLOGGED.swap(0, Ordering::Relaxed),
        "connection refused: source not in listener.allow_sources"
    );
}

/// The certificate fields of a connection-log line (subject and issuer capped), `-` for each
/// when no certificate was parsed.
pub(crate) fn certificate_fields(
    cert: Option<&ClientIdentity>,
) -> (Cow<'_, str>, Cow<'_, str>, String, String) {
    match cert {
        Some(c) => (
            capped_for_log(&c.subject),
            capped_for_log(&c.issuer),
            c.serial_hex.clone(),
            c.fingerprint_hex(),
        ),
        None => ("-".into(), "-".into(), "-".to_owned(), "-".to_owned()),
    }
}

/// Admits a connection, or refuses it. `Ok(None)`: the peer closed without sending a byte
/// (TCP health checks and port probes); that is not a handshake, so it is neither counted nor
/// logged above debug.
pub(crate) async fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    generation: &Generation,
    activity: &Arc<Activity>,
) -> Result<Option<Admitted>, Refusal> {
    // The PROXY header (when configured) and the handshake share one deadline.
    let deadline = Instant::now() + generation.listener().timeouts.handshake;
    let Some((stream, peer)) = proxy_header(stream, peer, generation, deadline).await? else {
        return Ok(None);
    };
    if generation.listener().proxy_protocol != ProxyProtocol::Off
        && !generation.sources.allows(peer.ip())
    {
        // The balancer's PROXY header names the client: that is the source checked, still
        // before any TLS work.
        return Err(Refusal::quiet_source(peer));
    }
    let Some((tls, notes)) = handshake(stream, peer, generation, activity, deadline).await? else {
        return Ok(None);
    };
    activity.handshake_done();
    let (_, conn) = tls.get_ref();
    let tls_version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "TLSv1.2",
    });
    let is_h2 = conn.alpn_protocol() == Some(b"h2");
    let posture = Posture::of(conn);
    let sni = conn.server_name().map(|n| {
        n.trim_end_matches('.')
            .to_ascii_lowercase()
            .into_boxed_str()
    });
    let (accepted, candidate) = match (notes.accepted, conn.handshake_kind()) {
        (Some(a), Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest)) => {
            (a, notes.candidate)
        }
        _ => recheck_resumed(conn, peer, generation, tls_version)?,
    };
    let accepted = resolve_ocsp(accepted, peer, generation, tls_version).await?;
    Ok(Some(Admitted {
        tls,
        peer,
        accepted,
        tls_version,
        is_h2,
        candidate,
        sni,
        posture,
    }))
}

/// Security: the handshake cannot wait on the network, so a chain whose OCSP status was not
/// in the cache is accepted there with the queries pending. They are resolved here, after the
/// handshake and before a single request byte is read: a revoked client gets no HTTP byte,
/// exactly as if the handshake had refused it. The acceptance then holds only until the
/// earliest nextUpdate of the answers, when live trust judges the connection again.
async fn resolve_ocsp(
    accepted: Arc<Accepted>,
    peer: SocketAddr,
    generation: &Generation,
    tls_version: Option<&'static str>,
) -> Result<Arc<Accepted>, Refusal> {
    if accepted.ocsp_pending.is_empty() {
        return Ok(accepted);
    }
    let Some(resolver) = &generation.tls.ocsp else {
        // Queries exist only when a generation has OCSP on, and then it has a resolver; fail
        // closed if that ever stops being true.
        return Err(Refusal {
            tls_version,
            certificate: Some(accepted.identity.clone()),
            ..Refusal::new(
                peer,
                Reason::RevocationUnknown,
                "OCSP queries without a resolver",
            )
        });
    };
    match resolver.resolve(&accepted.ocsp_pending).await {
        Ok(until) => Ok(Arc::new(accepted.answered(until))),
        Err((reason, detail)) => Err(Refusal {
            tls_version,
            certificate: Some(accepted.identity.clone()),
            ..Refusal::new(peer, reason, detail)
        }),
    }
}

/// A PROXY protocol header from a load balancer comes before TLS and names the real client,
/// which replaces the TCP peer from here on. (A no-op when `proxy_protocol = "off"`.)
async fn proxy_header(
    stream: TcpStream,
    peer: SocketAddr,
    generation: &Generation,
    deadline: Instant,
) -> Result<Option<(ClientStream, SocketAddr)>, Refusal> {
    let mode = generation.listener().proxy_protocol;
    match tokio::time::timeout_at(deadline, proxy_protocol::accept(stream, peer, mode)).await {
        Ok(Ok(accepted)) => Ok(Some(accepted)),
        Ok(Err(AcceptError::Empty)) => {
            tracing::debug!(peer = %peer, "connection closed before any data");
            Ok(None)
        }
        Ok(Err(AcceptError::NotTls)) => Err(Refusal::new(
            peer,
            Reason::NotTls,
            "first bytes are neither a PROXY protocol header nor a TLS handshake record",
        )),
        // Security: a missing or malformed header is refused before TLS. The stable reason
        // codes have none for the PROXY protocol, so it counts as `other` and the detail says
        // what was wrong.
        Ok(Err(e)) => Err(Refusal::new(peer, Reason::Other, e.to_string())),
        Err(_) => Err(Refusal::new(
            peer,
            Reason::HandshakeTimeout,
            "PROXY protocol header did not arrive in time",
        )),
    }
}

/// How a handshake attempt ended before it produced a stream.
enum Stopped {
    /// The peer closed without a byte.
    Quiet,
    /// Refused: the reason, the TLS version our ServerHello chose, and rustls's words.
    Refused(Reason, Option<&'static str>, String),
}

/// The TLS handshake, with a deadline. The verifier decides inside it, and leaves its notes.
async fn handshake(
    stream: ClientStream,
    peer: SocketAddr,
    generation: &Generation,
    activity: &Arc<Activity>,
    deadline: Instant,
) -> Result<Option<(TlsStream<Tracked<ClientStream>>, HandshakeNotes)>, Refusal> {
    // Peek before rustls sees anything: a first byte that is not a TLS handshake record
    // (plain HTTP, a scanner) is `not_tls`, and it gets nothing back at all.
    let attempt = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(Stopped::Quiet),
            Ok(_) if first[0] != 0x16 => {
                return Err(Stopped::Refused(
                    Reason::NotTls,
                    None,
                    "first byte is not a TLS handshake record".to_owned(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(Stopped::Refused(Reason::Other, None, e.to_string())),
        }
        generation
            .acceptor
            .accept(Tracked::new(stream, activity.clone()))
            .into_fallible()
            .await
            .map_err(|(e, io)| {
                Stopped::Refused(Reason::from_io(&e), io.tls_version(), e.to_string())
            })
    };
    let (outcome, notes) = with_notes(tokio::time::timeout_at(deadline, attempt)).await;
    let refused = |reason, tls_version, detail: String| Refusal {
        peer,
        reason,
        tls_version,
        certificate: notes.identity.clone(),
        detail,
        candidate: notes.candidate.clone(),
    };
    match outcome {
        Ok(Ok(tls)) => Ok(Some((tls, notes))),
        Ok(Err(Stopped::Quiet)) => {
            tracing::debug!(peer = %peer, "connection closed before any data");
            Ok(None)
        }
        // The verifier's own classification and words win: it saw the certificate.
        Ok(Err(Stopped::Refused(reason, version, tls_detail))) => Err(refused(
            notes.rejected.unwrap_or(reason),
            version,
            notes.detail.clone().unwrap_or(tls_detail),
        )),
        Err(_elapsed) => Err(refused(
            Reason::HandshakeTimeout,
            None,
            "handshake did not finish in time".to_owned(),
        )),
    }
}

/// Security: a resumed session skips the verifier entirely. Re-run the full check on the
/// chain stored with the session, at the current time, so expiry and the allow-list are never
/// skipped. (Trust changes already cannot resume: each trust state has its own session store
/// and ticket keys.)
fn recheck_resumed(
    conn: &rustls::ServerConnection,
    peer: SocketAddr,
    generation: &Generation,
    tls_version: Option<&'static str>,
) -> Result<(Arc<Accepted>, Option<CandidateVerdict>), Refusal> {
    let chain = conn.peer_certificates().unwrap_or_default();
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(Refusal {
            tls_version,
            ..Refusal::new(
                peer,
                Reason::NoCertificate,
                "resumed session without a client certificate",
            )
        });
    };
    let verifier = &generation.tls.verifier;
    let now = UnixTime::now();
    let candidate = verifier.judge_candidate(leaf, intermediates, now);
    match verifier.check(leaf, intermediates, now) {
        Ok(a) => Ok((a, candidate)),
        Err(r) => Err(Refusal {
            peer,
            reason: r.reason,
            tls_version,
            certificate: r.identity,
            detail: format!("resumed session failed re-verification: {}", r.detail),
            candidate,
        }),
    }
}
