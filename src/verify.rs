//! `mtls-shield verify`: would this client certificate be accepted, now or at a given time?
//!
//! The answer comes from the live verifier itself: the config is built into a
//! [`TlsState`] exactly as `run` builds it, and the decision is
//! [`ShieldVerifier::check`](crate::tls::verifier::ShieldVerifier::check), the function every
//! handshake calls. So the reasons (`revoked`, `expired`, `not_allowed`, `unknown_ca`, …) are
//! the handshake's reasons, and a "yes" here is a "yes" on the wire.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::UnixTime;

use std::sync::Arc;

use crate::app::ocsp::Resolver;
use crate::config::{Config, OcspMode};
use crate::identity::ClientIdentity;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::tls::ocsp::{OcspCache, OcspQuery, OcspResolver};
use crate::tls::state::{BuildInputs, OcspSetup};
use crate::tls::{load, TlsState};
use crate::x509::rfc3339_z;

/// Exit code for a certificate that would be refused (0 is accepted, 1 is an error).
pub(crate) const REFUSED: u8 = 2;

/// Parses an RFC 3339 time (`2026-03-01T12:00:00Z`, offsets allowed) to Unix seconds.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--at {s:?}: expected an RFC 3339 time such as 2026-03-01T12:00:00Z")
        })?;
    Ok(t.unix_timestamp())
}

fn print_identity(id: &ClientIdentity) {
    println!("  subject: {}", id.subject);
    println!("  issuer: {}", id.issuer);
    println!("  serial: {}", id.serial_hex);
    println!("  sha256 fingerprint: {}", id.fingerprint_hex());
    let mut sans: Vec<String> = id.dns_names.iter().map(|d| format!("DNS:{d}")).collect();
    sans.extend(id.uris.iter().map(|u| format!("URI:{u}")));
    println!(
        "  SANs: {}",
        if sans.is_empty() {
            "none".to_owned()
        } else {
            sans.join(", ")
        }
    );
    println!(
        "  valid: {} to {}",
        rfc3339_z(id.not_before),
        rfc3339_z(id.not_after)
    );
}

