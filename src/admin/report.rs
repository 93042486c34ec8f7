//! `GET /trust`: the trust state as JSON, one stable document. The generation in service
//! and the last reloads; the server certificate; each trust domain's anchors, CRLs, CRL URLs
//! and OCSP answers; the inventory of client and viewer certificates seen, each judged again
//! by the trust in service; the last refusals; and what needs attention. The trust page
//! (`page`) and `mtls-shield status` read the same document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::ledger::{Fetching, Seen, UrlStatus};
use crate::proxy::generation::Generation;
use crate::proxy::server::Server;
use crate::tls::Reason;

/// Days before a certificate's notAfter when it needs attention, and when it is shown as
/// coming up.
pub(crate) const SOON_DAYS: i64 = 7;
/// See [`SOON_DAYS`].
pub(crate) const LATER_DAYS: i64 = 30;
/// A CRL whose nextUpdate is nearer than this needs attention (its issuer's clients are
/// refused once it passes).
pub(crate) const CRL_SOON_SECS: i64 = 6 * 3600;

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrustReport {
    /// When it was made, RFC 3339 UTC.
    pub(crate) checked_at: String,
    /// Readiness, with the reason when not ready.
    pub(crate) ready: bool,
    /// Why not ready.
    pub(crate) not_ready_reason: Option<String>,
    /// The generation in service.
    pub(crate) generation: GenerationReport,
    /// The last reloads, oldest first (at most 20).
    pub(crate) reloads: Vec<ReloadReport>,
    /// The server certificate.
    pub(crate) server_certificates: Vec<CertReport>,
    /// `client_auth`, the report-only candidate, `viewer`.
    pub(crate) trust_domains: Vec<DomainReport>,
    /// Each distinct certificate seen, oldest first.
    pub(crate) clients: Vec<ClientReport>,
    /// The last refusals, oldest first (at most 100).
    pub(crate) refusals: Vec<RefusalReport>,
    /// Accepted handshakes by protocol version, cipher suite and key-exchange group.
    pub(crate) tls: Vec<PostureReport>,
    /// What needs attention now, one line each (`status` exits 1 when any).
    pub(crate) attention: Vec<String>,
}

/// The generation in service.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GenerationReport {
    /// Its id (1 at start).
    pub(crate) id: u64,
    /// When it went into service, RFC 3339.
    pub(crate) loaded_at: Option<String>,
    /// Why: `start`, `SIGHUP`, the file watcher, a CRL update, an OCSP answer.
    pub(crate) cause: Option<String>,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReloadReport {
    /// When.
    pub(crate) at: String,
    /// Why.
    pub(crate) cause: String,
    /// `ok` or `failed`.
    pub(crate) outcome: &'static str,
    /// The generation it put in service.
    pub(crate) generation: Option<u64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// A certificate with its expiry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertReport {
    /// Subject DN, RFC 2253.
    pub(crate) subject: String,
    /// SAN DNS names and IPs (server certificates).
    pub(crate) sans: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex (anchors).
    pub(crate) spki_sha256: Option<String>,
    /// notAfter, RFC 3339.
    pub(crate) not_after: String,
    /// Whole days until notAfter (negative once past).
    pub(crate) days_left: i64,
}

/// One trust domain.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DomainReport {
    /// `client_auth`, `report_only` or `viewer`.
    pub(crate) name: &'static str,
    /// Its anchors.
    pub(crate) anchors: Vec<CertReport>,
    /// Its CRLs, by issuer and scope.
    pub(crate) crls: Vec<CrlReport>,
    /// Its CRL URLs' fetching.
    pub(crate) crl_urls: Vec<UrlReport>,
    /// OCSP answers (the cache is shared by the domains).
    pub(crate) ocsp: Option<OcspReport>,
}

/// One CRL.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CrlReport {
    /// Issuer DN.
    pub(crate) issuer: String,
    /// The partition (issuingDistributionPoint URIs), when it has one.
    pub(crate) scope: Option<String>,
    /// The file or URL it came from.
    pub(crate) source: String,
    /// cRLNumber.
    pub(crate) number: Option<String>,
    /// thisUpdate, RFC 3339.
    pub(crate) this_update: String,
    /// nextUpdate, RFC 3339.
    pub(crate) next_update: Option<String>,
    /// Seconds until nextUpdate (negative once past).
    pub(crate) next_update_in: Option<i64>,
    /// Revoked entries.
    pub(crate) entries: usize,
    /// In use, or superseded by a newer one of the same issuer and scope.
    pub(crate) in_use: bool,
}

