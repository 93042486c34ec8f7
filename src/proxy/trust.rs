//! Live trust: a trust decision keeps holding on open connections, not only at the handshake.
//!
//! CloudFront keeps busy origin connections open for as long as traffic flows, so a client
//! removed from the allow-list, revoked by a CRL, or whose CA left the truststore would keep
//! being served until its connection happened to close, and a certificate that expires
//! mid-connection would keep being served too.
//!
//! [`LiveTrust`] holds the generation in service, in a `watch` channel: the one place that
//! holds it. Each open connection subscribes to it (model: linkerd2-proxy's `AllowPolicy`, a
//! `watch::Receiver` per connection that re-checks on `changed()`), and:
//!
//! - when a new generation goes into service (a reload, a fetched CRL, an OCSP answer), the
//!   connection's watchdog wakes and judges the chain the client presented again, with the
//!   new generation's verifier, at the current time. The verifier's memo makes that one full
//!   verification per distinct chain, then one lookup per connection. The install waits until
//!   every connection open at that moment has judged the new generation (its [`Tally`]), so
//!   the reload's log line says how many were judged and closed;
//! - before each request, the connection checks whether a newer generation is in service and
//!   whether its acceptance (the earliest notAfter on the verified path, or the nextUpdate of
//!   a CRL consulted) ran out, and is judged again first when either is the case;
//! - the watchdog also wakes at the end of the acceptance, so an idle connection is judged
//!   when its certificate expires, not only at its next request; an upgraded tunnel (a
//!   WebSocket) keeps a subscription of its own for as long as it runs.
//!
//! A connection that fails is closed: requests already being forwarded run to completion
//! (within `listener.shutdown_timeout`), HTTP/1.1 gets `Connection: close` on the response in
//! flight or is closed at once when idle, h2 gets GOAWAY; a request that arrives afterwards is
//! never forwarded and gets no HTTP answer at all. Connections that still pass are untouched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::UnixTime;
use tokio::sync::{watch, Notify};

use super::admit::certificate_fields;
use super::generation::Generation;
pub(crate) use super::judged::{Judged, TrustState};
use crate::identity::ClientIdentity;
use crate::metrics::Metrics;
use crate::tls::accepted::Accepted;
use crate::tls::Reason;

/// How long an install waits for the open connections to judge the new generation. They do
/// it as soon as they see it (their watchdogs wake on the change); past this, the reload
/// completes and the log counts those judged so far.
const JUDGE_WAIT: Duration = Duration::from_secs(5);

/// What is in service: the generation, and whether the program is draining. One channel for
/// both, so a connection's watchdog waits on one subscription, not two: each wait registers
/// with the channel's shared waiter list, and the watchdog waits again after every request.
#[derive(Debug)]
pub(crate) struct InService<S> {
    /// The generation new connections use and open ones are judged against.
    pub(crate) generation: Arc<S>,
    /// Draining has started: no new connections, open ones close once idle.
    pub(crate) draining: bool,
}

impl<S> Clone for InService<S> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation.clone(),
            draining: self.draining,
        }
    }
}

/// The generation in service, and the count of open connections.
#[derive(Debug)]
pub(crate) struct LiveTrust<S: TrustState = Generation> {
    /// What is in service: every reader takes it from here.
    current: watch::Sender<InService<S>>,
    /// Open connections still trusted. Registration, leaving (a refusal or the end) and
    /// install all take this lock, so an install counts exactly the connections that will
    /// judge it.
    open: Mutex<usize>,
    metrics: Arc<Metrics>,
}

impl<S: TrustState> LiveTrust<S> {
    /// Live trust with `first` in service.
    pub(crate) fn new(first: Arc<S>, metrics: Arc<Metrics>) -> Self {
        Self {
            current: watch::channel(InService {
                generation: first,
                draining: false,
            })
            .0,
            open: Mutex::new(0),
            metrics,
        }
    }

    /// The generation in service.
    pub(crate) fn current(&self) -> Arc<S> {
        self.current.borrow().generation.clone()
    }

