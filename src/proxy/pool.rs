//! Upstream connection reuse: each upstream's pool of idle HTTP/1.1 connections, and each
//! client connection's [`Affinity`], the upstream connections it keeps between its requests.
//!
//! This is HAProxy's `http-reuse safe`. A client connection's next request goes out on the
//! upstream connection its previous one used, while both are alive. That costs one
//! uncontended lock and no hashing, no spawned task and no shared-pool traffic. A client that
//! goes quiet for [`AFFINE_IDLE`] gives its connections back to the upstream's pool (the
//! connection's watchdog does this, see `serve`), and so does one that closes. So the proxy
//! never holds more upstream connections than its active client requests plus each pool's
//! `pool_max_idle`, and a few milliseconds' worth of recently active clients.
//!
//! Security: a connection is reused only when hyper says it is ready for a new request, that
//! is, after the previous exchange on it has completed in both directions. A response is
//! therefore never delivered to a request it does not belong to, whichever client sent it.
//! Identity headers are written per request, so reuse across clients carries nothing of one
//! client's identity to another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;

use super::body::RequestBody;

/// How long a client connection may be quiet (no request in flight, no byte moving) before
/// its upstream connections go back to the shared pool. Shorter than any think time between
/// a client's requests that matters, longer than the gap between back-to-back keep-alive
/// requests, so a busy client keeps its connection and an idle one holds none.
pub(crate) const AFFINE_IDLE: Duration = Duration::from_millis(5);

/// The sending half of an upstream HTTP/1.1 connection; hyper runs the connection itself in
/// its own task.
pub(crate) type Sender = SendRequest<RequestBody>;

/// Where a request's upstream connection came from: the `source` label of
/// `mtls_shield_upstream_connections_total`.
pub(crate) use crate::metrics::UpstreamConnSource as Source;

/// One upstream's idle connections.
#[derive(Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    reaper_started: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection checked out for one request, which remembers the pool it belongs to.
#[derive(Debug)]
pub(crate) struct Conn {
    shared: Arc<Shared>,
    /// The connection.
    pub(crate) sender: Sender,
    /// Where it came from.
    pub(crate) source: Source,
}

impl Pool {
    /// A pool that keeps at most `max_idle` idle connections, each for at most `idle_timeout`.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::new()),
                max_idle,
                idle_timeout,
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// A ready connection for the next request of the client connection that owns
    /// `affinity`: its own from the previous request if that one is ready, otherwise the most
    /// recently idle one of the pool. `None` when a new one must be opened.
    pub(crate) fn take(&self, affinity: &Affinity) -> Option<Conn> {
        if let Some(sender) = affinity.take(&self.shared) {
            return Some(self.conn(sender, Source::affine));
        }
        self.shared
            .checkout()
            .map(|sender| self.conn(sender, Source::pooled))
    }

    /// A connection just opened for this pool.
    pub(crate) fn opened(&self, sender: Sender) -> Conn {
        self.conn(sender, Source::opened)
    }

    fn conn(&self, sender: Sender, source: Source) -> Conn {
        Conn {
            shared: self.shared.clone(),
            sender,
            source,
        }
    }

    /// Idle connections in the pool now (for tests).
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        lock(&self.shared.idle).len()
    }
}

