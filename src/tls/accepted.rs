//! [`Accepted`]: the verifier's answer for a chain it accepted, and the window in which that
//! answer holds. The memo of accepted chains stores it, and each connection keeps it.

use std::sync::Arc;

use super::ocsp::OcspQuery;
use crate::identity::ClientIdentity;

/// A chain that was accepted, and for how long that answer holds.
#[derive(Debug)]
pub struct Accepted {
    /// The parsed leaf.
    pub identity: Arc<ClientIdentity>,
    /// The latest notBefore on the verified path, Unix seconds.
    pub valid_from: i64,
    /// The first second at which the answer may change on its own: the earliest notAfter on
    /// the verified path plus one (validity is inclusive), or the nextUpdate of a CRL that
    /// was consulted, or of an OCSP answer used, whichever comes first.
    pub valid_until: i64,
    /// OCSP queries without a fresh answer in the cache: admission resolves them before any
    /// request is read (empty when OCSP is off or every answer was cached).
    pub(crate) ocsp_pending: Vec<OcspQuery>,
}

impl Accepted {
    /// The same acceptance once its pending OCSP queries were answered, holding until `until`
    /// at the latest (the answers' nextUpdate).
    pub(crate) fn answered(&self, until: i64) -> Accepted {
        Accepted {
            identity: self.identity.clone(),
            valid_from: self.valid_from,
            valid_until: self.valid_until.min(until),
            ocsp_pending: Vec::new(),
        }
    }

    /// Whether the acceptance still holds at `now` (Unix seconds) under the same trust state.
    pub fn holds_at(&self, now: i64) -> bool {
        self.valid_from <= now && now < self.valid_until
    }
}
