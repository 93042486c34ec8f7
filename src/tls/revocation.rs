//! Revocation of every certificate on a verified path, from the CRLs in force: the one place
//! that decides `revoked`, `revocation_unknown` and `crl_expired` for a chain.
//!
//! rustls-webpki is given no CRLs; the verifier calls [`Revocation::check`] for the leaf and
//! each intermediate of each path webpki has verified (see `tls::crl` for why). The rules:
//!
//! - **Listed anywhere is revoked.** A serial listed by *any* CRL in force of the
//!   certificate's issuer refuses it, whatever partition that CRL covers: serial numbers are
//!   unique per issuer (RFC 5280 §4.1.2.2), so such an entry can only be this certificate.
//!   webpki consults only the first CRL that covers a certificate, so a full CRL listed before
//!   a newer partition would hide the partition's revocations; here no order can.
//! - **Covered means known.** A CRL covers a certificate when it has no issuingDistributionPoint,
//!   or when its partition matches (a fullName URI of the IDP equals one of the certificate's
//!   cRLDistributionPoints, and its onlyContainsUserCerts/CACerts admits the certificate's
//!   role). A certificate without cRLDistributionPoints is covered only by a CRL without an
//!   IDP, as OpenSSL decides; webpki would let any partition cover it, which could call a
//!   certificate "not revoked" from a partition that was never about it. With
//!   `client_auth.require_crl`, a certificate no CRL covers is `revocation_unknown`.
//! - **Fail closed on what is consulted.** A covering CRL past its nextUpdate refuses
//!   (`crl_expired`); a CRL whose signature does not verify with the issuer on this path, or an
//!   issuer whose keyUsage forbids cRLSign, refuses too, as webpki would.
//! - **OCSP** (`client_auth.ocsp`), after the CRLs: with `always`, or with `if_no_crl` for a
//!   certificate no CRL covers, a certificate that names a responder (or every one, with
//!   `ocsp_responder`) is judged by the cached answer: `revoked` refuses, `unknown` refuses as
//!   `revocation_unknown`, `good` accepts until its nextUpdate, and no fresh answer makes a
//!   pending query that admission resolves before any request is read (see `tls::ocsp`). A
//!   certificate with a responder is then "known" without a CRL, so `require_crl` does not
//!   refuse it; one without a responder is judged by the CRLs alone.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::UnixTime;
use x509_parser::prelude::X509Certificate;

use super::crl::{Crl, ParsedCrl};
use super::ocsp::{query_for, OcspCache, OcspQuery, OcspStatus};
use crate::config::OcspMode;
use crate::x509::{crl_scope_uris, rfc3339_z, serial_hex, CrlScope, KeyUsageBits};

/// Why a certificate on the path is refused: the webpki error that names the reason (the
/// rejection table maps it), and the detail for the log and `verify`.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The reason, as webpki would have given it.
    pub(crate) error: webpki::Error,
    /// The CRL, the serial and the partition, in words.
    pub(crate) detail: String,
}

/// Whether a certificate on the path is the client's own or a CA's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The leaf.
    EndEntity,
    /// An intermediate CA.
    Ca,
}

/// One certificate of a verified path, with what its issuer on that path is.
#[derive(Debug)]
pub(crate) struct OnPath<'a> {
    /// The certificate.
    pub(crate) cert: &'a X509Certificate<'a>,
    /// Its role.
    pub(crate) role: Role,
    /// Its issuer's whole SubjectPublicKeyInfo DER (the next certificate, or the anchor).
    pub(crate) issuer_spki: &'a [u8],
    /// Its issuer's keyUsage.
    pub(crate) issuer_usage: KeyUsageBits,
}

/// A CRL in force, as the check reads it.
#[derive(Debug)]
struct InForce {
    crl: Arc<ParsedCrl>,
    /// Where it came from, for refusal details.
    source: String,
}

