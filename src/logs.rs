//! Where log lines go: one writer thread that batches every line (tracing's and the access
//! log's) onto stderr in few `write` calls, and the access-line formatter, which writes each
//! request's line directly in exactly the text or JSON shape of tracing's lines, without
//! building a tracing event per request.
//!
//! Why not a tracing event per request: formatting 13 fields through tracing's visitor, its
//! per-event filter and its timestamp cost about 20,000 instructions a request
//! (bench/callgrind.sh), more than the rest of the proxy's user-space work for a small
//! keep-alive request; and each line was a `write` syscall on the request's worker thread.
//!
//! Guarantees:
//! - A line is always written whole: lines join the batch whole (tracing hands over each event
//!   in one `write_all`), and batches are written under the process's stderr lock.
//! - One queue for every line, so lines keep their order.
//! - Lines gather for up to [`FLUSH_EVERY`] (or until [`FLUSH_BYTES`] wait) and go out in one
//!   `write`; [`flush`] at shutdown writes what is left. A first version woke the writer for
//!   every line instead: with the proxy pinned to one CPU, that cost a futex wake and two
//!   context switches per request, and the log then cost more CPU per request than
//!   tracing's own blocking write (bench/compare.sh). A quiet process does not wake at all:
//!   the writer sleeps until a line arrives, then gathers for the interval.
//! - Logging never blocks a worker: when [`MAX_PENDING`] bytes wait (stderr is stuck: a full
//!   pipe, a stalled log collector), new lines are dropped and counted
//!   (`mtls_shield_access_log_dropped_total`, `mtls_shield_log_dropped_total`) instead of
//!   stalling traffic behind the log.
//!
//! Like `config`, this module imports nothing of the crate.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The targets of the log lines the documentation shows (docs/operations.md,
/// docs/troubleshooting.md). They are written out, not taken from the module path, so that
/// moving or renaming a file cannot change a documented log format or break a user's
/// `log.level` filter.
pub(crate) mod target {
    /// The access log: one line per request.
    pub(crate) const ACCESS: &str = "mtls_shield::access";
    /// Refused handshakes, and open connections closed by a later judgement.
    pub(crate) const CONNECTION: &str = "mtls_shield::connection";
    /// Start-up, listening, draining and exit.
    pub(crate) const APP: &str = "mtls_shield::app";
    /// Reloads: their outcome and what changed.
    pub(crate) const RELOAD: &str = "mtls_shield::app::reload";
    /// Open connections judged against a new trust state.
    pub(crate) const TRUST: &str = "mtls_shield::app::shared";
    /// Single requests refused after the handshake (400, 403).
    pub(crate) const REQUEST: &str = "mtls_shield::proxy::forward";
}

/// How long the writer lets lines gather before writing them: well inside the "at least once
/// a second" an operator tailing the log expects, and long enough that a busy proxy writes
/// hundreds of lines per `write`.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Pending bytes that make the writer write at once, before [`FLUSH_EVERY`] is up: one
/// `write` of this size is cheap, and it keeps the batch buffer small.
pub(crate) const FLUSH_BYTES: usize = 64 << 10;

/// Bytes of lines waiting for the writer past which new lines are dropped: about 10,000 lines,
/// several seconds of a busy proxy's log.
pub(crate) const MAX_PENDING: usize = 4 << 20;

/// The two line shapes, matching `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `TIMESTAMP  INFO mtls_shield::access: request key=value …`, as tracing's text lines.
    Text,
    /// One JSON object, as tracing's JSON lines with flattened fields.
    Json,
}

