//! What the shield has seen, for the trust page and `/trust` (a fact store over `identity`,
//! below everything that judges: the handshake path and the viewer path both enter into it): one entry per distinct client
//! certificate it judged (accepted or refused), bounded, oldest out first; the last refusals;
//! and the reloads. It outlives generations: the server holds the one ledger.
//!
//! Cost on the data path: an accepted handshake takes the inventory's lock once (a hash
//! lookup by fingerprint); each request increments one atomic counter of its connection's
//! entry, which the connection holds. Refusals and reloads take a lock each; they are rare.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::identity::ClientIdentity;

/// Refusals kept, newest last.
pub(crate) const REFUSALS_KEPT: usize = 100;
/// Reloads kept, newest last.
pub(crate) const RELOADS_KEPT: usize = 20;

/// One distinct client certificate seen.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Its parsed leaf, with the chain as presented (judged again when `/trust` is asked).
    pub(crate) identity: Arc<ClientIdentity>,
    /// `client_auth` (a TLS client) or `viewer` (forwarded by an edge).
    pub(crate) domain: &'static str,
    /// When it was first seen, Unix seconds.
    pub(crate) first_seen: i64,
    /// When it was last seen.
    pub(crate) last_seen: AtomicI64,
    /// Connections it opened (handshakes accepted).
    pub(crate) connections: AtomicU64,
    /// Requests made with it.
    pub(crate) requests: AtomicU64,
    /// The last refusal of it, when there was one.
    pub(crate) last_refusal: Mutex<Option<&'static str>>,
    /// The trust in service's verdict on it, worked out once per generation for `/trust`:
    /// the generation, and until when the acceptance holds (`None`: refused).
    verdict: Mutex<Option<(u64, Option<i64>)>>,
}

impl Seen {
    /// The verdict of generation `id` at `now`, when it was worked out.
    pub(crate) fn verdict_in(&self, id: u64, now: i64) -> Option<bool> {
        let v = (*self.verdict.lock().ok()?)?;
        (v.0 == id).then(|| v.1.is_some_and(|until| now < until))
    }

    /// Keeps generation `id`'s verdict: accepted until `until`, or refused (`None`).
    pub(crate) fn set_verdict(&self, id: u64, until: Option<i64>) {
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some((id, until));
        }
    }

    /// Notes one more request with this certificate, at `now` (Unix seconds).
    pub(crate) fn request(&self, now: i64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_seen.store(now, Ordering::Relaxed);
    }
}

/// One refusal, with the fields of its connection-log line.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// When, Unix seconds.
    pub(crate) at: i64,
    /// The peer.
    pub(crate) peer: SocketAddr,
    /// The reason code.
    pub(crate) reason: &'static str,
    /// The certificate, when one was presented and parsed.
    pub(crate) identity: Option<Arc<ClientIdentity>>,
}

/// One reload attempt.
#[derive(Debug, Clone)]
pub(crate) struct Reloaded {
    /// When, Unix seconds.
    pub(crate) at: i64,
    /// What asked for it: `start`, `SIGHUP`, `file change`, `CRL update`, `OCSP answer`.
    pub(crate) cause: String,
    /// The generation it put in service; `None` when it failed.
    pub(crate) generation: Option<u64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// One CRL URL's fetching, as the fetcher last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UrlStatus {
    /// The URL.
    pub(crate) url: String,
    /// The last attempt, Unix seconds.
    pub(crate) last_attempt: Option<i64>,
    /// The last attempt that gave a usable CRL (or a 304).
    pub(crate) last_success: Option<i64>,
    /// What the last attempt gave: `updated`, `not_modified`, `unchanged`, or `failure: …`.
    pub(crate) result: Option<String>,
    /// When the next attempt is due.
    pub(crate) next_fetch: Option<i64>,
}

/// What the running program knows besides the generation and the ledger: the CRL URLs'
/// fetching and the OCSP answers, given by the app (which owns the fetcher and the cache).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetching {
    /// Each CRL URL.
    pub(crate) crl_urls: Vec<UrlStatus>,
    /// OCSP answers in the cache.
    pub(crate) ocsp_entries: usize,
    /// Age of the oldest answer, seconds (0 when none).
    pub(crate) ocsp_oldest_age: i64,
}

