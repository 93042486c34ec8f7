//! A per-trust-state memo of client chains the verifier has already accepted, so a client that
//! presents the same certificate on every connection (CloudFront, an ALB, a mesh sidecar)
//! does not pay for re-verifying the same signatures on every full handshake.
//!
//! # Why a hit decides exactly what a full verification would
//!
//! The chain verification (WebPKI path building, signatures, EKU, name constraints, CRL
//! lookup) and the allow-list are pure functions of four inputs:
//!
//! 1. the presented certificates: the key is SHA-256 over every presented certificate, in
//!    order and length-prefixed, so any other chain is a different key;
//! 2. the trust anchors, CRLs and allow-list: the cache belongs to one immutable
//!    [`TlsState`](super::TlsState), and every reload builds a new state with an empty cache,
//!    so an entry never outlives the trust it was checked under (a CRL added by a reload
//!    takes effect for the next handshake);
//! 3. the time: the only time-dependent checks are each certificate's validity period and
//!    each consulted CRL's nextUpdate (enforced: a stale CRL fails closed). An entry is used
//!    only inside the window [`Accepted`] records for the path that was verified: after the
//!    latest notBefore on it, before the earliest notAfter on it, and before the nextUpdate
//!    of every CRL consulted for it. Inside that window the same path verifies again, so the
//!    full check would accept again; outside it the full check runs and decides;
//! 4. nothing else: no network, no randomness.
//!
//! The checks the shield adds to WebPKI (CA keyUsage on the path, the leaf's keyUsage and key)
//! and the allow-list run before an acceptance exists, so only chains that passed them all
//! are remembered. Only acceptances are cached; a refusal is recomputed every time, so its reason is always
//! fresh. What a cache hit does **not** replace is the per-handshake proof that the client
//! holds the certificate's private key (the CertificateVerify signature over this
//! handshake's transcript): rustls asks the verifier for that separately, and it is never
//! cached.
//!
//! The cache holds at most `client_auth.verified_chain_cache` entries; when full it is
//! emptied and refilled, which bounds memory without an LRU. Only chains that verified can be
//! inserted, so an attacker cannot fill it without certificates the trusted CAs issued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;

use super::accepted::Accepted;

/// The key: SHA-256 over the presented chain.
pub(crate) type ChainKey = [u8; 32];

/// What the memo stores: an answer that holds for a window of time.
pub(crate) trait Holds {
    /// Whether the answer still holds at `now` (Unix seconds) under the same trust state.
    fn holds_at(&self, now: i64) -> bool;
}

impl Holds for Accepted {
    fn holds_at(&self, now: i64) -> bool {
        Accepted::holds_at(self, now)
    }
}

/// Accepted chains of one trust state (by default the verifier's acceptances; `[viewer]`
/// keeps its verified viewers in one too).
#[derive(Debug)]
pub(crate) struct VerifiedChains<T = Accepted> {
    capacity: usize,
    entries: Mutex<HashMap<ChainKey, Arc<T>>>,
}

impl<T: Holds> VerifiedChains<T> {
    /// A memo of up to `capacity` chains; 0 turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a presented chain, or `None` when caching is off.
    pub(crate) fn key(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<ChainKey> {
        if self.capacity == 0 {
            return None;
        }
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        // Length prefixes make the concatenation unambiguous: no two different chains hash
        // the same bytes.
        for cert in std::iter::once(end_entity).chain(intermediates) {
            h.update(&(cert.len() as u64).to_be_bytes());
            h.update(cert.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(h.finish().as_ref());
        Some(key)
    }

    /// The acceptance recorded earlier for this chain, if it still holds at `now` (Unix
    /// seconds).
    pub(crate) fn get(&self, key: &ChainKey, now: i64) -> Option<Arc<T>> {
        // A poisoned lock (a panic while holding it) only means a miss: the full check runs.
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        e.holds_at(now).then(|| e.clone())
    }

    /// Remembers a chain that the full check has just accepted.
    pub(crate) fn insert(&self, key: ChainKey, accepted: &Arc<T>) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, accepted.clone());
    }

    /// Entries held now (for tests and diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    //! The memo is exercised through the real verifier, with `now` chosen by the test, so each
    //! test shows that a hit never accepts what the full check would refuse at that moment.
    use super::*;
    use crate::config::AllowConfig;
    use crate::policy::AllowList;
    use crate::tls::crl::{Anchor, Crl};
    use crate::tls::verifier::{ShieldVerifier, Trust};
    use crate::tls::Reason;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, SerialNumber,
    };
    use rustls_pki_types::UnixTime;
    use time::OffsetDateTime;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600;
    const DAY: i64 = 86_400;

