//! Certificate revocation lists: each one is parsed once into a compact index of its
//! revoked serials, proven when it is loaded to be signed by the truststore CA it names, and
//! chosen per issuer *and scope*.
//!
//! The verifier consults these CRLs itself (see [`super::revocation`]) rather than handing
//! them to rustls-webpki, for three reasons:
//!
//! - webpki keeps a CRL as a `BTreeMap` of owned entries (about 450 bytes per revoked serial)
//!   and re-verifies its signature at every handshake; a CRL of a million entries then costs
//!   gigabytes after a few reloads and a hash of 27 MB per handshake. Here a CRL is its DER
//!   plus 8 bytes per serial, its signature is checked once, and a reload that reads the same
//!   bytes again shares the parsed CRL instead of building a second one;
//! - webpki consults the *first* configured CRL that covers a certificate; with partitioned
//!   CRLs and a full CRL of one issuer, which one that is depends on the list order;
//! - every CRL that names a trusted CA is checked against that CA's key here, before a state
//!   is built, so a forged CRL is refused with its file named instead of refusing clients.
//!
//! What is settled here, before a state is built:
//!
//! - a CRL whose issuer is a truststore CA must verify with that CA's key (and the CA's
//!   keyUsage, when present, must allow cRLSign), or the whole state is refused with an error
//!   naming the CRL file; a reload then keeps the last good state;
//! - a CRL whose issuer is not in the truststore (an intermediate CA's) cannot be checked
//!   here; its signature is checked against the intermediate a client presents, once per key;
//! - a CRL with an issuingDistributionPoint covers one partition of its issuer (RFC 5280
//!   §5.2.5): of several CRLs with the same issuer *and* the same scope, the newest is used
//!   (highest cRLNumber, then latest thisUpdate) and the others are reported as superseded,
//!   whatever their order; CRLs of different scopes are all in force at once.
//! - an issuingDistributionPoint form that cannot be honoured (indirect CRLs, partitions by
//!   reason, a name relative to the issuer, no distribution point) refuses the CRL with the
//!   reason: it is never silently ignored.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::CertificateDer;
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::x509::{
    crl_header, rfc2253, signed_parts, spki_parts, CertInfo, CrlHeader, CrlInfo, CrlScope,
    CrlSignature,
};

/// A trust anchor as the CRL checks need it.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    /// The certificate as it is in the truststore.
    pub(crate) der: CertificateDer<'static>,
    /// Its facts.
    pub(crate) info: CertInfo,
}

/// Where one revoked serial's bytes are in the CRL's DER: 8 bytes per entry instead of an
/// owned copy of each entry.
#[derive(Debug, Clone, Copy)]
struct SerialAt {
    offset: u32,
    len: u16,
}

/// A CRL parsed once: its DER, its header, and its revoked serials sorted for binary search.
/// Shared (through [`Arc`]) by every generation that loads the same bytes.
#[derive(Debug)]
pub(crate) struct ParsedCrl {
    der: Vec<u8>,
    header: CrlHeader,
    serials: Vec<SerialAt>,
    /// The whole-DER SubjectPublicKeyInfos its signature verified with, so each issuer key
    /// costs one signature check over the whole CRL, not one per handshake.
    verified_with: Mutex<Vec<Vec<u8>>>,
}

/// At most this many distinct keys are remembered per CRL as having verified it; past that a
/// key is checked each time (correct, only slower). Issuers that share a name are rare.
const MAX_VERIFIED_KEYS: usize = 4;