/// `mtls-shield verify`: exit 0 accepted, [`REFUSED`] refused; errors are returned (exit 1).
pub(crate) fn run(
    config_path: &Path,
    cert: &Path,
    chain: Option<&Path>,
    at: Option<&str>,
    report_only: bool,
) -> anyhow::Result<ExitCode> {
    let when = match at {
        Some(s) => parse_time(s)?,
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let secs = u64::try_from(when)
        .map_err(|_| anyhow::anyhow!("--at: times before 1970 are not supported"))?;
    let config = Config::load(config_path)?;
    // Built exactly as `run` builds it: same truststore, CRL files, allow-list and policy, and
    // the CRLs of `client_auth.crl_urls` as a running instance would have them (its cache dir,
    // then one fetch of each URL).
    let (fetched, outcomes) = crate::app::crl::fetch_offline(&config)?;
    for (url, outcome) in &outcomes {
        match outcome {
            Ok(info) => println!(
                "CRL {url}: number {}, next update {}",
                info.number.as_deref().unwrap_or("-"),
                info.next_update.map_or_else(|| "-".to_owned(), rfc3339_z)
            ),
            Err(e) => println!("CRL {url}: {e} (the cached CRL, if any, is used)"),
        }
    }
    // OCSP as admission would ask it, once, with a cache of this run's own.
    let ocsp = &config.client_auth.ocsp;
    let resolver = (ocsp.mode != OcspMode::Off).then(|| {
        let cache = Arc::new(OcspCache::default());
        let r = Arc::new(Resolver::new(
            ocsp,
            cache.clone(),
            Arc::default(),
            Arc::new(Metrics::new()),
            Arc::default(),
        ));
        (cache, r)
    });
    let policy = Policy::compile(&config)?;
    let state = TlsState::build_with(
        &config,
        &policy,
        &BuildInputs {
            fetched,
            distribution_points: None,
            ocsp: resolver.as_ref().map(|(cache, r)| OcspSetup {
                cache: cache.clone(),
                resolver: r.clone(),
            }),
            viewer_ocsp: None,
        },
    )?;

    // A file may hold the leaf followed by its intermediates, as a client would send them.
    let mut presented = load::certificates(cert, "client certificate")?;
    if let Some(chain) = chain {
        presented.extend(load::certificates(chain, "certificate chain")?);
    }
    let (leaf, intermediates) = presented
        .split_first()
        .context("no certificate to verify")?;
    let now = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let outcome = state.verifier.check(leaf, intermediates, now);
    let ocsp_refusal = match (&outcome, &resolver) {
        (Ok(a), Some((_, r))) if !a.ocsp_pending.is_empty() => ask_ocsp(r, &a.ocsp_pending)?,
        _ => None,
    };
    let candidate = if report_only {
        Some(
            state
                .verifier
                .judge_candidate(leaf, intermediates, now)
                .context("--report-only: the config has no [client_auth.report_only]")?,
        )
    } else {
        None
    };

    println!("certificate: {}", cert.display());
    let identity = match &outcome {
        Ok(a) => Some(a.identity.clone()),
        Err(r) => r.identity.clone(),
    };
    match identity {
        Some(id) => print_identity(&id),
        None => println!("  (the certificate could not be parsed)"),
    }
    println!(
        "  chain: {} intermediate{} presented",
        intermediates.len(),
        if intermediates.len() == 1 { "" } else { "s" }
    );
    println!("checked at: {}", rfc3339_z(when));
    if let Some(candidate) = &candidate {
        // The candidate's verdict first: the exit status and the `result:` line stay the
        // enforced policy's, as in the handshake.
        match candidate {
            Ok(()) => println!("report-only: accepted"),
            Err((reason, detail)) => {
                println!("report-only: refused: {reason}");
                println!("  detail: {detail}");
            }
        }
    }
    let refused = match outcome {
        Ok(_) => ocsp_refusal,
        Err(r) => Some((r.reason, r.detail)),
    };
    match refused {
        None => {
            println!("result: accepted");
            Ok(ExitCode::SUCCESS)
        }
        Some((reason, detail)) => {
            println!("result: refused: {reason}");
            println!("  reason: {}", reason.explain());
            println!("  detail: {detail}");
            Ok(ExitCode::from(REFUSED))
        }
    }
}

/// What `verify --viewer` judges: a certificate file (and its chain), or the headers an edge
/// would send.
pub(crate) struct ViewerInput<'a> {
    /// The viewer's certificate (PEM); certificates after the first are its chain.
    pub(crate) cert: Option<&'a Path>,
    /// More of its chain (PEM).
    pub(crate) chain: Option<&'a Path>,
    /// `Name: value` headers, instead of the files.
    pub(crate) headers: &'a [String],
    /// The request path, for its route's viewer rules.
    pub(crate) path: Option<&'a str>,
}

