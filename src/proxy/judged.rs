//! What live trust needs of a generation ([`TrustState`]), and the [`Tally`] of the
//! judgements the open connections make when a generation goes into service.
//!
//! Each open connection judges itself against a new generation (it subscribes to the one in
//! service, see `proxy::trust`); the tally counts those judgements, so the reload that
//! installed the generation can wait until every connection that was open then has been
//! judged, and log how many were closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::tls::verifier::ShieldVerifier;

/// What live trust reads of a generation.
pub(crate) trait TrustState: Send + Sync + 'static {
    /// Its id; a newer generation has a higher one.
    fn id(&self) -> u64;
    /// The verifier its trust is judged with.
    fn verifier(&self) -> &Arc<ShieldVerifier>;
    /// The judgements of the connections open when it went into service.
    fn tally(&self) -> &Tally;
}

/// How a re-judgement of every open connection went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Judged {
    /// Open connections judged.
    pub(crate) judged: usize,
    /// Of which closed.
    pub(crate) closed: usize,
}

/// The judgements a generation is waiting for, and those made.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: Mutex<Counts>,
    done: Notify,
}

#[derive(Debug, Default)]
struct Counts {
    /// Connections open when the generation went into service.
    expected: usize,
    judged: Judged,
    /// Of the expected, those that ended before judging it.
    gone: usize,
}

impl Counts {
    fn complete(&self) -> bool {
        self.judged.judged + self.gone >= self.expected
    }
}

impl Tally {
    /// The generation goes into service with `open` connections to judge it.
    pub(crate) fn start(&self, open: usize) {
        self.update(|c| c.expected = open);
    }

    /// One of them judged it; `closed` when the judgement refused the chain.
    pub(crate) fn report(&self, closed: bool) {
        self.update(|c| {
            c.judged.judged += 1;
            c.judged.closed += usize::from(closed);
        });
    }

    /// One of them ended before judging it.
    pub(crate) fn gone(&self) {
        self.update(|c| c.gone += 1);
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        // A poisoned lock means a panic mid-update of three integers: the counts are still
        // usable, and counting must never take a connection down.
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c);
        if c.complete() {
            self.done.notify_waiters();
        }
    }

    /// The judgements so far, and whether they are all in.
    pub(crate) fn snapshot(&self) -> (Judged, bool) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (c.judged, c.complete())
    }

    /// Waits until every expected connection has judged the generation (or ended), for at
    /// most `limit`, and says how the judgements went.
    pub(crate) async fn wait(&self, limit: Duration) -> Judged {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before looking, so a report between the look and the wait wakes us.
            let notified = self.done.notified();
            let (judged, complete) = self.snapshot();
            if complete || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return if complete { judged } else { self.snapshot().0 };
            }
        }
    }
}