impl ParsedCrl {
    fn parse(der: Vec<u8>) -> Result<ParsedCrl, CrlError> {
        let header = crl_header(&der).map_err(CrlError::Header)?;
        // webpki's own parser validates what it would have refused as a verifier: delta CRLs,
        // unknown critical extensions, entries it cannot read, and every issuingDistributionPoint
        // form it does not honour. Walking its borrowed entries allocates nothing per entry.
        let borrowed = webpki::BorrowedCertRevocationList::from_der(&der).map_err(unusable)?;
        let base = der.as_ptr().addr();
        let mut serials = Vec::new();
        for entry in &borrowed {
            let entry = entry.map_err(unusable)?;
            let offset = entry.serial_number.as_ptr().addr() - base;
            let (Ok(offset), Ok(len)) = (
                u32::try_from(offset),
                u16::try_from(entry.serial_number.len()),
            ) else {
                return Err(CrlError::SerialOutOfRange);
            };
            serials.push(SerialAt { offset, len });
        }
        serials.shrink_to_fit();
        let mut parsed = ParsedCrl {
            der,
            header,
            serials,
            verified_with: Mutex::new(Vec::new()),
        };
        let ParsedCrl { der, serials, .. } = &mut parsed;
        serials.sort_unstable_by(|a, b| serial_bytes(der, *a).cmp(serial_bytes(der, *b)));
        Ok(parsed)
    }

    /// Whether `serial` (the raw INTEGER contents, as certificates carry it) is listed.
    pub(crate) fn lists(&self, serial: &[u8]) -> bool {
        self.serials
            .binary_search_by(|at| serial_bytes(&self.der, *at).cmp(serial))
            .is_ok()
    }

    /// The header: issuer, numbers, dates, scope.
    pub(crate) fn header(&self) -> &CrlHeader {
        &self.header
    }

    /// Whether the signature verifies with `spki_der` (a whole SubjectPublicKeyInfo); a key
    /// that verified it once is remembered.
    pub(crate) fn signed_by(&self, spki_der: &[u8], algs: &WebPkiSupportedAlgorithms) -> bool {
        if let Ok(keys) = self.verified_with.lock() {
            if keys.iter().any(|k| k.as_slice() == spki_der) {
                return true;
            }
        }
        let Some(signed) = signed_parts(&self.der) else {
            return false;
        };
        let ok = verify_signed(algs, spki_der, &signed);
        if ok {
            if let Ok(mut keys) = self.verified_with.lock() {
                if keys.len() < MAX_VERIFIED_KEYS {
                    keys.push(spki_der.to_vec());
                }
            }
        }
        ok
    }
}

fn serial_bytes(der: &[u8], at: SerialAt) -> &[u8] {
    let start = at.offset as usize;
    // In bounds: offset and len were taken from a slice of this very DER.
    der.get(start..start + usize::from(at.len)).unwrap_or(&[])
}

/// Why a CRL is refused: at load (it cannot be read, or its signature is not its CA's) or
/// when a fetched one is checked against the CA that named it. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CrlError {
    /// Its header cannot be read.
    #[error("{0}")]
    Header(String),
    /// webpki refuses it (what it would refuse as a verifier), in the operator's words.
    #[error("rustls-webpki cannot use this CRL: {0}; CRLs without nextUpdate and unknown critical extensions are not supported either")]
    Unusable(String),
    /// A revoked entry lies beyond what the serial index can address.
    #[error("a revoked entry's serial number is out of range")]
    SerialOutOfRange,
    /// The signature part cannot be read.
    #[error("cannot read the CRL's signature")]
    SignatureUnreadable,
    /// Signed by a truststore CA that may not sign CRLs.
    #[error("it is signed by truststore CA {ca}, whose keyUsage does not allow cRLSign; webpki would refuse every client of that CA (revocation_unknown). Use a CRL signed by a key that may sign CRLs")]
    CaMayNotSignCrls {
        /// The CA's subject.
        ca: String,
    },
    /// Names a truststore CA as issuer but another key signed it.
    #[error("its signature does not verify with the key of truststore CA {ca} that it names as issuer: it was signed by another key (a forged CRL, or one from a re-keyed CA); use the CRL this CA published")]
    NotSignedByNamedCa {
        /// The CA's subject.
        ca: String,
    },
    /// The intermediate that named the CRL cannot be parsed.
    #[error("the issuing CA certificate cannot be parsed: {0}")]
    IssuerUnparsable(String),
    /// Issued by another CA than the intermediate whose distribution point named it.
    #[error("it is issued by {crl_issuer}, not by the CA whose certificate named it ({named_by})")]
    OtherIssuer {
        /// The CRL's issuer.
        crl_issuer: String,
        /// The subject of the CA certificate that named the CRL.
        named_by: String,
    },
    /// The intermediate's key does not verify it.
    #[error("its signature does not verify with the key of {issuer}")]
    BadSignature {
        /// The CRL's issuer.
        issuer: String,
    },
    /// The intermediate may not sign CRLs.
    #[error("{issuer}'s keyUsage does not allow cRLSign")]
    IssuerMayNotSignCrls {
        /// The CRL's issuer.
        issuer: String,
    },
}

