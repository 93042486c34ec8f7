//! Live trust: a trust decision keeps holding on open connections, not only at the handshake.
//!
//! CloudFront keeps busy origin connections open for as long as traffic flows, so a client
//! removed from the allow-list, revoked by a CRL, or whose CA left the truststore would keep
//! being served until its connection happened to close, and a certificate that expires
//! mid-connection would keep being served too. Here every open connection is registered, and:
//!
//! - when a new trust state is installed (a reload, or a fetched CRL), every open connection
//!   is judged again by the new state's verifier, over the chain it presented, at the current
//!   time. The verifier's memo makes that one full verification per distinct chain, then one
//!   lookup per connection;
//! - before each request, the connection compares the trust generation it was judged under
//!   with the current one (one atomic load), and the time with the end of its acceptance
//!   (the earliest notAfter on the verified path, or the nextUpdate of a CRL consulted), and
//!   is judged again when either changed;
//! - the connection's watchdog wakes at the end of the acceptance too, so an idle connection
//!   is judged when its certificate expires, not only at its next request.
//!
//! A connection that fails is closed: requests already being forwarded run to completion
//! (within `listener.shutdown_timeout`), HTTP/1.1 gets `Connection: close` on the response in
//! flight or is closed at once when idle, h2 gets GOAWAY; a request that arrives afterwards is
//! never forwarded and gets no HTTP answer at all. Connections that still pass are untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use rustls_pki_types::UnixTime;
use tokio::sync::Notify;

use super::admit::certificate_fields;
use crate::identity::ClientIdentity;
use crate::metrics::Metrics;
use crate::tls::accepted::Accepted;
use crate::tls::verifier::ShieldVerifier;
use crate::tls::Reason;

/// The trust state every open connection is held to, and the open connections.
#[derive(Debug)]
pub(crate) struct LiveTrust {
    /// The verifier of the current trust state.
    verifier: ArcSwap<ShieldVerifier>,
    /// The generation of the current trust state. Stored after `verifier`, so a connection
    /// that reads it and then the verifier judges with a state at least that new.
    generation: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<ConnTrust>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// How a re-judgement of every open connection went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Judged {
    /// Open connections judged.
    pub(crate) judged: usize,
    /// Of which closed.
    pub(crate) closed: usize,
}

impl LiveTrust {
    /// Trust state `generation`, judged by `verifier`.
    pub(crate) fn new(
        verifier: Arc<ShieldVerifier>,
        generation: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            verifier: ArcSwap::new(verifier),
            generation: AtomicU64::new(generation),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            metrics,
        }
    }

    /// Installs a new trust state and judges every open connection against it.
    pub(crate) fn install(&self, verifier: Arc<ShieldVerifier>, generation: u64) -> Judged {
        self.verifier.store(verifier);
        self.generation.store(generation, Ordering::Release);
        // Judge outside the lock: a full verification per distinct chain must not hold up
        // connections opening and closing meanwhile.
        let open: Vec<Arc<ConnTrust>> = self
            .connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        let now = unix_now();
        let mut result = Judged::default();
        for conn in open {
            if conn.is_closed() {
                continue;
            }
            result.judged += 1;
            if conn.judge(now).is_err() {
                result.closed += 1;
            }
        }
        result
    }

    /// Registers an admitted connection, accepted under trust generation `generation`.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        accepted: Arc<Accepted>,
        generation: u64,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnTrust {
            id,
            peer,
            identity: accepted.identity.clone(),
            valid_until: AtomicI64::new(accepted.valid_until),
            generation: AtomicU64::new(generation),
            closed: OnceLock::new(),
            wake: Notify::new(),
            live: self.clone(),
        });
        if let Ok(mut c) = self.connections.lock() {
            c.insert(id, conn.clone());
        }
        // A trust state installed while this connection was handshaking has not judged it.
        if conn.is_stale(unix_now()) {
            let _ = conn.judge(unix_now());
        }
        Registered(conn)
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut c) = self.connections.lock() {
            c.remove(&id);
        }
    }
}

/// A registered connection; unregisters it when the connection ends.
#[derive(Debug)]
pub(crate) struct Registered(Arc<ConnTrust>);

impl Registered {
    /// The connection's trust.
    pub(crate) fn trust(&self) -> &Arc<ConnTrust> {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.live.unregister(self.0.id);
    }
}