impl InForce {
    /// This CRL's verdict on the certificate `on` with `serial`: refused (revoked, or a CRL
    /// that covers it is stale or not its issuer's), or whether it covers the certificate.
    fn judge(
        &self,
        on: &OnPath<'_>,
        serial: &[u8],
        dps: Option<&[String]>,
        now: i64,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<bool, Refusal> {
        // Security: a CRL is evidence only under the key that issued this certificate.
        if !self.crl.signed_by(on.issuer_spki, algs) {
            return Err(Refusal {
                error: webpki::Error::InvalidCrlSignatureForPublicKey,
                detail: format!(
                    "the CRL {} does not verify with the key of the issuer on this path",
                    self.source
                ),
            });
        }
        let header = self.crl.header();
        if self.crl.lists(serial) {
            let number = header
                .number
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            return Err(Refusal {
                error: webpki::Error::CertRevoked,
                detail: format!(
                    "serial {} is revoked by the CRL {} ({}, number {number})",
                    serial_hex(serial),
                    self.source,
                    describe(header.scope.as_ref()),
                ),
            });
        }
        if !covers(header.scope.as_ref(), on.role, dps) {
            return Ok(false);
        }
        if let Some(next) = header.next_update.filter(|n| *n <= now) {
            return Err(Refusal {
                error: webpki::Error::CrlExpired {
                    time: unix(now),
                    next_update: unix(next),
                },
                detail: format!(
                    "the CRL {} that covers it passed its nextUpdate {}",
                    self.source,
                    rfc3339_z(next)
                ),
            });
        }
        Ok(true)
    }
}

/// OCSP as one trust state applies it.
#[derive(Debug, Clone)]
pub(crate) struct OcspPolicy {
    /// When to ask.
    pub(crate) mode: OcspMode,
    /// `client_auth.ocsp_responder`.
    pub(crate) responder: Option<String>,
    /// The answers, shared by every state.
    pub(crate) cache: Arc<OcspCache>,
    /// `client_auth.ocsp_soft_fail`: an open connection whose answer went stale stays open.
    pub(crate) soft_fail: bool,
}

/// What a path's revocation check leaves besides its verdict: the OCSP queries admission must
/// resolve, and until when the OCSP answers used hold.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Queries without a fresh answer.
    pub(crate) queries: Vec<OcspQuery>,
    /// The earliest nextUpdate of the answers used.
    pub(crate) deadline: i64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            queries: Vec::new(),
            deadline: i64::MAX,
        }
    }
}

/// The CRLs in force of one trust state, by issuer Name, and its OCSP policy.
#[derive(Debug, Default)]
pub(crate) struct Revocation {
    by_issuer: HashMap<Vec<u8>, Vec<InForce>>,
    require_crl: bool,
    ocsp: Option<OcspPolicy>,
}

impl Revocation {
    /// Whether a connection may stay open without a fresh OCSP answer.
    pub(crate) fn ocsp_soft_fail(&self) -> bool {
        self.ocsp.as_ref().is_some_and(|p| p.soft_fail)
    }

    /// With OCSP, as `policy` says (`Off` leaves it out).
    pub(crate) fn with_ocsp(mut self, policy: Option<OcspPolicy>) -> Self {
        self.ocsp = policy.filter(|p| p.mode != OcspMode::Off);
        self
    }

    /// The CRLs of `crls` that are in use, with the `require_crl` policy.
    pub(crate) fn new(crls: &[Crl], require_crl: bool) -> Self {
        let mut by_issuer: HashMap<Vec<u8>, Vec<InForce>> = HashMap::new();
        for c in crls.iter().filter(|c| c.info.in_use) {
            by_issuer
                .entry(c.issuer_der().to_vec())
                .or_default()
                .push(InForce {
                    crl: c.parsed().clone(),
                    source: c.info.path.display().to_string(),
                });
        }
        Self {
            by_issuer,
            require_crl,
            ocsp: None,
        }
    }