/// One request's line.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    /// Client address (the PROXY header's, when one was read).
    pub(crate) peer: IpAddr,
    /// The first CN, capped for logs; `-` when there is none.
    pub(crate) client_cn: &'a str,
    /// SHA-256 of the client certificate.
    pub(crate) client_fingerprint: &'a [u8; 32],
    /// `-` when hyper refused the request before it was handed over (400, 414, 431).
    pub(crate) method: &'a str,
    /// The path, without the query (queries may carry secrets); `-` as for `method`.
    pub(crate) path: &'a str,
    /// As the client spoke it.
    pub(crate) version: http::Version,
    /// Response status.
    pub(crate) status: u16,
    /// Request body bytes.
    pub(crate) bytes_in: u64,
    /// Response body bytes.
    pub(crate) bytes_out: u64,
    /// Request head received → last response byte.
    pub(crate) total: Duration,
    /// Request head received → upstream response headers, when the upstream answered.
    pub(crate) upstream: Option<Duration>,
    /// The `[[routes]]` entry the request matched.
    pub(crate) route: Option<&'a str>,
    /// The viewer certificate's verdict, when `[viewer]` judged one (or refused for lack of
    /// one).
    pub(crate) viewer: Option<ViewerFields<'a>>,
}

/// A request's viewer, on its access line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViewerFields<'a> {
    /// `None` when the viewer passed; else the `viewer_*` reason.
    pub(crate) reason: Option<&'a str>,
    /// The viewer's subject DN (capped), when its certificate could be read.
    pub(crate) subject: Option<&'a str>,
    /// SHA-256 of the viewer's certificate, when it could be read.
    pub(crate) fingerprint: Option<&'a [u8; 32]>,
}

/// Access lines dropped so far (see the module doc).
static ACCESS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Other log lines dropped so far.
static OTHER_DROPPED: AtomicU64 = AtomicU64::new(0);

/// (access lines, other lines) dropped since start-up, for the metrics.
pub(crate) fn dropped() -> (u64, u64) {
    (
        ACCESS_DROPPED.load(Ordering::Relaxed),
        OTHER_DROPPED.load(Ordering::Relaxed),
    )
}