    fn at(secs: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs as u64))
    }

    fn ts(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(cn: &str, from: i64, until: i64, issuer: Option<&Ca>) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = ts(from);
        p.not_after = ts(until);
        let cert = match issuer {
            Some(i) => p.signed_by(&key, &i.cert, &i.key).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        Ca { cert, key }
    }

    fn leaf(cn: &str, from: i64, until: i64, issuer: &Ca) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = ts(from);
        p.not_after = ts(until);
        p.signed_by(&key, &issuer.cert, &issuer.key)
            .unwrap()
            .der()
            .clone()
    }

    /// A verifier as `TlsState::build` makes it, trusting `root`, with a CRL whose nextUpdate
    /// is `crl_next_update` when given, a memo of `capacity`, and an allow-list of CNs.
    fn verifier(
        root: &Ca,
        crl_next_update: Option<i64>,
        capacity: usize,
        allowed_cns: &[&str],
    ) -> ShieldVerifier {
        let algs = crate::tls::provider().signature_verification_algorithms;
        let der = root.cert.der().clone();
        let anchors = vec![Anchor {
            info: crate::x509::cert_info(&der).unwrap(),
            der,
        }];
        let crls: Vec<Crl> = crl_next_update
            .map(|next| {
                let p = CertificateRevocationListParams {
                    this_update: ts(T0 - DAY),
                    next_update: ts(next),
                    crl_number: SerialNumber::from(1u64),
                    issuing_distribution_point: None,
                    revoked_certs: vec![],
                    key_identifier_method: KeyIdMethod::Sha256,
                };
                let der = p.signed_by(&root.cert, &root.key).unwrap().der().to_vec();
                let mut c = Crl::parse(std::path::Path::new("crl.pem"), der).unwrap();
                c.verify_signature(&anchors, &algs).unwrap();
                c
            })
            .into_iter()
            .collect();
        let allow = AllowList::compile(&AllowConfig {
            common_names: allowed_cns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap();
        let trust = Trust {
            anchors,
            crls: crate::tls::crl::choose(crls),
            require_crl: false,
            algs,
            distribution_points: None,
            advertise_ca_names: true,
            ocsp: None,
        };
        ShieldVerifier::new(trust, allow, capacity).unwrap()
    }

    fn reason(r: Result<Arc<Accepted>, crate::tls::verifier::Rejection>) -> Reason {
        r.expect_err("should be refused").reason
    }

    #[test]
    fn a_second_check_of_the_same_chain_is_answered_from_the_memo() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let client = leaf("c", T0 - DAY, T0 + 365 * DAY, &root);
        let v = verifier(&root, None, 16, &[]);
        let first = v.check(&client, &[], at(T0)).unwrap();
        assert_eq!(v.cached_chains(), 1);
        let second = v.check(&client, &[], at(T0 + 60)).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "second check was not a memo hit"
        );
    }

    #[test]
    fn a_memoised_chain_is_refused_once_the_leaf_has_expired() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let not_after = T0 + 10 * DAY;
        let client = leaf("c", T0 - DAY, not_after, &root);
        let v = verifier(&root, None, 16, &[]);
        v.check(&client, &[], at(T0)).unwrap();
        // The last second of validity is still valid (WebPKI's bound is inclusive)...
        v.check(&client, &[], at(not_after)).unwrap();
        // ...and the next one is the full check's answer: expired.
        assert_eq!(
            reason(v.check(&client, &[], at(not_after + 1))),
            Reason::Expired
        );
    }

    #[test]
    fn a_memoised_chain_is_refused_when_the_clock_goes_back_before_not_before() {
        let root = ca("Root", T0 - 10 * DAY, T0 + 3650 * DAY, None);
        let client = leaf("c", T0, T0 + 365 * DAY, &root);
        let v = verifier(&root, None, 16, &[]);
        v.check(&client, &[], at(T0 + DAY)).unwrap();
        assert_eq!(
            reason(v.check(&client, &[], at(T0 - 1))),
            Reason::NotYetValid
        );
    }

    #[test]
    fn a_memoised_chain_is_rechecked_once_a_crl_is_past_its_next_update() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let client = leaf("c", T0 - DAY, T0 + 365 * DAY, &root);
        let next_update = T0 + 7 * DAY;
        let v = verifier(&root, Some(next_update), 16, &[]);
        v.check(&client, &[], at(T0)).unwrap();
        v.check(&client, &[], at(next_update - 1)).unwrap();
        // A stale CRL fails closed, memo or not.
        assert_eq!(
            reason(v.check(&client, &[], at(next_update))),
            Reason::RevocationUnknown
        );
    }

    #[test]
    fn an_intermediate_that_expires_first_bounds_the_memo() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let int_not_after = T0 + 30 * DAY;
        let int = ca("Issuing", T0 - DAY, int_not_after, Some(&root));
        let client = leaf("c", T0 - DAY, T0 + 365 * DAY, &int);
        let chain = [int.cert.der().clone()];
        let v = verifier(&root, None, 16, &[]);
        v.check(&client, &chain, at(T0)).unwrap();
        assert_eq!(
            reason(v.check(&client, &chain, at(int_not_after + 1))),
            Reason::Expired
        );
    }

    #[test]
    fn refusals_are_never_memoised() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let stranger_root = ca("Stranger", T0 - DAY, T0 + 3650 * DAY, None);
        let stranger = leaf("s", T0 - DAY, T0 + 365 * DAY, &stranger_root);
        let not_listed = leaf("not-listed", T0 - DAY, T0 + 365 * DAY, &root);
        let v = verifier(&root, None, 16, &["listed"]);
        assert_eq!(reason(v.check(&stranger, &[], at(T0))), Reason::UnknownCa);
        assert_eq!(
            reason(v.check(&not_listed, &[], at(T0))),
            Reason::NotAllowed
        );
        assert!(v.accepted_is_empty());
    }

    #[test]
    fn the_same_leaf_with_other_intermediates_is_another_entry() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let client = leaf("c", T0 - DAY, T0 + 365 * DAY, &root);
        let memo: VerifiedChains = VerifiedChains::new(16);
        let alone = memo.key(&client, &[]).unwrap();
        let with_root = memo.key(&client, &[root.cert.der().clone()]).unwrap();
        assert_ne!(alone, with_root);
    }

    #[test]
    fn zero_capacity_turns_the_memo_off() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let client = leaf("c", T0 - DAY, T0 + 365 * DAY, &root);
        let v = verifier(&root, None, 0, &[]);
        let first = v.check(&client, &[], at(T0)).unwrap();
        let second = v.check(&client, &[], at(T0)).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(v.accepted_is_empty());
    }

    #[test]
    fn a_full_memo_is_emptied_rather_than_grown() {
        let root = ca("Root", T0 - DAY, T0 + 3650 * DAY, None);
        let v = verifier(&root, None, 2, &[]);
        for cn in ["a", "b", "c", "d", "e"] {
            let client = leaf(cn, T0 - DAY, T0 + 365 * DAY, &root);
            v.check(&client, &[], at(T0)).unwrap();
            assert!(v.cached_chains() <= 2);
        }
    }
}
