//! Every key of the config file, in one table ([`KEYS`]): its default, what it means, and what
//! a reload does with it. `Live` keys take effect on the next reload (SIGHUP, the file watcher,
//! or a fetched CRL's rebuild); `Restart` keys keep their running value and the reload warns
//! that they changed.
//!
//! The table is the one source of:
//! - the defaults: each default value is a constant of [`super::defaults`], which the serde
//!   attributes and this table both use, and a test (`tests/it/config_defaults.rs`) sets
//!   every key to the default written here and checks that the config is the same as
//!   without it;
//! - the restart warning ([`restart_only`]);
//! - the generated reference, `docs/configuration.md` ([`reference_markdown`]).
//!
//! A test walks the whole schema through the real deserializer and fails on a key that is not
//! here, or on an entry the schema no longer has, so a new key cannot be added without its
//! default, meaning and reload decision.

use std::fmt::Write as _;
use std::time::Duration;

use super::defaults;

/// What a reload does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// The new value is in force from the reload on.
    Live,
    /// The running value stays until a restart; the reload names the key in its warning.
    Restart,
}

/// A key's value when the config leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// The key must be set (when its table is present).
    Required,
    /// No value: the key's meaning says what its absence does.
    Unset,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(u64),
    /// A duration, written as a humantime string (`"10s"`).
    Duration(Duration),
    /// A string (an enum's value or a path).
    Text(&'static str),
    /// A list of strings.
    List(&'static [&'static str]),
}

impl DefaultValue {
    /// The value as TOML would write it (`"10s"`, `true`, `["xfcc"]`); `None` when there is
    /// none.
    pub fn toml(&self) -> Option<String> {
        let quoted = |s: &str| format!("{:?}", s);
        Some(match *self {
            DefaultValue::Required | DefaultValue::Unset => return None,
            DefaultValue::Bool(b) => b.to_string(),
            DefaultValue::Int(n) => n.to_string(),
            DefaultValue::Duration(d) => quoted(&duration_text(d)),
            DefaultValue::Text(t) => quoted(t),
            DefaultValue::List(l) => {
                format!(
                    "[{}]",
                    l.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ")
                )
            }
        })
    }
}

/// A duration as an operator would write it: `"1h"`, `"5m"`, `"90s"`, `"500ms"`.
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        humantime::format_duration(d).to_string()
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 300 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// One key of the config file.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted, with `<name>` for a user-chosen table name and `[]` for an array of tables.
    pub name: &'static str,
    /// Its value when left out.
    pub default: DefaultValue,
    /// What a reload does with it.
    pub reload: OnReload,
    /// What it means, for the reference.
    pub meaning: &'static str,
}

