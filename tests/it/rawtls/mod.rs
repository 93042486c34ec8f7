//! Helpers for the hostile-traffic tests (issue 5): a blocking TLS client that writes raw
//! bytes and reads raw HTTP/1.1 responses and h2 frames, a programmable upstream that records
//! every byte it receives (over TCP, TLS or a unix socket), and process readings from /proc.
//!
//! Used together with `common` (both are modules of `tests/it/main.rs`).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::common::{client_config, Ca, ClientOpts, DEADLINE};

/// A boxed response body for the programmable upstream.
pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A whole-body response.
pub fn full(status: u16, body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut r = Response::new(
        http_body_util::Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

// ---------------------------------------------------------------------------------------
// Blocking raw TLS client
// ---------------------------------------------------------------------------------------

/// A blocking TLS connection to the proxy that writes and reads raw bytes.
pub struct RawTls {
    pub s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    /// Bytes read but not yet consumed by `read_response`/`read_frame`.
    pub pending: Vec<u8>,
}

/// What a read found when it stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed (close_notify, FIN or RST).
    Closed,
    /// Nothing arrived before the read timeout.
    TimedOut,
}

impl RawTls {
    /// Connects and completes the handshake (panics if the proxy refuses it).
    pub fn connect(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> RawTls {
        Self::try_connect(addr, root, opts).expect("TLS handshake with the proxy")
    }

    /// Connects and completes the handshake.
    pub fn try_connect(addr: SocketAddr, root: &Ca, opts: &ClientOpts) -> std::io::Result<RawTls> {
        let sock = TcpStream::connect(addr)?;
        Self::over(sock, root, opts)
    }

    /// Runs the handshake over an already-connected socket (e.g. after a PROXY header).
    pub fn over(sock: TcpStream, root: &Ca, opts: &ClientOpts) -> std::io::Result<RawTls> {
        sock.set_read_timeout(Some(DEADLINE))?;
        sock.set_write_timeout(Some(DEADLINE))?;
        sock.set_nodelay(true)?;
        let conn = rustls::ClientConnection::new(
            client_config(root, opts),
            ServerName::try_from("localhost").unwrap(),
        )
        .map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(RawTls {
            s,
            pending: Vec::new(),
        })
    }

    pub fn set_read_timeout(&mut self, d: Duration) {
        self.s.sock.set_read_timeout(Some(d)).unwrap();
    }

    /// Writes and flushes `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)?;
        self.s.flush()
    }

    /// Sends TLS close_notify: the end of what this side writes.
    pub fn close_write(&mut self) {
        self.s.conn.send_close_notify();
        while self.s.conn.wants_write() {
            self.s.conn.write_tls(&mut self.s.sock).unwrap();
        }
    }

    /// Reads one chunk into `pending`; Ok(false) when the peer closed.
    ///
    /// Reads TLS records straight from the socket rather than through `StreamOwned::read`,
    /// which first tries to flush unsent data: after the proxy hangs up on a burst it
    /// refused, that flush fails and would hide the frames the proxy sent before closing.
    fn fill(&mut self) -> Result<bool, End> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.s.conn.reader().read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(false),
            }
            match self.s.conn.read_tls(&mut self.s.sock) {
                Ok(_) => {
                    if self.s.conn.process_new_packets().is_err() {
                        return Ok(false);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(End::TimedOut)
                }
                Err(_) => {
                    // Reset: whatever plaintext is already decrypted is still returned above
                    // on the next turn; after that, closed.
                    let mut b = [0u8; 16 * 1024];
                    return match self.s.conn.reader().read(&mut b) {
                        Ok(n) if n > 0 => {
                            self.pending.extend_from_slice(&b[..n]);
                            Ok(true)
                        }
                        _ => Ok(false),
                    };
                }
            }
        }
    }

    /// Reads until the peer closes or nothing arrives within the read timeout. Returns every
    /// byte received (including unconsumed `pending`) and why reading stopped.
    pub fn read_to_end(&mut self) -> (Vec<u8>, End) {
        loop {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return (std::mem::take(&mut self.pending), End::Closed),
                Err(e) => return (std::mem::take(&mut self.pending), e),
            }
        }
    }

    /// Waits for the peer to close; panics if it sends anything or stays open past the read
    /// timeout.
    pub fn expect_closed(&mut self) {
        let (bytes, end) = self.read_to_end();
        assert_eq!(end, End::Closed, "connection should have been closed");
        assert!(
            bytes.is_empty(),
            "expected no bytes, got {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }

    /// Reads one HTTP/1.1 response. `head_request` says the request was HEAD (no body).
    /// Interim (1xx) responses are returned like any other.
    pub fn read_response(&mut self, head_request: bool) -> Result<RawResponse, String> {
        let head_end = loop {
            if let Some(i) = find(&self.pending, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "closed before a response head; got {:?}",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
                Err(e) => return Err(format!("{e:?} before a response head")),
            }
        };
        let head: Vec<u8> = self.pending.drain(..head_end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut resp = RawResponse {
            status,
            status_line,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            head_raw: head,
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line = self.read_line()?;
                let size_text = line.split(';').next().unwrap_or_default().trim().to_owned();
                let size = usize::from_str_radix(&size_text, 16)
                    .map_err(|_| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    loop {
                        let t = self.read_line()?;
                        if t.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = t.split_once(':') {
                            resp.trailers
                                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        }
                    }
                    return Ok(resp);
                }
                let chunk = self.read_exact_pending(size + 2)?;
                resp.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| "bad content-length".to_owned())?;
            resp.body = self.read_exact_pending(len)?;
            Ok(resp)
        } else {
            let (rest, _) = self.read_to_end();
            resp.body = rest;
            Ok(resp)
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = find(&self.pending, b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Err("closed mid-body".into()),
                Err(e) => return Err(format!("{e:?} mid-body")),
            }
        }
    }

    fn read_exact_pending(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.pending.len() < n {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "closed after {} of {n} body bytes",
                        self.pending.len()
                    ))
                }
                Err(e) => return Err(format!("{e:?} mid-body")),
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    // ---- h2 frames ----

    /// Sends the client preface and an empty SETTINGS frame.
    pub fn h2_preface(&mut self) -> std::io::Result<()> {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
        self.send(&out)
    }

    /// Reads one h2 frame: Ok(None) when the peer closed or went quiet.
    pub fn read_frame(&mut self) -> Option<H2Frame> {
        loop {
            if self.pending.len() >= 9 {
                let len = u32::from_be_bytes([0, self.pending[0], self.pending[1], self.pending[2]])
                    as usize;
                if self.pending.len() >= 9 + len {
                    let raw: Vec<u8> = self.pending.drain(..9 + len).collect();
                    return Some(H2Frame {
                        kind: raw[3],
                        flags: raw[4],
                        stream: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff,
                        payload: raw[9..].to_vec(),
                    });
                }
            }
            match self.fill() {
                Ok(true) => {}
                _ => return None,
            }
        }
    }

    /// Reads frames until a GOAWAY (returned) or the connection ends (None). Every other
    /// frame is appended to `seen`.
    pub fn read_until_goaway(&mut self, seen: &mut Vec<H2Frame>) -> Option<H2Frame> {
        while let Some(f) = self.read_frame() {
            if f.kind == FRAME_GOAWAY {
                return Some(f);
            }
            seen.push(f);
        }
        None
    }
}