/// webpki's reasons for refusing a CRL, in the operator's words.
fn unusable(e: webpki::Error) -> CrlError {
    use webpki::Error as W;
    let why = match e {
        W::UnsupportedIndirectCrl => "it is an indirect CRL (issuingDistributionPoint indirectCRL, or a certificateIssuer entry); only CRLs issued by the CA that issued the certificates are supported".to_owned(),
        W::UnsupportedRevocationReasonsPartitioning => "it is partitioned by revocation reason (issuingDistributionPoint onlySomeReasons), which is not supported; publish CRLs that cover every reason".to_owned(),
        W::UnsupportedCrlIssuingDistributionPoint => "its issuingDistributionPoint has no fullName distribution point (none, or a name relative to the issuer), so which certificates it covers cannot be told".to_owned(),
        W::UnsupportedDeltaCrl => "it is a delta CRL, which is not supported; configure the base CRL".to_owned(),
        W::MalformedExtensions => "its extensions are malformed (an issuingDistributionPoint for attribute certificates is one)".to_owned(),
        other => format!("{other:?}"),
    };
    CrlError::Unusable(why)
}

/// Parsed CRLs by the SHA-256 of their DER, held weakly: a reload that reads the same bytes
/// shares the index the running generation already built, and a CRL no generation uses any
/// more is freed with the last of them.
static PARSED: LazyLock<Mutex<HashMap<[u8; 32], Weak<ParsedCrl>>>> = LazyLock::new(Mutex::default);

fn parse_shared(der: Vec<u8>) -> Result<Arc<ParsedCrl>, CrlError> {
    let key = crate::x509::sha256(&der);
    if let Some(hit) = PARSED
        .lock()
        .ok()
        .and_then(|m| m.get(&key).and_then(Weak::upgrade))
    {
        return Ok(hit);
    }
    let parsed = Arc::new(ParsedCrl::parse(der)?);
    if let Ok(mut m) = PARSED.lock() {
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(key, Arc::downgrade(&parsed));
    }
    Ok(parsed)
}

/// One loaded CRL: the shared parse, with the facts of where it came from and how its
/// signature was checked.
#[derive(Debug, Clone)]
pub(crate) struct Crl {
    /// Its facts, including how its signature was checked and whether it is in use.
    pub(crate) info: CrlInfo,
    parsed: Arc<ParsedCrl>,
}

impl Crl {
    /// Parses one CRL. `source` names it in the facts (a file, or a URL).
    pub(crate) fn parse(source: &Path, der: Vec<u8>) -> Result<Crl, CrlError> {
        let parsed = parse_shared(der)?;
        let h = parsed.header();
        let info = CrlInfo {
            path: source.to_owned(),
            issuer: h.issuer.clone(),
            number: h.number.as_ref().map(|n| n.to_string()),
            this_update: h.this_update,
            next_update: h.next_update,
            revoked: parsed.serials.len(),
            signature: CrlSignature::IssuerNotInTruststore,
            scope: h.scope.clone(),
            in_use: true,
        };
        Ok(Crl { info, parsed })
    }

