//! One HTTP GET of a CRL, bounded every way: one deadline for the whole exchange, a size
//! limit enforced while the body streams, at most a few redirects, and a conditional request
//! (`If-None-Match` / `If-Modified-Since`) so an unchanged CRL costs a 304.
//!
//! Security: a `Last-Modified` is used for `If-Modified-Since` only when it is a *strong*
//! validator, at least 60 seconds older than the response's `Date` (RFC 9110 §8.8.2.2). Many
//! servers (Python's `http.server` among them) date files to the second: a CA that rewrites
//! its CRL within the second it was fetched would otherwise get a 304 for ever after, and the
//! revocation would never arrive. With only a weak validator the CRL is fetched without a
//! condition, and the caller compares it with the CRL in force.
//!
//! It uses hyper's connection-level client directly (a CRL URL is fetched every few minutes
//! at most, so there is no pool to keep) over plain TCP or rustls. For `https://`, the system's
//! roots are trusted (read once by rustls-native-certs), or only `client_auth.crl_ca` when it
//! is set. A CRL is signed, so what TLS adds is privacy and freshness, not integrity: the
//! signature check decides whether a CRL is used.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::CrlFetchConfig;
use crate::tls::load::{self, LoadError};

/// Redirects followed at most: enough for an http -> https move and a CDN hop.
const MAX_REDIRECTS: usize = 3;

/// The validators of the last CRL served, for a conditional request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Validators {
    /// The `ETag` it came with.
    pub(crate) etag: Option<String>,
    /// The `Last-Modified` it came with.
    pub(crate) last_modified: Option<String>,
}

/// What a fetch brought.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// A (possibly) new CRL.
    Body {
        /// The bytes, DER or PEM.
        bytes: Vec<u8>,
        /// Its validators, for the next request.
        validators: Validators,
    },
    /// 304: the CRL did not change.
    NotModified,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The deadline passed.
    #[error("no complete answer within client_auth.crl_fetch_timeout ({0:?})")]
    Timeout(Duration),
    /// The URL (or a redirect's Location) is not fetchable.
    #[error("{0}")]
    Url(String),
    /// Connecting, TLS, or HTTP failed.
    #[error("{0}")]
    Transport(String),
    /// An answer other than 200, 304 or a redirect.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// The CRL is larger than client_auth.crl_max_bytes.
    #[error("the CRL is larger than client_auth.crl_max_bytes ({0} bytes)")]
    TooLarge(u64),
    /// Redirected too often.
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
}

/// Fetches CRLs with one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_bytes: u64,
}