/// A parsed raw HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub status_line: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub head_raw: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---- h2 frame building ----

pub const FRAME_DATA: u8 = 0x0;
pub const FRAME_HEADERS: u8 = 0x1;
pub const FRAME_RST_STREAM: u8 = 0x3;
pub const FRAME_SETTINGS: u8 = 0x4;
pub const FRAME_PING: u8 = 0x6;
pub const FRAME_GOAWAY: u8 = 0x7;
pub const FRAME_WINDOW_UPDATE: u8 = 0x8;
pub const FRAME_CONTINUATION: u8 = 0x9;
pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_ACK: u8 = 0x1;
pub const ERR_CANCEL: u32 = 0x8;
pub const ERR_ENHANCE_YOUR_CALM: u32 = 0xb;

/// One h2 frame as read from the wire.
#[derive(Debug, Clone)]
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl H2Frame {
    /// GOAWAY's error code.
    pub fn goaway_code(&self) -> u32 {
        u32::from_be_bytes([
            self.payload[4],
            self.payload[5],
            self.payload[6],
            self.payload[7],
        ])
    }
    /// GOAWAY's last stream id.
    pub fn goaway_last_stream(&self) -> u32 {
        u32::from_be_bytes([
            self.payload[0],
            self.payload[1],
            self.payload[2],
            self.payload[3],
        ]) & 0x7fff_ffff
    }
}

