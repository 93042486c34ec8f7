//! Certificate revocation lists: each one is proven, when it is loaded, to be signed by the
//! truststore CA it names, and one CRL is chosen per issuer.
//!
//! rustls-webpki checks a CRL's signature only when a client of that issuer connects, and it
//! reads the *first* configured CRL whose issuer name matches the certificate's issuer. Left
//! alone, a CRL that names a trusted CA but was signed by another key would load without a
//! word and then refuse every client of that CA (`revocation_unknown`), and with two CRLs for
//! one issuer the order of `client_auth.crls` would decide which one counts. Both are settled
//! here, before a state is built:
//!
//! - a CRL whose issuer is a truststore CA must verify with that CA's key (and the CA's
//!   keyUsage, when present, must allow cRLSign), or the whole state is refused with an error
//!   naming the CRL file; a reload then keeps the last good state;
//! - a CRL whose issuer is not in the truststore (an intermediate CA's) cannot be checked
//!   here; webpki checks it against the intermediate the client presents, at each handshake;
//! - of several CRLs of one issuer, the newest is used (highest cRLNumber, then latest
//!   thisUpdate) and the others are reported as superseded, whatever their order.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::x509::{rfc2253, signed_parts, spki_parts, CertInfo, CrlInfo, CrlSignature};

/// A trust anchor as the CRL checks need it.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    /// The certificate as it is in the truststore.
    pub(crate) der: CertificateDer<'static>,
    /// Its facts.
    pub(crate) info: CertInfo,
}

/// One loaded CRL, parsed by both x509-parser (facts) and rustls-webpki (what the verifier
/// will use), with the result of its signature check.
#[derive(Debug, Clone)]
pub(crate) struct Crl {
    /// The DER, as given to the verifier.
    pub(crate) der: CertificateRevocationListDer<'static>,
    /// Its facts, including how its signature was checked and whether it is in use.
    pub(crate) info: CrlInfo,
    /// The issuer Name, DER: CRLs of one issuer are compared with each other.
    issuer_der: Vec<u8>,
    number: Option<BigUint>,
    /// The CRL as the verifier reads it.
    parsed: webpki::OwnedCertRevocationList,
}