/// Writes `line` to the access log (a dropped line is counted).
pub(crate) fn write(line: &Line<'_>) {
    thread_local! {
        // Reused for every line of the thread: no allocation per request.
        static BUF: RefCell<String> = RefCell::new(String::with_capacity(512));
    }
    BUF.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            // Only reachable if formatting re-entered this function; never drop silently.
            ACCESS_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        buf.clear();
        let format = WRITER.get().map_or(Format::Text, |w| w.format);
        render(&mut buf, format, SystemTime::now(), line);
        if !push(buf.as_bytes()) {
            ACCESS_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Queues whole lines; false when they were dropped.
fn push(lines: &[u8]) -> bool {
    match WRITER.get() {
        Some(w) => w.push(lines),
        None => {
            // Not started (a library user, a unit test): write synchronously.
            let _ = std::io::stderr().lock().write_all(lines);
            true
        }
    }
}

/// tracing's writer (`fmt().with_writer(|| logs::Sink)`): each event arrives formatted, whole,
/// in one `write_all`, and joins the same queue as the access lines.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sink;

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !push(buf) {
            OTHER_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        // Reported as written either way: a dropped line is counted, and an error here would
        // only make tracing print to stderr itself, blocking.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread (once; later calls keep the first format). Lines logged before go
/// straight to stderr. (No tracing here: tracing writes through this very writer.)
pub(crate) fn start(format: Format) {
    let mut started = false;
    let writer = WRITER.get_or_init(|| {
        started = true;
        Writer {
            format,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        }
    });
    if !started {
        return;
    }
    match std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run())
    {
        Ok(handle) => {
            if let Ok(mut t) = writer.thread.lock() {
                *t = Some(handle);
            }
        }
        Err(e) => {
            // Without the thread nothing would drain the batch: write synchronously instead.
            writer.lock().sync = true;
            let _ = writeln!(
                std::io::stderr(),
                "mtls-shield: cannot start the log writer thread ({e}); writing log lines synchronously"
            );
        }
    }
}

/// Writes every pending line and stops the writer; later lines are written synchronously.
/// Called once the listeners have drained, before the process exits.
pub(crate) fn flush() {
    let Some(w) = WRITER.get() else { return };
    {
        let mut st = w.lock();
        st.shutdown = true;
    }
    w.wake.notify_one();
    let handle = w.thread.lock().ok().and_then(|mut t| t.take());
    if let Some(h) = handle {
        let _ = h.join();
    }
}

static WRITER: OnceLock<Writer> = OnceLock::new();

struct Writer {
    format: Format,
    state: Mutex<State>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Whole lines not yet handed to `write`.
    pending: Vec<u8>,
    /// The writer is asleep with nothing pending: the next line must notify it. (While it
    /// gathers or writes, lines only join `pending`, with no syscall.)
    idle: bool,
    /// `flush` was called: drain and stop.
    shutdown: bool,
    /// No writer thread (it could not start, or it stopped): write on the caller's thread.
    sync: bool,
}

impl Writer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a bug in the few lines below;
        // the state (a byte buffer and flags) is still consistent, so keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: &[u8]) -> bool {
        let mut st = self.lock();
        if st.sync {
            drop(st);
            let _ = std::io::stderr().lock().write_all(line);
            return true;
        }
        if st.pending.len() + line.len() > MAX_PENDING {
            return false;
        }
        let before = st.pending.len();
        st.pending.extend_from_slice(line);
        // Wake the writer for the first line after a quiet spell, and once when the batch
        // reaches FLUSH_BYTES: never once per line.
        let wake = std::mem::take(&mut st.idle)
            || (before < FLUSH_BYTES && st.pending.len() >= FLUSH_BYTES);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    fn run(&self) {
        let mut batch = Vec::with_capacity(64 << 10);
        loop {
            {
                let mut st = self.lock();
                while st.pending.is_empty() && !st.shutdown {
                    st.idle = true;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.idle = false;
                // Let the lines of the next FLUSH_EVERY join this batch.
                let deadline = std::time::Instant::now() + FLUSH_EVERY;
                while !st.shutdown && st.pending.len() < FLUSH_BYTES {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = self
                        .wake
                        .wait_timeout(st, left)
                        .map_or_else(|e| e.into_inner().0, |(st, _)| st);
                }
                if st.pending.is_empty() {
                    // Shut down with nothing left: later lines go out synchronously.
                    st.sync = true;
                    return;
                }
                std::mem::swap(&mut st.pending, &mut batch);
            }
            // A failed write (a closed stderr) loses this batch; there is nowhere to report it.
            let _ = std::io::stderr().lock().write_all(&batch);
            batch.clear();
            if batch.capacity() > MAX_PENDING {
                // One burst should not pin its peak size for the life of the process.
                batch = Vec::with_capacity(64 << 10);
            }
        }
    }
}

/// Appends the whole line, newline included, to `out`.
///
/// Every field is pushed with the cheapest exact rendering: integers through `itoa`, the
/// timestamp's date and time once per second (see [`timestamp`]), an IPv4 peer octet by octet.
/// `core::fmt` machinery cost about 3,000 of the line's 5,400 instructions
/// (bench/callgrind.sh); the output is byte for byte what `Display`/`Debug` would print.
fn render(out: &mut String, format: Format, now: SystemTime, l: &Line<'_>) {
    match format {
        Format::Text => render_text(out, now, l),
        Format::Json => render_json(out, now, l),
    }
    out.push('\n');
}

/// The text form, as tracing's text lines: `TIMESTAMP  INFO mtls_shield::access: request …`.
fn render_text(out: &mut String, now: SystemTime, l: &Line<'_>) {
    let version = version_text(l.version);
    timestamp(out, now);
    out.push_str("  INFO ");
    out.push_str(target::ACCESS);
    out.push_str(": request peer=");
    ip(out, l.peer);
    out.push_str(" client_cn=");
    debug_str(out, l.client_cn);
    out.push_str(" client_fingerprint=");
    hex(out, l.client_fingerprint);
    out.push_str(" method=");
    out.push_str(l.method);
    out.push_str(" path=");
    out.push_str(l.path);
    out.push_str(" version=");
    out.push_str(version);
    out.push_str(" status=");
    int(out, u64::from(l.status));
    out.push_str(" bytes_in=");
    int(out, l.bytes_in);
    out.push_str(" bytes_out=");
    int(out, l.bytes_out);
    out.push_str(" total_ms=");
    millis(out, l.total);
    if let Some(u) = l.upstream {
        out.push_str(" upstream_ms=");
        millis(out, u);
    }
    if let Some(r) = l.route {
        out.push_str(" route=");
        debug_str(out, r);
    }
    if let Some(v) = &l.viewer {
        if let Some(r) = v.reason {
            out.push_str(" viewer_reason=");
            out.push_str(r);
        }
        if let Some(s) = v.subject {
            out.push_str(" viewer_subject=");
            debug_str(out, s);
        }
        if let Some(f) = v.fingerprint {
            out.push_str(" viewer_fingerprint=");
            hex(out, f);
        }
    }
}

/// The JSON form, as tracing's JSON lines, with `target` last.
fn render_json(out: &mut String, now: SystemTime, l: &Line<'_>) {
    let version = version_text(l.version);
    out.push_str("{\"timestamp\":\"");
    timestamp(out, now);
    out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"peer\":\"");
    ip(out, l.peer);
    out.push_str("\",\"client_cn\":");
    json_str(out, l.client_cn);
    out.push_str(",\"client_fingerprint\":\"");
    hex(out, l.client_fingerprint);
    out.push_str("\",\"method\":");
    json_str(out, l.method);
    out.push_str(",\"path\":");
    json_str(out, l.path);
    out.push_str(",\"version\":\"");
    out.push_str(version);
    out.push_str("\",\"status\":");
    int(out, u64::from(l.status));
    out.push_str(",\"bytes_in\":");
    int(out, l.bytes_in);
    out.push_str(",\"bytes_out\":");
    int(out, l.bytes_out);
    out.push_str(",\"total_ms\":");
    millis(out, l.total);
    if let Some(u) = l.upstream {
        out.push_str(",\"upstream_ms\":");
        millis(out, u);
    }
    if let Some(r) = l.route {
        out.push_str(",\"route\":");
        json_str(out, r);
    }
    if let Some(v) = &l.viewer {
        if let Some(r) = v.reason {
            out.push_str(",\"viewer_reason\":");
            json_str(out, r);
        }
        if let Some(s) = v.subject {
            out.push_str(",\"viewer_subject\":");
            json_str(out, s);
        }
        if let Some(f) = v.fingerprint {
            out.push_str(",\"viewer_fingerprint\":\"");
            hex(out, f);
            out.push('"');
        }
    }
    out.push_str(",\"target\":\"");
    out.push_str(target::ACCESS);
    out.push_str("\"}");
}

/// RFC 3339 UTC with microseconds, as tracing's lines print it (`2026-11-30T00:53:20.123456Z`).
/// The date and time part changes once a second: it is formatted then and kept per thread.
fn timestamp(out: &mut String, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return false;
        };
        if c.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            c.1.clear();
            let _ = write!(c.1, "{}", humantime::format_rfc3339_seconds(whole));
            // Without the trailing `Z`: the fraction goes in between.
            c.1.pop();
            c.0 = secs;
        }
        out.push_str(&c.1);
        true
    });
    if !cached {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(now));
        return;
    }
    out.push('.');
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let d = digits.format(micros);
    for _ in d.len()..6 {
        out.push('0');
    }
    out.push_str(d);
    out.push('Z');
}