/// Encodes one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `GET https://localhost<path>` using only static-table indexes and literals
/// without indexing, so every block is independent of the decoder's dynamic table.
pub fn hpack_get(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
    hpack_literal_indexed_name(&mut b, 4, path); // :path
    hpack_literal_indexed_name(&mut b, 1, "localhost"); // :authority
    b
}

/// A literal header field without indexing, name from the static table (index < 15).
pub fn hpack_literal_indexed_name(out: &mut Vec<u8>, index: u8, value: &str) {
    out.push(index & 0x0f);
    hpack_string(out, value.as_bytes());
}

/// A literal header field without indexing with a literal name.
pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_string(out, name.as_bytes());
    hpack_string(out, value.as_bytes());
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    // 7-bit prefix integer, no Huffman.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// `RST_STREAM` with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(FRAME_RST_STREAM, 0, stream, &code.to_be_bytes())
}

// ---------------------------------------------------------------------------------------
// Programmable, recording upstream
// ---------------------------------------------------------------------------------------

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>
        + Send
        + Sync,
>;

/// A test upstream whose answers a test writes, counting requests and recording every byte
/// it receives, so a test can check what framing reached the app.
pub struct App {
    /// TCP address (for TCP and TLS upstreams).
    pub addr: Option<SocketAddr>,
    pub hits: Arc<AtomicUsize>,
    /// Requests currently inside the handler.
    pub active: Arc<AtomicUsize>,
    /// Every byte received, over all connections, in arrival order.
    pub raw: Arc<Mutex<Vec<u8>>>,
    /// Accepted connections.
    pub connections: Arc<AtomicUsize>,
    pub rt: tokio::runtime::Runtime,
}

/// Where the programmable upstream listens.
pub enum Listen {
    Tcp,
    /// TLS with this server config (e.g. requiring a client certificate).
    Tls(Arc<rustls::ServerConfig>),
    Unix(std::path::PathBuf),
}

impl App {
    /// A plain-TCP upstream answering with `f`.
    pub fn start<F, Fut>(f: F) -> App
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Self::start_on(Listen::Tcp, f)
    }

    pub fn start_on<F, Fut>(listen: Listen, f: F) -> App
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = {
            let hits = hits.clone();
            let active = active.clone();
            let f = Arc::new(f);
            Arc::new(move |req| {
                hits.fetch_add(1, Ordering::SeqCst);
                let active = active.clone();
                active.fetch_add(1, Ordering::SeqCst);
                let fut = f(req);
                Box::pin(async move {
                    struct Dec(Arc<AtomicUsize>);
                    impl Drop for Dec {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _d = Dec(active);
                    fut.await
                })
            })
        };
        let serve = {
            let raw = raw.clone();
            let connections = connections.clone();
            move |io: Box<dyn Io>| {
                connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let io = Recording {
                    io,
                    raw: raw.clone(),
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .with_upgrades()
                        .await;
                });
            }
        };
        let addr = match listen {
            Listen::Tcp | Listen::Tls(_) => {
                let tls = match &listen {
                    Listen::Tls(cfg) => Some(tokio_rustls::TlsAcceptor::from(cfg.clone())),
                    _ => None,
                };
                let l = rt
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .unwrap();
                let addr = l.local_addr().unwrap();
                rt.spawn(async move {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        match &tls {
                            None => serve(Box::new(s)),
                            Some(acc) => {
                                let acc = acc.clone();
                                let serve = serve.clone();
                                tokio::spawn(async move {
                                    if let Ok(t) = acc.accept(s).await {
                                        serve(Box::new(t));
                                    }
                                });
                            }
                        }
                    }
                });
                Some(addr)
            }
            Listen::Unix(path) => {
                let _guard = rt.enter();
                let l = tokio::net::UnixListener::bind(&path).unwrap();
                rt.spawn(async move {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        serve(Box::new(s));
                    }
                });
                None
            }
        };
        App {
            addr,
            hits,
            active,
            raw,
            connections,
            rt,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }

    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw()).into_owned()
    }
}