    /// The earliest nextUpdate of the CRLs in force for `issuer` (Name DER), or never: an
    /// acceptance remembered for a chain must not outlive the CRLs it was checked with.
    pub(crate) fn deadline(&self, issuer: &[u8]) -> i64 {
        self.by_issuer
            .get(issuer)
            .into_iter()
            .flatten()
            .filter_map(|c| c.crl.header().next_update)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Decides one certificate of a verified path at `now` (see the module doc); OCSP queries
    /// without a fresh answer go to `pending`.
    pub(crate) fn check(
        &self,
        on: &OnPath<'_>,
        now: i64,
        algs: &WebPkiSupportedAlgorithms,
        pending: &mut Pending,
    ) -> Result<(), Refusal> {
        let covered = self.check_crls(on, now, algs)?;
        if self.check_ocsp(on, &covered, now, pending)? {
            return Ok(());
        }
        match covered {
            Covered::Yes => Ok(()),
            Covered::NoCrl => self.unknown(on.cert, "no CRL of its issuer is loaded"),
            Covered::NotPartition(dps) => self.unknown(
                on.cert,
                &format!("no CRL in force covers its partition: {dps}"),
            ),
        }
    }

    /// OCSP for one certificate, when the policy applies to it: `Ok(true)` when OCSP decides
    /// (a fresh `good`, or a query left pending), `Ok(false)` when the CRLs alone decide.
    fn check_ocsp(
        &self,
        on: &OnPath<'_>,
        covered: &Covered,
        now: i64,
        pending: &mut Pending,
    ) -> Result<bool, Refusal> {
        let Some(policy) = &self.ocsp else {
            return Ok(false);
        };
        if policy.mode == OcspMode::IfNoCrl && *covered == Covered::Yes {
            return Ok(false);
        }
        // `ocsp_responder` answers for the clients' CA: an intermediate is asked about only at
        // the responder its own AIA names (its issuer's), never there.
        let responder = match on.role {
            Role::EndEntity => policy.responder.as_deref(),
            Role::Ca => None,
        };
        let Some(query) = query_for(on.cert, on.issuer_spki, responder) else {
            return Ok(false);
        };
        let Some(answer) = policy.cache.fresh(&query.key, now) else {
            pending.queries.push(query);
            return Ok(true);
        };
        match answer.status {
            OcspStatus::Good => {
                pending.deadline = pending.deadline.min(answer.fresh_until());
                Ok(true)
            }
            OcspStatus::Revoked { since } => Err(Refusal {
                error: webpki::Error::CertRevoked,
                detail: format!(
                    "the OCSP responder {} says serial {} is revoked since {}",
                    query.url,
                    serial_hex(on.cert.raw_serial()),
                    rfc3339_z(since)
                ),
            }),
            OcspStatus::Unknown => Err(Refusal {
                error: webpki::Error::UnknownRevocationStatus,
                detail: format!(
                    "the OCSP responder {} does not know serial {} (status unknown)",
                    query.url,
                    serial_hex(on.cert.raw_serial())
                ),
            }),
        }
    }

    /// The CRLs' verdict on one certificate: an error when a CRL refuses it, else whether one
    /// covers it.
    fn check_crls(
        &self,
        on: &OnPath<'_>,
        now: i64,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<Covered, Refusal> {
        let cert = on.cert;
        let crls = self
            .by_issuer
            .get(cert.issuer().as_raw())
            .map_or(&[][..], Vec::as_slice);
        if crls.is_empty() {
            return Ok(Covered::NoCrl);
        }
        if !on.issuer_usage.allows_crl_sign() {
            return Err(Refusal {
                error: webpki::Error::IssuerNotCrlSigner,
                detail: format!(
                    "its issuer {}'s keyUsage does not allow cRLSign, so no CRL of that issuer can be trusted",
                    crate::x509::rfc2253(cert.issuer())
                ),
            });
        }
        let serial = cert.raw_serial();
        let dps = crl_scope_uris(cert);
        let mut covered = false;
        for c in crls {
            covered |= c.judge(on, serial, dps.as_deref(), now, algs)?;
        }
        if covered {
            return Ok(Covered::Yes);
        }
        Ok(Covered::NotPartition(match dps {
            None => "it has no cRLDistributionPoints, and only a CRL without an issuingDistributionPoint covers such a certificate".to_owned(),
            Some(uris) => format!("its cRLDistributionPoints name {}", uris.join(" ")),
        }))
    }

    fn unknown(&self, cert: &X509Certificate<'_>, why: &str) -> Result<(), Refusal> {
        if !self.require_crl {
            // A CRL applies to its own issuer's (and partition's) certificates only. Without
            // this, one CRL in the config would make every client of every other CA fail with
            // "unknown revocation status" (the nginx/HAProxy all-or-nothing trap). Strict mode
            // is opt-in.
            return Ok(());
        }
        Err(Refusal {
            error: webpki::Error::UnknownRevocationStatus,
            detail: format!(
                "client_auth.require_crl is on and the revocation status of {} is unknown: {why}",
                crate::x509::rfc2253(cert.subject())
            ),
        })
    }
}

/// Whether a CRL in force covers a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Covered {
    /// One does.
    Yes,
    /// Its issuer has no CRL loaded.
    NoCrl,
    /// Its issuer has CRLs, none for its partition (why, in words).
    NotPartition(String),
}

/// Whether a CRL of `scope` is authoritative for a certificate of `role` whose
/// cRLDistributionPoints name `dps` (`None`: it has none).
fn covers(scope: Option<&CrlScope>, role: Role, dps: Option<&[String]>) -> bool {
    let Some(scope) = scope else {
        return true;
    };
    if scope.only_user_certs && role != Role::EndEntity || scope.only_ca_certs && role != Role::Ca {
        return false;
    }
    dps.is_some_and(|dps| dps.iter().any(|d| scope.uris.contains(d)))
}

fn describe(scope: Option<&CrlScope>) -> String {
    scope.map_or_else(|| "all of its issuer".to_owned(), ToString::to_string)
}

fn unix(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowConfig;
    use crate::policy::AllowList;
    use crate::tls::crl::{choose, Anchor};
    use crate::tls::verifier::{ShieldVerifier, Trust};
    use crate::tls::Reason;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
        CrlIssuingDistributionPoint, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
        KeyUsagePurpose as Ku, RevokedCertParams, SerialNumber,
    };
    use rustls_pki_types::CertificateDer;
    use std::path::PathBuf;

