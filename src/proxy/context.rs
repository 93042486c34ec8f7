//! [`ConnContext`]: what every request on one accepted connection shares, built once per
//! connection by `serve` and read by the request handler (`forward`) and the viewer check
//! (`viewer`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::activity::Activity;
use super::generation::Generation;
use super::headers;
use super::slot::ConnectionSlot;
use super::trust::ConnTrust;
use crate::identity::ClientIdentity;
use crate::ledger::{Ledger, Seen};
use crate::metrics::Metrics;

/// What every request on one accepted connection shares. Built once per connection.
#[derive(Debug)]
pub(crate) struct ConnContext {
    /// Client address.
    pub(crate) peer: SocketAddr,
    /// The upstream connections this client connection keeps between its requests.
    pub(crate) affinity: super::pool::Affinity,
    /// The client's address as rendered into `X-Forwarded-For`.
    pub(crate) forwarded_peer: headers::ForwardedPeer,
    /// The verified identity.
    pub(crate) identity: Arc<ClientIdentity>,
    /// Identity headers, rendered once for this connection.
    pub(crate) identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Activity tracker for idle and header timeouts.
    pub(crate) activity: Arc<Activity>,
    /// The generation the connection started on: its upstreams, routes and listener settings.
    pub(crate) generation: Arc<Generation>,
    /// Metrics sink.
    pub(crate) metrics: Arc<Metrics>,
    /// Write access-log lines.
    pub(crate) access_log: bool,
    /// The connection's `max_connections` slot; an upgraded tunnel holds it for as long as
    /// it runs, so tunnels count against the limit (and are waited for when draining).
    pub(crate) slot: ConnectionSlot,
    /// The connection's standing with the current trust state, checked before each request.
    pub(crate) trust: Arc<ConnTrust>,
    /// The connection's server name (SNI), when `listener.require_sni_host_match` is on and the
    /// client sent one: every request's Host must name it.
    pub(crate) sni: Option<Box<str>>,
    /// The connection's certificate among the clients seen, counting its requests.
    pub(crate) seen: Option<Arc<Seen>>,
    /// The ledger, where the viewers its requests carry are entered.
    pub(crate) ledger: Arc<Ledger>,
}
