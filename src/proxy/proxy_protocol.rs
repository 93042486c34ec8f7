//! The PROXY protocol (HAProxy, versions 1 and 2), read before the TLS handshake when a
//! load balancer such as an AWS NLB sits in front: it carries the original client address,
//! which then stands in for the TCP peer in `X-Forwarded-For`, the logs and the allow/deny
//! decisions' log lines.
//!
//! The parser is hand-written rather than taken from the `ppp` crate: it is a few hundred
//! lines on the trust boundary, needs an incremental "is this still a possible header?"
//! answer for `optional` mode, ignores TLVs, and is fuzzed (`fuzz/`) and unit-tested here.
//!
//! Security: the header is unauthenticated. Whoever can reach the port can claim any source
//! address, so enable it only where the listener is reachable solely through the load
//! balancer. `optional` also accepts connections without a header; use it only for a
//! migration.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use crate::config::ProxyProtocol;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the spec's limit).
pub const V1_MAX: usize = 107;
/// The largest v2 address-and-TLV block accepted. NLBs send a few dozen bytes of TLVs;
/// anything near the format's 64 KiB is refused rather than buffered per connection.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// What the bytes so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Could still be a header; read more.
    Incomplete,
    /// Cannot be a PROXY header (only returned when `optional` allows that).
    NotProxy,
    /// A complete header of `len` bytes. `source` is the client address it carries, or
    /// `None` when the connection's own address is to be used (v2 LOCAL, v1 UNKNOWN, or an
    /// unspecified or unix family).
    Header {
        /// Header length in bytes.
        len: usize,
        /// The original client.
        source: Option<SocketAddr>,
    },
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The connection does not start with the header the mode requires.
    #[error("missing: the connection does not start with a PROXY protocol {0} header")]
    Missing(&'static str),
    /// The header is malformed.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

fn malformed<T>(why: &'static str) -> Result<T, HeaderError> {
    Err(HeaderError::Malformed(why))
}

/// Parses the start of a connection under `mode` (which must not be `Off`).
pub fn parse(buf: &[u8], mode: ProxyProtocol) -> Result<Parsed, HeaderError> {
    let v1 = matches!(mode, ProxyProtocol::V1 | ProxyProtocol::Optional);
    let v2 = matches!(mode, ProxyProtocol::V2 | ProxyProtocol::Optional);
    let n = buf.len().min(V1_PREFIX.len());
    if v1 && buf[..n] == V1_PREFIX[..n] {
        return if buf.len() < V1_PREFIX.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(buf)
        };
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if v2 && buf[..n] == V2_SIGNATURE[..n] {
        return if buf.len() < 16 {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    match mode {
        ProxyProtocol::Optional => Ok(Parsed::NotProxy),
        ProxyProtocol::V1 => Err(HeaderError::Missing("v1")),
        _ => Err(HeaderError::Missing("v2")),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    // The line ends at its first LF, which must follow a CR. Deciding on the first LF (not
    // the first CRLF) keeps the answer the same however the line is split across reads: a
    // bare LF is refused as soon as it arrives, never accepted later as part of a longer
    // line (found by the `proxy_protocol` fuzz target).
    let end = match window.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && window[i - 1] == b'\r' => i - 1,
        Some(_) => return malformed("v1 line not terminated by CRLF"),
        None if window.len() >= V1_MAX => return malformed("v1 line longer than 107 bytes"),
        None => return Ok(Parsed::Incomplete),
    };
    let line = std::str::from_utf8(&window[..end]).or(malformed("v1 line is not ASCII"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    // "PROXY"
    fields.next();
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored; use the connection's address.
        return Ok(Parsed::Header { len, source: None });
    }
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return malformed("v1 line needs exactly: family, two addresses and two ports");
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(
                src.parse::<Ipv4Addr>()
                    .or(malformed("bad v1 TCP4 source"))?,
            ),
            IpAddr::V4(
                dst.parse::<Ipv4Addr>()
                    .or(malformed("bad v1 TCP4 destination"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse::<Ipv6Addr>()
                    .or(malformed("bad v1 TCP6 source"))?,
            ),
            IpAddr::V6(
                dst.parse::<Ipv6Addr>()
                    .or(malformed("bad v1 TCP6 destination"))?,
            ),
        ),
        _ => return malformed("v1 family is not TCP4, TCP6 or UNKNOWN"),
    };
    let _ = dst;
    let sport = port(sport)?;
    port(dport)?;
    Ok(Parsed::Header {
        len,
        source: Some(SocketAddr::new(src, sport)),
    })
}

/// A decimal port, 0..=65535, no sign, no leading zeros.
fn port(text: &str) -> Result<u16, HeaderError> {
    let ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !ok {
        return malformed("bad v1 port");
    }
    text.parse().or(malformed("v1 port out of range"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return malformed("v2 version is not 2");
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return malformed("v2 command is neither LOCAL nor PROXY");
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return malformed("v2 header longer than 1040 bytes");
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    if command == 0 {
        // LOCAL: the balancer's own connection (health checks); use the real address.
        return Ok(Parsed::Header { len, source: None });
    }
    if transport > 2 || family > 3 {
        return malformed("v2 family or transport is not defined");
    }
    if transport == 2 {
        return malformed("v2 header describes a datagram connection");
    }
    let source = match family {
        1 => {
            if body.len() < 12 {
                return malformed("v2 IPv4 addresses truncated");
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        2 => {
            if body.len() < 36 {
                return malformed("v2 IPv6 addresses truncated");
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        3 => {
            if body.len() < 216 {
                return malformed("v2 unix addresses truncated");
            }
            None
        }
        // UNSPEC: keep the connection's address (the spec's rule for unknown protocols).
        _ => None,
    };
    Ok(Parsed::Header { len, source })
}

/// Why no header could be read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The peer closed before sending a byte (a port probe).
    #[error("closed before any data")]
    Empty,
    /// The peer closed or failed mid-header.
    #[error("connection ended inside the PROXY protocol header: {0}")]
    Io(io::Error),
    /// The header was refused.
    #[error("PROXY protocol header {0}")]
    Header(#[from] HeaderError),
    /// Neither a PROXY header nor TLS (plain HTTP, a scanner): the listener's usual
    /// `not_tls`.
    #[error("first bytes are neither a PROXY protocol header nor a TLS handshake record")]
    NotTls,
}

/// Reads the PROXY header that `mode` calls for from `stream`. Returns the stream (with any
/// bytes read past the header put back in front) and the client address to use.
///
/// Reads as much as is available and gives back the excess rather than reading byte by
/// byte, so a client's ClientHello arriving with the header costs no extra system calls.
pub async fn accept(
    mut stream: TcpStream,
    peer: SocketAddr,
    mode: ProxyProtocol,
) -> Result<(Rewind<TcpStream>, SocketAddr), AcceptError> {
    if mode == ProxyProtocol::Off {
        return Ok((Rewind::new(stream, Vec::new()), peer));
    }
    let mut buf = Vec::with_capacity(256);
    loop {
        let parsed = match parse(&buf, mode) {
            Err(HeaderError::Missing(_)) if buf.first() != Some(&0x16) => {
                return Err(AcceptError::NotTls)
            }
            other => other?,
        };
        match parsed {
            Parsed::Incomplete => {}
            Parsed::NotProxy => return Ok((Rewind::new(stream, buf), peer)),
            Parsed::Header { len, source } => {
                let rest = buf.split_off(len);
                let client = source.unwrap_or(peer);
                tracing::debug!(peer = %peer, client = %client, "PROXY protocol header");
                return Ok((Rewind::new(stream, rest), client));
            }
        }
        if buf.len() >= 16 + V2_MAX_PAYLOAD + 4096 {
            // Unreachable given the parser's limits; a guard against unbounded reads.
            return Err(HeaderError::Malformed("header too long").into());
        }
        let mut chunk = [0u8; 512];
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return Err(AcceptError::Empty),
            Ok(0) => {
                return Err(AcceptError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed",
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(AcceptError::Io(e)),
        }
    }
}

/// A stream with bytes already read put back in front of it.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Vec<u8>,
    pos: usize,
    io: IO,
}

impl<IO> Rewind<IO> {
    /// `prefix` is returned by reads before anything from `io`.
    pub fn new(io: IO, prefix: Vec<u8>) -> Self {
        Self { prefix, pos: 0, io }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl Rewind<TcpStream> {
    /// The next byte without consuming it; `Ok(0)` at end of stream.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.prefix[self.pos..];
        if !rest.is_empty() {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            return Ok(n);
        }
        self.io.peek(buf).await
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProxyProtocol::*;

    fn header(len: usize, source: Option<&str>) -> Parsed {
        Parsed::Header {
            len,
            source: source.map(|s| s.parse().unwrap()),
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        assert_eq!(
            parse(line, V1),
            Ok(header(line.len(), Some("203.0.113.7:51234")))
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n\x16\x03";
        assert_eq!(
            parse(line, Optional),
            Ok(header(line.len() - 2, Some("[2001:db8::7]:51234")))
        );
    }

    #[test]
    fn v1_unknown_uses_the_connection_address() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n", V1), Ok(header(15, None)));
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", V1),
            Ok(header(35, None))
        );
    }

    #[test]
    fn v1_incomplete_until_crlf() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n], V1), Ok(Parsed::Incomplete), "{n}");
        }
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443 9\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 051234 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
            b"PROXY TCP4  203.0.113.7 10.0.0.1 1 443\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 1 443\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n",
            // A bare LF inside an otherwise ignored UNKNOWN line (a fuzz finding).
            b"PROXY UNKNOWN x\ny\r\n",
        ] {
            assert!(
                matches!(parse(bad, V1), Err(HeaderError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad, V1)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 120]].concat();
        assert!(matches!(parse(&long, V1), Err(HeaderError::Malformed(_))));
    }

    #[test]
    fn v2_inet_inet6_local_and_tlvs() {
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        // A TLV (AWS VPC endpoint id) after the addresses is ignored.
        body.extend_from_slice(&[0xea, 0x00, 0x03, 0x01, b'v', b'p']);
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h, V2),
            Ok(header(h.len(), Some("203.0.113.7:51234")))
        );

        let mut body = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)
            .octets()
            .to_vec();
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let mut h = v2(1, 0x21, &body);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h, Optional),
            Ok(header(len, Some("[2001:db8::7]:51234")))
        );

        let h = v2(0, 0x00, &[]);
        assert_eq!(parse(&h, V2), Ok(header(16, None)));
        let h = v2(1, 0x00, &[1, 2, 3]);
        assert_eq!(parse(&h, V2), Ok(header(19, None)));
    }

    #[test]
    fn v2_incomplete_until_whole() {
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
        body.extend_from_slice(&[0, 1, 0, 2]);
        let h = v2(1, 0x11, &body);
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n], V2), Ok(Parsed::Incomplete), "{n}");
        }
    }

    #[test]
    fn v2_malformed() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        let mut too_long = v2(1, 0x11, &[]);
        too_long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        for bad in [
            bad_version,
            v2(2, 0x11, &[0; 12]),
            v2(1, 0x12, &[0; 12]),
            v2(1, 0x11, &[0; 8]),
            v2(1, 0x21, &[0; 20]),
            v2(1, 0x31, &[0; 100]),
            v2(1, 0x41, &[0; 12]),
            too_long,
        ] {
            assert!(
                matches!(parse(&bad, V2), Err(HeaderError::Malformed(_))),
                "{bad:?} -> {:?}",
                parse(&bad, V2)
            );
        }
    }

    #[test]
    fn modes_decide_what_is_missing() {
        let tls = b"\x16\x03\x01\x02\x00";
        assert_eq!(parse(tls, Optional), Ok(Parsed::NotProxy));
        assert_eq!(parse(tls, V1), Err(HeaderError::Missing("v1")));
        assert_eq!(parse(tls, V2), Err(HeaderError::Missing("v2")));
        // Each strict mode refuses the other version.
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V2),
            Err(HeaderError::Missing("v2"))
        );
        assert_eq!(parse(&v2(0, 0, &[]), V1), Err(HeaderError::Missing("v1")));
        // Nothing yet: keep reading.
        assert_eq!(parse(b"", V1), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"", Optional), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r", Optional), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRO", Optional), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRX", Optional), Ok(Parsed::NotProxy));
    }
}
