//! Where accepted requests go: the parsed `url` of an `[upstream]` table and its TLS settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Uri};

/// A parsed upstream `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// `http://host[:port]`
    Http {
        /// `host:port`
        authority: Authority,
    },
    /// `https://host[:port]`: TLS to the upstream, trusting the table's `ca`.
    Https {
        /// `host:port`
        authority: Authority,
    },
    /// `unix:/absolute/path.sock`
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

/// Why an upstream `url` was refused; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    /// `unix:` with a relative path.
    #[error("{0:?}: the socket path must be absolute, e.g. \"unix:/run/app.sock\"")]
    RelativeSocket(String),
    /// Not a URL at all.
    #[error("{url:?} is not a URL ({reason}); expected {URL_FORMS}")]
    NotUrl {
        /// The value given.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// A scheme other than http, https or unix.
    #[error("scheme {0:?} is not supported; use {URL_FORMS}")]
    Scheme(String),
    /// No scheme.
    #[error("{0:?} has no scheme; expected {URL_FORMS}")]
    NoScheme(String),
    /// No host.
    #[error("{0:?} has no host; expected {URL_FORMS}")]
    NoHost(String),
    /// `user:password@` in the URL.
    #[error("{0:?} has user info; credentials do not belong in upstream.url")]
    UserInfo(String),
    /// A path or query after the authority.
    #[error("{0:?} has a path; the request path is forwarded as-is, so give only \"scheme://host:port\"")]
    Path(String),
}

const URL_FORMS: &str = "\"http://host:port\", \"https://host:port\" or \"unix:/path/to.sock\"";

impl UpstreamTarget {
    /// Parses `http://host[:port]`, `https://host[:port]` or `unix:/absolute/path`.
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        if let Some(path) = url.strip_prefix("unix:") {
            // `unix:///run/app.sock` is accepted as well as `unix:/run/app.sock`.
            let path = Path::new(path.strip_prefix("//").unwrap_or(path));
            if !path.is_absolute() {
                return Err(UpstreamUrlError::RelativeSocket(url.to_owned()));
            }
            return Ok(Self::Unix {
                path: path.to_owned(),
            });
        }
        let uri: Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| UpstreamUrlError::NotUrl {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(UpstreamUrlError::Scheme(other.to_owned())),
            None => return Err(UpstreamUrlError::NoScheme(url.to_owned())),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamUrlError::NoHost(url.to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(UpstreamUrlError::UserInfo(url.to_owned()));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(UpstreamUrlError::Path(url.to_owned()));
        }
        Ok(if https {
            Self::Https { authority }
        } else {
            Self::Http { authority }
        })
    }

    /// True for `https://`.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Https { .. })
    }

    /// The host of an `http(s)://` target, without IPv6 brackets; `None` for a unix socket.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Http { authority } | Self::Https { authority } => Some(
                authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']'),
            ),
            Self::Unix { .. } => None,
        }
    }
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { authority } => write!(f, "http://{authority}"),
            Self::Https { authority } => write!(f, "https://{authority}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One upstream: an `[upstream]` table, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Where to connect.
    pub url: UpstreamTarget,
    /// Connecting to the upstream takes at most this long (502 after).
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response headers (504 after).
    pub response_timeout: Duration,
    /// Idle upstream connections are kept this long for reuse.
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per host.
    pub pool_max_idle: usize,
    /// TLS to the upstream: present exactly when `url` is `https://`.
    pub tls: Option<UpstreamTls>,
}

/// The TLS settings of an `https://` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM bundle of the CAs trusted for the upstream's server certificate (no system roots).
    pub ca: PathBuf,
    /// The certificate presented to the upstream (re-originated mTLS), if any.
    pub client: Option<UpstreamClientCert>,
    /// The name sent as SNI and verified in the upstream's certificate (default: the host of
    /// `url`); known to be a valid DNS name or IP address.
    pub server_name: String,
}

/// `client_certificate` and `client_key`, which are always set together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamClientCert {
    /// PEM chain presented to the upstream.
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl UpstreamConfig {
    /// Every file this upstream reads, for change detection.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let mut files = vec![tls.ca.clone()];
        if let Some(c) = &tls.client {
            files.push(c.certificate.clone());
            files.push(c.key.clone());
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = UpstreamTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8080");
        assert!(UpstreamTarget::parse("http://h:1/api").is_err());
        assert!(UpstreamTarget::parse("ftp://h:1").is_err());
        assert!(UpstreamTarget::parse("http://user:pw@h:1").is_err());
        assert!(UpstreamTarget::parse("https://app:8443").unwrap().is_tls());
        assert_eq!(
            UpstreamTarget::parse("unix:/run/app.sock").unwrap(),
            UpstreamTarget::Unix {
                path: "/run/app.sock".into()
            }
        );
        assert_eq!(
            UpstreamTarget::parse("unix:///run/app.sock").unwrap(),
            UpstreamTarget::Unix {
                path: "/run/app.sock".into()
            }
        );
        assert!(UpstreamTarget::parse("unix:app.sock").is_err());
        assert_eq!(
            UpstreamTarget::parse("https://[::1]:8443").unwrap().host(),
            Some("::1")
        );
    }
}