    fn scope(uris: &[&str], user: bool, ca: bool) -> CrlScope {
        CrlScope {
            uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            only_user_certs: user,
            only_ca_certs: ca,
        }
    }

    #[test]
    fn a_crl_without_scope_covers_every_certificate_of_its_issuer() {
        assert!(covers(None, Role::EndEntity, None));
        assert!(covers(None, Role::Ca, Some(&["http://x/1.crl".into()])));
    }

    #[test]
    fn a_partition_covers_the_certificates_that_name_it() {
        let p1 = scope(&["http://ca/part-1.crl"], false, false);
        assert!(covers(
            Some(&p1),
            Role::EndEntity,
            Some(&["http://ca/part-1.crl".into()])
        ));
        assert!(!covers(
            Some(&p1),
            Role::EndEntity,
            Some(&["http://ca/part-2.crl".into()])
        ));
    }

    #[test]
    fn a_partition_never_covers_a_certificate_without_distribution_points() {
        let p1 = scope(&["http://ca/part-1.crl"], false, false);
        assert!(!covers(Some(&p1), Role::EndEntity, None));
    }

    #[test]
    fn role_limited_partitions_cover_their_role_only() {
        let dp = ["http://ca/p.crl".to_owned()];
        let users = scope(&["http://ca/p.crl"], true, false);
        let cas = scope(&["http://ca/p.crl"], false, true);
        assert!(covers(Some(&users), Role::EndEntity, Some(&dp)));
        assert!(!covers(Some(&users), Role::Ca, Some(&dp)));
        assert!(covers(Some(&cas), Role::Ca, Some(&dp)));
        assert!(!covers(Some(&cas), Role::EndEntity, Some(&dp)));
    }

    // A CA shaped like AWS Private CA: random 16-byte serials whose top bit is set (so their
    // DER carries a leading zero byte), partitioned CRLs with a critical IDP, and a
    // cRLDistributionPoint in every certificate naming its partition.
    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    const P1: &str = "http://crl.example/ca/part-1.crl";
    const P2: &str = "http://crl.example/ca/part-2.crl";

    fn pca_serial(n: u8) -> SerialNumber {
        let mut b = [0x5au8; 16];
        b[0] = 0x80 | n;
        b[15] = n;
        SerialNumber::from_slice(&b)
    }