    /// The shared parse, for the verifier.
    pub(crate) fn parsed(&self) -> &Arc<ParsedCrl> {
        &self.parsed
    }

    /// The DER.
    pub(crate) fn der(&self) -> &[u8] {
        &self.parsed.der
    }

    /// Whether `other` is the very same CRL (the same bytes).
    pub(crate) fn same_bytes(&self, other: &Crl) -> bool {
        Arc::ptr_eq(&self.parsed, &other.parsed) || self.der() == other.der()
    }

    /// Checks the signature against the truststore CA the CRL names, if it is one.
    ///
    /// Security: a CRL that names a trusted CA is only as good as that CA's signature on it.
    /// One signed by any other key is refused outright (`Err`), not skipped, because the
    /// operator configured it to revoke something: silently ignoring it would keep revoked
    /// clients in, and using it unverified would let whoever wrote the file decide who is
    /// revoked.
    pub(crate) fn verify_signature(
        &mut self,
        anchors: &[Anchor],
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<(), CrlError> {
        if signed_parts(&self.parsed.der).is_none() {
            return Err(CrlError::SignatureUnreadable);
        }
        let mut named = Vec::new();
        for a in anchors {
            let Ok((_, cert)) = X509Certificate::from_der(a.der.as_ref()) else {
                continue;
            };
            if cert.subject().as_raw() != self.issuer_der() {
                continue;
            }
            named.push(&a.info);
            if self.parsed.signed_by(cert.public_key().raw, algs) {
                if a.info.crl_sign_forbidden {
                    return Err(CrlError::CaMayNotSignCrls {
                        ca: a.info.subject.clone(),
                    });
                }
                self.info.signature = CrlSignature::Verified;
                return Ok(());
            }
        }
        match named.first() {
            None => {
                self.info.signature = CrlSignature::IssuerNotInTruststore;
                Ok(())
            }
            Some(ca) => Err(CrlError::NotSignedByNamedCa {
                ca: ca.subject.clone(),
            }),
        }
    }

    /// Whether `self` replaces `other` of the same issuer and scope: higher cRLNumber, then
    /// later thisUpdate (a CRL without a number counts as older than any with one).
    fn newer_than(&self, other: &Crl) -> bool {
        (self.number(), self.info.this_update) > (other.number(), other.info.this_update)
    }

    /// The cRLNumber, when present.
    pub(crate) fn number(&self) -> Option<&BigUint> {
        self.parsed.header.number.as_ref()
    }

    /// The scope, when the CRL covers one partition of its issuer.
    pub(crate) fn scope(&self) -> Option<&CrlScope> {
        self.parsed.header.scope.as_ref()
    }

    /// Checks the signature against `issuer`, an intermediate CA certificate from a chain
    /// that verified (the CRL of a distribution point it named).
    pub(crate) fn verify_with_issuer(
        &mut self,
        issuer: &CertificateDer<'_>,
    ) -> Result<(), CrlError> {
        let (_, cert) = X509Certificate::from_der(issuer.as_ref())
            .map_err(|e| CrlError::IssuerUnparsable(e.to_string()))?;
        if cert.subject().as_raw() != self.issuer_der() {
            return Err(CrlError::OtherIssuer {
                crl_issuer: self.info.issuer.clone(),
                named_by: rfc2253(cert.subject()),
            });
        }
        let algs = super::provider::provider().signature_verification_algorithms;
        if !self.parsed.signed_by(cert.public_key().raw, &algs) {
            return Err(CrlError::BadSignature {
                issuer: self.info.issuer.clone(),
            });
        }
        if !crate::x509::KeyUsageBits::of(&cert).allows_crl_sign() {
            return Err(CrlError::IssuerMayNotSignCrls {
                issuer: self.info.issuer.clone(),
            });
        }
        self.info.signature = CrlSignature::VerifiedWithIntermediate;
        Ok(())
    }

    /// The issuer Name, DER.
    pub(crate) fn issuer_der(&self) -> &[u8] {
        &self.parsed.header.issuer_der
    }

    /// Whether `other` has the same issuer Name and covers the same partition of it: only
    /// then does the newer of the two replace the older (RFC 5280 §5.2.5, §6.3.3).
    pub(crate) fn same_issuer_and_scope(&self, other: &Crl) -> bool {
        self.issuer_der() == other.issuer_der() && self.scope() == other.scope()
    }
}

/// A CRL distribution point found in a chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DistributionPoint {
    /// The `http://` or `https://` URL of the CRL.
    pub(crate) url: String,
    /// The certificate of the CA that signs that CRL when it is an intermediate of the chain;
    /// `None` when it is a truststore CA.
    pub(crate) issuer: Option<CertificateDer<'static>>,
}

