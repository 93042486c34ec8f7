//! Streaming bodies that account for themselves. Nothing here buffers a body: frames pass
//! through one at a time, so a 1 GiB upload or download costs a few buffers of memory.
//!
//! [`ResponseBody`] ends a request's bookkeeping (metrics, the access-log line, the
//! connection's in-flight count) when its last frame is sent, or when it is dropped early
//! because the client went away.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::record::Finish;

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    /// The body grew past `listener.max_request_body_bytes`.
    #[error("request body exceeds max_request_body_bytes ({limit} bytes)")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The client's connection failed mid-body.
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

/// How a request body ended early, shared between the body and the handler, so that a
/// failed upstream exchange is answered for what it was: the client's fault, not the
/// upstream's.
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    over_limit: AtomicBool,
    client_failed: AtomicBool,
}

impl BodyState {
    /// The body crossed `max_request_body_bytes` (answer 413).
    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Acquire)
    }

    /// The client's body was malformed (e.g. a bad chunk size) or the client went away
    /// mid-body (answer 400).
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Acquire)
    }
}

/// The request body sent upstream: the client's, counted and size-checked as it streams.
///
/// The limit is enforced frame by frame, never by buffering: the frame that crosses it is
/// not forwarded, the body ends with [`RequestBodyError::TooLarge`] (which makes the
/// upstream client abandon that upstream connection, so the app never sees a complete
/// request), and the shared [`BodyState`] tells the handler to answer 413.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
    seen: u64,
    limit: Option<u64>,
    state: Arc<BodyState>,
}

impl RequestBody {
    /// Wraps the client's body; `bytes` receives the running total.
    pub(crate) fn new(inner: Incoming, bytes: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            bytes,
            seen: 0,
            limit: None,
            state: Arc::default(),
        }
    }

    /// Stops the body once more than `limit` bytes have arrived.
    pub(crate) fn limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// How the body ended, readable after the upstream exchange failed.
    pub(crate) fn state(&self) -> Arc<BodyState> {
        self.state.clone()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        if this.state.over_limit() {
            // Already failed: never resume forwarding after the limit.
            return Poll::Ready(Some(Err(RequestBodyError::TooLarge {
                limit: this.limit.unwrap_or(0),
            })));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                this.state.client_failed.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(e.into())));
            }
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            this.seen = this.seen.saturating_add(len);
            this.bytes.fetch_add(len, Ordering::Relaxed);
            if let Some(limit) = this.limit {
                if this.seen > limit {
                    this.state.over_limit.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit })));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// The response body sent to the client.
pub(crate) struct ResponseBody {
    inner: Inner,
    bytes_out: u64,
    finish: Option<Finish>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes_out", &self.bytes_out)
            .finish()
    }
}

impl ResponseBody {
    /// The upstream's body, streamed.
    pub(crate) fn upstream(body: Incoming, finish: Finish) -> Self {
        Self {
            inner: Inner::Upstream(body),
            bytes_out: 0,
            finish: Some(finish),
        }
    }

    /// A short body generated by the proxy (errors).
    pub(crate) fn local(text: &'static str, finish: Option<Finish>) -> Self {
        Self {
            inner: Inner::Local(Some(Bytes::from_static(text.as_bytes()))),
            bytes_out: 0,
            finish,
        }
    }

    /// Records the request once, when the body ends or is dropped.
    fn finish(&mut self) {
        if let Some(f) = self.finish.take() {
            f.record(self.bytes_out);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let res = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes_out += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