/// One CRL URL.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UrlReport {
    /// The URL.
    pub(crate) url: String,
    /// The last attempt.
    pub(crate) last_attempt: Option<String>,
    /// The last usable answer.
    pub(crate) last_success: Option<String>,
    /// What the last attempt gave.
    pub(crate) result: Option<String>,
    /// When the next attempt is due.
    pub(crate) next_fetch: Option<String>,
}

/// The OCSP cache.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OcspReport {
    /// Answers kept.
    pub(crate) cache_entries: usize,
    /// Age of the oldest, seconds.
    pub(crate) oldest_answer_age_seconds: i64,
}

/// One certificate of the inventory.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientReport {
    /// `client_auth` or `viewer`.
    pub(crate) domain: &'static str,
    /// Subject DN.
    pub(crate) subject: String,
    /// Issuer DN.
    pub(crate) issuer: String,
    /// Serial, hex.
    pub(crate) serial: String,
    /// SHA-256 of the certificate, hex.
    pub(crate) fingerprint_sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo, hex.
    pub(crate) spki_sha256: String,
    /// notAfter, RFC 3339.
    pub(crate) not_after: String,
    /// Whole days until notAfter.
    pub(crate) days_left: i64,
    /// First seen, RFC 3339.
    pub(crate) first_seen: String,
    /// Last seen, RFC 3339.
    pub(crate) last_seen: String,
    /// Connections opened with it (viewers: 0).
    pub(crate) connections: u64,
    /// Requests made with it.
    pub(crate) requests: u64,
    /// Its last refusal, when it had one.
    pub(crate) last_refusal: Option<&'static str>,
    /// Whether the trust in service accepts it now.
    pub(crate) accepted_now: bool,
}

/// One combination of what handshakes negotiated, and its share.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PostureReport {
    /// `TLSv1_3` or `TLSv1_2`.
    pub(crate) version: &'static str,
    /// The cipher suite.
    pub(crate) suite: &'static str,
    /// The key-exchange group (`X25519MLKEM768`: hybrid post-quantum).
    pub(crate) group: &'static str,
    /// Accepted handshakes.
    pub(crate) count: u64,
    /// Its share of all accepted handshakes, percent.
    pub(crate) share_pct: f64,
}

/// One refusal.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RefusalReport {
    /// When.
    pub(crate) at: String,
    /// The peer.
    pub(crate) peer: String,
    /// The reason code.
    pub(crate) reason: &'static str,
    /// The reason in one line.
    pub(crate) explain: &'static str,
    /// The certificate's subject, issuer, serial and fingerprint, when one was presented.
    pub(crate) subject: Option<String>,
    /// Issuer DN.
    pub(crate) issuer: Option<String>,
    /// Serial, hex.
    pub(crate) serial: Option<String>,
    /// SHA-256 fingerprint, hex.
    pub(crate) fingerprint_sha256: Option<String>,
}

fn time(unix: i64) -> String {
    crate::x509::rfc3339_z(unix)
}

fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

/// Builds the document from what `server` holds now. `ready` is `/readyz`'s answer.
pub(crate) fn build(server: &Server, ready: Result<(), String>, now: i64) -> TrustReport {
    let generation = server.current();
    let ledger = server.ledger();
    let reloads: Vec<ReloadReport> = ledger
        .reloads()
        .into_iter()
        .map(|r| ReloadReport {
            at: time(r.at),
            outcome: if r.error.is_none() { "ok" } else { "failed" },
            cause: r.cause,
            generation: r.generation,
            error: r.error,
        })
        .collect();
    let in_service = reloads
        .iter()
        .rev()
        .find(|r| r.generation == Some(generation.id));
    let fetching = server.fetching();
    let mut report = TrustReport {
        checked_at: time(now),
        ready: ready.is_ok(),
        not_ready_reason: ready.err(),
        generation: GenerationReport {
            id: generation.id,
            loaded_at: in_service.map(|r| r.at.clone()),
            cause: in_service.map(|r| r.cause.clone()),
        },
        reloads: reloads.clone(),
        server_certificates: vec![cert(&generation.inventory().server, None, now)],
        trust_domains: domains(&generation, &fetching, now),
        clients: ledger
            .clients()
            .iter()
            .map(|s| client(s, &generation, now))
            .collect(),
        refusals: ledger.refusals().into_iter().map(refusal).collect(),
        tls: postures(ledger.postures()),
        attention: Vec::new(),
    };
    report.attention = attention(&report, &fetching.crl_urls);
    report
}