/// An unsigned integer in decimal.
fn int(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The address as its `Display` prints it.
fn ip(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            int(out, u64::from(a));
            out.push('.');
            int(out, u64::from(b));
            out.push('.');
            int(out, u64::from(c));
            out.push('.');
            int(out, u64::from(d));
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `Debug` of `http::Version`, as the tracing lines printed it.
fn version_text(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Milliseconds with exactly three decimals (microseconds): `0.525`, not
/// `0.5249579999999999`.
fn millis(out: &mut String, d: Duration) {
    // u64 microseconds last 584,000 years.
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    int(out, micros / 1000);
    out.push('.');
    let frac = micros % 1000;
    if frac < 100 {
        out.push('0');
    }
    if frac < 10 {
        out.push('0');
    }
    int(out, frac);
}

fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// A quoted string as tracing's text format prints a `&str` field (its `Debug`), so a CN with a
/// quote, a space or a control character stays one field of one line.
fn debug_str(out: &mut String, s: &str) {
    // Printable ASCII other than `"` and `\` is exactly what `Debug` leaves as it is: the
    // common case (a CN like `my-client`) is copied, anything else goes through `Debug`.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// A JSON string, escaped as serde_json (which tracing's JSON format uses) escapes it.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            peer: "203.0.113.7".parse().unwrap(),
            client_cn: "my \"client\"",
            client_fingerprint: &[0xab; 32],
            method: "GET",
            path: "/pets",
            version: http::Version::HTTP_11,
            status: 200,
            bytes_in: 0,
            bytes_out: 335,
            total: Duration::from_nanos(524_958),
            upstream: Some(Duration::from_micros(8_173)),
            route: Some("r1"),
            viewer: None,
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456)
    }

    #[test]
    fn the_text_line_has_the_shape_of_tracings_text_lines_with_fixed_precision() {
        let mut out = String::new();
        render(&mut out, Format::Text, at(), &line());
        let fp = "ab".repeat(32);
        assert_eq!(
            out,
            format!("2026-11-30T00:53:20.123456Z  INFO mtls_shield::access: request peer=203.0.113.7 client_cn=\"my \\\"client\\\"\" client_fingerprint={fp} method=GET path=/pets version=HTTP/1.1 status=200 bytes_in=0 bytes_out=335 total_ms=0.524 upstream_ms=8.173 route=\"r1\"\n")
        );
    }

    #[test]
    fn the_json_line_is_tracings_flattened_object_and_parses() {
        let mut out = String::new();
        let mut l = line();
        l.client_cn = "tab\there \u{1}";
        l.upstream = None;
        l.route = None;
        render(&mut out, Format::Json, at(), &l);
        assert!(out.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-30T00:53:20.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "mtls_shield::access");
        assert_eq!(v["client_cn"], "tab\there \u{1}");
        assert_eq!(v["total_ms"].as_f64(), Some(0.524));
        assert_eq!(v["status"], 200);
        assert!(v.get("upstream_ms").is_none() && v.get("route").is_none());
        // Key order as tracing writes it: timestamp, level, message, the fields, target.
        assert!(out.starts_with("{\"timestamp\":\"2026-11-30T00:53:20.123456Z\",\"level\":\"INFO\",\"message\":\"request\",\"peer\":"), "{out}");
        assert!(
            out.ends_with(",\"total_ms\":0.524,\"target\":\"mtls_shield::access\"}\n"),
            "{out}"
        );
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "plain",
            "q\"b\\s",
            "ctl\u{0}\u{1f}\u{7f}",
            "nl\n\r\t\u{8}\u{c}",
            "ünï",
        ] {
            let mut out = String::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn durations_print_three_decimals() {
        let mut out = String::new();
        millis(&mut out, Duration::from_nanos(1_000_999_999));
        assert_eq!(out, "1000.999");
        out.clear();
        millis(&mut out, Duration::ZERO);
        assert_eq!(out, "0.000");
    }

    #[test]
    fn durations_pad_the_fraction_to_three_digits() {
        for (nanos, want) in [(7_000, "0.007"), (70_000, "0.070"), (12_345_678, "12.345")] {
            let mut out = String::new();
            millis(&mut out, Duration::from_nanos(nanos));
            assert_eq!(out, want);
        }
    }

    #[test]
    fn the_cached_timestamp_matches_humantime_within_a_second_and_across_seconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        // The same second twice (the cached path), a fraction with leading zeros, the next
        // second, and an earlier one (the clock may step back).
        for t in [
            base + Duration::from_micros(5),
            base + Duration::from_micros(999_999),
            base + Duration::from_micros(1_000_042),
            base - Duration::from_micros(1),
            base,
        ] {
            let mut out = String::new();
            timestamp(&mut out, t);
            assert_eq!(out, humantime::format_rfc3339_micros(t).to_string());
        }
    }

    #[test]
    fn peers_render_as_their_display() {
        for ip in [
            "203.0.113.7",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            super::ip(&mut out, addr);
            assert_eq!(out, addr.to_string());
        }
    }

    #[test]
    fn names_render_as_their_debug() {
        for name in [
            "my-client",
            "with space",
            "a\"quote",
            "back\\slash",
            "tab\there",
            "é",
            "\u{7f}",
            "",
        ] {
            let mut out = String::new();
            debug_str(&mut out, name);
            assert_eq!(out, format!("{name:?}"));
        }
    }
}
