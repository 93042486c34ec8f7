//! Header rules between the client and the upstream: hop-by-hop removal, identity-header
//! stripping and injection, and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::identity::is_identity_header;

/// `X-Forwarded-For`
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies still see.
///
/// `Trailer` is not among them: RFC 9110 §6.6.2 makes it end-to-end, and hyper only sends
/// chunked trailers (either direction) for the fields it names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Bit of `TE` in the mask [`hop_index`] builds; the other bits are positions in [`HOP_BY_HOP`].
const TE_BIT: u8 = 1 << 7;

/// The position of a hop-by-hop name in [`HOP_BY_HOP`] (`TE` is one past the end). A string
/// match, because comparing with the `HeaderName` array builds and drops its custom names for
/// every header checked.
fn hop_index(name: &str) -> Option<u8> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "te" => 7,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including every header named in `Connection`. For an
/// upgrade (`keep_upgrade`), `Connection: upgrade` and `Upgrade` pass through, since the
/// upstream must see them to switch protocols.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One scan of the names says which hop-by-hop headers are present, so only those are
    // removed (each removal is a hashed lookup). Requests from a CDN usually have none;
    // responses from an HTTP/1.1 upstream usually have just `Connection: keep-alive`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 && !keep_upgrade {
        return;
    }
    // Headers named by `Connection` beyond the standard hop-by-hop ones (rare: no allocation
    // unless there is one). `close` is a connection option, and RFC 9110 §18.4 reserves the
    // field name `Close` so that it never names a header.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("close"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| hop_index(n.as_str()).is_none())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0
            || (keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE))
        {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if present & TE_BIT == 0 {
        return;
    }
    // TE is hop-by-hop, but `te: trailers` must reach an h2/gRPC upstream; keep only that.
    let keep_te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if keep_te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites an accepted request's headers for the upstream.
///
/// Security: every client-sent identity header (any family, any case or `_` spelling) is
/// removed before the proxy's own are added, so the upstream sees exactly one set, ours.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    peer: &ForwardedPeer,
    identity: &[(HeaderName, HeaderValue)],
    is_upgrade: bool,
) {
    remove_hop_by_hop(headers, is_upgrade);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_identity_header(n))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    append_forwarded_for(headers, peer);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    for (name, value) in identity {
        headers.insert(name.clone(), value.clone());
    }
}

/// The client's address as an `X-Forwarded-For` element, rendered once per connection rather
/// than formatted on every request (what that saved is in docs/measurements.md).
#[derive(Debug, Clone)]
pub struct ForwardedPeer(HeaderValue);

impl ForwardedPeer {
    /// Renders `ip` the way `IpAddr`'s `Display` does.
    pub fn new(ip: IpAddr) -> Self {
        // An IP address in text form is always a valid header value; the fallback is never
        // taken, and keeps this free of a panic path.
        Self(HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("unknown")))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("unknown")
    }
}

/// Appends the peer to `X-Forwarded-For`, folding multiple inbound fields into one list.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &ForwardedPeer) {
    let mut existing = String::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if !s.is_empty() {
                if !existing.is_empty() {
                    existing.push_str(", ");
                }
                existing.push_str(s);
            }
        }
    }
    if existing.is_empty() {
        headers.insert(X_FORWARDED_FOR, peer.0.clone());
        return;
    }
    existing.push_str(", ");
    existing.push_str(peer.as_str());
    // Comma-separated visible ASCII (each part came from a valid value) plus an IP address is
    // always a valid header value.
    if let Ok(v) = HeaderValue::try_from(existing) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Makes the upstream request's framing headers state exactly the framing the proxy parsed.
///
/// Security (request smuggling): the upstream must never delimit a request differently from
/// the proxy. hyper's parser has already refused ambiguous HTTP/1.1 framing (differing or
/// invalid Content-Length, Transfer-Encoding not ending in chunked, chunked on HTTP/1.0) and,
/// for Content-Length together with Transfer-Encoding, dropped the Content-Length and closed
/// the connection after the request. Here every client-sent Content-Length and
/// Transfer-Encoding is replaced by one derived from the parsed body: an exact length becomes
/// `Content-Length: n`, an unknown one (chunked, or h2 without content-length) becomes
/// `Transfer-Encoding: chunked`, which hyper re-encodes chunk by chunk. Without the explicit
/// chunked, hyper's client would send a GET's body-of-unknown-length as no body at all.
pub fn set_framing<B: hyper::body::Body>(headers: &mut HeaderMap, body: &B) {
    let had_length = headers.remove(header::CONTENT_LENGTH).is_some();
    headers.remove(header::TRANSFER_ENCODING);
    if body.is_end_stream() {
        if had_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        return;
    }
    match body.size_hint().exact() {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// The host of a Host header value or an authority, without its port (`[::1]:8443` gives
/// `::1`, `example.com:443` gives `example.com`) and without a trailing dot.
pub(crate) fn host_without_port(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match authority.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        },
    };
    host.trim_end_matches('.')
}

/// Rewrites the upstream's response headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap, is_upgrade: bool) {
    remove_hop_by_hop(headers, is_upgrade);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn spoofed_identity_is_replaced_and_xff_appended() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=evil"),
        );
        h.insert(
            "x_amzn_mtls_clientcert_subject",
            HeaderValue::from_static("CN=admin"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        let ours = [(
            crate::identity::names::XFCC,
            HeaderValue::from_static("Hash=good"),
        )];
        let peer = ForwardedPeer::new("127.0.0.1".parse().unwrap());
        rewrite_request(&mut h, &peer, &ours, false);
        let xfcc: Vec<_> = h.get_all("x-forwarded-client-cert").iter().collect();
        assert_eq!(xfcc, vec!["Hash=good"]);
        assert!(h.get("x_amzn_mtls_clientcert_subject").is_none());
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn xff_is_the_peer_alone_when_the_client_sent_none() {
        for ip in ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"] {
            let mut h = HeaderMap::new();
            let peer = ForwardedPeer::new(ip.parse().unwrap());
            rewrite_request(&mut h, &peer, &[], false);
            assert_eq!(
                h["x-forwarded-for"],
                ip.parse::<IpAddr>().unwrap().to_string()
            );
        }
    }

    #[test]
    fn hop_index_matches_the_removal_list() {
        // The scan's string match must know every name the removal list holds, at its
        // position, or a present header would be skipped.
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name.as_str()), Some(i as u8), "{name}");
        }
        assert_eq!(hop_index("te").map(|i| 1u8 << i), Some(TE_BIT));
        assert_eq!(TE_BIT, 1 << HOP_BY_HOP.len());
        assert_eq!(hop_index("host"), None);
    }

    #[test]
    fn connection_naming_a_standard_hop_by_hop_header_removes_it_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, Upgrade, x-a"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-b"]);
    }

    #[test]
    fn hosts_lose_their_port_and_trailing_dot() {
        assert_eq!(
            host_without_port("Origin.Example.com:8443"),
            "Origin.Example.com"
        );
        assert_eq!(host_without_port("example.com."), "example.com");
        assert_eq!(host_without_port("[::1]:8443"), "::1");
        assert_eq!(host_without_port("[2001:db8::1]"), "2001:db8::1");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("example.com:"), "example.com:");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h[header::TE], "trailers");
    }
}