impl Shared {
    fn checkout(&self) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        // Most recently idle first: it is the least likely to have been closed by the
        // upstream's own keep-alive timeout, and the older ones expire unused.
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < self.idle_timeout && i.sender.is_ready() {
                return Some(i.sender);
            }
            // Dropping the sender closes that connection.
        }
        None
    }

    /// Keeps `sender` for the next request that needs this upstream, if it is ready and there
    /// is room; otherwise it is dropped, which closes it once its exchange is done.
    fn put(self: &Arc<Self>, sender: Sender) {
        if !sender.is_ready() {
            return;
        }
        {
            let mut idle = lock(&self.idle);
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// As [`put`](Self::put), but a connection still finishing its exchange (a response body
    /// streaming) goes into the pool once it is done, by a task that waits for it, as
    /// hyper-util's client returns its connections. Only connections that overflow a client
    /// connection's affinity take this path.
    fn put_when_ready(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_ready() {
            self.put(sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.clone();
        rt.spawn(async move {
            if sender.ready().await.is_ok() {
                shared.put(sender);
            }
        });
    }

    /// Closes idle connections past `idle_timeout` even when no request comes to notice them:
    /// one task per pool, which ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // Not on the runtime (only in unit tests): the next checkout still skips expired
            // connections.
            self.reaper_started.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(100));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = weak.upgrade() else { return };
                let timeout = shared.idle_timeout;
                lock(&shared.idle).retain(|i| i.since.elapsed() < timeout && !i.sender.is_closed());
            }
        });
    }
}

/// The upstream connections one client connection keeps between its requests: one for an
/// HTTP/1.1 client, up to one per concurrent stream for an h2 client.
#[derive(Debug, Default)]
pub(crate) struct Affinity {
    held: Mutex<Vec<(Arc<Shared>, Sender)>>,
    /// Wakes the connection's watchdog when the first connection is kept, so that it gives
    /// them back once the client goes quiet.
    filled: Notify,
}

impl Affinity {
    /// Keeps `conn` for this client connection's next request. It holds at most one more
    /// connection than the client has requests in flight (`in_flight` counts the one `conn`
    /// served); past that `conn` goes back to its pool.
    pub(crate) fn keep(&self, conn: Conn, in_flight: usize) {
        let Conn { shared, sender, .. } = conn;
        if shared.max_idle == 0 {
            // `pool_max_idle = 0` asks for no reuse at all: no kept connection either.
            return;
        }
        let mut held = lock(&self.held);
        if held.len() > in_flight {
            drop(held);
            shared.put_when_ready(sender);
            return;
        }
        held.push((shared, sender));
        if held.len() == 1 {
            self.filled.notify_one();
        }
    }

    /// A ready connection of `pool`'s, dropping any the upstream has closed.
    fn take(&self, pool: &Arc<Shared>) -> Option<Sender> {
        let mut held = lock(&self.held);
        let mut i = 0;
        while i < held.len() {
            if held[i].1.is_closed() {
                held.swap_remove(i);
                continue;
            }
            // A connection still streaming a concurrent h2 stream's response is not ready;
            // it stays for a later request rather than making this one wait.
            if Arc::ptr_eq(&held[i].0, pool) && held[i].1.is_ready() {
                return Some(held.swap_remove(i).1);
            }
            i += 1;
        }
        None
    }

    /// True while this client connection keeps any upstream connection.
    pub(crate) fn holds(&self) -> bool {
        !lock(&self.held).is_empty()
    }

    /// Gives every kept connection back to its pool (the client went quiet or closed), and
    /// says how many there were.
    pub(crate) fn release(&self) -> usize {
        let held = std::mem::take(&mut *lock(&self.held));
        let n = held.len();
        for (shared, sender) in held {
            shared.put_when_ready(sender);
        }
        n
    }

