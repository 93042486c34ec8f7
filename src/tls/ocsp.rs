//! OCSP for client certificates (RFC 6960): which certificates to ask about and where, the
//! request, the checks on an answer, and the cache of answers that the verifier reads.
//!
//! The handshake cannot wait on the network, so the verifier only *reads* the cache: a fresh
//! `revoked` refuses, a fresh `good` accepts, and anything else becomes a pending query on the
//! acceptance. The connection's admission stage then asks the responder through an
//! [`OcspResolver`] (the app's HTTP client), after the handshake and before any request is
//! read: no HTTP byte is exchanged before the status is known.
//!
//! An answer is used only when:
//! - it is a successful `id-pkix-ocsp-basic` response with a SingleResponse for exactly the
//!   CertID asked (SHA-1 issuer name and key hashes, as RFC 5019 responders all support, and
//!   the serial);
//! - its signature verifies with the issuing CA's key, or with a responder certificate that
//!   the CA issued, that is valid now and carries `id-kp-OCSPSigning` (RFC 6960 §4.2.2.2);
//! - its thisUpdate is not in the future (5 minutes of clock skew) and its nextUpdate, when
//!   present, has not passed; an answer without nextUpdate is used for 5 minutes;
//! - the nonce we sent is echoed, when the responder echoes one (many, AWS Private CA's among
//!   them, serve pre-signed answers without one).

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use rustls::crypto::WebPkiSupportedAlgorithms;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use super::crl::verify_signed;
use super::reason::Reason;
use crate::x509::{signed_parts, spki_parts, SignedParts};

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// A thisUpdate this far ahead of our clock is still taken.
const CLOCK_SKEW: i64 = 300;
/// How long an answer without nextUpdate is used.
const NO_NEXT_UPDATE_TTL: i64 = 300;

/// One certificate's status at a responder: the SHA-1 CertID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OcspKey {
    issuer_name_hash: [u8; 20],
    issuer_key_hash: [u8; 20],
    serial: Vec<u8>,
}

/// What to ask a responder about one certificate, and how to check who answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OcspQuery {
    pub(crate) key: OcspKey,
    /// The responder: `client_auth.ocsp_responder`, or the certificate's AIA OCSP URL.
    pub(crate) url: String,
    /// The issuer's subject Name (DER) and whole SubjectPublicKeyInfo.
    issuer_name: Vec<u8>,
    issuer_spki: Vec<u8>,
    /// The certificate's subject, for logs.
    pub(crate) subject: String,
}

/// A certificate's status, as a responder says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OcspStatus {
    /// Not revoked.
    Good,
    /// Revoked, since this Unix second.
    Revoked {
        /// revocationTime.
        since: i64,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// A checked answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// What it says.
    pub(crate) status: OcspStatus,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: Option<i64>,
    /// When we received it.
    pub(crate) fetched_at: i64,
}

impl Answer {
    /// The first second at which the answer may no longer be used.
    pub(crate) fn fresh_until(&self) -> i64 {
        self.next_update
            .unwrap_or(self.fetched_at.saturating_add(NO_NEXT_UPDATE_TTL))
    }

    /// Whether it may be used at `now`.
    pub(crate) fn is_fresh(&self, now: i64) -> bool {
        self.this_update <= now + CLOCK_SKEW && now < self.fresh_until()
    }

    /// When to ask again, so that open connections never meet a stale answer: halfway
    /// through its validity, and at most `every` seconds after it arrived.
    fn refresh_at(&self, every: i64) -> i64 {
        let start = self.this_update.min(self.fetched_at);
        (start + (self.fresh_until() - start) / 2)
            .min(self.fetched_at.saturating_add(every))
            .max(self.fetched_at + 1)
    }
}

/// At most this many answers are kept; the least recently used goes first.
pub(crate) const CACHE_CAPACITY: usize = 50_000;

#[derive(Debug)]
struct CacheEntry {
    answer: Answer,
    query: OcspQuery,
    last_used: i64,
}

/// Answers by CertID, shared by every trust state of the process: a reload does not forget
/// what the responders said, and a new answer reaches every state at once.
#[derive(Debug)]
pub(crate) struct OcspCache {
    entries: Mutex<HashMap<OcspKey, CacheEntry>>,
    capacity: usize,
}

impl Default for OcspCache {
    fn default() -> Self {
        Self::new(CACHE_CAPACITY)
    }
}