/// Any byte stream the upstream can serve.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

struct Recording {
    io: Box<dyn Io>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            self.raw.lock().unwrap().extend_from_slice(new);
        }
        res
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads a request body whole: (length, bytes).
pub async fn body_bytes(req: Request<Incoming>) -> Result<Vec<u8>, String> {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

/// A response body that yields `chunks` chunks of `chunk` bytes with `gap` between them.
pub fn trickle_body(chunks: usize, chunk: usize, gap: Duration) -> BoxBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if tx
                .send(Bytes::from(vec![b'a' + (i % 26) as u8; chunk]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ChannelBody(rx).boxed()
}

/// A body fed by an mpsc channel; ends when the sender is dropped.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

// ---------------------------------------------------------------------------------------
// Process readings
// ---------------------------------------------------------------------------------------

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// True once `addr` accepts a TCP connection... used to check liveness cheaply.
pub fn elapsed_since(t: Instant) -> Duration {
    t.elapsed()
}

// ---------------------------------------------------------------------------------------
// Config and start-up
// ---------------------------------------------------------------------------------------

/// Like `common::config_with`, but with extra keys for `[upstream]` too (timeouts, TLS).
/// `upstream_url` is written as given (`http://…`, `https://…`, `unix:/…`).
pub fn config(
    upstream_url: &str,
    listener_extra: &str,
    upstream_extra: &str,
    tables: &str,
) -> String {
    format!(
        r#"[listener]
address = "127.0.0.1:0"
certificate = "server.pem"
private_key = "server.key"
{listener_extra}

[client_auth]
truststore = "truststore.pem"

[upstream]
url = "{upstream_url}"
{upstream_extra}

[admin]
address = "127.0.0.1:0"

[log]
level = "info"
format = "text"

{tables}
"#
    )
}

/// Writes `text` as the PKI's config and starts the proxy.
pub fn start(pki: &crate::common::Pki, text: &str) -> crate::common::Proxy {
    let p = pki.path("mtls-shield.toml");
    std::fs::write(&p, text).unwrap();
    crate::common::Proxy::start(&p)
}

/// The good client's options (HTTP/1.1).
pub fn good(pki: &crate::common::Pki) -> ClientOpts {
    ClientOpts::with(crate::common::ClientCert::leaf(&pki.client))
}

/// The good client's options (h2).
pub fn good_h2(pki: &crate::common::Pki) -> ClientOpts {
    let mut o = good(pki);
    o.h2 = true;
    o
}

/// A labelled handshake counter, e.g. `handshakes(&p, "rejected", "handshake_timeout")`.
pub fn handshakes(p: &crate::common::Proxy, result: &str, reason: &str) -> f64 {
    p.metric(&format!(
        "mtls_shield_handshakes_total{{result=\"{result}\",reason=\"{reason}\"}}"
    ))
}

/// An h2 connection to the proxy through hyper's client: many requests on one connection.
pub async fn h2_sender(
    addr: SocketAddr,
    root: &Ca,
    opts: &ClientOpts,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let tls = crate::common::tls_connect(addr, root, opts).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Runs `f` on a fresh current-thread runtime with the standard deadline. (The upstreams own
/// runtimes, which must not be dropped inside an async test, so tests stay synchronous.)
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(DEADLINE, f)
                .await
                .expect("test body timed out")
        })
}
