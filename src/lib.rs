//! mtls-shield: a reverse proxy that terminates mutual TLS in front of an HTTP app.
//!
//! rustls verifies every client certificate (chain, expiry, clientAuth EKU, CRLs and an
//! identity allow-list) during the handshake; a refused client gets no HTTP byte and the
//! upstream never hears of it. Accepted requests stream through hyper to the upstream with
//! the verified identity in headers the client cannot forge.

mod admin;
mod app;
mod check;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod docs;
pub mod identity;
mod ledger;
mod logs;
mod metrics;
#[cfg(feature = "demo")]
mod pki;
pub mod policy;
pub mod proxy;
mod status;
pub mod tls;
mod verify;
pub mod viewer;
mod x509;