fn postures(list: Vec<((&'static str, &'static str, &'static str), u64)>) -> Vec<PostureReport> {
    let total: u64 = list.iter().map(|(_, n)| n).sum();
    list.into_iter()
        .map(|((version, suite, group), count)| PostureReport {
            version,
            suite,
            group,
            count,
            share_pct: if total == 0 {
                0.0
            } else {
                (count as f64) * 100.0 / (total as f64)
            },
        })
        .collect()
}

fn cert(info: &crate::x509::CertInfo, spki: Option<String>, now: i64) -> CertReport {
    CertReport {
        subject: info.subject.clone(),
        sans: info.sans.clone(),
        spki_sha256: spki,
        not_after: time(info.not_after),
        days_left: days_left(info.not_after, now),
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, hex.
fn spki_of(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(crate::x509::sha256(c.public_key().raw)))
}

fn domains(generation: &Generation, fetching: &Fetching, now: i64) -> Vec<DomainReport> {
    let viewer_urls: Vec<&str> = generation
        .config
        .viewer
        .iter()
        .flat_map(|v| v.crl_urls.iter().map(String::as_str))
        .collect();
    let urls = |viewer: bool| -> Vec<UrlReport> {
        fetching
            .crl_urls
            .iter()
            .filter(|u| viewer_urls.contains(&u.url.as_str()) == viewer)
            .map(url)
            .collect()
    };
    let ocsp = Some(OcspReport {
        cache_entries: fetching.ocsp_entries,
        oldest_answer_age_seconds: fetching.ocsp_oldest_age,
    });
    let anchors = |list: &[crate::tls::crl::Anchor]| -> Vec<CertReport> {
        list.iter()
            .map(|a| cert(&a.info, spki_of(a.der.as_ref()), now))
            .collect()
    };
    let mut out = vec![DomainReport {
        name: "client_auth",
        anchors: anchors(&generation.tls.anchors),
        crls: generation
            .inventory()
            .crls
            .iter()
            .map(|c| crl(c, now))
            .collect(),
        crl_urls: urls(false),
        ocsp: ocsp.clone(),
    }];
    if let Some(candidate) = &generation.config.client_auth.report_only {
        let loaded = candidate
            .truststore
            .as_deref()
            .map(crate::tls::state::load_anchors);
        let candidate_anchors = match loaded {
            Some(Ok(a)) => anchors(&a),
            Some(Err(_)) => Vec::new(),
            None => anchors(&generation.tls.anchors),
        };
        out.push(DomainReport {
            name: "report_only",
            anchors: candidate_anchors,
            crls: Vec::new(),
            crl_urls: Vec::new(),
            ocsp: None,
        });
    }
    if let Some(v) = &generation.viewer {
        out.push(DomainReport {
            name: "viewer",
            anchors: anchors(&v.anchors),
            crls: v.crls.iter().map(|c| crl(c, now)).collect(),
            crl_urls: urls(true),
            ocsp,
        });
    }
    out
}

fn crl(c: &crate::x509::CrlInfo, now: i64) -> CrlReport {
    CrlReport {
        next_update_in: c.next_update.map(|n| n - now),
        issuer: c.issuer.clone(),
        scope: c.scope.as_ref().map(|s| s.to_string()),
        source: c.path.display().to_string(),
        number: c.number.clone(),
        this_update: time(c.this_update),
        next_update: c.next_update.map(time),
        entries: c.revoked,
        in_use: c.in_use,
    }
}

fn url(u: &UrlStatus) -> UrlReport {
    UrlReport {
        url: u.url.clone(),
        last_attempt: u.last_attempt.map(time),
        last_success: u.last_success.map(time),
        result: u.result.clone(),
        next_fetch: u.next_fetch.map(time),
    }
}

fn client(s: &Arc<Seen>, generation: &Generation, now: i64) -> ClientReport {
    let id = &s.identity;
    ClientReport {
        domain: s.domain,
        subject: id.subject.clone(),
        issuer: id.issuer.clone(),
        serial: id.serial_hex.clone(),
        fingerprint_sha256: id.fingerprint_hex(),
        spki_sha256: hex::encode(id.spki_sha256),
        not_after: time(id.not_after),
        days_left: days_left(id.not_after, now),
        first_seen: time(s.first_seen),
        last_seen: time(s.last_seen.load(Ordering::Relaxed)),
        connections: s.connections.load(Ordering::Relaxed),
        requests: s.requests.load(Ordering::Relaxed),
        last_refusal: s.last_refusal.lock().ok().and_then(|l| *l),
        accepted_now: accepted_now(s, generation, now),
    }
}

/// Whether the trust in service accepts the certificate now: its verdict is worked out once
/// per generation (with the handshake's check) and kept with its window.
fn accepted_now(s: &Seen, generation: &Generation, now: i64) -> bool {
    if let Some(held) = s.verdict_in(generation.id, now) {
        return held;
    }
    let id = &s.identity;
    let at = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    let window = match s.domain {
        "viewer" => generation
            .viewer
            .as_ref()
            .and_then(|v| v.accepts(&id.leaf, &id.intermediates, at)),
        _ => generation
            .tls
            .verifier
            .check(&id.leaf, &id.intermediates, at)
            .ok()
            .map(|a| a.valid_until),
    };
    s.set_verdict(generation.id, window);
    window.is_some_and(|until| now < until)
}

fn refusal(r: crate::ledger::Refused) -> RefusalReport {
    let id = r.identity.as_deref();
    RefusalReport {
        at: time(r.at),
        peer: r.peer.to_string(),
        reason: r.reason,
        explain: explain(r.reason),
        subject: id.map(|i| i.subject.clone()),
        issuer: id.map(|i| i.issuer.clone()),
        serial: id.map(|i| i.serial_hex.clone()),
        fingerprint_sha256: id.map(|i| i.fingerprint_hex()),
    }
}

/// A reason code's one-line explanation, the text `verify` prints (viewer codes too).
pub(crate) fn explain(code: &str) -> &'static str {
    if code == "viewer_chain_too_long" {
        return crate::viewer::ViewerReason::ChainTooLong.explain();
    }
    let plain = code.strip_prefix("viewer_");
    Reason::ALL
        .iter()
        .find(|r| r.as_str() == plain.unwrap_or(code))
        .map_or("see the log line's detail", |r| match plain {
            Some(_) => crate::viewer::ViewerReason::Chain(*r).explain(),
            None => r.explain(),
        })
}

/// What needs attention: not ready; a certificate (server, anchor, client seen and still
/// accepted) within [`SOON_DAYS`] of its notAfter or past it; a CRL near its nextUpdate; a
/// CRL URL whose last attempt failed.
fn attention(r: &TrustReport, urls: &[UrlStatus]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = &r.not_ready_reason {
        out.push(format!("not ready: {why}"));
    }
    let soon = |what: &str, c: &CertReport, out: &mut Vec<String>| {
        if c.days_left < SOON_DAYS {
            out.push(format!(
                "{what} {} expires {} ({} days)",
                c.subject, c.not_after, c.days_left
            ));
        }
    };
    for c in &r.server_certificates {
        soon("server certificate", c, &mut out);
    }
    for d in &r.trust_domains {
        for a in &d.anchors {
            soon(&format!("{} anchor", d.name), a, &mut out);
        }
    }
    for c in r
        .clients
        .iter()
        .filter(|c| c.accepted_now && c.days_left < SOON_DAYS)
    {
        out.push(format!(
            "{} certificate {} expires {} ({} days)",
            c.domain, c.subject, c.not_after, c.days_left
        ));
    }
    let crls = r
        .trust_domains
        .iter()
        .flat_map(|d| d.crls.iter())
        .filter(|c| c.in_use);
    for c in crls {
        if c.next_update_in.is_some_and(|secs| secs < CRL_SOON_SECS) {
            out.push(format!(
                "CRL of {} ({}) reaches its nextUpdate {}",
                c.issuer,
                c.source,
                c.next_update.as_deref().unwrap_or("-")
            ));
        }
    }
    for u in urls {
        if u.result
            .as_deref()
            .is_some_and(|r| r.starts_with("failure"))
        {
            out.push(format!(
                "CRL URL {} is failing: {}",
                u.url,
                u.result.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}