    /// A subscription to what is in service, for a task that waits on its changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<InService<S>> {
        self.current.subscribe()
    }

    /// Starts draining; every subscriber sees it.
    pub(crate) fn begin_drain(&self) {
        self.current.send_modify(|s| s.draining = true);
    }

    /// True once draining has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.current.borrow().draining
    }

    fn open_count(&self) -> std::sync::MutexGuard<'_, usize> {
        // A poisoned lock means a panic while adding or subtracting one: the count is usable.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `next` in service, then waits until every connection open at that moment has
    /// judged it (at most [`JUDGE_WAIT`]).
    pub(crate) async fn install(&self, next: Arc<S>) -> Judged {
        let tally_of = next.clone();
        {
            let open = self.open_count();
            tally_of.tally().start(*open);
            self.current.send_modify(|s| s.generation = next);
        }
        tally_of.tally().wait(JUDGE_WAIT).await
    }

    /// Registers an admitted connection, accepted under generation `admitted_under`.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        accepted: Arc<Accepted>,
        admitted_under: u64,
    ) -> Registered<S> {
        let (seen, registered_at) = {
            let mut open = self.open_count();
            *open += 1;
            let mut rx = self.current.subscribe();
            let seen = rx.borrow_and_update().generation.clone();
            let id = seen.id();
            (
                Seen {
                    rx,
                    generation: seen,
                },
                id,
            )
        };
        let conn = Arc::new(ConnTrust {
            peer,
            identity: accepted.identity.clone(),
            valid_until: AtomicI64::new(accepted.valid_until),
            judged_in: AtomicU64::new(admitted_under),
            registered_at,
            left_at: AtomicU64::new(u64::MAX),
            fresh: ArcSwap::from_pointee(seen.rx.clone()),
            latest: ArcSwap::new(seen.generation.clone()),
            seen: Mutex::new(seen),
            closed: OnceLock::new(),
            wake: Notify::new(),
            live: self.clone(),
        });
        // A generation put in service while this connection was handshaking has not judged it.
        let _ = conn.recheck(unix_now());
        Registered(conn)
    }

    /// A connection stops counting for the generations installed from now on: it was refused,
    /// or it ended. Once only.
    fn leave(&self, conn: &ConnTrust<S>) {
        let mut open = self.open_count();
        if conn.left_at.load(Ordering::Acquire) == u64::MAX {
            *open = open.saturating_sub(1);
            conn.left_at
                .store(self.current.borrow().generation.id(), Ordering::Release);
        }
    }

    /// A connection ended: it no longer counts, and the generation in service stops waiting
    /// for its judgement.
    fn unregister(&self, conn: &ConnTrust<S>) {
        self.leave(conn);
        let current = self.current.borrow().generation.clone();
        if conn.counts_for(current.id()) && conn.judged_in.load(Ordering::Acquire) < current.id() {
            current.tally().gone();
        }
    }
}

/// A registered connection: the handle to its standing with the generation in service. It
/// stays registered for as long as anything holds its [`ConnTrust`] (the connection's
/// requests, its watchdog, an upgraded tunnel).
#[derive(Debug)]
pub(crate) struct Registered<S: TrustState = Generation>(Arc<ConnTrust<S>>);

impl<S: TrustState> Registered<S> {
    /// The connection's trust.
    pub(crate) fn trust(&self) -> &Arc<ConnTrust<S>> {
        &self.0
    }
}

/// Why a connection was closed by a later judgement.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    /// The stable reason code, as at handshake.
    pub(crate) reason: Reason,
}

/// The generation a connection has seen last, and its subscription.
#[derive(Debug)]
struct Seen<S> {
    rx: watch::Receiver<InService<S>>,
    generation: Arc<S>,
}

/// One open connection's standing with the generation in service.
#[derive(Debug)]
pub(crate) struct ConnTrust<S: TrustState = Generation> {
    peer: SocketAddr,
    /// The chain the client presented (its leaf and intermediates), judged again.
    identity: Arc<ClientIdentity>,
    /// The first second at which the last acceptance no longer holds by itself.
    valid_until: AtomicI64,
    /// The generation of the last judgement.
    judged_in: AtomicU64,
    /// The generation in service when the connection registered: later ones count it...
    registered_at: u64,
    /// ...up to the one in service when it stopped counting (refused or ended; `u64::MAX`
    /// while it counts).
    left_at: AtomicU64,
    seen: Mutex<Seen<S>>,
    /// A copy of `seen`'s subscription as of the last look, for the lock-free check that
    /// nothing new was published since.
    fresh: ArcSwap<watch::Receiver<InService<S>>>,
    /// The generation in service as of the last look, for what each request judges itself
    /// (viewer certificates): read lock-free.
    latest: ArcSwap<S>,
    closed: OnceLock<Closed>,
    /// Wakes the connection's watchdog when a judgement closes the connection.
    wake: Notify,
    live: Arc<LiveTrust<S>>,
}

impl<S: TrustState> Drop for ConnTrust<S> {
    fn drop(&mut self) {
        self.live.unregister(self);
    }
}

impl<S: TrustState> ConnTrust<S> {
    /// Whether a request may start now. A newer generation or the end of the acceptance makes
    /// the connection be judged again first; a closed connection takes no more requests.
    pub(crate) fn admit_request(&self) -> Result<(), Closed> {
        if let Some(c) = self.closed.get() {
            return Err(c.clone());
        }
        self.judge_if_stale()
    }

