//! Per-connection activity tracking, for the idle timeout and the HTTP/1 header-read
//! timeout.
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a keep-alive connection waits
//! for its next request, so it cannot be both a slowloris guard (short) and an idle timeout
//! (long). Instead, the TLS stream is wrapped in [`Tracked`], which notes when bytes move, and
//! the service notes when requests start and finish; the connection task's watchdog decides.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since process start, never 0 (0 means "unset").
fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Client-cancelled requests after which a connection counts as a rapid-reset attacker
/// (CVE-2023-44487), once they also outnumber its completed requests.
///
/// h2's own guard (`max_pending_accept_reset_streams`) only counts streams reset before the
/// server accepted them. A client that paces its resets so that each stream is accepted
/// first makes the proxy start one upstream request per stream (and, on a cold pool, open
/// one upstream connection) and cancel it: unbounded work for the upstream. Legitimate
/// clients cancel a few requests, not hundreds more than they complete.
pub const MAX_CANCELLED_REQUESTS: u64 = 100;

/// How often, per `header_read_timeout`, an idle HTTP/1 connection looks for a request head
/// that started trickling in (see [`Activity::check`]).
const HEAD_CHECKS_PER_TIMEOUT: u32 = 4;

/// What a connection is doing.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_active_ms: AtomicU64,
    /// When the first byte of a not-yet-parsed request head arrived; 0 when none.
    head_started_ms: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    abusive: AtomicBool,
    /// Wakes the connection's watchdog when `abusive` is set.
    wake: Notify,
}

/// The watchdog's verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do; check again after this long.
    Wait(Duration),
    /// Idle past the idle timeout: close gracefully.
    Idle,
    /// A request head has been trickling in for too long: drop the connection.
    HeaderTimeout,
    /// The client cancelled too many requests (h2 rapid reset): drop the connection.
    Abusive,
}

impl Activity {
    /// A new connection counts as active now.
    pub fn new() -> Arc<Self> {
        let a = Self::default();
        a.last_active_ms.store(now_ms(), Ordering::Relaxed);
        Arc::new(a)
    }

    /// The TLS handshake has finished: the bytes read so far were handshake records, not a
    /// request head, so the header-read clock starts at the first byte after it (a slow
    /// handshake must not eat into `header_read_timeout`, and a connection that is silent
    /// after its handshake is governed by the idle timeout).
    pub fn handshake_done(&self) {
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A request head was parsed and handed to the service.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Relaxed);
    }

    /// A response body finished or was dropped.
    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The client gave up on a request before its response head (an h2 RST_STREAM, or the
    /// connection closing). Returns true when this makes the connection abusive.
    pub fn request_cancelled(&self) -> bool {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
        let cancelled = self.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if cancelled > MAX_CANCELLED_REQUESTS
            && cancelled > self.completed.load(Ordering::Relaxed)
            && !self.abusive.swap(true, Ordering::AcqRel)
        {
            self.wake.notify_one();
            return true;
        }
        false
    }

    /// Resolves when something needs the watchdog's attention before its next timer.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Requests currently being served on this connection.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// How long the connection has had no request in flight and no byte moving; `None`
    /// while a request is in flight.
    pub fn quiet_for(&self) -> Option<Duration> {
        if self.in_flight() != 0 {
            return None;
        }
        let last = self.last_active_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(now_ms().saturating_sub(last)))
    }

    fn bytes_read(&self) {
        let now = now_ms();
        self.last_active_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started_ms
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Decides what to do now. `header_timeout` is `None` for h2, where frames other than
    /// requests (PING, WINDOW_UPDATE) arrive on idle connections.
    pub fn check(&self, idle_timeout: Duration, header_timeout: Option<Duration>) -> Due {
        if self.abusive.load(Ordering::Acquire) {
            return Due::Abusive;
        }
        let now = now_ms();
        let mut wait = idle_timeout;
        if let Some(ht) = header_timeout {
            let started = self.head_started_ms.load(Ordering::Relaxed);
            if self.in_flight() == 0 {
                if started != 0 {
                    let elapsed = Duration::from_millis(now.saturating_sub(started));
                    if elapsed >= ht {
                        return Due::HeaderTimeout;
                    }
                    wait = wait.min(ht - elapsed);
                } else {
                    // A head may start trickling in at any moment, and the first byte of it
                    // wakes nobody (a wake-up per request would cost every keep-alive request
                    // a task poll). Looking again every quarter of the timeout cuts a trickled
                    // head off within 1.25 x header_read_timeout of its first byte.
                    wait = wait.min(ht / HEAD_CHECKS_PER_TIMEOUT);
                }
            }
        }
        if self.in_flight() == 0 {
            let last = self.last_active_ms.load(Ordering::Relaxed);
            let idle = Duration::from_millis(now.saturating_sub(last));
            if idle >= idle_timeout {
                return Due::Idle;
            }
            wait = wait.min(idle_timeout - idle);
        }
        Due::Wait(wait.max(Duration::from_millis(5)))
    }
}