    fn root() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "PCA Root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn client(ca: &Ca, serial: u8, dp: Option<&str>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("device-{serial}"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![Ku::DigitalSignature];
        p.serial_number = Some(pca_serial(serial));
        if let Some(dp) = dp {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![dp.to_owned()],
            }];
        }
        p.signed_by(&key, &ca.cert, &ca.key).unwrap().der().clone()
    }

    fn crl(ca: &Ca, number: u64, revoked: &[u8], idp: Option<&str>) -> Crl {
        let now = time::OffsetDateTime::now_utc();
        let p = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: idp.map(|u| CrlIssuingDistributionPoint {
                distribution_point: CrlDistributionPoint {
                    uris: vec![u.to_owned()],
                },
                scope: None,
            }),
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: pca_serial(*s),
                    revocation_time: now - time::Duration::hours(2),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let der = p.signed_by(&ca.cert, &ca.key).unwrap().der().to_vec();
        let name = format!(
            "{}-{number}.crl",
            idp.map_or("full", |u| &u[u.len() - 10..])
        );
        Crl::parse(&PathBuf::from(name), der).unwrap()
    }

    fn verifier(ca: &Ca, crls: Vec<Crl>, require_crl: bool) -> ShieldVerifier {
        let der = ca.cert.der().clone();
        let trust = Trust {
            anchors: vec![Anchor {
                info: crate::x509::cert_info(&der).unwrap(),
                der,
            }],
            crls: choose(crls),
            require_crl,
            algs: crate::tls::provider().signature_verification_algorithms,
            distribution_points: None,
            advertise_ca_names: true,
            ocsp: None,
        };
        let allow = AllowList::compile(&AllowConfig::default()).unwrap();
        ShieldVerifier::new(trust, allow, 0).unwrap()
    }

    fn verdict(v: &ShieldVerifier, leaf: &CertificateDer<'static>) -> Result<(), Reason> {
        v.check(leaf, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|r| r.reason)
    }

    #[test]
    fn every_partition_of_an_issuer_is_in_force_in_either_order() {
        let ca = root();
        let revoked_1 = client(&ca, 1, Some(P1));
        let revoked_2 = client(&ca, 2, Some(P2));
        let good_2 = client(&ca, 3, Some(P2));
        for flip in [false, true] {
            let mut crls = vec![crl(&ca, 7, &[1], Some(P1)), crl(&ca, 4, &[2], Some(P2))];
            if flip {
                crls.reverse();
            }
            let v = verifier(&ca, crls, true);
            assert_eq!(verdict(&v, &revoked_1), Err(Reason::Revoked), "flip={flip}");
            assert_eq!(verdict(&v, &revoked_2), Err(Reason::Revoked), "flip={flip}");
            assert_eq!(verdict(&v, &good_2), Ok(()), "flip={flip}");
        }
    }

    #[test]
    fn only_the_same_scope_is_superseded() {
        let ca = root();
        let chosen = choose(vec![
            crl(&ca, 3, &[], Some(P1)),
            crl(&ca, 5, &[], Some(P1)),
            crl(&ca, 1, &[], Some(P2)),
            crl(&ca, 2, &[], None),
        ]);
        let in_use: Vec<(Option<String>, bool)> = chosen
            .iter()
            .map(|c| (c.info.number.clone(), c.info.in_use))
            .collect();
        assert_eq!(
            in_use,
            [
                (Some("3".into()), false),
                (Some("5".into()), true),
                (Some("1".into()), true),
                (Some("2".into()), true)
            ]
        );
    }

    #[test]
    fn a_serial_in_a_partition_is_revoked_even_beside_a_full_crl_that_omits_it() {
        let ca = root();
        let leaf = client(&ca, 9, Some(P1));
        for flip in [false, true] {
            let mut crls = vec![crl(&ca, 1, &[], None), crl(&ca, 2, &[9], Some(P1))];
            if flip {
                crls.reverse();
            }
            let v = verifier(&ca, crls, false);
            assert_eq!(verdict(&v, &leaf), Err(Reason::Revoked), "flip={flip}");
        }
    }

    #[test]
    fn a_missing_partition_is_unknown_under_require_crl() {
        let ca = root();
        let in_p2 = client(&ca, 4, Some(P2));
        let in_p1 = client(&ca, 5, Some(P1));
        let strict = verifier(&ca, vec![crl(&ca, 1, &[], Some(P1))], true);
        assert_eq!(verdict(&strict, &in_p2), Err(Reason::RevocationUnknown));
        assert_eq!(verdict(&strict, &in_p1), Ok(()));
        let lenient = verifier(&ca, vec![crl(&ca, 1, &[], Some(P1))], false);
        assert_eq!(verdict(&lenient, &in_p2), Ok(()));
    }

    #[test]
    fn a_certificate_without_distribution_points_is_not_covered_by_a_partition() {
        let ca = root();
        let no_dp = client(&ca, 6, None);
        let partitions_only = verifier(&ca, vec![crl(&ca, 1, &[], Some(P1))], true);
        assert_eq!(
            verdict(&partitions_only, &no_dp),
            Err(Reason::RevocationUnknown)
        );
        let with_full = verifier(
            &ca,
            vec![crl(&ca, 1, &[], Some(P1)), crl(&ca, 1, &[], None)],
            true,
        );
        assert_eq!(verdict(&with_full, &no_dp), Ok(()));
    }

    #[test]
    fn a_serial_with_a_leading_zero_byte_is_found() {
        let ca = root();
        let leaf = client(&ca, 0x7f, None);
        let c = crl(&ca, 1, &[0x7f], None);
        // The DER INTEGER of a serial whose top bit is set starts with a zero byte.
        let mut der_content = vec![0u8];
        der_content.extend(pca_serial(0x7f).to_bytes());
        assert!(c.parsed().lists(&der_content));
        assert!(!c.parsed().lists(&pca_serial(0x7f).to_bytes()));
        assert_eq!(
            verdict(&verifier(&ca, vec![c], false), &leaf),
            Err(Reason::Revoked)
        );
    }
}