/// The most distinct distribution points reported over the life of the process: a client
/// can present many certificates, each naming URLs, and the fetcher must stay bounded.
pub(crate) const MAX_DISTRIBUTION_POINTS: usize = 32;

/// Where a verifier reports the distribution points of chains it accepted: a bounded
/// channel to the fetcher, fed without ever blocking (or touching the network on) the
/// handshake.
#[derive(Debug, Clone)]
pub(crate) struct DistributionPoints {
    tx: tokio::sync::mpsc::Sender<DistributionPoint>,
    /// URLs already reported, shared by every generation's verifier.
    seen: Arc<Mutex<HashSet<String>>>,
}

impl DistributionPoints {
    /// A sink feeding `tx`.
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<DistributionPoint>) -> Self {
        Self {
            tx,
            seen: Arc::default(),
        }
    }

    /// Reports `dp` unless its URL was reported before or the bound is reached.
    pub(crate) fn report(&self, dp: DistributionPoint) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if seen.len() >= MAX_DISTRIBUTION_POINTS || !seen.insert(dp.url.clone()) {
            return;
        }
        if self.tx.try_send(dp.clone()).is_err() {
            // The fetcher is busy or gone: forget the URL, so a later handshake reports it.
            seen.remove(&dp.url);
        }
    }
}

/// Verifies a signed structure with a SubjectPublicKeyInfo (whole DER), using the same
/// algorithm matching as rustls-webpki: the signature algorithm and the key's algorithm
/// must both match one of the provider's algorithms.
pub(crate) fn verify_signed(
    algs: &WebPkiSupportedAlgorithms,
    spki_der: &[u8],
    signed: &crate::x509::SignedParts<'_>,
) -> bool {
    let Some(spki) = spki_parts(spki_der) else {
        return false;
    };
    algs.all.iter().any(|alg| {
        alg.signature_alg_id().as_ref() == signed.algorithm
            && alg.public_key_alg_id().as_ref() == spki.algorithm
            && alg
                .verify_signature(spki.key, signed.tbs, signed.signature)
                .is_ok()
    })
}

/// Marks, for each issuer and scope, every CRL but the newest as not in use. The order of
/// `crls` does not matter. Partitions of one issuer (different scopes) are all kept: each is
/// authoritative for its own certificates only, so dropping one would let its revoked clients in.
pub(crate) fn choose(mut crls: Vec<Crl>) -> Vec<Crl> {
    for i in 0..crls.len() {
        let superseded = crls.iter().enumerate().any(|(j, other)| {
            j != i && other.same_issuer_and_scope(&crls[i]) && beats(other, j, &crls[i], i)
        });
        crls[i].info.in_use = !superseded;
    }
    crls
}