impl Crl {
    /// Parses one CRL. `source` names it in the facts (a file, or a URL).
    pub(crate) fn parse(
        source: &Path,
        der: CertificateRevocationListDer<'static>,
    ) -> Result<Crl, String> {
        let (info, issuer_der, number) = {
            let crl = super::load::parse_crl(der.as_ref())?;
            (
                CrlInfo {
                    path: source.to_owned(),
                    issuer: rfc2253(crl.issuer()),
                    number: crl.crl_number().map(|n| n.to_string()),
                    this_update: crl.last_update().timestamp(),
                    next_update: crl.next_update().map(|t| t.timestamp()),
                    revoked: crl.iter_revoked_certificates().count(),
                    signature: CrlSignature::IssuerNotInTruststore,
                    in_use: true,
                },
                crl.issuer().as_raw().to_vec(),
                crl.crl_number().cloned(),
            )
        };
        // The verifier parses it again with webpki, which refuses more than x509-parser does
        // (delta CRLs, indirect CRLs, unknown critical extensions). Do it here, so the error
        // names this file rather than surfacing later from the verifier build.
        let parsed = webpki::OwnedCertRevocationList::from_der(der.as_ref()).map_err(|e| {
            format!("rustls-webpki cannot use this CRL ({e:?}); delta CRLs, indirect CRLs, CRLs without nextUpdate and unknown critical extensions are not supported")
        })?;
        Ok(Crl {
            der,
            info,
            issuer_der,
            number,
            parsed,
        })
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
    ) -> Result<(), String> {
        let Some(signed) = signed_parts(self.der.as_ref()) else {
            return Err("cannot read the CRL's signature".to_owned());
        };
        let mut named = Vec::new();
        for a in anchors {
            let Ok((_, cert)) = X509Certificate::from_der(a.der.as_ref()) else {
                continue;
            };
            if cert.subject().as_raw() != self.issuer_der.as_slice() {
                continue;
            }
            named.push(&a.info);
            if verify_signed(algs, cert.public_key().raw, &signed) {
                if a.info.crl_sign_forbidden {
                    return Err(format!(
                        "it is signed by truststore CA {}, whose keyUsage does not allow cRLSign; webpki would refuse every client of that CA (revocation_unknown). Use a CRL signed by a key that may sign CRLs",
                        a.info.subject
                    ));
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
            Some(ca) => Err(format!(
                "its signature does not verify with the key of truststore CA {} that it names as issuer: it was signed by another key (a forged CRL, or one from a re-keyed CA); use the CRL this CA published",
                ca.subject
            )),
        }
    }

    /// Whether `self` replaces `other` of the same issuer: higher cRLNumber, then later
    /// thisUpdate (a CRL without a number counts as older than any with one).
    fn newer_than(&self, other: &Crl) -> bool {
        (self.number.as_ref(), self.info.this_update)
            > (other.number.as_ref(), other.info.this_update)
    }

    /// The cRLNumber, when present.
    pub(crate) fn number(&self) -> Option<&BigUint> {
        self.number.as_ref()
    }

    /// Checks the signature against `issuer`, an intermediate CA certificate from a chain
    /// that verified (the CRL of a distribution point it named).
    pub(crate) fn verify_with_issuer(&mut self, issuer: &CertificateDer<'_>) -> Result<(), String> {
        let (_, cert) = X509Certificate::from_der(issuer.as_ref())
            .map_err(|e| format!("the issuing CA certificate cannot be parsed: {e}"))?;
        if cert.subject().as_raw() != self.issuer_der.as_slice() {
            return Err(format!(
                "it is issued by {}, not by the CA whose certificate named it ({})",
                self.info.issuer,
                rfc2253(cert.subject())
            ));
        }
        let Some(signed) = signed_parts(self.der.as_ref()) else {
            return Err("cannot read the CRL's signature".to_owned());
        };
        let algs = super::provider::provider().signature_verification_algorithms;
        if !verify_signed(&algs, cert.public_key().raw, &signed) {
            return Err(format!(
                "its signature does not verify with the key of {}",
                self.info.issuer
            ));
        }
        if !crate::x509::KeyUsageBits::of(&cert).allows_crl_sign() {
            return Err(format!(
                "{}'s keyUsage does not allow cRLSign",
                self.info.issuer
            ));
        }
        self.info.signature = CrlSignature::VerifiedWithIntermediate;
        Ok(())
    }

    /// The issuer Name, DER.
    pub(crate) fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// Whether `other` has the same issuer Name.
    pub(crate) fn same_issuer(&self, other: &Crl) -> bool {
        self.issuer_der == other.issuer_der
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

/// Marks, for each issuer, every CRL but the newest as not in use. The order of `crls` does
/// not matter.
pub(crate) fn choose(mut crls: Vec<Crl>) -> Vec<Crl> {
    for i in 0..crls.len() {
        let superseded = crls.iter().enumerate().any(|(j, other)| {
            j != i && other.same_issuer(&crls[i]) && beats(other, j, &crls[i], i)
        });
        crls[i].info.in_use = !superseded;
    }
    crls
}

/// Total order among CRLs of one issuer: newer wins; between two equally new ones, the one
/// listed first (so exactly one stays in use).
fn beats(a: &Crl, a_index: usize, b: &Crl, b_index: usize) -> bool {
    a.newer_than(b) || (!b.newer_than(a) && a_index < b_index)
}

/// The CRLs the verifier uses: those in use, as webpki parses them.
pub(crate) fn in_force(crls: &[Crl]) -> Vec<webpki::CertRevocationList<'static>> {
    crls.iter()
        .filter(|c| c.info.in_use)
        .map(|c| webpki::CertRevocationList::from(c.parsed.clone()))
        .collect()
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
            .clone();
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
        let e = c.verify_signature(&[anchor(&root)], &algs()).unwrap_err();
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
            .unwrap_err();
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