    /// The generation in service as of the last [`Self::admit_request`]: the trust a
    /// request's own checks (its viewer certificate) are made under.
    pub(crate) fn in_service(&self) -> arc_swap::Guard<Arc<S>> {
        self.latest.load()
    }

    /// Judges the connection again if a newer generation is in service or its acceptance ran
    /// out since the last judgement.
    pub(crate) fn judge_if_stale(&self) -> Result<(), Closed> {
        let now = unix_now();
        // The fast path, taken by almost every request: nothing new was published since the
        // last look, and the acceptance still holds. Lock-free, because the streams of one h2
        // connection ask it at once from both workers.
        if !self.is_closed()
            && now < self.valid_until.load(Ordering::Relaxed)
            && !self.fresh.load().has_changed().unwrap_or(true)
        {
            return Ok(());
        }
        self.recheck(now)
    }

    /// The slow path of [`Self::judge_if_stale`]: takes what was published, and judges the
    /// connection when it is stale by it or by the clock.
    fn recheck(&self, now: i64) -> Result<(), Closed> {
        let generation = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.rx.has_changed().unwrap_or(false) {
                let latest = seen.rx.borrow_and_update().generation.clone();
                self.latest.store(latest.clone());
                seen.generation = latest;
            }
            let stale = self.is_closed()
                || self.judged_in.load(Ordering::Acquire) != seen.generation.id()
                || now >= self.valid_until.load(Ordering::Relaxed);
            if !stale {
                self.fresh.store(Arc::new(seen.rx.clone()));
                return Ok(());
            }
            seen.generation.clone()
        };
        let verdict = self.judge(&generation, now);
        // Whatever the verdict, this generation has been judged: the fast path may skip it.
        // (A refused connection never takes it: `closed` is set.)
        if let Ok(seen) = self.seen.lock() {
            if seen.generation.id() == generation.id() {
                self.fresh.store(Arc::new(seen.rx.clone()));
            }
        }
        verdict
    }

    /// Judges the presented chain with `generation`'s verifier at `now` (Unix seconds);
    /// closes the connection when it fails. The first judgement of a generation that counts
    /// this connection goes to its tally; a connection already closed only stops being
    /// waited for.
    fn judge(&self, generation: &Arc<S>, now: i64) -> Result<(), Closed> {
        let was_closed = self.is_closed();
        let verdict = self.verdict(generation, now);
        let id = generation.id();
        let first = self.judged_in.fetch_max(id, Ordering::AcqRel) < id;
        if first && self.counts_for(id) {
            if was_closed {
                generation.tally().gone();
            } else {
                generation.tally().report(verdict.is_err());
            }
        }
        verdict
    }

    /// Whether the install of generation `id` waits for this connection's judgement.
    fn counts_for(&self, id: u64) -> bool {
        id > self.registered_at && id <= self.left_at.load(Ordering::Acquire)
    }

    fn verdict(&self, generation: &Arc<S>, now: i64) -> Result<(), Closed> {
        if let Some(c) = self.closed.get() {
            return Err(c.clone());
        }
        let verifier = generation.verifier();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        match verifier.check(&self.identity.leaf, &self.identity.intermediates, at) {
            // Security: an open connection cannot wait on a responder. An OCSP answer that went
            // stale (its refresh failed) is an unknown status, which closes the connection as a
            // stale CRL does, unless the operator chose soft fail.
            Ok(accepted) if !accepted.ocsp_pending.is_empty() && !verifier.ocsp_soft_fail() => {
                Err(self.close(
                    Reason::RevocationUnknown,
                    generation.id(),
                    "no fresh OCSP answer for the chain (the responder did not answer the refresh)",
                ))
            }
            Ok(accepted) => {
                self.valid_until
                    .store(accepted.valid_until, Ordering::Relaxed);
                Ok(())
            }
            Err(r) => Err(self.close(r.reason, generation.id(), &r.detail)),
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
            self.live.leave(self);
            self.wake.notify_waiters();
        }
        closed
    }

    /// Whether a judgement closed the connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Keeps the connection judged, with the subscription `rx`, until a judgement refuses it:
    /// at each new generation, and when the acceptance runs out. For a task that has no other
    /// reason to wake, such as an upgraded tunnel.
    pub(crate) async fn until_refused(&self, mut rx: watch::Receiver<InService<S>>) {
        let mut subscribed = true;
        while !self.is_closed() {
            let wait = Duration::from_secs(
                u64::try_from(self.seconds_left(unix_now()))
                    .unwrap_or(0)
                    .max(1),
            );
            tokio::select! {
                changed = rx.changed(), if subscribed => subscribed = changed.is_ok(),
                _ = tokio::time::sleep(wait) => {}
                _ = self.closed() => {}
            }
            let _ = self.judge_if_stale();
        }
    }

    /// A subscription to what is in service.
    pub(crate) fn subscribe(&self) -> watch::Receiver<InService<S>> {
        self.live.subscribe()
    }

    /// Resolves once the connection is closed by a judgement.
    pub(crate) async fn closed(&self) {
        loop {
            // Register interest before looking, so a close between the look and the wait
            // still wakes us (a `Notified` hears `notify_waiters` from its creation on).
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
    use crate::proxy::judged::Tally;
    use crate::tls::crl::Anchor;
    use crate::tls::verifier::ShieldVerifier;
    use crate::tls::verifier::Trust;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls_pki_types::CertificateDer;

    /// A generation as live trust sees it: an id, a verifier, a tally.
    #[derive(Debug)]
    struct State {
        id: u64,
        verifier: Arc<ShieldVerifier>,
        tally: Tally,
    }

    impl TrustState for State {
        fn id(&self) -> u64 {
            self.id
        }
        fn verifier(&self) -> &Arc<ShieldVerifier> {
            &self.verifier
        }
        fn tally(&self) -> &Tally {
            &self.tally
        }
    }

    fn state(verifier: Arc<ShieldVerifier>, id: u64) -> Arc<State> {
        Arc::new(State {
            id,
            verifier,
            tally: Tally::default(),
        })
    }

    fn live(verifier: Arc<ShieldVerifier>, id: u64) -> Arc<LiveTrust<State>> {
        Arc::new(LiveTrust::new(
            state(verifier, id),
            Arc::new(Metrics::new()),
        ))
    }

    /// What a connection's watchdog does: judge the connection at each new generation.
    fn watched(conn: &Registered<State>) {
        let trust = conn.trust().clone();
        let rx = trust.subscribe();
        tokio::spawn(async move { trust.until_refused(rx).await });
    }

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

    #[tokio::test]
    async fn a_new_trust_state_that_refuses_the_chain_closes_the_connection() {
        let (a, b) = (root("A"), root("B"));
        let leaf = client(&a, false);
        let trusting_a = verifier(&a.0);
        let accepted = trusting_a.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = live(trusting_a, 1);
        let conn = live.register(peer(), accepted, 1);
        watched(&conn);
        assert!(conn.trust().admit_request().is_ok());

        let judged = live.install(state(verifier(&b.0), 2)).await;
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

    #[tokio::test]
    async fn a_new_trust_state_that_still_accepts_the_chain_keeps_the_connection() {
        let a = root("A");
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = live(v, 1);
        let conn = live.register(peer(), accepted, 1);
        watched(&conn);
        let judged = live.install(state(verifier(&a.0), 2)).await;
        assert_eq!(
            judged,
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
        let live = live(v, 1);
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
        let live = live(verifier(&b.0), 2);
        // Handshake finished on generation 1 while generation 2 was installed.
        let conn = live.register(peer(), accepted, 1);
        assert!(conn.trust().is_closed());
    }

    #[tokio::test]
    async fn an_ended_connection_is_no_longer_judged() {
        let a = root("A");
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = live(v, 1);
        drop(live.register(peer(), accepted, 1));
        let judged = live.install(state(verifier(&a.0), 2)).await;
        assert_eq!(judged, Judged::default());
    }

    #[tokio::test]
    async fn an_install_counts_a_connection_that_ends_before_judging_as_gone() {
        let a = root("A");
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = live(v, 1);
        let judging = live.register(peer(), accepted.clone(), 1);
        watched(&judging);
        // Registered, never judging (no watchdog), and ended while the install waits.
        let idle = live.register(peer(), accepted, 1);
        let next = state(verifier(&a.0), 2);
        let install = tokio::spawn({
            let (live, next) = (live.clone(), next.clone());
            async move { live.install(next).await }
        });
        while next.tally.snapshot().0.judged == 0 {
            tokio::task::yield_now().await;
        }
        drop(idle);
        let judged = tokio::time::timeout(Duration::from_secs(2), install)
            .await
            .expect("the install waited for a connection that had ended")
            .unwrap();
        assert_eq!(
            judged,
            Judged {
                judged: 1,
                closed: 0
            }
        );
    }

    #[tokio::test]
    async fn a_connection_closed_earlier_is_not_counted_again_by_a_later_install() {
        let (a, b) = (root("A"), root("B"));
        let leaf = client(&a, false);
        let v = verifier(&a.0);
        let accepted = v.check(&leaf, &[], UnixTime::now()).unwrap();
        let live = live(v, 1);
        let conn = live.register(peer(), accepted, 1);
        watched(&conn);
        let first = live.install(state(verifier(&b.0), 2)).await;
        assert_eq!(
            first,
            Judged {
                judged: 1,
                closed: 1
            }
        );
        // Still open while its requests drain, but already refused: not judged again.
        let second = live.install(state(verifier(&b.0), 3)).await;
        assert_eq!(second, Judged::default());
    }
}