impl OcspCache {
    /// An empty cache of at most `capacity` answers.
    pub(crate) fn new(capacity: usize) -> Self {
        OcspCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`, when there is one that may be used at `now`.
    pub(crate) fn fresh(&self, key: &OcspKey, now: i64) -> Option<Answer> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        entry.last_used = now;
        entry.answer.is_fresh(now).then_some(entry.answer)
    }

    /// Stores `answer` for `query`; returns the status it replaces, if any.
    pub(crate) fn store(&self, query: &OcspQuery, answer: Answer) -> Option<OcspStatus> {
        let mut entries = self.entries.lock().ok()?;
        if entries.len() >= self.capacity && !entries.contains_key(&query.key) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        entries
            .insert(
                query.key.clone(),
                CacheEntry {
                    answer,
                    query: query.clone(),
                    last_used: answer.fetched_at,
                },
            )
            .map(|old| old.answer.status)
    }

    /// The queries whose answers are due for a refresh at `now`, among those used since
    /// `used_since` (answers nobody asked for in that long are left to expire).
    pub(crate) fn due(&self, now: i64, used_since: i64, every: i64) -> Vec<OcspQuery> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .values()
            .filter(|e| e.last_used >= used_since && e.answer.refresh_at(every) <= now)
            .map(|e| e.query.clone())
            .collect()
    }

    /// The next refresh time of any answer in use since `used_since`.
    pub(crate) fn next_refresh(&self, used_since: i64, every: i64) -> Option<i64> {
        let entries = self.entries.lock().ok()?;
        entries
            .values()
            .filter(|e| e.last_used >= used_since)
            .map(|e| e.answer.refresh_at(every))
            .min()
    }

    /// (answers kept, age in seconds of the oldest one's thisUpdate).
    pub(crate) fn stats(&self, now: i64) -> (usize, i64) {
        let Ok(entries) = self.entries.lock() else {
            return (0, 0);
        };
        let oldest = entries
            .values()
            .map(|e| now - e.answer.this_update)
            .max()
            .unwrap_or(0);
        (entries.len(), oldest.max(0))
    }
}

/// The OCSP responder URL a certificate names in its authorityInfoAccess (http only).
pub(crate) fn aia_ocsp_url(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions().iter().find_map(|ext| {
        let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() else {
            return None;
        };
        aia.accessdescs.iter().find_map(|d| {
            if d.access_method.to_id_string() != AD_OCSP {
                return None;
            }
            match &d.access_location {
                GeneralName::URI(u) if u.starts_with("http://") => Some((*u).to_owned()),
                _ => None,
            }
        })
    })
}

/// The query for `cert`, issued by the CA whose subject Name is `issuer_name` (DER) and whose
/// key is `issuer_spki`, at `responder` or else its AIA URL. `None` when it names no responder.
pub(crate) fn query_for(
    cert: &X509Certificate<'_>,
    issuer_spki: &[u8],
    responder: Option<&str>,
) -> Option<OcspQuery> {
    let url = responder
        .map(str::to_owned)
        .or_else(|| aia_ocsp_url(cert))?;
    let issuer_name = cert.issuer().as_raw().to_vec();
    let key_bits = spki_parts(issuer_spki)?.key;
    Some(OcspQuery {
        key: OcspKey {
            issuer_name_hash: sha1(&issuer_name),
            issuer_key_hash: sha1(key_bits),
            serial: cert.raw_serial().to_vec(),
        },
        url,
        issuer_name,
        issuer_spki: issuer_spki.to_vec(),
        subject: crate::identity::capped_for_log(&crate::x509::rfc2253(cert.subject()))
            .into_owned(),
    })
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// DER tag-length-value. The casts cannot truncate: a short length is below 0x80, and a long
/// length's byte count is at most `size_of::<usize>()`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `OCSPRequest` for `query`, with `nonce` in the id-pkix-ocsp-nonce extension (RFC 8954).
pub(crate) fn request_der(query: &OcspQuery, nonce: &[u8]) -> Vec<u8> {
    const SEQ: u8 = 0x30;
    // SHA-1 AlgorithmIdentifier with NULL parameters.
    let alg = tlv(
        SEQ,
        &[
            &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a][..],
            &[0x05, 0x00],
        ]
        .concat(),
    );
    let cert_id = tlv(
        SEQ,
        &[
            alg,
            tlv(0x04, &query.key.issuer_name_hash),
            tlv(0x04, &query.key.issuer_key_hash),
            tlv(0x02, &query.key.serial),
        ]
        .concat(),
    );
    let request_list = tlv(SEQ, &tlv(SEQ, &cert_id));
    let nonce_oid = [
        0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02,
    ];
    let extension = tlv(
        SEQ,
        &[&nonce_oid[..], &tlv(0x04, &tlv(0x04, nonce))].concat(),
    );
    let extensions = tlv(0xa2, &tlv(SEQ, &extension));
    tlv(SEQ, &tlv(SEQ, &[request_list, extensions].concat()))
}

/// Why an OCSP answer was not used. Each is an unknown status for the certificate (the
/// lookup failed), never a "good".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnswerError {
    /// The body is not an OCSPResponse.
    #[error("not an OCSP response: {0}")]
    NotOcsp(String),
    /// The responder answered with an error status (tryLater, unauthorized…).
    #[error("the responder answered {0}")]
    Status(String),
    /// `successful` without responseBytes.
    #[error("a successful OCSP response without a body")]
    NoBody,
    /// A response type other than id-pkix-ocsp-basic.
    #[error("an OCSP response of type {0}, not id-pkix-ocsp-basic")]
    NotBasic(String),
    /// The BasicOCSPResponse does not parse, or its parts cannot be re-encoded for the
    /// signature check.
    #[error("the basic OCSP response does not parse: {0}")]
    Malformed(String),
    /// The answer echoes another nonce than the one sent.
    #[error("the answer's nonce is not the one we sent (a replayed answer)")]
    NonceMismatch,
    /// No SingleResponse for the certificate asked about.
    #[error("the answer does not cover the certificate asked about")]
    NotCovered,
    /// thisUpdate in the future beyond the allowed skew.
    #[error("the answer's thisUpdate is in the future; check the clocks")]
    FromTheFuture,
    /// Past its nextUpdate.
    #[error("the answer is past its nextUpdate (a stale or replayed answer)")]
    Stale,
    /// Signed by no key the client's CA stands behind.
    #[error("the answer's signature is not trusted: {0}")]
    Untrusted(&'static str),
}

/// Checks a responder's answer to `query` (see the module doc).
pub(crate) fn check_response(
    body: &[u8],
    query: &OcspQuery,
    nonce: &[u8],
    now: i64,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Answer, AnswerError> {
    let response = OcspResponse::from_der(body).map_err(|e| AnswerError::NotOcsp(e.to_string()))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(AnswerError::Status(format!(
            "{:?}",
            response.response_status
        )));
    }
    let bytes = response.response_bytes.ok_or(AnswerError::NoBody)?;
    if bytes.response_type != OCSP_BASIC {
        return Err(AnswerError::NotBasic(bytes.response_type.to_string()));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| AnswerError::Malformed(e.to_string()))?;
    check_signer(&basic, query, now, algs)?;
    if let Some(echoed) = basic.nonce() {
        if echoed.0.as_bytes() != nonce {
            return Err(AnswerError::NonceMismatch);
        }
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.hash_algorithm.oid == SHA1
                && r.cert_id.issuer_name_hash.as_bytes() == query.key.issuer_name_hash
                && r.cert_id.issuer_key_hash.as_bytes() == query.key.issuer_key_hash
                && r.cert_id.serial_number.as_bytes() == query.key.serial.as_slice()
        })
        .ok_or(AnswerError::NotCovered)?;
    let secs = |t: &x509_ocsp::OcspGeneralizedTime| {
        i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    let answer = Answer {
        status: match &single.cert_status {
            CertStatus::Good(_) => OcspStatus::Good,
            CertStatus::Revoked(info) => OcspStatus::Revoked {
                since: secs(&info.revocation_time),
            },
            CertStatus::Unknown(_) => OcspStatus::Unknown,
        },
        this_update: secs(&single.this_update),
        next_update: single.next_update.as_ref().map(secs),
        fetched_at: now,
    };
    if answer.this_update > now + CLOCK_SKEW {
        return Err(AnswerError::FromTheFuture);
    }
    if !answer.is_fresh(now) {
        return Err(AnswerError::Stale);
    }
    Ok(answer)
}

/// Security: an answer counts only when the CA that issued the certificate stands behind it,
/// directly or through a responder certificate it issued for exactly this purpose. Anyone can
/// sign "good" with a key of their own.
fn check_signer(
    basic: &BasicOcspResponse,
    query: &OcspQuery,
    now: i64,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<(), AnswerError> {
    let malformed = |why: String| AnswerError::Malformed(why);
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| malformed(format!("cannot re-encode the answer: {e}")))?;
    let alg = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| malformed(format!("cannot re-encode the signature algorithm: {e}")))?;
    let alg_contents =
        sequence_contents(&alg).ok_or_else(|| malformed("bad signature algorithm".into()))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("the signature is not a whole number of bytes".into()))?;
    let signed = SignedParts {
        tbs: &tbs,
        algorithm: alg_contents,
        signature,
    };
    if verify_signed(algs, &query.issuer_spki, &signed) {
        return Ok(());
    }
    let mut why = "it is signed neither by the issuing CA nor by a certificate in the answer";
    for cert in basic.certs.iter().flatten() {
        let Ok(der) = cert.to_der() else { continue };
        match delegated_responder(&der, query, now, algs) {
            Ok(key) if verify_signed(algs, &key, &signed) => return Ok(()),
            Ok(_) | Err(None) => {}
            Err(Some(e)) => why = e,
        }
    }
    Err(AnswerError::Untrusted(why))
}

/// The key of `der`, a responder certificate the answer carries, when the client's CA
/// delegated OCSP to it: issued by that CA, valid now, with id-kp-OCSPSigning. Else why not
/// (`None`: it cannot be read, and says nothing).
fn delegated_responder(
    der: &[u8],
    query: &OcspQuery,
    now: i64,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Vec<u8>, Option<&'static str>> {
    let Ok((_, responder)) = X509Certificate::from_der(der) else {
        return Err(None);
    };
    let issued_by_ca = responder.issuer().as_raw() == query.issuer_name.as_slice()
        && signed_parts(der).is_some_and(|p| verify_signed(algs, &query.issuer_spki, &p));
    if !issued_by_ca {
        return Err(Some(
            "its responder certificate was not issued by the client's CA",
        ));
    }
    let valid = responder.validity().not_before.timestamp() <= now
        && now <= responder.validity().not_after.timestamp();
    if !valid {
        return Err(Some(
            "its responder certificate is expired or not yet valid",
        ));
    }
    let ocsp_signing = responder
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.ocsp_signing);
    if !ocsp_signing {
        return Err(Some("its responder certificate lacks id-kp-OCSPSigning, so the CA did not delegate OCSP to it"));
    }
    Ok(responder.public_key().raw.to_vec())
}

fn sequence_contents(der: &[u8]) -> Option<&[u8]> {
    use x509_parser::der_parser::asn1_rs::{Any, FromDer as _};
    let (rest, any) = Any::from_der(der).ok()?;
    rest.is_empty().then_some(any.data)
}

/// What admission makes of pending queries: the second until which the answers hold, or the
/// refusal.
pub(crate) type Resolved = Result<i64, (Reason, String)>;

/// Asks responders about pending queries, on the connection's admission path. Implemented by
/// the app's HTTP client, which applies `ocsp_timeout` and `ocsp_soft_fail`, fills the cache
/// and counts every answer.
pub(crate) trait OcspResolver: Send + Sync + Debug {
    /// Resolves `queries` (all of one chain).
    fn resolve<'a>(
        &'a self,
        queries: &'a [OcspQuery],
    ) -> Pin<Box<dyn Future<Output = Resolved> + Send + 'a>>;
}

/// Whether `nonce` bytes are usable: 16 random bytes from the provider.
pub(crate) fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    // aws-lc's RNG does not fail in practice; an all-zero nonce on failure would only make
    // the answer's nonce check weaker, never accept a wrong answer (the signature still holds).
    let _ = aws_lc_rs::rand::fill(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(this: i64, next: Option<i64>, fetched: i64) -> Answer {
        Answer {
            status: OcspStatus::Good,
            this_update: this,
            next_update: next,
            fetched_at: fetched,
        }
    }

    #[test]
    fn an_answer_is_fresh_until_its_next_update() {
        let a = answer(1000, Some(2000), 1000);
        assert!(a.is_fresh(1999));
        assert!(!a.is_fresh(2000));
        assert_eq!(a.refresh_at(3600), 1500);
        assert_eq!(a.refresh_at(60), 1060);
    }

    #[test]
    fn an_answer_without_next_update_is_used_five_minutes() {
        let a = answer(1000, None, 1000);
        assert!(a.is_fresh(1299));
        assert!(!a.is_fresh(1300));
    }

    #[test]
    fn the_cache_drops_the_least_recently_used_answer_when_full() {
        let cache = OcspCache::new(2);
        let q = |n: u8| OcspQuery {
            key: OcspKey {
                issuer_name_hash: [0; 20],
                issuer_key_hash: [0; 20],
                serial: vec![n],
            },
            url: "http://ocsp.example".into(),
            issuer_name: vec![],
            issuer_spki: vec![],
            subject: String::new(),
        };
        cache.store(&q(1), answer(0, Some(100), 1));
        cache.store(&q(2), answer(0, Some(100), 2));
        assert!(cache.fresh(&q(1).key, 3).is_some());
        cache.store(&q(3), answer(0, Some(100), 4));
        assert!(
            cache.fresh(&q(2).key, 5).is_none(),
            "the least recently used went"
        );
        assert!(cache.fresh(&q(1).key, 5).is_some());
        assert_eq!(cache.stats(5).0, 2);
    }

    #[test]
    fn long_lengths_are_encoded_in_long_form() {
        assert_eq!(tlv(0x04, &[7; 3])[..2], [0x04, 3]);
        assert_eq!(tlv(0x04, &[7; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[7; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
