//! The data path: the accept loop and per-connection handshake and serving ([`server`]),
//! forwarding to the upstream ([`forward`]), the header rewriting rules ([`headers`]),
//! response bodies that account for themselves ([`body`]), and per-connection activity
//! tracking for idle and header-read timeouts ([`activity`]).

pub mod activity;
pub mod body;
pub mod connector;
pub mod forward;
pub mod headers;
pub mod proxy_protocol;
pub mod server;