/// Why a connection was closed by a later judgement.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    /// The stable reason code, as at handshake.
    pub(crate) reason: Reason,
}

/// One open connection's standing with the current trust state.
#[derive(Debug)]
pub(crate) struct ConnTrust {
    id: u64,
    peer: SocketAddr,
    /// The chain the client presented (its leaf and intermediates), judged again.
    identity: Arc<ClientIdentity>,
    /// The first second at which the last acceptance no longer holds by itself.
    valid_until: AtomicI64,
    /// The trust generation of the last judgement.
    generation: AtomicU64,
    closed: OnceLock<Closed>,
    /// Wakes the connection's watchdog when the connection is closed.
    wake: Notify,
    live: Arc<LiveTrust>,
}

impl ConnTrust {
    /// Whether a request may start now. A new trust state or the end of the acceptance makes
    /// the connection be judged again first; a closed connection takes no more requests.
    pub(crate) fn admit_request(&self) -> Result<(), Closed> {
        if let Some(c) = self.closed.get() {
            return Err(c.clone());
        }
        let now = unix_now();
        if self.is_stale(now) {
            self.judge(now)?;
        }
        Ok(())
    }

    /// Judges the connection again if a new trust state was installed or its acceptance ran
    /// out since the last judgement.
    pub(crate) fn judge_if_stale(&self) -> Result<(), Closed> {
        let now = unix_now();
        if self.is_stale(now) {
            self.judge(now)?;
        }
        Ok(())
    }

    /// A new trust state, or an acceptance that has run out.
    fn is_stale(&self, now: i64) -> bool {
        self.generation.load(Ordering::Relaxed) != self.live.generation.load(Ordering::Acquire)
            || now >= self.valid_until.load(Ordering::Relaxed)
    }

    /// Judges the presented chain with the current trust state at `now` (Unix seconds); closes
    /// the connection when it fails.
    pub(crate) fn judge(&self, now: i64) -> Result<(), Closed> {
        if let Some(c) = self.closed.get() {
            return Err(c.clone());
        }
        let generation = self.live.generation.load(Ordering::Acquire);
        let verifier = self.live.verifier.load();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        match verifier.check(&self.identity.leaf, &self.identity.intermediates, at) {
            // Security: an open connection cannot wait on a responder. An OCSP answer that went
            // stale (its refresh failed) is an unknown status, which closes the connection as a
            // stale CRL does, unless the operator chose soft fail.
            Ok(accepted) if !accepted.ocsp_pending.is_empty() && !verifier.ocsp_soft_fail() => {
                Err(self.close(
                    Reason::RevocationUnknown,
                    generation,
                    "no fresh OCSP answer for the chain (the responder did not answer the refresh)",
                ))
            }
            Ok(accepted) => {
                self.valid_until
                    .store(accepted.valid_until, Ordering::Relaxed);
                self.generation.store(generation, Ordering::Relaxed);
                Ok(())
            }
            Err(r) => Err(self.close(r.reason, generation, &r.detail)),
        }
    }

    /// Closes the connection once: counts it, writes its connection-log line, and wakes its
    /// watchdog.
    fn close(&self, reason: Reason, generation: u64, detail: &str) -> Closed {
        let closed = Closed { reason };
        if self.closed.set(closed.clone()).is_ok() {
            self.live.metrics.connection_closed(reason);
            let (subject, issuer, serial, fingerprint) = certificate_fields(Some(&self.identity));
            tracing::warn!(
                target: crate::logs::target::CONNECTION,
                peer = %self.peer,
                reason = reason.as_str(),
                subject = subject.as_ref(),
                issuer = issuer.as_ref(),
                serial = serial.as_str(),
                fingerprint = %fingerprint,
                generation,
                detail,
                "open connection no longer trusted; closing"
            );
            self.wake.notify_one();
        }
        closed
    }