    /// Resolves when a connection is kept while none was.
    pub(crate) async fn filled(&self) {
        self.filled.notified().await;
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Locks `m`. A panic while holding one of these locks cannot leave a half-updated list (each
/// critical section is one push, pop, swap_remove or retain), so a poisoned lock's data is
/// still sound and is used rather than taking the data path down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// A sender over one end of an in-memory pipe, whose connection task runs until the
    /// returned half is dropped.
    async fn sender() -> (Sender, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(a))
            .await
            .unwrap();
        tokio::spawn(conn);
        (sender, b)
    }

    async fn ready(mut s: Sender) -> Sender {
        s.ready().await.unwrap();
        s
    }

    /// A pool of 8 with a long idle timeout.
    fn pool() -> Pool {
        Pool::new(8, Duration::from_secs(60))
    }

    /// Opens a ready connection of `pool`'s and has `affinity` keep it, as after a request
    /// with one in flight. The returned pipe end keeps the connection open.
    async fn keep_one(pool: &Pool, affinity: &Affinity) -> tokio::io::DuplexStream {
        let (s, pipe) = sender().await;
        affinity.keep(pool.opened(ready(s).await), 1);
        pipe
    }

    /// Puts a ready connection into `pool`'s idle list; the pipe end keeps it open.
    async fn put_one(pool: &Pool) -> tokio::io::DuplexStream {
        let (s, pipe) = sender().await;
        pool.shared.put(ready(s).await);
        pipe
    }

    #[tokio::test]
    async fn affine_connection_is_taken_before_the_pool() {
        let pool = pool();
        let affinity = Affinity::default();
        let _p = put_one(&pool).await;
        let _o = keep_one(&pool, &affinity).await;
        let first = pool.take(&affinity).unwrap();
        assert_eq!(first.source, Source::affine);
        let second = pool.take(&affinity).unwrap();
        assert_eq!(second.source, Source::pooled);
        assert!(pool.take(&affinity).is_none());
    }

    #[tokio::test]
    async fn release_returns_kept_connections_to_their_pool() {
        let pool = pool();
        let affinity = Affinity::default();
        let _o = keep_one(&pool, &affinity).await;
        assert!(affinity.holds());
        affinity.release();
        assert!(!affinity.holds());
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_client_connection_returns_its_connections() {
        let pool = pool();
        let affinity = Affinity::default();
        let _o = keep_one(&pool, &affinity).await;
        drop(affinity);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn a_connection_of_another_pool_is_not_taken() {
        let (a, b) = (pool(), pool());
        let affinity = Affinity::default();
        let _o = keep_one(&a, &affinity).await;
        assert!(b.take(&affinity).is_none());
        assert_eq!(a.take(&affinity).unwrap().source, Source::affine);
    }

    #[tokio::test]
    async fn holds_at_most_one_more_than_in_flight() {
        let pool = pool();
        let affinity = Affinity::default();
        let mut pipes = Vec::new();
        for _ in 0..3 {
            pipes.push(keep_one(&pool, &affinity).await);
        }
        assert_eq!(lock(&affinity.held).len(), 2);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn no_connection_is_kept_when_the_pool_keeps_none() {
        let pool = Pool::new(0, Duration::from_secs(60));
        let affinity = Affinity::default();
        let _o = keep_one(&pool, &affinity).await;
        assert!(!affinity.holds());
        assert!(pool.take(&affinity).is_none());
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_idle() {
        let pool = Pool::new(2, Duration::from_secs(60));
        let mut pipes = Vec::new();
        for _ in 0..3 {
            pipes.push(put_one(&pool).await);
        }
        assert_eq!(pool.idle_len(), 2);
    }

    #[tokio::test]
    async fn an_expired_idle_connection_is_not_checked_out() {
        let pool = Pool::new(8, Duration::from_millis(1));
        let _p = put_one(&pool).await;
        let since = Instant::now();
        while since.elapsed() < Duration::from_millis(2) {
            tokio::task::yield_now().await;
        }
        assert!(pool.take(&Affinity::default()).is_none());
    }

    #[tokio::test]
    async fn a_closed_connection_is_neither_kept_nor_taken() {
        let pool = pool();
        let affinity = Affinity::default();
        let pipe = keep_one(&pool, &affinity).await;
        // The upstream closes: the connection task ends and the sender reports it closed.
        drop(pipe);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lock(&affinity.held)[0].1.is_closed() {
            assert!(Instant::now() < deadline, "sender never saw the close");
            tokio::task::yield_now().await;
        }
        assert!(pool.take(&affinity).is_none());
        assert!(!affinity.holds());
    }
}
