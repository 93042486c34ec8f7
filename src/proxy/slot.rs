//! [`ConnectionSlot`]: a connection's place among `listener.max_connections`, and its count
//! in `mtls_shield_connections_active`, held for as long as anything serves the connection.
//!
//! The connection's task holds it, and so does an upgraded tunnel (WebSocket) that outlives
//! the task: the slot is given back when the last holder is gone, so an upgraded connection
//! keeps counting against the limit.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::Metrics;

/// A connection's `max_connections` permit and active-connection count; cloning shares them.
/// Held for its drop only: the last clone gone gives the slot back.
#[derive(Clone)]
pub(crate) struct ConnectionSlot(#[allow(dead_code)] Arc<Held>);

/// What the slot holds until its last clone is dropped.
struct Held {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnectionSlot {
    /// Takes the slot of `permit`, counting the connection as active.
    pub(crate) fn new(permit: OwnedSemaphorePermit, metrics: &Arc<Metrics>) -> Self {
        metrics.connections_active.inc();
        Self(Arc::new(Held {
            _permit: permit,
            metrics: metrics.clone(),
        }))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.connections_active.dec();
    }
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}
