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
//! 3. the time: the only time-dependent checks are each certificate's validity period and,
//!    with `enforce_revocation_expiration`, each CRL's nextUpdate. An entry is used only
//!    while `now` lies inside every presented certificate's validity period and before the
//!    earliest nextUpdate of any CRL of this state. That window is never wider than the
//!    verified path's (the path uses a subset of the presented certificates), so inside it
//!    the full check would succeed again; outside it the full check runs and decides;
//! 4. nothing else: no network, no randomness.
//!
//! Only acceptances are cached; a refusal is recomputed every time, so its reason is always
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

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::ClientIdentity;

/// The key: SHA-256 over the presented chain.
type ChainKey = [u8; 32];

#[derive(Debug)]
struct Entry {
    identity: Arc<ClientIdentity>,
    /// Latest notBefore of the presented certificates, Unix seconds.
    valid_from: i64,
    /// First second at which the entry is no longer used: the earliest notAfter of the
    /// presented certificates plus one (validity is inclusive), or the earliest CRL
    /// nextUpdate, whichever comes first.
    valid_until: i64,
}

/// Accepted chains of one trust state.
#[derive(Debug)]
pub struct VerifiedChains {
    capacity: usize,
    /// The earliest nextUpdate among this state's CRLs, if any.
    crl_deadline: Option<i64>,
    entries: Mutex<HashMap<ChainKey, Entry>>,
}

impl VerifiedChains {
    /// A cache of up to `capacity` chains (0 turns it off) for a trust state whose earliest CRL
    /// nextUpdate is `crl_deadline`.
    pub fn new(capacity: usize, crl_deadline: Option<i64>) -> Self {
        Self {
            capacity,
            crl_deadline,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a presented chain, or `None` when caching is off.
    pub fn key(
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

    /// The identity accepted earlier for this chain, if `now` is inside the entry's window.
    pub fn get(&self, key: &ChainKey, now: UnixTime) -> Option<Arc<ClientIdentity>> {
        let now = i64::try_from(now.as_secs()).ok()?;
        // A poisoned lock (a panic while holding it) only means a miss: the full check runs.
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        (e.valid_from <= now && now < e.valid_until).then(|| e.identity.clone())
    }

    /// Remembers a chain that the full check has just accepted.
    pub fn insert(&self, key: ChainKey, identity: &Arc<ClientIdentity>) {
        let Some((valid_from, valid_until)) = self.window(identity) else {
            return;
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                identity: identity.clone(),
                valid_from,
                valid_until,
            },
        );
    }

    /// The entry's window: inside every presented certificate's validity and before the
    /// earliest CRL nextUpdate. `None` (do not cache) when an intermediate cannot be parsed.
    fn window(&self, identity: &ClientIdentity) -> Option<(i64, i64)> {
        let mut from = identity.not_before;
        let mut until = identity.not_after.saturating_add(1);
        for der in &identity.intermediates {
            let (_, c) = X509Certificate::from_der(der.as_ref()).ok()?;
            from = from.max(c.validity().not_before.timestamp());
            until = until.min(c.validity().not_after.timestamp().saturating_add(1));
        }
        if let Some(deadline) = self.crl_deadline {
            until = until.min(deadline);
        }
        Some((from, until))
    }

    /// Entries held now (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    //! The memo is exercised through the real verifier, with `now` chosen by the test, so each
    //! test shows that a hit never accepts what the full check would refuse at that moment.
    use super::*;
    use crate::config::AllowConfig;
    use crate::tls::allow::AllowList;
    use crate::tls::verifier::ShieldVerifier;
    use crate::tls::Reason;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, SerialNumber,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use rustls_pki_types::CertificateRevocationListDer;
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

    /// A verifier as `TlsState::build` makes it, trusting `root`, with CRLs whose nextUpdate
    /// is `crl_next_update` when given, a memo of `capacity`, and an allow-list of CNs.
    fn verifier(
        root: &Ca,
        crl_next_update: Option<i64>,
        capacity: usize,
        allowed_cns: &[&str],
    ) -> ShieldVerifier {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(root.cert.der().clone()).unwrap();
        let crls: Vec<CertificateRevocationListDer<'static>> = crl_next_update
            .map(|next| {
                let p = CertificateRevocationListParams {
                    this_update: ts(T0 - DAY),
                    next_update: ts(next),
                    crl_number: SerialNumber::from(1u64),
                    issuing_distribution_point: None,
                    revoked_certs: vec![],
                    key_identifier_method: KeyIdMethod::Sha256,
                };
                p.signed_by(&root.cert, &root.key).unwrap().der().clone()
            })
            .into_iter()
            .collect();
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .with_crls(crls)
            .enforce_revocation_expiration()
            .allow_unknown_revocation_status()
            .build()
            .unwrap();
        let allow = AllowList::compile(&AllowConfig {
            common_names: allowed_cns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap();
        ShieldVerifier::new(inner, allow, VerifiedChains::new(capacity, crl_next_update))
    }

    fn reason(r: Result<Arc<ClientIdentity>, crate::tls::verifier::Refusal>) -> Reason {
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
        let memo = VerifiedChains::new(16, None);
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