// The `as u64` casts below widen a `usize` (at most 64 bits on every target Rust supports
// here) or are the identity: none can truncate.
/// Every key, table by table in the order of the reference.
pub const KEYS: &[Key] = &[
    Key {
        name: "listener.address",
        default: DefaultValue::Required,
        reload: OnReload::Restart,
        meaning: "The socket address the mTLS listener binds, e.g. `0.0.0.0:8443`.",
    },
    Key {
        name: "listener.certificate",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "The server certificate chain, PEM, leaf first. Behind CloudFront it must be publicly trusted.",
    },
    Key {
        name: "listener.private_key",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "The server's private key: PKCS#8, PKCS#1 or SEC1 PEM.",
    },
    Key {
        name: "listener.session_resumption",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Allow TLS session resumption (tickets and a session cache). A session never survives a reload, and a resumed session is checked again against the current time and allow-list.",
    },
    Key {
        name: "listener.handshake_timeout",
        default: DefaultValue::Duration(defaults::HANDSHAKE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A peer that has not finished the TLS handshake by then is dropped (`handshake_timeout`).",
    },
    Key {
        name: "listener.header_read_timeout",
        default: DefaultValue::Duration(defaults::HEADER_READ_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A request header block must arrive whole within this time after its first byte (slowloris).",
    },
    Key {
        name: "listener.idle_timeout",
        default: DefaultValue::Duration(defaults::IDLE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A keep-alive connection with no request for this long is closed. Keep it longer than the keep-alive of whatever is in front (CloudFront: 5 s by default, up to 60 s).",
    },
    Key {
        name: "listener.shutdown_timeout",
        default: DefaultValue::Duration(defaults::SHUTDOWN_TIMEOUT),
        reload: OnReload::Live,
        meaning: "On SIGTERM/SIGINT, and for a connection a trust change refuses, in-flight requests get this long to finish.",
    },
    Key {
        name: "listener.max_connections",
        default: DefaultValue::Int(defaults::MAX_CONNECTIONS as u64),
        reload: OnReload::Restart,
        meaning: "Connections served at once; more wait in the kernel backlog. The open-file limit is raised to fit at start-up.",
    },
    Key {
        name: "listener.max_header_bytes",
        default: DefaultValue::Int(defaults::MAX_HEADER_BYTES as u64),
        reload: OnReload::Live,
        meaning: "The largest request header block, in bytes (HTTP/1.1 buffer and h2 header list); larger gets 431.",
    },
    Key {
        name: "listener.max_concurrent_streams",
        default: DefaultValue::Int(defaults::MAX_CONCURRENT_STREAMS as u64),
        reload: OnReload::Live,
        meaning: "h2 streams in flight per connection.",
    },
    Key {
        name: "listener.max_request_body_bytes",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The largest request body, in bytes; past it 413, enforced while the body streams. Absent: no limit.",
    },
    Key {
        name: "listener.proxy_protocol",
        default: DefaultValue::Text("off"),
        reload: OnReload::Live,
        meaning: "A PROXY protocol header from a load balancer in front: `off`, `v1`, `v2` or `optional`. Its source address replaces the TCP peer. Enable it only where the port is reachable solely through that balancer.",
    },
    Key {
        name: "listener.require_sni_host_match",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Answer 421 to a request whose Host (or `:authority`) is not the SNI name of its connection. Off because CloudFront sends the origin domain as SNI but may forward the viewer's Host.",
    },
    Key {
        name: "listener.allow_sources",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Networks (CIDR) that may connect; a connection from anywhere else is closed before a byte is read. Absent (with `allow_sources_file`): every source. An empty list without a file is refused.",
    },
    Key {
        name: "listener.allow_sources_file",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A file of more networks: AWS's `ip-ranges.json` (its CLOUDFRONT_ORIGIN_FACING prefixes) or one CIDR a line; reloaded like every file. A file with no network is refused.",
    },
    Key {
        name: "client_auth.truststore",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "PEM bundle of the CAs that issue client certificates; every certificate in it is a trust anchor. Never a public web PKI bundle.",
    },
    Key {
        name: "client_auth.crls",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "CRL files, PEM or DER. Each must be signed by its issuer in the truststore. Of several CRLs of one issuer and scope the newest is used; partitions are all in force.",
    },
    Key {
        name: "client_auth.require_crl",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Refuse a client no CRL in force covers (`revocation_unknown`). Off, so adding one CA's CRL never breaks the clients of another CA.",
    },
    Key {
        name: "client_auth.verified_chain_cache",
        default: DefaultValue::Int(defaults::VERIFIED_CHAIN_CACHE as u64),
        reload: OnReload::Live,
        meaning: "Accepted chains remembered per trust state, so a returning client skips the signature checks (never the key-possession proof, expiry or CRL dates); 0 turns it off.",
    },
    Key {
        name: "client_auth.allow.common_names",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Subject commonName values; a certificate whose CN is one of them matches. Every list empty: any certificate that verifies may connect.",
    },
    Key {
        name: "client_auth.allow.organizational_units",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Subject organizationalUnitName values.",
    },
    Key {
        name: "client_auth.allow.dns_names",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "SAN dNSName values, compared case-insensitively.",
    },
    Key {
        name: "client_auth.allow.uris",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "SAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`).",
    },
    Key {
        name: "client_auth.allow.fingerprints_sha256",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "SHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal.",
    },
    Key {
        name: "client_auth.allow.spki_sha256",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "SHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key.",
    },
    Key {
        name: "client_auth.crl_urls",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "`http://` or `https://` URLs of CRLs the shield fetches in the background; used only when signed by a truststore CA, not from the future and not older than the one in force. `/readyz` waits for each URL's first usable CRL.",
    },
    Key {
        name: "client_auth.crl_refresh",
        default: DefaultValue::Duration(defaults::CRL_REFRESH),
        reload: OnReload::Live,
        meaning: "At most this long between two fetches of one URL (sooner near the CRL's nextUpdate).",
    },
    Key {
        name: "client_auth.crl_fetch_timeout",
        default: DefaultValue::Duration(defaults::CRL_FETCH_TIMEOUT),
        reload: OnReload::Live,
        meaning: "One CRL fetch (connect, up to 3 redirects, the whole body) takes at most this long.",
    },
    Key {
        name: "client_auth.crl_max_bytes",
        default: DefaultValue::Int(defaults::CRL_MAX_BYTES),
        reload: OnReload::Live,
        meaning: "A fetched CRL larger than this is refused.",
    },
    Key {
        name: "client_auth.crl_cache_dir",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The last good CRL of each URL is kept here, so a restart can use it while the URL is down.",
    },
    Key {
        name: "client_auth.crl_ca",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "PEM bundle trusted for `https://` CRL URLs instead of the system roots.",
    },
    Key {
        name: "client_auth.crl_from_distribution_points",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Also fetch the http(s) CRL distribution points of chains that verified (at most 32 URLs).",
    },
    Key {
        name: "client_auth.advertise_ca_names",
        default: DefaultValue::Bool(defaults::ADVERTISE_CA_NAMES),
        reload: OnReload::Live,
        meaning: "Send the truststore's CA names in the CertificateRequest, so clients holding several certificates pick the right one; false sends none.",
    },
    Key {
        name: "client_auth.ocsp",
        default: DefaultValue::Text("off"),
        reload: OnReload::Live,
        meaning: "OCSP for client certificates: `off`, `if_no_crl` (certificates no CRL covers) or `always`. Asked after the handshake, before the first request is read.",
    },
    Key {
        name: "client_auth.ocsp_responder",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "An `http://` OCSP responder to ask instead of each certificate's AIA OCSP URL.",
    },
    Key {
        name: "client_auth.ocsp_timeout",
        default: DefaultValue::Duration(defaults::OCSP_TIMEOUT),
        reload: OnReload::Live,
        meaning: "One OCSP lookup (connect, request, answer) takes at most this long.",
    },
    Key {
        name: "client_auth.ocsp_soft_fail",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "No usable OCSP answer in time: accept the client and count it. Never the default: fail closed.",
    },
    Key {
        name: "client_auth.ocsp_refresh",
        default: DefaultValue::Duration(defaults::OCSP_REFRESH),
        reload: OnReload::Live,
        meaning: "An OCSP answer in use is asked for again after at most this long (sooner halfway to its nextUpdate), so a revocation reaches open connections.",
    },
    Key {
        name: "client_auth.report_only.truststore",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate policy's truststore, judged beside the enforced one and never enforced; absent: the enforced one.",
    },
    Key {
        name: "client_auth.report_only.crls",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's CRL files; absent: the enforced ones (fetched CRLs apply to both).",
    },
    Key {
        name: "client_auth.report_only.allow.common_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: subject commonName values; a certificate whose CN is one of them matches. The table absent: the enforced allow-list.",
    },
    Key {
        name: "client_auth.report_only.allow.organizational_units",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: subject organizationalUnitName values. The table absent: the enforced allow-list.",
    },
    Key {
        name: "client_auth.report_only.allow.dns_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: sAN dNSName values, compared case-insensitively. The table absent: the enforced allow-list.",
    },
    Key {
        name: "client_auth.report_only.allow.uris",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: sAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`). The table absent: the enforced allow-list.",
    },
    Key {
        name: "client_auth.report_only.allow.fingerprints_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: sHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal. The table absent: the enforced allow-list.",
    },
    Key {
        name: "client_auth.report_only.allow.spki_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The candidate's allow-list: sHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key. The table absent: the enforced allow-list.",
    },
    Key {
        name: "upstream.url",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "The app: `http://host:port`, `https://host:port` or `unix:/path.sock`. Only scheme, host and port: the request path is forwarded unchanged.",
    },
    Key {
        name: "upstream.connect_timeout",
        default: DefaultValue::Duration(defaults::CONNECT_TIMEOUT),
        reload: OnReload::Live,
        meaning: "Connecting to the upstream takes at most this long; past it the client gets 502.",
    },
    Key {
        name: "upstream.response_timeout",
        default: DefaultValue::Duration(defaults::RESPONSE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "Time to the upstream's response headers; past it the client gets 504. A body already streaming is not timed.",
    },
    Key {
        name: "upstream.pool_idle_timeout",
        default: DefaultValue::Duration(defaults::POOL_IDLE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "Idle upstream connections are kept for reuse this long.",
    },
    Key {
        name: "upstream.pool_max_idle",
        default: DefaultValue::Int(defaults::POOL_MAX_IDLE as u64),
        reload: OnReload::Live,
        meaning: "Idle upstream connections kept per upstream; 0 turns reuse off (a new connection per request).",
    },
    Key {
        name: "upstream.ca",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "`https://` upstreams: the PEM bundle trusted for the upstream's certificate (required for them; no system roots are used).",
    },
    Key {
        name: "upstream.client_certificate",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "`https://` upstreams: a PEM certificate to present to the upstream (re-originated mTLS); set with `client_key`.",
    },
    Key {
        name: "upstream.client_key",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The private key of `client_certificate`.",
    },
    Key {
        name: "upstream.server_name",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "`https://` upstreams: the name sent as SNI and verified; absent: the host of `url`.",
    },
    Key {
        name: "upstreams.<name>.url",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.url`.",
    },
    Key {
        name: "upstreams.<name>.connect_timeout",
        default: DefaultValue::Duration(defaults::CONNECT_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.connect_timeout`.",
    },
    Key {
        name: "upstreams.<name>.response_timeout",
        default: DefaultValue::Duration(defaults::RESPONSE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.response_timeout`.",
    },
    Key {
        name: "upstreams.<name>.pool_idle_timeout",
        default: DefaultValue::Duration(defaults::POOL_IDLE_TIMEOUT),
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.pool_idle_timeout`.",
    },
    Key {
        name: "upstreams.<name>.pool_max_idle",
        default: DefaultValue::Int(defaults::POOL_MAX_IDLE as u64),
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.pool_max_idle`.",
    },
    Key {
        name: "upstreams.<name>.ca",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.ca`.",
    },
    Key {
        name: "upstreams.<name>.client_certificate",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.client_certificate`.",
    },
    Key {
        name: "upstreams.<name>.client_key",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.client_key`.",
    },
    Key {
        name: "upstreams.<name>.server_name",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A named upstream, for routes; the same as `upstream.server_name`.",
    },
    Key {
        name: "routes[].name",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The route's label in metrics and logs; absent: its index in the `[[routes]]` list.",
    },
    Key {
        name: "routes[].path_prefix",
        default: DefaultValue::Text("/"),
        reload: OnReload::Live,
        meaning: "The path the route covers, by whole segments, matched in normal form (case, `%XX` of unreserved characters, dot segments and `;params` do not matter).",
    },
    Key {
        name: "routes[].host",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "`origin.example.com` (exact) or `*.example.com` (any name under it, not the apex); case and port ignored. Absent: any host, and none.",
    },
    Key {
        name: "routes[].methods",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The HTTP methods the route covers; absent: every method.",
    },
    Key {
        name: "routes[].upstream",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "The `[upstreams.NAME]` the route's requests go to; absent: `[upstream]`.",
    },
    Key {
        name: "routes[].viewer",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "`required`, `optional` or `ignored`: whether the route needs a verified viewer (`[viewer]`). `optional` still refuses a viewer certificate that fails; `ignored` removes the headers unjudged. Absent: `viewer.required`.",
    },
    Key {
        name: "routes[].allow.common_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: subject commonName values; a certificate whose CN is one of them matches. The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].allow.organizational_units",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: subject organizationalUnitName values. The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].allow.dns_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: sAN dNSName values, compared case-insensitively. The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].allow.uris",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: sAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`). The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].allow.fingerprints_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: sHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal. The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].allow.spki_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Who may use the route, on top of the connection's policy: sHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key. The table absent: every client that connected; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.common_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: subject commonName values; a certificate whose CN is one of them matches. The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.organizational_units",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: subject organizationalUnitName values. The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.dns_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: SAN dNSName values, compared case-insensitively. The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.uris",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: SAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`). The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.fingerprints_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: SHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal. The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "routes[].viewer_allow.spki_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which viewers may use the route, on top of `[viewer.allow]`: SHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key. The table absent: every viewer that verified; an empty table is refused.",
    },
    Key {
        name: "viewer.headers",
        default: DefaultValue::Text("cloudfront"),
        reload: OnReload::Live,
        meaning: "Where the viewer's certificate arrives: `cloudfront` (`Client-Cert`/`Client-Cert-Chain` in passthrough mode, or `CloudFront-Viewer-Cert-Pem` with `-Present` and `-Sha256`) or `rfc9440` (`Client-Cert`/`Client-Cert-Chain` only). The raw headers are never forwarded.",
    },
    Key {
        name: "viewer.truststore",
        default: DefaultValue::Required,
        reload: OnReload::Live,
        meaning: "The CAs that issue viewer certificates, PEM; separate from `client_auth.truststore`. Each request's viewer chain is verified against it: chain, expiry at the request's time, clientAuth EKU, keyUsage, revocation.",
    },
    Key {
        name: "viewer.intermediates",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Untrusted intermediate CA certificates, PEM, offered to path building for headers that carry the leaf only (`CloudFront-Viewer-Cert-Pem`).",
    },
    Key {
        name: "viewer.crls",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "CRL files of the viewer CAs, PEM or DER; signed by a CA of `viewer.truststore` or `viewer.intermediates`, with `client_auth.crls`' rules (one per issuer and partition, the newest number, refused past nextUpdate).",
    },
    Key {
        name: "viewer.crl_urls",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "CRL URLs of the viewer CAs, fetched by the one fetcher with `client_auth`'s `crl_refresh`, `crl_fetch_timeout`, `crl_max_bytes`, `crl_cache_dir` and `crl_ca`; `/readyz` waits for each.",
    },
    Key {
        name: "viewer.require_crl",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Refuse a viewer whose issuer has no CRL in force (`viewer_revocation_unknown`).",
    },
    Key {
        name: "viewer.ocsp",
        default: DefaultValue::Text("off"),
        reload: OnReload::Live,
        meaning: "OCSP for viewer certificates: `off`, `if_no_crl` or `always`, asked before the request goes upstream; timeout and refresh are `client_auth`'s.",
    },
    Key {
        name: "viewer.ocsp_responder",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "An `http://` OCSP responder to ask instead of each viewer certificate's AIA OCSP URL.",
    },
    Key {
        name: "viewer.ocsp_soft_fail",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "No usable OCSP answer in time: let the viewer pass and count it. Never the default: fail closed.",
    },
    Key {
        name: "viewer.verified_chain_cache",
        default: DefaultValue::Int(defaults::VERIFIED_CHAIN_CACHE as u64),
        reload: OnReload::Live,
        meaning: "Viewer chains remembered per trust state once verified, keyed by the digest of the headers as received, so a returning viewer costs a hash and a lookup (expiry and CRL dates still bound each entry); 0 turns it off.",
    },
    Key {
        name: "viewer.required",
        default: DefaultValue::Bool(defaults::VIEWER_REQUIRED),
        reload: OnReload::Live,
        meaning: "A request without a viewer certificate gets 403 (`viewer_no_certificate`); false lets it pass with the edge's identity only. A route's `viewer` overrides it.",
    },
    Key {
        name: "viewer.edges.common_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): subject commonName values; a certificate whose CN is one of them matches. Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.edges.organizational_units",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): subject organizationalUnitName values. Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.edges.dns_names",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): SAN dNSName values, compared case-insensitively. Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.edges.uris",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): SAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`). Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.edges.fingerprints_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): SHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal. Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.edges.spki_sha256",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "Which connections may carry viewer certificates (required, not empty): SHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key. Viewer headers on any other connection are removed unjudged and counted.",
    },
    Key {
        name: "viewer.allow.common_names",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: subject commonName values; a certificate whose CN is one of them matches. The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "viewer.allow.organizational_units",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: subject organizationalUnitName values. The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "viewer.allow.dns_names",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: SAN dNSName values, compared case-insensitively. The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "viewer.allow.uris",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: SAN URI values; an entry ending in `/*` matches every URI under that path prefix (`spiffe://example.org/*`). The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "viewer.allow.fingerprints_sha256",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: SHA-256 of the leaf certificate (DER), hex; colons and case are ignored. Changes with every renewal. The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "viewer.allow.spki_sha256",
        default: DefaultValue::List(&[]),
        reload: OnReload::Live,
        meaning: "Which viewers may pass: SHA-256 of the leaf's SubjectPublicKeyInfo, base64 or hex. Survives a renewal that keeps the key. The table absent or empty: any viewer whose chain verifies.",
    },
    Key {
        name: "forward.client_cert_headers",
        default: DefaultValue::List(&["xfcc"]),
        reload: OnReload::Live,
        meaning: "Identity headers sent upstream: any of `xfcc` (Envoy), `alb` (AWS ALB `X-Amzn-Mtls-Clientcert-*`), `rfc9440` (`Client-Cert`). Inbound copies of all three are always removed.",
    },
    Key {
        name: "forward.xfcc_include_cert",
        default: DefaultValue::Bool(false),
        reload: OnReload::Live,
        meaning: "Add `Cert=` (and `Chain=`) with the URL-encoded PEM to XFCC.",
    },
    Key {
        name: "admin.address",
        default: DefaultValue::Required,
        reload: OnReload::Restart,
        meaning: "The plain-HTTP admin listener (`/healthz`, `/readyz`, `/metrics`, `/trust` and the trust page `/`). Keep it on loopback or a private port; remove `[admin]` to disable it.",
    },
    Key {
        name: "admin.inventory_max",
        default: DefaultValue::Int(defaults::INVENTORY_MAX as u64),
        reload: OnReload::Restart,
        meaning: "Distinct client and viewer certificates kept in the inventory of `/trust` (the oldest goes first when full); 0 turns it off.",
    },
    Key {
        name: "admin.bearer_token_file",
        default: DefaultValue::Unset,
        reload: OnReload::Live,
        meaning: "A file holding a token (one line); when set, `/trust`, `/` and `/metrics` require `Authorization: Bearer <token>`, while `/healthz` and `/readyz` stay open for probes. Re-read on reload.",
    },
    Key {
        name: "log.level",
        default: DefaultValue::Text(defaults::LOG_LEVEL),
        reload: OnReload::Restart,
        meaning: "A tracing filter such as `info` or `mtls_shield=debug`; `RUST_LOG` overrides it.",
    },
    Key {
        name: "log.format",
        default: DefaultValue::Text("text"),
        reload: OnReload::Restart,
        meaning: "`text` (key=value) or `json` (one object per line).",
    },
    Key {
        name: "log.access_log",
        default: DefaultValue::Bool(defaults::ACCESS_LOG),
        reload: OnReload::Live,
        meaning: "One access line per request (target `mtls_shield::access`). Refused handshakes are always logged.",
    },
    Key {
        name: "reload.watch_interval",
        default: DefaultValue::Unset,
        reload: OnReload::Restart,
        meaning: "Poll the config and every file it names this often, and reload when one's content changed (Kubernetes Secret swaps). Absent: reload on SIGHUP only.",
    },
    Key {
        name: "runtime.worker_threads",
        default: DefaultValue::Unset,
        reload: OnReload::Restart,
        meaning: "Tokio worker threads; absent: the CPUs this process may use.",
    },
];

/// The keys that need a restart, in table order.
pub fn restart_only() -> impl Iterator<Item = &'static str> {
    KEYS.iter()
        .filter(|k| k.reload == OnReload::Restart)
        .map(|k| k.name)
}

/// The table a key belongs to, as the config file writes its header (`[listener]`,
/// `[[routes]]`, `[routes.allow]`), and the key's own name.
fn table_and_leaf(name: &str) -> (String, &str) {
    let (table, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    let header = match table.strip_prefix("routes[]") {
        Some("") => "[[routes]]".to_owned(),
        Some(rest) => format!("[routes{rest}]"),
        None => format!("[{table}]"),
    };
    (header, leaf)
}

/// `docs/configuration.md`: every key of [`KEYS`], table by table.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from src/config/keys.rs (KEYS). Do not edit: change the table, then run\n\
         \x20    UPDATE_DOCS=1 cargo test --test it generated_docs\n\
         -->\n\n\
         One TOML file configures the shield (`mtls-shield run --config FILE`). Unknown keys are\n\
         refused, so a typo never falls back to a default. Relative paths resolve against the\n\
         folder of the config file. Durations are humantime strings: `\"500ms\"`, `\"10s\"`,\n\
         `\"2m\"`, `\"1h\"`. `mtls-shield check --config FILE` validates a file without serving.\n\n\
         **On reload**: *live* keys take effect on the next reload (SIGHUP, `reload.watch_interval`,\n\
         or a fetched CRL); *restart* keys keep their running value, and the reload logs a warning\n\
         naming each one that changed. An annotated example is `config/mtls-shield.toml`.\n",
    );
    let mut current = String::new();
    for key in KEYS {
        let (table, leaf) = table_and_leaf(key.name);
        if table != current {
            // Writing into a String cannot fail.
            let _ = write!(
                out,
                "\n## `{table}`\n\n| key | default | on reload | meaning |\n|---|---|---|---|\n"
            );
            current = table;
        }
        let default = match key.default {
            DefaultValue::Required => "required".to_owned(),
            DefaultValue::Unset => "absent".to_owned(),
            d => format!("`{}`", d.toml().unwrap_or_default()),
        };
        let reload = match key.reload {
            OnReload::Live => "live",
            OnReload::Restart => "restart",
        };
        let _ = writeln!(
            out,
            "| `{leaf}` | {default} | {reload} | {} |",
            key.meaning.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum Seg {
        Table,
        Array,
        Map,
    }

    /// The fields the deserializer expects at `path`, from its deny_unknown_fields error;
    /// `None` when `path` is not a table of that kind.
    fn fields_at(path: &[(String, Seg)]) -> Option<Vec<String>> {
        let mut doc = String::new();
        let mut dotted: Vec<String> = Vec::new();
        for (name, seg) in path {
            dotted.push(name.clone());
            match seg {
                Seg::Array => doc.push_str(&format!("[[{}]]\n", dotted.join("."))),
                Seg::Map => dotted.push("probe_name".to_owned()),
                Seg::Table => {}
            }
        }
        if !dotted.is_empty() && path.last().is_some_and(|(_, s)| *s != Seg::Array) {
            doc.push_str(&format!("[{}]\n", dotted.join(".")));
        }
        doc.push_str("zz_probe_key = 1\n");
        let err = match toml::from_str::<super::super::raw::RawConfig>(&doc) {
            Ok(_) => return None,
            Err(e) => e.to_string(),
        };
        if !err.contains("unknown field `zz_probe_key`") {
            return None;
        }
        let list = err
            .split("expected one of ")
            .nth(1)
            .or_else(|| err.split("expected ").nth(1))?;
        let list = list.lines().next()?;
        Some(
            list.split([',', ' '])
                .filter_map(|f| f.trim().strip_prefix('`'))
                .filter_map(|f| f.strip_suffix('`'))
                .map(str::to_owned)
                .collect(),
        )
    }

    fn walk(path: &mut Vec<(String, Seg)>, out: &mut Vec<String>) {
        let Some(fields) = fields_at(path) else {
            return;
        };
        for f in fields {
            let mut found = false;
            for seg in [Seg::Table, Seg::Array, Seg::Map] {
                path.push((f.clone(), seg));
                if fields_at(path).is_some() {
                    walk(path, out);
                    found = true;
                }
                path.pop();
                if found {
                    break;
                }
            }
            if !found {
                let mut name: Vec<String> = Vec::new();
                for (n, seg) in path.iter() {
                    name.push(match seg {
                        Seg::Table => n.clone(),
                        Seg::Array => format!("{n}[]"),
                        Seg::Map => format!("{n}.<name>"),
                    });
                }
                name.push(f);
                out.push(name.join("."));
            }
        }
    }

    fn schema() -> Vec<String> {
        let mut out = Vec::new();
        walk(&mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn every_key_of_the_schema_is_either_reloadable_or_named_by_the_restart_warning() {
        let keys = schema();
        assert!(keys.len() > 40, "the walk found too little: {keys:?}");
        let listed: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !listed.contains(&k.as_str()))
            .collect();
        let stale: Vec<&&str> = listed
            .iter()
            .filter(|k| !keys.iter().any(|s| s == *k))
            .collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "config keys with no reload decision: {missing:#?}\nlisted keys the schema no longer has: {stale:#?}\nschema: {keys:#?}"
        );
    }

    #[test]
    fn the_example_config_sets_no_key_to_other_than_its_default_unless_it_must() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mtls-shield.toml"),
        )
        .unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let mut seen = 0;
        for key in KEYS {
            let Some(default) = key.default.toml() else {
                continue;
            };
            let mut v: Option<&toml::Value> = None;
            let mut t = Some(&doc);
            for part in key.name.split('.') {
                v = t.and_then(|t| t.get(part));
                t = v.and_then(toml::Value::as_table);
            }
            let Some(v) = v else { continue };
            let default: toml::Value =
                toml::from_str::<toml::Table>(&format!("v = {default}")).unwrap()["v"].clone();
            // "60s" and "1m" are the same duration.
            let same = match (v.as_str(), default.as_str(), key.default) {
                (Some(a), Some(b), DefaultValue::Duration(_)) => {
                    humantime::parse_duration(a).ok() == humantime::parse_duration(b).ok()
                }
                _ => v == &default,
            };
            assert!(
                same,
                "config/mtls-shield.toml sets {} to {v}, not its default {default}",
                key.name
            );
            seen += 1;
        }
        assert!(seen > 20, "only {seen} keys of the example were compared");
    }

    #[test]
    fn every_key_has_a_meaning_and_table_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for key in KEYS {
            assert!(
                key.meaning.ends_with('.') && key.meaning.len() > 20,
                "{}",
                key.name
            );
            assert!(names.insert(key.name), "{} is listed twice", key.name);
        }
    }
}