/// An I/O stream (the TCP socket under TLS) that reports its traffic to an [`Activity`],
/// and notes the TLS version from the first record the server writes (its ServerHello), so
/// that even a refused handshake's log line can say which version was negotiated.
#[derive(Debug)]
pub struct Tracked<IO> {
    io: IO,
    activity: Arc<Activity>,
    tls_version: Option<&'static str>,
    sniffed: bool,
}

impl<IO> Tracked<IO> {
    /// Wraps `io`.
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            tls_version: None,
            sniffed: false,
        }
    }

    /// The TLS version our ServerHello chose, if one was sent.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn sniff(&mut self, first: &[u8]) {
        if !self.sniffed && !first.is_empty() {
            self.sniffed = true;
            self.tls_version = crate::tls::version_from_server_hello(first);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sniff(buf);
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.sniff(first);
        }
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        res
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

    #[test]
    fn busy_connection_is_never_idle() {
        let a = Activity::new();
        a.request_started();
        assert!(matches!(
            a.check(Duration::ZERO, Some(Duration::ZERO)),
            Due::Wait(_)
        ));
        a.request_finished();
        assert_eq!(a.check(Duration::ZERO, None), Due::Idle);
    }

    #[test]
    fn cancelled_requests_are_not_in_flight_and_many_make_the_connection_abusive() {
        let a = Activity::new();
        for _ in 0..3 {
            a.request_started();
            a.request_finished();
        }
        for i in 0..MAX_CANCELLED_REQUESTS {
            a.request_started();
            assert!(!a.request_cancelled(), "abusive after {i} cancels");
        }
        assert_eq!(a.in_flight(), 0);
        assert!(matches!(
            a.check(Duration::from_secs(60), None),
            Due::Wait(_)
        ));
        a.request_started();
        assert!(a.request_cancelled());
        assert_eq!(a.check(Duration::from_secs(60), None), Due::Abusive);
    }

    #[test]
    fn cancels_do_not_count_against_a_busy_client() {
        let a = Activity::new();
        for _ in 0..(2 * MAX_CANCELLED_REQUESTS) {
            a.request_started();
            a.request_finished();
        }
        for _ in 0..(MAX_CANCELLED_REQUESTS + 10) {
            a.request_started();
            assert!(!a.request_cancelled());
        }
    }

    #[test]
    fn handshake_bytes_do_not_start_the_header_clock() {
        let a = Activity::new();
        a.bytes_read();
        a.handshake_done();
        assert!(matches!(
            a.check(Duration::from_secs(60), Some(Duration::ZERO)),
            Due::Wait(_)
        ));
        a.bytes_read();
        assert_eq!(
            a.check(Duration::from_secs(60), Some(Duration::ZERO)),
            Due::HeaderTimeout
        );
    }

    #[test]
    fn trickled_head_times_out() {
        let a = Activity::new();
        a.bytes_read();
        assert_eq!(
            a.check(Duration::from_secs(60), Some(Duration::ZERO)),
            Due::HeaderTimeout
        );
        a.request_started();
        assert!(matches!(
            a.check(Duration::from_secs(60), Some(Duration::ZERO)),
            Due::Wait(_)
        ));
    }
}