/// `mtls-shield verify --viewer`: the verdict a request from an edge would get, from
/// [`ViewerTrust::judge_request`](crate::viewer::ViewerTrust::judge_request), the function
/// the request path calls. A certificate file is sent as RFC 9440 headers, so it goes through
/// the same decoding as the headers themselves.
pub(crate) fn run_viewer(
    config_path: &Path,
    input: ViewerInput<'_>,
    at: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let when = match at {
        Some(s) => parse_time(s)?,
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let config = Config::load(config_path)?;
    let viewer = config
        .viewer
        .as_ref()
        .context("--viewer: the config has no [viewer] table")?;
    let policy = Policy::compile(&config)?;
    let viewer_policy = policy
        .viewer
        .as_ref()
        .context("--viewer: the config has no [viewer] table")?;
    let (fetched, _) = crate::app::crl::fetch_offline(&config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    // OCSP as the request path would ask it, once, with a cache of this run's own.
    let setup = (viewer.ocsp.mode != OcspMode::Off).then(|| {
        let cache = Arc::new(OcspCache::default());
        OcspSetup {
            cache: cache.clone(),
            resolver: Arc::new(Resolver::new(
                &viewer.ocsp,
                cache,
                Arc::default(),
                Arc::new(Metrics::new()),
                Arc::default(),
            )),
        }
    });
    let trust = crate::viewer::ViewerTrust::build(
        viewer,
        viewer_policy.allow.clone(),
        &config.forward,
        &fetched,
        setup.as_ref(),
    )?;
    let headers = viewer_headers(&input)?;
    let presented = trust.read(&headers);
    let route = match input.path {
        Some(path) => match policy.routes.lookup(None, &http::Method::GET, path) {
            crate::policy::Lookup::Route(r) => Some(r),
            _ => None,
        },
        None => None,
    };
    let verdict = rt.block_on(trust.judge_request(viewer_policy, route, &presented, when, || {}));
    println!("checked at: {}", rfc3339_z(when));
    if let Some(r) = route {
        println!("route: {}", r.label());
    }
    match verdict {
        Ok(Some(v)) => {
            print_identity(v.identity());
            println!("result: accepted");
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            println!("result: accepted without a viewer (the route does not require one)");
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            if let Some(id) = &refusal.identity {
                print_identity(id);
            }
            println!("result: refused: {}", refusal.reason);
            println!("  reason: {}", refusal.reason.explain());
            println!("  detail: {}", refusal.detail);
            Ok(ExitCode::from(REFUSED))
        }
    }
}

/// The headers of `input`: as given, or the files as RFC 9440 `Client-Cert` and
/// `Client-Cert-Chain`.
fn viewer_headers(input: &ViewerInput<'_>) -> anyhow::Result<http::HeaderMap> {
    use base64::Engine as _;
    let mut map = http::HeaderMap::new();
    for h in input.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected `Name: value`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("--header {h:?}: not a header name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .with_context(|| format!("--header {h:?}: not a header value"))?;
        map.append(name, value);
    }
    let Some(cert) = input.cert else {
        return Ok(map);
    };
    let mut certs = load::certificates(cert, "viewer certificate")?;
    if let Some(chain) = input.chain {
        certs.extend(load::certificates(chain, "certificate chain")?);
    }
    let sf = |der: &[u8]| {
        format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    };
    let mut certs = certs.iter();
    if let Some(leaf) = certs.next() {
        map.insert(
            crate::viewer::headers::CLIENT_CERT,
            http::HeaderValue::from_str(&sf(leaf))?,
        );
    }
    let chain: Vec<String> = certs.map(|c| sf(c)).collect();
    if !chain.is_empty() {
        map.insert(
            crate::viewer::headers::CLIENT_CERT_CHAIN,
            http::HeaderValue::from_str(&chain.join(", "))?,
        );
    }
    Ok(map)
}

/// Asks the OCSP responders the handshake's admission stage would ask, prints each answer,
/// and returns the refusal admission would make, if any.
fn ask_ocsp(
    resolver: &Resolver,
    queries: &[OcspQuery],
) -> anyhow::Result<Option<(crate::tls::Reason, String)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for OCSP")?;
    for q in queries {
        match rt.block_on(resolver.ask(q)) {
            Ok(a) => println!(
                "OCSP {} for {}: {:?}, next update {}",
                q.url,
                q.subject,
                a.status,
                a.next_update.map_or_else(|| "-".to_owned(), rfc3339_z)
            ),
            Err(e) => println!("OCSP {} for {}: no usable answer: {e}", q.url, q.subject),
        }
    }
    Ok(rt.block_on(resolver.resolve(queries)).err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_utc_and_offsets_and_names_the_format_on_error() {
        assert_eq!(parse_time("2026-03-01T12:00:00Z").unwrap(), 1_772_366_400);
        assert_eq!(
            parse_time("2026-03-01T14:00:00+02:00").unwrap(),
            1_772_366_400
        );
        let e = parse_time("2026-03-01").unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