/// The ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
    capacity: usize,
    /// Accepted handshakes by (version, suite, group): the TLS posture's shares.
    postures: Mutex<HashMap<(&'static str, &'static str, &'static str), u64>>,
    clients: Mutex<Clients>,
    refusals: Mutex<VecDeque<Refused>>,
    reloads: Mutex<VecDeque<Reloaded>>,
}

#[derive(Debug, Default)]
struct Clients {
    by_key: HashMap<([u8; 32], &'static str), Arc<Seen>>,
    /// Keys in the order they were first seen: the oldest goes first when full.
    order: VecDeque<([u8; 32], &'static str)>,
}

impl Ledger {
    /// A ledger that keeps at most `capacity` client certificates (`admin.inventory_max`).
    pub(crate) fn new(capacity: usize) -> Self {
        Ledger {
            capacity,
            postures: Mutex::default(),
            clients: Mutex::default(),
            refusals: Mutex::default(),
            reloads: Mutex::default(),
        }
    }

    /// The entry of `identity` in `domain`, made when new; `last_seen` set to `now`.
    pub(crate) fn seen(
        &self,
        identity: &Arc<ClientIdentity>,
        domain: &'static str,
        now: i64,
    ) -> Option<Arc<Seen>> {
        if self.capacity == 0 {
            return None;
        }
        // A poisoned lock only means the inventory stops growing: never a panic on the data
        // path.
        let mut clients = self.clients.lock().ok()?;
        let key = (identity.fingerprint, domain);
        if let Some(seen) = clients.by_key.get(&key) {
            seen.last_seen.store(now, Ordering::Relaxed);
            return Some(seen.clone());
        }
        while clients.order.len() >= self.capacity {
            if let Some(oldest) = clients.order.pop_front() {
                clients.by_key.remove(&oldest);
            }
        }
        let seen = Arc::new(Seen {
            identity: identity.clone(),
            domain,
            first_seen: now,
            last_seen: AtomicI64::new(now),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            last_refusal: Mutex::new(None),
            verdict: Mutex::new(None),
        });
        clients.order.push_back(key);
        clients.by_key.insert(key, seen.clone());
        Some(seen)
    }

    /// A refusal: kept among the last ones, and noted on its certificate's entry.
    pub(crate) fn refused(&self, refused: Refused, domain: &'static str) {
        if let Some(identity) = &refused.identity {
            if let Some(seen) = self.seen(identity, domain, refused.at) {
                if let Ok(mut last) = seen.last_refusal.lock() {
                    *last = Some(refused.reason);
                }
            }
        }
        if let Ok(mut r) = self.refusals.lock() {
            if r.len() >= REFUSALS_KEPT {
                r.pop_front();
            }
            r.push_back(refused);
        }
    }

    /// An accepted handshake that negotiated `version`, `suite` and `group`.
    pub(crate) fn handshake(
        &self,
        version: &'static str,
        suite: &'static str,
        group: &'static str,
    ) {
        if let Ok(mut p) = self.postures.lock() {
            *p.entry((version, suite, group)).or_insert(0) += 1;
        }
    }

    /// Accepted handshakes by what they negotiated, most first.
    pub(crate) fn postures(&self) -> Vec<((&'static str, &'static str, &'static str), u64)> {
        let mut out: Vec<_> = self
            .postures
            .lock()
            .map(|p| p.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// A reload attempt.
    pub(crate) fn reloaded(&self, reloaded: Reloaded) {
        if let Ok(mut r) = self.reloads.lock() {
            if r.len() >= RELOADS_KEPT {
                r.pop_front();
            }
            r.push_back(reloaded);
        }
    }

    /// Every client certificate seen, oldest first.
    pub(crate) fn clients(&self) -> Vec<Arc<Seen>> {
        self.clients
            .lock()
            .map(|c| {
                c.order
                    .iter()
                    .filter_map(|k| c.by_key.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last refusals, oldest first.
    pub(crate) fn refusals(&self) -> Vec<Refused> {
        self.refusals
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last reloads, oldest first.
    pub(crate) fn reloads(&self) -> Vec<Reloaded> {
        self.reloads
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}