/// Total order among CRLs of one issuer and scope: newer wins; between two equally new ones, the one
/// listed first (so exactly one stays in use).
fn beats(a: &Crl, a_index: usize, b: &Crl, b_index: usize) -> bool {
    a.newer_than(b) || (!b.newer_than(a) && a_index < b_index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa,
        KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use std::path::PathBuf;

    struct TestCa {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(cn: &str, usages: Vec<KeyUsagePurpose>) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = usages;
        TestCa {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn anchor(ca: &TestCa) -> Anchor {
        let der = ca.cert.der().clone();
        Anchor {
            info: crate::x509::cert_info(&der).unwrap(),
            der,
        }
    }

    fn crl(issuer: &TestCa, number: u64, this_update_days_ago: i64) -> Crl {
        let now = time::OffsetDateTime::now_utc();
        let p = CertificateRevocationListParams {
            this_update: now - time::Duration::days(this_update_days_ago),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let der = p
            .signed_by(&issuer.cert, &issuer.key)
            .unwrap()
            .der()
            .to_vec();
        Crl::parse(&PathBuf::from(format!("crl-{number}.pem")), der).unwrap()
    }

    fn algs() -> WebPkiSupportedAlgorithms {
        super::super::provider::provider().signature_verification_algorithms
    }

    const CA_USAGES: [KeyUsagePurpose; 2] =
        [KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];

    #[test]
    fn a_crl_signed_by_its_issuer_is_verified() {
        let root = ca("Root", CA_USAGES.to_vec());
        let mut c = crl(&root, 1, 1);
        c.verify_signature(&[anchor(&root)], &algs()).unwrap();
        assert_eq!(c.info.signature, CrlSignature::Verified);
    }

    #[test]
    fn a_crl_naming_a_trusted_ca_but_signed_by_another_key_is_refused() {
        let root = ca("Root", CA_USAGES.to_vec());
        // Same name, another key: what a forger (or a re-keyed CA) produces.
        let impostor = ca("Root", CA_USAGES.to_vec());
        let mut c = crl(&impostor, 9, 1);
        let e = c
            .verify_signature(&[anchor(&root)], &algs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("signed by another key"), "{e}");
    }

    #[test]
    fn a_crl_of_an_issuer_outside_the_truststore_is_left_to_the_handshake() {
        let root = ca("Root", CA_USAGES.to_vec());
        let other = ca("Intermediate", CA_USAGES.to_vec());
        let mut c = crl(&other, 1, 1);
        c.verify_signature(&[anchor(&root)], &algs()).unwrap();
        assert_eq!(c.info.signature, CrlSignature::IssuerNotInTruststore);
    }

    #[test]
    fn a_ca_whose_key_usage_forbids_crl_signing_cannot_vouch_for_a_crl() {
        let signer = ca("Root", CA_USAGES.to_vec());
        // The certificate in the truststore: same name and key, keyUsage without cRLSign.
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "Root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let in_truststore = TestCa {
            cert: p.self_signed(&signer.key).unwrap(),
            key: KeyPair::generate().unwrap(),
        };
        let mut c = crl(&signer, 1, 1);
        let e = c
            .verify_signature(&[anchor(&in_truststore)], &algs())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cRLSign"), "{e}");
    }

    #[test]
    fn the_newest_crl_of_an_issuer_is_used_whatever_the_order() {
        let root = ca("Root", CA_USAGES.to_vec());
        let other = ca("Other", CA_USAGES.to_vec());
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let pool = [crl(&root, 3, 2), crl(&root, 5, 3), crl(&other, 1, 1)];
            let chosen = choose(order.iter().map(|&i| pool[i].clone()).collect());
            let in_use: Vec<_> = chosen
                .iter()
                .filter(|c| c.info.in_use)
                .map(|c| c.info.number.clone().unwrap())
                .collect();
            assert_eq!(in_use.len(), 2, "{order:?}");
            assert!(in_use.contains(&"5".to_owned()), "{order:?}: {in_use:?}");
            assert!(in_use.contains(&"1".to_owned()), "{order:?}: {in_use:?}");
        }
    }

    #[test]
    fn with_equal_numbers_the_later_this_update_wins() {
        let root = ca("Root", CA_USAGES.to_vec());
        let chosen = choose(vec![crl(&root, 4, 5), crl(&root, 4, 1)]);
        assert!(!chosen[0].info.in_use && chosen[1].info.in_use);
    }
}
