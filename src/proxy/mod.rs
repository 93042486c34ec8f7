//! The data path. A connection goes through two stages: `admit` (PROXY header, TLS
//! handshake and the verifier's decision, the resumed-session re-check) and `serve`
//! (hyper's HTTP/1.1 and h2 server with the timeouts' watchdog); `server` owns the accept
//! loop and the state connections share, `generation` everything one config builds, and
//! `trust` (with `judged`) the generation in service and each open connection's standing with it.
//! Requests go through `forward` (the handler, over the connection's `context`), [`headers`] (the rewriting rules), `viewer`
//! (a request's viewer certificate, on an edge's connection), `record`
//! (the one place a finished request is counted and written to the access log),
//! `body` (bodies that account for themselves), `upstream` / `connector` (the HTTP/1.1
//! client and how it reaches the app) and `pool` (upstream connection reuse, with
//! client-connection affinity); [`activity`] tracks each connection for its timeouts,
//! `slot` holds its place among `max_connections`, and [`proxy_protocol`] reads a load
//! balancer's PROXY header.

pub mod activity;
pub(crate) mod admit;
pub(crate) mod body;
pub(crate) mod connector;
pub(crate) mod context;
pub(crate) mod forward;
pub(crate) mod generation;
pub mod headers;
pub(crate) mod judged;
pub(crate) mod pool;
pub mod proxy_protocol;
pub(crate) mod record;
pub(crate) mod serve;
pub(crate) mod server;
pub(crate) mod slot;
pub(crate) mod trust;
pub(crate) mod upstream;
pub(crate) mod viewer;