    /// Whether a judgement closed the connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Resolves once the connection is closed by a judgement.
    pub(crate) async fn closed(&self) {
        loop {
            // Register interest before looking, so a close between the look and the wait
            // still wakes us (Notify keeps one permit for `notify_one`).
            let notified = self.wake.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Seconds until the acceptance runs out by itself (at least 0).
    pub(crate) fn seconds_left(&self, now: i64) -> i64 {
        self.valid_until
            .load(Ordering::Relaxed)
            .saturating_sub(now)
            .max(0)
    }
}

/// The current time, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    //! The request-path and re-judgement rules, on a real verifier.
    use super::*;
    use crate::config::AllowConfig;
    use crate::policy::AllowList;
    use crate::tls::crl::Anchor;
    use crate::tls::verifier::Trust;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls_pki_types::CertificateDer;

    fn root(cn: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (p.self_signed(&key).unwrap(), key)
    }

    fn client(issuer: &(rcgen::Certificate, KeyPair), expired: bool) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "c");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(2);
        p.not_after = if expired {
            now - time::Duration::days(1)
        } else {
            now + time::Duration::days(1)
        };
        p.signed_by(&key, &issuer.0, &issuer.1)
            .unwrap()
            .der()
            .clone()
    }

    fn verifier(anchor: &rcgen::Certificate) -> Arc<ShieldVerifier> {
        let der = anchor.der().clone();
        let trust = Trust {
            anchors: vec![Anchor {
                info: crate::x509::cert_info(&der).unwrap(),
                der,
            }],
            crls: Vec::new(),
            require_crl: false,
            algs: crate::tls::provider().signature_verification_algorithms,
            distribution_points: None,
            advertise_ca_names: true,
            ocsp: None,
        };
        let allow = AllowList::compile(&AllowConfig::default()).unwrap();
        Arc::new(ShieldVerifier::new(trust, allow, 16).unwrap())
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:443".parse().unwrap()
    }

    #[test]
    fn a_new_trust_state_that_refuses_the_chain_closes_the_connection() {
        let (a, b) = (root("A"), root("B"));
        let leaf = client(&a, false);
        let trusting_a = verifier(&a.0);
        let accepted = trusting_a.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = Arc::new(LiveTrust::new(trusting_a, 1, Arc::new(Metrics::new())));
        let conn = live.register(peer(), accepted, 1);
        assert!(conn.trust().admit_request().is_ok());

        let judged = live.install(verifier(&b.0), 2);
        assert_eq!(
            judged,
            Judged {
                judged: 1,
                closed: 1
            }
        );
        let closed = conn.trust().admit_request().unwrap_err();
        assert_eq!(closed.reason, Reason::UnknownCa);
    }

    #[test]
    fn a_new_trust_state_that_still_accepts_the_chain_keeps_the_connection() {
        let a = root("A");
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = Arc::new(LiveTrust::new(v, 1, Arc::new(Metrics::new())));
        let conn = live.register(peer(), accepted, 1);
        assert_eq!(
            live.install(verifier(&a.0), 2),
            Judged {
                judged: 1,
                closed: 0
            }
        );
        assert!(conn.trust().admit_request().is_ok());
    }

    #[test]
    fn a_request_after_the_acceptance_ran_out_is_judged_again_and_refused() {
        let a = root("A");
        let leaf = client(&a, true);
        let v = verifier(&a.0);
        // An acceptance whose window has just closed, as it would be after notAfter passed.
        let identity = Arc::new(ClientIdentity::parse(&leaf, &[]).unwrap());
        let accepted = Arc::new(Accepted {
            identity,
            valid_from: 0,
            valid_until: unix_now() - 1,
            ocsp_pending: Vec::new(),
        });
        let live = Arc::new(LiveTrust::new(v, 1, Arc::new(Metrics::new())));
        // Registration already sees the stale acceptance and judges it.
        let conn = live.register(peer(), accepted, 1);
        assert!(conn.trust().is_closed());
        assert_eq!(
            conn.trust().admit_request().unwrap_err().reason,
            Reason::Expired
        );
    }

    #[test]
    fn a_connection_admitted_on_an_older_state_is_judged_when_it_registers() {
        let (a, b) = (root("A"), root("B"));
        let leaf = client(&a, false);
        let trusting_a = verifier(&a.0);
        let accepted = trusting_a.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = Arc::new(LiveTrust::new(verifier(&b.0), 2, Arc::new(Metrics::new())));
        // Handshake finished on generation 1 while generation 2 was installed.
        let conn = live.register(peer(), accepted, 1);
        assert!(conn.trust().is_closed());
    }

    #[test]
    fn an_ended_connection_is_no_longer_judged() {
        let a = root("A");
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = Arc::new(LiveTrust::new(v, 1, Arc::new(Metrics::new())));
        drop(live.register(peer(), accepted, 1));
        assert_eq!(live.install(verifier(&a.0), 2), Judged::default());
    }
}