impl Fetcher {
    /// A fetcher for `cfg`: its timeout and size limit, and the roots for `https://` URLs
    /// (`crl_ca`, or the system's).
    pub(crate) fn new(cfg: &CrlFetchConfig) -> Result<Fetcher, LoadError> {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca {
            Some(ca) => {
                for cert in load::certificates(ca, "CRL CA bundle")? {
                    roots
                        .add(cert)
                        .map_err(|e| LoadError::new(ca, format!("unusable CA certificate: {e}")))?;
                }
            }
            // Nothing to fetch (yet): no need to read the system store. A reload that adds a
            // URL builds a new fetcher (`CrlFetch::prepare`).
            None if !cfg.is_active() => {}
            None => {
                // Only https URLs need them; a missing or partial system store is not an error
                // here (plain http CRLs, the common case, still work), it shows up as a TLS
                // failure of the URL that needed it.
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!(error = %e, "system root store");
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                tracing::debug!(roots = added, "system roots for https CRL URLs");
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| LoadError::new(std::path::Path::new("crl_ca"), e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher {
            tls: Arc::new(tls),
            timeout: cfg.timeout,
            max_bytes: cfg.max_bytes,
        })
    }

    /// GETs `url`, conditionally on `validators`.
    pub(crate) async fn get(
        &self,
        url: &str,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.timeout, self.follow(url, validators))
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }

    async fn follow(&self, url: &str, validators: &Validators) -> Result<Fetched, FetchError> {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| FetchError::Url(format!("{url:?} is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(&uri, validators).await?;
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Transport(format!("{status} without a Location")))?;
                uri = resolve(&uri, location)?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(FetchError::Status(status));
            }
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let validators = Validators {
                etag: header(header::ETAG),
                last_modified: header(header::LAST_MODIFIED)
                    .filter(|lm| strong_last_modified(lm, header(header::DATE).as_deref())),
            };
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_bytes) {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            let mut body = resp.into_body();
            // Sized from Content-Length (already bounded by max_bytes): a CRL of tens of
            // megabytes then takes one allocation instead of doubling its way there.
            let mut bytes = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchError::Transport(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    if (bytes.len() + data.len()) as u64 > self.max_bytes {
                        return Err(FetchError::TooLarge(self.max_bytes));
                    }
                    bytes.extend_from_slice(data);
                }
            }
            return Ok(Fetched::Body { bytes, validators });
        }
        Err(FetchError::Redirects)
    }

    async fn request(
        &self,
        uri: &Uri,
        validators: &Validators,
    ) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(FetchError::Url(format!(
                    "{uri}: only http and https are fetched"
                )))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| FetchError::Url(format!("{uri} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| FetchError::Transport(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::get(uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .header(
                header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(
                header::USER_AGENT,
                concat!("mtls-shield/", env!("CARGO_PKG_VERSION")),
            )
            .header(
                header::ACCEPT,
                "application/pkix-crl, application/x-pem-file, */*",
            );
        if let Some(etag) = &validators.etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &validators.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, date);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Url(e.to_string()))?;
        let transport = |e: hyper::Error| FetchError::Transport(e.to_string());
        if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| FetchError::Url(format!("{host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Transport(format!("TLS with {host}: {e}")))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(transport)?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(transport)
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(transport)?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(transport)
        }
    }
}

/// Whether `last_modified` can serve as a strong validator: the response has a `Date`, and
/// the `Last-Modified` is at least 60 seconds before it (RFC 9110 §8.8.2.2). Anything that
/// does not parse is weak.
fn strong_last_modified(last_modified: &str, date: Option<&str>) -> bool {
    let (Ok(modified), Some(Ok(date))) = (
        httpdate::parse_http_date(last_modified),
        date.map(httpdate::parse_http_date),
    ) else {
        return false;
    };
    date.duration_since(modified)
        .is_ok_and(|age| age >= Duration::from_secs(60))
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve(base: &Uri, location: &str) -> Result<Uri, FetchError> {
    let bad = |e: &dyn std::fmt::Display| FetchError::Url(format!("redirect to {location:?}: {e}"));
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().map_err(|e| bad(&e));
    }
    if !location.starts_with('/') {
        return Err(bad(
            &"only absolute or root-relative redirects are followed",
        ));
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse().map_err(|e| bad(&e))?);
    Uri::from_parts(parts).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_modified_is_strong_only_a_minute_before_the_date() {
        let date = "Mon, 07 Dec 2026 15:00:00 GMT";
        assert!(strong_last_modified(
            "Mon, 07 Dec 2026 14:59:00 GMT",
            Some(date)
        ));
        assert!(!strong_last_modified(
            "Mon, 07 Dec 2026 14:59:01 GMT",
            Some(date)
        ));
        assert!(!strong_last_modified(
            "Mon, 07 Dec 2026 15:00:00 GMT",
            Some(date)
        ));
        assert!(!strong_last_modified("Mon, 07 Dec 2026 14:00:00 GMT", None));
        assert!(!strong_last_modified("yesterday", Some(date)));
    }

    #[test]
    fn relative_redirects_keep_the_origin() {
        let base: Uri = "http://crl.example.com:8080/old/root.crl".parse().unwrap();
        assert_eq!(
            resolve(&base, "/new/root.crl").unwrap().to_string(),
            "http://crl.example.com:8080/new/root.crl"
        );
        assert_eq!(
            resolve(&base, "https://other.example.com/root.crl")
                .unwrap()
                .to_string(),
            "https://other.example.com/root.crl"
        );
        assert!(resolve(&base, "root.crl").is_err());
    }
}
